"""The MMIST-ccRCC adapter, on the real release (../shared/data) and on a tiny fake one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, modality_presence, read_manifest, read_qc

# the release's input fields, as config.yaml names them
CLINICAL_FIELDS = ("gender", "age_diag", "grade", "cancer_history", "ajcc_path_tumor_pt",
                   "ajcc_path_nodes_pn", "ajcc_clin_metastasis_cm", "ajcc_path_metastasis_pm",
                   "ajcc_path_tumor_stage", "race_Asian", "race_Black or African American",
                   "race_Hispanic or Latino", "race_White", "race_other")
GENOMIC_FIELDS = ("VHL_mutation", "PBMR1_mutation", "TTN_mutation")

FEATURES = {"ct": {"kind": "features", "encoders": ["precomputed"]},
            "mri": {"kind": "features", "encoders": ["precomputed"]},
            "wsi": {"kind": "features", "encoders": ["precomputed"]}}


def _cfg(root, tables=True):
    mods = dict(FEATURES)
    if tables:
        mods["clinical"] = {"kind": "table", "encoders": ["tabular"],
                            "fields": list(CLINICAL_FIELDS)}
        mods["genomics"] = {"kind": "table", "encoders": ["tabular"],
                            "fields": list(GENOMIC_FIELDS)}
    return {"adapter": "mmist_ccrcc", "root": str(root), "labels": ["vital_status_12"],
            "modalities": mods}


def test_real_release_counts(shared_data, tmp_path):
    root = shared_data / "mmist-ccrcc"
    if not (root / "clinical+genomic_split.csv").exists():
        pytest.skip(f"MMIST-ccRCC not found at {root}")
    df = build_manifest("mmist_ccrcc", _cfg(root), tmp_path)
    assert df.height == 618
    df, meta = read_manifest(tmp_path)
    present = modality_presence(df, meta).select(pl.exclude("subject_id")).sum().row(0,
                                                                                    named=True)
    assert present == {"ct": 239, "mri": 52, "wsi": 618, "clinical": 618, "genomics": 462}
    counts = dict(df["vital_status_12"].value_counts().iter_rows())
    assert counts == {1: 543, 0: 75}
    assert dict(df["authors_split"].value_counts().iter_rows()) == {"train": 497, "test": 121}
    assert meta["extra_columns"] == ["authors_split"]
    assert meta["modalities"]["genomics"]["fields"] == list(GENOMIC_FIELDS)
    assert meta["modalities"]["clinical"]["fields"] == list(CLINICAL_FIELDS)
    # natural missingness of the README: none 347, CT only 219, MRI only 32, both 20
    pres = modality_presence(df, meta)
    pattern = pres.group_by("ct", "mri").len()
    assert dict(((r["ct"], r["mri"]), r["len"]) for r in pattern.iter_rows(named=True)) == {
        (False, False): 347, (True, False): 219, (False, True): 32, (True, True): 20}
    # -1 means unknown: never left in a field
    for f in (*CLINICAL_FIELDS, *GENOMIC_FIELDS):
        assert (df[f] == -1).sum() == 0, f
    assert df["ajcc_path_tumor_stage"].null_count() == 18
    assert df["age_diag"].dtype == pl.Int64 and df["age_diag"].null_count() == 17
    # the mapping picks the chosen series: C3L-00610's chosen CT is its first listed row
    ct = df.filter(pl.col("subject_id") == "C3L-00610")["ct_path"].item()
    assert ct.endswith("Features/CT Features/C3L-00610-1.npz")
    assert np.load(ct)["arr_0"].shape == (1, 1, 512, 1)
    wsi = np.load(df["wsi_path"][0])["arr_0"]
    assert wsi.shape == (1, 1024)
    assert read_qc(tmp_path).filter(pl.col("status") == "rejected").height == 0


@pytest.fixture
def fake_root(tmp_path):
    """Three patients; B's chosen CT is its 2nd listed series (spelled with a trailing
    space), C's CT file is missing, A's chosen MRI is not listed, Z is not in the cohort."""
    root = tmp_path / "mmist"
    for sub in ("CT Features", "MRI Features", "WSI Features"):
        (root / "Features" / sub).mkdir(parents=True)
    (root / "clinical+genomic_split.csv").write_text(
        "case_id,gender,age_diag,grade,vital_status_12,VHL_mutation,Split\n"
        "A,1,6.0,-1,1,-1,train\n"
        "B,0,,2,0,1,test\n"
        "C,-1,3.0,3,,0,train\n")
    (root / "CT_patientfiles.csv").write_text(
        "case_id,chosen_exam\nB,/r/B/ex2 \nC,/r/C/ex1\nZ,/r/Z/ex1\n")
    (root / "patients_with_labels_CT_final.csv").write_text(
        "case_id,File\nB,/r/B/ex1\nB,/r/B/ex2\nB,/r/B/ex3\nC,/r/C/ex1\n")
    (root / "MRI_patientfiles.csv").write_text("case_id,chosen_exam\nA,/r/A/mr9\n")
    (root / "patients_with_labels_MR_final.csv").write_text("case_id,File\nA,/r/A/mr1\n")
    (root / "WSI_patientfiles.csv").write_text(
        "case_id,chosen_exam\nA,A-1.npz\nB,B-7.npz\nC,C-1.npz\n")
    for name in ("CT Features/B-2.npz", "CT Features/B-1.npz", "CT Features/B-3.npz",
                 "WSI Features/A-1.npz",
                 "WSI Features/B-7.npz", "WSI Features/C-1.npz"):
        np.savez(root / "Features" / name, arr_0=np.zeros((1, 4), np.float32))
    return root


def test_mapping_rejections_and_unknown_codes(fake_root, tmp_path, caplog):
    cfg = _cfg(fake_root, tables=False)
    cfg["modalities"]["clinical"] = {"kind": "table", "encoders": ["tabular"],
                                     "fields": ["gender", "age_diag", "grade"]}
    cfg["modalities"]["genomics"] = {"kind": "table", "encoders": ["tabular"],
                                     "fields": ["VHL_mutation"]}
    df = build_manifest("fake", cfg, tmp_path / "out")
    rows = {r["subject_id"]: r for r in df.iter_rows(named=True)}
    assert rows["B"]["ct_path"].endswith("CT Features/B-2.npz")  # k = 2nd row of B
    assert rows["C"]["ct_path"] is None
    assert rows["A"]["grade"] is None and rows["A"]["VHL_mutation"] is None
    assert rows["C"]["gender"] is None and rows["C"]["vital_status_12"] is None
    assert rows["A"]["age_diag"] == 6 and rows["B"]["age_diag"] is None
    qc = {(r["subject_id"], r["modality"]): r for r in
          read_qc(tmp_path / "out").iter_rows(named=True)}
    assert qc[("C", "ct")]["status"] == "rejected"
    assert qc[("C", "ct")]["reason"] == "mapped feature file not found"
    assert qc[("C", "ct")]["path"].endswith("CT Features/C-1.npz")
    assert qc[("A", "mri")]["status"] == "rejected"
    assert "chosen_exam not listed" in qc[("A", "mri")]["reason"]
    assert qc[("A", "ct")]["status"] == "absent"
    assert qc[("A", "genomics")]["status"] == "absent"
    assert qc[("C", "label")]["reason"] == "label missing"
    assert "Z" not in rows and "not in clinical+genomic_split.csv" in caplog.text
    assert "1 chosen_exam value(s) matched File only after stripping" in caplog.text


def _clinical_rows(root, tmp_path, rows: str):
    """The manifest, and its rows by subject, of a clinical table of these data rows."""
    (root / "clinical+genomic_split.csv").write_text(
        "case_id,gender,age_diag,grade,vital_status_12,VHL_mutation,Split\n" + rows)
    cfg = _cfg(root, tables=False)
    cfg["modalities"]["clinical"] = {"kind": "table", "encoders": ["tabular"],
                                     "fields": ["gender", "age_diag", "grade"]}
    df = build_manifest("fake", cfg, tmp_path / "out")
    return df, {r["subject_id"]: r for r in df.iter_rows(named=True)}


def test_unknown_is_unknown_in_a_column_read_as_text(fake_root, tmp_path):
    """A table re-saved with "NA" in a cell makes its column text: -1 stayed a value
    there (an age of -1, a third class of the label)."""
    df, rows = _clinical_rows(fake_root, tmp_path, "A,1,6.0,NA,1,-1,train\n"
                                                   "B,0,-1,2,NA,1,test\n"
                                                   "C,-1,3.0,3,-1 ,0,train\n")
    assert rows["B"]["age_diag"] is None and rows["A"]["grade"] is None
    assert rows["B"]["vital_status_12"] is None and rows["C"]["vital_status_12"] is None
    assert df["vital_status_12"].drop_nulls().to_list() == [1]  # A's: no class -1


@pytest.mark.parametrize("c, kept", [("0", [0, 1]), ("NA", [1])])  # NA: a text column
def test_a_label_value_outside_the_releases_codes_is_blanked_and_said(fake_root, tmp_path, c,
                                                                      kept):
    """A 2 in the binary vital_status_12 made the task three classes, with no QC row."""
    df, rows = _clinical_rows(fake_root, tmp_path, f"A,1,6.0,3,1,-1,train\n"
                                                   f"B,0,2.0,2,2,1,test\n"
                                                   f"C,1,3.0,3,{c},0,train\n")
    assert rows["B"]["vital_status_12"] is None
    assert sorted(df["vital_status_12"].drop_nulls().to_list()) == kept
    said = read_qc(tmp_path / "out").filter(
        (pl.col("subject_id") == "B") & (pl.col("modality") == "label"))
    assert sorted(said["reason"]) == [
        "label missing", "vital_status_12 value 2 is not one of the release's codes 0 "
        "(died), 1 (alive) or -1 (unknown): set to blank"]
    assert set(said["status"]) == {"absent"}


def test_a_nan_in_a_column_of_codes_is_a_blank(fake_root, tmp_path):
    """pandas writes a blank as NaN: NaN passed the integral-codes check (NaN equals NaN
    in polars) and the cast failed with a polars error naming no file."""
    _, rows = _clinical_rows(fake_root, tmp_path, "A,1,6.0,NaN,1,-1,train\n"
                                                  "B,0,NaN,2.0,0,1,test\n"
                                                  "C,-1,3.0,3,1,0,train\n")
    assert rows["A"]["grade"] is None and rows["B"]["age_diag"] is None
    assert rows["C"]["grade"] == 3 and rows["A"]["age_diag"] == 6


def test_unknown_modality_and_missing_root(fake_root, tmp_path):
    from mmpipe.errors import ConfigError, InputError

    cfg = _cfg(fake_root, tables=False)
    cfg["modalities"]["pet"] = {"kind": "features", "encoders": ["precomputed"]}
    with pytest.raises(ConfigError, match=r"no modality 'pet'.*\['ct', 'mri', 'wsi'\]"):
        build_manifest("fake", cfg, tmp_path / "out")
    with pytest.raises(InputError, match="root folder not found"):
        build_manifest("fake", _cfg(tmp_path / "nowhere"), tmp_path / "out")


def test_a_spaced_case_id_or_a_blank_exam_is_that_patients_not_the_cohorts(fake_root, tmp_path):
    """``B `` in the clinical table stopped the whole build with a bare
    ``adapter QC record for unknown subject/modality ('B ', 'ct')``; a WSI listed with a
    blank chosen_exam was rejected with no reason."""
    clinical = fake_root / "clinical+genomic_split.csv"
    clinical.write_text(clinical.read_text().replace("\nB,", "\nB ,"))
    wsi = fake_root / "WSI_patientfiles.csv"
    wsi.write_text(wsi.read_text().replace("C,C-1.npz", "C,"))
    ct = fake_root / "CT_patientfiles.csv"
    ct.write_text(ct.read_text().replace("\nB,", "\n B,"))
    df = build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    rows = {r["subject_id"]: r for r in df.iter_rows(named=True)}
    assert rows["B"]["ct_path"].endswith("CT Features/B-2.npz")
    assert rows["B"]["wsi_path"].endswith("WSI Features/B-7.npz")
    qc = {(r["subject_id"], r["modality"]): r for r in
          read_qc(tmp_path / "out").iter_rows(named=True)}
    assert (qc[("C", "wsi")]["status"], qc[("C", "wsi")]["reason"]) == (
        "absent", "no wsi exam for this patient")


def test_an_unreadable_table_names_its_file(fake_root, tmp_path):
    from mmpipe.errors import InputError

    clinical = fake_root / "clinical+genomic_split.csv"
    clinical.write_bytes(clinical.read_bytes().replace(b"A,1,", b"\xc4,1,"))
    with pytest.raises(InputError, match=r"clinical\+genomic_split\.csv: not a readable "
                                         r"CSV: .*utf-8.*\(save it as UTF-8\)"):
        build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")


def test_a_chosen_series_listed_twice_names_the_patient_and_the_series(fake_root, tmp_path):
    from mmpipe.errors import InputError

    listing = fake_root / "patients_with_labels_CT_final.csv"
    listing.write_text(listing.read_text() + "C,/r/C/ex1\n")
    with pytest.raises(InputError, match="lists the same series twice in File: C /r/C/ex1"):
        build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")


def test_a_chosen_series_matching_two_after_stripping_whitespace_is_refused(fake_root,
                                                                           tmp_path):
    """B's ``/r/B/ex2 `` matched ``/r/B/ex2`` and ``/r/B/ex2  `` once stripped: the last
    was taken, one feature file of two chosen without a word."""
    from mmpipe.errors import InputError

    listing = fake_root / "patients_with_labels_CT_final.csv"
    listing.write_text(listing.read_text().replace("B,/r/B/ex3\n", "B,/r/B/ex3\nB,/r/B/ex2  \n"))
    with pytest.raises(InputError, match="matches two File rows once whitespace is stripped: "
                                         "B '/r/B/ex2'"):
        build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")


def test_chosen_slides_of_normal_tissue_are_counted(fake_root, tmp_path, caplog):
    """The release maps a quarter of its TCGA patients to a normal-tissue slide (sample
    type 11); nothing said so."""
    a, b = "TCGA-A3-3316", "TCGA-B0-4700"  # TCGA patients, whose slides say the sample type
    for table in fake_root.glob("*.csv"):  # A and B renamed so
        table.write_text(table.read_text().replace("\nA,", f"\n{a},")
                         .replace("\nB,", f"\n{b},"))
    for k in (1, 2, 3):
        ct = fake_root / "Features" / "CT Features"
        (ct / f"B-{k}.npz").rename(ct / f"{b}-{k}.npz")
    for name in (f"{a}-11A-01-BS1.npz", f"{b}-01A-01-BS1.npz"):
        np.savez(fake_root / "Features" / "WSI Features" / name, arr_0=np.zeros((1, 4)))
    (fake_root / "WSI_patientfiles.csv").write_text(
        f"case_id,chosen_exam\n{a},{a}-11A-01-BS1.npz\n{b},{b}-01A-01-BS1.npz\n"
        "C,C-1.npz\n")
    with caplog.at_level("WARNING", logger="mmpipe.cohorts.mmist"):
        build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    assert "wsi: 1 chosen slide(s) are of normal tissue" in caplog.text
    # named where a reader of the cohort's QC looks, not only in the log
    (row,) = read_qc(tmp_path / "out").filter(pl.col("status") == "normal_tissue").iter_rows(
        named=True)
    assert row["subject_id"] == "*" and row["modality"] == "wsi"
    assert row["reason"].endswith(f"as these patients' slides: {a}")
    assert row["path"].endswith("WSI_patientfiles.csv")
    # a CT or MRI file's series number (-10.npz) is no sample type
    from mmpipe.cohorts.mmist import _TCGA_NORMAL

    assert not _TCGA_NORMAL.match("TCGA-CW-5585-10.npz")
    assert _TCGA_NORMAL.match("TCGA-A3-3316-11A-01-BS1.npz")


@pytest.mark.parametrize("exam", ["/tmp/outside.npz", "../WSI Features/A-1.npz", "sub/A-1.npz"])
def test_a_slide_feature_named_by_a_path_is_rejected_not_read(fake_root, tmp_path, exam):
    """chosen_exam names a file in Features/WSI Features: an absolute path replaced the
    folder (Path / "/tmp/x"), and the file outside the download was read as A's."""
    (fake_root / "WSI_patientfiles.csv").write_text(
        f"case_id,chosen_exam\nA,{exam}\nB, B-7.npz\nC,C-1.npz\n")
    df = build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    rows = {r["subject_id"]: r for r in df.iter_rows(named=True)}
    assert "A" not in rows  # no other modality left: out of the manifest
    # a name spaced in the table is the file it names, as a CT's is
    assert rows["B"]["wsi_path"].endswith("WSI Features/B-7.npz")
    qc = read_qc(tmp_path / "out").filter((pl.col("subject_id") == "A")
                                          & (pl.col("modality") == "wsi"))
    assert qc["reason"].item() == (f"chosen_exam {exam!r} is not a file name in "
                                   "Features/WSI Features")


