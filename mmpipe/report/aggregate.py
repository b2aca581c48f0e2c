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

from mmpipe.bench.metrics import classification_metrics
from mmpipe.errors import StaleRunError
from mmpipe.fsutil import atomic_dir, atomic_file
from mmpipe.layout import (
    METRICS,
    PREDICTIONS,
    REPORT_PAGE,
    REPORT_RUNS,
    REPORT_TABLES,
    CohortLayout,
    cell_name,
    parse_cell,
)

log = logging.getLogger(__name__)

# radar charts compare methods at one rate of the shared scenarios; the papers' own
# protocols (HAM completeness, BD test-time missingness) get a metric-vs-level plot each
RADAR_SCENARIOS = ("natural", "mcar")
PROTOCOL_SCENARIOS = ("completeness", "testmiss")

# a run's cell mask (``scenario_mask`` in metrics.json): what it removed from the
# labelled subjects, in runs.csv, not averaged in summary.csv (a cell's, not a method's)
MASK_COLUMNS = ("mask_present", "mask_removed", "mask_share", "mask_max_mcar_share",
                "mask_rate", "mask_rate_of")
# the scenario's rate as the run's own feature set met it (``scenario_feature_set``):
# a testmiss modality stays with a subject whose only modality of the feature set it is
FEATURE_SET_RATE_COLUMNS = ("feature_set_rate", "feature_set_rate_of")
# the modality a testmiss cell removes, or the modalities a completeness cell makes
# incomplete, where the run's feature set holds none of them: its runs there are its
# natural runs (None where the feature set holds one, or elsewhere)
NOT_HELD_COLUMN = "scenario_modality_not_held"
ID_COLUMNS = ("cohort", "feature_set", "method", "method_type", "scenario", "rate", "seed")
SUMMARY_KEYS = ("cohort", "feature_set", "method", "scenario", "rate")
# the table's (and radar's) columns; a metric no run has (f1_positive of a multi-class task)
# is left out, so the columns follow the class count
TABLE_METRICS = ("balanced_accuracy", "auc", "f1_macro", "f1_weighted", "f1_positive",
                 "accuracy", "ece")
PLOT_METRICS = ("balanced_accuracy", "auc")
PATTERN_METRICS = ("balanced_accuracy", "auc", "accuracy")
# subjects without any modality of the run (none in its stores, or none left by the
# scenario), scored with the training prior
NO_PATTERN = "none"
# per-run strings carried from the run to its summary row (the first of its seeds)
_CARRIED = ("method_type", "family", "positive_label")
_STRING_COLUMNS = ("cohort", "feature_set", "method", "method_type", "scenario", "path",
                   "family", "positive_label", "flags", "split_fixed", "device", "monitor",
                   "chosen_by", NOT_HELD_COLUMN)
# metrics.json written before weighted F1 (and before the per-class keys said which class
# they were of) held "f1"/"precision"/"recall": class 1's for two classes, macro for more
_LEGACY_BINARY = {"f1": "f1_positive", "precision": "precision_positive",
                  "recall": "recall_positive"}
_LEGACY_MULTICLASS = {"precision": "precision_macro", "recall": "recall_macro"}
_RATE_DECIMALS = 6


def _not_held(scenario: str, options: dict[str, Any], encoders: dict[str, Any]) -> str | None:
    """:data:`NOT_HELD_COLUMN` of a run: under ``testmiss`` the modality removed where its
    feature set (``encoders``: modality -> encoder) lacks it; under ``completeness`` the
    scenario's modalities where the feature set holds none of them, so that the mask takes
    nothing from it (an age-only run sat among the "25 % complete" rows, trained on the
    natural data, with nothing said). A feature set holding one of them loses it where the
    mask drops it: not its natural run."""
    if not encoders:
        return None
    if scenario == "testmiss":
        removes = options.get("modality")
        return removes if removes and removes not in encoders else None
    if scenario == "completeness":
        # one of them held is lost where the mask drops it, as the mask is drawn
        named = options.get("modalities")
        return ", ".join(named) if named and not any(m in named for m in encoders) else None
    return None


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


