"""The csv adapter: a user's cohort described by one CSV, paths checked by kind."""

from __future__ import annotations

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_manifest, read_qc
from mmpipe.cohorts.csv_adapter import check_path
from mmpipe.cohorts.source_csv import read_source_csv
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
    assert reasons[("p4", "ct")] == ("rejected", "no file in the folder or its subfolders")
    assert reasons[("p4", "*")] == ("excluded", "no modality available")
    assert reasons[("p3", "label")] == ("absent", "label missing")
    rejected_path = qc.filter((pl.col("subject_id") == "p2") & (pl.col("modality") == "ct"))
    assert rejected_path["path"].item() == str(cohort / "data" / "ct" / "missing")

    df2, meta = read_manifest(out)
    assert meta["adapter"] == "csv" and meta["n_excluded"] == 1
    assert meta["modalities"]["emb"] == {"kind": "features", "path_column": "emb_path"}


def _ct_mri_cfg():
    """A CSV cohort of a DICOM folder, a volume file and an age."""
    return _cfg(modalities={
        "ct": {"kind": "dicom", "column": "ct_dir", "encoders": ["e"]},
        "mri": {"kind": "volume", "column": "mri_file", "encoders": ["e"]},
        "clinical": {"kind": "table", "fields": ["age"], "encoders": ["e"]}})


def _ct_mri_manifest(tmp_path):
    """The manifest of ``tmp_path/data/cohort.csv`` (:func:`_ct_mri_cfg`): its rows by
    subject, and its QC's (status, reason) by (subject, modality)."""
    out = tmp_path / "results" / "c"
    df = build_manifest("c", _ct_mri_cfg(), out, base_dir=tmp_path)
    rows = {r["subject_id"]: r for r in df.iter_rows(named=True)}
    reasons = {(r["subject_id"], r["modality"]): (r["status"], r["reason"])
               for r in read_qc(out).iter_rows(named=True)}
    return rows, reasons

def test_a_nested_dicom_export_is_found_and_a_file_two_subjects_name_is_neither_s(tmp_path):
    """A PACS export nests its series under the subject's folder (it was "empty"); one
    file under two subjects (a copy-paste error, spelled two ways) was two subjects'
    image, in training and test alike."""
    data = tmp_path / "data"
    (data / "ct" / "p1" / "STUDY1" / "SERIES3").mkdir(parents=True)
    (data / "ct" / "p1" / "STUDY1" / "SERIES3" / "IM1.dcm").write_bytes(b"x")
    (data / "mri").mkdir()
    for name in ("a.nii.gz", "c.nii.gz"):
        (data / "mri" / name).write_bytes(b"x")
    (data / "cohort.csv").write_text(
        "patient_id,response,ct_dir,mri_file,age\n"
        "p1,1,ct/p1,mri/a.nii.gz,50\n"
        "p2,0,,./mri/../mri/a.nii.gz,51\n"
        "p3,1,,mri/c.nii.gz,52\n")
    rows, reasons = _ct_mri_manifest(tmp_path)
    assert rows["p1"]["ct_path"] == str(data / "ct" / "p1")
    assert rows["p1"]["mri_path"] is None and rows["p2"]["mri_path"] is None
    assert rows["p3"]["mri_path"] == str(data / "mri" / "c.nii.gz")
    assert reasons[("p1", "mri")] == ("rejected", "the same file as subject(s) ['p2']")
    assert reasons[("p2", "mri")] == ("rejected", "the same file as subject(s) ['p1']")


