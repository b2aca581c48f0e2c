"""Splits: patient-disjoint, reproducible per seed, stratified with a label-only fallback."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from mmpipe.bench.splits import (
    read_split,
    read_split_source,
    split_groups,
    stratified_split,
    user_split,
    write_split,
)
from mmpipe.errors import ConfigError, InputError


def _cohort(n=200, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"P{i:04d}" for i in range(n)]
    y = rng.integers(0, 3, n)
    patterns = rng.choice(["ct", "ct+wsi", "wsi", "ct+rna+wsi", "rna"], n,
                          p=[0.35, 0.35, 0.2, 0.06, 0.04])
    return ids, y, patterns


def _assignment(df: pl.DataFrame) -> dict[str, str]:
    return dict(zip(df["subject_id"].to_list(), df["split"].to_list(), strict=True))


def test_patient_disjoint_complete_and_ratio_counts():
    ids, y, pats = _cohort()
    df = stratified_split(ids, y, pats, seed=0)
    assert df.columns == ["subject_id", "split"]
    assert df["subject_id"].to_list() == ids                  # input order, every subject once
    parts = {s: set(df.filter(pl.col("split") == s)["subject_id"]) for s in ("train", "val", "test")}
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"]
                or parts["val"] & parts["test"])
    assert sum(len(p) for p in parts.values()) == len(ids)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [120, 20, 60]


def test_reproducible_per_seed_and_independent_of_input_order():
    ids, y, pats = _cohort()
    a = stratified_split(ids, y, pats, seed=3)
    assert a.equals(stratified_split(ids, y, pats, seed=3))
    assert not a.equals(stratified_split(ids, y, pats, seed=4))
    perm = np.random.default_rng(1).permutation(len(ids))
    b = stratified_split([ids[i] for i in perm], y[perm], pats[perm], seed=3)
    assert _assignment(a) == _assignment(b)


def test_stratified_by_label_and_pattern():
    ids, y, pats = _cohort(n=400)
    df = stratified_split(ids, y, pats, seed=0)
    split = np.array(df["split"].to_list())
    strata = Counter(zip(y.tolist(), pats.tolist(), strict=True))
    for (lab, pat), size in strata.items():
        sel = (y == lab) & (pats == pat)
        got = Counter(split[sel].tolist())
        if size >= 10:  # large stratum: at least one in every split, proportional +- 1
            for name, ratio in (("train", 0.6), ("val", 0.1), ("test", 0.3)):
                assert got[name] >= 1
                assert abs(got[name] - size * ratio) <= 1.5, (lab, pat, got)
    for lab in range(3):  # each label, small strata included, follows the ratios
        got = Counter(split[y == lab].tolist())
        size = int((y == lab).sum())
        for name, ratio in (("train", 0.6), ("val", 0.1), ("test", 0.3)):
            assert abs(got[name] - size * ratio) <= 2.5, (lab, got)


def test_small_strata_fall_back_to_label():
    # label 0: 30 complete subjects (own stratum) + 4 + 4 + 2 in rare patterns -> merged (10)
    ids = [f"s{i}" for i in range(40)]
    y = [0] * 40
    pats = ["a+b"] * 30 + ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    df = stratified_split(ids, y, pats, seed=0)
    split = np.array(df["split"].to_list())
    rare = Counter(split[30:].tolist())
    assert (rare["train"], rare["val"], rare["test"]) == (6, 1, 3)
    common = Counter(split[:30].tolist())
    assert (common["train"], common["val"], common["test"]) == (18, 3, 9)
    # a larger threshold merges the complete stratum too: still 6:1:3 overall
    df = stratified_split(ids, y, pats, seed=0, min_per_stratum=50)
    assert Counter(df["split"].to_list()) == {"train": 24, "val": 4, "test": 12}


def test_tiny_cohort_and_custom_ratios():
    df = stratified_split(["a", "b", "c"], [0, 1, 0], ["x", "x", "x"], seed=0)
    assert df.height == 3
    df = stratified_split([str(i) for i in range(10)], [0, 1] * 5, ["x"] * 10, seed=0,
                          ratios=(0.8, 0.0, 0.2))
    assert Counter(df["split"].to_list()) == {"train": 8, "test": 2}


def test_duplicates_and_bad_ratios_raise():
    with pytest.raises(InputError, match="duplicate"):
        stratified_split(["a", "b", "a"], [0, 1, 0], ["x"] * 3, seed=0)
    with pytest.raises(ConfigError):
        stratified_split(["a", "b"], [0, 1], ["x"] * 2, seed=0, ratios=(0.5, 0.1, 0.1))


def test_write_read_round_trip(tmp_path):
    ids, y, pats = _cohort(n=50)
    df = stratified_split(ids, y, pats, seed=0)
    path = write_split(df, tmp_path / "splits" / "seed0.parquet")
    assert read_split(path).equals(df)
    assert not list(path.parent.glob("*.tmp-*"))
    pl.DataFrame({"subject_id": ["a"], "split": ["holdout"]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="holdout"):
        read_split(tmp_path / "bad.parquet")


def _user_parts(ids, y, val=False):
    """A published-style split: every third subject is test (and every tenth of the rest
    val when ``val``)."""
    parts = ["test" if i % 3 == 0 else "train" for i in range(len(ids))]
    if val:
        parts = ["val" if p == "train" and i % 10 == 1 else p for i, p in enumerate(parts)]
    return parts


def test_user_split_fixes_the_test_set_and_draws_train_val_per_seed():
    ids, y, pats = _cohort()
    parts = _user_parts(ids, y)
    test = {s for s, p in zip(ids, parts, strict=True) if p == "test"}
    splits = [_assignment(user_split(ids, y, pats, parts, seed=s)) for s in range(3)]
    for a in splits:
        assert {s for s, p in a.items() if p == "test"} == test       # the user's, every seed
        train_part = [s for s in ids if s not in test]
        # 6:1 of the training part: ratios (0.6, 0.1, 0.3) without the test share
        assert Counter(a[s] for s in train_part) == {"train": 114, "val": 19}
    vals = [{s for s, p in a.items() if p == "val"} for a in splits]
    assert vals[0] != vals[1] and vals[1] != vals[2]                # drawn per seed
    again = _assignment(user_split(ids, y, pats, parts, seed=1))
    assert again == splits[1]


def test_user_split_stratifies_its_training_part():
    ids, y, pats = _cohort(n=400)
    parts = _user_parts(ids, y)
    split = _assignment(user_split(ids, y, pats, parts, seed=0))
    for lab in range(3):
        members = [s for s, v, p in zip(ids, y, parts, strict=True) if v == lab and p == "train"]
        got = Counter(split[s] for s in members)
        assert abs(got["val"] - len(members) / 7) <= 2.5, (lab, got)


def test_a_user_split_naming_val_is_the_same_for_every_seed():
    ids, y, pats = _cohort()
    parts = _user_parts(ids, y, val=True)
    for seed in range(3):
        assert user_split(ids, y, pats, parts, seed=seed)["split"].to_list() == parts


def test_a_user_split_needs_every_subject_in_a_train_and_test_part():
    ids, y, pats = _cohort(n=20)
    parts = _user_parts(ids, y)
    with pytest.raises(InputError, match=r"'P0001'.*no part"):
        user_split(ids, y, pats, [None if i == 1 else p for i, p in enumerate(parts)], seed=0)
    with pytest.raises(InputError, match="no labelled subject in 'test'"):
        user_split(ids, y, pats, ["train"] * len(ids), seed=0)
    with pytest.raises(InputError, match="holdout"):
        user_split(ids, y, pats, ["holdout", *parts[1:]], seed=0)


def test_a_split_file_records_its_source(tmp_path):
    ids, y, pats = _cohort(n=30)
    parts = _user_parts(ids, y)
    path = write_split(user_split(ids, y, pats, parts, seed=0), tmp_path / "seed0.parquet",
                       source="column split", fixed=("test",))
    assert read_split_source(path) == {"source": "column split", "fixed": ["test"]}
    assert read_split(path).columns == ["subject_id", "split"]     # stage 2 reads it as before
    drawn = write_split(stratified_split(ids, y, pats, seed=0), tmp_path / "seed1.parquet")
    assert read_split_source(drawn) == {"source": "drawn", "fixed": []}


def test_a_rare_label_reaches_every_part():
    """6 positives in 100, placed by rounding alone: validation had none in 4 seeds of 5
    (its AUC NaN, early stopping and the trial choice blind), without a warning."""
    ids = [f"s{i:03d}" for i in range(100)]
    y = [1 if i % 17 == 0 else 0 for i in range(100)][:94] + [0] * 6
    assert sum(y) == 6
    for seed in range(5):
        split = stratified_split(ids, y, ["a"] * 100, seed=seed)
        positives = Counter(s for s, lab in zip(split["split"], y, strict=True) if lab)
        assert set(positives) == {"train", "val", "test"}, (seed, positives)
        assert Counter(split["split"])["val"] in (10, 11)  # one moved, at most


def test_a_label_too_rare_for_every_part_is_said(caplog):
    ids = [f"s{i:02d}" for i in range(40)]
    y = [1, 1] + [0] * 38
    split = stratified_split(ids, y, ["a"] * 40, seed=0)
    missing = sorted({"train", "val", "test"} - set(split["split"][:2]))
    assert f"label '1' has 2 subject(s), fewer than the 3 parts: {', '.join(missing)}" in (
        caplog.text)


def test_a_split_group_lands_in_one_part_and_no_group_changes_nothing(caplog):
    """Two subjects of one patient (BreakHis's folders of one accession number, two
    visits of a CSV cohort) were split like strangers: one patient's tissue in training
    and in test. Drawn as units, groups keep the ratios and a label in every part (moved
    after the draw, they emptied validation in small cohorts and pulled val and test
    toward train)."""
    import logging

    ids, y, pats = _cohort()
    groups = [f"G{i // 3}" if i < 90 else None for i in range(len(ids))]  # 30 groups of 3
    shares = Counter()
    for seed in range(5):
        plain = stratified_split(ids, y, pats, seed=seed)
        grouped = _assignment(stratified_split(ids, y, pats, seed=seed, groups=groups))
        for g in range(30):
            assert len({grouped[ids[i]] for i in range(3 * g, 3 * g + 3)}) == 1, (seed, g)
        shares.update(grouped.values())
        assert stratified_split(ids, y, pats, seed=seed, groups=[None] * len(ids)).equals(plain)
    # 140 units (30 groups, 110 subjects) at 6:1:3: a part's subjects near its ratio
    assert abs(shares["val"] / 1000 - 0.1) < 0.03 and abs(shares["test"] / 1000 - 0.3) < 0.05
    # ten patients of two visits, three of them positive: every part keeps both labels
    small_ids = [f"v{i:02d}" for i in range(20)]
    small_y = [1 if i < 6 else 0 for i in range(20)]
    for seed in range(20):
        split = _assignment(stratified_split(small_ids, small_y, ["a"] * 20, seed=seed,
                                             groups=[f"g{i // 2}" for i in range(20)]))
        for part in ("train", "val", "test"):
            assert {small_y[i] for i, s in enumerate(small_ids) if split[s] == part} == {0, 1}
    # a user's fixed test part is not moved: a group across it is said and kept
    parts = _user_parts(ids, y)
    first_test = next(i for i, p in enumerate(parts) if p == "test")
    first_train = next(i for i, p in enumerate(parts) if p == "train")
    across = [None] * len(ids)
    across[first_test] = across[first_train] = "P"
    with caplog.at_level(logging.WARNING):
        split = user_split(ids, y, pats, parts, seed=0, groups=across)
    assert split["split"][first_test] == "test"
    assert "group 'P' lies in parts" in caplog.text


def test_the_split_file_carries_the_groups_to_the_training_part(tmp_path):
    """Cross-validation inside the training part reads the groups from the split file;
    a cohort without groups writes the two columns it always wrote."""
    ids, y, pats = _cohort()
    groups = [f" G{i // 3} " if i < 90 else "" for i in range(len(ids))]
    path = write_split(stratified_split(ids, y, pats, seed=0, groups=groups),
                       tmp_path / "split.parquet")
    assert split_groups(read_split(path)) == {ids[i]: f"G{i // 3}" for i in range(90)}
    split = user_split(ids, y, pats, _user_parts(ids, y), seed=0, groups=groups)
    assert split_groups(split) == {ids[i]: f"G{i // 3}" for i in range(90)}
    plain = write_split(stratified_split(ids, y, pats, seed=0), tmp_path / "plain.parquet")
    assert read_split(plain).columns == ["subject_id", "split"]
    assert split_groups(read_split(plain)) == {}
