"""TotalSegmentator masks: the missing-weights error names the folder, the masks a
segmenter writes become one union mask per subject on the volume's grid (a failing
subject gets the reason, the others their masks), the encoders read them for the ROI
crop, and the workflow runs the segment rule before the encoders of that modality."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import polars as pl
import pytest
import torch
import yaml

from mmpipe.errors import ConfigError
from mmpipe.preprocess.masks import MASKS_TABLE, MaskedVolume, read_masks
from mmpipe.preprocess.segment import (
    WEIGHT_FOLDERS,
    check_weights,
    segment_modality,
    totalsegmentator_segmenter,
)
from mmpipe.preprocess.volume import build_volume_transform
from tests.conftest import REPO, jobs_of, snakemake_in


def _nifti(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    return path


def test_missing_weights_name_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="preprocess.totalsegmentator.weights"):
        check_weights(None, fast=True)
    with pytest.raises(ConfigError, match=f"{tmp_path} has no Dataset297_\\*, Dataset298_"):
        totalsegmentator_segmenter({"weights": str(tmp_path), "fast": True}, ["kidney_left"])
    # TotalSegmentator crops to the organs with its 6 mm model (298) before either model,
    # and the full-resolution model fetches its five parts whatever the organs: a folder
    # without them passed the check, and TotalSegmentator downloaded them, or failed
    # offline for every subject
    (tmp_path / WEIGHT_FOLDERS[0]).mkdir()
    with pytest.raises(ConfigError, match="has no Dataset298_"):
        check_weights(tmp_path, fast=True)
    (tmp_path / WEIGHT_FOLDERS[2]).mkdir()
    assert check_weights(tmp_path, fast=True) == tmp_path
    (tmp_path / WEIGHT_FOLDERS[1]).mkdir()
    with pytest.raises(ConfigError, match="has no Dataset292_.*Dataset295_"):
        check_weights(tmp_path, fast=False)
    for part in ("part2_vertebrae_1532subj", "part3_cardiac_1559subj",
                 "part4_muscles_1559subj", "part5_ribs_1559subj"):
        (tmp_path / f"Dataset29{part[4]}_TotalSegmentator_{part}").mkdir()
    assert check_weights(tmp_path, fast=False) == tmp_path
    # the MR task reads its own models: the CT ones passed its check, and TotalSegmentator
    # then downloaded the MR models, or failed offline for every subject
    with pytest.raises(ConfigError, match=r"has no Dataset852_\*.*'total_mr' task.*"
                                          r"totalseg_download_weights -t total_fast_mr"):
        check_weights(tmp_path, fast=True, task="total_mr")
    (tmp_path / WEIGHT_FOLDERS[3]).mkdir()
    # versions up to 2.6 crop the MR volume with the 6 mm model, which the same download
    # fetches
    with pytest.raises(ConfigError, match=r"has no Dataset853_\*/"):
        check_weights(tmp_path, fast=True, task="total_mr")
    (tmp_path / WEIGHT_FOLDERS[4]).mkdir()
    assert check_weights(tmp_path, fast=True, task="total_mr") == tmp_path
    with pytest.raises(ConfigError, match=r"has no Dataset850_\*, Dataset851_\*/"):
        check_weights(tmp_path, fast=False, task="total_mr")


def _fake_totalsegmentator(monkeypatch, calls: list, classes=None):
    """TotalSegmentator's Python API and class map as ``sys.modules`` entries: each call
    is recorded in ``calls``."""
    api = types.ModuleType("totalsegmentator.python_api")
    api.totalsegmentator = lambda *args, **kwargs: calls.append((args, kwargs))
    maps = types.ModuleType("totalsegmentator.map_to_binary")
    maps.class_map = classes if classes is not None else {
        "total": {1: "spleen", 2: "kidney_right", 3: "kidney_left", 52: "aorta"},
        "total_mr": {1: "spleen", 2: "kidney_right", 3: "kidney_left"}}
    monkeypatch.setitem(sys.modules, "totalsegmentator", types.ModuleType("totalsegmentator"))
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", api)
    monkeypatch.setitem(sys.modules, "totalsegmentator.map_to_binary", maps)
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", "")  # restored after the test


def test_the_segmenter_calls_totalsegmentator_with_the_job_s_settings(tmp_path, monkeypatch):
    """The job's threads reach TotalSegmentator's resampling (it ran one whatever the job
    held); device, model and organs are those of the config."""
    calls = []
    _fake_totalsegmentator(monkeypatch, calls)
    for name in (WEIGHT_FOLDERS[0], WEIGHT_FOLDERS[2]):
        (tmp_path / name).mkdir()
    segment = totalsegmentator_segmenter({"weights": str(tmp_path), "fast": True,
                                          "device": "gpu"}, ["kidney_left"], threads=6)
    assert segment(tmp_path / "ct.nii.gz", tmp_path / "out") == [
        tmp_path / "out" / "kidney_left.nii.gz"]
    (args, kwargs), = calls
    assert args == (str(tmp_path / "ct.nii.gz"), str(tmp_path / "out"))
    assert kwargs == {"roi_subset": ["kidney_left"], "fast": True, "task": "total",
                      "device": "gpu", "quiet": True, "nr_thr_resamp": 6}
    assert os.environ["TOTALSEG_WEIGHTS_PATH"] == str(tmp_path)


def test_an_mr_modality_is_segmented_by_the_mr_model(tmp_path, monkeypatch):
    """TotalSegmentator ran its CT model ('total') on every modality: an MR modality's
    masks were the CT model's guesses on MR intensities, kept as its kidneys."""
    calls = []
    _fake_totalsegmentator(monkeypatch, calls)
    (tmp_path / WEIGHT_FOLDERS[3]).mkdir()
    (tmp_path / WEIGHT_FOLDERS[4]).mkdir()
    segment = totalsegmentator_segmenter({"weights": str(tmp_path)}, ["kidney_left"],
                                         task="total_mr")
    segment(tmp_path / "t2.nii.gz", tmp_path / "out")
    assert calls[0][1]["task"] == "total_mr"
    # an organ the task has no class for failed every subject on a KeyError deep in
    # TotalSegmentator's crop; the job now stops before the first, naming it
    with pytest.raises(ConfigError, match=r"'total_mr' task has no class \['aorta'\]"):
        totalsegmentator_segmenter({"weights": str(tmp_path)}, ["kidney_left", "aorta"],
                                   task="total_mr")
    _fake_totalsegmentator(monkeypatch, calls, classes={"total": {3: "kidney_left"}})
    with pytest.raises(ConfigError, match="installed TotalSegmentator has no task 'total_mr'"):
        totalsegmentator_segmenter({"weights": str(tmp_path)}, ["kidney_left"],
                                   task="total_mr")