def test_a_folder_inside_another_subjects_and_a_file_of_two_modalities_are_shared(tmp_path):
    """A series folder under another patient's folder (the DICOM reader walks the whole
    tree) gave both the same series, and one file as one subject's CT and another's MRI
    was two subjects' images: both reached training and test under two labels."""
    data = tmp_path / "data"
    series = data / "ct" / "p1" / "study" / "series"
    series.mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"x")
    (data / "ct" / "p3").mkdir()
    (data / "ct" / "p3" / "1.dcm").write_bytes(b"x")
    (data / "ct" / "p3-b").mkdir()  # beside p3, not inside it
    (data / "ct" / "p3-b" / "1.dcm").write_bytes(b"x")
    (data / "a.nii.gz").write_bytes(b"x")
    (data / "cohort.csv").write_text(
        "patient_id,response,ct_dir,mri_file,age\n"
        "p1,1,ct/p1,,50\n"
        "p2,0,ct/p1/study/series,,51\n"
        "p3,1,ct/p3,a.nii.gz,52\n"
        "p4,0,ct/p3-b,,53\n"
        "p5,1,,a.nii.gz,54\n")
    rows, reasons = _ct_mri_manifest(tmp_path)
    assert rows["p1"]["ct_path"] is None and rows["p2"]["ct_path"] is None
    assert rows["p3"]["ct_path"] == str(data / "ct" / "p3")
    assert rows["p4"]["ct_path"] == str(data / "ct" / "p3-b")
    reasons = {key: verdict for key, verdict in reasons.items() if verdict[0] == "rejected"}
    assert reasons == {
        ("p1", "ct"): ("rejected", "a folder holding the file(s) of subject(s) ['p2']"),
        ("p2", "ct"): ("rejected", "inside the folder of subject(s) ['p1']"),
        ("p3", "mri"): ("rejected", "the same file as subject(s) ['p5']"),
        ("p5", "mri"): ("rejected", "the same file as subject(s) ['p3']")}


def test_a_dicom_folder_that_cannot_be_listed_is_that_subjects_rejection(tmp_path,
                                                                         monkeypatch):
    """os.walk skips a folder it cannot list: the subject read as "no file" instead of
    the folder's own error (root lists every folder, so the error is planted)."""
    import os

    from mmpipe.cohorts import csv_adapter

    (tmp_path / "p1" / "STUDY").mkdir(parents=True)

    def scandir(path="."):  # the listing io/walk reads each folder with
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError):
        csv_adapter.check_path(tmp_path / "p1", "dicom")


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
    ("a.pth", "features", True), ("a.h5", "features", True), ("a.csv", "features", False),
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


def test_a_field_read_as_categories_keeps_its_written_form(tmp_path):
    # read as numbers, the codes 007 and 250.00 reached the prompts as "7" and "250"
    csv = _clinical_csv(tmp_path, ["007", "7", "250.00", ""])
    df = build_manifest("mydata", _table_cfg(csv, categorical=["age"]), tmp_path / "out",
                        base_dir=tmp_path)
    assert df["age"].to_list() == ["007", "7", "250.00", None]


def test_non_numeric_error_stops_the_manifest(tmp_path):
    csv = _clinical_csv(tmp_path, ["50", "45y", "61", "70", "unknown", "58", "66", "49"])
    with pytest.raises(InputError, match=r"'p1': age = '45y'.*'p4': age = 'unknown'") as err:
        build_manifest("mydata", _table_cfg(csv, non_numeric="error"), tmp_path / "out",
                       base_dir=tmp_path)
    assert err.value.path == str(csv)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


# -- the cohort's own split, unused columns -------------------------------------------------

def _split_csv(tmp_path, splits, extra=()):
    """A table-only cohort whose subject i has label i % 2 and split value splits[i]
    (None: no label and no value), plus ``extra`` columns (value "x")."""
    rows = [",".join([f"p{i}", "" if v is None else str(i % 2), str(40 + i),
                      "" if v is None else v, *("x" for _ in extra)])
            for i, v in enumerate(splits)]
    path = tmp_path / "cohort.csv"
    path.write_text(",".join(["patient_id", "response", "age", "fold", *extra]) + "\n"
                    + "\n".join(rows) + "\n")
    return path


def _split_cfg(csv, split, fields=("age",)):
    return {"adapter": "csv", "csv": str(csv), "subject_column": "patient_id",
            "labels": ["response"], "split": split,
            "modalities": {"clinical": {"kind": "table", "fields": list(fields),
                                        "encoders": ["e"]}}}


