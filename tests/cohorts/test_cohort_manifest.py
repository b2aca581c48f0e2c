"""The manifest contract: validation, QC derivation, atomic writing, reading back."""

from __future__ import annotations

import json
import logging

import polars as pl
import pytest

from mmpipe.cohorts import ADAPTERS, build_manifest
from mmpipe.cohorts.benchmark_view import benchmark_view_digest
from mmpipe.cohorts.manifest import (
    AdapterOutput,
    ModalitySpec,
    QCRecord,
    UserSplit,
    finalize_manifest,
    modality_specs,
)
from mmpipe.cohorts.manifest_files import (
    ALL_SUBJECTS,
    NON_NUMERIC,
    modality_presence,
    read_manifest,
    read_qc,
    write_manifest,
)
from mmpipe.cohorts.manifest_views import modality_view_digest
from mmpipe.cohorts.numbers import parse_number
from mmpipe.errors import ConfigError, InputError
from mmpipe.fsutil import write_parquet

SPECS = {
    "ct": ModalitySpec("ct", "dicom"),
    "wsi": ModalitySpec("wsi", "slide"),
    "clinical": ModalitySpec("clinical", "table", ("age", "sex")),
}


def _output(rows: list[dict], qc: list[QCRecord] | None = None, **kw) -> AdapterOutput:
    schema = {"subject_id": pl.Utf8, "y": pl.Int64, "ct_path": pl.Utf8, "wsi_path": pl.Utf8,
              "age": pl.Int64, "sex": pl.Utf8}
    return AdapterOutput(frame=pl.DataFrame(rows, schema=schema), modalities=SPECS,
                         labels=["y"], qc=qc or [], source="cohort.csv", **kw)


def _row(sid, y=1, ct=None, wsi=None, age=None, sex=None):
    return {"subject_id": sid, "y": y, "ct_path": ct, "wsi_path": wsi, "age": age, "sex": sex}


def test_qc_has_one_row_per_subject_and_modality():
    out = _output(
        [_row("a", ct="/x/a", age=50), _row("b", wsi="/x/b.svs"), _row("c", sex="F")],
        qc=[QCRecord("b", "ct", "rejected", "file not found", "/x/missing")],
    )
    m = finalize_manifest("toy", "csv", out)
    qc = m.qc
    assert qc.height == 9
    assert qc.select("subject_id", "modality").is_unique().all()
    status = {(r["subject_id"], r["modality"]): r["status"] for r in qc.iter_rows(named=True)}
    assert status[("a", "ct")] == "present" and status[("a", "wsi")] == "absent"
    assert status[("b", "ct")] == "rejected" and status[("b", "clinical")] == "absent"
    assert status[("c", "clinical")] == "present"
    rejected = qc.filter(pl.col("status") == "rejected").row(0, named=True)
    assert rejected["reason"] == "file not found" and rejected["path"] == "/x/missing"
    present = qc.filter((pl.col("subject_id") == "a") & (pl.col("modality") == "ct"))
    assert present["reason"].item() == "" and present["path"].item() == "/x/a"
    assert m.meta["counts"]["ct"] == {"present": 1, "absent": 1, "rejected": 1}


def test_duplicate_subject_ids_are_an_error_naming_them():
    out = _output([_row("a", age=1), _row("b", age=2), _row("a", age=3), _row("b", age=4)])
    with pytest.raises(InputError, match=r"duplicate subject_id.*'a' x2.*'b' x2") as err:
        finalize_manifest("toy", "csv", out)
    assert err.value.path == "cohort.csv"


@pytest.mark.parametrize("bad", [None, "", "   "])
def test_empty_subject_id_is_an_error_naming_the_row(bad):
    out = _output([_row("a", age=1), _row(bad, age=2)])
    with pytest.raises(InputError, match=r"without a subject_id: data row\(s\) 2 "):
        finalize_manifest("toy", "csv", out)


def test_subject_without_any_modality_is_excluded_and_recorded(caplog):
    out = _output([_row("a", age=1), _row("ghost")],
                  qc=[QCRecord("ghost", "wsi", "rejected", "unexpected extension", "/g.png")])
    with caplog.at_level(logging.WARNING):
        m = finalize_manifest("toy", "csv", out)
    assert m.frame["subject_id"].to_list() == ["a"]
    assert m.meta["n_subjects"] == 1 and m.meta["n_excluded"] == 1
    excl = m.qc.filter(pl.col("modality") == "*")
    assert excl.rows() == [("ghost", "*", "adapter", "excluded", "no modality available", None)]
    # the reasons per modality stay, so one can see why nothing was left
    assert m.qc.filter(pl.col("subject_id") == "ghost").height == 4
    assert "ghost" in caplog.text and "no modality available" in caplog.text
    # counts describe the manifest, and the rejections of the subjects excluded apart (the
    # warning had counted none of those)
    assert m.meta["counts"]["wsi"] == {"present": 0, "absent": 1, "rejected": 0,
                                       "rejected_of_excluded": 1}
    assert ("1 subject(s) with wsi rejected, 1 of them excluded for want of any other "
            "modality") in caplog.text


def test_missing_label_is_kept_with_a_qc_row_and_a_warning(caplog):
    out = _output([_row("a", y=None, age=1), _row("b", y=0, age=2)])
    with caplog.at_level(logging.WARNING):
        m = finalize_manifest("toy", "csv", out)
    assert m.frame.filter(pl.col("subject_id") == "a")["y"].item() is None
    lab = m.qc.filter(pl.col("modality") == "label")
    assert lab.rows() == [("a", "label", "adapter", "absent", "label missing", None)]
    assert m.meta["n_label_missing"] == 1
    assert "missing label" in caplog.text and "a" in caplog.text


