"""Tabular encoding: standardised numbers, one-hot categories, explicit missingness."""

from __future__ import annotations

import json
import logging

import numpy as np
import polars as pl
import pytest

from mmpipe.encoders.tabular import TabularEncoding, Unplaced
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


def test_a_constant_numeric_field_is_not_divided_by_its_rounding():
    d = pl.DataFrame({"a": [3.0, 3.0]})
    enc = TabularEncoding(["a"])
    x = enc.fit_transform(d)
    assert np.isfinite(x).all()
    assert enc.columns[0]["std"] == 1.0 and x[:, 0].tolist() == [0, 0]
    # 0.1 six hundred times has a float spread of about 1e-17, which divided another
    # cohort's 0.2 into 7e15 under encoding_from
    enc = TabularEncoding(["a"]).fit(pl.DataFrame({"a": [0.1] * 618}))
    assert enc.columns[0]["std"] == 1.0
    assert abs(enc.transform(pl.DataFrame({"a": [0.2]}))[0, 0] - 0.1) < 1e-6


@pytest.mark.parametrize("column", [
    pl.Series("b", [None, None], dtype=pl.Float64),
    pl.Series("b", [None, None], dtype=pl.Null),  # a frame built from rows of None
    pl.Series("b", ["-1", None], dtype=pl.Utf8),  # its one value a missing_values code
])
def test_a_field_with_no_value_is_warned_of_naming_it(column, caplog):
    # fitted, a blank field is a category list of none (or a numeric field of no number):
    # under encoding_from another cohort's every value of it is an unseen category, which
    # nothing at the fit said (a small cohort's field can be blank throughout: MMIST's
    # cancer_history is blank for 545 of 618 patients)
    d = pl.DataFrame([pl.Series("a", [3.0, 4.0]), column])
    with caplog.at_level(logging.WARNING):
        enc = TabularEncoding(["a", "b"], missing_values={"b": [-1]}).fit(d)
    assert "tabular field(s) ['b'] have no value in any of the 2 subjects" in caplog.text
    assert enc.transform(d)[:, enc.feature_names.index("b=missing")].tolist() == [1, 1]


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


# -- values the encoding cannot place; reusing a fitted encoding ----------------------------

def test_transform_reports_what_it_cannot_place_per_row(df, caplog):
    enc = TabularEncoding(["age", "sex"]).fit(df)
    new = pl.DataFrame({"age": ["45y", "55", None, "inf"], "sex": ["X", "F", "Y", "M"]})
    unplaced: list[Unplaced] = []
    with caplog.at_level(logging.WARNING):
        x = enc.transform(new, unplaced)
    assert unplaced == [Unplaced(0, "age", "45y", "not_a_number"),
                        Unplaced(0, "sex", "X", "unseen"),
                        Unplaced(2, "sex", "Y", "unseen"),
                        Unplaced(3, "age", "inf", "not_a_number")]
    assert "'45y'" in unplaced[0].describe() and "'X'" in unplaced[1].describe()
    # a numeric field's text is blank; an unseen category is all zeros
    std = np.std([50, 60, 70])
    assert x.tolist()[0] == [0, 1, 0, 0, 0]
    assert x[1].tolist() == pytest.approx([(55 - 60) / std, 0, 1, 0, 0])
    assert x[2].tolist() == [0, 1, 0, 0, 0] and x[3].tolist() == [0, 1, 0, 1, 0]
    # one warning per field, naming the values
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert "'age'" in warned[0] and "'45y'" in warned[0] and "'inf'" in warned[0]
    assert "'sex'" in warned[1] and "'X'" in warned[1] and "'Y'" in warned[1]
    # nothing to report on the fitted table itself
    again: list[Unplaced] = []
    enc.transform(df, again)
    assert again == []


def test_non_finite_numbers_are_left_out_of_the_fit():
    enc = TabularEncoding(["a"]).fit(pl.DataFrame({"a": [1.0, float("inf"), 3.0]}))
    assert enc.columns[0] == {"field": "a", "kind": "numeric", "mean": 2.0, "std": 1.0}