def test_the_split_column_reaches_the_manifest_in_canonical_parts(tmp_path):
    csv = _split_csv(tmp_path, ["Train", " training", "VALID", "validation", "test",
                                "Testing", "val", "TRAIN"])
    out = tmp_path / "out"
    df = build_manifest("mydata", _split_cfg(csv, {"column": "fold"}), out, base_dir=tmp_path)
    assert df["split"].to_list() == ["train", "train", "val", "val", "test", "test", "val",
                                     "train"]
    _, meta = read_manifest(out)
    assert meta["split"]["source"] == "column fold"
    assert meta["split"]["fixed"] == ["train", "val", "test"]
    assert meta["split"]["counts"] == {"train": 3, "val": 3, "test": 2, "none": 0}
    row = read_qc(out).filter(pl.col("modality") == "split").row(0, named=True)
    assert (row["subject_id"], row["status"]) == ("*", "fixed")
    assert "'fold'" in row["reason"] and "every seed" in row["reason"]


def test_bad_split_values_name_the_subject_and_the_value(tmp_path):
    csv = _split_csv(tmp_path, ["train", "holdout", "test", "2"])
    with pytest.raises(InputError, match=r"subject 'p1': 'holdout'; subject 'p3': '2'") as err:
        build_manifest("mydata", _split_cfg(csv, {"column": "fold"}), tmp_path / "out",
                       base_dir=tmp_path)
    assert err.value.path == str(csv)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_a_labelled_subject_without_a_split_value_is_an_error(tmp_path):
    csv = _split_csv(tmp_path, ["train", "", "test", None])  # p3: no label, no part: fine
    with pytest.raises(InputError, match=r"1 subject\(s\) with a label have no part.*'p1'"):
        build_manifest("mydata", _split_cfg(csv, {"column": "fold"}), tmp_path / "out",
                       base_dir=tmp_path)
    csv = _split_csv(tmp_path, ["train", "train", "test", None])
    df = build_manifest("mydata", _split_cfg(csv, {"column": "fold"}), tmp_path / "out",
                        base_dir=tmp_path)
    assert df["split"].to_list() == ["train", "train", "test", None]
    assert read_manifest(tmp_path / "out")[1]["split"]["fixed"] == ["test"]


def test_split_files_fix_test_and_optionally_train_and_val(tmp_path):
    csv = _split_csv(tmp_path, ["x"] * 6)  # the fold column is not the split here
    # saved by Notepad: a byte-order mark before p4 (read as "\ufeffp4", not in the CSV)
    (tmp_path / "test.txt").write_text("p4\n\np5\n# published test set\n",
                                       encoding="utf-8-sig")
    cfg = _split_cfg(csv, {"files": {"test": "test.txt"}})
    df = build_manifest("mydata", cfg, tmp_path / "out", base_dir=tmp_path)
    assert df["split"].to_list() == ["train"] * 4 + ["test"] * 2  # the rest: training part
    meta = read_manifest(tmp_path / "out")[1]
    assert (meta["split"]["source"], meta["split"]["fixed"]) == ("files", ["test"])

    (tmp_path / "train.txt").write_text("p0\np1\np2\n")
    (tmp_path / "val.txt").write_text("p3\n")
    cfg = _split_cfg(csv, {"files": {"test": "test.txt", "train": "train.txt",
                                     "val": str(tmp_path / "val.txt")}})
    df = build_manifest("mydata", cfg, tmp_path / "out", base_dir=tmp_path)
    assert df["split"].to_list() == ["train"] * 3 + ["val"] + ["test"] * 2

    (tmp_path / "val.txt").write_text("p3\np9\n")
    with pytest.raises(InputError, match=r"val.txt.*not in .*cohort.csv: \['p9'\]"):
        build_manifest("mydata", cfg, tmp_path / "out", base_dir=tmp_path)
    (tmp_path / "val.txt").write_text("p3\np4\n")
    with pytest.raises(InputError, match=r"subject 'p4': .*val.txt and .*test.txt"):
        build_manifest("mydata", cfg, tmp_path / "out", base_dir=tmp_path)
    (tmp_path / "val.txt").write_text("p3\n")
    (tmp_path / "train.txt").write_text("p0\np1\n")  # p2 is labelled and in no file
    with pytest.raises(InputError, match=r"no part.*'p2'"):
        build_manifest("mydata", cfg, tmp_path / "out", base_dir=tmp_path)


