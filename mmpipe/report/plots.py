"""Figures of the benchmark: metric vs missing rate, radar per rate, performance vs
trainable parameters, and a per-modality-pattern heat map.

Each function draws from the tables of :mod:`mmpipe.report.aggregate`, writes a PNG (or
SVG/PDF, by the suffix of ``out``) atomically and returns its path. Figures are built
without pyplot (``matplotlib.figure.Figure`` renders with Agg), so no global backend or
display is touched. When there is nothing to draw the figure says so in words, so a
workflow's declared outputs always exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmpipe.fsutil import atomic_file
from mmpipe.report.tables import LOWER_IS_BETTER, group_label, metric_label

DPI = 150


def _figure(size: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight")
    return out


def _empty(out: str | Path, title: str, message: str) -> Path:
    fig = _figure((6, 3))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return _save(fig, out)


def _series_labels(df: pl.DataFrame) -> pl.DataFrame:
    """A ``series`` column naming each line: the method, plus the feature set (and cohort)
    when the table holds several."""
    parts = [pl.col("method")]
    extra = [c for c in ("feature_set", "cohort") if c in df.columns and df[c].n_unique() > 1]
    if not extra:
        return df.with_columns(pl.col("method").alias("series"))
    return df.with_columns(pl.concat_str([*parts, pl.lit(" ["),
                                          pl.concat_str([pl.col(c) for c in extra],
                                                        separator=", "),
                                          pl.lit("]")]).alias("series"))


def _colours(series: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    names = sorted(set(series))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {s: cmap(i % cmap.N) for i, s in enumerate(names)}


_MARKERS = ("o", "s", "^", "D")


def _val(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _legend(ax, n: int) -> None:
    if n > 6:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                  frameon=False)
    else:
        ax.legend(loc="best", fontsize="small")


# x-axis label per scenario; natural missingness is drawn at 0 where it means "nothing removed"
_RATE_AXES = {
    "mcar": ("MCAR missing rate per modality", True),
    "testmiss": ("share of test subjects missing the modality (BD)", True),
    "completeness": ("share of complete subjects kept complete (HAM)", False),
}


def plot_metric_vs_rate(summary: pl.DataFrame, metric: str, out: str | Path, *,
                        scenario: str = "mcar") -> Path:
    """One line per method of ``metric`` against the rate of ``scenario``, with a ±std band;
    for MCAR and missing-at-test, natural missingness, when present, is drawn at rate 0."""
    title = f"{metric_label(metric)} vs {scenario} rate (mean ± std over seeds)"
    axis, with_natural = _RATE_AXES.get(scenario, (f"{scenario} rate", False))
    col = f"{metric}_mean"
    shown = ["natural", scenario] if with_natural else [scenario]
    df = summary.filter(pl.col("scenario").is_in(shown)) if len(summary) else summary
    if len(df) and not (df["scenario"] == scenario).any():
        df = df.head(0)
    if not len(df) or col not in df.columns:
        return _empty(out, title, f"no {scenario} runs with {metric}")
    # only the methods run under this scenario
    ran = df.filter(pl.col("scenario") == scenario).select("feature_set", "method").unique()
    df = df.join(ran, on=["feature_set", "method"], how="semi")
    df = _series_labels(df).with_columns(
        pl.when(pl.col("scenario") == "natural").then(0.0).otherwise(pl.col("rate")).alias("x"))
    series = sorted(df["series"].unique().to_list())
    colours = _colours(series)
    fig = _figure((7.5 if len(series) > 6 else 6.0, 4.2))
    ax = fig.add_subplot()
    for s in series:
        part = df.filter(pl.col("series") == s).sort("x")
        x = part["x"].to_numpy()
        y = np.array([_val(v) for v in part[col]])
        sd = np.nan_to_num(np.array([_val(v) for v in part[f"{metric}_std"]]))
        ax.plot(x, y, marker="o", color=colours[s], label=s)
        if len(x) > 1:
            ax.fill_between(x, y - sd, y + sd, color=colours[s], alpha=0.15, linewidth=0)
        else:
            ax.errorbar(x, y, yerr=sd, color=colours[s], capsize=3)
    ticks = sorted(df["x"].unique().to_list())
    has_natural = (df["scenario"] == "natural").any()
    ax.set_xticks(ticks, [("natural" if (t == 0 and has_natural) else f"{t * 100:g} %")
                          for t in ticks])
    ax.set_xlabel(axis + (" (0 = natural missingness)" if has_natural else ""))
    ax.set_ylabel(metric_label(metric))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax, len(series))
    return _save(fig, out)


def plot_radar(summary: pl.DataFrame, rate: float, metrics: Sequence[str], out: str | Path, *,
               scenario: str | None = None) -> Path:
    """A radar chart of the methods over ``metrics`` at one missing rate (mean over seeds).

    ``scenario`` defaults to natural for rate 0 and MCAR otherwise. Lower-is-better
    metrics (ECE) are drawn as 1 − value so that outward is better on every axis.
    """
    scenario = scenario or ("natural" if rate == 0 else "mcar")
    title = f"{group_label(scenario, rate)}\nmethods over metrics (mean over seeds)"
    metrics = [m for m in metrics if f"{m}_mean" in summary.columns]
    df = summary.filter((pl.col("scenario") == scenario)
                        & ((pl.col("rate") - rate).abs() < 1e-9)) if len(summary) else summary
    if not len(df) or len(metrics) < 3:
        return _empty(out, title, "no runs for this rate" if len(metrics) >= 3
                      else "a radar needs at least three metrics")
    df = _series_labels(df)
    series = sorted(df["series"].unique().to_list())
    colours = _colours(series)
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False)
    fig = _figure((8.0 if len(series) > 6 else 6.5, 5.5))
    ax = fig.add_subplot(projection="polar")
    for row in df.sort("series").iter_rows(named=True):
        vals = []
        for m in metrics:
            v = _val(row[f"{m}_mean"])
            vals.append(1 - v if m in LOWER_IS_BETTER else v)
        vals = np.nan_to_num(np.array(vals))
        closed = np.r_[angles, angles[:1]]
        ax.plot(closed, np.r_[vals, vals[:1]], color=colours[row["series"]], marker="o",
                markersize=3, label=row["series"])
        ax.fill(closed, np.r_[vals, vals[:1]], color=colours[row["series"]], alpha=0.06)
    ax.set_xticks(angles, [(f"1 − {metric_label(m, False)}" if m in LOWER_IS_BETTER
                            else metric_label(m)) for m in metrics])
    ax.set_ylim(0, 1)
    ax.set_yticks([0.2, 0.4, 0.6, 0.8, 1.0])
    ax.tick_params(axis="y", labelsize="x-small")
    ax.set_title(title, pad=18)
    ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize="small", frameon=False)
    return _save(fig, out)


def plot_perf_vs_params(summary: pl.DataFrame, metric: str, out: str | Path, *,
                        published=None, scenario: str = "natural", rate: float = 0.0) -> Path:
    """``metric`` (mean ± std over seeds) against trainable parameters on a log axis, one
    point per method for one (scenario, rate); published figures, when given, as stars."""
    title = (f"{metric_label(metric)} vs trainable parameters — {group_label(scenario, rate)}")
    col = f"{metric}_mean"
    df = summary.filter((pl.col("scenario") == scenario)
                        & ((pl.col("rate") - rate).abs() < 1e-9)) if len(summary) else summary
    pub_rows = [r for r in (published.rows if published is not None else [])
                if r.metrics.get(metric) is not None and (r.trainable_parameters or 0) > 0]
    if (not len(df) or col not in df.columns) and not pub_rows:
        return _empty(out, title, "no runs for this scenario")
    n_series = len(df) + len(pub_rows)
    # the legend lists every method: the figure grows with it rather than overflow
    fig = _figure((9.5, max(5.0, 0.24 * n_series)))
    ax = fig.add_subplot()
    skipped = []
    if len(df) and col in df.columns:
        df = _series_labels(df)
        colours = _colours(df["series"].to_list())
        for i, row in enumerate(df.sort("series").iter_rows(named=True)):
            n = row.get("trainable_parameters_mean")
            if n is None or not n > 0 or row[col] is None:
                skipped.append(row["series"])
                continue
            ax.errorbar([n], [row[col]], yerr=[_val(row[f"{metric}_std"]) if row[
                f"{metric}_std"] is not None else 0.0], capsize=3, markersize=6,
                # colours repeat past 20 methods: the marker tells them apart
                fmt=_MARKERS[(i // 20) % len(_MARKERS)],
                color=colours[row["series"]], label=f"{row['series']} (ours)")
    for i, r in enumerate(pub_rows):
        v = r.metrics[metric]
        ax.scatter([r.trainable_parameters], [v], marker="*", s=140, facecolors="white",
                   edgecolors="black", linewidths=1.0, zorder=3,
                   label=published.label if i == 0 else None)
        ax.annotate(r.method, (r.trainable_parameters, v), textcoords="offset points",
                    xytext=(6, 4), fontsize="x-small")
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel("Trainable parameters (log scale)")
    ax.set_ylabel(metric_label(metric) + " (mean ± std over seeds)")
    sub = title if published is None else title + f"\n★ = {published.label}"
    ax.set_title(sub, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    if skipped:
        ax.text(0.01, 0.01, "not shown (no trainable parameters): " + ", ".join(skipped),
                transform=ax.transAxes, fontsize="x-small", va="bottom")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    return _save(fig, out)


def _pattern_sort_key(p: str) -> tuple:
    return (p == "none", -len(p.split("+")), p)


def plot_pattern_heatmap(pattern_table: pl.DataFrame, metric: str, out: str | Path, *,
                         scenario: str | None = None, rate: float | None = None) -> Path:
    """Methods × modality patterns of the test subjects, cells ``metric`` mean ± std over
    seeds; the column labels give the mean number of test subjects per seed with that
    pattern. By default the natural scenario (or the first one in the table)."""
    col = f"{metric}_mean"
    df = pattern_table
    if len(df) and col in df.columns:
        if scenario is None:
            groups = df.select("scenario", "rate").unique().sort("scenario", "rate").rows()
            scenario, rate = next(((s, r) for s, r in groups if s == "natural"), groups[0])
        df = df.filter(pl.col("scenario") == scenario)
        if rate is not None:
            df = df.filter((pl.col("rate") - rate).abs() < 1e-9)
    where = group_label(scenario, rate) if scenario is not None else "no runs"
    title = f"{metric_label(metric)} per modality pattern — {where} (test, mean over seeds)"
    if not len(df) or col not in df.columns:
        return _empty(out, title, "no test predictions for this scenario")
    df = _series_labels(df)
    series = sorted(df["series"].unique().to_list())
    patterns = sorted(df["pattern"].unique().to_list(), key=_pattern_sort_key)
    grid = np.full((len(series), len(patterns)), np.nan)
    std = np.full_like(grid, np.nan)
    for r in df.iter_rows(named=True):
        i, j = series.index(r["series"]), patterns.index(r["pattern"])
        grid[i, j] = _val(r[col])
        std[i, j] = _val(r.get(f"{metric}_std"))
    col_labels = []
    for p in patterns:
        ns = df.filter(pl.col("pattern") == p)["n"].drop_nulls().to_list()
        lo, hi = (min(ns), max(ns)) if ns else (math.nan, math.nan)
        n_text = f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f}"
        col_labels.append(f"{p}\n(n={n_text})")
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    fig = _figure((max(6.0, 1.1 * len(patterns) + 3.0), max(3.0, 0.55 * len(series) + 2.0)))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(len(series)):
        for j in range(len(patterns)):
            v = grid[i, j]
            if math.isnan(v):
                text, colour = "–", "black"
            else:
                text = f"{v:.2f}" + ("" if math.isnan(std[i, j]) else f"\n±{std[i, j]:.2f}")
                colour = "white" if v < 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize="x-small", color=colour)
    ax.set_xticks(range(len(patterns)), col_labels, rotation=45, ha="right",
                  rotation_mode="anchor", fontsize="small")
    ax.set_yticks(range(len(series)), series, fontsize="small")
    ax.set_xlabel("Modalities present (test subjects; n per seed)")
    ax.set_ylabel("Method")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(im, ax=ax, label=metric_label(metric))
    return _save(fig, out)