def test_empty_path_string_is_absent_not_present():
    m = finalize_manifest("toy", "csv", _output([_row("a", ct="", age=1)]))
    assert m.frame["ct_path"].item() is None
    assert m.qc.filter(pl.col("modality") == "ct")["status"].item() == "absent"


def test_column_order_and_name_clash():
    m = finalize_manifest("toy", "csv", _output([_row("a", age=1)]))
    assert m.frame.columns == ["subject_id", "y", "ct_path", "wsi_path", "age", "sex"]
    clash = _output([_row("a", age=1)])
    clash.modalities = {**SPECS, "tab": ModalitySpec("tab", "table", ("ct_path",))}
    with pytest.raises(ConfigError, match="ct_path"):
        finalize_manifest("toy", "csv", clash)


def test_adapter_qc_that_contradicts_the_path_is_a_bug():
    out = _output([_row("a", ct="/x", age=1)], qc=[QCRecord("a", "ct", "absent", "nope")])
    with pytest.raises(ValueError, match="gave a path"):
        finalize_manifest("toy", "csv", out)


def test_modality_specs_need_fields_for_tables_and_known_kinds():
    with pytest.raises(ConfigError, match="needs 'fields'"):
        modality_specs({"modalities": {"clin": {"kind": "table"}}})
    with pytest.raises(ConfigError, match="unknown kind"):
        modality_specs({"modalities": {"x": {"kind": "video"}}})
    specs = modality_specs({"modalities": {"clin": {"kind": "table", "fields": ["a", "b"]}}})
    assert specs["clin"].fields == ("a", "b")


def test_write_read_roundtrip_and_presence(tmp_path):
    out = _output([_row("a", ct="/x/a", age=50), _row("b", wsi="/x/b.svs", sex="M")],
                  extra_columns=[])
    m = finalize_manifest("toy", "csv", out)
    write_manifest(m, tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "adapter.parquet", "manifest.json", "manifest.parquet"]
    df, meta = read_manifest(tmp_path)
    assert df.equals(m.frame)
    assert meta["modalities"]["clinical"] == {"kind": "table", "fields": ["age", "sex"],
                                              "non_numeric": "blank"}
    assert meta["modalities"]["ct"] == {"kind": "dicom", "path_column": "ct_path"}
    assert read_qc(tmp_path).equals(m.qc)
    pres = modality_presence(df, meta)
    assert pres.columns == ["subject_id", "ct", "wsi", "clinical"]
    assert pres.rows() == [("a", True, False, True), ("b", False, True, True)]


def test_read_manifest_detects_files_from_different_builds(tmp_path):
    m = finalize_manifest("toy", "csv", _output([_row("a", age=1), _row("b", age=2)]))
    write_manifest(m, tmp_path)
    meta = json.loads((tmp_path / "manifest.json").read_text())
    meta["n_subjects"] = 3
    (tmp_path / "manifest.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="two different builds"):
        read_manifest(tmp_path)
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nowhere")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "m.parquet"
    write_parquet(pl.DataFrame({"a": [1]}), target)

    def explode(self, path, *a, **k):
        with open(path, "wb") as fh:
            fh.write(b"PAR1 half")  # a killed writer leaves a truncated temporary file
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", explode)
    with pytest.raises(KeyboardInterrupt):
        write_parquet(pl.DataFrame({"a": [2]}), target)
    monkeypatch.undo()
    assert pl.read_parquet(target)["a"].to_list() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_build_manifest_rejects_an_unknown_adapter(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown adapter 'nope'.*csv.*demo.*mmist_ccrcc"):
        build_manifest("x", {"adapter": "nope"}, tmp_path)
    assert set(ADAPTERS) == {"demo", "mmist_ccrcc", "csv", "ixi", "brats", "breakhis", "bcnb",
                            "adni", "mmist_ccrcc_raw"}


# -- table values: blanks, and texts in a numeric field -------------------------------------

def _table_output(ages: list, sexes: list | None = None, non_numeric: str = "blank",
                  age_dtype=pl.Utf8, categorical: tuple[str, ...] = ()) -> AdapterOutput:
    n = len(ages)
    frame = pl.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "y": [1] * n,
                          "age": pl.Series(ages, dtype=age_dtype),
                          "sex": pl.Series(sexes or ["F"] * n, dtype=pl.Utf8)})
    spec = ModalitySpec("clinical", "table", ("age", "sex"), non_numeric=non_numeric,
                        categorical=categorical)
    return AdapterOutput(frame=frame, modalities={"clinical": spec}, labels=["y"],
                         source="cohort.csv")


@pytest.mark.parametrize(("text", "value"), [
    ("45", 45), (" 45 ", 45), ("+7", 7), ("-3", -3), ("007", 7), ("45.5", 45.5), (".5", 0.5),
    ("5.", 5.0), ("1e3", 1000.0), ("2.5E-1", 0.25),
    ("45y", None), ("unknown", None), ("nan", None), ("NaN", None), ("inf", None),
    ("-Infinity", None), ("1e999", None), ("1,5", None), ("1_000", None), ("0x10", None),
    ("<5", None), ("", None), ("4 5", None),
])
def test_what_counts_as_a_number(text, value):
    got = parse_number(text)
    assert got == value and type(got) is type(value)