def test_a_split_file_that_is_not_utf8_names_itself(tmp_path):
    """A Latin-1 split file ended in a UnicodeDecodeError traceback naming no file."""
    csv = _split_csv(tmp_path, ["x"] * 6)
    (tmp_path / "test.txt").write_bytes("p4\np5 caf\u00e9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"test\.txt: not UTF-8 text .*save it as UTF-8"):
        build_manifest("mydata", _split_cfg(csv, {"files": {"test": "test.txt"}}),
                       tmp_path / "out", base_dir=tmp_path)


def test_a_quote_left_open_is_refused_not_read_as_fewer_subjects(cohort):
    """A field whose quote runs on swallowed the rows below it: p2 and p3 vanished and
    p1's sex held them."""
    csv = cohort / "data" / "cohort.csv"
    csv.write_text("patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex\n"
                   'p1,1,,,,,50,"F\np2,0,,,,,60,M\np3,1,,,,,70,F"\np4,0,,,,,55,M\n')
    with pytest.raises(InputError, match=r"cohort\.csv: a quoted cell runs over whole rows "
                                         r"\(the record ending on line 4\)"):
        build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)
    # a quoted line break in free text is a value like any other, commas and all
    csv.write_text("patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex\n"
                   'p1,1,,,,,50,"F\nsee notes"\np2,0,,,,,60,M\n')
    assert build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort).height == 2
    narrow = cohort / "data" / "notes.csv"
    narrow.write_text('patient_id,response,note\np0,1,"Stable.\nBP 120/80, HR 70, T 37"\n'
                      "p1,0,ok\n")
    assert read_source_csv(narrow)["note"].to_list() == ["Stable.\nBP 120/80, HR 70, T 37",
                                                          "ok"]


def test_unused_csv_columns_are_listed_in_the_adapter_qc(tmp_path):
    csv = _split_csv(tmp_path, ["train", "test", "train"], extra=("site", "note"))
    out = tmp_path / "out"
    cfg = _split_cfg(csv, {})
    del cfg["split"]
    build_manifest("mydata", cfg, out, base_dir=tmp_path)
    unused = read_qc(out).filter(pl.col("modality") == "column")
    assert unused["status"].unique().to_list() == ["unused"]
    assert unused["subject_id"].unique().to_list() == ["*"]
    assert unused["path"].unique().to_list() == [str(csv)]
    assert [r.split("'")[1] for r in unused["reason"]] == ["fold", "site", "note"]
    # the file's name in the words (a copied project's say the same), its path beside
    assert all(f" of {csv.name} is" in r and str(csv) not in r for r in unused["reason"])
    assert read_manifest(out)[1]["unused_columns"][0] == {"file": str(csv), "column": "fold"}
    # ... and reach the cohort QC table and the stage-1 summary
    from mmpipe.layout import CohortLayout
    from mmpipe.report.stage1 import write_cohort_qc

    lay = CohortLayout(out)
    write_cohort_qc(lay.adapter_qc(), [], lay.cohort_qc(), lay.stage1_summary())
    assert (f"| * | column | unused | column 'site' of {csv.name} "
            in lay.stage1_summary().read_text())
    # once the config names the split column, it is used
    build_manifest("mydata", _split_cfg(csv, {"column": "fold"}), out, base_dir=tmp_path)
    unused = read_qc(out).filter(pl.col("modality") == "column")
    assert [r.split("'")[1] for r in unused["reason"]] == ["site", "note"]


