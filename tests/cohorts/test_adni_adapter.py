"""The adni adapter on a miniature LONI download (NIfTI per scan in LONI's folders, an
ADNIMERGE-like table) with oddities planted by :func:`mmpipe.cohorts.demo.adni.write_adni`."""

from pathlib import Path

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.demo.adni import write_adni
from mmpipe.errors import ConfigError, InputError


def _cfg(root, **over):
    cfg = {"adapter": "adni", "root": str(root), "labels": ["diagnosis", "ad_vs_cn"],
           "modalities": {"mri": {"kind": "volume", "encoders": ["med3d_demo"]},
                          "pet": {"kind": "volume", "encoders": ["med3d_demo"]},
                          "clinical": {"kind": "table", "encoders": ["tabular"],
                                       "fields": ["AGE", "MMSE"]}}}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def adni(tmp_path_factory):
    root = tmp_path_factory.mktemp("adni")
    plan = write_adni(root, n_subjects=9, seed=1)
    manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    return root, plan, manifest, read_qc(root / "out")


def _row(manifest, sid):
    return manifest.filter(pl.col("subject_id") == sid).row(0, named=True)


def _reason(qc, sid, modality):
    return qc.filter((pl.col("subject_id") == sid) & (pl.col("modality") == modality)
                     )["reason"].item()


def test_baseline_visit_scans_and_labels(adni):
    _, plan, manifest, _ = adni
    ok = plan.subjects[0]
    row = _row(manifest, ok)
    assert row["viscode"] == "bl" and row["diagnosis"] == plan.diagnosis_bl[ok]
    assert "_MR_MPRAGE_" in row["mri_path"] and "_PT_Coreg" in row["pet_path"]
    assert {_row(manifest, s)["ad_vs_cn"] for s in plan.subjects
            if plan.diagnosis_bl[s] == "MCI"} == {None}
    assert "Localizer" not in "".join(manifest["mri_path"].drop_nulls().to_list())


def test_scans_outside_the_window_or_tied_are_not_chosen(adni):
    _, plan, manifest, qc = adni
    assert _row(manifest, plan.pet_only_at_m12)["pet_path"] is None
    assert "no pet scan within 90 days" in _reason(qc, plan.pet_only_at_m12, "pet")
    assert _row(manifest, plan.mri_out_of_window)["mri_path"] is None
    assert _row(manifest, plan.two_close_mri)["mri_path"] is None
    assert "two mri scans 3 days from the visit" in _reason(qc, plan.two_close_mri, "mri")
    nodx = _row(manifest, plan.no_baseline_dx)
    assert nodx["diagnosis"] is None and nodx["mri_path"] is not None


def test_the_visit_rule_first_with_all(adni):
    root, plan, _, _ = adni
    manifest = build_manifest("adni", _cfg(root, adni={"visit": "first_with_all"}),
                              root / "o2", base_dir=root)
    row = _row(manifest, plan.pet_only_at_m12)
    assert row["viscode"] == "m12" and row["pet_path"] is not None
    # ADNIMERGE's AGE is the baseline age on every row: the visit's is AGE + Years_bl
    table = pl.read_csv(root / "ADNIMERGE.csv", infer_schema=False).filter(
        (pl.col("PTID") == plan.pet_only_at_m12) & (pl.col("VISCODE") == "m12")).row(0, named=True)
    assert float(row["AGE"]) == pytest.approx(float(table["AGE"]) + 365 / 365.25, abs=0.005)
    baseline = _row(build_manifest("adni", _cfg(root), root / "o2b", base_dir=root),
                    plan.pet_only_at_m12)
    assert float(baseline["AGE"]) == float(table["AGE"])
    assert "_MR_" in row["mri_path"] and row["mri_path"] != _row(manifest, plan.subjects[0])["mri_path"]
    # without a diagnosis at baseline and no MRI near its 12-month visit: no visit at all
    assert plan.no_baseline_dx not in manifest["subject_id"].to_list()
    qc = read_qc(root / "o2")
    why = qc.filter((pl.col("subject_id") == plan.no_baseline_dx) & (pl.col("modality") == "label"))
    assert "no visit with a diagnosis and a scan of every modality" in why["reason"].item()


