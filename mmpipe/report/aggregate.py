"""Gather the benchmark runs of a cohort into tables, and build its report.

Each run directory ``results/{cohort}/runs/{feature_set}/{method}/{scenario}-{rate}/seed{seed}/``
holds ``metrics.json`` and ``predictions.parquet`` (see :mod:`mmpipe.bench.run`). Here they
become one row per run (:func:`collect_runs`), mean and std over seeds
(:func:`summarise`; std is the sample standard deviation, ddof=1), per-subset rows
(:func:`collect_subsets`) and per-modality-pattern scores (:func:`pattern_metrics`).
:func:`build_report` writes all tables and figures of one cohort.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmpipe.errors import StaleRunError
from mmpipe.fsutil import atomic_dir, atomic_file
from mmpipe.layout import METRICS, PREDICTIONS, CohortLayout, cell_name, parse_cell

log = logging.getLogger(__name__)

# radar charts compare methods at one rate of the shared scenarios; the papers' own
# protocols (HAM completeness, BD test-time missingness) get a metric-vs-level plot each
RADAR_SCENARIOS = ("natural", "mcar")
PROTOCOL_SCENARIOS = ("completeness", "testmiss")

ID_COLUMNS = ("cohort", "feature_set", "method", "method_type", "scenario", "rate", "seed")
SUMMARY_KEYS = ("cohort", "feature_set", "method", "scenario", "rate")
TABLE_METRICS = ("balanced_accuracy", "auc", "f1_macro", "f1", "accuracy", "ece")
PLOT_METRICS = ("balanced_accuracy", "auc")
PATTERN_METRICS = ("balanced_accuracy", "auc", "accuracy")
NO_PATTERN = "none"  # subjects the scenario left without any modality (scored with the prior)
_STRING_COLUMNS = ("cohort", "feature_set", "method", "method_type", "scenario", "path")
_RATE_DECIMALS = 6


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool | str):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _identity_from_path(path: Path) -> dict[str, Any]:
    """Run identity read off ``.../{cohort}/runs/{feature_set}/{method}/{scenario}-{rate}/seed{n}/``."""
    parts = path.parent.parts
    ident: dict[str, Any] = {}
    try:
        seed_dir, sr, method, feature_set = parts[-1], parts[-2], parts[-3], parts[-4]
        scenario, rate = sr.rsplit("-", 1)
        ident = {"feature_set": feature_set, "method": method, "scenario": scenario,
                 "rate": float(rate), "seed": int(seed_dir.removeprefix("seed"))}
        if len(parts) >= 6 and parts[-5] == "runs":
            ident["cohort"] = parts[-6]
    except (IndexError, ValueError):
        pass
    return ident


def _identity(metrics: dict[str, Any], path: Path) -> dict[str, Any]:
    from_path = _identity_from_path(path)
    ident = {k: metrics.get(k, from_path.get(k)) for k in ID_COLUMNS}
    if ident["method_type"] is None:
        ident["method_type"] = ident["method"]
    missing = [k for k in ID_COLUMNS if ident[k] is None]
    if missing:
        raise ValueError(f"{path}: cannot tell the run's {missing} (not in the file, not in "
                         "the path runs/{feature_set}/{method}/{scenario}-{rate}/seed{seed})")
    ident["rate"] = round(float(ident["rate"]), _RATE_DECIMALS)
    ident["seed"] = int(ident["seed"])
    return ident


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())  # json accepts the NaN that json.dumps writes


def _frame(rows: list[dict[str, Any]], first: Sequence[str]) -> pl.DataFrame:
    """A frame from rows with possibly different keys: strings stay strings, the rest Float64."""
    columns: list[str] = list(first)
    for r in rows:
        columns += [k for k in r if k not in columns]
    schema = {c: (pl.String if c in _STRING_COLUMNS or c in ("subset", "pattern", "evaluation")
                  else pl.Int64 if c == "seed" else pl.Float64) for c in columns}
    return pl.DataFrame([tuple(r.get(c) for c in columns) for r in rows], schema=schema,
                        orient="row")


def _check_unique(df: pl.DataFrame, keys: Sequence[str], what: str) -> None:
    dup = df.group_by(list(keys)).len().filter(pl.col("len") > 1)
    if len(dup):
        raise ValueError(f"{len(dup)} {what} appear more than once, e.g. "
                         f"{dup.drop('len').row(0, named=True)}: each run must be given once")


def collect_runs(metrics_paths: Iterable[str | Path]) -> pl.DataFrame:
    """One row per run: identity, test metrics (plain names; ``n_test``), validation metrics
    (``val_*``), ``trainable_parameters``, ``training_seconds`` and the file's ``path``."""
    rows = []
    for p in metrics_paths:
        p = Path(p)
        m = _read_json(p)
        row: dict[str, Any] = _identity(m, p)
        for k, v in (m.get("test") or {}).items():
            if k != "notes":  # why a value is NaN; kept in metrics.json
                row["n_test" if k == "n" else k] = _num(v)
        for k, v in (m.get("val") or {}).items():
            if k != "notes":
                row[f"val_{k}"] = _num(v)
        for k in ("trainable_parameters", "training_seconds", "evaluation_seconds",
                  "n_train", "n_val"):
            if k in m:
                row[k] = _num(m[k])
        row["trained"] = bool(m.get("trained", True))
        row["path"] = str(p)
        rows.append(row)
    if not rows:
        raise ValueError("no metrics.json given: nothing to report")
    df = _frame(rows, ID_COLUMNS)
    _check_unique(df, [c for c in ID_COLUMNS if c != "method_type"], "runs")
    return df.sort([c for c in ID_COLUMNS if c != "method_type"])