def test_a_dicom_series_of_the_other_modality_is_that_subject_s(tmp_path, monkeypatch):
    """A dicom modality says what each series is (its DICOM Modality): an MR series under
    the CT task is that subject's rejection, naming the task to set; when every series
    is, the job fails with that reason instead of writing masks of guesses. A series that
    does not say (a secondary capture) is segmented as the config says; a PET series, which
    no model is for, was segmented too, by the CT model."""
    import pydicom

    from mmpipe.config import validate_config
    from mmpipe.preprocess.segment import segment_cohort
    from tests.reliability.conftest import (
        build,
        csv_cohort_config,
        preprocess,
        with_cohort,
        write_csv,
    )
    from tests.reliability.test_dicom_inputs import MODALITIES, PREPROCESS, write_series

    rows = []
    for k, sid in enumerate(("ct1", "mr1", "mr2", "sc1", "pt1")):
        _, files = write_series(tmp_path / "dicom" / sid, k)
        for f in files:  # the writer's slices are CT
            ds = pydicom.dcmread(f)
            # as exporters spell them: "mri" is no DICOM term, but it is written
            ds.Modality = {"ct1": "CT", "mr1": "MR", "mr2": " mri", "sc1": "SC", "pt1": "PT"}[sid]
            ds.save_as(f)
        rows.append({"id": sid, "y": k % 2, "ct": f"dicom/{sid}"})
    base_config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    cfg = with_cohort(base_config, csv_cohort_config(write_csv(tmp_path / "c.csv", rows),
                                                     MODALITIES),
                      preprocess=PREPROCESS, shards={"dicom": 1})
    layout = build(tmp_path, cfg)
    shards = preprocess(layout, cfg, "ct")
    _fake_totalsegmentator(monkeypatch, [])
    for name in WEIGHT_FOLDERS:
        (tmp_path / "w" / name).mkdir(parents=True)
    seen = []

    def segmenter(settings, roi_subset, threads, task):
        def segment(volume, out_dir):
            seen.append(volume)
            return _fake_segmenter(volume, out_dir)
        return segment

    monkeypatch.setattr("mmpipe.preprocess.segment.totalsegmentator_segmenter", segmenter)
    table = segment_cohort(layout.root, "ct", "dicom", {"weights": str(tmp_path / "w")},
                           ["kidney_left"], tmp_path / "masks", shard_dirs=shards)
    verdict = {r["subject_id"]: r for r in table.iter_rows(named=True)}
    assert [verdict[s]["status"] for s in ("ct1", "mr1", "mr2", "sc1", "pt1")] == [
        "ok", "rejected", "rejected", "ok", "rejected"] and len(seen) == 2
    assert ("its series is PT (DICOM Modality 'PT'), and TotalSegmentator's models are for "
            "CT and MR") in verdict["pt1"]["reason"]
    assert ("its series is MR (DICOM Modality 'MR'), and the mask's task 'total' is "
            "TotalSegmentator's CT model: set mask.task to 'total_mr'") in verdict["mr1"]["reason"]
    assert "its series is MR (DICOM Modality ' mri')" in verdict["mr2"]["reason"]
    table = segment_cohort(layout.root, "ct", "dicom", {"weights": str(tmp_path / "w")},
                           ["kidney_left"], tmp_path / "mr_masks", shard_dirs=shards,
                           task="total_mr")
    assert [r["status"] for r in table.iter_rows(named=True)] == [
        "rejected", "ok", "ok", "ok", "rejected"]
    from mmpipe.errors import InputError

    # every series MR under the CT task: the job fails, saying so, and writes no masks
    monkeypatch.setattr("mmpipe.preprocess.segment._series_modalities",
                        lambda dirs: dict.fromkeys(("ct1", "mr1", "mr2", "sc1", "pt1"), "MR"))
    with pytest.raises(InputError, match=r"no mask for any of the 5 subjects.*set mask.task "
                                         r"to 'total_mr'"):
        segment_cohort(layout.root, "ct", "dicom", {"weights": str(tmp_path / "w")},
                       ["kidney_left"], tmp_path / "none", shard_dirs=shards)
    assert not (tmp_path / "none").exists()