def _sklearn_run(metrics: dict[str, Any]) -> bool:
    """Whether a run is a scikit-learn fit, by its record: the estimator, or under cv each
    fold's (a fold ensemble's record is per fold, which the report took for a CPU-trained
    network). Not by its type's kind: reading the method registry would put every
    method's imports in the report's environment."""
    training = metrics.get("training") or {}
    return "estimator" in training or any(
        "estimator" in (fold or {}) for fold in training.get("folds") or [])


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


def _n_classes(m: dict[str, Any], path: Path) -> int | None:
    """The run's class count: recorded in metrics.json, else the number of score columns of
    the predictions beside it (runs written before metrics.json recorded it)."""
    if m.get("n_classes"):
        return int(m["n_classes"])
    if m.get("label_values"):
        return len(m["label_values"])
    preds = path.with_name(PREDICTIONS)
    if preds.is_file():
        n = sum(c.startswith("score_") for c in pl.read_parquet_schema(preds))
        return n or None
    return None


def _positive_label(m: dict[str, Any], n_classes: int | None) -> str | None:
    """The label value of class 1 of a binary run, the class its ``*_positive`` metrics are
    of; None when the run does not record its label values."""
    values = m.get("label_values")
    if n_classes == 2 and values and len(values) == 2:
        return str(values[1])
    return None


def _metric_items(d: dict[str, Any], n_classes: int | None, n_name: str = "n_test"
                  ) -> dict[str, float | None]:
    """A metrics dict of a run as numbers under today's keys (older keys renamed by class
    count; dropped when the class count is unknown, as their meaning then is); its ``n``,
    the subjects scored, as ``n_name``."""
    legacy = (_LEGACY_BINARY if n_classes == 2 else _LEGACY_MULTICLASS if n_classes else {})
    out: dict[str, float | None] = {}
    for k, v in d.items():
        if k in ("notes", "modalities"):  # notes say why a value is NaN; kept in metrics.json
            continue
        if k in _LEGACY_BINARY:
            if k not in legacy or legacy[k] in d:
                continue   # f1 of a multi-class run was the macro F1, already there
            k = legacy[k]
        out[n_name if k == "n" else k] = _num(v)
    return out


def run_flag_list(m: dict[str, Any], path: Path) -> list[dict[str, str]]:
    """The flags of a run (:mod:`mmpipe.bench.flags`): those its metrics.json records, or,
    for a run written before runs recorded them, worked out from its predictions and epochs."""
    if "flags" in m:
        return list(m["flags"] or [])
    from mmpipe.bench.flags import run_flags

    preds = path.with_name(PREDICTIONS)
    predicted: dict[str, np.ndarray] = {"val": np.zeros(0, int), "test": np.zeros(0, int)}
    n_classes = _n_classes(m, path) or 2
    if preds.is_file():
        df = pl.read_parquet(preds, columns=["split", "evaluation", "predicted"]).filter(
            pl.col("evaluation") == "scenario")
        for split in predicted:
            predicted[split] = df.filter(pl.col("split") == split)["predicted"].to_numpy()
    return run_flags(trained=bool(m.get("trained", True)), val_predicted=predicted["val"],
                     test_predicted=predicted["test"], n_classes=n_classes,
                     best_epoch=m.get("best_epoch") or {}, epochs=m.get("epochs") or {})


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


def run_family(metrics: dict, method_type: str) -> str:
    """A run's family (:data:`mmpipe.methods.families.FAMILIES`), but a fusion method's
    run on a feature set of one modality (its ``encoders``) is of the single-modality
    family: it fuses nothing (a clinical-only MMARE was "the best fusion", ahead of "the
    single modality"). The tables, the summary and every plot read this one."""
    from mmpipe.methods.families import BASELINE_FAMILY, FAMILIES, SINGLE_FAMILY

    family = FAMILIES.get(method_type, "other")
    if family not in (BASELINE_FAMILY, SINGLE_FAMILY) and len(metrics.get("encoders") or {}) == 1:
        return SINGLE_FAMILY
    return family


