"""Figures of the benchmark: metric vs missing rate, radar per rate, performance vs
trainable parameters, and a per-modality-pattern heat map.

Each function draws from the tables of :mod:`mmpipe.report.aggregate`, writes a PNG (or
SVG/PDF, by the suffix of ``out``) atomically and returns its path, or None when its
group has no runs (no placeholder picture: the report lists what it drew). Figures are
built without pyplot (``matplotlib.figure.Figure`` renders with Agg), so no global
backend or display is touched.

Legible with ~30 methods: a method's colour is its family (:data:`mmpipe.methods.families.FAMILIES`),
its line style and marker tell the variants of a family apart; the baselines (logreg,
hgb) are grey reference lines; the best few methods are named on the figure; crowded
line plots are split into one panel per family, each with its own legend below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmpipe.fsutil import atomic_file
from mmpipe.methods import families
from mmpipe.report.aggregate import NO_PATTERN
from mmpipe.report.tables import LOWER_IS_BETTER, group_label, metric_label, positive_label

DPI = 150
# families in the order panels and legends list them; "other": a type FAMILIES lacks
FAMILY_ORDER = (*families.FAMILY_ORDER, "other")
# tab10 without its grey (kept for the baselines) and without red/green side by side
_FAMILY_COLOURS = {"MMARE": "#d62728", "HyperMM": "#1f77b4", "HAM & comparators": "#2ca02c",
                   "BD & comparators": "#9467bd", "attention / graph": "#ff7f0e",
                   "simple fusion": "#17becf",
                   "single modality": "#bcbd22", "baselines": "#555555", "other": "#e377c2"}
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# more lines than this in one panel and the line plot is split into a panel per family
MAX_LINES_PER_PANEL = 8
# the radar shows this many methods (the best by its first metric); the table has all
RADAR_TOP = 8
# how many of the best methods a figure names on itself
TOP_LABELLED = 3


def _figure(size: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight")
    return out


def _series_labels(df: pl.DataFrame) -> pl.DataFrame:
    """A ``series`` column naming each line: the method, plus the feature set (and cohort)
    when the table holds several; and ``family`` when the table lacks it."""
    extra = [c for c in ("feature_set", "cohort") if c in df.columns and df[c].n_unique() > 1]
    if not extra:
        df = df.with_columns(pl.col("method").alias("series"))
    else:
        df = df.with_columns(pl.concat_str([pl.col("method"), pl.lit(" ["),
                                            pl.concat_str([pl.col(c) for c in extra],
                                                          separator=", "),
                                            pl.lit("]")]).alias("series"))
    if "family" not in df.columns:
        from mmpipe.methods.families import FAMILIES

        types = df["method_type"] if "method_type" in df.columns else df["method"]
        df = df.with_columns(pl.Series("family", [FAMILIES.get(t, "other") for t in types],
                                       dtype=pl.String))
    return df.with_columns(pl.col("family").fill_null("other"))


def _family_key(family: str) -> int:
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def _styles(df: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per series: colour of its family, line style and marker of its rank in the family."""
    fams = dict(df.select("series", "family").unique().iter_rows())
    styles: dict[str, dict[str, Any]] = {}
    for fam in sorted(set(fams.values()), key=_family_key):
        members = sorted(s for s, f in fams.items() if f == fam)
        for i, s in enumerate(members):
            styles[s] = {"color": _FAMILY_COLOURS.get(fam, _FAMILY_COLOURS["other"]),
                         "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
                         "marker": _MARKERS[i % len(_MARKERS)], "family": fam}
    return styles


def _ordered(styles: dict[str, dict[str, Any]]) -> list[str]:
    """Series in family order, then by name: legends list a family together."""
    return sorted(styles, key=lambda s: (_family_key(styles[s]["family"]), s))