def _fake_segmenter(volume, out_dir):
    """Writes each organ TotalSegmentator would: two boxes on the volume's grid; a
    volume named 'broken' fails, one named 'empty' has no organ, one named 'one_kidney'
    no right kidney."""
    img = nib.load(str(volume))
    if "broken" in volume.name:
        raise RuntimeError("nnU-Net crashed")
    files = []
    for organ, (lo, hi) in {"kidney_left": (2, 5), "kidney_right": (9, 12)}.items():
        data = np.zeros(img.shape, np.uint8)
        if "empty" not in volume.name and not (
                "one_kidney" in volume.name and organ == "kidney_right"):
            data[lo:hi, 3:7, 1:4] = 1
        path = out_dir / f"{organ}.nii.gz"  # on the grid it read, as TotalSegmentator's
        nib.save(nib.Nifti1Image(data, img.affine), str(path))
        files.append(path)
    return files


def test_union_masks_per_subject_and_reasons(tmp_path):
    rng = np.random.default_rng(0)
    vols = {name: _nifti(tmp_path / f"{name}.nii.gz", rng.uniform(0, 100, (16, 10, 6)))
            for name in ("ok", "broken", "empty")}
    out = tmp_path / "masks"
    table = segment_modality({"s1": str(vols["ok"]), "s2": str(vols["broken"]),
                              "s3": str(vols["empty"]), "s4": None}, out, _fake_segmenter)
    assert table["status"].to_list() == ["ok", "rejected", "rejected", "absent"]
    masks = read_masks(out)
    assert "nnU-Net crashed" in masks["s2"][1] and "none of the organs" in masks["s3"][1]
    union = np.asanyarray(nib.load(masks["s1"][0]).dataobj)
    assert union.sum() == 2 * 3 * 4 * 3 and union[2:5].any() and union[9:12].any()
    assert sorted(p.name for p in out.iterdir()) == [MASKS_TABLE, "s1.nii.gz"]
    # the encoders crop to it: both kidneys' box plus the margin
    crop = build_volume_transform({"orientation": None, "roi_crop": {"margin": 1},
                                   "normalize": None})(MaskedVolume(str(vols["ok"]), masks["s1"][0]))
    assert tuple(crop.shape) == (1, 5, 6, 12)  # z 0..4, y 2..7, x 1..12


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_a_volume_stored_as_nrrd_or_mha_is_segmented_on_its_own_grid(tmp_path, suffix):
    """TotalSegmentator reads a file that is not .nii(.gz) as a DICOM folder, and the union
    read the volume with nibabel: every such subject was rejected ("Cannot work out file
    type"). Segmented as a NIfTI copy, the mask lies on the volume's grid, as the crop
    reads them."""
    import SimpleITK as sitk

    data = np.random.default_rng(0).uniform(0, 100, (6, 10, 16)).astype(np.float32)
    image = sitk.GetImageFromArray(data)  # (z, y, x) -> x 16, y 10, z 6
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-12.0, 30.0, 7.5))
    volume = tmp_path / f"ct{suffix}"
    sitk.WriteImage(image, str(volume))
    table = segment_modality({"s1": str(volume)}, tmp_path / "masks", _fake_segmenter)
    assert table["status"].to_list() == ["ok"]
    mask = read_masks(tmp_path / "masks")["s1"][0]
    crop = build_volume_transform({"orientation": None, "roi_crop": {"margin": 0},
                                   "normalize": None})(MaskedVolume(str(volume), mask))
    assert crop.shape[0] == 1 and 0 < crop.numel() < data.size