def test_texts_in_a_mostly_numeric_field_become_blank_with_a_qc_row_each(caplog):
    ages = ["50", "61", "45y", " 70 ", "unknown", "58", "66", "", "  ", "49"]
    with caplog.at_level(logging.WARNING):
        m = finalize_manifest("toy", "csv", _table_output(ages))
    assert m.frame.schema["age"] == pl.Int64
    assert m.frame["age"].to_list() == [50, 61, None, 70, None, 58, 66, None, None, 49]
    rows = m.qc.filter(pl.col("status") == NON_NUMERIC)
    assert rows["subject_id"].to_list() == ["s2", "s4"]
    assert rows["modality"].to_list() == ["clinical", "clinical"]
    assert rows["stage"].to_list() == ["adapter", "adapter"]
    assert "'age'" in rows["reason"][0] and "'45y'" in rows["reason"][0]
    assert "'age'" in rows["reason"][1] and "'unknown'" in rows["reason"][1]
    # the modality's own row is still there: sex is present
    present = m.qc.filter((pl.col("subject_id") == "s2") & (pl.col("status") == "present"))
    assert present["modality"].to_list() == ["clinical"]
    assert m.meta["non_numeric_blanked"] == {"age": 2}
    assert "'age'" in caplog.text and "45y" in caplog.text and "unknown" in caplog.text
    # the same cohort with those cells blank gives the same manifest
    clean = finalize_manifest("toy", "csv", _table_output(
        [None if a in ("45y", "unknown") else a for a in ages]))
    assert clean.frame.equals(m.frame)
    assert clean.qc.filter(pl.col("status") == NON_NUMERIC).height == 0


def test_missing_markers_in_a_field_are_blanks_not_values():
    """R's write.csv writes a missing cell as NA: a field that is mostly missing stayed
    text, its ages read as categories and "NA" as one of them."""
    ages = ["50", "NA", "na", "61", "70", " NaN ", "#N/A", "", "58", "Missing"]
    m = finalize_manifest("toy", "csv", _table_output(ages))
    assert m.frame.schema["age"] == pl.Int64
    assert m.frame["age"].to_list() == [50, None, None, 61, 70, None, None, None, 58, None]
    assert m.qc.filter(pl.col("status") == NON_NUMERIC).height == 0  # missing, not wrong
    # a text field's marker is no category either
    m = finalize_manifest("toy", "csv", _table_output(["50"] * 3, sexes=["F", "NA", "M"]))
    assert m.frame["sex"].to_list() == ["F", None, "M"]


def test_a_field_read_as_categories_keeps_its_codes():
    """A coded field (stage 1..4 and "X") that a tabular encoder reads as categories is not
    a numeric field with a bad value: "X" stays a category."""
    codes = ["1", "2", "X", "3", "4", "2", "1", "3"]
    m = finalize_manifest("toy", "csv", _table_output(codes, categorical=("age",)))
    assert m.frame["age"].to_list() == codes
    assert m.qc.filter(pl.col("status") == NON_NUMERIC).height == 0


def test_a_field_read_as_categories_has_no_missing_marker_category():
    """The categorical fields skipped the cleaning, missing markers included: "NA" was a
    category, and a subject whose every field was "NA" had a present table."""
    codes = ["1", "NA", "X", " n/a ", "", "2"]
    m = finalize_manifest("toy", "csv", _table_output(
        codes, sexes=["F", "M", "F", "NA", "NA", "M"], categorical=("age", "sex")))
    assert m.frame["age"].to_list() == ["1", None, "X", "2"]
    assert m.frame["sex"].to_list() == ["F", "M", "F", "M"]
    # s3 and s4 had markers only: no table, so nothing to learn from
    assert "s3" not in m.frame["subject_id"].to_list()
    assert "s4" not in m.frame["subject_id"].to_list()
    # a pandas-written column of codes (1.0, NaN, 2.0) is read as floats: NaN is no code
    m = finalize_manifest("toy", "csv", _table_output(
        [1.0, float("nan"), 2.0], sexes=["F", "NA", "M"], age_dtype=pl.Float64,
        categorical=("age", "sex")))
    assert m.frame["subject_id"].to_list() == ["s0", "s2"]


def test_floats_and_a_subject_left_with_nothing():
    m = finalize_manifest("toy", "csv", _table_output(
        ["1.5", "2", "3e1", "4", "?"], sexes=["F", "M", "F", "M", ""]))
    assert m.frame.schema["age"] == pl.Float64
    assert m.frame["age"].to_list() == [1.5, 2.0, 30.0, 4.0]
    # s4's only values were '?' and blank: it has no table left and is excluded
    s4 = {r["status"]: r["reason"] for r in m.qc.filter(pl.col("subject_id") == "s4")
          .iter_rows(named=True)}
    assert s4["absent"] == "all fields missing" and "'?'" in s4[NON_NUMERIC]
    assert s4["excluded"] == "no modality available"


def test_mostly_text_field_stays_text_and_whitespace_is_blank(caplog):
    stages = ["1", "2", "IV", "III", "  ", "II"]
    with caplog.at_level(logging.WARNING):
        m = finalize_manifest("toy", "csv", _table_output(stages))
    assert m.frame.schema["age"] == pl.Utf8
    assert m.frame["age"].to_list() == ["1", "2", "IV", "III", None, "II"]
    assert m.qc.filter(pl.col("status") == NON_NUMERIC).height == 0
    assert "kept as text" in caplog.text


def test_an_infinity_is_no_number_and_a_nan_is_a_blank():
    """A NaN is how the reader spells a "NaN" cell, a missing marker as "NA" is: it was
    recorded as "not a number", and stopped a build under non_numeric: error where the
    same column with "NA" built."""
    m = finalize_manifest("toy", "csv", _table_output(
        [1.0, float("inf"), float("nan"), None], age_dtype=pl.Float64))
    assert m.frame["age"].to_list() == [1.0, None, None, None]
    reasons = m.qc.filter(pl.col("status") == NON_NUMERIC)["reason"].to_list()
    assert len(reasons) == 1 and "'inf'" in reasons[0]
    m = finalize_manifest("toy", "csv", _table_output(
        [1.5, float("nan"), 2.5], age_dtype=pl.Float64, non_numeric="error"))
    assert m.frame["age"].to_list() == [1.5, None, 2.5]