def _store(path, enc, n=2, **attrs):
    from mmpipe.store import FeatureStoreWriter

    ids = [f"t{i}" for i in range(n)]
    state = {"tabular_encoding": enc.to_dict()} if enc is not None else {}
    with FeatureStoreWriter(path, ids, (enc.n_features if enc else 1,),
                            {**state, "encoder_type": "tabular" if enc else "text",
                             **attrs}) as w:
        for i in ids:
            w.write(i, np.zeros(enc.n_features if enc else 1, dtype=np.float32))
        w.commit()
    return path


def _job(cfg, fields=("age", "sex")):
    from mmpipe.encode.job import EncodeJob

    return EncodeJob(cfg={"type": "tabular", "name": "tab_new", **cfg},
                     params={"fields": list(fields)}, modality="clinical", device="cpu")


def _items(rows):
    from mmpipe.encode.inputs import SubjectInput

    return [SubjectInput(sid, "ok", "", values) for sid, values in rows]


def test_encoding_from_reuses_the_stored_encoding_and_notes_unplaced_values(df, tmp_path):
    from mmpipe.encode import tabular as loop
    from mmpipe.encode.job import SubjectWriter
    from mmpipe.store import FeatureStoreWriter, read_features

    fitted = TabularEncoding(["age", "sex"]).fit(df)
    src = _store(tmp_path / "train.zarr", fitted)
    items = _items([("n1", {"age": 90, "sex": "X"}), ("n2", {"age": 50, "sex": "F"}),
                    ("n3", {"age": None, "sex": "M"})])
    job = _job({"encoding_from": str(src)})
    loop.setup(job, items)
    # not refitted on the new cohort (whose mean age is 70): the training encoding
    assert job.attrs["tabular_encoding"] == fitted.to_dict()
    assert job.attrs["tabular_encoding_from"] == str(src)
    assert job.attrs["feature_names"] == fitted.feature_names
    assert job.feature_shape == (fitted.n_features,)
    new = pl.DataFrame({"age": [90, 50, None], "sex": ["X", "F", "M"]})
    assert np.array_equal(job.state[0], fitted.transform(new))

    with FeatureStoreWriter(tmp_path / "new.zarr", ["n1", "n2", "n3", "n4"], job.feature_shape,
                            job.attrs) as store:
        store.mark("n4", "absent", "no clinical field recorded")
        loop.run(job, items, SubjectWriter(store, {"n3": "an earlier note"}))
        store.commit()
    f = read_features(tmp_path / "new.zarr")
    reason = dict(zip(f.subject_id, f.reason, strict=True))
    assert "sex" in reason["n1"] and "'X'" in reason["n1"] and "not seen" in reason["n1"]
    assert reason["n2"] == "" and reason["n3"] == "an earlier note"
    assert f.status.tolist() == ["ok", "ok", "ok", "absent"]
    assert f.attrs["tabular_encoding_from"] == str(src)


def test_fitted_store_records_its_encoding_and_no_source(df):
    from mmpipe.encode import tabular as loop

    job = _job({})
    loop.setup(job, _items([("a", {"age": 50, "sex": "F"}), ("b", {"age": 60, "sex": "M"})]))
    assert job.attrs["tabular_encoding"]["columns"][0]["mean"] == 55.0
    assert job.attrs["tabular_encoding_from"] is None
    assert job.state[1] == {}


