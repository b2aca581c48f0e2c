"""Bad pre-extracted feature files in a ``csv`` cohort (``precomputed`` encoder).

Every test builds the cohort with the bad file and compares the good subjects' rows
with a cohort of the good subjects alone: status, reason and embedding must be equal.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mmpipe.encode.features import FeatureCohortError
from tests.reliability.conftest import (
    build,
    by_subject,
    csv_cohort_config,
    encode,
    with_cohort,
    write_csv,
)

MODALITY = "feat"
ENCODER = "precomputed"
DIM = 6
GOOD = ("g1", "g2", "g3")
MODALITIES = {MODALITY: {"kind": "features", "column": "feat", "encoders": [ENCODER]}}


def _good_array(k: int) -> np.ndarray:
    return (np.arange(DIM, dtype=np.float32) + 10 * k).reshape(1, DIM, 1)  # flattened to (6,)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The good subjects' files, shared by every test of the module."""
    folder = tmp_path_factory.mktemp("features")
    for k, sid in enumerate(GOOD):
        np.save(folder / f"{sid}.npy", _good_array(k))
    return folder


def _rows(data_dir: Path, bad: list[tuple[str, Path]], first: bool = False) -> list[dict]:
    good = [{"id": sid, "y": k % 2, "feat": str(data_dir / f"{sid}.npy")}
            for k, sid in enumerate(GOOD)]
    extra = [{"id": sid, "y": 1, "feat": str(path)} for sid, path in bad]
    return extra + good if first else good + extra


def _encode(folder: Path, base_config: dict, rows: list[dict], encoders: dict | None = None):
    csv_path = write_csv(folder / "cohort.csv", rows)
    overrides = {"encoders": encoders} if encoders is not None else {}
    cfg = with_cohort(base_config, csv_cohort_config(csv_path, MODALITIES), **overrides)
    layout = build(folder, cfg)
    store = encode(layout, cfg, MODALITY, ENCODER)
    return by_subject(store.path), store


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, base_config, data_dir) -> dict:
    """The good subjects alone."""
    rows, _ = _encode(tmp_path_factory.mktemp("baseline"), base_config, _rows(data_dir, []))
    assert [rows[s]["status"] for s in GOOD] == ["ok"] * len(GOOD)
    return rows


def _assert_good_unchanged(rows: dict, baseline: dict) -> None:
    for sid in GOOD:
        assert rows[sid]["status"] == baseline[sid]["status"] == "ok"
        assert rows[sid]["reason"] == baseline[sid]["reason"]
        assert np.array_equal(rows[sid]["emb"], baseline[sid]["emb"]), sid
    for k, sid in enumerate(GOOD):
        assert np.array_equal(baseline[sid]["emb"], _good_array(k).reshape(DIM))


def _assert_rejected(rows: dict, sid: str, *needles: str) -> None:
    assert rows[sid]["status"] == "rejected", rows[sid]
    for needle in needles:
        assert needle in rows[sid]["reason"], (needle, rows[sid]["reason"])
    assert np.isnan(rows[sid]["emb"]).all()


@pytest.mark.parametrize("first", [True, False], ids=["first", "last"])
def test_wrong_shape_is_rejected_even_as_the_first_subject(tmp_path, base_config, data_dir,
                                                           baseline, first):
    np.save(tmp_path / "wrong.npy", np.ones(DIM - 1, np.float32))
    rows, store = _encode(tmp_path, base_config,
                          _rows(data_dir, [("bad", tmp_path / "wrong.npy")], first=first))
    assert store.feature_shape == (DIM,)
    _assert_rejected(rows, "bad", f"feature shape ({DIM - 1},) differs from the cohort's "
                                  f"({DIM},)", "most common shape: 3 of 4 readable files")
    # which file, not only which subject: the store's reason (and the QC) name it
    assert f"file {tmp_path / 'wrong.npy'}" in rows["bad"]["reason"]
    _assert_good_unchanged(rows, baseline)
    assert store.attrs["feature_shape_source"] == "most common shape: 3 of 4 readable files"


def test_nan_features_are_rejected(tmp_path, base_config, data_dir, baseline):
    arr = np.ones(DIM, np.float32)
    arr[[1, 4]] = np.nan
    arr[2] = np.inf
    np.save(tmp_path / "nan.npy", arr)
    rows, _ = _encode(tmp_path, base_config, _rows(data_dir, [("bad", tmp_path / "nan.npy")]))
    _assert_rejected(rows, "bad", f"features hold 3 non-finite value(s) (NaN/inf) of {DIM}")
    _assert_good_unchanged(rows, baseline)


