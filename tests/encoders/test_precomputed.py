"""Pre-extracted feature files: formats, keys, squeezing and every failure as InputError."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmpipe.encoders.precomputed import load_feature_file
from mmpipe.errors import InputError
from tests.conftest import require


def test_npy_and_flatten(tmp_path):
    a = np.arange(512, dtype=np.float64).reshape(1, 1, 512, 1)
    p = tmp_path / "f.npy"
    np.save(p, a)
    out = load_feature_file(p)
    assert out.shape == (512,) and out.dtype == np.float32 and out[3] == 3
    assert load_feature_file(p, flatten=False).shape == (1, 1, 512, 1)


def test_single_value_keeps_one_axis(tmp_path):
    p = tmp_path / "f.npy"
    np.save(p, np.ones((1, 1), dtype=np.float32))
    assert load_feature_file(p).shape == (1,)


def test_npz_keys(tmp_path):
    p = tmp_path / "one.npz"
    np.savez(p, np.ones((1, 4)))
    assert load_feature_file(p).shape == (4,)
    p = tmp_path / "named.npz"
    np.savez(p, emb=np.ones(3))
    assert load_feature_file(p).shape == (3,)  # the single array, whatever its name
    p = tmp_path / "many.npz"
    np.savez(p, features=np.zeros(2), coords=np.ones((5, 2)))
    assert load_feature_file(p).tolist() == [0, 0]  # "features" preferred
    assert load_feature_file(p, key="coords").shape == (5, 2)
    p = tmp_path / "ambiguous.npz"
    np.savez(p, a=np.zeros(2), b=np.ones(2))
    with pytest.raises(InputError, match=r"\['a', 'b'\]") as err:
        load_feature_file(p)
    assert err.value.path == str(p)
    with pytest.raises(InputError, match="'c'"):
        load_feature_file(p, key="c")


def test_torch_files(tmp_path):
    p = tmp_path / "t.pt"
    torch.save(torch.ones(1, 1024), p)
    assert load_feature_file(p).shape == (1024,)
    p = tmp_path / "d.pth"
    torch.save({"features": torch.zeros(8), "coords": torch.ones(8, 2)}, p)
    assert load_feature_file(p).shape == (8,)
    p = tmp_path / "single.pt"
    torch.save({"emb": torch.full((3,), 2.0, dtype=torch.float16), "n": 3}, p)
    assert load_feature_file(p).tolist() == [2, 2, 2]
    p = tmp_path / "many.pt"
    torch.save({"a": torch.zeros(2), "b": torch.zeros(2)}, p)
    with pytest.raises(InputError, match="several"):
        load_feature_file(p)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_corrupt_files(tmp_path, suffix):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="cannot read") as err:
        load_feature_file(p)
    assert err.value.path == str(p)


def test_pickles_are_refused_without_unpickling(tmp_path):
    import os
    import pickle

    class Trap:  # unpickling it would create the folder
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / "sprung"),)

    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([Trap(), 1.0], dtype=object), allow_pickle=True)
    packed = tmp_path / "objects.npz"
    np.savez(packed, arr_0=np.array([Trap()], dtype=object))
    raw = tmp_path / "raw.npy"
    raw.write_bytes(pickle.dumps([1.0, 2.0]))
    for path in (objects, packed):
        with pytest.raises(InputError, match="pickled object array, not numbers; refused "
                                             "without unpickling it"):
            load_feature_file(path)
    with pytest.raises(InputError, match="the file is a Python pickle"):
        load_feature_file(raw)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy")
    with pytest.raises(InputError, match=r"the file is not a NumPy file \(no .npy header\)"):
        load_feature_file(junk)
    assert not (tmp_path / "sprung").exists()


def test_values_past_float32s_range_are_refused_as_such(tmp_path):
    """A finite 1e39 became inf in the store's float32, and was reported as NaN/inf the
    file does not hold. Large integers round as floats do (float32's precision)."""
    p = tmp_path / "f.npy"
    np.save(p, np.array([1e39, 1.0]))
    with pytest.raises(InputError, match=r"values past float32's range \(largest "
                                         r"magnitude 1e\+39\)"):
        load_feature_file(p)
    counts = tmp_path / "counts.npy"
    np.save(counts, np.array([35_000_000, 7], np.int64))
    np.testing.assert_array_equal(load_feature_file(counts),
                                  np.array([35_000_000, 7], np.float32))


def test_truncated_npz(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, np.ones(1000))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InputError):
        load_feature_file(p)


def test_non_finite_missing_and_unsupported(tmp_path):
    p = tmp_path / "nan.npy"
    np.save(p, np.array([1.0, np.nan, np.inf]))
    with pytest.raises(InputError, match="2 non-finite"):
        load_feature_file(p)
    with pytest.raises(InputError, match="not found"):
        load_feature_file(tmp_path / "absent.npy")
    q = tmp_path / "f.csv"
    q.write_text("1,2")
    with pytest.raises(InputError, match="unsupported"):
        load_feature_file(q)
    s = tmp_path / "s.npy"
    np.save(s, np.array(["a", "b"]))
    with pytest.raises(InputError, match="non-numeric"):
        load_feature_file(s)


def test_mmist_files(shared_data):
    feats = shared_data / "mmist-ccrcc" / "Features"
    ct = require(feats / "CT Features" / "C3L-00610-1.npz")
    assert load_feature_file(ct).shape == (512,)
    wsi = sorted((feats / "WSI Features").glob("*.npz"))
    if not wsi:
        pytest.skip("no WSI features")
    assert load_feature_file(wsi[0]).shape == (1024,)


def test_a_header_declaring_more_than_the_file_holds_is_the_files_error(tmp_path):
    """A .npy whose header declares a huge shape made numpy ask for terabytes: a
    MemoryError, which read as the machine's and failed the job instead of naming the
    file. A real shortage of memory still fails the job."""
    np.save(tmp_path / "ok.npy", np.zeros((4, 4), np.float32))
    blob = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "huge.npy").write_bytes(blob.replace(b"(4, 4)", b"(99999999, 9999)"))
    with pytest.raises(InputError, match="its header declares 3999599960004 bytes of data, "
                       "and the file holds"):
        load_feature_file(tmp_path / "huge.npy")
    # memory short for a file that can hold what it declares: the machine's
    import unittest.mock

    try:  # numpy's, with its size (numpy._core from numpy 2)
        from numpy._core._exceptions import _ArrayMemoryError
    except ImportError:
        from numpy.core._exceptions import _ArrayMemoryError
    short = _ArrayMemoryError((4, 4), np.dtype(np.float32))
    with unittest.mock.patch("numpy.load", side_effect=short), pytest.raises(MemoryError):
        load_feature_file(tmp_path / "ok.npy")
