"""The csv adapter: a user's cohort described by one CSV, paths checked by kind."""

from __future__ import annotations

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_manifest, read_qc
from mmpipe.cohorts.csv_adapter import check_path
from mmpipe.errors import ConfigError, InputError


def _cfg(csv="data/cohort.csv", **extra):
    cfg = {
        "adapter": "csv",
        "csv": csv,
        "subject_column": "patient_id",
        "labels": ["response"],
        "modalities": {
            "ct": {"kind": "dicom", "column": "ct_dir", "encoders": ["e"]},
            "mri": {"kind": "volume", "column": "mri_file", "encoders": ["e"]},
            "wsi": {"kind": "slide", "column": "slide_path", "encoders": ["e"]},
            "emb": {"kind": "features", "column": "feature_file", "encoders": ["e"]},
            "clinical": {"kind": "table", "fields": ["age", "sex"], "encoders": ["e"]},
        },
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def cohort(tmp_path):
    data = tmp_path / "data"
    (data / "ct" / "p1").mkdir(parents=True)
    (data / "ct" / "p1" / "1.dcm").write_bytes(b"x")
    (data / "ct" / "empty").mkdir()
    (data / "mri").mkdir()
    (data / "mri" / "p1.nii.gz").write_bytes(b"x")
    (data / "mri" / "p3.NRRD").write_bytes(b"x")
    (data / "mri" / "p2.png").write_bytes(b"x")
    abs_slide = tmp_path / "elsewhere" / "p1.svs"
    abs_slide.parent.mkdir()
    abs_slide.write_bytes(b"x")
    (data / "f.npz").write_bytes(b"x")
    rows = [
        # id,   response, ct_dir,     mri_file,          slide_path,       feature_file, age, sex
        ("007", "1", "ct/p1", "mri/p1.nii.gz", str(abs_slide), "f.npz", "61", "F"),
        ("p2", "0", "ct/missing", "mri/p2.png", "mri/p1.nii.gz", "ct/p1", "55", ""),
        ("p3", "", "mri/p1.nii.gz", "mri/p3.NRRD", "", "", "70", ""),
        ("p4", "1", "ct/empty", "", "", "", "", ""),
    ]
    header = "patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex"
    text = header + "\n" + "\n".join(",".join(r) for r in rows) + "\n"
    (data / "cohort.csv").write_text(text)
    return tmp_path


def test_paths_are_resolved_and_checked_by_kind(cohort):
    out = cohort / "results" / "mydata"
    df = build_manifest("mydata", _cfg(), out, base_dir=cohort)
    # p4 has nothing usable (empty DICOM folder, no other path, no field): excluded
    assert df["subject_id"].to_list() == ["007", "p2", "p3"]  # "007" stays text
    row = df.row(0, named=True)
    assert row["ct_path"] == str(cohort / "data" / "ct" / "p1")
    assert row["mri_path"] == str(cohort / "data" / "mri" / "p1.nii.gz")
    assert row["wsi_path"] == str(cohort / "elsewhere" / "p1.svs")
    assert row["emb_path"] == str(cohort / "data" / "f.npz")
    assert row["age"] == 61 and row["response"] == 1
    assert df.row(2, named=True)["mri_path"].endswith("p3.NRRD")  # extensions ignore case

    qc = read_qc(out)
    reasons = {(r["subject_id"], r["modality"]): (r["status"], r["reason"])
               for r in qc.iter_rows(named=True)}
    assert reasons[("p2", "ct")] == ("rejected", "file not found")
    assert reasons[("p2", "mri")][0] == "rejected"
    assert reasons[("p2", "mri")][1].startswith("unexpected extension for kind 'volume'")
    assert reasons[("p2", "wsi")][1].startswith("unexpected extension for kind 'slide'")
    assert reasons[("p2", "emb")] == ("rejected", "is a directory, expected a features file")
    assert reasons[("p3", "ct")][1].startswith("not a directory")
    assert reasons[("p3", "wsi")] == ("absent", "no path in column 'slide_path'")
    assert reasons[("p4", "ct")] == ("rejected", "empty directory")
    assert reasons[("p4", "*")] == ("excluded", "no modality available")
    assert reasons[("p3", "label")] == ("absent", "label missing")
    rejected_path = qc.filter((pl.col("subject_id") == "p2") & (pl.col("modality") == "ct"))
    assert rejected_path["path"].item() == str(cohort / "data" / "ct" / "missing")

    df2, meta = read_manifest(out)
    assert meta["adapter"] == "csv" and meta["n_excluded"] == 1
    assert meta["modalities"]["emb"] == {"kind": "features", "path_column": "emb_path"}


def test_duplicate_ids_are_an_error(cohort):
    csv = cohort / "data" / "cohort.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines, lines[2].replace("p2", " p2 ")]) + "\n")
    with pytest.raises(InputError, match=r"duplicate subject_id.*'p2' x2"):
        build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)
    assert not (cohort / "out" / "manifest.parquet").exists()