def test_the_age_at_a_later_visit_needs_the_years_from_baseline(tmp_path):
    """Without Years_bl, the field AGE of a later visit would be the age at baseline."""
    write_adni(tmp_path, n_subjects=9, seed=1)
    table = pl.read_csv(tmp_path / "ADNIMERGE.csv", infer_schema=False)
    table.drop("Years_bl").write_csv(tmp_path / "ADNIMERGE.csv")
    with pytest.raises(InputError, match="has no Years_bl column"):
        build_manifest("adni", _cfg(tmp_path, adni={"visit": "first_with_all"}),
                       tmp_path / "out", base_dir=tmp_path)
    build_manifest("adni", _cfg(tmp_path), tmp_path / "bl", base_dir=tmp_path)  # read at bl


def test_config_errors(adni):
    root, _, _, _ = adni
    with pytest.raises(ConfigError, match="derives"):
        build_manifest("adni", _cfg(root, labels=["amyloid"]), root / "o3", base_dir=root)
    with pytest.raises(ConfigError, match="adni.visit"):
        build_manifest("adni", _cfg(root, adni={"visit": "latest"}), root / "o4", base_dir=root)
    cfg = _cfg(root)
    cfg["modalities"]["tau"] = {"kind": "volume", "encoders": ["med3d_demo"]}
    with pytest.raises(ConfigError, match="adni.series"):
        build_manifest("adni", cfg, root / "o5", base_dir=root)