def test_encoding_from_errors_name_the_problem(df, tmp_path):
    from mmpipe.encode import tabular as loop

    items = _items([("n1", {"age": 90, "sex": "F"})])
    src = _store(tmp_path / "train.zarr",
                 TabularEncoding(["age", "sex"], categorical=[], missing_values=[-1]).fit(df))
    with pytest.raises(ConfigError, match=r"tab_new.encoding_from.*\['age', 'sex'\].*"
                                          r"\['age', 'stage'\].*not in the encoding: \['stage'\]"):
        loop.setup(_job({"encoding_from": str(src)}, ("age", "stage")),
                   _items([("n1", {"age": 90, "stage": 2})]))
    # the same fields in another order are the same encoding
    loop.setup(_job({"encoding_from": str(src)}, ("sex", "age")), items)
    with pytest.raises(ConfigError, match="missing_values"):
        loop.setup(_job({"encoding_from": str(src), "missing_values": [-2]}), items)
    loop.setup(_job({"encoding_from": str(src), "missing_values": ["-1"], "categorical": []}),
               items)
    with pytest.raises(ConfigError, match="categorical"):
        loop.setup(_job({"encoding_from": str(src), "categorical": ["sex"]}), items)
    with pytest.raises(ConfigError, match="no feature store"):
        loop.setup(_job({"encoding_from": str(tmp_path / "nope.zarr")}), items)
    text = _store(tmp_path / "text.zarr", None)
    with pytest.raises(ConfigError, match="holds no tabular encoding.*'text'"):
        loop.setup(_job({"encoding_from": str(text)}), items)


def test_number_text_in_a_category_field_is_the_number():
    """A category field read as text (it holds an "X") kept "2.0" apart from the 2.0 a
    numeric column gives, so a reused encoding placed none of them; "-1.0" escaped the
    code -1 and became a category."""
    fitted = TabularEncoding(["stage"], categorical=["stage"], missing_values=[-1]).fit(
        pl.DataFrame({"stage": [1.0, 2.0, 3.0, None]}))
    unplaced = []
    x = fitted.transform(pl.DataFrame({"stage": ["2.0", " 3 ", "-1.0", "X"]}), unplaced)
    assert fitted.feature_names == ["stage=1", "stage=2", "stage=3", "stage=missing"]
    assert x.tolist() == [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert [(u.value, u.why) for u in unplaced] == [("X", "unseen")]


def test_category_order_is_the_same_whatever_the_hash_seed():
    """'-nan' (text the manifest's missing markers miss) sorted by a NaN key, so the
    column order followed the set's hash order from one process to the next."""
    import subprocess
    import sys

    code = ("import polars as pl; from mmpipe.encoders.tabular import TabularEncoding; "
            "print(TabularEncoding(['s'], categorical=['s']).fit(pl.DataFrame("
            "{'s': ['b', '-nan', 'a', '2', 'c', '10']})).feature_names)")
    orders = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)},
                             check=True).stdout for seed in range(6)}
    assert orders == {"['s=2', 's=10', 's=-nan', 's=a', 's=b', 's=c', 's=missing']\n"}


def test_a_value_that_overflows_the_moments_is_named():
    """1e200 beside 1 and 2: the spread overflowed, every subject's feature was inf and
    each was rejected as non-finite, the value never named."""
    from mmpipe.errors import InputError

    with pytest.raises(InputError, match=r"tabular field 'age': a value of 1e\+200 overflows"):
        TabularEncoding(["age"]).fit(pl.DataFrame({"age": [1e200, 1.0, 2.0]}))


def test_encoding_from_refuses_a_category_field_the_manifest_read_as_numbers(tmp_path):
    """The training cohort's stage was I..X-like codes 1, 2, 3, X, a category field; a new
    cohort reusing the encoding without listing it in `categorical` had its manifest read
    stage as numbers and blank 'X', stored as 'missing' with no note."""
    from mmpipe.encode import tabular as loop

    fitted = TabularEncoding(["stage"], categorical=["stage"]).fit(
        pl.DataFrame({"stage": ["1", "2", "3", "X"]}))
    src = _store(tmp_path / "train.zarr", fitted)
    as_numbers = _items([("n1", {"stage": 2}), ("n2", {"stage": None})])
    with pytest.raises(ConfigError, match=r"'stage' is a category field of the reused "
                                          r"encoding, with categories \['X'\] that are not"):
        loop.setup(_job({"encoding_from": str(src)}, ["stage"]), as_numbers)
    # as text, as the manifest keeps a field an encoder lists in `categorical`
    job = _job({"encoding_from": str(src)}, ["stage"])
    loop.setup(job, _items([("n1", {"stage": "X"}), ("n2", {"stage": "2"})]))
    assert job.state[0][:, :4].tolist() == [[0, 0, 0, 1], [0, 1, 0, 0]]


