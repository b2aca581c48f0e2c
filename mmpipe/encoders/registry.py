"""The encoder types a config can name, and how to build each on a device.

The orchestration looks an ``encoders:`` entry's ``type`` up here to learn which
input it reads, the shape of one subject's feature, how to build the frozen
network with its weights provenance, and a batch of the network's real input
size for the bare-forward benchmark.

``build(cfg, device)`` accepts an optional ``cfg["name"]`` (the key under
``encoders:``) so weight errors name the entry the user must edit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmpipe.encoders.weights import WeightsInfo
from mmpipe.errors import ConfigError

MED3D_DEFAULT_RESIZE = (56, 448, 448)  # MMIST-ccRCC's MedicalNet input (DESIGN.md)


@dataclass(frozen=True)
class EncoderType:
    name: str  # "vgg11_slices" | "med3d" | "clam_resnet50" | "text" | "tabular" | "precomputed"
    input_kind: str  # "volume" | "slide" | "text" | "table" | "features"
    # one subject's feature shape from the encoder cfg; None when only the data can tell
    feature_shape: Callable[[Mapping[str, Any]], tuple[int, ...] | None]
    build: Callable[[Mapping[str, Any], torch.device], tuple[nn.Module | object, WeightsInfo]] | None
    example_input: Callable[[Mapping[str, Any], int], torch.Tensor] | None


def _on(device: torch.device, built: tuple[nn.Module, WeightsInfo]) -> tuple[nn.Module, WeightsInfo]:
    module, info = built
    return module.to(device), info


def _build_vgg(cfg: Mapping[str, Any], device: torch.device) -> tuple[nn.Module, WeightsInfo]:
    from mmpipe.encoders.vgg11 import build_vgg11_slices

    return _on(device, build_vgg11_slices(cfg))


def _build_med3d(cfg: Mapping[str, Any], device: torch.device) -> tuple[nn.Module, WeightsInfo]:
    from mmpipe.encoders.med3d import build_med3d

    return _on(device, build_med3d(cfg))


def _build_clam(cfg: Mapping[str, Any], device: torch.device) -> tuple[nn.Module, WeightsInfo]:
    from mmpipe.encoders.clam import build_clam_resnet50

    return _on(device, build_clam_resnet50(cfg))


def _build_text(cfg: Mapping[str, Any], device: torch.device) -> tuple[object, WeightsInfo]:
    from mmpipe.encoders.text import build_text_encoder

    enc = build_text_encoder(dict(cfg), device)
    return enc, enc.weights_info


def _med3d_shape(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    from mmpipe.encoders.med3d import feature_dim

    return (feature_dim(cfg),)


def _med3d_input(cfg: Mapping[str, Any], n: int) -> torch.Tensor:
    resize = (cfg.get("transform") or {}).get("resize") or MED3D_DEFAULT_RESIZE
    return torch.randn(n, 1, *(int(s) for s in resize))


def _text_shape(cfg: Mapping[str, Any]) -> tuple[int, ...] | None:
    if cfg.get("model", "minilm") == "minilm":
        return None if cfg.get("checkpoint") else (384,)
    # BiomedBERT-base CLS is 768-d; a projection's output size is known from its file
    return None if cfg.get("projection") else (768,)


ENCODER_TYPES: dict[str, EncoderType] = {
    t.name: t
    for t in (
        EncoderType("vgg11_slices", "volume", lambda cfg: (512, 7, 7), _build_vgg,
                    lambda cfg, n: torch.randn(n, 3, 224, 224)),
        EncoderType("med3d", "volume", _med3d_shape, _build_med3d, _med3d_input),
        EncoderType("clam_resnet50", "slide", lambda cfg: (1024,), _build_clam,
                    lambda cfg, n: torch.randn(n, 3, 224, 224)),
        EncoderType("text", "text", _text_shape, _build_text, None),
        # fitted on the cohort (TabularEncoding.from_config) / read from files: no network
        EncoderType("tabular", "table", lambda cfg: None, None, None),
        EncoderType("precomputed", "features", lambda cfg: None, None, None),
    )
}


def get_encoder_type(name: str) -> EncoderType:
    try:
        return ENCODER_TYPES[name]
    except KeyError:
        raise ConfigError(f"unknown encoder type {name!r} (known: {sorted(ENCODER_TYPES)})") from None