def test_a_bound_in_a_numeric_field_is_named_as_one():
    """A lab's '<0.1' was blanked as any word is: the row did not say it was a bound, which
    the user must give a number to keep."""
    ages = ["50", "61", "<0.1", "70", "58", "66", "49", "45y"]
    reasons = finalize_manifest("toy", "csv", _table_output(ages)).qc.filter(
        pl.col("status") == NON_NUMERIC)["reason"].to_list()
    assert reasons[0].endswith("set to blank; a bound, as a lab writes a value past its "
                               "range: write the number you choose for it")
    assert reasons[1].endswith("set to blank")


def test_non_numeric_error_names_every_value():
    out = _table_output(["50", "45y", "61", "70", "unknown", "80", "81", "82"],
                        non_numeric="error")
    with pytest.raises(InputError, match=r"'s1': age = '45y'; subject 's4': age = 'unknown'"
                       ) as err:
        finalize_manifest("toy", "csv", out)
    assert err.value.path == "cohort.csv" and "non_numeric: blank" in str(err.value)
    # nothing to name, nothing to stop for
    finalize_manifest("toy", "csv", _table_output(["50", "61"], non_numeric="error"))


def test_non_numeric_option_is_read_and_checked():
    specs = modality_specs({"modalities": {"clin": {"kind": "table", "fields": ["a"],
                                                    "non_numeric": "error"}}})
    assert specs["clin"].non_numeric == "error"
    assert modality_specs({"modalities": {"clin": {"kind": "table", "fields": ["a"]}}}
                          )["clin"].non_numeric == "blank"
    with pytest.raises(ConfigError, match="non_numeric"):
        modality_specs({"modalities": {"clin": {"kind": "table", "fields": ["a"],
                                                "non_numeric": "drop"}}})


@pytest.mark.parametrize("labels, dtype", [(["low", "NaN", "high", " ", "nan"], pl.Utf8),
                                           ([0.0, float("nan"), 1.0, None, float("inf")],
                                            pl.Float64)])
def test_a_nan_or_blank_label_is_a_missing_label(labels, dtype):
    frame = pl.DataFrame({"subject_id": [f"s{i}" for i in range(5)],
                          "y": pl.Series(labels, dtype=dtype),
                          "age": pl.Series(["50"] * 5, dtype=pl.Utf8),
                          "sex": pl.Series(["F"] * 5, dtype=pl.Utf8)})
    spec = ModalitySpec("clinical", "table", ("age", "sex"))
    m = finalize_manifest("toy", "csv", AdapterOutput(frame=frame, modalities={"clinical": spec},
                                                      labels=["y"], source="cohort.csv"))
    assert m.frame["y"].is_null().to_list() == [False, True, False, True, True]
    missing = m.qc.filter(pl.col("status") == "absent").filter(pl.col("modality") == "label")
    assert missing["subject_id"].to_list() == ["s1", "s3", "s4"]


def _labelled(labels):
    n = len(labels)
    frame = pl.DataFrame({"subject_id": [f"s{i}" for i in range(n)],
                          "y": pl.Series(labels, dtype=pl.Utf8),
                          "age": pl.Series(["50"] * n, dtype=pl.Utf8),
                          "sex": pl.Series(["F"] * n, dtype=pl.Utf8)})
    spec = ModalitySpec("clinical", "table", ("age", "sex"))
    return AdapterOutput(frame=frame, modalities={"clinical": spec}, labels=["y"],
                         source="cohort.csv")


@pytest.mark.parametrize("labels", [["1", "1.0", "0", "-"], ["01", "1", "0", "0"]])
def test_one_number_written_two_ways_is_not_two_classes(labels):
    """A label column read as text (one stray word) kept "1" and "1.0" as two classes,
    without a word: the benchmark became a task of four classes."""
    with pytest.raises(InputError, match=r"label 'y': one number written two ways would be "
                                         r"classes of their own: \[\["):
        finalize_manifest("toy", "csv", _labelled(labels))


@pytest.mark.parametrize("labels", [[" 1", "1.0", "0", "0.0"], ["1", "1.0", "0", "NA"]])
def test_a_label_of_numbers_read_as_text_is_read_as_numbers(labels):
    """A padded cell made the reader keep the column as text: "1" and "1.0" were two
    classes. Numbers alone, it is the column of numbers."""
    m = finalize_manifest("toy", "csv", _labelled(labels))
    assert m.frame.schema["y"] == pl.Float64
    assert m.frame["y"].drop_nulls().unique().sort().to_list() == [0.0, 1.0]


def test_words_beside_numbers_in_a_label_are_warned_about(caplog):
    """Two words and two numbers ("yes", "1", "no", "0") made four classes with no
    warning: the warning asked for fewer words than numbers. Said in the log only, it was
    in no record: the cohort's QC holds it."""
    with caplog.at_level(logging.WARNING):
        m = finalize_manifest("toy", "csv", _labelled(["yes", "1", "0", "no", "yes"]))
    assert sorted(m.frame["y"].unique().to_list()) == ["0", "1", "no", "yes"]
    said = "values ['no', 'yes'] are classes of their own beside the numbers ['0', '1']"
    assert said in caplog.text
    row = m.qc.filter(pl.col("status") == "mixed_classes").row(0, named=True)
    assert (row["subject_id"], row["modality"], row["path"]) == ("*", "label", "cohort.csv")
    assert said in row["reason"]


