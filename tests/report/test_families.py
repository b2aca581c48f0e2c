"""Every method type has a family, so the plots can colour it and the summary tell
fusion from baselines and single modality."""

from __future__ import annotations

from mmpipe.methods import METHODS
from mmpipe.methods.families import BASELINE_FAMILY, FAMILIES, FAMILY_ORDER, SINGLE_FAMILY
from mmpipe.report.plots import _FAMILY_COLOURS


def test_every_method_type_has_a_known_family():
    assert set(METHODS) <= set(FAMILIES), sorted(set(METHODS) - set(FAMILIES))
    assert set(FAMILIES.values()) <= set(FAMILY_ORDER)
    assert set(FAMILY_ORDER) < set(_FAMILY_COLOURS)   # every family has a colour, and "other"


def test_baselines_and_single_modality():
    assert {t for t, f in FAMILIES.items() if f == BASELINE_FAMILY} == {"logreg", "hgb"}
    assert [t for t, f in FAMILIES.items() if f == SINGLE_FAMILY] == ["single"]