def test_a_real_download_s_series_and_dates(tmp_path):
    """What LONI downloads hold beside the miniature: amyloid PET whose processing stages
    are named as FDG's with the tracer before them (read as FDG by the old default), FDG's
    own "Co-registered" stages, ADNI's back-to-back MPRAGE_Repeat (the same day: the old
    day-level tie rejected most sessions' MRI), one scan in two processing stages, a date
    folder that is not a date (crashed the cohort), and ADNIMERGE rows of subjects
    nobody downloaded (table-only subjects, with a table modality)."""
    import datetime as dt

    import numpy as np

    from mmpipe.cohorts.demo.adni import _write_scan

    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=8, seed=2)
    vol = np.ones((4, 6, 6), np.int16)
    table = pl.read_csv(root / "ADNIMERGE.csv", infer_schema=False)
    bl = {r["PTID"]: dt.datetime.fromisoformat(r["EXAMDATE"])
          for r in table.filter(pl.col("VISCODE") == "bl").iter_rows(named=True)}
    amyloid, repeat, stages, bad_date = (plan.subjects[5], plan.subjects[6],
                                         plan.subjects[7], plan.subjects[0])
    # amyloid: the subject's FDG removed, an AV45 stage 1 day from the visit instead
    import shutil
    shutil.rmtree(root / "ADNI" / amyloid / "Coreg,_Avg,_Standardized_Image_and_Voxel_Size")
    _write_scan(root, amyloid, "AV45_Coreg,_Avg,_Std_Img_and_Vox_Siz,_Uniform_Resolution",
                bl[amyloid] + dt.timedelta(days=1, hours=10), 90001, vol)
    # repeat: MPRAGE at 08:20 and MPRAGE_Repeat at 08:27 of one day, 1 day from the visit
    for series, minute, image in (("MPRAGE_Repeat", 27, 90002), ("MPRAGE", 20, 90003)):
        _write_scan(root, repeat, series, bl[repeat] + dt.timedelta(days=1, hours=8,
                                                                    minutes=minute), image, vol)
    # stages: its PET also as FDG's "Co-registered,_Averaged" at the same time
    pet = next((root / "ADNI" / stages / "Coreg,_Avg,_Standardized_Image_and_Voxel_Size").iterdir())
    when = dt.datetime.strptime(pet.name[:19], "%Y-%m-%d_%H_%M_%S")
    _write_scan(root, stages, "Co-registered,_Averaged", when, 90004, vol)
    (root / "ADNI" / bad_date / "MPRAGE" / "2006-02-30_08_20_30.0" / "I1").mkdir(parents=True)
    (root / "ADNI" / bad_date / "MPRAGE" / "2006-02-30_08_20_30.0" / "I1" / "x.nii").write_bytes(b"")
    with (root / "ADNIMERGE.csv").open("a") as f:
        f.write("999,941_S_9999,bl,2011-01-01,CN,70,0,Male,29\n")
    # a scan downloaded as DICOM, and NIfTI files a level too high: skipped, said
    mprage = next((root / "ADNI" / repeat / "MPRAGE").iterdir())
    (mprage / "I77").mkdir()
    (mprage / "I77" / "IM0001.dcm").write_bytes(b"")
    (mprage / "stray.nii").write_bytes(b"")
    (root / "ADNI" / repeat / "MPRAGE" / "notes.nii").write_bytes(b"")

    manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    assert _row(manifest, amyloid)["pet_path"] is None
    assert "no pet scan within 90 days" in _reason(qc, amyloid, "pet")
    assert "/MPRAGE/" in _row(manifest, repeat)["mri_path"]           # the first of the day
    assert _row(manifest, stages)["pet_path"] is None
    assert "two pet scans" in _reason(qc, stages, "pet")
    skipped = qc.filter(pl.col("reason").str.contains("scan-date folder"))
    assert "2006-02-30_08_20_30.0" in skipped["path"].item()
    assert _row(manifest, bad_date)["mri_path"] is not None           # its real scan stays
    assert "941_S_9999" not in manifest["subject_id"].to_list()
    skipped = {Path(r["path"]).name: r["reason"] for r in qc.filter(
        pl.col("status") == "skipped").iter_rows(named=True)}
    assert skipped["I77"].startswith("no NIfTI file in the image folder")
    assert skipped["stray.nii"].startswith("a NIfTI file outside an image-ID folder")
    assert skipped["notes.nii"] == skipped["stray.nii"]
    # under first_with_all the tie is the visit's, said as such: the baseline visit was
    # passed over, and the subject read as scanned at no visit (missing by nature)
    manifest = build_manifest("adni", _cfg(root, adni={"visit": "first_with_all"}),
                              root / "fwa", base_dir=root)
    qc = read_qc(root / "fwa")
    assert _row(manifest, stages)["viscode"] == "bl"
    assert _row(manifest, stages)["pet_path"] is None
    pet = qc.filter((pl.col("subject_id") == stages) & (pl.col("modality") == "pet"))
    assert pet["status"].item() == "rejected" and "two pet scans" in pet["reason"].item()


def test_the_diagnosis_columns_are_not_inputs(adni):
    root, _, _, _ = adni
    cfg = _cfg(root)
    cfg["modalities"]["clinical"]["fields"] = ["AGE", "DX_bl"]
    with pytest.raises(ConfigError, match="'DX_bl' is what label 'diagnosis' is derived"):
        build_manifest("adni", cfg, root / "o6", base_dir=root)


def test_two_days_as_close_are_a_tie_whatever_one_day_holds():
    """MPRAGE and its repeat on day -1 and one scan on day +1: the sort by time put both of
    day -1 first and the tie between the days went unseen."""
    import datetime as dt
    from pathlib import Path

    from mmpipe.cohorts.adni import Scan, _match

    visit = dt.date(2010, 5, 2)
    scans = [Scan("mri", dt.datetime(2010, 5, 1, 8, 20), (Path("a.nii"),), Path("A")),
             Scan("mri", dt.datetime(2010, 5, 1, 8, 27), (Path("b.nii"),), Path("B")),
             Scan("mri", dt.datetime(2010, 5, 3, 9, 0), (Path("c.nii"),), Path("C"))]
    scan, why = _match(visit, scans, "mri", 90)
    assert scan is None and why.startswith("two mri scans 1 days from the visit")
    assert _match(visit, scans[:2], "mri", 90)[0].folder == Path("A")