def test_a_nifti_named_in_capitals_is_segmented_on_the_grid_its_readers_see(tmp_path):
    """TotalSegmentator reads "CT.NII.GZ" as a DICOM folder; rewritten by SimpleITK, a
    NIfTI whose sform and qform differ kept the qform, where nibabel and the encoders
    read the sform: the mask lay on another grid. The same bytes under a lower-case name
    keep it."""
    data = np.random.default_rng(0).uniform(0, 100, (16, 10, 6)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0]))
    sform = np.diag([1.5, 1.5, 3.0, 1.0])
    sform[:3, 3] = (10.0, 20.0, 30.0)
    img.set_sform(sform, code=2)
    img.set_qform(np.diag([1.5, 1.5, 3.0, 1.0]), code=1)
    volume = tmp_path / "CT.NII.GZ"
    nib.save(img, str(volume))
    table = segment_modality({"s1": str(volume)}, tmp_path / "masks", _fake_segmenter)
    assert table["status"].to_list() == ["ok"]
    mask = read_masks(tmp_path / "masks")["s1"][0]
    np.testing.assert_allclose(nib.load(mask).affine, nib.load(str(volume)).affine)
    crop = build_volume_transform({"orientation": None, "roi_crop": {"margin": 0},
                                   "normalize": None})(MaskedVolume(str(volume), mask))
    assert 0 < crop.numel() < data.size