def test_the_split_column_must_be_its_own_column(tmp_path):
    csv = _split_csv(tmp_path, ["train", "test"])
    with pytest.raises(ConfigError, match="'age' is also"):
        build_manifest("mydata", _split_cfg(csv, {"column": "age"}), tmp_path / "out",
                       base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"'nope'.*not in the CSV"):
        build_manifest("mydata", _split_cfg(csv, {"column": "nope"}), tmp_path / "out",
                       base_dir=tmp_path)
    with pytest.raises(ConfigError, match="'split' would be both table field"):
        csv.write_text(csv.read_text().replace("fold", "split"))
        (tmp_path / "t.txt").write_text("p1\n")
        build_manifest("mydata", _split_cfg(csv, {"files": {"test": "t.txt"}},
                                            fields=("age", "split")),
                       tmp_path / "out", base_dir=tmp_path)


def test_check_path_of_an_image_set(tmp_path):
    """A 2-D image modality takes an image file or a folder holding at least one."""
    (tmp_path / "set").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "set" / "a.PNG").write_bytes(b"\x89PNG")
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert check_path(tmp_path / "set", "image") is None
    assert check_path(tmp_path / "set" / "a.PNG", "image") is None
    assert check_path(tmp_path / "empty", "image") == "no image file in the folder"
    assert "unexpected extension" in check_path(tmp_path / "empty" / "notes.txt", "image")


def test_missing_label_markers_are_missing_labels_not_classes(cohort, caplog):
    """A label cell "NA" (R's, pandas' and spreadsheets' missing marker) became a class of
    its own beside 0 and 1: a three-class benchmark without a word."""
    csv = cohort / "data" / "cohort.csv"
    text = csv.read_text()
    csv.write_text(text.replace("p2,0,", "p2,NA,").replace("p3,,", "p3,n/a ,"))
    df = build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)
    assert df["response"].to_list() == [1, None, None]      # numbers, as with blank cells
    qc = read_qc(cohort / "out")
    missing = qc.filter(pl.col("modality") == "label")["subject_id"].to_list()
    assert sorted(missing) == ["p2", "p3"]
    # a text among numbers that is not a marker stays a class, and is warned about
    csv.write_text(text.replace("p2,0,", "p2,unknown,").replace("007,1,", "007,0,")
                   .replace("p4,1,", "p4,1,").replace("p3,,", "p3,1,"))
    df = build_manifest("mydata", _cfg(), cohort / "out2", base_dir=cohort)
    assert sorted(df["response"].to_list()) == ["0", "1", "unknown"]
    assert "values ['unknown'] are classes of their own" in caplog.text
    # numbers whose text is not the number's stay text, but "01" beside "1" is one number
    # written two ways: two classes of one value, refused (it was two classes silently)
    csv.write_text(text.replace("p2,0,", "p2,NA,").replace("007,1,", "007,01,"))
    with pytest.raises(InputError, match=r"one number written two ways .*\[\['01', '1'\]\]"):
        build_manifest("mydata", _cfg(), cohort / "out3", base_dir=cohort)
    # "Yes" and "yes" were two classes without a word
    csv.write_text(text.replace("007,1,", "007,Yes,").replace("p2,0,", "p2,no,")
                   .replace("p3,,", "p3,yes ,"))
    with pytest.raises(InputError, match=r"label 'response': .*differ only in case.*"
                                         r"\[\['Yes', 'yes'\]\]") as err:
        build_manifest("mydata", _cfg(), cohort / "out4", base_dir=cohort)
    assert err.value.path == str(csv)


def test_ids_that_differ_only_in_case_are_an_error(cohort):
    csv = cohort / "data" / "cohort.csv"
    csv.write_text(csv.read_text().replace("p3,", "P2,"))
    with pytest.raises(InputError, match=r"differ only in case.*: 'p2' / 'P2'"):
        build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)


def test_ids_that_differ_only_in_unicode_form_are_an_error(cohort):
    """An ID with an accent written as one character (NFC, as most tables type it) and as
    a letter plus a combining accent (NFD, as macOS names files) were two subjects."""
    nfc, nfd = "jos\u00e9", "jose\u0301"
    csv = cohort / "data" / "cohort.csv"
    csv.write_text(csv.read_text().replace("p2,", f"{nfc},").replace("p3,", f"{nfd},"),
                   encoding="utf-8")
    with pytest.raises(InputError, match=r"how an accent is encoded") as err:
        build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)
    assert repr(nfc) in str(err.value) and repr(nfd) in str(err.value)


