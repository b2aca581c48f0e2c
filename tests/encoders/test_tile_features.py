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
from tests.conftest import RunsCode
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


def _damaged_header(path):
    """One byte of the superblock's addresses flipped: h5py raises RuntimeError ("addr
    overflow"), not OSError, which stopped the whole store job unnamed."""
    _h5(path, features=np.ones((6, 4), np.float32), coords=grid(6, 1))
    data = bytearray(path.read_bytes())
    data[16] ^= 0xFF
    path.write_bytes(bytes(data))
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


def _trident_attr(path, **attrs):
    """A TRIDENT file, attributes of its coords replaced."""
    src = _trident_dataset(path)
    with h5py.File(src, "a") as f:
        f["coords"].attrs.update(attrs)
    return src


def _unreadable_attr(path):
    """A TRIDENT file whose coords' patch_size has an HDF5 time type, which h5py cannot read
    (TypeError): the reader's own error, rejected at the boundary."""
    src = _trident_dataset(path)
    with h5py.File(src, "a") as f:
        del f["coords"].attrs["patch_size"]
        h5py.h5a.create(f["coords"].id, b"patch_size", h5py.h5t.UNIX_D32LE,
                        h5py.h5s.create(h5py.h5s.SCALAR))
    return src


def _elsewhere(path):
    """A file beside the feature file, with the features a link would lead to."""
    return _h5(path.parent / "elsewhere.h5", features=FEATS, coords=grid(6, 1))


def _external_storage(path):
    raw = path.parent / "features.raw"
    raw.write_bytes(FEATS.tobytes())
    with h5py.File(path, "w") as f:
        f.create_dataset("features", FEATS.shape, np.float32,
                         external=[(str(raw), 0, FEATS.nbytes)])
        f["coords"] = grid(6, 1)
    return path


def _virtual(path):
    source = _elsewhere(path)
    layout = h5py.VirtualLayout(FEATS.shape, np.float32)
    layout[:] = h5py.VirtualSource(source, "features", FEATS.shape)
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("features", layout)
        f["coords"] = grid(6, 1)
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
    "zero_columns": (lambda p: _h5(p, features=np.empty((3, 0), np.float32), coords=grid(3, 1)),
                     r"features of shape \(3, 0\): 3 tiles with zero feature columns"),
    "stamp_size_not_a_number": (lambda p: _stamp_attr(p, tile_size_um="256um"),
                                "the STAMP attribute 'tile_size_um' is '256um', expected a "
                                "positive number"),
    "stamp_size_nan": (lambda p: _stamp_attr(p, tile_size_px=np.nan),
                       "'tile_size_px' is nan, expected a positive number"),
    "attribute_2d": (lambda p: _trident_attr(p, patch_size=np.full((2, 2), 256)),
                     r"the attribute 'patch_size' is an array of shape \(2, 2\)"),
    "attribute_unreadable": (_unreadable_attr, "cannot read the file's header: TypeError: No "
                             "NumPy equivalent for TypeTimeID"),
    "features_external_link_missing": (
        lambda p: _h5(p, features=h5py.ExternalLink("missing.h5", "/features"),
                      coords=grid(6, 1)),
        "'features' is an external link to '/features' in file 'missing.h5'"),
    "features_external_link": (
        lambda p: _h5(p, features=h5py.ExternalLink(str(_elsewhere(p)), "/features"),
                      coords=grid(6, 1)),
        "'features' is an external link .* a feature file must hold its own data"),
    "coords_soft_link": (lambda p: _h5(p, features=FEATS, xy=grid(6, 1),
                                       coords=h5py.SoftLink("/xy")),
                         "'coords' is a soft link to '/xy'"),
    "features_external_storage": (_external_storage,
                                  r"'features' keeps its data in external file\(s\) "
                                  r"\[.*features.raw'\]"),
    "features_virtual": (_virtual, "'features' is a virtual dataset"),
    "coords_past_int64": (lambda p: _h5(p, features=FEATS, coords=np.full((6, 2), 1e30)),
                          r"coords hold 12 value\(s\) past the int64 range \(largest 1e\+30\)"),
    # past float32's range: it became inf, reported as NaN/inf the file does not hold
    "features_past_float32": (lambda p: _h5(p, features=np.full((6, 4), 1e39),
                                            coords=grid(6, 1)),
                              r"features hold values past float32's range"),
    "coords_negative": (lambda p: _h5(p, features=FEATS, coords=grid(6, 1) - 1),
                        r"coords hold 6 negative value\(s\) \(smallest -1\)"),
    "pt_zero_tiles": (lambda p: _pt(p.with_suffix(".pt"), torch.zeros(0, 4)), "zero tiles"),
    "pt_zero_columns": (lambda p: _pt(p.with_suffix(".pt"), torch.zeros(3, 0)),
                        r"the .pt tensor of shape \(3, 0\): 3 tiles with zero feature "
                        r"columns each"),
    "pt_one_vector": (lambda p: _pt(p.with_suffix(".pt"), torch.ones(4)),
                      "slide-level embedding"),
    "pt_nan": (lambda p: _pt(p.with_suffix(".pt"), torch.full((3, 4), float("nan"))),
               "12 non-finite"),
    "suffix": (lambda p: (p.with_suffix(".npy").write_bytes(b"x"), p.with_suffix(".npy"))[1],
               "unsupported tile feature file type '.npy'"),
    "missing": (lambda p: p, "feature file not found"),
    "damaged_header": (_damaged_header, "cannot read the file's header: RuntimeError: "
                       "Unable to synchronously check link existence"),
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
    _h5(h5, coords=h5py.ExternalLink("missing.h5", "/coords"))
    with pytest.raises(InputError, match="h5 sibling .*'coords' is an external link") as err:
        inspect_tile_file(pt)
    assert err.value.path == str(pt)


