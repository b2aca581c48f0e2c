import polars as pl
import pytest

from mmpipe.errors import ConfigError
from mmpipe.preprocess.prompts import build_prompts, render_prompt

PROMPT = {"header": "Record.", "phrases": {"age": "Age {value}.", "sex": "Sex: {value}."},
          "value_maps": {"sex": {"0": "female", "1": "male"}}, "missing": "omit",
          "missing_text": "unknown"}


def test_omit_and_explicit_modes():
    row = {"age": 61.0, "sex": None, "stage": "II"}
    assert render_prompt(row, ["age", "sex", "stage"], PROMPT) == "Record. Age 61. stage: II."
    explicit = {**PROMPT, "missing": "explicit"}
    assert render_prompt(row, ["age", "sex", "stage"], explicit) == (
        "Record. Age 61. Sex: unknown. stage: II.")


def test_value_maps_and_no_field_at_all():
    assert render_prompt({"age": None, "sex": 1}, ["age", "sex"], PROMPT) == "Record. Sex: male."
    assert render_prompt({"age": None, "sex": None}, ["age", "sex"], PROMPT) is None


@pytest.mark.parametrize("value", [1, 1.0, "1", "1.0", " 1 "])
def test_a_value_map_maps_every_text_of_its_value(value):
    """A key "1" mapped 1 and 1.0 but not the text "1.0" (a column holding an "X" is read
    as text), which the tabular encoding reads as the category 1."""
    assert render_prompt({"sex": value}, ["sex"], PROMPT) == "Record. Sex: male."
    assert render_prompt({"sex": value}, ["sex"], {**PROMPT, "value_maps": {"sex": {
        1: "male"}}}) == "Record. Sex: male."


@pytest.mark.parametrize("value, shown", [(0.00005, "0.00005"), (1e-7, "0.0000001"),
                                          (0.1, "0.1"), (2.5, "2.5"), (1 / 3, "0.3333333333333333")])
def test_a_number_is_written_without_an_exponent(value, shown):
    """A lab value of 0.00005 was written "5e-05" for the text encoder to read."""
    assert render_prompt({"lab": value}, ["lab"], PROMPT) == f"Record. lab: {shown}."


@pytest.mark.parametrize("key", ["TRUE", "True", "true", True])
@pytest.mark.parametrize("value", [True, "TRUE", "true"])
def test_a_value_map_of_a_truth_value_maps_every_spelling(key, value):
    """A column of TRUE/FALSE (a spreadsheet's CSV) is read as booleans, whose canonical
    text is "true": the map key "TRUE", quoted as the config check asks, was never used
    and the prompt said "True" without a word."""
    prompt = {**PROMPT, "value_maps": {"smoker": {key: "Smoker"}}}
    assert render_prompt({"smoker": value}, ["smoker"], prompt) == "Record. smoker: Smoker."


def test_truth_value_keys_of_one_value_collide():
    from mmpipe.preprocess.prompts import value_map_collisions

    assert value_map_collisions({"TRUE": "a", "true": "b", "1": "c"}) == [["TRUE", "true"]]


@pytest.mark.parametrize("value, shown", [(6.0, "6"), ("6.0", "6"), (" 6.0 ", "6"),
                                          ("6", "6"), ("007", "007"), ("2.5", "2.5"),
                                          ("X", "X"), ("6.", "6"), ("1e3", "1e3"),
                                          ("+6.0", "6"), ("007.0", "007"),
                                          ("12345678901234567890.0",
                                           "12345678901234567890")])
def test_a_text_column_shows_an_integral_number_as_the_numbers_column_does(value, shown):
    """A column that also holds text keeps "6.0" as text: its prompt read "code: 6.0."
    where a column of numbers read "code: 6." (the tabular encoding reads both as 6)."""
    assert render_prompt({"code": value}, ["code"], PROMPT) == f"Record. code: {shown}."


def test_build_prompts_refuses_label_fields_and_unknown_columns():
    m = pl.DataFrame({"subject_id": ["a", "b"], "age": [50, None], "sex": [None, None],
                      "label": [0, 1]})
    out = build_prompts(m, ["age", "sex"], ["label"], PROMPT)
    assert out["prompt"].to_list() == ["Record. Age 50.", None]
    assert "label" not in out["prompt"][0]
    with pytest.raises(ConfigError, match="task labels"):
        build_prompts(m, ["age", "label"], ["label"], PROMPT)
    with pytest.raises(ConfigError, match="not manifest columns"):
        build_prompts(m, ["weight"], ["label"], PROMPT)
    # a mode of neither kind rendered as "omit" would hide the typo
    with pytest.raises(ConfigError, match="prompt.missing must be 'omit' or 'explicit', not 'skip'"):
        build_prompts(m, ["age"], ["label"], {**PROMPT, "missing": "skip"})


def test_a_single_precision_column_is_written_as_its_table_holds_it():
    """A Float32 column's 0.1 was written "0.10000000149011612" (its double)."""
    m = pl.DataFrame({"subject_id": ["a", "b"], "age": [0.1, 62.5]},
                     schema={"subject_id": pl.String, "age": pl.Float32})
    out = build_prompts(m, ["age"], [], PROMPT)
    assert out["prompt"].to_list() == ["Record. Age 0.1.", "Record. Age 62.5."]