def test_a_table_given_from_the_home_folder_is_found(adni, tmp_path, monkeypatch):
    """``adni.table: ~/...`` is the user's home, as every path of the config, and as the
    workflow declares the table an input of the manifest job (source_tables)."""
    from mmpipe.cohorts import source_tables

    root, _, manifest, _ = adni
    home = tmp_path / "home"
    (home / "tables").mkdir(parents=True)
    (home / "tables" / "merge.csv").write_bytes((root / "ADNIMERGE.csv").read_bytes())
    monkeypatch.setenv("HOME", str(home))
    cfg = _cfg(root, adni={"table": "~/tables/merge.csv"})
    assert home / "tables" / "merge.csv" in source_tables(cfg, root)
    again = build_manifest("adni", cfg, tmp_path / "out", base_dir=root)
    assert again.equals(manifest)


def test_a_downloaded_subject_none_of_whose_series_matches_is_named(tmp_path, caplog):
    """ADNI1's standardised T1 (MPR__GradWarp__B1_Correction__N3__Scaled) or GE's
    IR-FSPGR matches no default pattern: the subject left the cohort with an info line
    that counted it among the study's never-downloaded subjects."""
    import logging

    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=8, seed=2)
    gone = plan.subjects[3]
    renamed = {"MPRAGE": "MPR__GradWarp__B1_Correction__N3__Scaled",
               "Coreg,_Avg,_Standardized_Image_and_Voxel_Size": "Sag_IR-FSPGR"}
    for old, new in renamed.items():
        (root / "ADNI" / gone / old).rename(root / "ADNI" / gone / new)
    series = ", ".join(sorted(p.name for p in (root / "ADNI" / gone).iterdir()))
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    assert gone not in manifest["subject_id"].to_list()
    (row,) = read_qc(root / "out").filter(pl.col("path") == str(root / "ADNI" / gone)
                                          ).iter_rows(named=True)
    assert row["status"] == "skipped"
    assert row["reason"] == (f"subject folder {gone} skipped: none of its series "
                             f"({series}) matches a pattern of adni.series")
    assert "MPR__GradWarp" in series
    assert "1 downloaded subject folder(s) hold no series that adni.series matches" \
        in caplog.text and gone in caplog.text


def test_a_series_no_pattern_matches_beside_one_that_does_is_named(tmp_path):
    """A GE site's T1 (Accelerated_Sagittal_IR-FSPGR) beside a matched PET: the MRI read
    as missing by nature ("no mri scan within 90 days"), the T1 on disk named nowhere."""
    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=8, seed=1)
    sid = plan.subjects[0]
    (root / "ADNI" / sid / "MPRAGE").rename(root / "ADNI" / sid / "Accelerated_Sagittal_IR-FSPGR")
    build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    (row,) = read_qc(root / "out").filter(pl.col("path") == str(root / "ADNI" / sid)
                                          ).iter_rows(named=True)
    assert row["status"] == "skipped" and row["reason"].startswith(
        f"{sid} has no mri series that adni.series matches; series not read: "
        "Accelerated_Sagittal_IR-FSPGR")
    # a subject with a series of every modality has its localizers left unsaid
    said = read_qc(root / "out").filter(pl.col("reason").str.contains("series not read"))
    assert said["path"].to_list() == [str(root / "ADNI" / sid)]