@pytest.mark.parametrize("labels, cast, shown", [
    (["0", "1", "1.5", "0"], pl.Float64, "[1.5] are classes of their own beside the whole "
                                         "numbers [0.0, 1.0]"),
    # as the CSV reader gives it: text (R's NA), read as numbers once NA is blanked
    (["0", "1", "NA", "1.5"], None, "[1.5] are classes of their own beside the whole "
                                    "numbers [0.0, 1.0]"),
    # kept as text, numbers all: the texts are the classes
    (["0", "1", "1.5", "0"], None, "['1.5'] are classes of their own beside the whole "
                                   "numbers ['0', '1']"),
])
def test_a_fraction_beside_whole_numbers_in_a_label_is_said(labels, cast, shown):
    """A 1.5 typed among 0 and 1 made a third class without a word."""
    out = _labelled(labels)
    if cast is not None:
        out.frame = out.frame.with_columns(pl.col("y").cast(cast))
    m = finalize_manifest("toy", "csv", out)
    reasons = m.qc.filter(pl.col("status") == "mixed_classes")["reason"].to_list()
    assert reasons == [f"label 'y': values {shown}; write each class as the number it is, "
                       "or blank a value that is not one"]
    whole = _labelled(["0", "1", "1", "0"])
    whole.frame = whole.frame.with_columns(pl.col("y").cast(pl.Float64))
    assert finalize_manifest("toy", "csv", whole).qc.filter(
        pl.col("status") == "mixed_classes").is_empty()


def _view(tmp_path, rows, qc=None, labels_to=None, source_qc=()):
    out = _output(rows, qc=qc, source_qc=list(source_qc))
    if labels_to is not None:
        out.frame = out.frame.with_columns(pl.Series("y", labels_to))
    folder = tmp_path / f"build{len(list(tmp_path.iterdir()))}"
    write_manifest(finalize_manifest("toy", "csv", out), folder)
    return {m: modality_view_digest(folder, m) for m in SPECS}


def test_a_modalitys_view_changes_only_with_what_its_jobs_read(tmp_path):
    """The stage-1 jobs of a modality rerun on this digest, not on the manifest's mtime:
    a label or another modality's fields leave it; its rows, its QC and the subjects
    (a store has a row for every subject) change it."""
    rows = [_row("a", y=0, ct="/x/a", age=50), _row("b", wsi="/x/b.svs", sex="M"),
            _row("c", ct="/x/c", wsi="/x/c.svs")]
    base = _view(tmp_path, rows)
    assert len(set(base.values())) == 3
    assert modality_view_digest(tmp_path / "nothing", "ct") == "not built"
    # labels and the table's values: the image modalities' views stay
    relabelled = _view(tmp_path, rows, labels_to=[1, 0, 0])
    assert relabelled == base
    new_age = [{**rows[0], "age": 51}, *rows[1:]]
    aged = _view(tmp_path, new_age)
    assert aged["ct"] == base["ct"] and aged["wsi"] == base["wsi"]
    assert aged["clinical"] != base["clinical"]
    # a path of the modality, its adapter QC, the subject list
    moved = _view(tmp_path, [rows[0], rows[1], {**rows[2], "ct_path": "/y/c"}])
    assert moved["ct"] != base["ct"] and moved["wsi"] == base["wsi"]
    rejected = _view(tmp_path, rows, qc=[QCRecord("b", "ct", "rejected", "unreadable", "/x/b")])
    assert rejected["ct"] != base["ct"] and rejected["wsi"] == base["wsi"]
    fewer = _view(tmp_path, rows[:2])
    assert fewer["ct"] != base["ct"] and fewer["wsi"] != base["wsi"]
    # a stray file in the download (a whole-cohort "skipped" row): no store reads it (a
    # new file under root rebuilds the manifest, and a desktop.ini reran the modality's
    # stores and runs)
    stray = _view(tmp_path, rows, source_qc=[
        QCRecord(ALL_SUBJECTS, "ct", "skipped", "not an image name", "/x/desktop.ini")])
    assert stray == base


def _backdate(path) -> None:
    """``path`` dated a second back: a replacement written on the file clock's tick of
    its first write keeps the size and time a stamp reads, which no stat tells apart."""
    import os

    os.utime(path, ns=(path.stat().st_mtime_ns - 10**9,) * 2)


def test_an_image_replaced_under_its_name_changes_its_modalitys_view(tmp_path):
    """A regenerated demo rewrites images under the same names: the manifest's rows stay,
    the files' stamps do not. A DICOM folder is judged by its folders' mtimes, which a
    file atomically replaced in it, at any depth, changes."""
    import os

    from mmpipe.cohorts import manifest_views
    from mmpipe.fsutil import atomic_file

    def views():  # each in a new planning process (one process computes a view once)
        manifest_views._view_digest.cache_clear()
        return {m: modality_view_digest(out, m) for m in SPECS}

    series = tmp_path / "raw" / "ct" / "a" / "series1"
    series.mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"one")
    _backdate(series)
    slide = tmp_path / "raw" / "b.svs"
    slide.write_bytes(b"slide")
    rows = [_row("a", ct=str(series.parent), age=50), _row("b", wsi=str(slide), sex="M")]
    out = tmp_path / "results"
    write_manifest(finalize_manifest("toy", "csv", _output(rows)), out)
    base = views()
    with atomic_file(series / "1.dcm") as tmp:  # a new file renamed over the old one
        tmp.write_bytes(b"two")
    after_ct = views()
    assert after_ct["ct"] != base["ct"]
    assert after_ct["wsi"] == base["wsi"] and after_ct["clinical"] == base["clinical"]
    st = slide.stat()
    os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after_wsi = views()
    assert after_wsi["wsi"] != after_ct["wsi"] and after_wsi["ct"] == after_ct["ct"]