def summarise(runs: pl.DataFrame, keys: Sequence[str] = SUMMARY_KEYS) -> pl.DataFrame:
    """Mean and std over seeds of every numeric column, per ``keys``, with ``n_seeds``.

    Columns ``{name}_mean`` and ``{name}_std`` (sample std, ddof=1; null with one seed).
    Missing values (e.g. an AUC undefined for one seed) are left out of that mean.
    """
    keys = list(keys)
    skip = set(keys) | {"seed", "path"}
    values = [c for c, t in runs.schema.items() if c not in skip and t.is_numeric()]
    extra = [pl.col(c).first() for c in ("method_type",) if c in runs.columns and c not in keys]
    aggs = [pl.len().alias("n_seeds"), *extra]
    if "trained" in runs.columns:  # runs that could not train have NaN metrics
        aggs.append(pl.col("trained").sum().cast(pl.Int64).alias("n_trained"))
    for c in values:
        col = pl.col(c).fill_nan(None)
        aggs += [col.mean().alias(f"{c}_mean"), col.std(ddof=1).alias(f"{c}_std")]
    return runs.group_by(keys, maintain_order=True).agg(aggs).sort(keys)


def collect_subsets(metrics_paths: Iterable[str | Path]) -> pl.DataFrame:
    """One row per (run, evaluated modality subset): identity, ``subset`` ("ct+wsi"),
    ``n_modalities`` and the subset's test metrics (``n_test`` = subjects scored)."""
    rows = []
    for p in metrics_paths:
        p = Path(p)
        m = _read_json(p)
        ident = _identity(m, p)
        for s in m.get("subsets") or []:
            mods = list(s.get("modalities") or [])
            row = {**ident, "subset": "+".join(mods), "n_modalities": float(len(mods))}
            for k, v in s.items():
                if k not in ("modalities", "notes"):
                    row["n_test" if k == "n" else k] = _num(v)
            rows.append(row)
    first = (*ID_COLUMNS, "subset", "n_modalities")
    if not rows:
        return _frame([], first)
    return _frame(rows, first).sort([*[c for c in ID_COLUMNS if c != "method_type"], "subset"])


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged: scikit-learn's value
    without its per-call overhead (the pattern table makes thousands of small calls)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _macro_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Macro one-vs-rest AUC over the classes present in ``y`` (NaN with fewer than two);
    equal to scikit-learn's macro OvR when every class is present."""
    classes = np.unique(y)
    if len(classes) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return _binary_auc(y == 1, proba[:, 1])
    return float(np.mean([_binary_auc(y == c, proba[:, c]) for c in classes]))


def _pattern_scores(y: np.ndarray, pred: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    # balanced accuracy: mean recall over the classes present in y (scikit-learn's definition)
    bacc = float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))
    return {"balanced_accuracy": bacc, "auc": _macro_auc(y, proba),
            "accuracy": float(np.mean(y == pred))}