def test_a_pt_files_values_are_read_once(tmp_path, monkeypatch):
    """The job reads every file's header before the loop reads the features; a .pt
    file's header is read with its storage mapped, so its values (tens of MB a slide in
    a CLAM cohort) are read once, by the loop."""
    _, pt = write_clam(tmp_path, "s", FEATS)
    loads, load = [], torch.load

    def recording_load(*args, **kwargs):
        loads.append(kwargs.get("mmap", False))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    tf = inspect_tile_file(pt)
    assert loads == [True]
    feats, coords = read_tile_features(tf)
    assert loads == [True, False]
    np.testing.assert_array_equal(feats, FEATS)
    assert coords.shape == (6, 2)


@pytest.mark.parametrize("values", ["plain", "zip_end_record_inside"])
def test_a_pt_file_in_the_legacy_format_is_read_whole(tmp_path, values):
    """torch.save's format before torch 1.6 cannot be mapped: its header is the whole
    file. Told by the file's first bytes, as torch tells it: a legacy file whose values
    happen to hold a zip end record (which ``zipfile.is_zipfile`` looks for at the end)
    is read whole too."""
    feats = FEATS
    if values == "zip_end_record_inside":  # PK\x05\x06 + 18 bytes: an empty zip's end
        feats = np.frombuffer(b"PK\x05\x06" + bytes(20), dtype=np.float32).reshape(6, 1)
        feats = np.repeat(feats, 4, axis=1).copy()
    _, pt = write_clam(tmp_path, "s", feats)
    torch.save(torch.from_numpy(feats), pt, _use_new_zipfile_serialization=False)
    tf = inspect_tile_file(pt)
    assert (tf.n_tiles, tf.provenance["feature_dim"]) == feats.shape
    np.testing.assert_array_equal(read_tile_features(tf)[0], feats)


