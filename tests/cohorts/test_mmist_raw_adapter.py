"""The mmist_ccrcc_raw adapter on a miniature of MMIST-ccRCC's raw images (NBIA's DICOM
folders, GDC- and TCIA-named slides) beside the release's tables."""

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.demo.mmist_raw import write_mmist_raw
from mmpipe.errors import ConfigError


def _cfg(root, **over):
    cfg = {"adapter": "mmist_ccrcc_raw", "root": str(root), "labels": ["vital_status_12"],
           "modalities": {"ct": {"kind": "dicom", "encoders": ["med3d_demo"]},
                          "mri": {"kind": "dicom", "encoders": ["med3d_demo"]},
                          "wsi": {"kind": "slide", "encoders": ["clam_resnet50"]},
                          "clinical": {"kind": "table", "encoders": ["tabular"],
                                       "fields": ["gender", "age_diag", "grade"]}}}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmist_raw")
    plan = write_mmist_raw(root, n_cases=8, seed=1)
    manifest = build_manifest("m", _cfg(root), root / "out", base_dir=root)
    return root, plan, manifest, read_qc(root / "out")


def _row(manifest, case):
    return manifest.filter(pl.col("subject_id") == case).row(0, named=True)


def test_the_chosen_series_and_slides_are_found(raw):
    root, plan, manifest, _ = raw
    assert set(manifest["subject_id"]) == set(plan.cases)
    for case, exam in plan.ct.items():
        if case != plan.missing_ct_series:
            assert _row(manifest, case)["ct_path"] == str(root / exam.lstrip("/"))
    for case in plan.mri:
        assert _row(manifest, case)["mri_path"] is not None
    tcga = next(c for c in plan.cases if c.startswith("TCGA") and c != plan.slide_twice)
    assert "-01Z-00-DX1." in _row(manifest, tcga)["wsi_path"]  # GDC's name with its UUID
    assert _row(manifest, plan.cases[0])["authors_split"] in ("train", "test")


def test_a_missing_series_and_a_slide_twice_are_rejected_with_the_reason(raw):
    _, plan, manifest, qc = raw
    def why(case, mod):
        return qc.filter((pl.col("subject_id") == case) & (pl.col("modality") == mod)
                         )["reason"].item()
    assert _row(manifest, plan.missing_ct_series)["ct_path"] is None
    assert "not in the download" in why(plan.missing_ct_series, "ct")
    assert _row(manifest, plan.slide_twice)["wsi_path"] is None
    assert "two files of the slide" in why(plan.slide_twice, "wsi")


def test_kinds_are_the_layouts(raw):
    root, _, _, _ = raw
    cfg = _cfg(root)
    cfg["modalities"]["ct"]["kind"] = "volume"
    with pytest.raises(ConfigError, match="as kind 'dicom'"):
        build_manifest("m", cfg, root / "o2", base_dir=root)