def test_the_release_moved_with_its_times_keeps_every_modalitys_view(fake_root, tmp_path):
    """The views made paths relative to the manifest's source, which for this adapter (and
    six others) is a table file, not the dataset's folder: a download moved with its times
    reran every stage-1 job of the cohort."""
    import shutil

    from mmpipe.cohorts.manifest_views import modality_view_digest

    def views(root, out):
        build_manifest("fake", _cfg(root, tables=False), out)
        return {m: modality_view_digest(out, m) for m in FEATURES}

    before = views(fake_root, tmp_path / "out1")
    moved = tmp_path / "elsewhere" / "mmist"
    shutil.copytree(fake_root, moved)  # copy2: the files' times come with them
    assert views(moved, tmp_path / "out2") == before


def test_a_patient_spelt_otherwise_in_a_patient_file_is_a_qc_row(fake_root, tmp_path, caplog):
    """B's CT row written 'b': B read "no ct exam" and the orphan row was only in the log,
    beside a warning that "0" values matched after stripping. And B's own row said "no
    ct exam for this patient", missing by nature to the benchmark: it is a rejection
    naming the file and the spelling."""
    (fake_root / "CT_patientfiles.csv").write_text(
        "case_id,chosen_exam\nb,/r/B/ex2\nC,/r/C/ex1\n")
    build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    qc = read_qc(tmp_path / "out")
    skipped = qc.filter((pl.col("subject_id") == "*") & (pl.col("modality") == "ct"))
    assert skipped["status"].to_list() == ["skipped"]
    assert skipped["reason"].item() == ("CT_patientfiles.csv lists patient 'b', who is not in "
                                        "clinical+genomic_split.csv: its exam is used for nobody")
    own = qc.filter((pl.col("subject_id") == "B") & (pl.col("modality") == "ct"))
    assert own["status"].to_list() == ["rejected"]
    assert own["reason"].item() == ("CT_patientfiles.csv lists this patient's exam under 'b', "
                                    "not 'B': correct the ID there")
    assert own["path"].item() == str(fake_root / "CT_patientfiles.csv")
    assert "matched File only after stripping" not in caplog.text
    # a row of that spelling that lists no exam gives the patient none: missing by nature
    (fake_root / "CT_patientfiles.csv").write_text("case_id,chosen_exam\nb,\nC,/r/C/ex1\n")
    build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out2")
    own = read_qc(tmp_path / "out2").filter((pl.col("subject_id") == "B")
                                            & (pl.col("modality") == "ct"))
    assert own.select("status", "reason").rows() == [("absent", "no ct exam for this patient")]