def test_a_subject_id_that_is_no_file_name_keeps_its_mask_inside_the_folder(tmp_path):
    vol = _nifti(tmp_path / "ok.nii.gz", np.random.default_rng(0).uniform(0, 100, (16, 10, 6)))
    out = tmp_path / "sub" / "masks"
    ids = ("site2/P7", "../x", "plain")
    table = segment_modality({sid: str(vol) for sid in ids}, out, _fake_segmenter)
    assert table["status"].to_list() == ["ok"] * 3
    masks = read_masks(out)
    for sid in ids:
        path = Path(masks[sid][0])
        assert path.parent == out and path.is_file()
    assert len({masks[sid][0] for sid in ids}) == 3
    assert not (tmp_path / "sub" / "x.nii.gz").exists()


def test_the_segment_rule_runs_before_that_modalitys_encoders(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["encoders"]["med3d_roi"] = {**cfg["encoders"]["med3d_demo"], "transform": {
        **cfg["encoders"]["med3d_demo"]["transform"], "roi_crop": {"margin": 2}}}
    for mod in ("mri_t1", "ct"):  # a volume and a dicom modality
        cfg["cohorts"]["demo"]["modalities"][mod]["mask"] = {
            "from": "totalsegmentator", "roi_subset": ["kidney_left", "kidney_right"]}
        cfg["cohorts"]["demo"]["modalities"][mod]["encoders"].append("med3d_roi")
    cfg["preprocess"]["totalsegmentator"] = {"weights": str(tmp_path / "weights")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = snakemake_in(tmp_path, "-n", "-p", "results/demo/features/mri_t1/med3d_roi.zarr",
                       "results/demo/features/mri_t2/med3d_demo.zarr",
                       "results/demo/features/ct/med3d_roi.zarr")
    assert run.returncode == 0, run.stderr[-3000:]
    assert jobs_of(run.stdout)["segment"] == 2
    assert "results/demo/preprocess/mri_t1/masks" in run.stdout
    assert "preprocess/mri_t2/masks" not in run.stdout
    # an encoder of a masked modality that reads no mask waits for no segmentation
    alone = snakemake_in(tmp_path, "-n", "results/demo/features/mri_t1/med3d_demo.zarr")
    assert alone.returncode == 0 and "segment" not in jobs_of(alone.stdout), alone.stdout
    # the CT's masks are made on its DICOM series' NIfTI conversions: after the shards
    ct_job = run.stdout.split("output: results/demo/preprocess/ct/masks")[0].rsplit("rule segment", 1)[1]
    assert "preprocess/ct/volumes/shard0" in ct_job
    bad = yaml.safe_load((tmp_path / "config.yaml").read_text())
    bad["cohorts"]["demo"]["modalities"]["wsi"]["mask"] = {"from": "totalsegmentator",
                                                          "roi_subset": ["kidney_left"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    run = snakemake_in(tmp_path, "-n")
    assert run.returncode != 0
    assert "masks are made for volume and dicom modalities" in run.stdout + run.stderr


def test_an_organ_found_nowhere_is_said_on_the_subject(tmp_path):
    """One kidney found nowhere (a nephrectomy, a failed segmentation) halved the crop's
    box, and masks.parquet said "ok" with no word of it; nor did the store."""
    from mmpipe.encode.inputs import gather_inputs

    rng = np.random.default_rng(1)
    cohort = tmp_path / "cohort"
    (cohort / "qc").mkdir(parents=True)
    vols = {s: _nifti(tmp_path / f"{s}.nii.gz", rng.uniform(0, 9, (16, 10, 6)))
            for s in ("a", "one_kidney")}
    pl.DataFrame({"subject_id": list(vols), "ct_path": [str(v) for v in vols.values()],
                  "label": ["x", "y"]}).write_parquet(cohort / "manifest.parquet")
    (cohort / "manifest.json").write_text(
        '{"cohort": "c", "labels": ["label"], "n_subjects": 2, "extra_columns": [], '
        '"modalities": {"ct": {"kind": "volume", "path_column": "ct_path"}}}')
    table = segment_modality(vols, tmp_path / "m", _fake_segmenter)
    rows = {r["subject_id"]: r for r in table.to_dicts()}
    assert rows["a"]["reason"] == "" and rows["one_kidney"]["status"] == "ok"
    assert rows["one_kidney"]["reason"] == ("segmentation found no kidney_right: the mask "
                                            "is the other organs'")
    assert json.loads(rows["one_kidney"]["organ_voxels"]) == {"kidney_left": 36,
                                                             "kidney_right": 0}
    items = {i.subject_id: i for i in gather_inputs(cohort, "ct", "volume", masks=tmp_path / "m")}
    assert items["one_kidney"].status == "ok"
    assert items["one_kidney"].reason == rows["one_kidney"]["reason"]
    assert items["a"].reason == ""


def test_a_failed_segmentation_rejects_the_subject_at_encoding(tmp_path):
    from mmpipe.encode.inputs import gather_inputs

    rng = np.random.default_rng(1)
    cohort = tmp_path / "cohort"
    (cohort / "qc").mkdir(parents=True)
    vols = {s: _nifti(tmp_path / f"{s}.nii.gz", rng.uniform(0, 9, (16, 10, 6)))
            for s in ("a", "broken")}
    pl.DataFrame({"subject_id": ["a", "broken"], "ct_path": [str(v) for v in vols.values()],
                  "label": ["x", "y"]}).write_parquet(cohort / "manifest.parquet")
    (cohort / "manifest.json").write_text(
        '{"cohort": "c", "labels": ["label"], "n_subjects": 2, "extra_columns": [], '
        '"modalities": {"ct": {"kind": "volume", "path_column": "ct_path"}}}')
    segment_modality({"a": str(vols["a"]), "broken": str(vols["broken"])}, tmp_path / "m",
                     _fake_segmenter)
    items = {i.subject_id: i for i in gather_inputs(cohort, "ct", "volume", masks=tmp_path / "m")}
    assert isinstance(items["a"].source, MaskedVolume) and items["a"].source.mask.endswith("a.nii.gz")
    assert items["broken"].status == "rejected" and "nnU-Net crashed" in items["broken"].reason


def test_a_segmenter_that_fails_every_subject_fails_the_job(tmp_path):
    """No CUDA device, a missing model: every subject raised, masks.parquet said each was
    rejected, and every masked store downstream was rejections that looked up to date."""
    from mmpipe.errors import InputError

    vol = _nifti(tmp_path / "broken.nii.gz", np.zeros((16, 10, 6)))
    out = tmp_path / "masks"
    with pytest.raises(InputError, match=r"segmentation gave no mask for any of the 2 "
                                         r"subjects with a volume \(2 failed\)"):
        segment_modality({"s1": str(vol), "s2": str(vol), "s3": None}, out, _fake_segmenter)
    assert not out.exists()
    # none of the organs in any subject (the organs of another body part, MR through the
    # CT model): a table of rejections only had been written, looking finished
    empty = _nifti(tmp_path / "empty.nii.gz", np.zeros((16, 10, 6)))
    with pytest.raises(InputError, match=r"no mask for any of the 2 subjects with a volume "
                                         r"\(1 failed\).*found none of the organs"):
        segment_modality({"s1": str(empty), "s2": str(vol)}, out, _fake_segmenter)
    assert not out.exists()

    def disk_full(volume, out_dir):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):  # the disk's: not each subject's rejection
        segment_modality({"s1": str(empty)}, tmp_path / "m1", disk_full)

    def out_of_memory(volume, out_dir):
        raise MemoryError

    with pytest.raises(MemoryError) as raised:
        segment_modality({"s1": str(vol)}, tmp_path / "m2", out_of_memory)
    # the input the larger node is asked for is named
    assert raised.value.__notes__ == [f"raised on subject 's1' ({vol})"]

    # TotalSegmentator short of GPU memory: torch raises a RuntimeError, which rejected
    # the subject's mask (and then the subject) on a small GPU
    def cuda_out_of_memory(volume, out_dir):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")

    with pytest.raises(torch.OutOfMemoryError):
        segment_modality({"s1": str(vol), "s2": str(vol)}, tmp_path / "m3", cuda_out_of_memory)
    assert not (tmp_path / "m3").exists()

    # nnU-Net's worker killed by the OS for memory under the second subject: it and every
    # subject after it were rejected, and the table of the first one's mask looked finished
    ok = _nifti(tmp_path / "ok.nii.gz", np.zeros((16, 10, 6)))
    calls = []

    def workers_killed(volume, out_dir):
        calls.append(volume)
        if len(calls) > 1:
            raise RuntimeError("Background workers died. Look for the error message further "
                               "up! If there is none then your RAM was full and the worker "
                               "was killed by the OS. Use fewer workers or get more RAM in "
                               "that case!")
        return _fake_segmenter(volume, out_dir)

    with pytest.raises(RuntimeError, match="Background workers died"):
        segment_modality({"s1": str(ok), "s2": str(ok), "s3": str(ok)}, tmp_path / "m4",
                         workers_killed)
    assert not (tmp_path / "m4").exists()
    # a subject's own error whose text only names such a path stays the subject's
    odd = tmp_path / "cuda error runs"
    odd.mkdir()
    (odd / "s2.nii.gz").write_bytes(b"not a volume")
    table = segment_modality({"s1": str(ok), "s2": str(odd / "s2.nii.gz")}, tmp_path / "m5",
                             _fake_segmenter)
    assert table["status"].to_list() == ["ok", "rejected"]


def test_a_volume_named_with_extra_dots_reaches_the_segmenter_as_nifti(tmp_path):
    """TotalSegmentator reads a file as NIfTI when ``suffix == ".nii" or suffixes ==
    [".nii", ".gz"]``, and anything else as a DICOM folder: a subject ID with a dot
    (``sub.01.nii.gz``, a UID) lost its mask with a DICOM error."""
    seen = []

    def segmenter(volume, out_dir):
        seen.append(volume)
        assert volume.suffix == ".nii" or volume.suffixes == [".nii", ".gz"], volume.name
        return _fake_segmenter(volume, out_dir)

    vols = {sid: str(_nifti(tmp_path / f"{sid}.nii.gz", np.zeros((16, 10, 6))))
            for sid in ("P7", "sub.01", "1.3.6.1.4")}
    table = segment_modality(vols, tmp_path / "masks", segmenter)
    assert table["status"].to_list() == ["ok"] * 3
    assert seen[0] == Path(vols["P7"])  # passed as it is where its name reads as NIfTI


def test_a_volume_whose_header_declares_more_than_its_file_is_that_subjects(tmp_path):
    """A damaged header asked the reader for gigabytes: the MemoryError read as the
    machine's and failed every subject's job, on every rerun."""
    good = _nifti(tmp_path / "good.nii.gz", np.zeros((16, 10, 6)))
    bad = tmp_path / "bad.nii"
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header.set_data_shape((4000, 4000, 4000))
    bad.write_bytes(img.header.binaryblock + b"\0" * 4 + np.zeros(64, np.float32).tobytes())
    import SimpleITK as sitk

    mha = tmp_path / "bad.mha"  # raw data in its own file: its size says what it holds
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 10, 16), np.float32)), str(mha))
    mha.write_bytes(mha.read_bytes().replace(b"DimSize = 16 10 6", b"DimSize = 4000 4000 4000"))
    table = segment_modality({"a": str(good), "b": str(bad), "c": str(mha)},
                             tmp_path / "masks", _fake_segmenter)
    rows = {r["subject_id"]: r for r in table.to_dicts()}
    assert rows["a"]["status"] == "ok" and rows["b"]["status"] == "rejected"
    assert "its header declares" in rows["b"]["reason"]
    assert rows["c"]["status"] == "rejected" and "its header declares" in rows["c"]["reason"]


