"""CLAM's tile encoder: ImageNet ResNet50 truncated after layer3, average-pooled → 1024-d.

CLAM (Lu et al., Nat. Biomed. Eng. 2021; github mahmoodlab/CLAM,
``models/resnet_custom.py::resnet50_baseline``, later ``timm resnet50.tv_in1k``
with ``out_indices=(3,)``) encodes each 256-px tissue tile, resized to 224 and
ImageNet-normalised, with conv1 … layer3 of the torchvision ImageNet ResNet50 and
an adaptive average pool. The resize is CLAM's recipe since April 2024
(``extract_features_fp.py`` with ``get_eval_transforms(target_img_size=224)``, commit
d613a3d), which mmpipe follows; before it ``--target_patch_size`` defaulted to -1 and
256-px tiles went in unresized (a 16x16 layer3 map, not 14x14), so features extracted
with CLAM before 2024 are not these. MONAI's 2D ``resnet50`` with shortcut "B" and no
downsample bias has exactly torchvision's module names and the stride on the 3×3
conv (ResNet v1.5), so ``resnet50-0676ba61.pth`` loads strictly once ``fc.`` and
``layer4.`` are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from mmpipe.encoders.weights import WeightsInfo, build_pretrained, encoder_name, freeze
from mmpipe.preprocess.imagenet import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

WEIGHTS_FILE = "resnet50-0676ba61.pth"
WEIGHTS_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
FEATURE_DIM = 1024
INPUT_SIZE = 224


class ResNet50Trunc(nn.Module):
    """conv1 … layer3 of a ResNet50 + global average pool: (B, 3, H, W) → (B, 1024).

    Holds the MONAI modules under torchvision's names (``conv1``, ``bn1``,
    ``layer1`` … ``layer3``), so torchvision state_dicts load into it directly.
    """

    def __init__(self) -> None:
        super().__init__()
        from monai.networks.nets import resnet50

        full = resnet50(spatial_dims=2, n_input_channels=3, conv1_t_size=7, conv1_t_stride=2,
                        shortcut_type="B", bias_downsample=False, feed_forward=False)
        self.conv1, self.bn1, self.act, self.maxpool = full.conv1, full.bn1, full.act, full.maxpool
        self.layer1, self.layer2, self.layer3 = full.layer1, full.layer2, full.layer3
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)


def build_clam_resnet50(cfg: Mapping[str, Any]) -> tuple[ResNet50Trunc, WeightsInfo]:
    """Frozen CLAM ResNet50-trunc with the torchvision ImageNet V1 weights (or loud random init)."""
    name = encoder_name(cfg, "clam_resnet50")
    module, info = build_pretrained(
        ResNet50Trunc, cfg, encoder=name, expected_file=WEIGHTS_FILE,
        how_to_get=f"torchvision ImageNet ResNet50 IMAGENET1K_V1 weights, {WEIGHTS_URL}",
        drop_prefixes=("fc.", "layer4."))
    return freeze(module), info


def imagenet_tensor(tiles: np.ndarray | torch.Tensor, size: int = INPUT_SIZE,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """RGB uint8 tiles ``[n, H, W, 3]`` → normalised float32 ``[n, 3, size, size]``.

    CLAM's eval transform: resize to 224 (bilinear with antialiasing, as PIL does),
    scale to [0, 1], subtract the ImageNet mean and divide by its std. Tiles are
    square, so resizing both sides to ``size`` keeps the aspect.
    """
    t = torch.as_tensor(np.asarray(tiles) if not isinstance(tiles, torch.Tensor) else tiles)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected RGB tiles [n, H, W, 3], got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:  # 16-bit or float tiles on 0-255 were read as [0, 1]
        raise ValueError(f"expected uint8 tiles, got {t.dtype}")
    if device is not None:
        t = t.to(device)
    x = t.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (size, size) and x.shape[0] > 0:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
