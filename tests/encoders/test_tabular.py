"""Tabular encoding: standardised numbers, one-hot categories, explicit missingness."""

from __future__ import annotations

import json
import logging

import numpy as np
import polars as pl
import pytest

from mmpipe.encoders.tabular import TabularEncoding
from mmpipe.errors import ConfigError
from tests.conftest import require


@pytest.fixture
def df():
    return pl.DataFrame({
        "age": [50.0, 60.0, None, 70.0],
        "sex": ["F", "M", "M", None],
        "stage": [1, 3, -1, 2],
        "smoker": [True, False, None, True],
    })


def _col(enc, x, name):
    return x[:, enc.feature_names.index(name)]


def test_numeric_standardised_with_missing_indicator(df):
    enc = TabularEncoding(["age"])
    x = enc.fit_transform(df)
    assert enc.feature_names == ["age", "age=missing"]
    assert x.dtype == np.float32 and x.shape == (4, 2)
    std = np.std([50, 60, 70])
    assert np.allclose(x[:, 0], [(50 - 60) / std, 0, 0, (70 - 60) / std])
    assert x[:, 1].tolist() == [0, 0, 1, 0]


def test_categorical_one_hot_sorted_with_missing_category(df):
    enc = TabularEncoding(["sex", "smoker"])
    x = enc.fit_transform(df)
    assert enc.feature_names == ["sex=F", "sex=M", "sex=missing",
                                 "smoker=false", "smoker=true", "smoker=missing"]
    assert x.tolist() == [[1, 0, 0, 0, 1, 0], [0, 1, 0, 1, 0, 0],
                          [0, 1, 0, 0, 0, 1], [0, 0, 1, 0, 1, 0]]


def test_forced_categorical_and_sentinels(df):
    enc = TabularEncoding(["stage", "age"], categorical=["stage"], missing_values=[-1])
    x = enc.fit_transform(df)
    assert enc.feature_names == ["stage=1", "stage=2", "stage=3", "stage=missing",
                                 "age", "age=missing"]
    assert _col(enc, x, "stage=missing").tolist() == [0, 0, 1, 0]
    assert _col(enc, x, "stage=3").tolist() == [0, 1, 0, 0]


def test_per_field_sentinels_apply_to_numeric_mean(df):
    enc = TabularEncoding(["stage"], missing_values={"stage": [-1]})
    x = enc.fit_transform(df)
    assert enc.feature_names == ["stage", "stage=missing"]
    assert enc.columns[0]["mean"] == pytest.approx(2.0)  # -1 excluded from the statistics
    assert x[:, 1].tolist() == [0, 0, 1, 0] and x[2, 0] == 0


def test_numeric_categories_sort_numerically_and_merge_int_float():
    fit = pl.DataFrame({"code": [10.0, 2.0, 1.0]})
    enc = TabularEncoding(["code"], categorical=["code"]).fit(fit)
    assert enc.feature_names == ["code=1", "code=2", "code=10", "code=missing"]
    x = enc.transform(pl.DataFrame({"code": [2, None]}))
    assert x.tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]


def test_unseen_category_all_zeros_and_warned_once(df, caplog):
    enc = TabularEncoding(["sex"]).fit(df)
    new = pl.DataFrame({"sex": ["X", "X", "F"]})
    with caplog.at_level(logging.WARNING):
        x = enc.transform(new)
        enc.transform(new)
    assert x.tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert sum("not seen" in r.getMessage() for r in caplog.records) == 1


def test_constant_and_all_missing_numeric():
    d = pl.DataFrame({"a": [3.0, 3.0], "b": pl.Series([None, None], dtype=pl.Float64)})
    enc = TabularEncoding(["a", "b"])
    x = enc.fit_transform(d)
    assert np.isfinite(x).all()
    assert enc.columns[0]["std"] == 1.0 and x[:, 0].tolist() == [0, 0]
    assert x[:, 3].tolist() == [1, 1]


def test_nan_is_blank():
    d = pl.DataFrame({"a": [1.0, float("nan"), 3.0]})
    enc = TabularEncoding(["a"])
    x = enc.fit_transform(d)
    assert enc.columns[0]["mean"] == 2.0 and x[:, 1].tolist() == [0, 1, 0]


def test_roundtrip_through_json(df):
    enc = TabularEncoding(["age", "sex", "stage"], categorical=["stage"], missing_values=[-1])
    x = enc.fit_transform(df)
    state = json.loads(json.dumps(enc.to_dict()))
    again = TabularEncoding.from_dict(state)
    assert again.feature_names == enc.feature_names
    assert np.array_equal(again.transform(df), x)


def test_errors(df):
    with pytest.raises(ConfigError):
        TabularEncoding(["age"], categorical=["nope"])
    with pytest.raises(ConfigError, match="weight"):
        TabularEncoding(["weight"]).fit(df)
    with pytest.raises(RuntimeError):
        TabularEncoding(["age"]).transform(df)


def test_mmist_clinical_table(shared_data):
    csv = require(shared_data / "mmist-ccrcc" / "clinical+genomic_split.csv")
    d = pl.read_csv(csv)
    fields = ["gender", "age_diag", "grade", "ajcc_path_tumor_stage", "VHL_mutation"]
    enc = TabularEncoding(fields, categorical=["ajcc_path_tumor_stage", "grade"],
                          missing_values=[-1])
    x = enc.fit_transform(d)
    assert x.shape == (d.height, enc.n_features) and np.isfinite(x).all()
    # 462 patients have genomics; the others carry -1 → missing
    assert int(_col(enc, x, "VHL_mutation=missing").sum()) == d.height - 462
    stage_cols = [n for n in enc.feature_names if n.startswith("ajcc_path_tumor_stage=")]
    assert np.allclose(x[:, [enc.feature_names.index(n) for n in stage_cols]].sum(1), 1)