def test_missing_values_codes_are_blank_and_a_row_of_codes_has_no_prompt():
    """A -1 = unknown code was rendered ("Age -1."): a subject whose every field was -1
    had a prompt of codes and was present in the text store, while the tabular store,
    told the same code, held it absent."""
    coded = {**PROMPT, "missing_values": {"age": [-1], "sex": ["-1"]}}
    m = pl.DataFrame({"subject_id": ["a", "b", "c"], "age": [-1.0, 50.0, -1.0],
                      "sex": [-1, -1, 1]})
    out = build_prompts(m, ["age", "sex"], [], coded)
    assert out["prompt"].to_list() == [None, "Record. Age 50.", "Record. Sex: male."]
    assert out["n_fields"].to_list() == [0, 1, 1]
    explicit = {**coded, "missing": "explicit"}
    assert render_prompt({"age": -1, "sex": 0}, ["age", "sex"], explicit) == (
        "Record. Age unknown. Sex: female.")
    # a code for every field
    assert render_prompt({"age": -1, "sex": -1}, ["age", "sex"],
                         {**PROMPT, "missing_values": [-1]}) is None


def test_the_text_missing_is_blank_as_the_tabular_encoding_reads_it():
    """The tabular encoding reads "missing" (any case) as blank; the prompts wrote
    "smoking: missing." and kept a subject of such values present."""
    m = pl.DataFrame({"subject_id": ["a", "b"], "age": ["Missing", "50"],
                      "sex": ["missing", None]})
    out = build_prompts(m, ["age", "sex"], [], PROMPT)
    assert out["prompt"].to_list() == [None, "Record. Age 50."]


def test_an_explicit_missing_text_that_is_also_a_value_is_refused():
    """Under missing: explicit a blank reads as missing_text: a sex recorded "Unknown"
    (its own category for the tabular encoding) and a blank sex gave one prompt."""
    manifest = pl.DataFrame({"subject_id": ["a", "b", "c"], "sex": [None, "Unknown", "1"],
                             "age": [50, 50, None]})
    explicit = {**PROMPT, "missing": "explicit"}
    with pytest.raises(ConfigError, match=r"missing_text 'unknown' is also a value of sex "
                                          r"\('Unknown'\).*list the value in missing_values"):
        build_prompts(manifest, ["sex", "age"], [], explicit)
    # the value a blank code, or another text for blanks: built
    assert build_prompts(manifest, ["sex", "age"], [], {**explicit, "missing_values": {
        "sex": ["Unknown"]}})["prompt"].to_list()[1] == "Record. Sex: unknown. Age 50."
    built = build_prompts(manifest, ["sex", "age"], [], {**explicit, "missing_text": "blank"})
    assert built["prompt"].to_list()[:2] == ["Record. Sex: blank. Age 50.",
                                             "Record. Sex: Unknown. Age 50."]
    # omitted blanks cannot collide, nor can a field without blanks
    build_prompts(manifest, ["sex", "age"], [], PROMPT)
    build_prompts(manifest.filter(pl.col("sex").is_not_null()), ["sex", "age"], [], explicit)



def test_a_missing_values_code_that_matches_no_value_is_said(caplog):
    """'unknown' where the table holds 'Unknown' left the prompts saying 'Unknown'."""
    m = pl.DataFrame({"subject_id": ["a", "b"], "sex": ["Unknown", "male"], "age": [50, 60]})
    with caplog.at_level("WARNING"):
        out = build_prompts(m, ["sex", "age"], [],
                            {**PROMPT, "missing_values": {"sex": ["unknown"]}})
    assert out["prompt"].to_list()[0] == "Record. Sex: Unknown. Age 50."
    said = [r.getMessage() for r in caplog.records if "missing_values" in r.getMessage()]
    assert said == ["prompt.missing_values.sex: ['unknown'] match(es) no value of the data, "
                    "and blank(s) nothing ('unknown' is written 'Unknown' there)"]


def test_a_value_map_that_matches_no_value_is_said(caplog):
    """Maps filed under each other's field, or m/f where the table holds 1/2, changed no
    prompt: the prompts carried the raw codes, without a word."""
    m = pl.DataFrame({"subject_id": ["a", "b"], "sex": [1, 2], "smoking": ["never", None]})
    prompt = {**PROMPT, "value_maps": {"sex": {"m": "male", "f": "female"},
                                       "smoking": {"never": "never smoked"}}}
    with caplog.at_level("WARNING"):
        out = build_prompts(m, ["sex", "smoking"], [], prompt)
    assert out["prompt"].to_list() == ["Record. Sex: 1. smoking: never smoked.",
                                       "Record. Sex: 2."]
    said = [r.getMessage() for r in caplog.records if "value_maps" in r.getMessage()]
    assert said == ["prompt.value_maps.sex: none of its keys ['f', 'm'] is a value of the "
                    "field (values: ['1', '2']): it changes no prompt"]