def pattern_metrics(prediction_paths: Iterable[str | Path], *, split: str = "test",
                    evaluation: str = "scenario", per_run: bool = False) -> pl.DataFrame:
    """Scores per (run, modality pattern) of the ``split`` predictions of the scenario itself.

    The run's identity comes from the ``metrics.json`` beside each file (or its path).
    With ``per_run`` one row per run and pattern (``n`` subjects); otherwise mean and std
    over seeds per (cohort, feature_set, method, scenario, rate, pattern), ``n`` being the
    mean number of subjects per run with that pattern and ``n_runs`` the runs that had it.
    """
    rows = []
    for p in prediction_paths:
        p = Path(p)
        side = p.with_name(METRICS)
        ident = _identity(_read_json(side) if side.exists() else {}, p)
        df = pl.read_parquet(p).filter((pl.col("split") == split)
                                       & (pl.col("evaluation") == evaluation))
        if not len(df):
            continue
        score_cols = sorted((c for c in df.columns if c.startswith("score_")),
                            key=lambda c: int(c.removeprefix("score_")))
        df = df.with_columns(pl.col("pattern").fill_null("").replace("", NO_PATTERN))
        for (pattern,), g in df.group_by(["pattern"], maintain_order=True):
            y = g["label"].to_numpy()
            scores = _pattern_scores(y, g["predicted"].to_numpy(),
                                     g.select(score_cols).to_numpy())
            rows.append({**ident, "pattern": pattern, "n": float(len(g)), **scores})
    first = (*ID_COLUMNS, "pattern", "n")
    if not rows:
        return _frame([], first)
    table = _frame(rows, first).sort([*[c for c in ID_COLUMNS if c != "method_type"],
                                      "pattern"])
    if per_run:
        return table
    out = summarise(table, keys=(*SUMMARY_KEYS, "pattern"))
    return out.rename({"n_seeds": "n_runs", "n_mean": "n"}).drop("n_std")


def _write_csv(df: pl.DataFrame, path: Path) -> Path:
    with atomic_file(path) as tmp:
        df.write_csv(tmp)
    return path


def group_tag(scenario: str, rate: float) -> str:
    """The file-name tag of a (scenario, rate) group, as in the run directories: ``mcar-0.2``."""
    return cell_name(scenario, rate)


def report_files(scenarios: dict[str, Sequence[float]], plot_metrics: Sequence[str] = PLOT_METRICS,
                 with_predictions: bool = True) -> list[str]:
    """The file names :func:`build_report` writes for a benchmark's ``scenarios``
    (config ``benchmark.scenarios``), so a workflow can declare them as outputs."""
    groups = [(s, float(r)) for s, rates in scenarios.items() for r in rates]
    names = ["results.csv", "results.md", "results.tex", "runs.csv", "summary.csv",
             "subsets.csv"]
    names += [f"metric_vs_rate_{m}.png" for m in plot_metrics]
    names += [f"metric_vs_rate_{m}_{s}.png" for m in plot_metrics for s in scenarios
              if s in PROTOCOL_SCENARIOS]
    names += [f"radar_{group_tag(s, r)}.png" for s, r in groups if s in RADAR_SCENARIOS]
    names += [f"perf_vs_params_{m}.png" for m in plot_metrics]
    if with_predictions:
        names += ["patterns.csv"]
        names += [f"pattern_heatmap_{m}_{group_tag(s, r)}.png" for m in plot_metrics
                  for s, r in groups]
    return names


def _append_notes(table_md: Path, metrics_paths: list[Path]) -> None:
    """Add what the methods say about themselves (and runs that could not train) under
    the Markdown table, so a deviation from a paper is never only in a log."""
    notes: dict[str, set[str]] = {}
    for path in metrics_paths:
        m = json.loads(path.read_text())
        for note in m.get("method_notes", []):
            # the row already names the method: drop a note's own "type: " prefix
            note = note.removeprefix(f"{m.get('method_type')}: ")
            notes.setdefault(m.get("method", "?"), set()).add(note)
        if m.get("trained") is False:
            notes.setdefault(m.get("method", "?"), set()).add(
                f"not trained in {m.get('scenario')} {m.get('rate')} seed {m.get('seed')}: "
                + "; ".join(n for n in m.get("notes", []) if n.startswith("not trained")))
    if not notes:
        return
    lines = ["", "## Notes", ""]
    lines += [f"- **{method}**: {note}" for method in sorted(notes) for note in sorted(notes[method])]
    with atomic_file(table_md) as tmp:
        tmp.write_text(table_md.read_text() + "\n".join(lines) + "\n")


