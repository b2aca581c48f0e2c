"""The blank codes of a prompt block and of a tabular encoding, compared; and the tabular
encoding's jobs keyed apart from the prompts' rendering."""

from mmpipe.preprocess.blank_codes import (
    blank_code_differences,
    missing_codes,
    prompt_blank_codes,
)


def test_codes_are_read_as_the_encoding_reads_values():
    prompt = {"missing_values": {"age": [-1, "-1.0"], "stage": ["X"]}}
    assert missing_codes(prompt, "age") == {"-1"}
    assert missing_codes({"missing_values": [-1]}, "any") == {"-1"}
    assert prompt_blank_codes(prompt, ["age", "sex", "stage"]) == {
        "age": ["-1"], "sex": [], "stage": ["X"]}


def test_differences_are_said_per_field():
    codes = prompt_blank_codes({"missing_values": [-1]}, ["age", "stage"])
    assert blank_code_differences({"missing_values": [-1.0]}, codes) is None
    assert blank_code_differences({"missing_values": {"age": [-1]}}, codes) == (
        "stage: [] against ['-1']")


def test_a_tabular_store_s_code_key_leaves_out_the_prompts_rendering():
    """The tabular encoding compared its codes through the prompts module, so a change to
    how a prompt is written (its number formatting) reran every tabular store and the
    runs on them."""
    from mmpipe.codehash import module_closure
    from mmpipe.encoders.registry import ENCODER_TYPES

    closure = module_closure(ENCODER_TYPES["tabular"].code_modules())
    assert "preprocess/blank_codes" in closure and "preprocess/prompts" not in closure