def test_one_file_under_two_patients_or_a_name_too_long_is_that_patients(fake_root, tmp_path):
    """WSI_patientfiles.csv naming A's slide for B too gave both patients one file, under
    two labels and possibly on both sides of a split (then both were rejected as sharing
    it; now B is, as the file is named for A); a name too long for the filesystem stopped
    the whole cohort with ENAMETOOLONG."""
    (fake_root / "WSI_patientfiles.csv").write_text(
        f"case_id,chosen_exam\nA,A-1.npz\nB,A-1.npz\nC,C-{'C' * 300}.npz\n")
    df = build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    rows = {r["subject_id"]: r for r in df.iter_rows(named=True)}
    assert rows["A"]["wsi_path"].endswith("A-1.npz") and rows["B"]["wsi_path"] is None
    qc = {(r["subject_id"], r["modality"]): r for r in
          read_qc(tmp_path / "out").iter_rows(named=True)}
    assert qc[("B", "wsi")]["reason"] == ("chosen_exam 'A-1.npz' is not this patient's: its "
                                          "name does not start with B")
    assert qc[("C", "wsi")]["status"] == "rejected"
    assert "cannot be read: File name too long" in qc[("C", "wsi")]["reason"]


def test_a_slide_of_another_patient_is_rejected_naming_it(fake_root, tmp_path):
    """B given one of A's slides, A keeping its own: B read A's slide as its own, present,
    with no QC row (only the same file under two patients was caught)."""
    np.savez(fake_root / "Features" / "WSI Features" / "A-9.npz", arr_0=np.zeros((1, 4)))
    (fake_root / "WSI_patientfiles.csv").write_text(
        "case_id,chosen_exam\nA,A-1.npz\nB,A-9.npz\nC,C-1.npz\n")
    df = build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    rows = {r["subject_id"]: r for r in df.iter_rows(named=True)}
    assert rows["B"]["wsi_path"] is None and rows["A"]["wsi_path"].endswith("A-1.npz")
    qc = {(r["subject_id"], r["modality"]): r for r in
          read_qc(tmp_path / "out").iter_rows(named=True)}
    assert qc[("B", "wsi")]["status"] == "rejected"
    assert qc[("B", "wsi")]["reason"] == ("chosen_exam 'A-9.npz' is not this patient's: its "
                                          "name does not start with B")


