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