def test_a_dicom_folders_linked_series_and_files_not_fetched_are_in_its_view(tmp_path):
    """The reader walks linked subfolders, and a slice not fetched (a link to nothing)
    rejects the folder: the stamp walked neither, so a series replaced in a linked folder
    reran nothing, and a subject rejected for a file not fetched stayed rejected after
    ``datalad get`` (which moves no folder's mtime)."""
    from mmpipe.cohorts import manifest_views
    from mmpipe.fsutil import atomic_file

    def view():
        manifest_views._view_digest.cache_clear()
        return modality_view_digest(out, "ct")

    kept = tmp_path / "store" / "series1"
    kept.mkdir(parents=True)
    (kept / "1.dcm").write_bytes(b"one")
    _backdate(kept)
    folder = tmp_path / "raw" / "ct" / "a"
    folder.mkdir(parents=True)
    (folder / "series1").symlink_to(kept, target_is_directory=True)
    annexed = tmp_path / "annex" / "key"
    (folder / "2.dcm").symlink_to(annexed)
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # walked once
    out = tmp_path / "results"
    write_manifest(finalize_manifest("toy", "csv", _output([_row("a", ct=str(folder))])), out)
    base = view()
    with atomic_file(kept / "1.dcm") as tmp:  # a series replaced in the linked folder
        tmp.write_bytes(b"two")
    replaced = view()
    assert replaced != base
    annexed.parent.mkdir()
    annexed.write_bytes(b"fetched")  # datalad get: the link stays, its target arrives
    assert view() != replaced


def test_a_folder_stamp_walks_what_the_reader_walks(tmp_path):
    """The stamp walked a subject's .datalad or .git (a git operation reran its jobs) and
    a link up the tree (the whole cohort stamped for each subject); the reader walks
    neither."""
    from mmpipe.cohorts.manifest_views import _file_stamp

    cohort = tmp_path / "cohort"
    subject = cohort / "P1"
    (subject / "series").mkdir(parents=True)
    (subject / "series" / "1.dcm").write_bytes(b"1")
    (cohort / "P2").mkdir()
    (subject / "series" / "up").symlink_to(cohort, target_is_directory=True)
    (subject / ".datalad").mkdir()
    before = _file_stamp(str(subject))
    assert [row[0] for row in before] == [".", "series"]
    (subject / ".datalad" / "config").write_text("[datalad]")
    (cohort / "P2" / "1.dcm").write_bytes(b"2")
    assert _file_stamp(str(subject)) == before



def test_a_files_data_kept_beside_it_is_in_its_stamp(tmp_path):
    """A MetaImage header keeps its voxels in the file its ElementDataFile names (LUNA16's
    .mhd + .raw), an Analyze header in its .img, a MIRAX slide in a folder of its stem:
    replaced, even atomically, they changed no stamp, and the store kept the old voxels."""
    import os

    from mmpipe.cohorts.manifest_views import _file_stamp

    header = tmp_path / "ct.mhd"
    header.write_text("ObjectType = Image\nNDims = 3\nElementType = MET_SHORT\n"
                      "ElementDataFile = voxels.raw\n")
    data = tmp_path / "voxels.raw"
    data.write_bytes(b"\0" * 16)
    analyze = tmp_path / "t1.hdr"
    analyze.write_bytes(b"hdr")
    (tmp_path / "t1.img").write_bytes(b"img")
    mirax = tmp_path / "slide.mrxs"
    mirax.write_bytes(b"index")
    (tmp_path / "slide").mkdir()
    for p in tmp_path.iterdir():
        _backdate(p)
    stamps = {p: _file_stamp(str(p)) for p in (header, analyze, mirax)}
    new = tmp_path / "new.bin"
    for path, companion in ((header, data), (analyze, tmp_path / "t1.img")):
        new.write_bytes(b"\1" * 16)
        os.replace(new, companion)
        assert _file_stamp(str(path)) != stamps[path], path
    (tmp_path / "slide" / "Data0000.dat").write_bytes(b"tiles")
    assert _file_stamp(str(mirax)) != stamps[mirax]
    # a plain file keeps the stamp it had: no other cohort's jobs rerun
    plain = tmp_path / "x.nii.gz"
    plain.write_bytes(b"nifti")
    assert _file_stamp(str(plain)) == [plain.stat().st_size, plain.stat().st_mtime_ns]
    # the header's data in the header: nothing beside it to stamp
    header.write_text("ElementDataFile = LOCAL\n")
    assert len(_file_stamp(str(header))) == 2


def test_data_in_many_files_or_a_sibling_is_in_the_stamp(tmp_path):
    """A MetaImage header's LIST or pattern of files, a Hamamatsu index's JPEG or NGR
    files and the CLAM h5 that gives a .pt its tile coordinates were read by the jobs
    and stamped by nothing: replaced (or the h5 written after the store, whose subject
    was rejected for lacking it), nothing reran."""
    import os

    from mmpipe.cohorts.manifest_views import _file_stamp

    def replace(path):
        new = tmp_path / "new.bin"
        new.write_bytes(b"\1" * 8)
        os.replace(new, path)

    listed = tmp_path / "listed.mhd"
    listed.write_text("NDims = 3\nElementDataFile = LIST 2D\ns0.raw\ns1.raw\n")
    pattern = tmp_path / "pattern.mhd"
    pattern.write_text("NDims = 3\nElementDataFile = p%02d.raw 1 3 1\n")
    vms = tmp_path / "slide.vms"
    vms.write_text("[Virtual Microscope Specimen]\nNoLayers=1\nImageFile=slide.jpg\n"
                   "ImageFile(1,0)=slide_1.jpg\nMapFile=slide_map.jpg\n")
    for name in ("s0.raw", "s1.raw", "p01.raw", "p02.raw", "p03.raw", "slide.jpg",
                 "slide_1.jpg", "slide_map.jpg"):
        (tmp_path / name).write_bytes(b"\0" * 8)
        _backdate(tmp_path / name)
    for path, data in ((listed, "s1.raw"), (pattern, "p03.raw"), (vms, "slide_1.jpg"),
                       (vms, "slide_map.jpg")):
        before = _file_stamp(str(path))
        replace(tmp_path / data)
        assert _file_stamp(str(path)) != before, (path, data)
    pt = tmp_path / "clam" / "pt_files" / "S1.pt"
    pt.parent.mkdir(parents=True)
    pt.write_bytes(b"tensor")
    alone = _file_stamp(str(pt))
    assert alone == [pt.stat().st_size, pt.stat().st_mtime_ns]  # as it was: no rerun
    (tmp_path / "clam" / "h5_files").mkdir()
    (tmp_path / "clam" / "h5_files" / "S1.h5").write_bytes(b"coords")
    assert _file_stamp(str(pt)) != alone


