"""Wilcoxon signed-rank against the best method of a block, paired by seed."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import wilcoxon

from mmpipe.report.aggregate import summarise
from mmpipe.report.stats import min_wilcoxon_p, paired_p, wilcoxon_vs_best
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


def test_consistently_worse_method_is_flagged_only_with_enough_seeds():
    for n_seeds, flagged in ((3, False), (8, True)):
        runs = _runs(n_seeds)
        summary = wilcoxon_vs_best(runs, summarise(runs), ["auc", "ece"])
        by = {r["method"]: r for r in summary.iter_rows(named=True)}
        assert by["best"]["auc_best_row"] and by["best"]["auc_p"] is None
        assert (by["worse"]["auc_p"] < 0.05) is flagged
        assert by["worse"]["auc_p"] == pytest.approx(min_wilcoxon_p(n_seeds))
        assert by["close"]["auc_p"] > 0.05
        assert by["worse"]["ece_p"] == 1.0   # identical ECE on every seed
        md = format_table(summary, metrics=["auc"])["md"]
        worse_line = next(line for line in md.splitlines() if line.startswith("| worse"))
        assert ("†" in worse_line) is flagged
        csv = format_table(summary, metrics=["auc"])["csv"]
        assert "auc_p_vs_best" in csv.splitlines()[0]
