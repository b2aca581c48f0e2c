"""A file a DataLad or git-annex download has not fetched is a symbolic link to nothing.
Every adapter listed a folder's files with ``is_file()``, which such a link is not: the
file vanished and its modality read as absent (missing by nature, to the benchmark) with
no row naming it. Now the subject's modality is rejected, naming the link."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.manifest import DANGLING_LINK, REJECTED
from mmpipe.errors import InputError
from mmpipe.io.images import image_files


def _unfetched(path: Path) -> None:
    """``path`` as an annexed file not fetched: a link into an object store not there."""
    path.unlink()
    os.symlink("/nonexistent/.git/annex/objects/Xx/Yy/key/key", path)


def _ixi(root: Path):
    from mmpipe.cohorts.demo.ixi import write_ixi

    plan = write_ixi(root, n_subjects=8, seed=3)
    sid = sorted(plan.files["t1"])[0]
    cfg = {"adapter": "ixi", "root": str(root), "labels": ["sex"],
           "modalities": {"t1": {"kind": "volume"}, "t2": {"kind": "volume"}}}
    return cfg, root / "IXI-T1" / plan.files["t1"][sid], "t1"


def _brats(root: Path):
    from mmpipe.cohorts.demo.brats import write_brats

    plan = write_brats(root, n_cases=8, seed=2)
    case = plan.cases[0]
    cfg = {"adapter": "brats", "root": str(root), "labels": ["survival_class"],
           "modalities": {"flair": {"kind": "volume"}, "t1": {"kind": "volume"}}}
    return cfg, next(root.rglob(f"{case}_flair.nii*")), "flair"


def _bcnb(root: Path):
    from mmpipe.cohorts.demo.bcnb import write_bcnb

    write_bcnb(root, n_patients=10, seed=0)
    cfg = {"adapter": "bcnb", "root": str(root), "labels": ["aln_status"],
           "modalities": {"wsi": {"kind": "slide"}}}
    return cfg, sorted((root / "WSIs").glob("*.jpg"))[0], "wsi"


def _adni(root: Path):
    from mmpipe.cohorts.demo.adni import write_adni

    plan = write_adni(root, n_subjects=8, seed=1)
    cfg = {"adapter": "adni", "root": str(root), "labels": ["diagnosis"],
           "modalities": {"mri": {"kind": "volume"}, "pet": {"kind": "volume"}}}
    return cfg, next((root / "ADNI" / plan.subjects[0] / "MPRAGE").rglob("*.nii*")), "mri"


@pytest.mark.parametrize("make", [_ixi, _brats, _bcnb, _adni])
def test_a_file_not_fetched_rejects_its_modality_by_name(make, tmp_path):
    root = tmp_path / "download"
    cfg, path, modality = make(root)
    _unfetched(path)
    manifest = build_manifest("c", cfg, tmp_path / "out", base_dir=tmp_path)
    qc = read_qc(tmp_path / "out")
    row = qc.filter((pl.col("path") == str(path)) & (pl.col("modality") == modality))
    assert row["status"].to_list() == [REJECTED] and row["reason"][0] == DANGLING_LINK
    sid = row["subject_id"][0]
    if sid in manifest["subject_id"].to_list():  # kept by another modality
        assert manifest.filter(pl.col("subject_id") == sid)[f"{modality}_path"][0] is None


def test_an_image_set_with_a_file_not_fetched_is_refused_naming_it(tmp_path):
    """BreakHis and the csv adapter read an image folder through ``image_files``: an
    unfetched image left the set one image short without a word."""
    folder = tmp_path / "40X"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"")
    _unfetched(folder / "b.png")
    with pytest.raises(InputError, match="image b.png: not a file: a symbolic link to nothing"):
        image_files(folder)
    assert image_files(folder / "a.png") == [folder / "a.png"]
    with pytest.raises(InputError, match="not found: a symbolic link to nothing"):
        image_files(folder / "b.png")


def test_a_mask_not_fetched_is_no_mask_and_said(tmp_path):
    """BraTS's segmentation listed as a link to nothing went into the mask column, and
    the subject failed at encode time as "volume file not found"; IXI's brain mask was
    dropped without a word. Both are now no mask, with a QC row naming the link."""
    from mmpipe.cohorts.demo.brats import write_brats
    from mmpipe.cohorts.demo.ixi import write_ixi

    plan = write_brats(tmp_path / "brats", n_cases=8, seed=2)
    case = plan.cases[0]
    seg = next((tmp_path / "brats").rglob(f"{case}_seg.nii*"))
    _unfetched(seg)
    cfg = {"adapter": "brats", "root": str(tmp_path / "brats"), "labels": ["survival_class"],
           "modalities": {"flair": {"kind": "volume"}}}
    manifest = build_manifest("b", cfg, tmp_path / "o1", base_dir=tmp_path)
    row = manifest.filter(pl.col("subject_id") == case)
    assert row["flair_mask_path"][0] is None and row["flair_path"][0] is not None
    said = read_qc(tmp_path / "o1").filter(pl.col("path") == str(seg))
    assert said["status"].to_list() == ["skipped"]
    assert said["reason"][0] == f"its mask, {DANGLING_LINK}: no mask"

    plan = write_ixi(tmp_path / "ixi", n_subjects=8, seed=3)
    sid, name = sorted(plan.files["t1"].items())[0]
    masks = tmp_path / "ixi" / "masks"
    masks.mkdir()
    mask = masks / (name.removesuffix(".nii.gz") + "_mask.nii.gz")
    mask.symlink_to("/nonexistent/.git/annex/objects/key")
    cfg = {"adapter": "ixi", "root": str(tmp_path / "ixi"), "labels": ["sex"],
           "ixi": {"brain_masks": "masks"}, "modalities": {"t1": {"kind": "volume"}}}
    manifest = build_manifest("i", cfg, tmp_path / "o2", base_dir=tmp_path)
    assert manifest.filter(pl.col("subject_id") == sid)["t1_mask_path"][0] is None
    said = read_qc(tmp_path / "o2").filter(pl.col("path") == str(mask))
    assert said["reason"].to_list() == [f"its mask, {DANGLING_LINK}: no mask"]
