"""DICOM folders that hold wrong data, in a small ``csv`` cohort.

Each cohort has three good subjects (a clean 6-slice CT series each) and one bad
folder. The bad subject must end rejected with a named reason, or ``ok`` with a QC
record that says what was left out; the good subjects' QC rows and volumes must be
exactly those of the same cohort without the bad subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import polars as pl
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from mmpipe.layout import SHARD_QC
from tests.dicom_files import write_ct_slice
from tests.reliability.conftest import (
    build,
    by_subject,
    csv_cohort_config,
    encode,
    preprocess,
    with_cohort,
    write_csv,
)

UID_ROOT = "1.2.826.0.1.3680043.8.498.77"
N = 8  # pixels per side
N_SLICES = 6
SPACING = 2.0
GOOD = ("g1", "g2", "g3")
BAD = "bad"
MODALITIES = {"ct": {"kind": "dicom", "column": "ct", "encoders": ["med3d_demo"]}}
PREPROCESS = {"dicom": {"series_select": "most_slices", "min_slices": 3, "max_gap_factor": 1.5}}


# --------------------------------------------------------------------------- DICOM writers


def hu(subject: int, k: int) -> np.ndarray:
    """HU of slice ``k`` of a subject: distinct per subject and slice, with a ramp."""
    rows, cols = np.mgrid[0:N, 0:N]
    return (100 * k + 1000 * subject + rows * 3 + cols).astype(np.int16)


def write_slice(path: Path, *, series_uid: str, k: int, pixels: np.ndarray, patient: str,
                study_uid: str, series_number: int = 3, z0: float = 0.0,
                frames: int = 1) -> Path:
    """Slice ``k`` of an axial series (or ``frames`` frames at its position)."""
    pixels = pixels.reshape(frames, -1, pixels.shape[-1]) if frames > 1 else pixels
    return write_ct_slice(path, series_uid=series_uid, sop_uid=f"{series_uid}.{k + 1}",
                          position=(0.0, 0.0, z0 + SPACING * k), hu=pixels, instance=k + 1,
                          series_number=series_number, description=f"AX {series_number}",
                          spacing=(0.5, 0.5), thickness=SPACING, patient_id=patient,
                          study_uid=study_uid, frames=frames)


def write_series(folder: Path, subject: int, *, series_number: int = 3, n: int = N_SLICES,
                 skip=(), patient: str | None = None, study: int = 1,
                 z0: float = 0.0) -> tuple[str, list[Path]]:
    """A series of ``n`` slices named IM0.dcm... (prefixed by the series number when not 3)."""
    uid = f"{UID_ROOT}.{subject}.{study}.{series_number}"
    prefix = "" if series_number == 3 else f"S{series_number}_"
    paths = [write_slice(folder / f"{prefix}IM{k}.dcm", series_uid=uid, k=k,
                         pixels=hu(subject, k), patient=patient or f"P{subject}",
                         study_uid=f"{UID_ROOT}.{subject}.{study}",
                         series_number=series_number, z0=z0)
             for k in range(n) if k not in skip]
    return uid, paths


# --------------------------------------------------------------------------- cohorts


@dataclass
class Converted:
    qc: dict[str, dict[str, Any]]  # subject -> QC row
    volumes: dict[str, tuple[np.ndarray, np.ndarray]]  # subject -> (array x,y,z, affine)
    layout: Any
    cfg: dict


def run_cohort(root: Path, base_config: dict, bad=None) -> Converted:
    """Write the good subjects (and ``bad(folder)`` as subject ``bad``), preprocess them."""
    rows = []
    for k, sid in enumerate(GOOD):
        write_series(root / "dicom" / sid, k)
        rows.append({"id": sid, "y": k % 2, "ct": f"dicom/{sid}"})
    if bad is not None:
        bad(root / "dicom" / BAD)
        rows.append({"id": BAD, "y": 1, "ct": f"dicom/{BAD}"})
    csv_path = write_csv(root / "cohort.csv", rows)
    cfg = with_cohort(base_config, csv_cohort_config(csv_path, MODALITIES),
                      preprocess=PREPROCESS, shards={"dicom": 1})
    layout = build(root, cfg)
    (shard,) = preprocess(layout, cfg, "ct")
    qc = {r["subject_id"]: r for r in pl.read_parquet(shard / SHARD_QC).iter_rows(named=True)}
    volumes = {}
    for sid, row in qc.items():
        if row["status"] == "ok":
            nii = nib.load(shard / row["volume"])
            volumes[sid] = (np.asarray(nii.dataobj), nii.affine)
    return Converted(qc, volumes, layout, cfg)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, base_config) -> Converted:
    """The cohort without the bad subject."""
    return run_cohort(tmp_path_factory.mktemp("baseline"), base_config)


def assert_good_unchanged(result: Converted, baseline: Converted) -> None:
    assert set(result.qc) == {*GOOD, BAD}
    for sid in GOOD:
        got, want = dict(result.qc[sid]), dict(baseline.qc[sid])
        assert got.pop("path").endswith(f"dicom/{sid}") and want.pop("path").endswith(f"dicom/{sid}")
        assert got == want and got["status"] == "ok" and got["reason"] == ""
        np.testing.assert_array_equal(result.volumes[sid][0], baseline.volumes[sid][0])
        np.testing.assert_array_equal(result.volumes[sid][1], baseline.volumes[sid][1])


def expected_volume(subject: int, slices) -> np.ndarray:
    """The HU stack as the NIfTI holds it (x, y, z)."""
    return np.stack([hu(subject, k) for k in slices]).transpose(2, 1, 0)


def detail(row: dict) -> dict:
    return json.loads(row["detail"])


def test_baseline_converts_every_subject(baseline):
    assert {s: r["status"] for s, r in baseline.qc.items()} == dict.fromkeys(GOOD, "ok")
    for k, sid in enumerate(GOOD):
        np.testing.assert_array_equal(baseline.volumes[sid][0],
                                      expected_volume(k, range(N_SLICES)))


# --------------------------------------------------------------------------- bad folders


def test_a_foreign_file_is_skipped_and_noted_down_to_the_store(tmp_path, base_config, baseline):
    def bad(folder):
        write_series(folder, 9)
        (folder / "notes.txt").write_text("scanned on the old console\n")

    result = run_cohort(tmp_path, base_config, bad)
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    note = f"converted; skipped 1 of {N_SLICES + 1} files: notes.txt (not a DICOM file)"
    assert row["status"] == "ok" and row["reason"] == note
    assert [(f["file"], f["reason"]) for f in detail(row)["skipped"]] == [
        ("notes.txt", "not a DICOM file")]
    np.testing.assert_array_equal(result.volumes[BAD][0], expected_volume(9, range(6)))

    # the note reaches the feature store as the subject's reason
    rows = by_subject(encode(result.layout, result.cfg, "ct", "med3d_demo").path)
    assert rows[BAD]["status"] == "ok" and rows[BAD]["reason"] == note
    assert np.isfinite(rows[BAD]["emb"]).all()
    for sid in GOOD:
        assert rows[sid]["status"] == "ok" and rows[sid]["reason"] == ""


def test_a_corrupt_slice_file_rejects_its_subject_alone(tmp_path, base_config, baseline):
    """Its last slice of random bytes was skipped as "not a DICOM file", and the subject
    stored "ok", one slice short."""
    def bad(folder):
        _, paths = write_series(folder, 9)
        paths[-1].write_bytes(np.random.default_rng(0).bytes(paths[-1].stat().st_size))

    result = run_cohort(tmp_path, base_config, bad)
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    assert row["status"] == "rejected" and row["volume"] is None
    assert "damaged DICOM files whose series cannot be read" in row["reason"]
    assert "IM5.dcm (a damaged DICOM file" in row["reason"]


def test_truncated_file_of_the_chosen_series_rejects(tmp_path, base_config, baseline):
    def bad(folder):
        _, paths = write_series(folder, 9)
        paths[-1].write_bytes(paths[-1].read_bytes()[:-40])  # the last slice, cut short

    result = run_cohort(tmp_path, base_config, bad)
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    assert row["status"] == "rejected" and row["volume"] is None
    assert "is incomplete: 1 of its slices cannot be read (IM5.dcm: truncated pixel data" in row["reason"]
    assert [(f["file"], f["reason"]) for f in detail(row)["skipped"]] == [
        ("IM5.dcm", "truncated pixel data")]


def test_gap_in_the_series_rejects(tmp_path, base_config, baseline):
    result = run_cohort(tmp_path, base_config, lambda folder: write_series(folder, 9, skip=(2,)))
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    assert row["status"] == "rejected"
    assert "gap of 4 mm" in row["reason"] and "median spacing 2 mm" in row["reason"]


def test_two_series_the_rule_picks_one_and_says_which(tmp_path, base_config, baseline):
    uids = {}

    def bad(folder):
        uids["big"], _ = write_series(folder, 9, series_number=7)
        uids["small"], _ = write_series(folder, 9, series_number=2, n=4, z0=100.0)

    result = run_cohort(tmp_path, base_config, bad)
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    assert row["status"] == "ok" and row["reason"] == ""  # two series is ordinary
    d = detail(row)
    assert d["rule"] == "most_slices" and d["series_uid"] == uids["big"]
    assert d["series_number"] == 7 and d["n_slices"] == N_SLICES
    assert [(s["series_uid"], s["n_slices"], s["problem"]) for s in d["other_series"]] == [
        (uids["small"], 4, None)]
    np.testing.assert_array_equal(result.volumes[BAD][0], expected_volume(9, range(N_SLICES)))


def test_two_patients_in_one_folder_reject(tmp_path, base_config, baseline):
    def bad(folder):
        write_series(folder, 9, patient="P9")
        write_series(folder, 8, series_number=4, patient="P8", z0=100.0)

    result = run_cohort(tmp_path, base_config, bad)
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    assert row["status"] == "rejected" and row["volume"] is None
    assert row["reason"].startswith(
        "the folder mixes 2 patients (PatientID 'P8' (series 4), 'P9' (series 3)) and 2 studies")


def test_two_studies_in_one_folder_reject(tmp_path, base_config, baseline):
    def bad(folder):
        write_series(folder, 9, study=1)
        write_series(folder, 9, series_number=4, study=2, z0=100.0)

    result = run_cohort(tmp_path, base_config, bad)
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    assert row["status"] == "rejected"
    assert row["reason"].startswith(
        f"the folder mixes 2 studies (StudyInstanceUID '{UID_ROOT}.9.1' (series 3), "
        f"'{UID_ROOT}.9.2' (series 4))")
    assert "patients" not in row["reason"]


def test_multi_frame_file_rejects(tmp_path, base_config, baseline):
    def bad(folder):
        frames = np.concatenate([hu(9, k) for k in range(4)])
        write_slice(folder / "enhanced.dcm", series_uid=f"{UID_ROOT}.9.1.3", k=0,
                    pixels=frames, patient="P9", study_uid=f"{UID_ROOT}.9.1", frames=4)

    result = run_cohort(tmp_path, base_config, bad)
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    assert row["status"] == "rejected"
    assert "multi-frame (enhanced) DICOM files are not supported" in row["reason"]
    assert "dcm2niix" in row["reason"]


def test_junk_files_beside_a_good_series_are_noted(tmp_path, base_config, baseline):
    def bad(folder):
        write_series(folder, 9)
        (folder / "notes.txt").write_text("scanned on the old CT, see the paper file\n")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory
        meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}.9.99"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.FileSetID = "TOY"
        ds.DirectoryRecordSequence = []
        ds.save_as(folder / "DICOMDIR", enforce_file_format=True)
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: not even noted

    result = run_cohort(tmp_path, base_config, bad)
    assert_good_unchanged(result, baseline)
    row = result.qc[BAD]
    assert row["status"] == "ok"
    assert row["reason"] == (f"converted; skipped 2 of {N_SLICES + 2} files: DICOMDIR "
                             "(not a DICOM image), notes.txt (not a DICOM file)")
    assert [(f["file"], f["reason"]) for f in detail(row)["skipped"]] == [
        ("DICOMDIR", "not a DICOM image"), ("notes.txt", "not a DICOM file")]
    np.testing.assert_array_equal(result.volumes[BAD][0], expected_volume(9, range(N_SLICES)))


def test_every_series_rejected_for_its_own_defect_still_makes_a_store(tmp_path, base_config):
    """Each subject's series too short: rejected in the shard, each with its reason. The
    encoding job writes the store of those rejections; only paths the adapter rejects
    all (a wrong folder) stop it."""
    rows = []
    for k, sid in enumerate(("s1", "s2")):
        write_series(tmp_path / "dicom" / sid, k, n=2)  # min_slices is 3
        rows.append({"id": sid, "y": k, "ct": f"dicom/{sid}"})
    cfg = with_cohort(base_config, csv_cohort_config(write_csv(tmp_path / "cohort.csv", rows),
                                                     MODALITIES),
                      preprocess=PREPROCESS, shards={"dicom": 1})
    store = encode(build(tmp_path, cfg), cfg, "ct", "med3d_demo")
    f = store.to_numpy()
    assert f.status.tolist() == ["rejected", "rejected"]
    assert all("2 slices" in r or "too few" in r for r in f.reason), f.reason


def test_a_dataset_moved_after_conversion_keeps_its_shard(tmp_path, base_config):
    """A move reruns no conversion shard; the encoder checks that each shard is of the
    file the manifest names, as it lies under the dataset's root."""
    from mmpipe.encode.inputs import gather_inputs
    from tests.reliability.conftest import COHORT

    rows = []
    for k, sid in enumerate(GOOD):
        write_series(tmp_path / "download" / "dicom" / sid, k)
        rows.append({"id": sid, "y": k % 2, "ct": f"dicom/{sid}"})
    cfg = with_cohort(base_config, csv_cohort_config(
        write_csv(tmp_path / "download" / "cohort.csv", rows), MODALITIES),
        preprocess=PREPROCESS, shards={"dicom": 1})
    layout = build(tmp_path, cfg)
    (shard,) = preprocess(layout, cfg, "ct")
    (tmp_path / "download").rename(tmp_path / "moved")
    cfg["cohorts"][COHORT]["csv"] = str(tmp_path / "moved" / "cohort.csv")
    build(tmp_path, cfg)
    items = gather_inputs(layout.root, "ct", "dicom", shard_dirs=[shard])
    assert [(i.subject_id, i.status) for i in items] == [(sid, "ok") for sid in GOOD]
    assert all(str(i.source).startswith(str(shard)) for i in items)


