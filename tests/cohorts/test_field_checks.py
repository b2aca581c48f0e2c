"""Table fields checked against each other and against the labels: case variants of a
category, and fields that give a label away."""

from __future__ import annotations

import numpy as np
import polars as pl

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.field_checks import PROXY_MIN_SUBJECTS, case_variants, label_proxies


def test_values_that_differ_only_in_case_or_spacing_are_named():
    frame = pl.DataFrame({"sex": ["male", "Male", "female", "MALE ", "Female", None],
                          "site": ["A", "B", "A", "B", "A", "B"], "age": [1, 2, 3, 4, 5, 6]})
    (reason,) = case_variants(frame, ["sex", "site", "age"])
    assert reason.startswith("table field 'sex': values that differ only in case or surrounding spaces")
    assert "'MALE ' (1), 'Male' (1), 'male' (1)" in reason
    assert "'Female' (1), 'female' (1)" in reason


def _cohort(n: int, rng: np.random.Generator) -> pl.DataFrame:
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    return pl.DataFrame({
        "label": [str(v) for v in y],
        "vital_status": ["Dead" if v else "Alive" for v in y],
        "days_to_death": [int(rng.integers(30, 900)) if v else None for v in y],
        "marker": [float(v) * 10 + rng.random() for v in y],       # a threshold separates
        "age": rng.integers(40, 90, n).tolist(),                    # unrelated
        "record_id": [f"R{i}" for i in range(n)],                   # a value a subject
    })


def test_a_field_that_gives_the_label_away_is_named_and_an_unrelated_one_is_not():
    frame = _cohort(40, np.random.default_rng(0))
    fields = ["vital_status", "days_to_death", "marker", "age", "record_id"]
    reasons = label_proxies(frame, fields, ["label"])
    named = {r.split("'")[1] for r in reasons}
    assert named == {"vital_status", "days_to_death", "marker"}
    (blanks,) = [r for r in reasons if "days_to_death" in r]
    assert "is blank exactly for the subjects of label 'label' '0'" in blanks
    (threshold,) = [r for r in reasons if "'marker'" in r]
    assert "exactly by a threshold on the 40 labelled subjects" in threshold
    # too few subjects to tell a proxy from chance
    small = _cohort(PROXY_MIN_SUBJECTS - 1, np.random.default_rng(0))
    assert label_proxies(small, fields, ["label"]) == []
    # a class of two subjects: some number of the record sets them apart by chance
    rng = np.random.default_rng(2)
    rare = pl.DataFrame({"label": ["1", "1"] + ["0"] * 38,
                         "score": [90.0, 95.0] + rng.uniform(0, 80, 38).tolist()})
    assert label_proxies(rare, ["score"], ["label"]) == []
    # an unlabelled subject is not counted
    blanked = frame.with_columns(pl.when(pl.col("record_id") == "R3").then(None)
                                 .otherwise(pl.col("label")).alias("label"))
    assert any("on the 39 labelled subjects" in r for r in label_proxies(
        blanked, ["marker"], ["label"]))


def test_the_manifest_writes_both_as_column_qc_rows(tmp_path, caplog):
    """A vital status beside a survival label and a mixed-case sex passed the build without
    a word."""
    rng = np.random.default_rng(1)
    frame = _cohort(30, rng)
    sex = ["male", "Male", "female"] * 10
    rows = ["patient_id,label,vital_status,sex,age"] + [
        f"p{i},{r['label']},{r['vital_status']},{sex[i]},{r['age']}"
        for i, r in enumerate(frame.iter_rows(named=True))]
    (tmp_path / "cohort.csv").write_text("\n".join(rows) + "\n")
    cfg = {"adapter": "csv", "csv": "cohort.csv", "subject_column": "patient_id",
           "labels": ["label"],
           "modalities": {"clinical": {"kind": "table", "encoders": ["e"],
                                       "fields": ["vital_status", "sex", "age"]}}}
    build_manifest("c", cfg, tmp_path / "out", base_dir=tmp_path)
    qc = read_qc(tmp_path / "out").filter(pl.col("modality") == "column")
    by_status = {r["status"]: r["reason"] for r in qc.iter_rows(named=True)}
    assert "table field 'vital_status' separates the classes of label 'label'" in (
        by_status["label_proxy"])
    assert by_status["case_variants"].startswith("table field 'sex'")
    assert "separates the classes" in caplog.text