def test_pickles_in_a_pt_file_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "sprung"  # unpickling RunsCode would create it
    path = tmp_path / "pt_files" / "s.pt"
    path.parent.mkdir()
    torch.save({"features": torch.ones(2, 4), "trap": RunsCode(marker)}, path)
    with pytest.raises(InputError, match="cannot read features: the file pickles more than "
                                         "tensors") as err:
        inspect_tile_file(path)
    assert not marker.exists()
    # the reason quoted torch's advice to load the file with weights_only=False, which runs
    # its code, in terminal colour codes
    assert "weights_only=False" not in err.value.reason and "\x1b" not in err.value.reason
    assert "Unsupported global" in err.value.reason


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
    with h5py.File(path, "w") as f:
        f.create_group("features")
        f["coords"] = grid(6, 1)
    with pytest.raises(InputError, match="'features' is not a dataset"):
        read_tile_features(tf)
    # a link that appears in between is refused as it is at the header
    _h5(path, features=h5py.ExternalLink(str(_elsewhere(path)), "/features"), coords=grid(6, 1))
    with pytest.raises(InputError, match="'features' is an external link"):
        read_tile_features(tf)


def test_a_stamp_file_emptied_after_its_header_was_read_names_feats(tmp_path):
    path = write_stamp(tmp_path, "s", FEATS)
    tf = inspect_tile_file(path)
    _h5(path, feats=np.empty((0, 4), np.float16), coords=np.empty((0, 2), np.float32))
    with pytest.raises(InputError, match=r"zero tiles \(feats of shape \(0, 4\)\)"):
        read_tile_features(tf)


def test_running_out_of_memory_fails_the_job_not_the_subject(tmp_path, monkeypatch):
    """torch's CPU allocator raises a RuntimeError, which a damaged file's h5py error
    also is: caught as the file's fault, a slide too large for the node was stored as
    rejected in a store that looked complete."""
    import mmpipe.encoders.tile_features as tile_features

    path = _h5(tmp_path / "s.h5", features=FEATS, coords=grid(6, 1))
    tf = inspect_tile_file(path)

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 1099511627776 bytes")

    monkeypatch.setattr(tile_features, "_open", no_memory)
    for call in (lambda: inspect_tile_file(path), lambda: read_tile_features(tf)):
        with pytest.raises(RuntimeError, match="can't allocate memory"):
            call()


def test_a_pt_whose_h5_sibling_holds_other_features_is_refused(tmp_path):
    """The .pt tensor was paired with h5_files/<slide>.h5 by tile count alone: an h5 of
    another encoder's features (or another slide's of as many tiles) lent it coordinates."""
    h5, pt = write_clam(tmp_path, "s", FEATS)
    with h5py.File(h5, "r+") as f:
        coords = f["coords"][()]
    _h5(h5, features=np.zeros((6, 8), np.float32), coords=coords)
    with pytest.raises(InputError, match=r"its features are \[6, 8\], the .pt tensor \[6, 4\]"):
        inspect_tile_file(pt)


def test_a_pt_whose_h5_sibling_is_another_slides_of_as_many_tiles_is_refused(tmp_path):
    h5, pt = write_clam(tmp_path, "s", FEATS)
    with h5py.File(h5, "r+") as f:
        coords = f["coords"][()]
    _h5(h5, features=FEATS[::-1].copy(), coords=coords[::-1].copy())
    with pytest.raises(InputError, match=r"its features differ from the .pt tensor's"):
        read_tile_features(inspect_tile_file(pt))


def test_repeated_tile_positions_are_refused(tmp_path):
    """No tool writes a tile twice; repeated positions (a merged or corrupt file) weighed
    their tiles more in the slide's mean."""
    path = write_stamp(tmp_path, "s", FEATS)
    with h5py.File(path, "a") as f:
        coords = f["coords"][()]
        coords[3] = coords[1]
        f["coords"][...] = coords
    with pytest.raises(InputError, match="coords hold 1 repeated tile position"):
        read_tile_features(inspect_tile_file(path))
    with h5py.File(path, "a") as f:  # normalised positions: all distinct, one once rounded
        del f["coords"]
        f["coords"] = np.linspace(0, 0.9, 12, dtype=np.float64).reshape(6, 2)
    with pytest.raises(InputError, match="less than one unit from another"):
        read_tile_features(inspect_tile_file(path))
