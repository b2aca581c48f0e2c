"""Canonical parameter sets: key order never matters, list order always does."""

from __future__ import annotations

from mmpipe.hashing import canonical, params_hash


def test_params_hash_ignores_key_order_at_every_depth():
    assert params_hash({"a": 1, "b": {"x": 1, "y": [1, 2]}}) == params_hash(
        {"b": {"y": [1, 2], "x": 1}, "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_lists_keep_their_order():
    assert params_hash({"fields": ["age", "sex"]}) != params_hash({"fields": ["sex", "age"]})


def test_canonical_repr_is_the_same_for_reordered_mappings():
    # Snakemake compares repr(params): the canonical form must print the same
    one = canonical({"b": 1, "a": {"d": (1, 2), "c": None}})
    two = canonical({"a": {"c": None, "d": [1, 2]}, "b": 1})
    assert repr(one) == repr(two)