@pytest.mark.parametrize("content, why", [
    (b"", "the file is empty"),
    (b"patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex\n",
     "no data rows under the header"),
    (b"patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex\n"
     b"p1,1,,,,,50,M,extra,fields\n", r"1 row\(s\) with another number of fields than the "
                                       r"header's 8 \(line 2 has 10\)"),
    # a comma forgotten: read as blank cells, the row looked like missing data
    (b"patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex\n"
     b"p1,1,,,,,50,M\np2,0,,,,,61\np3,1,,,,,70,F\n",
     r"1 row\(s\) with another number of fields than the header's 8 \(line 3 has 7\)"),
    # a column named twice: its first copy was read, the second reported as unused
    (b"patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex,age\n"
     b"p1,1,,,,,50,M,51\n", r"the header names column\(s\) \['age'\] more than once"),
    (b"patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex\n"
     b"p\xe9,1,,,,,50,M\n", r"not a readable CSV: .*\(save it as UTF-8\)"),
    # Excel's "Unicode Text" and PowerShell write UTF-16, which polars read as garbage
    ("patient_id,response,age\r\np1,1,50\r\n".encode("utf-16"),
     "the file is UTF-16 .* save it as UTF-8 CSV"),
    ("patient_id,response,age\np1,1,50\n".encode("utf-16-le"), "the file is UTF-16"),
])
def test_an_unreadable_csv_names_the_file(cohort, content, why):
    """polars' errors named no file; a header without rows built a manifest of nobody."""
    csv = cohort / "data" / "cohort.csv"
    csv.write_bytes(content)
    with pytest.raises(InputError, match=rf"cohort\.csv: {why}"):
        build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)


def test_a_csv_path_is_a_path_not_a_pattern(cohort):
    """polars expands [ ] * ? in a path: a config naming cohort[final].csv read the
    cohortf.csv beside it, without a word."""
    data = cohort / "data"
    (data / "cohort.csv").rename(data / "cohort[final].csv")
    (data / "cohortf.csv").write_text("patient_id,response,age\nWRONG,1,99\n")
    manifest = build_manifest("mydata", _cfg(csv="data/cohort[final].csv"), cohort / "out",
                              base_dir=cohort)
    assert "WRONG" not in manifest["subject_id"].to_list()


def test_a_path_that_cannot_be_checked_is_that_subjects_rejection(cohort):
    """A 300-character file name stopped the whole build with a bare ``OSError``, and so
    did "~nosuchuser/..." with a ``RuntimeError``; a symbolic link that loops was "file not
    found"."""
    (cohort / "data" / "loop.nii.gz").symlink_to(cohort / "data" / "loop.nii.gz")
    csv = cohort / "data" / "cohort.csv"
    csv.write_text(csv.read_text().replace("mri/p1.nii.gz,", "loop.nii.gz,", 1)
                   .replace("mri/p2.png", "x" * 300 + ".nii.gz")
                   .replace("mri/p3.NRRD", "~nosuchuser_of_mmpipe/p3.nii.gz"))
    build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)
    qc = {(r["subject_id"], r["modality"]): r for r in read_qc(cohort / "out").iter_rows(named=True)}
    assert qc[("007", "mri")]["reason"] == "a symbolic link to nothing (broken, or a loop)"
    assert qc[("p2", "mri")]["status"] == "rejected"
    assert qc[("p2", "mri")]["reason"].startswith("cannot be read: File name too long")
    assert qc[("p3", "mri")]["status"] == "rejected"
    assert qc[("p3", "mri")]["path"] == "~nosuchuser_of_mmpipe/p3.nii.gz"


