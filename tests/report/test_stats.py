"""Wilcoxon signed-rank against the best method of a block, paired by seed."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
from scipy.stats import rankdata, wilcoxon

from mmpipe.report.aggregate import summarise
from mmpipe.report.stats import holm, min_wilcoxon_p, paired_p, wilcoxon_vs_best
from mmpipe.report.tables import format_table


def _runs(n_seeds: int) -> pl.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for seed in range(n_seeds):
        noise = rng.normal(0, 0.01)
        for method, base in (("best", 0.80), ("close", 0.79), ("worse", 0.60)):
            # "close" is worse on average but better on some seeds
            jitter = (-1) ** seed * 0.02 if method == "close" else 0.0
            rows.append({"cohort": "c", "feature_set": "fs", "method": method,
                         "scenario": "natural", "rate": 0.0, "seed": seed,
                         "auc": base + noise + jitter, "ece": 0.1})
    return pl.DataFrame(rows)


def test_paired_p_matches_scipy_and_handles_ties_and_few_pairs():
    a, b = np.array([0.7, 0.8, 0.75, 0.9, 0.6]), np.array([0.6, 0.7, 0.70, 0.8, 0.5])
    assert paired_p(a, b) == pytest.approx(wilcoxon(a, b, method="exact").pvalue)
    assert paired_p(a, a.copy()) == 1.0
    assert paired_p(np.array([0.5, np.nan]), np.array([0.4, 0.3])) is None
    assert min_wilcoxon_p(3) == 0.25 and min_wilcoxon_p(5) == 0.0625


def _enumerated_p(d: np.ndarray, alternative: str) -> float:
    """The signed-rank p by listing every sign pattern of the average ranks."""
    d = d[d != 0]
    ranks = rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    sums = np.array([ranks[np.array(signs)].sum()
                     for signs in itertools.product((False, True), repeat=len(d))])
    ge, le = np.mean(sums >= observed - 1e-9), np.mean(sums <= observed + 1e-9)
    return {"greater": ge, "less": le, "two-sided": min(1.0, 2 * min(ge, le))}[alternative]


def test_paired_p_matches_scipy_without_ties():
    rng = np.random.default_rng(0)
    for n in (2, 3, 6, 9):
        a, b = rng.random(n), rng.random(n)
        for alternative in ("two-sided", "greater", "less"):
            assert paired_p(a, b, alternative) == pytest.approx(
                wilcoxon(a, b, method="exact", alternative=alternative).pvalue, abs=1e-12)


def test_tied_differences_share_their_rank_whatever_the_float_noise():
    """Six seeds, the same differences (+0.10, four +0.05, one -0.05) on different
    accuracies: as floats the 0.05s differ in their last bits, which ranked them by noise
    (scipy's exact p moved from 0.031 to 0.156 with the accuracies, and ignores ties)."""
    d = np.array([0.10, 0.05, 0.05, 0.05, 0.05, -0.05])
    ps = set()
    for base in ([0.7, 0.45, 0.5, 0.65, 0.75, 0.65], [0.5, 0.45, 0.55, 0.6, 0.45, 0.7],
                 [0.6, 0.55, 0.65, 0.5, 0.7, 0.75]):
        a = np.array(base)
        b = a - d
        assert len(set(np.abs(a - b))) > 2  # the noise is there
        ps.add(paired_p(a, b, "greater"))
        assert paired_p(a, b) == pytest.approx(_enumerated_p(d, "two-sided"))
    assert len(ps) == 1 and ps.pop() == pytest.approx(6 / 64)
    assert 6 / 64 == pytest.approx(_enumerated_p(d, "greater"))
    rng = np.random.default_rng(1)
    for _ in range(30):  # steps of 1/20, as a balanced accuracy on a small split
        d = rng.integers(-3, 4, size=int(rng.integers(2, 9))) / 20
        if not d.any():
            continue
        for alternative in ("two-sided", "greater", "less"):
            assert paired_p(d + 0.3, np.full(len(d), 0.3), alternative) == pytest.approx(
                _enumerated_p(d, alternative))


def test_consistently_worse_method_is_flagged_only_with_enough_seeds():
    for n_seeds, flagged in ((3, False), (8, True)):
        runs = _runs(n_seeds)
        summary = wilcoxon_vs_best(runs, summarise(runs), ["auc", "ece"])
        by = {r["method"]: r for r in summary.iter_rows(named=True)}
        assert by["best"]["auc_best_row"] and by["best"]["auc_p"] is None
        assert (by["worse"]["auc_p"] < 0.05) is flagged
        assert by["worse"]["auc_p"] == pytest.approx(min_wilcoxon_p(n_seeds))
        assert by["close"]["auc_p"] > 0.05
        # identical ECE on every seed: level with the best, so one of the best rows
        assert by["worse"]["ece_best_row"] and by["worse"]["ece_p"] is None
        md = format_table(summary, metrics=["auc"])["md"]
        worse_line = next(line for line in md.splitlines() if line.startswith("| worse"))
        assert ("†" in worse_line) is flagged
        csv = format_table(summary, metrics=["auc"])["csv"]
        assert "auc_p_vs_best_holm" in csv.splitlines()[0]


def test_a_row_with_untrained_seeds_is_neither_the_best_nor_the_reference():
    """A method that trained on one seed of five has a mean over that seed only: it was
    bold and the row every † was measured against (so the others' p were empty)."""
    runs = _runs(5)
    lucky = runs.filter(pl.col("method") == "worse").with_columns(
        pl.lit("lucky").alias("method"),
        pl.when(pl.col("seed") == 0).then(0.99).otherwise(None).alias("auc"))
    runs = pl.concat([runs, lucky])
    summary = wilcoxon_vs_best(runs, summarise(runs), ["auc"])
    by = {r["method"]: r for r in summary.iter_rows(named=True)}
    assert not by["lucky"]["auc_complete"] and by["best"]["auc_complete"]
    assert by["best"]["auc_best_row"] and not by["lucky"]["auc_best_row"]
    assert by["worse"]["auc_p"] == pytest.approx(min_wilcoxon_p(5))  # against "best"
    md = format_table(summary, metrics=["auc"])["md"]
    rows = {line.split("|")[1].strip(): line for line in md.splitlines()
            if line.startswith("| ")}
    assert "**" in rows["best"] and "**" not in rows["lucky"]


def test_holm_adjusts_in_step_down_order_and_keeps_the_missing():
    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([None]) == [None]


def _block(values: dict[str, list[float]]) -> pl.DataFrame:
    return pl.DataFrame([{"cohort": "c", "feature_set": "f", "method": m, "scenario": "natural",
                          "rate": 0.0, "seed": s, "auc": v}
                         for m, vals in values.items() for s, v in enumerate(vals)])


def test_a_dagger_is_corrected_for_the_rows_of_its_block():
    """Each row is tested against the block's best: under no difference at all, raw
    p < 0.05 marked some row of most blocks of 10 or more rows. Three rows each behind
    on all 6 seeds (raw p 1/32) are not marked: 3 × 1/32 is above 0.05."""
    best = [0.80, 0.81, 0.82, 0.80, 0.81, 0.82]
    runs = _block({"best": best, **{f"m{i}": [v - 0.05 - 0.01 * i for v in best]
                                    for i in range(3)}})
    summary = wilcoxon_vs_best(runs, summarise(runs), ["auc"])
    by = {r["method"]: r for r in summary.iter_rows(named=True)}
    assert all(by[f"m{i}"]["auc_p"] == pytest.approx(min_wilcoxon_p(6)) for i in range(3))
    assert all(by[f"m{i}"]["auc_p_holm"] == pytest.approx(3 * min_wilcoxon_p(6))
               for i in range(3))
    assert not any("†" in line for line in _table_rows(summary))
    # one row behind: one test, as before
    runs = _block({"best": best, "m0": [v - 0.05 for v in best]})
    assert any("†" in line for line in _table_rows(wilcoxon_vs_best(runs, summarise(runs),
                                                                    ["auc"])))


def _table_rows(summary: pl.DataFrame) -> list[str]:
    return [line for line in format_table(summary, metrics=["auc"])["md"].splitlines()
            if line.startswith("| ")]


@pytest.mark.parametrize("names", [("steady", "swing", "other"), ("b_steady", "a_swing", "other")])
def test_a_rows_dagger_does_not_depend_on_which_of_a_tied_best_is_named_first(names):
    """Two rows level for best at the printed precision are both bold; the reference of
    the † test was the first by name, so "other" was marked against the steady one (p
    1/128) and not against the swinging one (p 0.28) by the names alone."""
    steady, swing, other = names
    runs = _block({steady: [0.60] * 8, swing: [0.70, 0.50] * 4, other: [0.55] * 8})
    summary = wilcoxon_vs_best(runs, summarise(runs), ["auc"])
    by = {r["method"]: r for r in summary.iter_rows(named=True)}
    assert by[steady]["auc_best_row"] and by[swing]["auc_best_row"]
    assert by[other]["auc_p"] == pytest.approx(paired_p(np.array([0.55] * 8),
                                                        np.array([0.70, 0.50] * 4)))
    assert by[other]["auc_p"] > 0.05
    other_line = next(line for line in format_table(summary, metrics=["auc"])["md"]
                      .splitlines() if line.startswith(f"| {other}"))
    assert "†" not in other_line


def test_the_best_rows_are_those_the_tables_bold_at_half_way_values():
    """numpy's rounding of 0.6255 gives 0.626 where Python's (the tables') gives 0.625:
    A was a best row, without a p, while the table bolded B alone."""
    runs = _block({"A": [0.6255] * 5, "B": [0.6258] * 5})
    summary = wilcoxon_vs_best(runs, summarise(runs), ["auc"])
    by = {r["method"]: r for r in summary.iter_rows(named=True)}
    assert by["B"]["auc_best_row"] and not by["A"]["auc_best_row"]
    assert by["A"]["auc_p"] is not None
    rows = {line.split("|")[1].strip(): line for line in _table_rows(summary)}
    assert "**" in rows["B"] and "**" not in rows["A"]
