"""The manifest contract: validation, QC derivation, atomic writing, reading back."""

from __future__ import annotations

import json
import logging

import polars as pl
import pytest

from mmpipe.cohorts import ADAPTERS, build_manifest
from mmpipe.cohorts.manifest import (
    AdapterOutput,
    ModalitySpec,
    QCRecord,
    finalize_manifest,
    modality_presence,
    modality_specs,
    read_manifest,
    read_qc,
    write_manifest,
)
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
    # counts describe the manifest, not the excluded subject
    assert m.meta["counts"]["wsi"]["rejected"] == 0


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
    specs = modality_specs({"modalities": {"clin": {"kind": "table"}}}, {"clin": ("a", "b")})
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
    assert meta["modalities"]["clinical"] == {"kind": "table", "fields": ["age", "sex"]}
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
    assert set(ADAPTERS) == {"demo", "mmist_ccrcc", "csv"}