def _say_modality(folder: Path, modality: str, pixel_spacing=None, intercept=-2048) -> None:
    """Rewrite a series' DICOM Modality (and its in-plane spacing), as a scanner of
    another kind would have written it, and its rescale ``intercept`` (the fixture's is
    -1024): the windowed series lower, so that each holds air as a CT in HU does (the
    window refuses a volume with no voxel below 0)."""
    import pydicom

    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.Modality = modality
        ds.RescaleIntercept = intercept
        if pixel_spacing is not None:
            ds.PixelSpacing = list(pixel_spacing)
        ds.save_as(path, enforce_file_format=True)


def _windowed_cohort(root: Path, base_config: dict, said: dict[str, str], encoder: str,
                     window=(-1000, 7000)) -> tuple[dict, Any]:
    """One series per subject of ``said`` (subject -> its DICOM Modality; the MR and PET
    ones at 1.5 mm in plane against the others' 0.5), encoded by ``encoder`` with the HU ``window``
    and the cohort's median spacing."""
    rows = []
    for k, (sid, modality) in enumerate(said.items()):
        write_series(root / "dicom" / sid, k)
        _say_modality(root / "dicom" / sid, modality,
                      pixel_spacing=(1.5, 1.5) if modality in ("MR", "PT") else None,
                      # under the window, hu(k, .) from -1024 up
                      intercept=-2048 - 1000 * k if window else -1024)
        rows.append({"id": sid, "y": k % 2, "ct": f"dicom/{sid}"})
    cfg = with_cohort(base_config, csv_cohort_config(
        write_csv(root / "cohort.csv", rows), {"ct": {**MODALITIES["ct"], "encoders": [encoder]}}),
        preprocess=PREPROCESS, shards={"dicom": 1})
    cfg["encoders"][encoder]["transform"].update(
        hu_window=list(window) if window else None, spacing="median")
    return cfg, build(root, cfg)