def collect_runs(metrics_paths: Iterable[str | Path]) -> pl.DataFrame:
    """One row per run: identity, ``family`` (:func:`run_family`), test
    metrics (plain names; ``n_test``), validation metrics (``val_*``),
    ``trainable_parameters``, ``training_seconds``, ``n_classes``, ``positive_label`` (the
    label value the ``*_positive`` metrics are of), ``monitor`` (the validation scores
    its early stopping watched, ";"-joined), ``chosen_by`` (the one its tuning trials were
    chosen by; None where fewer than two trained), ``flags`` (names, ";"-joined),
    ``collapsed`` (every test prediction one class) and the file's ``path``."""
    rows = []
    for p in metrics_paths:
        p = Path(p)
        m = _read_json(p)
        row: dict[str, Any] = _identity(m, p)
        row["family"] = run_family(m, row["method_type"])
        n_classes = _n_classes(m, p)
        row["n_classes"] = n_classes
        row["positive_label"] = _positive_label(m, n_classes)
        row.update(_metric_items(m.get("test") or {}, n_classes))
        # val_n: the validation subjects scored (out of fold under cross-validation)
        row.update({f"val_{k}": v for k, v in _metric_items(m.get("val") or {}, n_classes,
                                                             "n").items()})
        for k in ("trainable_parameters", "training_seconds", "evaluation_seconds",
                  "n_train", "n_val", "n_fit"):
            if k in m:
                row[k] = _num(m[k])
        removed = m.get("scenario_mask") or {}
        for k in MASK_COLUMNS:
            row[k] = _num(removed.get(k.removeprefix("mask_")))
        own = m.get("scenario_feature_set") or {}
        for k in FEATURE_SET_RATE_COLUMNS:
            row[k] = _num(own.get(k.removeprefix("feature_set_")))
        row[NOT_HELD_COLUMN] = _not_held(row["scenario"], removed.get("options") or {},
                                         m.get("encoders") or {})
        row["trained"] = bool(m.get("trained", True))
        # the validation scores its early stopping watched, ";"-joined (None for a fit
        # without epochs): a score a run stopped on is optimistic as a validation score
        training = m.get("training") or {}
        phases = [ph for part in (training, *(training.get("folds") or []))
                  if isinstance(part, dict) for ph in part.get("phases") or []]
        row["monitor"] = ";".join(sorted({str(ph["monitor"]) for ph in phases
                                          if ph.get("monitor")})) or None
        # the validation score its tuning trials were judged by, where two or more trained
        # (None: one candidate, or one left by the others' errors): the chosen trial's
        # score is the best of them, optimistic in the same way
        selection = m.get("selection") or {}
        trained_trials = [t for t in selection.get("trials") or ()
                          if isinstance(t, dict) and not t.get("error")]
        row["chosen_by"] = selection.get("choose_by") if len(trained_trials) > 1 else None
        # the parts of the cohort's own split the run's seed did not draw ("" when none)
        row["split_fixed"] = ",".join((m.get("split") or {}).get("fixed") or [])
        # the kind of device it trained on (cuda:1 is cuda): a report mixing kinds says so.
        # None for a scikit-learn fit: it runs on the CPU under any device, recorded as
        # such, and gives the same numbers on any
        row["device"] = (None if _sklearn_run(m) else
                         str(m.get("device") or "").split(":")[0] or None)
        flags = run_flag_list(m, p)
        row["flags"] = ";".join(f["flag"] for f in flags) or None
        # the report's numbers are the test split's: a run counts as collapsed by that one
        row["collapsed"] = any(f["flag"] == "single_class_test" for f in flags)
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
    Missing values (e.g. an AUC undefined for one seed) are left out of that mean; a
    table metric's ``{name}_n`` counts the seeds its mean is over.
    """
    keys = list(keys)
    counted = {"trained": "n_trained", "collapsed": "n_collapsed"}
    skip = set(keys) | {"seed", "path", "n_classes", *counted, *MASK_COLUMNS,
                        *FEATURE_SET_RATE_COLUMNS}
    values = [c for c, t in runs.schema.items() if c not in skip and t.is_numeric()]
    extra = [pl.col(c).drop_nulls().first() for c in _CARRIED
             if c in runs.columns and c not in keys]
    aggs = [pl.len().alias("n_seeds"), *extra]
    # runs that could not train have NaN metrics; collapsed runs predict one class
    aggs += [pl.col(c).sum().cast(pl.Int64).alias(name) for c, name in counted.items()
             if c in runs.columns]
    for c in values:
        col = pl.col(c).fill_nan(None)
        aggs += [col.mean().alias(f"{c}_mean"), col.std(ddof=1).alias(f"{c}_std")]
        if c in TABLE_METRICS:
            aggs.append(col.count().cast(pl.Int64).alias(f"{c}_n"))
    return runs.group_by(keys, maintain_order=True).agg(aggs).sort(keys)


def collect_subsets(metrics_paths: Iterable[str | Path]) -> pl.DataFrame:
    """One row per (run, evaluated modality subset): identity, ``subset`` ("ct+wsi"),
    ``n_modalities`` and the subset's test metrics (``n_test`` = subjects scored)."""
    rows = []
    for p in metrics_paths:
        p = Path(p)
        m = _read_json(p)
        ident = _identity(m, p)
        n_classes = _n_classes(m, p) if m.get("subsets") else None
        for s in m.get("subsets") or []:
            mods = list(s.get("modalities") or [])
            rows.append({**ident, "subset": "+".join(mods), "n_modalities": float(len(mods)),
                         **_metric_items(s, n_classes)})
    first = (*ID_COLUMNS, "subset", "n_modalities")
    if not rows:
        return _frame([], first)
    return _frame(rows, first).sort([*[c for c in ID_COLUMNS if c != "method_type"], "subset"])