def build_report(metrics_paths: Iterable[str | Path], prediction_paths: Iterable[str | Path],
                 out_dir: str | Path, published=None, *,
                 scenarios: dict[str, Sequence[float]] | None = None,
                 table_metrics: Sequence[str] = TABLE_METRICS,
                 plot_metrics: Sequence[str] = PLOT_METRICS) -> list[Path]:
    """Every table and figure of one cohort's benchmark, written into ``out_dir``
    (``results/{cohort}/report``); returns the paths written.

    ``published``: a :class:`~mmpipe.report.published.PublishedFigures` shown beside ours.
    ``scenarios`` (scenario -> rates, as in the config) fixes which per-group figures are
    drawn, so the file names are known in advance (:func:`report_files`); by default the
    groups found in the runs. A group without runs gets a figure saying so.
    """
    from mmpipe.report import plots
    from mmpipe.report.stats import wilcoxon_vs_best
    from mmpipe.report.tables import _scenario_key, write_tables

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_paths = [Path(p) for p in metrics_paths]
    prediction_paths = [Path(p) for p in prediction_paths]
    runs = collect_runs(metrics_paths)
    summary = wilcoxon_vs_best(runs, summarise(runs), table_metrics)
    if scenarios is None:
        scenarios = {}
        found = summary.select("scenario", "rate").unique().iter_rows()
        for s, r in sorted(found, key=lambda g: (_scenario_key(g[0]), g[1])):
            scenarios.setdefault(s, []).append(r)
    groups = [(s, float(r)) for s, rates in scenarios.items() for r in rates]

    written = write_tables(summary, out_dir, published=published, metrics=table_metrics)
    _append_notes(out_dir / "results.md", metrics_paths)
    written.append(_write_csv(runs, out_dir / "runs.csv"))
    written.append(_write_csv(summary, out_dir / "summary.csv"))
    subsets = collect_subsets(metrics_paths)
    subset_summary = (summarise(subsets, keys=(*SUMMARY_KEYS, "subset", "n_modalities"))
                      if len(subsets) else subsets)
    written.append(_write_csv(subset_summary, out_dir / "subsets.csv"))

    for m in plot_metrics:
        written.append(plots.plot_metric_vs_rate(summary, m, out_dir / f"metric_vs_rate_{m}.png"))
        for s in scenarios:
            if s in PROTOCOL_SCENARIOS:
                written.append(plots.plot_metric_vs_rate(
                    summary, m, out_dir / f"metric_vs_rate_{m}_{s}.png", scenario=s))
    for s, r in groups:
        if s in RADAR_SCENARIOS:
            written.append(plots.plot_radar(summary, r, table_metrics,
                                            out_dir / f"radar_{group_tag(s, r)}.png", scenario=s))
    params_group = ("natural", 0.0) if ("natural", 0.0) in groups else groups[0]
    for m in plot_metrics:
        written.append(plots.plot_perf_vs_params(
            summary, m, out_dir / f"perf_vs_params_{m}.png", published=published,
            scenario=params_group[0], rate=params_group[1]))
    if prediction_paths:
        patterns = pattern_metrics(prediction_paths)
        written.append(_write_csv(patterns, out_dir / "patterns.csv"))
        for m in plot_metrics:
            for s, r in groups:
                written.append(plots.plot_pattern_heatmap(
                    patterns, m, out_dir / f"pattern_heatmap_{m}_{group_tag(s, r)}.png",
                    scenario=s, rate=r))
    log.info("report of %d runs written to %s (%d files)", len(runs), out_dir, len(written))
    return written


def cohort_runs(layout: CohortLayout, report: dict[str, Any]) -> list[Path]:
    """Every run directory the report params (:func:`mmpipe.params.report_params`) name,
    checked: each must hold a finished run trained with the settings the config asks for
    (the ``params_hash`` its ``metrics.json`` records), or the report is refused."""
    dirs, problems = [], []
    for key, run in report["runs"].items():
        feature_set, method = key.split("/")
        for cell in run["cells"]:
            for seed in report["seeds"]:
                run_dir = layout.run(feature_set, method, *parse_cell(cell), seed)
                dirs.append(run_dir)
                metrics = run_dir / METRICS
                if not metrics.is_file() or not (run_dir / PREDICTIONS).is_file():
                    problems.append(f"{run_dir}: no finished run here")
                elif _read_json(metrics).get("params_hash") != run["params_hash"]:
                    problems.append(f"{run_dir}: trained with other settings than the config's")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise StaleRunError(f"{len(problems)} of {len(dirs)} runs cannot enter the report: "
                            f"{shown}. Rerun their training jobs (snakemake --forcerun train "
                            "train_method, or delete them and run again)")
    return dirs


def build_cohort_report(layout: CohortLayout, report: dict[str, Any],
                        out_dir: str | Path) -> list[Path]:
    """The report of one cohort's benchmark into ``out_dir``, written atomically: a
    killed report job leaves no report that looks finished."""
    from mmpipe.report.published import published_for

    runs = cohort_runs(layout, report)
    with atomic_dir(out_dir) as tmp:
        written = build_report([r / METRICS for r in runs], [r / PREDICTIONS for r in runs], tmp,
                               published=published_for(layout.cohort, report["label"]),
                               scenarios=report["scenarios"])
    return [Path(out_dir) / p.relative_to(tmp) for p in written]
