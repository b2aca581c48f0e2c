"""CLAM, TRIDENT and STAMP tile feature files: layouts, provenance and every bad input as
an InputError that names the file and the reason."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mmpipe.encoders.tile_features import (
    LEVEL0_PIXELS,
    MICROMETRES,
    STAMP_V1_PIXELS,
    inspect_tile_file,
    read_tile_features,
)
from mmpipe.errors import InputError
from tests.tile_feature_files import grid, write_clam, write_stamp, write_trident

FEATS = np.arange(24, dtype=np.float32).reshape(6, 4) / 10


def _read(path, feature_encoder=None):
    tf = inspect_tile_file(path, feature_encoder)
    return tf, *read_tile_features(tf)


def test_clam_h5_and_pt(tmp_path):
    h5, pt = write_clam(tmp_path, "s1", FEATS)
    tf, feats, coords = _read(h5)
    np.testing.assert_array_equal(feats, FEATS)
    assert coords.dtype == np.int64 and coords.tolist() == grid(6, 512).tolist()
    assert tf.provenance == {"layout": "clam", "feature_dim": 4, "patch_size": None,
                             "patch_level": None, "coords_unit": LEVEL0_PIXELS}
    assert tf.encoder_source is None
    # the .pt tensor, its coordinates from ../h5_files/<slide>.h5
    tf, feats, coords = _read(pt, "uni_v1")
    np.testing.assert_array_equal(feats, FEATS)
    assert coords.tolist() == grid(6, 512).tolist() and tf.coords_file == h5
    assert (tf.provenance["feature_encoder"], tf.encoder_source) == ("uni_v1", "config")


def test_clam_patching_attributes_and_a_pt_without_its_h5(tmp_path):
    h5, _ = write_clam(tmp_path, "s1", FEATS, patch_attrs=True)
    tf = inspect_tile_file(h5)
    assert (tf.provenance["patch_size"], tf.provenance["patch_level"]) == (256, 0)
    _, pt = write_clam(tmp_path / "other", "s2", FEATS, h5=False)
    tf, feats, coords = _read(pt)
    assert coords is None and tf.coords_file is None
    assert tf.provenance["coords_unit"] is None and feats.shape == (6, 4)


def test_trident(tmp_path):
    path = write_trident(tmp_path, "s1", FEATS, dtype=np.float16, magnification=20)
    tf, feats, coords = _read(path)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(feats, FEATS, atol=1e-3)
    assert coords.tolist() == grid(6, 512).tolist()
    p = tf.provenance
    assert (p["layout"], p["feature_encoder"], p["patch_size"], p["magnification"],
            p["overlap"], p["coords_unit"]) == ("trident", "uni_v1", 256, 20, 0, LEVEL0_PIXELS)
    assert tf.encoder_source == "file"
    # encoder attribute 'None' (save_h5's None): the features_<encoder> folder names it
    tf = inspect_tile_file(write_trident(tmp_path, "s2", FEATS, encoder=None))
    assert (tf.provenance["feature_encoder"], tf.encoder_source) == ("conch_v15", "folder name")
    with pytest.raises(InputError, match="encoder 'uni_v1' .*config's feature_encoder says "
                                         "'conch_v15'"):
        inspect_tile_file(path, "conch_v15")


def test_stamp_versions(tmp_path):
    tf, feats, coords = _read(write_stamp(tmp_path, "s1", FEATS))
    np.testing.assert_allclose(feats, FEATS, atol=1e-3)
    # float micrometres (x + 0.3) rounded to whole micrometres
    assert coords.dtype == np.int64 and coords.tolist() == (grid(6, 1) * 256).tolist()
    p = tf.provenance
    assert (p["layout"], p["feature_encoder"], p["patch_size"], p["patch_size_um"], p["mpp"],
            p["coords_unit"]) == ("stamp", "mahmood-uni", 224, 256.0, 1.1429, MICROMETRES)
    old = inspect_tile_file(write_stamp(tmp_path / "v20", "s1", FEATS, version="2.0.0"))
    assert (old.provenance["patch_size_um"], old.provenance["coords_unit"]) == (256.0, MICROMETRES)
    v1, _, coords = _read(write_stamp(tmp_path / "v1", "s1", FEATS, version="1.1.0"))
    assert v1.provenance["coords_unit"] == STAMP_V1_PIXELS
    assert coords.tolist() == grid(6, 224).tolist()


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f[name] = data
    return path


def _truncated(path):
    _h5(path, features=np.ones((50, 64), np.float32), coords=grid(50, 1))
    path.write_bytes(path.read_bytes()[:3000])
    return path


def _trident_dataset(path, **changes):
    """A TRIDENT file, one dataset replaced."""
    write_trident(path.parent, "s", FEATS)
    src = next(path.parent.glob("*/features_uni_v1/s.h5"))
    with h5py.File(src, "a") as f:
        for name, data in changes.items():
            attrs = dict(f[name].attrs)
            del f[name]
            f[name] = data
            f[name].attrs.update(attrs)
    return src


def _stamp_attr(path, **attrs):
    src = write_stamp(path.parent, "s", FEATS)
    with h5py.File(src, "a") as f:
        f.attrs.update(attrs)
    return src


def _pt(path, value):
    torch.save(value, path)
    return path


BAD_FILES = {
    "not_hdf5": (lambda p: (p.write_bytes(b"CLAM? no." * 20), p)[1], "not an HDF5 file"),
    "truncated": (_truncated, "cannot read the HDF5 file"),
    "no_features": (lambda p: _h5(p, coords=grid(3, 1)), r"no 'features' dataset \(CLAM, "
                    r"TRIDENT\) nor 'feats' \(STAMP\); the file holds \['coords'\]"),
    "features_a_group": (lambda p: (h5py.File(p, "w").create_group("features").file.close(), p)[1],
                         "'features' is not a dataset"),
    "no_coords": (lambda p: _h5(p, features=FEATS),
                  "the tile coordinates dataset 'coords' is missing"),
    "count_mismatch": (lambda p: _h5(p, features=FEATS, coords=grid(5, 1)),
                       "5 coordinates for 6 feature rows"),
    "coords_3_columns": (lambda p: _h5(p, features=FEATS, coords=np.ones((6, 3))),
                         r"coords of shape \(6, 3\), expected \[tiles, 2\]"),
    "zero_tiles": (lambda p: _trident_dataset(p, features=np.empty((0, 4), np.float32),
                                              coords=np.empty((0, 2), np.int64)),
                   r"zero tiles \(features of shape \(0, 4\)\)"),
    "slide_level": (lambda p: _trident_dataset(p, features=np.ones(4, np.float32)),
                    r"features of shape \(4,\), expected \[tiles, features\]: one vector is a "
                    "slide-level embedding"),
    "three_axes": (lambda p: _h5(p, features=np.ones((6, 2, 2)), coords=grid(6, 1)),
                   r"shape \(6, 2, 2\), expected \[tiles, features\]"),
    "strings": (lambda p: _h5(p, features=np.array([[b"a"]] * 2), coords=grid(2, 1)),
                "non-numeric dtype"),
    "stamp_slide_encoding": (lambda p: _stamp_attr(p, feat_type="slide"),
                             "a STAMP slide-level encoding"),
    "stamp_unit": (lambda p: _stamp_attr(p, unit="mm"), "unit 'mm'"),
    "pt_zero_tiles": (lambda p: _pt(p.with_suffix(".pt"), torch.zeros(0, 4)), "zero tiles"),
    "pt_one_vector": (lambda p: _pt(p.with_suffix(".pt"), torch.ones(4)),
                      "slide-level embedding"),
    "pt_nan": (lambda p: _pt(p.with_suffix(".pt"), torch.full((3, 4), float("nan"))),
               "12 non-finite"),
    "suffix": (lambda p: (p.with_suffix(".npy").write_bytes(b"x"), p.with_suffix(".npy"))[1],
               "unsupported tile feature file type '.npy'"),
    "missing": (lambda p: p, "feature file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_refused_naming_the_file(tmp_path, case):
    make, reason = BAD_FILES[case]
    (tmp_path / "bad").mkdir()
    path = make(tmp_path / "bad" / "s.h5")
    with pytest.raises(InputError, match=reason) as err:
        read_tile_features(inspect_tile_file(path))
    assert err.value.path == str(path)


@pytest.mark.parametrize(("dataset", "value", "reason"), [
    ("feats", np.nan, "features hold 1 non-finite value"),
    ("coords", np.inf, "coords hold 1 non-finite value"),
])
def test_non_finite_features_and_coordinates(tmp_path, dataset, value, reason):
    path = write_stamp(tmp_path, "s", FEATS)
    with h5py.File(path, "a") as f:
        data = f[dataset][()]
        data[2, 1] = value
        f[dataset][...] = data
    tf = inspect_tile_file(path)  # the header is fine; the values are read with the features
    with pytest.raises(InputError, match=reason):
        read_tile_features(tf)


def test_a_pt_whose_h5_sibling_does_not_match_names_both(tmp_path):
    h5, pt = write_clam(tmp_path, "s", FEATS)
    torch.save(torch.ones(5, 4), pt)
    with pytest.raises(InputError, match=r"its CLAM h5 sibling .*h5_files/s.h5 \(the tile "
                                         r"coordinates\): 6 coordinates for 5 feature rows"):
        inspect_tile_file(pt)
    h5.write_bytes(b"junk")
    with pytest.raises(InputError, match="h5 sibling .*not an HDF5 file") as err:
        inspect_tile_file(pt)
    assert err.value.path == str(pt)


def test_pickles_in_a_pt_file_are_refused_without_running_them(tmp_path):
    import os

    class Trap:  # unpickling it would create the folder
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / "sprung"),)

    path = tmp_path / "pt_files" / "s.pt"
    path.parent.mkdir()
    torch.save({"features": torch.ones(2, 4), "trap": Trap()}, path)
    with pytest.raises(InputError, match="cannot read features"):
        inspect_tile_file(path)
    assert not (tmp_path / "sprung").exists()


def test_a_file_changed_after_its_header_was_read(tmp_path):
    """The loop reads headers first and features later: a file replaced in between is
    refused with the reason, not read as the header described it."""
    path = write_trident(tmp_path, "s", FEATS)
    tf = inspect_tile_file(path)
    _h5(path, features=np.ones((4, 4), np.float32), coords=grid(4, 1))
    with pytest.raises(InputError, match=r"features of shape \(4, 4\), its header said \(6, 4\)"):
        read_tile_features(tf)
    _h5(path, coords=grid(6, 1))
    with pytest.raises(InputError, match="cannot read the features: KeyError") as err:
        read_tile_features(tf)
    assert err.value.path == str(path)