def test_a_visit_without_an_examdate_rejects_the_scans_it_cannot_match(tmp_path):
    # the scans are on disk: "absent" read them as missing by nature
    plan = write_adni(tmp_path, n_subjects=8, seed=1)
    table = pl.read_csv(tmp_path / "ADNIMERGE.csv", infer_schema=False)
    sid = plan.subjects[0]
    bl = (pl.col("PTID") == sid) & (pl.col("VISCODE") == "bl")
    table.with_columns(pl.when(bl).then(pl.lit(None, pl.Utf8)).otherwise(pl.col("EXAMDATE"))
                       .alias("EXAMDATE")).write_csv(tmp_path / "ADNIMERGE.csv")
    build_manifest("adni", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    why = read_qc(tmp_path / "out").filter((pl.col("subject_id") == sid)
                                           & (pl.col("modality") == "mri"))
    assert why["status"].to_list() == ["rejected"]
    assert why["reason"][0].startswith("the visit has no EXAMDATE, so none of the subject's ")


def test_a_visit_listed_twice_and_macos_metadata_beside_a_scan(tmp_path):
    """Two ADNIMERGE rows of one subject's baseline, the first Dementia and the second CN,
    gave the subject the first row's diagnosis without a word; rows that agree are one
    visit. A macOS "._" file beside an MPRAGE NIfTI rejected the scan as "2 NIfTI
    files"."""
    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=9, seed=1)
    table = pl.read_csv(root / "ADNIMERGE.csv", infer_schema=False)
    conflicted, repeated = plan.subjects[0], plan.subjects[1]
    bl = (pl.col("VISCODE") == "bl")
    first = table.filter((pl.col("PTID") == conflicted) & bl).with_columns(
        DX=pl.lit("Dementia" if plan.diagnosis_bl[conflicted] != "Dementia" else "CN"))
    again = table.filter((pl.col("PTID") == repeated) & bl)
    pl.concat([first, table, again]).write_csv(root / "ADNIMERGE.csv")
    mris = [p for p in (root / "ADNI" / repeated).rglob("*.nii*") if "MPRAGE" in str(p)]
    for mri in mris:
        (mri.parent / f"._{mri.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    # no label, no scan and no field of the visit: nothing left of the subject
    assert conflicted not in manifest["subject_id"].to_list()
    assert "disagree on DX" in _reason(qc, conflicted, "mri")
    label = qc.filter((pl.col("subject_id") == conflicted) & (pl.col("modality") == "label"))
    assert label["status"].item() == "conflict"
    assert "2 ADNIMERGE rows list visit bl and disagree on DX" in label["reason"].item()
    same = _row(manifest, repeated)
    assert same["diagnosis"] == plan.diagnosis_bl[repeated]
    assert same["mri_path"] in map(str, mris)


def test_an_examdate_not_written_as_an_iso_date_is_said(tmp_path):
    """ADNIMERGE saved again by a spreadsheet writes 9/8/2005: every scan of the visit read
    "the visit has no EXAMDATE" (absent), though the date is there in another form."""
    plan = write_adni(tmp_path, n_subjects=8, seed=1)
    table = pl.read_csv(tmp_path / "ADNIMERGE.csv", infer_schema=False)
    sid = plan.subjects[0]
    iso = table.filter((pl.col("PTID") == sid) & (pl.col("VISCODE") == "bl"))["EXAMDATE"][0]
    y, m, d = iso[:10].split("-")
    us = f"{int(m)}/{int(d)}/{y}"
    table.with_columns(pl.when((pl.col("PTID") == sid) & (pl.col("VISCODE") == "bl"))
                       .then(pl.lit(us)).otherwise(pl.col("EXAMDATE")).alias("EXAMDATE")
                       ).write_csv(tmp_path / "ADNIMERGE.csv")
    build_manifest("adni", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    why = read_qc(tmp_path / "out").filter((pl.col("subject_id") == sid)
                                           & (pl.col("modality") == "mri"))
    assert why["status"].to_list() == ["rejected"]
    assert why["reason"][0] == (f"the visit's EXAMDATE {us!r} is not a YYYY-MM-DD date, so "
                                "no scan can be matched to it")
    # the first visit with every modality: which came first cannot be told
    build_manifest("adni", _cfg(tmp_path, adni={"visit": "first_with_all"}), tmp_path / "o2",
                   base_dir=tmp_path)
    why = read_qc(tmp_path / "o2").filter((pl.col("subject_id") == sid)
                                          & (pl.col("modality") == "mri"))
    assert why["status"].to_list() == ["rejected"]
    assert why["reason"][0] == (f"visit bl's EXAMDATE {us!r} is not a YYYY-MM-DD date, so the "
                                "first visit with a diagnosis and a scan of every modality "
                                "cannot be told")
    # a later row without a diagnosis, which could never be chosen, rejects nothing:
    # the intact baseline is read
    extra = table.filter((pl.col("PTID") == sid) & (pl.col("VISCODE") == "bl")).with_columns(
        VISCODE=pl.lit("m99"), DX=pl.lit(None, pl.Utf8), EXAMDATE=pl.lit("9/8/2099"))
    pl.concat([table, extra]).write_csv(tmp_path / "ADNIMERGE.csv")
    build_manifest("adni", _cfg(tmp_path, adni={"visit": "first_with_all"}), tmp_path / "o3",
                   base_dir=tmp_path)
    why = read_qc(tmp_path / "o3").filter((pl.col("subject_id") == sid)
                                          & (pl.col("modality") == "mri"))
    assert why["status"].to_list() == ["present"]


def test_a_scan_downloaded_as_dicom_is_not_replaced_by_a_farther_one(tmp_path):
    """The visit-day MPRAGE downloaded as DICOM left only a '*' row: the NIfTI MPRAGE
    taken 60 days later was read as the baseline scan, or, without it, the subject's MRI
    was 'no scan within 90 days' (missing by nature, where it was taken on the day). A
    subject whose every scan is DICOM vanished from the cohort, and a download all DICOM
    gave a manifest of no subject."""
    import datetime as dt
    import shutil

    import numpy as np

    from mmpipe.cohorts.demo.adni import _write_scan

    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=8, seed=3)
    table = pl.read_csv(root / "ADNIMERGE.csv", infer_schema=False)
    bl = {r["PTID"]: dt.datetime.fromisoformat(r["EXAMDATE"])
          for r in table.filter(pl.col("VISCODE") == "bl").iter_rows(named=True)}

    def as_dicom(sid: str, series: str) -> Path:
        """The scan nearest the visit, its NIfTI replaced by a DICOM file."""
        def days(folder: Path) -> int:
            return abs((dt.datetime.strptime(folder.name[:10], "%Y-%m-%d") - bl[sid]).days)
        date_dir = min((root / "ADNI" / sid / series).iterdir(), key=days)
        image_dir = next(date_dir.iterdir())
        shutil.rmtree(image_dir)
        image_dir.mkdir()
        (image_dir / "IM0001.dcm").write_bytes(b"")
        return image_dir

    later, alone = plan.subjects[0], plan.subjects[1]
    dicom = as_dicom(later, "MPRAGE")
    _write_scan(root, later, "MPRAGE", bl[later] + dt.timedelta(days=60), 95001,
                np.ones((4, 6, 6), np.int16))
    as_dicom(alone, "MPRAGE")
    manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    for sid in (later, alone):
        assert _row(manifest, sid)["mri_path"] is None
        mri = qc.filter((pl.col("subject_id") == sid) & (pl.col("modality") == "mri"))
        assert mri["status"].item() == "rejected", sid
        assert "the nearest mri scan, " in mri["reason"].item()
        assert "days from the visit, cannot be read: no NIfTI file in the image folder" in (
            mri["reason"].item())
    assert str(dicom) in _reason(qc, later, "mri")
    # every scan of one subject as DICOM: in the cohort, each modality rejected
    everything = later  # its FDG too, and the later MPRAGE
    for series in ("MPRAGE", "Coreg,_Avg,_Standardized_Image_and_Voxel_Size"):
        for image_dir in (root / "ADNI" / everything / series).glob("*/*"):
            for f in image_dir.iterdir():
                f.unlink()
            (image_dir / "IM0001.dcm").write_bytes(b"")
    manifest = build_manifest("adni", _cfg(root), root / "out2", base_dir=root)
    qc = read_qc(root / "out2")
    assert everything in manifest["subject_id"].to_list()
    assert set(qc.filter(pl.col("subject_id") == everything).filter(
        pl.col("modality").is_in(["mri", "pet"]))["status"]) == {"rejected"}
    # a download all DICOM is refused, not a cohort of no subject
    for image_dir in (root / "ADNI").glob("*/*/*/*"):
        for f in image_dir.iterdir():
            if f.name.endswith(".nii"):
                f.unlink()
    with pytest.raises(InputError, match="LONI's NIfTI download, not its DICOM one"):
        build_manifest("adni", _cfg(root), root / "out3", base_dir=root)


def test_an_emptied_scan_date_folder_nearest_the_visit_rejects_the_modality(tmp_path):
    """A date folder with no image folder in it (an extraction cut short) was passed over
    without a word, and a scan 60 days off was taken as the visit's."""
    import datetime as dt
    import shutil

    import numpy as np

    from mmpipe.cohorts.demo.adni import _write_scan

    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=8, seed=3)
    sid = plan.subjects[0]
    table = pl.read_csv(root / "ADNIMERGE.csv", infer_schema=False)
    bl = dt.datetime.fromisoformat(table.filter((pl.col("PTID") == sid)
                                                & (pl.col("VISCODE") == "bl"))["EXAMDATE"].item())
    near = min((root / "ADNI" / sid / "MPRAGE").iterdir(),
               key=lambda d: abs((dt.datetime.strptime(d.name[:10], "%Y-%m-%d") - bl).days))
    for inside in near.iterdir():
        shutil.rmtree(inside)
    _write_scan(root, sid, "MPRAGE", bl + dt.timedelta(days=60), 95001,
                np.ones((4, 6, 6), np.int16))
    manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    assert _row(manifest, sid)["mri_path"] is None
    reason = _reason(read_qc(root / "out"), sid, "mri")
    assert "cannot be read: no image folder in the scan-date folder" in reason
    assert str(near) in reason