def _val(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _is_baseline(family: str) -> bool:
    from mmpipe.methods.families import BASELINE_FAMILY

    return family == BASELINE_FAMILY


def _label_points(ax, items: list[tuple[float, float, str, Any]]) -> None:
    """Name points ``(x, y, text, colour)`` just right of them, the labels pushed apart
    vertically so that two close points' names do not print over each other."""
    if not items:
        return
    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    gap = 0.045 * (hi - lo)
    last = -math.inf
    for x, y, text, colour in sorted(items, key=lambda t: t[1]):
        yy = max(y, last + gap)
        last = yy
        ax.annotate(text, (x, yy), xytext=(6, 0), textcoords="offset points", va="center",
                    fontsize="x-small", color=colour, fontweight="bold")


def _top(scores: dict[str, float], metric: str, k: int, whole: set[str] | None = None
         ) -> list[str]:
    """The ``k`` best series by score (NaN last), ranked as the tables bold: among the
    ``whole`` series (a value on every seed) when one of them has a score."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    valued = [s for s, v in scores.items() if not math.isnan(v)]
    if whole is not None and any(s in whole for s in valued):
        valued = [s for s in valued if s in whole]
    return sorted(valued, key=lambda s: sign * scores[s])[:k]


def _whole(df: pl.DataFrame, metric: str) -> set[str] | None:
    """The series with a value of ``metric`` on every seed in every row of ``df`` (the
    ``{metric}_complete`` column of :func:`mmpipe.report.stats.wilcoxon_vs_best`); None
    when the summary does not say."""
    col = f"{metric}_complete"
    if col not in df.columns:
        return None
    incomplete = set(df.filter(~pl.col(col).fill_null(False))["series"].to_list())
    return set(df["series"].to_list()) - incomplete


def _over_seeds(df: pl.DataFrame, what: str = "mean ± std") -> str:
    """What a figure's values are: the test split's, ``what`` over how many seeds (the
    most any series ran; one that ran fewer says so in its label)."""
    n = int(df["n_seeds"].max()) if "n_seeds" in df.columns and len(df) else 0
    return f"test split, {what} over {n} seed{'s' if n != 1 else ''}" if n else (
        f"test split, {what} over seeds")


def _partial_mark(series: str, whole: set[str] | None) -> str:
    """`` (not every seed)`` for a series whose mean leaves seeds out (the ranking and
    the tables' bold leave it out too)."""
    return " (not every seed)" if whole is not None and series not in whole else ""


# x-axis label per scenario; natural missingness is drawn at 0 where it means "nothing removed"
_RATE_AXES = {
    "mcar": ("MCAR: share of present entries removed", True),
    "testmiss": ("share of the test subjects with the modality that lose it (BD)", True),
    "completeness": ("share of complete training subjects kept complete (HAM)", False),
}


def _draw_line(ax, part: pl.DataFrame, metric: str, style: dict[str, Any], label: str,
               band: bool = True) -> None:
    col = f"{metric}_mean"
    part = part.sort("x")
    x = part["x"].to_numpy()
    y = np.array([_val(v) for v in part[col]])
    sd = np.nan_to_num(np.array([_val(v) for v in part[f"{metric}_std"]]))
    ax.plot(x, y, color=style["color"], linestyle=style["linestyle"], marker=style["marker"],
            markersize=4, linewidth=1.4, label=label)
    if band and len(x) > 1:
        ax.fill_between(x, y - sd, y + sd, color=style["color"], alpha=0.08, linewidth=0)
    elif band:
        ax.errorbar(x, y, yerr=sd, color=style["color"], capsize=3, linestyle="none")


def _draw_reference(ax, part: pl.DataFrame, metric: str, style: dict[str, Any], label: str
                    ) -> None:
    """A baseline: a grey line without band or markers, behind the methods."""
    part = part.sort("x")
    ax.plot(part["x"].to_numpy(), [_val(v) for v in part[f"{metric}_mean"]],
            color="#555555", linestyle=style["linestyle"], linewidth=1.2, zorder=1,
            label=f"{label} (baseline)")


def plot_metric_vs_rate(summary: pl.DataFrame, metric: str, out: str | Path, *,
                        scenario: str = "mcar") -> Path | None:
    """``metric`` (mean ± std band over seeds) against the rate of ``scenario``, one line
    per method; for MCAR and missing-at-test, natural missingness, when present, is drawn
    at rate 0. Over :data:`MAX_LINES_PER_PANEL` methods, one panel per family, the
    baselines repeated in every panel as grey reference lines. None when no run of
    ``scenario`` has ``metric``."""
    positive = positive_label(summary) if len(summary) else None
    name = metric_label(metric, positive=positive)
    title = f"{name} vs {scenario} rate"
    axis, with_natural = _RATE_AXES.get(scenario, (f"{scenario} rate", False))
    col = f"{metric}_mean"
    if not len(summary) or col not in summary.columns:
        return None
    shown = ["natural", scenario] if with_natural else [scenario]
    # a series' own point at rate 0 is its point at 0; natural missingness drawn there too
    # put two points at one x on its line
    own_zero = (summary.filter((pl.col("scenario") == scenario) & (pl.col("rate") == 0)
                               & pl.col(col).is_not_null())
                .select("feature_set", "method").unique())
    scoped = summary.filter(pl.col("scenario").is_in(shown)).join(
        own_zero.with_columns(pl.lit("natural").alias("scenario")),
        on=["feature_set", "method", "scenario"], how="anti")
    df = scoped.filter(pl.col(col).is_not_null())
    if not (df["scenario"] == scenario).any():
        return None
    # methods run under this scenario with no value at any of its rates: said below
    never = (_series_labels(scoped).filter(pl.col("scenario") == scenario)
             .group_by("series").agg(pl.col(col).is_not_null().any().alias("valued"))
             .filter(~pl.col("valued"))["series"].sort().to_list())
    # only the methods run under this scenario
    ran = df.filter(pl.col("scenario") == scenario).select("feature_set", "method").unique()
    scoped = _series_labels(scoped.join(ran, on=["feature_set", "method"], how="semi")
                            ).with_columns(pl.when(pl.col("scenario") == "natural").then(0.0)
                                           .otherwise(pl.col("rate")).alias("x"))
    df = scoped.filter(pl.col(col).is_not_null())
    styles = _styles(df)
    series = _ordered(styles)
    baselines = [s for s in series if _is_baseline(styles[s]["family"])]
    methods = [s for s in series if s not in baselines]
    families = sorted({styles[s]["family"] for s in methods}, key=_family_key)
    panels = ([families] if len(methods) <= MAX_LINES_PER_PANEL or len(families) == 1
              else [[f] for f in families])
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure((4.4 * ncols + (2.6 if len(panels) == 1 else 0.0), 3.6 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    # the best methods by their mean over the rates shown, named at the end of their line
    means = {s: float(np.nanmean([_val(v) for v in df.filter(pl.col("series") == s)[col]]))
             for s in methods}
    # ranked among the series with a value at every rate (a rate where one did not train
    # is a row without a mean: its mean over the easier rates alone would rank it first)
    xs = set(df["x"].to_list())  # the rates where some series has a value

    def covers(s: str) -> bool:
        return set(df.filter(pl.col("series") == s)["x"]) == xs

    covered = {s for s in methods if covers(s)}
    whole = _whole(scoped.filter(pl.col("x").is_in(sorted(xs))), metric)
    # where no covered series has every seed, the covered ones still rank: dropping both
    # let one that never trained at the hardest rate lead on the easier ones
    top = _top(means, metric, TOP_LABELLED,
               covered if whole is None else (whole & covered) or covered)

    def drawn(s: str) -> pl.DataFrame:
        """The series' rows at every rate drawn, a rate without a value as a gap: the line
        and band ran straight across a rate where it did not train (one row an x: a
        valued one where both a rate 0 and natural missingness are)."""
        return (scoped.filter((pl.col("series") == s) & pl.col("x").is_in(sorted(xs)))
                .sort(pl.col(col).is_null()).unique("x", keep="first", maintain_order=True))

    ends = []
    for ax, fams in zip(axes, panels, strict=False):
        for b in baselines:
            _draw_reference(ax, drawn(b), metric, styles[b], b + _partial_mark(b, whole))
        for s in (m for m in methods if styles[m]["family"] in fams):
            rank = f"#{top.index(s) + 1} " if s in top else ""
            _draw_line(ax, drawn(s), metric, styles[s], rank + s + _partial_mark(s, whole))
            # one panel: the best named at their line's end too (the x margin leaves room);
            # in a grid of panels the name would run into the next panel, the legend has it
            if rank and len(panels) == 1:
                last = df.filter(pl.col("series") == s).sort("x").tail(1)
                ends.append((float(last["x"][0]), _val(last[col][0]), rank + s,
                             styles[s]["color"]))
        if len(panels) > 1:
            ax.set_title(", ".join(fams), fontsize="medium", color=styles[next(
                m for m in methods if styles[m]["family"] in fams)]["color"])
        ax.grid(alpha=0.3)
        ax.margins(x=0.04 if len(panels) > 1 else 0.25)
        # below the panel, outside the axes: never over the tick or axis labels
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="x-small",
                  frameon=False, ncol=2 if len(panels) > 1 else 3)
    if len(panels) == 1:
        _label_points(axes[0], ends)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    ticks = sorted(df["x"].unique().to_list())
    has_natural = (df["scenario"] == "natural").any()
    for ax in axes[:len(panels)]:
        ax.set_xticks(ticks, [("natural" if (t == 0 and has_natural) else f"{t * 100:g} %")
                              for t in ticks])
        ax.tick_params(labelbottom=True, labelsize="small")
    fig.supxlabel(axis + (" (natural = natural missingness)" if has_natural else ""),
                  fontsize="medium")
    fig.supylabel(name)
    sub = (f"one panel per family, baselines in grey in each; #1–#{len(top)}: the best "
           "means over the rates" if len(panels) > 1
           else f"#1–#{len(top)}: the best means over the rates")
    fig.suptitle(f"{title} ({_over_seeds(df)})\n{sub}", fontsize="medium")
    gaps = sorted(set(methods) - covered) + [b for b in baselines if not covers(b)]
    notes = ([f"a gap: no value at some rate ({', '.join(gaps)})"] if gaps else []) + (
        [f"not shown (no value at any rate): {', '.join(never)}"] if never else [])
    if notes:
        fig.text(0.01, 0.005, "; ".join(notes), fontsize="x-small", va="bottom")
    return _save(fig, out)


def plot_radar(summary: pl.DataFrame, rate: float, metrics: Sequence[str], out: str | Path, *,
               scenario: str | None = None, top: int = RADAR_TOP) -> Path | None:
    """A radar chart of the methods over ``metrics`` at one missing rate (mean over seeds):
    the ``top`` methods by the first metric, and every baseline (grey). None when the group
    has no runs or fewer than three metrics have values.

    ``scenario`` defaults to natural for rate 0 and MCAR otherwise. Lower-is-better
    metrics (ECE) are drawn as 1 − value so that outward is better on every axis. The
    axes follow the class count: a metric no run has (per-class F1 of a multi-class task)
    is no axis.
    """
    from mmpipe.report.tables import present_metrics

    scenario = scenario or ("natural" if rate == 0 else "mcar")
    if not len(summary):
        return None
    df = summary.filter((pl.col("scenario") == scenario) & ((pl.col("rate") - rate).abs() < 1e-9))
    metrics = present_metrics(df, metrics) if len(df) else []
    if not len(df) or len(metrics) < 3:
        return None
    positive = positive_label(df)
    df = _series_labels(df)
    styles = _styles(df)
    first = f"{metrics[0]}_mean"
    scores = {r["series"]: _val(r[first]) for r in df.iter_rows(named=True)
              if not _is_baseline(styles[r["series"]]["family"])}
    # the whole series first, as the tables bold them, then those over some seeds only:
    # every method fits when there are few, and none is left out for a failed seed
    whole = _whole(df, metrics[0])
    # marked where any axis is a mean over some seeds only, not the first alone
    wholes = [_whole(df, m) for m in metrics]
    whole_on_all = None if any(w is None for w in wholes) else set.intersection(*wholes)
    ranked = _top(scores, metrics[0], len(scores), whole)
    ranked += [s for s in _top(scores, metrics[0], len(scores)) if s not in ranked]
    shown = set(ranked[:top]) | {s for s in styles if _is_baseline(styles[s]["family"])}
    n_methods = sum(not math.isnan(v) for v in scores.values())
    what = (f"the {min(top, n_methods)} best of {n_methods} methods by "
            f"{metric_label(metrics[0], False).lower()} (all in results.md)"
            if n_methods > top else "methods over metrics")
    title = f"{group_label(scenario, rate)}\n{what} ({_over_seeds(df, 'mean')})"
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False)
    fig = _figure((7.0, 7.6))
    ax = fig.add_subplot(projection="polar")
    closed = np.r_[angles, angles[:1]]
    # a method with no value here (untrained on every seed) is never among the ranked:
    # said, as the loop below says one whose every axis is empty
    no_value = [x for x in _ordered(styles) if x in scores and math.isnan(scores[x])]
    for s in (x for x in _ordered(styles) if x in shown):
        row = df.filter(pl.col("series") == s).row(0, named=True)
        vals = []
        for m in metrics:
            v = _val(row[f"{m}_mean"])
            vals.append(1 - v if m in LOWER_IS_BETTER else v)
        vals = np.array(vals, dtype=float)
        if np.isnan(vals).all():  # never trained here: no polygon at 0, which reads as worst
            no_value.append(s)
            continue
        # a metric without a value is a gap in the line, not a point at 0
        st = styles[s]
        base = _is_baseline(st["family"])
        ax.plot(closed, np.r_[vals, vals[:1]], color=st["color"], linestyle=st["linestyle"],
                marker=None if base else st["marker"], markersize=4, linewidth=1.3,
                label=s + (" (baseline)" if base else "")
                + _partial_mark(s, whole_on_all), zorder=1 if base else 2)
    ax.set_xticks(angles, [(f"1 − {metric_label(m, False)}" if m in LOWER_IS_BETTER
                            else metric_label(m, positive=positive)) for m in metrics],
                  fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_yticks([0.2, 0.4, 0.6, 0.8, 1.0])
    ax.tick_params(axis="y", labelsize="x-small")
    ax.set_title(title, pad=22, fontsize="medium")
    if no_value:  # a method that ran and has no value here is said, not left out silently
        fig.text(0.01, 0.01, "not shown (no value here): " + ", ".join(no_value),
                 fontsize="x-small", va="bottom")
    # below the chart: a radar has axis labels all round, and a legend beside it squeezes it
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize="small",
              frameon=False, ncol=3)
    return _save(fig, out)


def plot_perf_vs_params(summary: pl.DataFrame, metric: str, out: str | Path, *,
                        published=None, scenario: str = "natural", rate: float = 0.0
                        ) -> Path | None:
    """``metric`` (mean ± std over seeds) against trainable parameters on a log axis, one
    point per method for one (scenario, rate), the best few named; baselines as grey
    horizontal reference lines (gradient boosting has no trainable parameters); published
    figures, when given, as stars. None when there is nothing to draw."""
    positive = positive_label(summary) if len(summary) else None
    name = metric_label(metric, positive=positive)
    title = f"{name} vs trainable parameters — {group_label(scenario, rate)}"
    col = f"{metric}_mean"
    df = summary.filter((pl.col("scenario") == scenario)
                        & ((pl.col("rate") - rate).abs() < 1e-9)) if len(summary) else summary
    no_value = []
    if len(df) and col in df.columns:
        # a method that ran and has no value here (untrained on every seed) is said below
        no_value = _series_labels(df).filter(pl.col(col).is_null())["series"].to_list()
        df = df.filter(pl.col(col).is_not_null())
    pub_rows = [r for r in (published.rows if published is not None else [])
                if r.metrics.get(metric) is not None and (r.trainable_parameters or 0) > 0]
    if (not len(df) or col not in df.columns) and not pub_rows:
        return None
    n_series = len(df) + len(pub_rows)
    ncol = 2 if n_series > 24 else 1
    longest = max([len(str(v)) for v in df["method"]] + [10]) if len(df) else 10
    if len(df) and "feature_set" in df.columns and df["feature_set"].n_unique() > 1:
        longest += max(len(str(v)) for v in df["feature_set"]) + 3
    # the legend lists every method: the figure grows with it (down and to the right)
    # rather than squeeze the axes
    fig = _figure((7.5 + ncol * (0.075 * longest + 0.6), max(5.5, 0.2 * n_series / ncol + 3)))
    ax = fig.add_subplot()
    labels = []
    skipped = []
    if len(df) and col in df.columns:
        df = _series_labels(df)
        styles = _styles(df)
        rows = {r["series"]: r for r in df.iter_rows(named=True)}
        points = {s: r for s, r in rows.items() if not _is_baseline(styles[s]["family"])}
        whole = _whole(df, metric)
        top = _top({s: _val(r[col]) for s, r in points.items()
                    if (r.get("trainable_parameters_mean") or 0) > 0}, metric, TOP_LABELLED,
                   whole)
        for s in _ordered(styles):
            row, st = rows[s], styles[s]
            if _is_baseline(st["family"]):
                ax.axhline(row[col], color="#555555", linestyle=st["linestyle"], linewidth=1.2,
                           zorder=1, label=f"{s} (baseline, {row[col]:.3f})"
                           + _partial_mark(s, whole))
                continue
            n = row.get("trainable_parameters_mean")
            if n is None or not n > 0:
                skipped.append(s)
                continue
            sd = row.get(f"{metric}_std")
            ax.errorbar([n], [row[col]], yerr=[0.0 if sd is None else sd], capsize=3,
                        markersize=6, fmt=st["marker"], color=st["color"],
                        label=s + _partial_mark(s, whole))
            if s in top:
                labels.append((n, row[col], f"#{top.index(s) + 1} {s}", st["color"]))
    for i, r in enumerate(pub_rows):
        v = r.metrics[metric]
        ax.scatter([r.trainable_parameters], [v], marker="*", s=140, facecolors="white",
                   edgecolors="black", linewidths=1.0, zorder=3,
                   label=published.label if i == 0 else None)
        ax.annotate(r.method, (r.trainable_parameters, v), textcoords="offset points",
                    xytext=(6, -10), fontsize="x-small")
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)
    _label_points(ax, labels)
    ax.set_xlabel("Trainable parameters (log scale)")
    ax.set_ylabel(f"{name} ({_over_seeds(df)})" if len(df) else name)
    sub = title if published is None else title + f"\n★ = {published.label}"
    ax.set_title(sub, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    notes = ([f"not shown (no trainable parameters): {', '.join(skipped)}"] if skipped
             else []) + ([f"not shown (no value here): {', '.join(no_value)}"] if no_value
                         else [])
    if notes:
        ax.text(0.01, 0.01, "\n".join(notes), transform=ax.transAxes, fontsize="x-small",
                va="bottom")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False,
              ncol=ncol)
    return _save(fig, out)


def _pattern_sort_key(p: str) -> tuple:
    return (p == "none", -len(p.split("+")), p)


def _feature_sets_differ(df: pl.DataFrame) -> bool:
    """Whether the rows' feature sets read other modalities, as their patterns name them:
    then one pattern column is not one set of subjects."""
    read = {fs: set() for fs in df["feature_set"].unique().to_list()}
    for fs, pattern in df.select("feature_set", "pattern").iter_rows():
        read[fs].update(m for m in pattern.split("+") if m and m != NO_PATTERN)
    return len({frozenset(v) for v in read.values()}) > 1


def plot_pattern_heatmap(pattern_table: pl.DataFrame, metric: str, out: str | Path, *,
                         scenario: str | None = None, rate: float | None = None) -> Path | None:
    """Methods × modality patterns of the test subjects, cells ``metric`` mean ± std over
    seeds; the column labels give the mean number of test subjects per seed with that
    pattern. Rows by family (names in the family's colour). By default the natural
    scenario (or the first one in the table); None when it has no test predictions."""
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
    title = (f"{metric_label(metric, positive=positive_label(df) if len(df) else None)} per "
             f"modality pattern\n{where} (test, mean ± std over seeds; [k/N]: over k of "
             "the N seeds)")
    if not len(df) or col not in df.columns:
        return None
    df = _series_labels(df)
    styles = _styles(df)
    series = _ordered(styles)
    patterns = sorted(df["pattern"].unique().to_list(), key=_pattern_sort_key)
    grid = np.full((len(series), len(patterns)), np.nan)
    std = np.full_like(grid, np.nan)
    # seeds a cell's mean is over, against the series' runs (the most runs any of its
    # patterns occurs in): a pattern in one seed's test split, or with one class in the
    # others, gave a bare "1.00" like a cell of every seed
    over = np.zeros(grid.shape, dtype=int)
    runs = {s: int(df.filter(pl.col("series") == s)["n_runs"].max() or 0)
            if "n_runs" in df.columns else 0 for s in series}
    for r in df.iter_rows(named=True):
        i, j = series.index(r["series"]), patterns.index(r["pattern"])
        grid[i, j] = _val(r[col])
        std[i, j] = _val(r.get(f"{metric}_std"))
        over[i, j] = int(r.get(f"{metric}_n") or 0)
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
                if over[i, j] < runs[series[i]]:
                    text += f"\n[{over[i, j]}/{runs[series[i]]}]"
                colour = "white" if v < 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize="x-small", color=colour)
    ax.set_xticks(range(len(patterns)), col_labels, rotation=45, ha="right",
                  rotation_mode="anchor", fontsize="small")
    ax.set_yticks(range(len(series)), series, fontsize="small")
    for tick, s in zip(ax.get_yticklabels(), series, strict=True):
        tick.set_color(styles[s]["color"])
    # a thin rule between families
    fams = [styles[s]["family"] for s in series]
    for i in range(1, len(series)):
        if fams[i] != fams[i - 1]:
            ax.axhline(i - 0.5, color="white", linewidth=2)
    ax.set_xlabel("Modalities present (test subjects; n per seed)")
    ax.set_ylabel("Method")
    ax.set_title(title, fontsize="medium")
    if "feature_set" in df.columns and _feature_sets_differ(df):
        ax.set_xlabel("Modalities of the row's feature set present (test subjects; n per seed)")
        fig.text(0.01, 0.005, "A pattern names the modalities of the row's own feature set "
                 "that a subject had, so where feature sets differ one column holds other "
                 "subjects in other rows (a+b under a feature set with c: only those "
                 "without c); compare a column's cells within one feature set",
                 fontsize="x-small", va="bottom", wrap=True)
    # a colour bar as tall as 30 rows dwarfs the cells it explains
    fig.colorbar(im, ax=ax, label=metric_label(metric), shrink=min(1.0, 8 / max(len(series), 1)),
                 aspect=15)
    return _save(fig, out)