def test_a_folder_of_links_is_stamped_by_their_targets(tmp_path):
    """A folder of links into a store elsewhere kept its mtimes when a target was replaced
    atomically: its subject's store kept the old image, where a single linked file reran."""
    import os

    from mmpipe.cohorts.manifest_views import _file_stamp

    target = tmp_path / "pacs" / "a.png"
    target.parent.mkdir()
    target.write_bytes(b"one")
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.png").symlink_to(target)
    (folder / "b.png").write_bytes(b"own")
    before = _file_stamp(str(folder))
    new = tmp_path / "new.png"
    new.write_bytes(b"two!")
    os.replace(new, target)
    assert _file_stamp(str(folder)) != before
    # a folder without links keeps the stamp it had (no other cohort reruns)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "c.png").write_bytes(b"c")
    assert _file_stamp(str(plain)) == [[".", plain.stat().st_mtime_ns]]

def test_the_benchmarks_view_changes_only_with_what_splits_masks_and_training_read(
        tmp_path):
    """Splits, masks and training jobs rerun on this digest: the subjects, the label, the
    cohort's split and which modalities each subject has. A table value, an image path
    or an adapter QC row (a subject's modality neither gained nor lost) leave it."""
    def view(rows, qc=None, labels_to=None, split=None):
        out = _output(rows, qc=qc, split=split)
        if labels_to is not None:
            out.frame = out.frame.with_columns(pl.Series("y", labels_to))
        folder = tmp_path / f"build{len(list(tmp_path.iterdir()))}"
        write_manifest(finalize_manifest("toy", "csv", out), folder)
        return benchmark_view_digest(folder, "y")

    rows = [_row("a", y=0, ct="/x/a", age=50), _row("b", wsi="/x/b.svs", sex="M"),
            _row("c", ct="/x/c", wsi="/x/c.svs")]
    base = view(rows)
    assert benchmark_view_digest(tmp_path / "nothing", "y") == "not built"
    assert view([{**rows[0], "age": 51}, *rows[1:]]) == base
    assert view([rows[0], rows[1], {**rows[2], "ct_path": "/y/c"}]) == base
    assert view(rows, qc=[QCRecord("b", "ct", "rejected", "unreadable", "/x/b")]) == base
    assert view(rows, labels_to=[1, 0, 0]) != base
    assert view([rows[0], rows[1], {**rows[2], "ct_path": None}]) != base  # c lost its CT
    assert view([*rows[:2], {**rows[2], "age": 40}]) != base  # c gained its table
    assert view(rows[:2]) != base
    parts = {"a": "train", "b": "train", "c": "test"}
    own = view(rows, split=UserSplit(parts, "column split", "split in /data/cohort.csv"))
    assert own != base
    assert view(rows, split=UserSplit({**parts, "b": "test"}, "column split",
                                      "split in /data/cohort.csv")) != own
    # the CSV moved or renamed: the same parts, a split file records nothing else
    assert view(rows, split=UserSplit(parts, "column split", "split in /new/c.csv")) == own


def test_a_manifest_a_killed_build_left_does_not_stop_planning(tmp_path):
    """Snakemake evaluates the stage-1 parameters before the manifest job that repairs
    the files has run: an error there stopped every run until the files were removed."""
    write_manifest(finalize_manifest("toy", "csv", _output([_row("a", age=1)])), tmp_path)
    meta = json.loads((tmp_path / "manifest.json").read_text())
    meta["n_subjects"] = 3  # the JSON of a newer build, the parquet of the older
    (tmp_path / "manifest.json").write_text(json.dumps(meta))
    assert modality_view_digest(tmp_path, "ct") == "unreadable"


def test_a_download_moved_with_its_times_keeps_every_modalitys_view(tmp_path):
    """The views hashed the files' absolute paths: a dataset moved or copied with its
    times (mv, cp -a), or a project moved with its demo, reran every preprocessing and
    encoding job (and they failed where the old paths were gone)."""
    import shutil

    def build(root, out):
        rows = [_row("a", ct=str(root / "ct" / "a"), age=50),
                _row("b", wsi=str(root / "b.svs"), sex="M")]
        qc = [QCRecord("b", "ct", "rejected", f"cannot read {root / 'ct' / 'b'}: cut short",
                       str(root / "ct" / "b"))]
        output = AdapterOutput(frame=pl.DataFrame(rows, schema=_output([]).frame.schema),
                               modalities=SPECS, labels=["y"], qc=qc, source=str(root))
        write_manifest(finalize_manifest("toy", "csv", output), out)
        return {m: modality_view_digest(out, m) for m in SPECS}

    first = tmp_path / "disk1" / "data"
    (first / "ct" / "a").mkdir(parents=True)
    (first / "ct" / "a" / "IM1.dcm").write_bytes(b"slice")
    (first / "b.svs").write_bytes(b"slide")
    before = build(first, tmp_path / "out1")
    moved = tmp_path / "disk2" / "copy"
    shutil.copytree(first, moved)  # copy2: the files' times come with them
    assert build(moved, tmp_path / "out2") == before
    (moved / "b.svs").write_bytes(b"other")  # a file replaced in the copy still counts
    assert build(moved, tmp_path / "out3")["wsi"] != before["wsi"]