def test_a_features_folder_of_another_count_than_the_series_table_is_said(fake_root,
                                                                         tmp_path):
    """<case>-<k>.npz is the k-th row of the case's series: B's folder holding four files
    for its three rows (features of another release) read B-2.npz as its chosen series,
    with nothing said. A folder kept to the chosen series' files holds the right one."""
    ct = fake_root / "Features" / "CT Features"
    np.savez(ct / "B-4.npz", arr_0=np.zeros((1, 4), np.float32))
    df = build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    rows = {r["subject_id"]: r for r in df.iter_rows(named=True)}
    assert rows["B"]["ct_path"] is None
    qc = {(r["subject_id"], r["modality"]): r for r in
          read_qc(tmp_path / "out").iter_rows(named=True)}
    assert qc[("B", "ct")]["status"] == "rejected"
    assert qc[("B", "ct")]["reason"] == (
        "Features/CT Features holds 4 feature file(s) of this patient and "
        "patients_with_labels_CT_final.csv 3 row(s) (beyond them: B-4.npz): the file of its "
        "chosen series, named for its row, cannot be told")
    for k in (1, 3, 4):
        (ct / f"B-{k}.npz").unlink()
    df = build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "pruned")
    assert df.filter(pl.col("subject_id") == "B")["ct_path"].item().endswith("B-2.npz")


