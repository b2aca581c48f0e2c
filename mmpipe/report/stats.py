"""Paired significance of each method against the best one of its block.

Runs of one cohort that share a seed share the split and the missingness mask, so two
methods' results on a seed are paired: the Wilcoxon signed-rank test over seeds asks
whether one is consistently better. With n seeds the smallest two-sided p it can give is
2/2^n (0.25 for 3 seeds, 0.0625 for 5, 0.002 for 10): too few seeds can never show a
difference, and the tables say so rather than hide it.

The test is computed here rather than by ``scipy.stats.wilcoxon``, whose exact method
ignores ties: metrics of a test split of a few dozen subjects move in steps (1/20, ...),
so equal differences between seeds are common, and as floats they differ in the last
bits (0.05 and 0.04999999999999993), which ranked them by rounding noise. Differences are
rounded to :data:`DECIMALS` places, tied ones share their average rank, and the p is
exact under the signs' null distribution of those ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy.stats import rankdata

from mmpipe.report.tables import LOWER_IS_BETTER, SHOWN_DECIMALS


def min_wilcoxon_p(n: int, alternative: str = "two-sided") -> float:
    """Smallest p of the exact signed-rank test with ``n`` non-zero pairs: 2/2^n two-sided,
    1/2^n one-sided (every pair in the tested direction)."""
    if n <= 0:
        return 1.0
    return (2.0 if alternative == "two-sided" else 1.0) / 2**n


# metrics are fractions: differences closer than this are one step seen through rounding
DECIMALS = 9
ALTERNATIVES = ("two-sided", "greater", "less")


def paired_p(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> float | None:
    """Exact Wilcoxon signed-rank p of paired samples, ties given their average rank (NaN
    pairs dropped, zero differences dropped too: Wilcoxon's zero method);
    ``alternative="greater"`` tests a > b. 1.0 when every pair is equal, None with fewer
    than two pairs."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    tails = paired_tails(a, b)
    if tails is None:
        return None
    greater, less = tails
    if alternative == "greater":
        return greater
    if alternative == "less":
        return less
    return two_sided(tails)


def two_sided(tails: tuple[float, float]) -> float:
    """The two-sided p of :func:`paired_tails`' one-sided pair."""
    return min(1.0, 2 * min(tails))


def paired_tails(a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
    """Both one-sided p of :func:`paired_p`, ``(a > b, a < b)``, from one count of the
    sign patterns."""
    keep = ~(np.isnan(a) | np.isnan(b))
    if int(keep.sum()) < 2:
        return None
    d = np.round(a[keep] - b[keep], DECIMALS)
    d = d[d != 0]
    if not len(d):
        return 1.0, 1.0
    # average ranks are multiples of 1/2: doubled, every sum of them is an integer
    ranks = np.rint(2 * rankdata(np.abs(d))).astype(int)
    observed = int(ranks[d > 0].sum())
    counts = [1]  # counts[t]: sign patterns whose positive ranks sum to t (doubled)
    for r in ranks:
        counts = [c + (counts[t - r] if t >= r else 0)
                  for t, c in enumerate(counts + [0] * int(r))]
    patterns = 2 ** len(d)
    greater = sum(counts[observed:]) / patterns   # P(T+ >= observed)
    less = sum(counts[:observed + 1]) / patterns  # P(T+ <= observed)
    return greater, less


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of ``ps`` (None kept, and not counted): a block of
    rows each tested against its best makes many tests, and under no difference at all
    uncorrected p < 0.05 marked a row in a quarter of 5-row blocks and in most 20-row
    ones. Holm holds the chance of any false mark in a block at the level for a reference
    fixed in advance; :func:`wilcoxon_vs_best` picks its reference as the best on the same
    runs, which Holm does not cover (the tables say how often that marks equal rows)."""
    order = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * p))
        out[i] = running
    return out


def wilcoxon_vs_best(runs: pl.DataFrame, summary: pl.DataFrame, metrics: Sequence[str],
                     group: Sequence[str] = ("cohort", "scenario", "rate"),
                     row: Sequence[str] = ("feature_set", "method")) -> pl.DataFrame:
    """``summary`` with ``{metric}_p``: the p of each row against the best mean of its
    group on that metric, paired by seed (null for a best row itself and where fewer
    than two seeds pair), ``{metric}_p_holm``: those p Holm-adjusted over the rows of the
    group (:func:`holm`; what the tables' † reads), ``{metric}_complete``: the row has a
    value on every seed it ran, and ``{metric}_best_row`` true on the best rows. The best
    is chosen among the complete rows (any row when none is): a mean over the few seeds
    that trained is no fair contest, and the summary ranks the same way. Rows level with
    the best at the tables' precision are all best, as the tables bold
    them, and another row's p is its largest against any of them: a reference picked
    among a tie by name had made a row's † depend on the names."""
    group = [c for c in group if c in summary.columns]
    row = [c for c in row if c in summary.columns]
    keys = group + row
    by_seed = {m: _by_seed(runs, keys, m) for m in metrics}
    out = []
    for _, part in summary.group_by(group, maintain_order=True):
        extra: dict[str, list] = {}
        for m in metrics:
            col = f"{m}_mean"
            ps: list[float | None] = [None] * len(part)
            best_flags = [False] * len(part)
            complete = [False] * len(part)
            if col in part.columns:
                means = np.array([np.nan if v is None else v for v in part[col].to_list()],
                                 dtype=float)
                ids = part.select(keys).rows()
                n_runs = part["n_seeds"].to_list() if "n_seeds" in part.columns else None
                for i, key in enumerate(ids):
                    vals = by_seed[m].get(key, {})
                    valued = sum(not math.isnan(v) for v in vals.values())
                    complete[i] = bool(valued) and valued == (n_runs[i] if n_runs else len(vals))
                # Python's rounding, as the tables bold (numpy's differs at half-way values)
                ranked = np.array([round(v, SHOWN_DECIMALS) if not math.isnan(v) else v
                                   for v in (np.where(complete, means, np.nan)
                                             if any(complete) else means).tolist()])
                if not np.isnan(ranked).all():
                    top = np.nanmin(ranked) if m in LOWER_IS_BETTER else np.nanmax(ranked)
                    bests = [int(b) for b in np.flatnonzero(ranked == top)]
                    for b in bests:
                        best_flags[b] = True
                    for i in range(len(part)):
                        if best_flags[i] or math.isnan(means[i]):
                            continue
                        vals = by_seed[m].get(ids[i], {})
                        against = []
                        for b in bests:
                            best_vals = by_seed[m].get(ids[b], {})
                            seeds = sorted(set(best_vals) & set(vals))
                            against.append(paired_p(np.array([vals[s] for s in seeds]),
                                                    np.array([best_vals[s] for s in seeds])))
                        ps[i] = None if None in against else max(against)
            extra[f"{m}_p"] = ps
            extra[f"{m}_p_holm"] = holm(ps)
            extra[f"{m}_complete"] = complete
            extra[f"{m}_best_row"] = best_flags
        out.append(part.with_columns(
            [pl.Series(k, v, dtype=pl.Float64 if k.endswith(("_p", "_p_holm")) else pl.Boolean)
             for k, v in extra.items()]))
    return pl.concat(out, how="vertical_relaxed") if out else summary


def _by_seed(runs: pl.DataFrame, keys: Sequence[str], metric: str
             ) -> dict[tuple, dict[int, float]]:
    """``metric`` of every run, by its ``keys`` values then its seed (one pass over ``runs``)."""
    if metric not in runs.columns:
        return {}
    index: dict[tuple, dict[int, float]] = {}
    for *key, seed, v in runs.select(*keys, "seed", metric).iter_rows():
        index.setdefault(tuple(key), {})[int(seed)] = np.nan if v is None else float(v)
    return index