def test_a_series_outside_the_download_or_empty_is_rejected(tmp_path):
    """A chosen series led outside the root ('/../../etc' only lost its first slash), and an
    empty series folder counted as present; the QC path is the folder under the root."""
    root = tmp_path / "raw"
    plan = write_mmist_raw(root, n_cases=8, seed=1)
    cases = [c for c in plan.ct if c != plan.missing_ct_series]
    outside, empty = cases[:2]
    table = root / "CT_patientfiles.csv"
    text = table.read_text()
    text = text.replace(plan.ct[outside], "/../../etc")
    empty_exam = f"/Radiology-TCGA/{empty}/empty_series"
    (root / empty_exam.lstrip("/")).mkdir(parents=True)
    table.write_text(text.replace(plan.ct[empty], empty_exam))
    manifest = build_manifest("m", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out").filter(pl.col("modality") == "ct")
    def row(case):
        return qc.filter(pl.col("subject_id") == case).row(0, named=True)
    assert _row(manifest, outside)["ct_path"] is None
    assert row(outside)["reason"] == "the chosen series '/../../etc' leads outside the download"
    assert _row(manifest, empty)["ct_path"] is None
    assert row(empty)["reason"] == ("the chosen series folder: no file in the folder or its "
                                    "subfolders")
    assert row(empty)["path"] == str(root / "Radiology-TCGA" / empty / "empty_series")


def test_a_series_folder_linked_in_from_another_disk_is_the_downloads(tmp_path):
    """'Outside the download' is by the path as written: resolving links refused every
    series of a download whose Radiology-* folders link to another disk."""
    root = tmp_path / "raw"
    plan = write_mmist_raw(root, n_cases=8, seed=1)
    for folder in root.glob("Radiology-*"):
        moved = tmp_path / "other_disk" / folder.name
        moved.parent.mkdir(exist_ok=True)
        folder.rename(moved)
        folder.symlink_to(moved, target_is_directory=True)
    manifest = build_manifest("m", _cfg(root), root / "out", base_dir=root)
    for case, exam in plan.ct.items():
        if case != plan.missing_ct_series:
            assert _row(manifest, case)["ct_path"] == str(root / exam.lstrip("/"))


def test_one_series_under_two_cases_or_a_name_too_long_is_that_cases(tmp_path):
    """CT_patientfiles.csv naming one case's series for another gave both the one series
    (then each was rejected as sharing it; now the one it is not of is, naming its own
    folder); a series name too long for the filesystem stopped the whole cohort."""
    root = tmp_path / "raw"
    plan = write_mmist_raw(root, n_cases=8, seed=1)
    first, second, long = [c for c in plan.ct if c != plan.missing_ct_series][:3]
    table = root / "CT_patientfiles.csv"
    too_long = plan.ct[long].rsplit("/", 1)[0] + "/" + "s" * 300
    table.write_text(table.read_text().replace(plan.ct[second], plan.ct[first])
                     .replace(plan.ct[long], too_long))
    manifest = build_manifest("m", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out").filter(pl.col("modality") == "ct")
    def reason(case):
        return qc.filter(pl.col("subject_id") == case)["reason"].item()
    assert _row(manifest, first)["ct_path"].endswith(plan.ct[first].lstrip("/"))
    assert _row(manifest, second)["ct_path"] is None
    assert reason(second) == (f"the chosen series {plan.ct[first]!r} is not this patient's: "
                              f"it lies in no folder named {second}")
    assert _row(manifest, long)["ct_path"] is None
    assert "cannot be read: File name too long" in reason(long)


def test_slides_in_a_linked_folder_are_found_and_one_not_fetched_is_named(tmp_path):
    """rglob does not go into a linked folder: every slide kept on another disk and linked
    in under Pathology/ read as "no slide file", and a slide not fetched (a link to
    nothing, as DataLad leaves it) was rejected as if there were no such file."""
    from mmpipe.cohorts.manifest import DANGLING_LINK

    root = tmp_path / "raw"
    plan = write_mmist_raw(root, n_cases=8, seed=1)
    tiffs = sorted((root / "Pathology").glob("*.tiff"))
    other_disk = tmp_path / "other_disk" / "slides"
    other_disk.mkdir(parents=True)
    for tiff in tiffs:
        tiff.rename(other_disk / tiff.name)
    (root / "Pathology" / "TCGA-KIRC").symlink_to(other_disk, target_is_directory=True)
    unfetched = next(t for t in sorted(other_disk.glob("*.tiff"))
                     if not t.name.startswith(plan.slide_twice))
    unfetched.unlink()
    unfetched.symlink_to("/nonexistent/.git/annex/objects/key")
    manifest = build_manifest("m", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out").filter(pl.col("modality") == "wsi")
    found = manifest["wsi_path"].drop_nulls().to_list()
    assert len(found) == len(tiffs) - 3  # the one not fetched and the slide twice
    assert all("/TCGA-KIRC/" in p for p in found)
    gone = qc.filter(pl.col("path") == str(root / "Pathology" / "TCGA-KIRC" / unfetched.name))
    assert gone["reason"].to_list() == [DANGLING_LINK]


def test_a_chosen_exam_of_a_patient_spelt_otherwise_is_said(tmp_path):
    """CT_patientfiles.csv naming a patient the clinical table spells otherwise gave the
    patient "no ct exam" (missing by nature to the benchmark) with no word: the features
    adapter said it, this one did not."""
    root = tmp_path / "raw"
    plan = write_mmist_raw(root, n_cases=8, seed=1)
    case = next(c for c in plan.ct if c != plan.missing_ct_series)
    table = root / "CT_patientfiles.csv"
    table.write_text(table.read_text().replace(f"{case},", f"{case.lower()},"))
    build_manifest("m", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    said = qc.filter((pl.col("modality") == "ct") & (pl.col("status") == "skipped"))
    assert said["reason"].to_list() == [
        f"CT_patientfiles.csv lists patient {case.lower()!r}, who is not in "
        "clinical+genomic_split.csv: its exam is used for nobody"]
    own = qc.filter((pl.col("subject_id") == case) & (pl.col("modality") == "ct"))
    assert own["status"].to_list() == ["rejected"]
    assert own["reason"].item() == (f"CT_patientfiles.csv lists this patient's exam under "
                                    f"{case.lower()!r}, not {case!r}: correct the ID there")


def test_the_miniatures_series_have_uids_of_their_own(raw):
    """A case's MR series is its CT series relabelled: it shared the CT twin's series and
    instance UIDs, which DICOM requires unique, so a reader grouping a case's folder by
    series would merge the two."""
    import pydicom

    root, plan, _, _ = raw
    seen: dict[str, set] = {"SeriesInstanceUID": set(), "SOPInstanceUID": set()}
    n_series = 0
    for folder in {p.parent for p in root.rglob("*.dcm")}:
        files = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")]
        n_series += 1
        seen["SeriesInstanceUID"] |= {ds.SeriesInstanceUID for ds in files}
        seen["SOPInstanceUID"] |= {ds.SOPInstanceUID for ds in files}
        for ds in files:
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            if ds.Modality == "MR":
                assert "RescaleType" not in ds and "KVP" not in ds
    assert plan.mri and len(seen["SeriesInstanceUID"]) == n_series
    assert len(seen["SOPInstanceUID"]) == sum(1 for _ in root.rglob("*.dcm"))


def test_chosen_slides_of_normal_tissue_are_counted(tmp_path, caplog):
    """The release maps a quarter of its TCGA patients to a normal-tissue slide (sample
    type 11): the features adapter said so, the raw one encoded them without a word."""
    plan = write_mmist_raw(tmp_path, n_cases=6, seed=1)
    case = next(c for c in plan.cases if c.startswith("TCGA") and c != plan.slide_twice)
    slide = next((tmp_path / "Pathology").glob(f"{case}-01Z-00-DX1.*"))
    slide.rename(slide.with_name(slide.name.replace("-01Z-00-DX1", "-11A-01-TS1")))
    table = tmp_path / "WSI_patientfiles.csv"
    table.write_text(table.read_text().replace(f"{case}-01Z-00-DX1", f"{case}-11A-01-TS1"))
    with caplog.at_level("WARNING", logger="mmpipe.cohorts.mmist"):
        manifest = build_manifest("m", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    assert "-11A-01-TS1." in _row(manifest, case)["wsi_path"]
    assert "wsi: 1 chosen slide(s) are of normal tissue" in caplog.text
    (row,) = read_qc(tmp_path / "out").filter(pl.col("status") == "normal_tissue").iter_rows(
        named=True)
    assert row["subject_id"] == "*" and row["modality"] == "wsi"
    assert row["reason"].endswith(f"as these patients' slides: {case}")


def test_a_series_of_another_case_is_rejected_naming_it(tmp_path):
    """A case given another's series, that one's own row dropped: a CPTAC case read a
    TCGA case's CT as its own, present, with an empty reason."""
    root = tmp_path / "raw"
    plan = write_mmist_raw(root, n_cases=8, seed=1)
    first, second = [c for c in plan.ct if c != plan.missing_ct_series][:2]
    table = root / "CT_patientfiles.csv"
    kept = [line for line in table.read_text().splitlines()
            if not line.startswith(f"{first},")]
    table.write_text("\n".join(kept).replace(plan.ct[second], plan.ct[first]) + "\n")
    manifest = build_manifest("m", _cfg(root), root / "out", base_dir=root)
    assert _row(manifest, second)["ct_path"] is None
    qc = read_qc(root / "out").filter((pl.col("modality") == "ct")
                                      & (pl.col("subject_id") == second))
    assert qc["status"].item() == "rejected"
    assert qc["reason"].item() == (f"the chosen series {plan.ct[first]!r} is not this "
                                   f"patient's: it lies in no folder named {second}")


def test_a_label_value_outside_the_releases_codes_is_blanked_and_said(tmp_path):
    # the raw adapter reads the same clinical table: a 2 in vital_status_12 was a class
    plan = write_mmist_raw(tmp_path, n_cases=6, seed=1)
    table = tmp_path / "clinical+genomic_split.csv"
    header, *rows = table.read_text().splitlines()
    column = header.split(",").index("vital_status_12")
    cells = rows[0].split(",")
    cells[column] = "2"
    table.write_text("\n".join([header, ",".join(cells), *rows[1:]]) + "\n")
    manifest = build_manifest("m", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    case = cells[0]
    assert case in plan.cases and _row(manifest, case)["vital_status_12"] is None
    said = read_qc(tmp_path / "out").filter((pl.col("subject_id") == case)
                                            & (pl.col("modality") == "label"))
    assert any(r.startswith("vital_status_12 value 2 is not one of the release's codes")
               for r in said["reason"])
