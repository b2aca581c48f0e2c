"""Every method type has a family, so the plots can colour it and the summary tell
fusion from baselines and single modality."""

from __future__ import annotations

from mmpipe.methods import METHODS
from mmpipe.methods.families import (
    BASELINE_FAMILY,
    FAMILIES,
    FAMILY_ORDER,
    SIMPLE_FUSION_FAMILY,
    SINGLE_FAMILY,
)
from mmpipe.report.plots import _FAMILY_COLOURS


def test_every_method_type_has_a_known_family():
    assert set(METHODS) <= set(FAMILIES), sorted(set(METHODS) - set(FAMILIES))
    assert set(FAMILIES.values()) <= set(FAMILY_ORDER)
    assert set(FAMILY_ORDER) < set(_FAMILY_COLOURS)   # every family has a colour, and "other"


def test_baselines_and_single_modality():
    assert {t for t, f in FAMILIES.items() if f == BASELINE_FAMILY} == {"logreg", "hgb"}
    assert [t for t, f in FAMILIES.items() if f == SINGLE_FAMILY] == ["single"]


def test_generic_comparators_are_simple_fusions():
    """The summary holds the papers' methods against these: mean imputation leading was
    reported as a paper's fusion winning, where zero-filled concatenation, the same model
    with another fill value, was reported as a simple fusion leading; and BD's Filling
    (complete-case training, the absent modality filled at test time) leading was
    reported as a paper's method where HAM's Standard, the same recipe, was not."""
    assert {t for t, f in FAMILIES.items() if f == SIMPLE_FUSION_FAMILY} == {
        "concat_zero", "deepsets", "late_fusion", "standard", "mean_impute", "knn_impute",
        "bd_filling"}