def test_the_mask_keeps_the_volume_s_header_so_it_reads_on_its_grid(tmp_path):
    """A volume whose sform's scale disagrees with its pixdim and qform: MONAI's reader
    reconciles them, and the mask, written with one affine as both forms, came out on
    another grid ("mask affine differs"), after a costly segmentation."""
    vol = tmp_path / "v.nii.gz"
    img = nib.Nifti1Image(np.random.default_rng(0).random((16, 10, 6)).astype(np.float32),
                          np.diag([2.0, 2.0, 2.0, 1.0]))
    img.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    img.header.set_zooms((1.0, 1.0, 1.0))
    img.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), code=2)
    nib.save(img, str(vol))
    table = segment_modality({"s1": str(vol)}, tmp_path / "masks", _fake_segmenter)
    assert table["status"].to_list() == ["ok"]
    mask = nib.load(str(tmp_path / "masks" / "s1.nii.gz"))
    ref = nib.load(str(vol))
    np.testing.assert_array_equal(mask.get_qform(), ref.get_qform())
    np.testing.assert_array_equal(mask.get_sform(), ref.get_sform())
    assert mask.header["qform_code"] == ref.header["qform_code"]
    assert mask.header["sform_code"] == ref.header["sform_code"]
    recipe = {"orientation": None, "spacing": None, "crop_foreground": False,
              "hu_window": None, "normalize": None, "resize": None, "roi_crop": {"margin": 0}}
    out = build_volume_transform(recipe)(MaskedVolume(str(vol), str(tmp_path / "masks"
                                                                    / "s1.nii.gz")))
    assert out.ndim == 4