def _pattern_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The pattern table's metrics, as a run's (:func:`classification_metrics`): every
    one NaN with one class present, so a pattern whose few subjects are all one class does
    not score 1.0 for a model that predicts that class (accuracy, which a run's metrics
    keep defined, stayed at it)."""
    if len(np.unique(y)) < 2:
        return {k: float("nan") for k in PATTERN_METRICS}
    scores = classification_metrics(y, proba)
    return {k: scores[k] for k in PATTERN_METRICS}


def pattern_metrics(prediction_paths: Iterable[str | Path], *, split: str = "test",
                    evaluation: str = "scenario", per_run: bool = False) -> pl.DataFrame:
    """Scores per (run, modality pattern) of the ``split`` predictions of the scenario itself.

    The run's identity comes from the ``metrics.json`` beside each file (or its path).
    With ``per_run`` one row per run and pattern (``n`` subjects); otherwise mean and std
    over seeds per (cohort, feature_set, method, scenario, rate, pattern), ``n`` being the
    mean number of subjects per run with that pattern and ``n_runs`` the runs that had it.
    A run that could not train (``trained`` false: its predictions are the training
    prior's, one class) scores NaN, as in :func:`collect_runs`, so the means over seeds
    are those of the trained runs, as in the main tables.
    """
    rows = []
    for p in prediction_paths:
        p = Path(p)
        side = p.with_name(METRICS)
        metrics = _read_json(side) if side.exists() else {}
        ident = _identity(metrics, p)
        ident["family"] = run_family(metrics, ident["method_type"])
        trained = bool(metrics.get("trained", True))
        df = pl.read_parquet(p).filter((pl.col("split") == split)
                                       & (pl.col("evaluation") == evaluation))
        if not len(df):
            continue
        score_cols = sorted((c for c in df.columns if c.startswith("score_")),
                            key=lambda c: int(c.removeprefix("score_")))
        df = df.with_columns(pl.col("pattern").fill_null("").replace("", NO_PATTERN))
        for (pattern,), g in df.group_by(["pattern"], maintain_order=True):
            y = g["label"].to_numpy()
            scores = _pattern_scores(y, g.select(score_cols).to_numpy())
            if not trained:
                scores = dict.fromkeys(scores, float("nan"))
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


def training_effort(m: dict[str, Any]) -> str | None:
    """How much a run trained, from its ``metrics.json``: optimiser steps (epochs ×
    batches of the subjects it trained on, per phase) with batch size and learning rate(s), so a
    collapsed run says whether it could have learnt anything (MUSE's official lr 1e-4 and
    batch 256 make about a hundred steps on a few hundred subjects)."""
    # the subjects the model trained on (a cv refit: the whole training part); runs
    # written before n_fit was recorded give their training split
    n = m.get("n_fit") or m.get("n_train")
    training, epochs = m.get("training") or {}, m.get("epochs") or {}
    phases = training.get("phases") or []
    batch = training.get("batch_size")
    if not phases or not batch or not n:
        return None
    steps, lrs = 0, []
    for ph in phases:
        # a cv refit ran the epochs its phase records; else the epochs run (per fold
        # under cv: the most)
        run = ph.get("epochs", epochs.get(ph.get("name")))
        run = max(run) if isinstance(run, list) else run
        if run is None:
            return None
        # the trainer skips a last batch of one subject (layer statistics need two)
        whole, rest = divmod(int(n), int(batch))
        steps += int(run) * (whole + (rest >= 2))
        lrs.append(f"{ph.get('lr'):g}" if isinstance(ph.get("lr"), int | float) else "?")
    return f"{steps} optimiser steps (batch {batch}, lr {'/'.join(dict.fromkeys(lrs))})"


def _flag_auc(m: dict[str, Any], flag: str) -> float | None:
    """The AUC of the split a flag is about (``single_class_val``: validation, any other:
    test), which tells a collapse whose scores still rank the subjects from one whose
    scores carry nothing."""
    split = "val" if flag == "single_class_val" else "test"
    auc = (m.get(split) or {}).get("auc")
    return float(auc) if isinstance(auc, int | float) and math.isfinite(auc) else None


def collect_flags(metrics_paths: Iterable[str | Path]) -> pl.DataFrame:
    """One row per (run, flag): identity, ``flag``, ``reason`` (:mod:`mmpipe.bench.flags`),
    ``effort`` (:func:`training_effort`) and ``auc`` (:func:`_flag_auc`)."""
    rows = []
    for p in metrics_paths:
        p = Path(p)
        m = _read_json(p)
        ident = _identity(m, p)
        effort = training_effort(m)
        rows += [{**ident, "flag": f["flag"], "reason": f["reason"], "effort": effort,
                  "auc": _flag_auc(m, f["flag"])}
                 for f in run_flag_list(m, p)]
    schema = {c: (pl.Int64 if c == "seed" else pl.Float64 if c in ("rate", "auc")
                  else pl.String)
              for c in (*ID_COLUMNS, "flag", "reason", "effort", "auc")}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(
        schema=schema)


def report_files(scenarios: dict[str, Sequence[float]], plot_metrics: Sequence[str] = PLOT_METRICS,
                 with_predictions: bool = True) -> list[str]:
    """The file names :func:`build_report` writes for a benchmark's ``scenarios``
    (config ``benchmark.scenarios``) when every (scenario, rate) group has runs. A group
    without runs gets no figure (rather than a picture saying "no runs"), so this is the
    most the report directory holds; the workflow declares the directory, not the files."""
    groups = [(s, float(r)) for s, rates in scenarios.items() for r in rates]
    names = [f"{REPORT_TABLES}.{ext}" for ext in ("csv", "md", "tex")]
    names += [REPORT_RUNS, "summary.csv", "subsets.csv"]
    # the plain metric-vs-rate figure is of MCAR (natural drawn at rate 0)
    names += [f"metric_vs_rate_{m}.png" for m in plot_metrics if "mcar" in scenarios]
    names += [f"metric_vs_rate_{m}_{s}.png" for m in plot_metrics for s in scenarios
              if s in PROTOCOL_SCENARIOS]
    names += [f"radar_{group_tag(s, r)}.png" for s, r in groups if s in RADAR_SCENARIOS]
    names += [f"perf_vs_params_{m}.png" for m in plot_metrics]
    if with_predictions:
        names += ["patterns.csv"]
        names += [f"pattern_heatmap_{m}_{group_tag(s, r)}.png" for m in plot_metrics
                  for s, r in groups]
    return names


def _weights_line(kept: int, runs: int, trained: int, best: bool) -> str:
    """Where the runs' ``model.pt`` files are, for ``mmpipe predict``, and the
    ``benchmark.keep_models`` setting that left them: ``best`` when the runs name a
    ``model_seed`` (only it writes one), else ``all`` or ``none`` by whether the trained
    runs kept theirs (a run that did not train keeps none under any setting, so counting
    files alone called ``all`` with an untrained run ``best``, and ``best`` with one seed
    ``all``)."""
    where = "runs/<feature set>/<method>/<scenario>-<rate>/seed<S>/model.pt"
    untrained = (f"; the {runs - trained} run(s) that did not train have none"
                 if trained < runs else "")
    if best:
        return (f"{kept} of {runs} runs kept their weights (`benchmark.keep_models: best`: "
                "in each cell the seed with the best validation AUC, named by `model_seed` "
                "in every run's metrics.json, and what chose it by `model_seed_by`: where "
                "no seed had a validation AUC, the validation balanced accuracy, then the "
                f"lowest trained seed): `{where}`.")
    if not trained:
        return f"No run trained, so none kept weights: the {runs} runs left metrics only."
    if not kept:
        return (f"No run kept its weights (`benchmark.keep_models: none`): the {runs} runs "
                "left metrics and predictions only.")
    return (f"Every trained run's weights are kept (`benchmark.keep_models: all`), {kept} "
            f"files: `{where}` beside each run's metrics, for `mmpipe predict`{untrained}.")


def _append_notes(table_md: Path, metrics_paths: list[Path],
                  flags: pl.DataFrame | None = None, summary: pl.DataFrame | None = None
                  ) -> None:
    """Add the flagged runs (collapsed, first-epoch, not trained; per method and group),
    where the runs' weights are, and what the methods say about themselves under the
    Markdown table, so none of it is only in a log."""
    from mmpipe.report.summary import flags_markdown

    flag_lines = flags_markdown(flags, summary) if flags is not None and len(flags) else []
    notes: dict[str, set[str]] = {}
    kept = runs = trained = 0
    best = False
    for path in metrics_paths:
        m = json.loads(path.read_text())
        runs += 1
        kept += bool(m.get("model"))
        trained += m.get("trained") is not False
        best |= "model_seed" in m
        for note in m.get("method_notes", []):
            # the row already names the method: drop a note's own "type: " prefix
            note = note.removeprefix(f"{m.get('method_type')}: ")
            notes.setdefault(m.get("method", "?"), set()).add(note)
        if m.get("trained") is False:
            notes.setdefault(m.get("method", "?"), set()).add(
                f"not trained on {m.get('feature_set')} in {m.get('scenario')} "
                f"{m.get('rate')} seed {m.get('seed')}: "
                + "; ".join(n for n in m.get("notes", []) if n.startswith("not trained")))
    lines = ["", *flag_lines] if flag_lines else []
    lines += ["", "## Model weights", "", _weights_line(kept, runs, trained, best)]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{method}**: {note}" for method in sorted(notes)
                  for note in sorted(notes[method])]
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
    drawn (:func:`report_files` names them); by default the groups found in the runs. A
    group without runs gets no figure. ``results.md`` opens with a summary per scenario
    (:mod:`mmpipe.report.summary`) on the first of ``table_metrics``.
    """
    from mmpipe.report import plots
    from mmpipe.report.stats import wilcoxon_vs_best
    from mmpipe.report.summary import summary_markdown
    from mmpipe.report.tables import _scenario_key, write_tables

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_paths = [Path(p) for p in metrics_paths]
    prediction_paths = [Path(p) for p in prediction_paths]
    runs = collect_runs(metrics_paths)
    flags = collect_flags(metrics_paths)
    summary = wilcoxon_vs_best(runs, summarise(runs), table_metrics)
    if scenarios is None:
        scenarios = {}
        found = summary.select("scenario", "rate").unique().iter_rows()
        for s, r in sorted(found, key=lambda g: (_scenario_key(g[0]), g[1])):
            scenarios.setdefault(s, []).append(r)
    groups = [(s, float(r)) for s, rates in scenarios.items() for r in rates]

    headline = summary_markdown(runs, summary, flags, metric=table_metrics[0])
    written = write_tables(summary, out_dir, published=published, metrics=table_metrics,
                           preamble=headline)
    _append_notes(out_dir / REPORT_PAGE, metrics_paths, flags, summary)
    written.append(_write_csv(runs, out_dir / REPORT_RUNS))
    written.append(_write_csv(summary, out_dir / "summary.csv"))
    subsets = collect_subsets(metrics_paths)
    subset_summary = (summarise(subsets, keys=(*SUMMARY_KEYS, "subset", "n_modalities"))
                      if len(subsets) else subsets)
    if len(subset_summary):
        # n_seeds there counts the trained runs (an untrained run scores no subset): the
        # cell's runs beside it, as patterns.csv's n_runs and the tables' "k/n" seeds
        subset_summary = subset_summary.join(
            summary.select(*SUMMARY_KEYS, pl.col("n_seeds").alias("n_runs")),
            on=list(SUMMARY_KEYS), how="left")
    written.append(_write_csv(subset_summary, out_dir / "subsets.csv"))

    # a figure function returns None when its group has no runs: no placeholder picture
    figures = []
    for m in plot_metrics:
        if "mcar" in scenarios:
            figures.append(plots.plot_metric_vs_rate(summary, m,
                                                     out_dir / f"metric_vs_rate_{m}.png"))
        for s in scenarios:
            if s in PROTOCOL_SCENARIOS:
                figures.append(plots.plot_metric_vs_rate(
                    summary, m, out_dir / f"metric_vs_rate_{m}_{s}.png", scenario=s))
    for s, r in groups:
        if s in RADAR_SCENARIOS:
            figures.append(plots.plot_radar(summary, r, table_metrics,
                                            out_dir / f"radar_{group_tag(s, r)}.png", scenario=s))
    params_group = ("natural", 0.0) if ("natural", 0.0) in groups else groups[0]
    for m in plot_metrics:
        # the published figures are of natural missingness: not beside another scenario's
        figures.append(plots.plot_perf_vs_params(
            summary, m, out_dir / f"perf_vs_params_{m}.png",
            published=published if params_group == ("natural", 0.0) else None,
            scenario=params_group[0], rate=params_group[1]))
    if prediction_paths:
        patterns = pattern_metrics(prediction_paths)
        written.append(_write_csv(patterns, out_dir / "patterns.csv"))
        for m in plot_metrics:
            for s, r in groups:
                figures.append(plots.plot_pattern_heatmap(
                    patterns, m, out_dir / f"pattern_heatmap_{m}_{group_tag(s, r)}.png",
                    scenario=s, rate=r))
    written += [f for f in figures if f is not None]
    log.info("report of %d runs written to %s (%d files)", len(runs), out_dir, len(written))
    return written


def cohort_runs(layout: CohortLayout, report: dict[str, Any]) -> list[Path]:
    """Every run directory the report params (:func:`mmpipe.params.report_params`) name,
    checked: each must hold a finished run trained with the settings the config asks for
    (the ``params_hash`` its ``metrics.json`` records) on the cohort's subjects, label and
    modality presence as the manifest holds them now (its ``benchmark_view``; a run
    written before runs recorded it is not checked for this), or the report is refused."""
    from mmpipe.cohorts.benchmark_view import built_benchmark_view

    view = built_benchmark_view(layout.root, report["label"])
    dirs, problems, other_build = [], [], False
    for key, run in report["runs"].items():
        feature_set, method = key.split("/")
        for cell in run["cells"]:
            for seed in report["seeds"]:
                run_dir = layout.run(feature_set, method, *parse_cell(cell), seed)
                dirs.append(run_dir)
                metrics = run_dir / METRICS
                if not metrics.is_file() or not (run_dir / PREDICTIONS).is_file():
                    problems.append(f"{run_dir}: no finished run here")
                elif (m := _read_json(metrics)).get("params_hash") != run["params_hash"]:
                    problems.append(f"{run_dir}: trained with other settings than the config's")
                elif m.get("benchmark_view", view) != view:
                    other_build = True
                    problems.append(f"{run_dir}: trained on another build of the cohort (its "
                                    "subjects, label, split or modalities have changed since)")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        # retraining alone would reuse the old splits and masks, which lack what changed
        fix = ("Run again without --rerun-triggers mtime (the default triggers redraw the "
               "splits and masks of a changed cohort and retrain its runs), or with "
               "--forcerun split mask" if other_build else
               "Rerun their training jobs (snakemake --forcerun train train_method, or "
               "delete them and run again)")
        raise StaleRunError(f"{len(problems)} of {len(dirs)} runs cannot enter the report: "
                            f"{shown}. {fix}")
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