def test_integer_text_beyond_int64_keeps_its_digits():
    """Read through a float, two 20-digit codes became one category, 12345678901234567168,
    a value neither had."""
    from mmpipe.encoders.categories import canonical_value

    assert canonical_value("12345678901234567890") == "12345678901234567890"
    assert canonical_value("12345678901234567891") == "12345678901234567891"
    assert canonical_value(" 007 ") == "7" and canonical_value("2.50") == "2.5"


def test_an_encoding_stored_before_number_text_was_read_places_its_own_values():
    """Categories '01' and '02', stored as written by an earlier version: read as the
    numbers they are now, its own values came back unseen (all zeros)."""
    state = TabularEncoding(["site"], categorical=["site"]).fit(
        pl.DataFrame({"site": ["A", "B"]})).to_dict()
    state["columns"][0]["categories"] = ["01", "02", "X"]
    old = TabularEncoding.from_dict(state)
    assert old.transform(pl.DataFrame({"site": ["01", "02", "X"]})).tolist() == [
        [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    state["columns"][0]["categories"] = ["1", "01"]
    with pytest.raises(ConfigError, match=r"categories of 'site' \['1', '01'\] are one value"):
        TabularEncoding.from_dict(state)


def test_a_reused_encoding_must_blank_the_codes_the_prompt_blanks(tmp_path, raw_config):
    """The config check compares the prompt's blank codes with a tabular encoding fitted
    here, not with a reused one's, stored elsewhere: a subject whose every field is -1
    was absent from the tabular store and present in the text one ("Age -1. Stage -1.")."""
    import copy

    from mmpipe.config import validate_config
    from mmpipe.encode import tabular as loop
    from mmpipe.params import encoder_params

    fitted = TabularEncoding(["age", "sex"], missing_values=[-1]).fit(
        pl.DataFrame({"age": [40, 50, -1], "sex": ["F", "M", "F"]}))
    src = _store(tmp_path / "train.zarr", fitted)
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"]["tabular"] = {"type": "tabular", "encoding_from": str(src)}
    clinical = cfg["cohorts"]["demo"]["modalities"]["clinical"]
    clinical["fields"] = ["age", "sex"]
    clinical["prompt"] = {"header": "Record.", "missing": "omit"}
    cfg = validate_config(cfg)
    params = encoder_params(cfg, "demo", "clinical", "tabular")
    assert params["prompt_missing_values"] == {"age": [], "sex": []}
    job = _job({"encoding_from": str(src)})
    job.params = params
    items = _items([("n1", {"age": -1, "sex": "F"})])
    with pytest.raises(ConfigError, match=r"age: \['-1'\] against \[\]; sex: \['-1'\] against "
                                          r"\[\]\); give the prompt the reused encoding's"):
        loop.setup(job, items)
    clinical["prompt"]["missing_values"] = [-1]
    job.params = encoder_params(cfg, "demo", "clinical", "tabular")
    loop.setup(job, items)


def test_a_missing_values_code_that_matches_no_value_is_warned_of(caplog):
    # "unknown" where the table holds "Unknown" left that value a category, silently
    d = pl.DataFrame({"status": ["Unknown", "alive", "dead"], "grade": [1, 2, 9]})
    with caplog.at_level(logging.WARNING):
        TabularEncoding(["status", "grade"], missing_values={"status": ["unknown"],
                                                             "grade": [9]}).fit(d)
    warned = [r.getMessage() for r in caplog.records if "missing_values" in r.getMessage()]
    assert warned == ["tabular.missing_values.status: ['unknown'] match(es) no value of the "
                      "data, and blank(s) nothing ('unknown' is written 'Unknown' there)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a list for every field: a code of none of them
        TabularEncoding(["status", "grade"], missing_values=[-1, 9]).fit(d)
    assert [r.getMessage() for r in caplog.records] == [
        "tabular.missing_values: ['-1'] match(es) no value of the data, and blank(s) nothing"]