def test_a_table_named_by_its_download_date_is_pointed_to(tmp_path):
    """LONI names ADNIMERGE by its date; the error said only that ADNIMERGE.csv is not
    there."""
    root = tmp_path / "adni"
    write_adni(root, n_subjects=8, seed=4)
    (root / "ADNIMERGE.csv").rename(root / "ADNIMERGE_18Feb2025.csv")
    with pytest.raises(InputError, match="holds ADNIMERGE_18Feb2025.csv: name the one to read "
                                         "in adni.table"):
        build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    manifest = build_manifest("adni", _cfg(root, adni={"table": str(root / "ADNIMERGE_18Feb2025.csv")}),
                              root / "out", base_dir=root)
    assert len(manifest) == 8


def test_a_download_none_of_whose_series_matches_is_said_so(tmp_path):
    """No series folder matching adni.series gave a manifest of no subject, then an error
    blaming a DICOM download of which there was none."""
    root = tmp_path / "adni"
    write_adni(root, n_subjects=8, seed=5)
    cfg = _cfg(root, adni={"series": {"mri": "^NO_SUCH$", "pet": "^NOR_THIS$"}})
    with pytest.raises(InputError, match=r"no series folder of a subject matches adni.series "
                                         r"for \['mri', 'pet'\] \(mri: \^NO_SUCH\$"):
        build_manifest("adni", cfg, root / "out", base_dir=root)


