"""How often the report's statistics claim a difference where none exists, by simulation.

Two questions the report's wording rests on (``mmpipe/report/summary.py``,
``mmpipe/report/tables.py``):

1. **Seeds that re-split one cohort.** A cohort of ``--subjects`` patients with two
   exchangeable feature blocks X1 and X2 (so a logistic regression on either is equally
   good on the population) is split ``--splits`` times at random 7:1:2, as the default
   seeds do; both regressions are fitted on each split's training part and scored by
   test AUC. Over ``--cohorts`` cohorts: how often the report's exact Wilcoxon test calls
   the two different at 0.05, and how often the best's 95 % interval covers the
   procedure's AUC on the population (a large independent sample), plain t and with
   Nadeau & Bengio's correction.
2. **The † of the tables.** ``--rows`` equal methods over ``--seeds`` seeds (a shared
   seed effect plus each method's noise): how often a block shows any †, whose reference
   is the best on the same runs (:func:`mmpipe.report.stats.wilcoxon_vs_best`).

    python benchmarks/report_statistics.py

Pure NumPy and scikit-learn on the CPU; about a minute on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from mmpipe.report.aggregate import summarise
from mmpipe.report.stats import paired_p, wilcoxon_vs_best
from mmpipe.report.summary import t_interval


def _cohort(rng, n: int, d: int = 5):
    """Labels from a logit equal in two exchangeable blocks, and each block's features."""
    y = rng.integers(0, 2, n)
    x1 = rng.normal(size=(n, d)) + 0.25 * y[:, None]
    x2 = rng.normal(size=(n, d)) + 0.25 * y[:, None]
    return x1, x2, y


def _auc(x_train, y_train, x_test, y_test) -> float:
    model = LogisticRegression(max_iter=500).fit(x_train, y_train)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def resplit(cohorts: int, subjects: int, splits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # the procedure's population AUC: fitted on training-sized samples, scored on a large one
    xa, _, ya = _cohort(rng, 200_000)
    n_train, n_test = int(0.7 * subjects), subjects - int(0.8 * subjects)
    fits = []
    for _ in range(200):
        x, _, y = _cohort(rng, n_train)
        fits.append(_auc(x, y, xa, ya))
    truth = float(np.mean(fits))
    false_calls = plain_cover = corrected_cover = 0
    for _ in range(cohorts):
        x1, x2, y = _cohort(rng, subjects)
        a, b = [], []
        for _ in range(splits):
            order = rng.permutation(subjects)
            train, test = order[:n_train], order[subjects - n_test:]
            a.append(_auc(x1[train], y[train], x1[test], y[test]))
            b.append(_auc(x2[train], y[train], x2[test], y[test]))
        p = paired_p(np.array(a), np.array(b))
        false_calls += p is not None and p < 0.05
        lo, hi = t_interval(a)
        plain_cover += lo <= truth <= hi
        lo, hi = t_interval(a, test_train_ratio=n_test / n_train)
        corrected_cover += lo <= truth <= hi
    print(f"re-split seeds: {cohorts} cohorts of {subjects} subjects, {splits} random 7:1:2 "
          f"splits each; population AUC of the procedure {truth:.4f}")
    print(f"  two-sided Wilcoxon p < 0.05 between equal methods: {false_calls / cohorts:.3f}")
    print(f"  95 % t interval covers the population AUC: plain {plain_cover / cohorts:.3f}, "
          f"Nadeau-Bengio corrected {corrected_cover / cohorts:.3f}")


def dagger(rows: list[int], seeds: int, reps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    print(f"† over blocks of equal methods, {seeds} seeds, {reps} blocks each:")
    for k in rows:
        marked = 0
        for _ in range(reps):
            effect = rng.normal(0.7, 0.03, seeds)
            runs = pl.DataFrame([
                {"cohort": "c", "scenario": "natural", "rate": 0.0, "feature_set": "all",
                 "method": f"m{i:02d}", "method_type": "m", "seed": s,
                 "auc": float(effect[s] + rng.normal(0, 0.03))}
                for i in range(k) for s in range(seeds)])
            table = wilcoxon_vs_best(runs, summarise(runs), ["auc"])
            marked += bool((table["auc_p_holm"].fill_null(1.0) < 0.05).any())
        print(f"  {k:3d} rows: a block with any †: {marked / reps:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohorts", type=int, default=200)
    parser.add_argument("--subjects", type=int, default=618)  # MMIST-ccRCC's
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--rows", type=int, nargs="+", default=[5, 20, 25])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    resplit(args.cohorts, args.subjects, args.splits, args.seed)
    dagger(args.rows, args.seeds, args.blocks, args.seed)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