def test_missing_id_names_the_row(cohort):
    csv = cohort / "data" / "cohort.csv"
    csv.write_text(csv.read_text() + ",1,ct/p1,,,,50,M\n")
    with pytest.raises(InputError, match=r"data row\(s\) 5 "):
        build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)


def test_config_errors_name_what_is_wrong(cohort):
    bad = _cfg()
    bad["modalities"]["clinical"]["fields"] = ["age", "bmi"]
    with pytest.raises(ConfigError, match=r"\['bmi'\].*not in the CSV"):
        build_manifest("mydata", bad, cohort / "out", base_dir=cohort)
    no_column = _cfg()
    del no_column["modalities"]["ct"]["column"]
    with pytest.raises(ConfigError, match="'ct'.*needs the 'column'"):
        build_manifest("mydata", no_column, cohort / "out", base_dir=cohort)
    with pytest.raises(InputError, match="cohort CSV not found"):
        build_manifest("mydata", _cfg(csv="nope.csv"), cohort / "out", base_dir=cohort)


@pytest.mark.parametrize(("name", "kind", "ok"), [
    ("a.nii.gz", "volume", True), ("a.mha", "volume", True), ("a.tif", "volume", False),
    ("a.ndpi", "slide", True), ("a.MRXS", "slide", True), ("a.npy", "slide", False),
    ("a.pth", "features", True), ("a.csv", "features", False),
])
def test_check_path_extensions(tmp_path, name, kind, ok):
    p = tmp_path / name
    p.write_bytes(b"x")
    assert (check_path(p, kind) is None) == ok


def _clinical_csv(tmp_path, ages):
    rows = [f"p{i},{i % 2},{a},{'FM'[i % 2]}" for i, a in enumerate(ages)]
    path = tmp_path / "clinical.csv"
    path.write_text("patient_id,response,age,sex\n" + "\n".join(rows) + "\n")
    return path


def _table_cfg(csv, **clinical):
    return {"adapter": "csv", "csv": str(csv), "subject_column": "patient_id",
            "labels": ["response"],
            "modalities": {"clinical": {"kind": "table", "fields": ["age", "sex"],
                                        "encoders": ["e"], **clinical}}}


def test_texts_in_a_numeric_column_are_blanked_and_recorded(tmp_path):
    csv = _clinical_csv(tmp_path, ["50", "45y", "61", "70", "unknown", "58", "66", "49"])
    df = build_manifest("mydata", _table_cfg(csv), tmp_path / "out", base_dir=tmp_path)
    assert df.schema["age"] == pl.Int64
    assert df["age"].to_list() == [50, None, 61, 70, None, 58, 66, 49]
    qc = read_qc(tmp_path / "out").filter(pl.col("status") == "non_numeric")
    assert qc["subject_id"].to_list() == ["p1", "p4"]
    assert all("'age'" in r for r in qc["reason"])
    assert "'45y'" in qc["reason"][0] and "'unknown'" in qc["reason"][1]


def test_non_numeric_error_stops_the_manifest(tmp_path):
    csv = _clinical_csv(tmp_path, ["50", "45y", "61", "70", "unknown", "58", "66", "49"])
    with pytest.raises(InputError, match=r"'p1': age = '45y'.*'p4': age = 'unknown'") as err:
        build_manifest("mydata", _table_cfg(csv, non_numeric="error"), tmp_path / "out",
                       base_dir=tmp_path)
    assert err.value.path == str(csv)
    assert not (tmp_path / "out" / "manifest.parquet").exists()