def _bl_dates(root):
    import datetime as dt

    table = pl.read_csv(root / "ADNIMERGE.csv", infer_schema=False)
    return {r["PTID"]: dt.datetime.fromisoformat(r["EXAMDATE"])
            for r in table.filter(pl.col("VISCODE") == "bl").iter_rows(named=True)}


def test_a_scan_nearer_another_visit_is_that_visit_s(tmp_path):
    """ADNI-GO/2 scan at m03: a baseline without its MPRAGE took the month-3 scan, 85 days
    off, as its own, with no QC row; the images and the label came from two visits."""
    import datetime as dt
    import shutil

    import numpy as np

    from mmpipe.cohorts.demo.adni import MRI_SERIES, _write_scan

    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=8, seed=3)
    sid = plan.subjects[0]
    bl = _bl_dates(root)[sid]
    shutil.rmtree(root / "ADNI" / sid / MRI_SERIES)
    m03 = bl + dt.timedelta(days=85)
    _write_scan(root, sid, MRI_SERIES, m03 + dt.timedelta(hours=9), 91001,
                np.ones((4, 6, 6), np.int16))
    table = pl.read_csv(root / "ADNIMERGE.csv", infer_schema=False)
    visit = table.filter((pl.col("PTID") == sid) & (pl.col("VISCODE") == "bl")).with_columns(
        VISCODE=pl.lit("m03"), EXAMDATE=pl.lit(str(m03.date())))
    pl.concat([table, visit]).write_csv(root / "ADNIMERGE.csv")
    manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    assert _row(manifest, sid)["mri_path"] is None
    qc = read_qc(root / "out").filter((pl.col("subject_id") == sid)
                                      & (pl.col("modality") == "mri"))
    assert qc["status"].item() == "absent"
    assert (f"the nearest within 90 days, 85 days from it, is nearer visit m03 ({m03.date()})"
            in qc["reason"].item())
    # the first visit with an MRI is then m03, with its own scan
    only_mri = {"mri": {"kind": "volume", "encoders": ["med3d_demo"]}}
    manifest = build_manifest("adni", _cfg(root, adni={"visit": "first_with_all"},
                                           modalities=only_mri), root / "fwa", base_dir=root)
    assert _row(manifest, sid)["viscode"] == "m03"
    assert "I91001" in _row(manifest, sid)["mri_path"]


