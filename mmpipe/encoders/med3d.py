"""Med3D / MedicalNet 3D ResNet, exactly as the pretrained checkpoints were trained.

MedicalNet (Chen et al., "Med3D", arXiv 1904.00625; github Tencent/MedicalNet,
``models/resnet.py``) builds layer3 and layer4 with stride 1 and dilation 2 and 4
(``_make_layer(..., stride=1, dilation=2/4)``; ``conv3x3x3`` pads by the dilation),
so layer4's map is D/8 × H/8 × W/8. MONAI's ``resnet{10,18,34,50}`` has the same
module names and shapes (so the checkpoints load strictly after stripping
``module.`` and dropping the ``conv_seg.`` head) but uses stride 2 and no
dilation there: loading MedicalNet weights into it unpatched silently gives other
features. :func:`dilate_like_medicalnet` patches the built MONAI network in place.

The shortcut of each depth is the one the checkpoints were trained with
(MedicalNet README, "Network structure parameter settings"; the same table as
MONAI's ``get_medicalnet_pretrained_resnet_args``): "A" (parameter-free avg-pool
+ zero channel padding) for resnet18/34, "B" (1×1×1 conv + BN) for resnet10/50 —
``resnet_10*.pth`` carries ``downsample`` weights, so it cannot load as "A".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmpipe.encoders.weights import (
    WeightsInfo,
    _unwrap,
    build_pretrained,
    encoder_name,
    freeze,
)
from mmpipe.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

DEPTHS = (10, 18, 34, 50)
SHORTCUT = {10: "B", 18: "A", 34: "A", 50: "B"}
FEATURE_DIM = {10: 512, 18: 512, 34: 512, 50: 2048}
# MedicalNet models/resnet.py: layer3 dilation 2, layer4 dilation 4, both stride 1
LAYER_DILATION = {"layer3": 2, "layer4": 4}
MEDICALNET_URL = "https://github.com/Tencent/MedicalNet"


# residual blocks of layer1..layer4 at each depth (MedicalNet models/resnet.py), resnet50's
# bottlenecks (a conv3 in each)
LAYER_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def weights_file(depth: int) -> str:
    return f"resnet_{depth}_23dataset.pth"


def depth_of(keys: list[str]) -> int | None:
    """The MedicalNet depth whose layout a checkpoint's state_dict keys (``module.``
    stripped) have, or None."""
    blocks = tuple(1 + max((int(k.split(".")[1]) for k in keys
                            if k.startswith(f"layer{i}.") and k.split(".")[1].isdigit()),
                           default=-1) for i in range(1, 5))
    bottleneck = any(".conv3." in k for k in keys)
    return next((d for d, layers in LAYER_BLOCKS.items()
                 if layers == blocks and (d == 50) == bottleneck), None)


def _depth_hint(cfg: Mapping[str, Any], depth: int, name: str) -> str:
    """What to set where the configured file is MedicalNet's of another depth (the
    refusal listed 96 unexpected keys and never named ``depth``); "" otherwise."""
    path = cfg.get("weights")
    if not path or not Path(str(path)).expanduser().is_file():
        return ""
    try:
        # no mmap: MedicalNet's 2019 files are in torch's legacy format, which it refuses
        obj = torch.load(Path(str(path)).expanduser(), map_location="cpu", weights_only=True)
        found = depth_of(list(_unwrap(obj, str(path))))  # as the loader unwraps it
    except Exception:  # the refusal being raised says why the file is no use
        return ""
    return (f"; the file holds MedicalNet's resnet{found}, not resnet{depth}: set "
            f"encoders.{name}.depth: {found}") if found not in (None, depth) else ""


def _check_depth(cfg: Mapping[str, Any]) -> int:
    depth = int(cfg.get("depth", 18))
    if depth not in DEPTHS:
        raise ConfigError(f"med3d depth {depth} is not one of {list(DEPTHS)}")
    return depth


def feature_dim(cfg: Mapping[str, Any]) -> int:
    return FEATURE_DIM[_check_depth(cfg)]


def dilate_like_medicalnet(net: nn.Module) -> nn.Module:
    """Give a MONAI 3D ResNet MedicalNet's stride-1, dilated layer3/layer4, in place.

    Every 3×3×3 conv there gets stride 1 and dilation = padding = 2 (layer3) or 4
    (layer4); 1×1×1 shortcut convs (type B) get stride 1; a type-A shortcut is a
    ``functools.partial`` of ``ResNet._downsample_basic_block`` (avg-pool with
    kernel 1 and the block's stride, then zero channel padding) and is rebuilt
    with ``stride=1``, i.e. identity plus zero padding, as in MedicalNet.
    """
    for layer_name, d in LAYER_DILATION.items():
        layer = getattr(net, layer_name)
        for block in layer:
            for m in block.modules():
                if not isinstance(m, nn.Conv3d):
                    continue
                if m.kernel_size == (3, 3, 3):
                    m.stride, m.dilation, m.padding = (1, 1, 1), (d, d, d), (d, d, d)
                elif m.kernel_size == (1, 1, 1):
                    m.stride = (1, 1, 1)
                else:
                    raise RuntimeError(f"unexpected conv kernel {m.kernel_size} in {layer_name}")
            ds = getattr(block, "downsample", None)
            if isinstance(ds, functools.partial):
                if "stride" not in ds.keywords:
                    raise RuntimeError("MONAI's shortcut-A downsample no longer takes a 'stride' "
                                       "keyword; mmpipe.encoders.med3d must be updated")
                block.downsample = functools.partial(ds.func, *ds.args, **{**ds.keywords, "stride": 1})
            if hasattr(block, "stride"):
                block.stride = 1
    return net


def build_med3d_network(depth: int = 18) -> nn.Module:
    """The MONAI ResNet with MedicalNet's layout and dilation (random init)."""
    from monai.networks import nets

    if depth not in DEPTHS:
        raise ConfigError(f"med3d depth {depth} is not one of {list(DEPTHS)}")
    net = getattr(nets, f"resnet{depth}")(
        spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type=SHORTCUT[depth],
        bias_downsample=False, conv1_t_size=7, conv1_t_stride=2)
    return dilate_like_medicalnet(net)


def build_med3d(cfg: Mapping[str, Any]) -> tuple[nn.Module, WeightsInfo]:
    """Frozen Med3D: (B, 1, D, H, W) → global average of layer4 → (B, 512) (2048 for depth 50)."""
    depth = _check_depth(cfg)
    name = encoder_name(cfg, "med3d")
    # MedicalNet's names equal MONAI's once "module." is stripped; conv_seg is the seg head
    try:
        net, info = build_pretrained(
            lambda: build_med3d_network(depth), cfg, encoder=name,
            expected_file=weights_file(depth),
            how_to_get=f"MedicalNet pretrained resnet{depth}, {MEDICALNET_URL} (README links) "
                       f"or https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{depth}",
            drop_prefixes=("conv_seg.",))
    except WeightsError as err:
        if hint := _depth_hint(cfg, depth, name):
            raise WeightsError(f"{err}{hint}") from None
        raise
    return freeze(net), info


def layer4_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer4's feature map (B, C, D/8, H/8, W/8), before the global pool."""
    x = net.act(net.bn1(net.conv1(x)))
    if not getattr(net, "no_max_pool", False):
        x = net.maxpool(x)
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))
