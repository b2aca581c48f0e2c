"""``benchmarks/selection_defaults.py``'s variants: a trainer setting goes to the fit, a
method's hyper-parameter to the method (HyperMM's ``adapter_dim`` was measured so)."""

from __future__ import annotations

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from selection_defaults import SETTINGS, split_variant  # noqa: E402


def test_a_variant_splits_into_trainer_settings_and_method_hyperparameters():
    assert split_variant({"monitor": "loss", "min_epochs": 5, "adapter_dim": 512}) == (
        {"monitor": "loss", "min_epochs": 5}, {"adapter_dim": 512})
    assert split_variant({}) == ({}, {})
    # the default variants are trainer settings alone, as the script compared them before
    assert all(split_variant(s) == (s, {}) for s in SETTINGS)