def test_a_file_named_for_another_subject_is_not_read_as_this_one_s(tmp_path):
    """LONI names each file for its subject; one of 002_S_0002 in 002_S_0003's folder was
    read as 002_S_0003's scan, without a word."""
    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=8, seed=4)
    sid, other = plan.subjects[0], plan.subjects[1]
    mri = next(p for p in (root / "ADNI" / sid).rglob("*.nii") if "_MR_" in p.name)
    mri.rename(mri.parent / mri.name.replace(sid, other))
    manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    assert _row(manifest, sid)["mri_path"] is None
    why = _reason(qc, sid, "mri")
    assert why.startswith("the nearest mri scan") and f"is named for subject {other}, not {sid}" in why
    assert qc.filter(pl.col("reason").str.contains(f"named for subject {other}"))[
        "status"].sort().to_list() == ["rejected", "skipped"]


@pytest.mark.parametrize(("written", "read"), [
    ("NL", "CN"), ("MCI to Dementia", "Dementia"), ("NL to MCI", "MCI"),
    ("Dementia to MCI", "MCI"), ("MCI to NL", "CN"), ("CN", "CN")])
def test_the_older_diagnosis_coding_is_read(tmp_path, written, read):
    """ADNIMERGE before 2017 (and TADPOLE) write NL for CN and conversions as "A to B": every
    control had no label, and under first_with_all no visit (missing by nature)."""
    root = tmp_path / "adni"
    plan = write_adni(root, n_subjects=8, seed=1)
    sid = plan.subjects[0]
    table = pl.read_csv(root / "ADNIMERGE.csv", infer_schema=False)
    table.with_columns(DX=pl.when((pl.col("PTID") == sid) & (pl.col("VISCODE") == "bl"))
                       .then(pl.lit(written)).otherwise(pl.col("DX"))
                       ).write_csv(root / "ADNIMERGE.csv")
    for rule in ("baseline", "first_with_all"):
        manifest = build_manifest("adni", _cfg(root, adni={"visit": rule}), root / rule,
                                  base_dir=root)
        row = _row(manifest, sid)
        assert (row["viscode"], row["diagnosis"]) == ("bl", read)
        assert row["ad_vs_cn"] == {"CN": "CN", "Dementia": "AD"}.get(read)
