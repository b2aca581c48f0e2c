"""VGG11 convolutional trunk, the slice encoder of HyperMM.

HyperMM (Chaptoukaev et al., 2024, sec. 3) encodes each 2D slice of a volume with
an ImageNet-pretrained VGG11 and keeps the last feature map, (512, 7, 7) per
224-px slice; the volume's block is the max over slices (done by the caller).
torchvision cannot be installed here, so the network is rebuilt with torchvision's
module indices (``features.0 … features.20``, config "A", no batch norm) so that
``vgg11-8a719046.pth`` loads by state_dict with ``strict=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mmpipe.encoders.weights import WeightsInfo, build_pretrained, encoder_name, freeze

log = logging.getLogger(__name__)

WEIGHTS_FILE = "vgg11-8a719046.pth"
WEIGHTS_URL = "https://download.pytorch.org/models/vgg11-8a719046.pth"
# torchvision.models.vgg cfgs["A"]: channels, "M" = 2x2 max pool
_CFG_A: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
OUT_CHANNELS = 512


class VGG11Features(nn.Module):
    """torchvision ``vgg11().features``: (S, 3, H, W) → (S, 512, H/32, W/32); 224 → 7×7."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _CFG_A:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        # torchvision's VGG init, so random-init features are at least well scaled
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_vgg11_slices(cfg: Mapping[str, Any]) -> tuple[VGG11Features, WeightsInfo]:
    """Frozen VGG11 trunk with the torchvision ImageNet weights (or loud random init)."""
    name = encoder_name(cfg, "vgg11_slices")
    module, info = build_pretrained(
        VGG11Features, cfg, encoder=name, expected_file=WEIGHTS_FILE,
        how_to_get=f"torchvision ImageNet VGG11 weights, {WEIGHTS_URL}",
        drop_prefixes=("classifier.",))
    return freeze(module), info