@pytest.mark.parametrize("variant", ["empty-array", "zero-bytes"])
def test_empty_features_are_rejected(tmp_path, base_config, data_dir, baseline, variant):
    path = tmp_path / "empty.npy"
    if variant == "empty-array":
        np.save(path, np.zeros((0,), np.float32))
        expected = "features are empty (shape (0,))"
    else:
        path.write_bytes(b"")
        expected = "cannot read features: EOFError"
    rows, _ = _encode(tmp_path, base_config, _rows(data_dir, [("bad", path)]))
    _assert_rejected(rows, "bad", expected)
    _assert_good_unchanged(rows, baseline)


class _Trap:
    """Unpickling this calls os.mkdir(sentinel): the test sees whether anything unpickled."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.mkdir, (self.sentinel,)


def test_pickled_object_array_is_refused_without_unpickling(tmp_path, base_config, data_dir,
                                                            baseline):
    sentinel = tmp_path / "unpickled"
    path = tmp_path / "objects.npy"
    np.save(path, np.array([_Trap(sentinel), 1.0], dtype=object), allow_pickle=True)
    # the trap works: a reader that allowed pickles would run os.mkdir
    armed = tmp_path / "armed.npy"
    np.save(armed, np.array([_Trap(tmp_path / "sprung"), 1.0], dtype=object), allow_pickle=True)
    np.load(armed, allow_pickle=True)
    assert (tmp_path / "sprung").is_dir()
    rows, _ = _encode(tmp_path, base_config, _rows(data_dir, [("bad", path)]))
    _assert_rejected(rows, "bad", "pickled object array", "refused without unpickling",
                     "allow_pickle=False")
    assert not sentinel.exists(), "the pickled object was unpickled"
    _assert_good_unchanged(rows, baseline)


def test_feature_shape_from_config_beats_the_files(tmp_path, base_config, data_dir, baseline):
    """Two (5,) files first, two good (6,) files after: a tie the files cannot settle
    stops the job, asking for the shape; feature_shape: [6] in config settles it."""
    from mmpipe.encode.features import FeatureCohortError

    for sid in ("w1", "w2"):
        np.save(tmp_path / f"{sid}.npy", np.ones(DIM - 1, np.float32))
    bad = [("w1", tmp_path / "w1.npy"), ("w2", tmp_path / "w2.npy")]
    rows_cfg = _rows(data_dir, bad, first=True)
    # without the config: a tie 2 x (5,) vs 2 x (6,) once g3 is left out; guessing would
    # reject good subjects, so the job stops
    with pytest.raises(FeatureCohortError, match="equally common"):
        _encode(tmp_path / "tie", base_config, rows_cfg[:-1])

    encoders = {**base_config["encoders"],
                ENCODER: {**base_config["encoders"][ENCODER], "feature_shape": [DIM]}}
    rows, store = _encode(tmp_path / "config", base_config, rows_cfg[:-1], encoders=encoders)
    assert store.feature_shape == (DIM,)
    assert store.attrs["feature_shape_source"] == "config feature_shape"
    for sid in ("w1", "w2"):
        _assert_rejected(rows, sid, f"feature shape ({DIM - 1},) differs from the cohort's "
                                    f"({DIM},) (config feature_shape)")
    for sid in GOOD[:-1]:
        assert rows[sid]["status"] == "ok"
        assert np.array_equal(rows[sid]["emb"], baseline[sid]["emb"])


def test_most_subjects_rejected_fails_loudly(tmp_path, base_config, data_dir):
    np.save(tmp_path / "short.npy", np.ones(DIM - 1, np.float32))
    np.save(tmp_path / "nan.npy", np.full(DIM, np.nan, np.float32))
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    bad = [("b1", tmp_path / "short.npy"), ("b2", tmp_path / "nan.npy"),
           ("b3", tmp_path / "junk.npy")]
    # exactly half rejected (3 of 6): the store is written, the bad ones rejected
    rows, _ = _encode(tmp_path / "half", base_config, _rows(data_dir, bad))
    assert [rows[s]["status"] for s in ("b1", "b2", "b3")] == ["rejected"] * 3
    # more than half (4 of 6): the job stops and writes no store
    (tmp_path / "junk2.npy").write_bytes(b"not numpy either")
    rows = _rows(data_dir, [*bad, ("b4", tmp_path / "junk2.npy")])[1:]  # g2, g3, four bad
    folder = tmp_path / "most"
    with pytest.raises(FeatureCohortError) as info:
        _encode(folder, base_config, rows)
    message = str(info.value)
    assert "4 of 6 subjects with a feat feature file were rejected (more than 50%)" in message
    assert "1 wrong shape" in message and "1 non-finite values" in message
    assert "2 unreadable" in message
    assert (f"b1: file {tmp_path / 'short.npy'}: feature shape (5,) differs from the "
            "cohort's (6,)") in message
    assert "encoders.precomputed" in message
    assert not list(folder.glob("results/*/features/feat/precomputed.zarr"))