@pytest.mark.parametrize("encoder", ["med3d_demo", "vgg11_slices"])
def test_an_mr_or_pet_series_under_an_hu_window_is_rejected(tmp_path, base_config, encoder):
    """An HU window clips a series to Hounsfield units; an MR series' values are the
    scanner's arbitrary units, a PET's counts or SUV, so the window made a store row of
    nonsense that looked like any other. Such a series is its subject's rejection, named,
    and the cohort's median spacing is of the series that are read; a series that does
    not say what it is (a secondary capture) is read."""
    said = {"c1": "CT", "m1": "MR", "m2": "MR", "p1": "PT", "s1": "SC", "o1": "OT"}
    cfg, layout = _windowed_cohort(tmp_path, base_config, said, encoder)
    store = encode(layout, cfg, "ct", encoder)
    rows = by_subject(store.path)
    assert {s: r["status"] for s, r in rows.items()} == {
        "c1": "ok", "m1": "rejected", "m2": "rejected", "p1": "rejected", "s1": "ok",
        "o1": "ok"}
    # the series' folder named (the store's row named no file)
    assert rows["m1"]["reason"] == (
        f"the series of {tmp_path / 'dicom' / 'm1'}: its DICOM Modality is 'MR', not CT: its "
        "values are not Hounsfield units, and the encoder's transform sets hu_window "
        "[-1000, 7000]: set hu_window: null for a modality that is not CT")
    assert "its DICOM Modality is 'PT', not CT" in rows["p1"]["reason"]
    # over c1, s1 and o1 (0.5 mm in plane), not the three 1.5 mm series the window refused
    assert store.attrs["preprocessing"]["median_spacing"][:2] == [0.5, 0.5]


def test_without_an_hu_window_an_mr_series_is_read(tmp_path, base_config):
    cfg, layout = _windowed_cohort(tmp_path, base_config, {"c1": "CT", "m1": "MR"},
                                   "med3d_demo", window=None)
    rows = by_subject(encode(layout, cfg, "ct", "med3d_demo").path)
    assert {s: r["status"] for s, r in rows.items()} == {"c1": "ok", "m1": "ok"}


def test_a_modality_of_mr_series_only_under_an_hu_window_writes_no_store(tmp_path,
                                                                          base_config):
    """Every series refused is the config's mistake, not each subject's: the job fails
    and says what to set."""
    from mmpipe.errors import InputError

    cfg, layout = _windowed_cohort(tmp_path, base_config, {"m1": "MR", "m2": "MR"},
                                   "med3d_demo")
    with pytest.raises(InputError, match="all 2 subjects with an input were rejected.*"
                                         "set hu_window: null"):
        encode(layout, cfg, "ct", "med3d_demo")
    assert not layout.store("ct", "med3d_demo").exists()