def test_a_dicom_folder_whose_series_is_linked_in_is_not_empty(cohort):
    """The check that a DICOM folder holds a file did not go into linked folders: a series
    linked in from another store was rejected as "no file in the folder"."""
    kept = cohort / "store" / "series1"
    kept.mkdir(parents=True)
    (kept / "1.dcm").write_bytes(b"x")
    (cohort / "data" / "ct" / "empty" / "series1").symlink_to(kept, target_is_directory=True)
    df = build_manifest("mydata", _cfg(), cohort / "out", base_dir=cohort)
    assert df.filter(pl.col("subject_id") == "p4")["ct_path"].item() == str(
        cohort / "data" / "ct" / "empty")


def test_a_group_column_keeps_a_patients_subjects_in_one_part(tmp_path):
    """Two visits of one patient, two subjects of the CSV, were split like strangers; the
    group column also keys the splits, not the stage-1 jobs."""
    from mmpipe.bench.prepare import make_split
    from mmpipe.cohorts.benchmark_view import benchmark_view_digest
    from mmpipe.cohorts.manifest_views import modality_view_digest

    rows = [f"v{i},{i % 2},{40 + i},{'MF'[i % 2]},P{i // 2}" for i in range(60)]
    csv = tmp_path / "visits.csv"
    csv.write_text("visit_id,response,age,sex,patient\n" + "\n".join(rows) + "\n")
    cfg = {**_table_cfg(csv), "subject_column": "visit_id", "group_column": "patient"}
    df = build_manifest("visits", cfg, tmp_path / "out", base_dir=tmp_path)
    assert df["split_group"].to_list() == [f"P{i // 2}" for i in range(60)]
    assert read_qc(tmp_path / "out").filter(pl.col("status") == "unused").is_empty()
    for seed in range(4):
        split = make_split(tmp_path / "out", "response", seed, (0.6, 0.1, 0.3),
                           tmp_path / "split.parquet")["split"].to_list()
        assert all(split[2 * p] == split[2 * p + 1] for p in range(30)), seed
    views = (benchmark_view_digest(tmp_path / "out", "response"),
             modality_view_digest(tmp_path / "out", "clinical"))
    csv.write_text("visit_id,response,age,sex,patient\n" + "\n".join(
        f"v{i},{i % 2},{40 + i},{'MF'[i % 2]},Q{i // 3}" for i in range(60)) + "\n")
    build_manifest("visits", cfg, tmp_path / "out", base_dir=tmp_path)
    assert benchmark_view_digest(tmp_path / "out", "response") != views[0]
    assert modality_view_digest(tmp_path / "out", "clinical") == views[1]


def test_a_published_split_that_parts_a_patient_is_kept_and_said_in_the_qc(tmp_path):
    """The cohort's own split putting one patient's visits in train and test was kept as
    given (it is the published one), and only the split job's log said so, while the
    README promised every split kept a patient whole."""
    rows = [f"v{i},{i % 2},{40 + i},{'MF'[i % 2]},P{i // 2},"
            f"{'test' if i in (0, 9) else 'train'}" for i in range(12)]
    csv = tmp_path / "visits.csv"
    csv.write_text("visit_id,response,age,sex,patient,part\n" + "\n".join(rows) + "\n")
    cfg = {**_table_cfg(csv), "subject_column": "visit_id", "group_column": "patient",
           "split": {"column": "part"}}
    build_manifest("visits", cfg, tmp_path / "out", base_dir=tmp_path)
    said = read_qc(tmp_path / "out").filter(pl.col("status") == "groups_across_parts")
    assert said["reason"].to_list() == [
        "2 patient group(s) lie in two parts of the cohort's split, kept as it gives them: "
        "P0 (test/train), P4 (test/train); a patient's subjects in one part were seen in "
        "another (train and test: its test scores are optimistic)"]
    assert said["subject_id"].to_list() == ["*"] and said["modality"].to_list() == ["split"]