@pytest.mark.parametrize("ages", [["1,5", "2,3", "0,7", "4,1"], ["52%", "10 %", "7%", ""],
                                  ["<0.1", "0.4", ">90", "≥ 60", "2", "<.5"]])
def test_numbers_written_with_a_comma_or_percent_are_said(ages, caplog):
    """A field of decimal commas ('1,5', as another locale's spreadsheet writes it) or
    percentages parsed as no number: it stayed text, each value a category of its own,
    with no warning and no QC row."""
    with caplog.at_level(logging.WARNING):
        m = finalize_manifest("toy", "csv", _table_output(ages))
    assert m.frame.schema["age"] == pl.Utf8
    (row,) = m.qc.filter(pl.col("status") == "numbers_as_text").iter_rows(named=True)
    written = sum(bool(a) and not a[0].isdigit() or "," in a or "%" in a for a in ages)
    assert row["modality"] == "column" and row["reason"].startswith(
        f"field 'age': {written} of {sum(bool(a) for a in ages)} values "
        "are numbers written with a comma or a percent sign, or bounds")
    assert "numbers written with a comma" in caplog.text
    # a field of words is no such field
    words = finalize_manifest("toy", "csv", _table_output(["low", "high", "1,5", "low"]))
    assert words.qc.filter(pl.col("status") == "numbers_as_text").height == 0


def test_a_field_of_numbers_beside_many_texts_is_said(caplog):
    """A lab value beside "not done" in a third of the rows stays text, one category per
    value (every test subject's value one no training subject has): a log line was all
    that said so."""
    values = ["3.2", "not done", "4.75", "1.5", "pending", "2.25", "not done", "", "6.5"]
    with caplog.at_level(logging.WARNING):
        m = finalize_manifest("toy", "csv", _table_output(values))
    assert m.frame.schema["age"] == pl.Utf8
    (row,) = m.qc.filter(pl.col("status") == "numbers_as_text").iter_rows(named=True)
    assert row["modality"] == "column" and row["reason"].startswith(
        "field 'age': 5 of 8 values are numbers, under the 75% that makes a field numeric, "
        "beside texts ('not done', 'pending')")
    assert "blank those texts" in caplog.text
    # a field of words with a few numbers in it is a field of words, and a field of no
    # value is no field of numbers
    for other in (["low", "high", "3", "low"], ["NA", "", "NA", ""]):
        m = finalize_manifest("toy", "csv", _table_output(other))
        assert m.qc.filter(pl.col("status") == "numbers_as_text").height == 0, other


def test_only_a_verdict_read_in_place_of_a_file_moves_after_its_notes():
    """The encoders read the last adapter row of a subject's modality when it has no file:
    an absent or rejected verdict goes after the notes on it. Every other row stays, so a
    cohort without such a pair keeps its QC table, and its stores' view digests, as they
    were (a present row before a blanked value or a skipped file had moved)."""
    from mmpipe.cohorts.manifest import QCRecord, _verdicts_last

    rows = [QCRecord("s1", "ct", "present"), QCRecord("s1", "ct", "skipped", "notes.txt"),
            QCRecord("s2", "clinical", "present"),
            QCRecord("s2", "clinical", "non_numeric", "age = '45y'"),
            QCRecord("s3", "t1", "rejected", "2 files"), QCRecord("s4", "t2", "absent"),
            QCRecord("s3", "t1", "skipped", "notes.txt"), QCRecord("*", "t1", "skipped", "x")]
    assert _verdicts_last(rows[:4]) == rows[:4]
    assert _verdicts_last(rows) == [*rows[:4], rows[5], rows[6], rows[4], rows[7]]


def test_a_subject_id_holding_a_line_break_is_refused():
    """A quote left open in an ID runs over the rows below: they vanish into its ID."""
    from mmpipe.cohorts.manifest import check_subject_ids

    with pytest.raises(InputError, match=r"ids\.csv: subject_id\(s\) holding a line break: "
                                         r"\['p2\\np3,0'\]"):
        check_subject_ids(pl.Series(["p1", "p2\np3,0"]), "ids.csv")


@pytest.mark.parametrize("code, flagged", [(999, True), (-9, True), (2, False), (-1, False)])
def test_a_rare_label_value_far_from_the_classes_is_said(code, flagged):
    """A 999 (a code for 'unknown') beside 0 and 1 made a third class without a word; a
    2 or a -1 beside them is a class as often, and is not said."""
    labels = [0, 1] * 30 + [code]
    out = _labelled([str(v) for v in labels])
    out.frame = out.frame.with_columns(pl.col("y").cast(pl.Int64))
    m = finalize_manifest("toy", "csv", out)
    reasons = m.qc.filter(pl.col("status") == "mixed_classes")["reason"].to_list()
    if not flagged:
        assert reasons == []
        return
    assert reasons == [f"label 'y': values [{code}] are classes of their own, held by 1 "
                       "subject(s) and far outside the other classes [0, 1]: a code for "
                       "'unknown'? Blank it in the source, or keep it if it is a class"]


def test_a_code_like_label_value_kept_as_text_is_said_and_days_are_no_classes():
    """A label of numbers kept as text skipped the check; a label of survival days, whose
    values are no few classes, had every rare day said as a code for unknown."""
    m = finalize_manifest("toy", "csv", _labelled(["0", "1"] * 30 + ["999", "x"]))
    assert any("[999.0] are classes of their own" in r for r in
               m.qc.filter(pl.col("status") == "mixed_classes")["reason"].to_list())
    days = [str(d) for d in range(100, 400, 3)] + ["365"] * 20 + ["730"] * 20
    out = _labelled(days)
    out.frame = out.frame.with_columns(pl.col("y").cast(pl.Int64))
    m = finalize_manifest("toy", "csv", out)
    assert not any("far outside" in r for r in m.qc["reason"].to_list())