def test_stray_files_of_a_series_folder_are_named(fake_root, tmp_path):
    """A note, a Finder file or a case spelt otherwise in CT Features left no trace."""
    ct = fake_root / "Features" / "CT Features"
    for name in (".DS_Store", "notes.txt", "b-1.npz", "Z-1.npz"):
        (ct / name).write_bytes(b"x")
    build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    skipped = read_qc(tmp_path / "out").filter(
        (pl.col("status") == "skipped") & (pl.col("modality") == "ct")
        & pl.col("reason").str.starts_with("not a feature file"))
    # Z is a case of no series row here
    assert sorted(Path(p).name for p in skipped["path"]) == [".DS_Store", "Z-1.npz",
                                                             "b-1.npz", "notes.txt"]
    assert set(skipped["reason"]) == {
        "not a feature file <case>-<k>.npz of a case patients_with_labels_CT_final.csv lists"}
    assert set(skipped["subject_id"]) == {"*"}


def test_a_slide_named_for_the_patient_alone_is_the_patients(fake_root, tmp_path):
    """C3L-00004.npz, one file a patient, was refused as not starting with C3L-00004."""
    np.savez(fake_root / "Features" / "WSI Features" / "B.npz", arr_0=np.zeros((1, 4)))
    (fake_root / "WSI_patientfiles.csv").write_text(
        "case_id,chosen_exam\nA,A-1.npz\nB,B.npz\nC,C-1.npz\n")
    df = build_manifest("fake", _cfg(fake_root, tables=False), tmp_path / "out")
    assert df.filter(pl.col("subject_id") == "B")["wsi_path"].item().endswith("/B.npz")
