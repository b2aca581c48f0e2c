"""Bad NIfTI volumes in a ``csv`` cohort, encoded by the config's ``med3d_demo``
(random-init Med3D) at a small resize.

Good subjects: nibabel's real ``anatomical.nii`` (skipped cleanly when nibabel ships
no test data) and two small synthetic volumes. Every test compares the good subjects'
store rows with those of a cohort of the good subjects alone.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.reliability.conftest import (
    build,
    by_subject,
    csv_cohort_config,
    encode,
    with_cohort,
    write_csv,
)

MODALITY = "mri"
ENCODER = "med3d_demo"
RESIZE = [8, 24, 24]
MODALITIES = {MODALITY: {"kind": "volume", "column": "mri", "encoders": [ENCODER]}}
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
GOOD = ("anat", "blob1", "blob2")
SHAPE = (12, 14, 10)


def _blob(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.zeros(SHAPE, np.float32)
    arr[2:10, 3:11, 2:8] = 50 + 30 * rng.random((8, 8, 6))
    return arr


def _save(path: Path, arr: np.ndarray) -> Path:
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    nib.save(nib.Nifti1Image(arr, aff), path)
    return path


def _nibabel_file(name: str) -> Path:
    path = NIBABEL_DATA / name
    if not path.exists():
        pytest.skip(f"nibabel's test data file not installed: {path}")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("volumes")
    shutil.copy(_nibabel_file("anatomical.nii"), folder / "anat.nii")
    for k, sid in enumerate(GOOD[1:]):
        _save(folder / f"{sid}.nii.gz", _blob(k))
    return folder


def _good_rows(data_dir: Path) -> list[dict]:
    files = {"anat": "anat.nii", "blob1": "blob1.nii.gz", "blob2": "blob2.nii.gz"}
    return [{"id": sid, "y": k % 2, "mri": str(data_dir / files[sid])}
            for k, sid in enumerate(GOOD)]


def _encode(folder: Path, base_config: dict, rows: list[dict], **settings) -> dict:
    encoders = {**base_config["encoders"]}
    encoders[ENCODER] = {**encoders[ENCODER], **settings,
                         "transform": {**encoders[ENCODER]["transform"], "resize": RESIZE}}
    csv_path = write_csv(folder / "cohort.csv", rows)
    cfg = with_cohort(base_config, csv_cohort_config(csv_path, MODALITIES), encoders=encoders)
    layout = build(folder, cfg)
    return by_subject(encode(layout, cfg, MODALITY, ENCODER).path)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, base_config, data_dir) -> dict:
    rows = _encode(tmp_path_factory.mktemp("baseline"), base_config, _good_rows(data_dir))
    for sid in GOOD:
        assert rows[sid]["status"] == "ok" and np.isfinite(rows[sid]["emb"]).all(), sid
    return rows


def _check(rows: dict, baseline: dict, bad: str, *needles: str) -> None:
    assert rows[bad]["status"] == "rejected", rows[bad]
    for needle in needles:
        assert needle in rows[bad]["reason"], (needle, rows[bad]["reason"])
    assert np.isnan(rows[bad]["emb"]).all()
    for sid in GOOD:
        assert rows[sid]["status"] == baseline[sid]["status"] == "ok"
        assert rows[sid]["reason"] == baseline[sid]["reason"]
        assert np.array_equal(rows[sid]["emb"], baseline[sid]["emb"]), sid


def _run_with(tmp_path, base_config, data_dir, bad_path: Path, first: bool = False,
              **settings) -> dict:
    bad = {"id": "bad", "y": 1, "mri": str(bad_path)}
    good = _good_rows(data_dir)
    return _encode(tmp_path, base_config, [bad, *good] if first else [*good, bad], **settings)


@pytest.mark.parametrize("variant", ["nii", "nii.gz"])
def test_truncated_nifti_is_rejected(tmp_path, base_config, data_dir, baseline, variant):
    source = _nibabel_file("anatomical.nii")
    path = tmp_path / f"truncated.{variant}"
    if variant == "nii":
        blob = source.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
        # its header declares more voxels than the file holds: said before reading them
        expected = ("its header declares", f"the file holds {len(blob) // 2} bytes")
    else:
        _save(tmp_path / "whole.nii.gz", _blob(5))
        blob = (tmp_path / "whole.nii.gz").read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
        expected = ("EOFError", "Compressed file ended before the end-of-stream marker")
    rows = _run_with(tmp_path, base_config, data_dir, path)
    _check(rows, baseline, "bad", f"cannot read or preprocess: file {path}", *expected)


@pytest.mark.parametrize("variant", ["nii", "nii.gz"])
def test_a_header_declaring_terabytes_rejects_its_subject_not_the_job(
        tmp_path, base_config, data_dir, baseline, variant):
    """A damaged header's dimensions (30000 cubed) made nibabel ask for 108 TB before it
    read a voxel: the MemoryError read as the machine's, which failed the job (and its
    retries with more memory) with an empty message naming no subject."""
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    path = tmp_path / f"huge.{variant}"
    nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).to_filename(path)
    opener = gzip.open if variant == "nii.gz" else open
    with opener(path, "rb") as fh:
        blob = fh.read()
    with opener(path, "wb") as fh:
        fh.write(header.binaryblock + blob[len(header.binaryblock):])
    rows = _run_with(tmp_path, base_config, data_dir, path)
    _check(rows, baseline, "bad", "shape (30000, 30000, 30000): its header declares "
           "108000000000000 bytes of data")


@pytest.mark.parametrize("readers", ["threads", "processes"])
def test_nifti_with_nan_voxels_is_rejected_at_load(tmp_path, base_config, data_dir, baseline,
                                                   readers):
    arr = _blob(7)
    arr[:, :, 4] = np.nan  # one NaN slice: 12 x 14 voxels
    arr[5, 5, 5] = np.inf
    path = _save(tmp_path / "nan.nii.gz", arr)
    # first in the cohort, so it would share Med3D's first batch if it reached the network;
    # read in processes, the rejection and the other rows are the same, bit for bit (a
    # volume this small is normalised on one thread either way: benchmarks/README.md,
    # "Volume readers in processes")
    rows = _run_with(tmp_path, base_config, data_dir, path, first=True, loader_workers=2,
                     loader_processes=readers == "processes")
    n = SHAPE[0] * SHAPE[1] + 1
    _check(rows, baseline, "bad", str(path),
           f"{n} non-finite voxel(s) (NaN/inf) of {int(np.prod(SHAPE))}")


def test_2d_nifti_is_rejected(tmp_path, base_config, data_dir, baseline):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(_blob(3)[:, :, 5], np.eye(4)), path)
    assert nib.load(path).ndim == 2
    rows = _run_with(tmp_path, base_config, data_dir, path)
    _check(rows, baseline, "bad", str(path),
           f"expected one 3-D volume, got a 2-D image of shape {SHAPE[:2]}")


@pytest.mark.parametrize("variant", ["synthetic", "nibabel-example4d"])
def test_4d_nifti_is_rejected(tmp_path, base_config, data_dir, baseline, variant):
    if variant == "synthetic":
        path = tmp_path / "series.nii.gz"
        nib.save(nib.Nifti1Image(np.stack([_blob(1), _blob(2)], axis=-1), np.eye(4)), path)
        shape = (2, *SHAPE)
    else:  # a real 4-D file: 128 x 96 x 24 voxels, 2 time points
        path = _nibabel_file("example4d.nii.gz")
        shape = (2, 128, 96, 24)
    rows = _run_with(tmp_path, base_config, data_dir, path)
    _check(rows, baseline, "bad", str(path), f"got array shape {shape} (channel first)",
           "a 4-D or multi-channel file")


def test_the_median_spacing_a_store_was_resampled_to_is_in_its_preprocessing(
        tmp_path, base_config, data_dir):
    """`spacing: median` recorded only "median": two cohorts resampled to different grids
    had the same preprocessing hash, and `mmpipe predict` said nothing."""
    from mmpipe.store import read_features

    encoders = {**base_config["encoders"]}
    encoders[ENCODER] = {**encoders[ENCODER], "transform": {
        **encoders[ENCODER]["transform"], "resize": RESIZE, "spacing": "median"}}
    coarse = np.diag([3.0, 3.0, 6.0, 1.0])
    stored = []
    for name, extra in (("fine", []), ("coarse", [2, 3])):
        rows = _good_rows(data_dir)
        for k in extra:  # two more volumes on a coarser grid move the median
            path = tmp_path / f"coarse{k}.nii.gz"
            nib.save(nib.Nifti1Image(_blob(k), coarse), path)
            rows.append({"id": f"coarse{k}", "y": k % 2, "mri": str(path)})
        cfg = with_cohort(base_config, csv_cohort_config(
            write_csv(tmp_path / name / "cohort.csv", rows), MODALITIES), encoders=encoders)
        stored.append(read_features(encode(build(tmp_path / name, cfg), cfg, MODALITY,
                                           ENCODER).path).attrs)
    spacings = [a["preprocessing"]["median_spacing"] for a in stored]
    assert spacings[0] != spacings[1] and len(spacings[0]) == 3
    assert stored[0]["preprocessing_hash"] != stored[1]["preprocessing_hash"]