def test_a_short_write_of_the_nifti_copy_fails_the_job(tmp_path, monkeypatch):
    """An .nrrd volume is copied to NIfTI for TotalSegmentator: SimpleITK's writer reports
    a full disk on stderr and returns, and the truncated copy was segmented."""
    import SimpleITK as sitk

    vol = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 10, 16), np.float32)), str(vol))
    real = sitk.WriteImage

    def short(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])

    monkeypatch.setattr(sitk, "WriteImage", short)
    with pytest.raises(OSError, match="was not written whole"):
        segment_modality({"s1": str(vol)}, tmp_path / "masks", _fake_segmenter)
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize("name", ["v.nrrd", "v.mha", "v.mhd"])
def test_a_compressed_or_two_file_volume_is_segmented(tmp_path, name):
    """Their data lie compressed in the file (a gzip .nrrd, Slicer's default) or in
    another one (.mhd and its .raw): the header file's size says nothing of it, and a
    check of it against the declared data had refused them."""
    import SimpleITK as sitk

    vol = tmp_path / name
    image = sitk.GetImageFromArray(np.zeros((6, 10, 16), np.float32))
    sitk.WriteImage(image, str(vol), useCompression=name != "v.mhd")
    table = segment_modality({"s1": str(vol)}, tmp_path / "masks", _fake_segmenter)
    assert table["status"].to_list() == ["ok"]


def test_the_mask_leaves_the_volume_s_header_extensions_out(tmp_path):
    """A volume's header extensions (a converter's sidecar metadata, patient fields
    included) were copied into every mask."""
    vol = tmp_path / "v.nii.gz"
    img = nib.Nifti1Image(np.zeros((16, 10, 6), np.float32), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b'{"PatientName": "DOE"}'))
    nib.save(img, str(vol))
    segment_modality({"s1": str(vol)}, tmp_path / "masks", _fake_segmenter)
    assert len(nib.load(str(tmp_path / "masks" / "s1.nii.gz")).header.extensions) == 0