def test_group_names_that_differ_only_in_case_stop_the_manifest(tmp_path):
    """A second visit's patient typed "p0" beside "P0" made two groups, and the splits put
    21 of 30 such patients in two parts: the leak the column is there to prevent. As for
    subject IDs, the build stops naming them."""
    rows = [f"v{i},{i % 2},{40 + i},{'MF'[i % 2]},{'Pp'[i % 2]}{i // 2}" for i in range(8)]
    csv = tmp_path / "visits.csv"
    csv.write_text("visit_id,response,age,sex,patient\n" + "\n".join(rows) + "\n")
    cfg = {**_table_cfg(csv), "subject_column": "visit_id", "group_column": "patient"}
    with pytest.raises(InputError, match=r"split group name\(s\) that differ only in case.*"
                                         r"'P0' / 'p0'; 'P1' / 'p1'"):
        build_manifest("visits", cfg, tmp_path / "out", base_dir=tmp_path)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_an_image_folder_that_cannot_be_listed_is_that_subjects_rejection(tmp_path,
                                                                           monkeypatch):
    """The image reader names a folder it may not list as an InputError, which the
    adapter's check of the paths let through: the whole manifest stopped."""
    from mmpipe.cohorts.csv_adapter import resolve_paths
    from tests.conftest import deny_listing

    for name in ("ok", "sub"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").touch()
    deny_listing(monkeypatch, lambda folder: folder.name == "sub")
    frame = pl.DataFrame({"subject_id": ["A", "B"], "img": ["ok", "sub"]})
    paths, qc = resolve_paths(frame, "img", "image", "img", tmp_path)
    assert paths == [str(tmp_path / "ok"), None]
    assert [(r.subject_id, r.status, r.reason) for r in qc] == [
        ("B", "rejected", "cannot list the folder: Permission denied")]


def test_a_file_copied_in_after_the_build_changes_the_listing(cohort):
    """The manifest's inputs are the CSV and its split files: a path rejected as "file
    not found" and copied in later changed neither, and the subject stayed rejected. The
    listing of the paths that name nothing is a parameter of the manifest job."""
    from mmpipe.cohorts import download_listing

    before = download_listing(_cfg(), cohort)
    assert before is not None  # p2's ct/missing names nothing
    (cohort / "data" / "ct" / "missing").mkdir()
    (cohort / "data" / "ct" / "missing" / "1.dcm").write_bytes(b"x")
    found = download_listing(_cfg(), cohort)
    assert found != before
    (cohort / "data" / "mri" / "p3.NRRD").unlink()
    assert download_listing(_cfg(), cohort) not in (None, before, found)
    # every path taken: no listing, the parameters a complete cohort always had
    csv = cohort / "data" / "cohort.csv"
    csv.write_text("patient_id,response,ct_dir,mri_file,slide_path,feature_file,age,sex\n"
                   "007,1,ct/p1,mri/p1.nii.gz,,,61,F\n")
    assert download_listing(_cfg(), cohort) is None


def test_a_folder_filled_after_the_build_changes_the_listing(cohort):
    """A DICOM folder the adapter rejected as empty, filled later, changed neither the
    CSV nor the listing of paths that name nothing: the subject stayed rejected."""
    from mmpipe.cohorts import download_listing

    (cohort / "data" / "ct" / "missing").mkdir()
    empty = download_listing(_cfg(), cohort)   # p2's folder is there, and empty
    (cohort / "data" / "ct" / "missing" / "1.dcm").write_bytes(b"x")
    assert download_listing(_cfg(), cohort) != empty


def test_the_groups_and_the_subject_id_are_no_label_and_no_field():
    """group_column naming the label put each class in one part (train all one class, test
    the other, val empty), with warnings counting groups as subjects; the subject ID as a
    label made a class a subject, as a field an input. Each passed check-config."""
    from mmpipe.cohorts.csv_adapter import check_config

    check_config(_cfg(group_column="patient"))
    with pytest.raises(ConfigError, match="group_column 'response' is a label: the split keeps"):
        check_config(_cfg(group_column="response"))
    with pytest.raises(ConfigError, match="subject_column 'patient_id' is also a label"):
        check_config(_cfg(labels=["response", "patient_id"]))
    cfg = _cfg()
    cfg["modalities"]["clinical"]["fields"] = ["age", "patient_id"]
    with pytest.raises(ConfigError, match="subject_column 'patient_id' is also a table field"):
        check_config(cfg)
