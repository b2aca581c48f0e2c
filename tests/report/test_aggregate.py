"""Aggregation of benchmark runs: one row per run, mean ± std over seeds, subsets, patterns."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mmpipe.report.aggregate import (
    build_report,
    collect_runs,
    collect_subsets,
    pattern_metrics,
    report_files,
    summarise,
)
from mmpipe.report.published import MMIST_VITAL12_TABLE_5_6, published_for

METHODS = {"mmare": 0.80, "hypermm": 0.70, "concat_zero": 0.60}   # base balanced accuracy
ECE = {"mmare": 0.10, "hypermm": 0.05, "concat_zero": 0.20}       # hypermm best calibrated
PARAMS = {"mmare": 1_400_000, "hypermm": 12_900_000, "concat_zero": 50_000}
GROUPS = [("natural", 0.0), ("mcar", 0.2), ("mcar", 0.4), ("mcar", 0.6)]
SEEDS = (0, 1, 2)
PATTERNS = ("ct+wsi", "ct", "wsi")


def bacc(method: str, rate: float, seed: int) -> float:
    return METHODS[method] - 0.1 * rate + 0.01 * seed


def _metrics(method: str, rate: float, seed: int) -> dict:
    b = bacc(method, rate, seed)
    return {"accuracy": b + 0.02, "balanced_accuracy": b, "auc": b + 0.05,
            "f1_positive": b - 0.05, "f1_macro": b - 0.04, "f1_weighted": b - 0.03,
            "precision_macro": b, "recall_macro": b, "precision_positive": b,
            "recall_positive": b, "ece": ECE[method] + 0.001 * seed, "n": 30,
            "notes": ["as classification_metrics writes them"]}


# concat_zero predicts one class on two seeds of natural missingness
COLLAPSED = {("concat_zero", "natural", 0), ("concat_zero", "natural", 1)}


def _flags(method: str, scenario: str, seed: int) -> list[dict]:
    if (method, scenario, seed) in COLLAPSED:
        return [{"flag": "single_class_test", "reason": "every test prediction (30 subjects) "
                 "is class 0"}]
    return []


def _predictions(rng: np.random.Generator, n: int = 30) -> pl.DataFrame:
    frames = []
    for split, evaluation in (("val", "scenario"), ("test", "scenario"), ("test", "ct")):
        y = np.arange(n) % 2
        p1 = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
        frames.append(pl.DataFrame({
            "subject_id": [f"s{i}" for i in range(n)], "split": [split] * n,
            "label": y.tolist(), "score_0": (1 - p1).tolist(), "score_1": p1.tolist(),
            "predicted": (p1 > 0.5).astype(int).tolist(),
            "pattern": [PATTERNS[i % 3] for i in range(n)],
            "evaluation": [evaluation] * n, "no_input": [False] * n}))
    return pl.concat(frames)


def write_fake_runs(root: Path, cohort: str = "demo", feature_set: str = "all"):
    """3 methods × (natural + MCAR 0.2/0.4/0.6) × 3 seeds, laid out as the benchmark does."""
    rng = np.random.default_rng(0)
    metrics_paths, prediction_paths = [], []
    for method in METHODS:
        for scenario, rate in GROUPS:
            for seed in SEEDS:
                d = (root / cohort / "runs" / feature_set / method / f"{scenario}-{rate}"
                     / f"seed{seed}")
                d.mkdir(parents=True)
                m = _metrics(method, rate, seed)
                out = {"cohort": cohort, "feature_set": feature_set, "method": method,
                       "method_type": method, "scenario": scenario, "rate": rate,
                       "seed": seed, "test": m, "val": {**m, "n": 10},
                       "subsets": [{"modalities": ["ct"], **m, "n": 20},
                                   {"modalities": ["ct", "wsi"], **m, "n": 10}],
                       "trainable_parameters": PARAMS[method],
                       "training_seconds": 1.0 + seed, "epochs": {"train": 10},
                       "best_epoch": {"train": 4}, "n_classes": 2,
                       "label_values": ["alive", "dead"],
                       "flags": _flags(method, scenario, seed),
                       "hparams": {}, "n_train": 60, "n_val": 10, "n_test": 30, "notes": [],
                       # keep_models: best, seed 1 of each cell holding the weights
                       "model": "model.pt" if seed == 1 else None, "model_seed": 1}
                (d / "metrics.json").write_text(json.dumps(out))
                _predictions(rng).write_parquet(d / "predictions.parquet")
                metrics_paths.append(d / "metrics.json")
                prediction_paths.append(d / "predictions.parquet")
    return metrics_paths, prediction_paths


@pytest.fixture
def fake_runs(tmp_path):
    return write_fake_runs(tmp_path)


def test_collect_runs_one_row_per_run(fake_runs):
    runs = collect_runs(fake_runs[0])
    assert len(runs) == 3 * 4 * 3
    for c in ("cohort", "feature_set", "method", "method_type", "scenario", "rate", "seed",
              "balanced_accuracy", "auc", "f1_positive", "f1_weighted", "ece", "n_test",
              "val_balanced_accuracy", "trainable_parameters", "training_seconds", "family",
              "positive_label", "flags", "collapsed"):
        assert c in runs.columns, c
    assert set(runs["family"]) == {"MMARE", "HyperMM", "simple fusion"}
    assert set(runs["positive_label"]) == {"dead"}
    assert runs.filter(pl.col("collapsed") > 0).select("method", "scenario", "seed").rows() == [
        ("concat_zero", "natural", 0), ("concat_zero", "natural", 1)]
    row = runs.filter((pl.col("method") == "hypermm") & (pl.col("scenario") == "mcar")
                      & (pl.col("rate") == 0.4) & (pl.col("seed") == 2)).row(0, named=True)
    assert row["balanced_accuracy"] == pytest.approx(bacc("hypermm", 0.4, 2))
    assert row["trainable_parameters"] == PARAMS["hypermm"]


def test_collect_runs_reads_the_kind_of_device_each_run_trained_on(fake_runs):
    first = json.loads(fake_runs[0][0].read_text())
    fake_runs[0][0].write_text(json.dumps({**first, "device": "cuda:1"}))
    fake_runs[0][1].write_text(json.dumps({**first, "seed": 1, "device": "cpu"}))
    # under device: cuda a scikit-learn fit runs and records cpu; the same numbers on any
    fake_runs[0][2].write_text(json.dumps({**first, "seed": 2, "device": "cpu",
                                           "training": {"estimator": {"C": 1.0}}}))
    devices = collect_runs(fake_runs[0])["device"].to_list()
    assert Counter(devices) == {"cpu": 1, "cuda": 1, None: len(devices) - 2}
    # a scikit-learn fold ensemble under cv records its estimators per fold
    fake_runs[0][2].write_text(json.dumps({
        **first, "seed": 2, "device": "cpu", "method_type": "logreg",
        "training": {"folds": [{"estimator": {"C": 1.0}}, {"estimator": {"C": 0.1}}]}}))
    assert collect_runs(fake_runs[0])["device"].to_list().count(None) == len(devices) - 2


def test_collect_runs_reads_what_each_run_s_early_stopping_watched(fake_runs):
    """The summary says when the fusion compared stopped on the score it was chosen by."""
    first = json.loads(fake_runs[0][0].read_text())
    phases = [{"name": "phi", "monitor": "loss"}, {"name": "rho", "monitor": "auc"}]
    fake_runs[0][0].write_text(json.dumps({**first, "training": {"phases": phases}}))
    # a fold ensemble under cv records each fold's phases
    fake_runs[0][1].write_text(json.dumps({**first, "seed": 1, "training": {"folds": [
        {"phases": [{"name": "main", "monitor": "balanced_accuracy"}]}]}}))
    fake_runs[0][2].write_text(json.dumps({**first, "seed": 2, "training": {
        "estimator": {"C": 1.0}}}))
    assert collect_runs(fake_runs[0][:3])["monitor"].to_list() == [
        "auc;loss", "balanced_accuracy", None]
    # and what its tuning trials were chosen by, where two or more trained (None: one
    # candidate, chosen by nothing, or one left by the others' errors)
    two = [{"overrides": {}, "val_auc": 0.7}, {"overrides": {"lr": 3e-3}, "val_auc": 0.8}]
    fake_runs[0][0].write_text(json.dumps({**first, "selection": {"choose_by": "auc",
                                                                  "trials": two}}))
    fake_runs[0][1].write_text(json.dumps({**first, "seed": 1, "selection": {
        "choose_by": "auc", "trials": [two[0], {**two[1], "error": "diverged"}]}}))
    fake_runs[0][2].write_text(json.dumps({**first, "seed": 2,
                                           "selection": {"choose_by": None,
                                                         "trials": two[:1]}}))
    assert collect_runs(fake_runs[0][:3])["chosen_by"].to_list() == ["auc", None, None]


def test_collect_runs_names_a_testmiss_modality_the_feature_set_does_not_hold(tmp_path):
    """From each run's encoders and its mask's options: a testmiss run on a feature set
    without the removed modality is its natural run under the scenario's name."""
    paths = []
    for feature_set, encoders, scenario in (("slide", {"wsi": "clam"}, "testmiss"),
                                            ("both", {"wsi": "clam", "clinical": "t"},
                                             "testmiss"),
                                            ("slide", {"wsi": "clam"}, "mcar")):
        m = _metrics("mmare", 0.8, 0)
        d = tmp_path / feature_set / scenario
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "cohort": "demo", "feature_set": feature_set, "method": "mmare",
            "method_type": "mmare", "scenario": scenario, "rate": 0.8, "seed": 0,
            "test": m, "val": m, "n_classes": 2, "encoders": encoders,
            "scenario_mask": {"rate": 0.8, "rate_of": 30,
                              "options": {"modality": "clinical"} if scenario == "testmiss"
                              else {}}}))
        paths.append(d / "metrics.json")
    runs = collect_runs(paths).sort("feature_set", "scenario")
    assert runs.select("feature_set", "scenario", "scenario_modality_not_held").rows() == [
        ("both", "testmiss", None), ("slide", "mcar", None), ("slide", "testmiss", "clinical")]


def test_a_fusion_method_on_one_modality_is_of_the_single_modality_family(tmp_path):
    """A clinical-only MMARE was reported as "the best fusion", ahead of "the single
    modality", where it fused nothing; a baseline keeps its family on one modality."""
    paths = []
    for method, feature_set, encoders in (("mmare", "clin", {"clinical": "tabular"}),
                                          ("mmare", "all", {"ct": "m", "clinical": "t"}),
                                          ("hgb", "clin", {"clinical": "tabular"})):
        m = _metrics("mmare", 0.0, 0)
        d = tmp_path / method / feature_set
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "cohort": "demo", "feature_set": feature_set, "method": method,
            "method_type": method, "scenario": "natural", "rate": 0.0, "seed": 0,
            "test": m, "val": m, "n_classes": 2, "encoders": encoders}))
        paths.append(d / "metrics.json")
    runs = collect_runs(paths).sort("method", "feature_set")
    assert runs.select("method", "feature_set", "family").rows() == [
        ("hgb", "clin", "baselines"), ("mmare", "all", "MMARE"),
        ("mmare", "clin", "single modality")]
    # the per-pattern scores (their heat maps) too: they coloured it MMARE
    rng = np.random.default_rng(0)
    for path in paths:
        _predictions(rng).write_parquet(path.with_name("predictions.parquet"))
    patterns = pattern_metrics([p.with_name("predictions.parquet") for p in paths])
    assert sorted(set(patterns.select("method", "feature_set", "family").rows())) == [
        ("hgb", "clin", "baselines"), ("mmare", "all", "MMARE"),
        ("mmare", "clin", "single modality")]


def test_a_completeness_run_on_none_of_its_modalities_is_its_natural_run(tmp_path):
    """An age-only run under HAM's completeness over four MRI sequences loses nothing: it
    sat among the "25 %" rows, trained on the natural data, with nothing said."""
    paths = []
    for feature_set, encoders, named in (
            ("clinical", {"clinical": "tabular"}, ["t1", "t2"]),
            ("mri", {"t1": "m", "t2": "m"}, ["t1", "t2"]),
            ("t1_clinical", {"t1": "m", "clinical": "tabular"}, ["t1", "t2"]),
            ("t1_only", {"t1": "m"}, None)):
        m = _metrics("mmare", 0.25, 0)
        d = tmp_path / feature_set
        d.mkdir()
        options = {"modalities": named, "drop": "one"} if named else {"drop": "one"}
        (d / "metrics.json").write_text(json.dumps({
            "cohort": "demo", "feature_set": feature_set, "method": "hgb",
            "method_type": "hgb", "scenario": "completeness", "rate": 0.25, "seed": 0,
            "test": m, "val": m, "n_classes": 2, "encoders": encoders,
            "scenario_mask": {"rate": 0.25, "rate_of": 40, "options": options}}))
        paths.append(d / "metrics.json")
    runs = collect_runs(paths).sort("feature_set")
    # one of them held is lost where the mask drops it: not the natural run
    assert runs.select("feature_set", "scenario_modality_not_held").rows() == [
        ("clinical", "t1, t2"), ("mri", None), ("t1_clinical", None), ("t1_only", None)]

def test_collect_runs_refuses_duplicates(fake_runs):
    with pytest.raises(ValueError, match="more than once"):
        collect_runs([fake_runs[0][0], fake_runs[0][0]])


def test_identity_from_path_when_the_file_lacks_it(tmp_path):
    d = tmp_path / "c1" / "runs" / "fs" / "deepsets" / "mcar-0.4" / "seed3"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"test": {"balanced_accuracy": 0.5, "auc": None,
                                                         "n": 4}}))
    row = collect_runs([d / "metrics.json"]).row(0, named=True)
    assert (row["cohort"], row["feature_set"], row["method"], row["scenario"], row["rate"],
            row["seed"]) == ("c1", "fs", "deepsets", "mcar", 0.4, 3)
    assert row["method_type"] == "deepsets" and row["auc"] is None


def test_summarise_mean_std_by_hand(fake_runs):
    summary = summarise(collect_runs(fake_runs[0]))
    assert len(summary) == 3 * 4
    assert set(summary["n_seeds"]) == {3}
    for method in METHODS:
        for scenario, rate in GROUPS:
            r = summary.filter((pl.col("method") == method) & (pl.col("scenario") == scenario)
                               & (pl.col("rate") == rate)).row(0, named=True)
            vals = np.array([bacc(method, rate, s) for s in SEEDS])
            assert r["balanced_accuracy_mean"] == pytest.approx(vals.mean())
            assert r["balanced_accuracy_std"] == pytest.approx(vals.std(ddof=1))
            eces = np.array([ECE[method] + 0.001 * s for s in SEEDS])
            assert r["ece_mean"] == pytest.approx(eces.mean())
            assert r["ece_std"] == pytest.approx(eces.std(ddof=1))
            assert r["training_seconds_mean"] == pytest.approx(2.0)
            assert r["trainable_parameters_mean"] == PARAMS[method]
            assert r["method_type"] == method


def test_summarise_counts_collapsed_seeds(fake_runs):
    summary = summarise(collect_runs(fake_runs[0]))
    r = summary.filter((pl.col("method") == "concat_zero")
                       & (pl.col("scenario") == "natural")).row(0, named=True)
    assert r["n_collapsed"] == 2 and r["n_trained"] == 3 and r["family"] == "simple fusion"
    assert summary["n_collapsed"].sum() == 2


def _legacy_run(tmp_path, n_classes: int, predicted: list[int], epochs=None) -> Path:
    """A run written before metrics.json had weighted F1, flags or the class count."""
    d = tmp_path / "c" / "runs" / "fs" / "muse" / "natural-0.0" / "seed0"
    d.mkdir(parents=True)
    test = {"accuracy": 0.5, "balanced_accuracy": 0.5, "auc": 0.6, "f1": 0.4,
            "f1_macro": 0.3, "precision": 0.2, "recall": 0.1, "ece": 0.1, "n": len(predicted)}
    (d / "metrics.json").write_text(json.dumps({
        "test": test, "val": test, "trained": True, "method_type": "muse",
        "epochs": epochs or {"train": 5}, "best_epoch": {"train": 1}}))
    n = len(predicted)
    pl.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "split": ["test"] * n,
                  "label": [i % n_classes for i in range(n)],
                  **{f"score_{c}": [1.0 / n_classes] * n for c in range(n_classes)},
                  "predicted": predicted, "pattern": ["ct"] * n,
                  "evaluation": ["scenario"] * n, "no_input": [False] * n}
                 ).write_parquet(d / "predictions.parquet")
    return d / "metrics.json"


def test_legacy_keys_are_renamed_by_class_count_and_flags_derived(tmp_path):
    from mmpipe.report.aggregate import collect_flags

    binary = collect_runs([_legacy_run(tmp_path / "b", 2, [0, 0, 0, 0])]).row(0, named=True)
    assert (binary["f1_positive"], binary["precision_positive"], binary["recall_positive"]) == (
        0.4, 0.2, 0.1)
    assert "f1" not in binary and binary["positive_label"] is None   # no label values recorded
    assert binary["flags"] == "single_class_test;first_epoch" and binary["collapsed"]
    multi = collect_runs([_legacy_run(tmp_path / "m", 5, [0, 1, 2, 3])]).row(0, named=True)
    # a multi-class run's "f1" was its macro F1: no per-class column comes of it
    assert "f1_positive" not in multi and "f1" not in multi
    assert (multi["precision_macro"], multi["recall_macro"], multi["f1_macro"]) == (0.2, 0.1, 0.3)
    assert multi["flags"] == "first_epoch" and not multi["collapsed"]
    flags = collect_flags([tmp_path / "m" / "c" / "runs" / "fs" / "muse" / "natural-0.0"
                           / "seed0" / "metrics.json"])
    assert flags.select("method", "flag").rows() == [("muse", "first_epoch")]
    assert flags["reason"][0] == "phase 'train' kept its epoch-1 checkpoint of 5 epochs"
    # the AUC of the flagged split, for the report's diagnosis of a collapse
    assert flags["auc"].to_list() == [0.6]


def test_summarise_skips_missing_values():
    runs = pl.DataFrame({"cohort": ["c"] * 3, "feature_set": ["f"] * 3, "method": ["m"] * 3,
                         "scenario": ["natural"] * 3, "rate": [0.0] * 3, "seed": [0, 1, 2],
                         "auc": [0.6, None, 0.8]})
    r = summarise(runs).row(0, named=True)
    assert r["n_seeds"] == 3 and r["auc_mean"] == pytest.approx(0.7)
    assert r["auc_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))


def test_collect_subsets(fake_runs):
    subsets = collect_subsets(fake_runs[0])
    assert len(subsets) == 3 * 4 * 3 * 2
    assert set(subsets["subset"]) == {"ct", "ct+wsi"}
    r = subsets.filter(pl.col("subset") == "ct").row(0, named=True)
    assert r["n_test"] == 20 and r["n_modalities"] == 1


def test_pattern_metrics_by_hand(fake_runs):
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    per_run = pattern_metrics(fake_runs[1], per_run=True)
    assert set(per_run["pattern"]) == set(PATTERNS)       # the "ct" subset rows are left out
    path = fake_runs[1][0]
    df = pl.read_parquet(path).filter((pl.col("split") == "test")
                                      & (pl.col("evaluation") == "scenario")
                                      & (pl.col("pattern") == "ct"))
    row = collect_runs([path.with_name("metrics.json")]).row(0, named=True)
    got = per_run.filter((pl.col("method") == row["method"]) & (pl.col("scenario") == row["scenario"])
                         & (pl.col("rate") == row["rate"]) & (pl.col("seed") == row["seed"])
                         & (pl.col("pattern") == "ct")).row(0, named=True)
    assert got["n"] == len(df) == 10
    assert got["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(df["label"], df["predicted"]))
    assert got["auc"] == pytest.approx(roc_auc_score(df["label"], df["score_1"]))

    agg = pattern_metrics(fake_runs[1])
    assert len(agg) == 3 * 4 * 3
    one = agg.filter((pl.col("method") == "mmare") & (pl.col("scenario") == "natural")
                     & (pl.col("pattern") == "wsi")).row(0, named=True)
    seeds = per_run.filter((pl.col("method") == "mmare") & (pl.col("scenario") == "natural")
                           & (pl.col("pattern") == "wsi"))["auc"].to_numpy()
    assert one["n_runs"] == 3 and one["n"] == 10
    assert one["auc_mean"] == pytest.approx(seeds.mean())
    assert one["auc_std"] == pytest.approx(seeds.std(ddof=1))


def test_pattern_metrics_leave_out_runs_that_did_not_train(fake_runs):
    """A run that could not train predicts the training prior (one class): the main tables
    give it NaN metrics, so the pattern tables must not average its chance-level scores."""
    path = next(p for p in fake_runs[1] if "mmare" in str(p) and "natural" in str(p))
    side = path.with_name("metrics.json")
    m = json.loads(side.read_text())
    side.write_text(json.dumps({**m, "trained": False}))
    per_run = pattern_metrics(fake_runs[1], per_run=True)
    seed = m["seed"]
    mine = per_run.filter((pl.col("method") == "mmare") & (pl.col("scenario") == "natural"))
    untrained = mine.filter(pl.col("seed") == seed)
    assert len(untrained) == 3 and untrained["balanced_accuracy"].is_nan().all()
    agg = pattern_metrics(fake_runs[1]).filter(
        (pl.col("method") == "mmare") & (pl.col("scenario") == "natural")
        & (pl.col("pattern") == "wsi")).row(0, named=True)
    trained = mine.filter((pl.col("seed") != seed) & (pl.col("pattern") == "wsi"))
    assert agg["n_runs"] == 3  # the run is counted, its scores are not
    assert agg["balanced_accuracy_mean"] == pytest.approx(trained["balanced_accuracy"].mean())


def test_published_table_5_6():
    pub = published_for("mmist_ccrcc", "vital_status_12")
    assert pub is MMIST_VITAL12_TABLE_5_6 and published_for("demo") is None
    rows = {r.method: r for r in pub.rows}
    assert rows["DRIM"].metrics == {"balanced_accuracy": 0.780, "auc": 0.799, "f1_macro": 0.693}
    assert rows["MMARE with clinical"].trainable_parameters == 1.4e6
    assert rows["MMARE without clinical"].counterpart == ("mmare", "without_clinical")
    assert rows["HyperMM"].metrics["auc"] == 0.653
    assert "Table 5.6" in pub.label and "single split" in pub.label
    assert len(pub.to_frame()) == 6


def test_published_figures_are_drawn_beside_natural_missingness_only(fake_runs, tmp_path,
                                                                      monkeypatch):
    """Without a natural group the parameter figure took the first group, and drew the
    thesis's natural-missingness stars beside our MCAR points without a word."""
    from mmpipe.report import plots

    seen = []

    def record(summary, metric, out, *, published=None, scenario, rate):
        seen.append((scenario, published))

    monkeypatch.setattr(plots, "plot_perf_vs_params", record)
    mcar = [p for p in fake_runs[0] if json.loads(p.read_text())["scenario"] == "mcar"]
    build_report(mcar, [], tmp_path / "mcar", MMIST_VITAL12_TABLE_5_6, plot_metrics=["auc"])
    assert seen == [("mcar", None)]
    seen.clear()
    build_report(fake_runs[0], [], tmp_path / "all", MMIST_VITAL12_TABLE_5_6,
                 plot_metrics=["auc"])
    assert seen == [("natural", MMIST_VITAL12_TABLE_5_6)]


def test_build_report_writes_declared_files(fake_runs, tmp_path):
    out = tmp_path / "demo" / "report"
    scenarios = {"natural": [0.0], "mcar": [0.4]}       # per-group figures for these only
    written = build_report(*fake_runs, out, scenarios=scenarios, plot_metrics=["auc"])
    names = sorted(p.name for p in written)
    assert names == sorted(report_files(scenarios, plot_metrics=["auc"]))
    assert "pattern_heatmap_auc_mcar-0.4.png" in names and "radar_natural-0.0.png" in names
    for p in written:
        assert p.exists() and p.stat().st_size > 0, p
    assert sorted(p.name for p in out.iterdir()) == names
    md = (out / "results.md").read_text()
    # the summary opens the report, natural first; the flagged runs follow the tables
    assert md.index("## Summary") < md.index("**Natural missingness**") < md.index(
        "**MCAR: 40 % of present entries removed**") < md.index("## Tables") < md.index("## Flagged runs")
    assert ("- **concat_zero**, Natural missingness: collapsed to one class on 2 of 3 seeds "
            "(seed 0, 1): every test prediction (30 subjects) is class 0") in md
    assert "F1 (positive: dead)" in md
    # where the weights are, as the runs recorded it
    runs = len(fake_runs[0])
    assert (f"## Model weights\n\n{runs // 3} of {runs} runs kept their weights "
            "(`benchmark.keep_models: best`") in md


def test_a_group_without_runs_gets_no_figure(fake_runs, tmp_path):
    out = tmp_path / "report"
    scenarios = {"natural": [0.0], "mcar": [0.4, 0.8], "testmiss": [0.5]}   # 0.8, testmiss: none
    written = {p.name for p in build_report(*fake_runs, out, scenarios=scenarios,
                                            plot_metrics=["auc"])}
    assert written == {p.name for p in out.iterdir()}
    assert written <= set(report_files(scenarios, plot_metrics=["auc"]))
    missing = set(report_files(scenarios, plot_metrics=["auc"])) - written
    assert missing == {"radar_mcar-0.8.png", "pattern_heatmap_auc_mcar-0.8.png",
                       "metric_vs_rate_auc_testmiss.png", "pattern_heatmap_auc_testmiss-0.5.png"}


def test_pattern_scores_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from mmpipe.report.aggregate import _pattern_scores

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 50)
    proba = rng.dirichlet(np.ones(3), 50).round(1) + 0.1    # rounded: ties in the scores
    proba /= proba.sum(1, keepdims=True)
    pred = proba.argmax(1)
    got = _pattern_scores(y, proba)
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr",
                                                     average="macro"))
    # a pattern whose subjects are all one class: a model predicting that class for
    # everyone would score a balanced accuracy (the mean recall of one class) and an
    # accuracy of 1.0
    one_class = _pattern_scores(np.zeros(4, int), np.eye(2)[[0, 0, 1, 0]])
    assert all(np.isnan(v) for v in one_class.values())


def test_subsets_csv_says_how_many_runs_its_means_leave_out(fake_runs, tmp_path):
    """An untrained run scores no modality subset: subsets.csv's n_seeds counted only the
    trained ones, with nothing to say that the cell ran more (the tables say "2/3")."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(fake_runs[0][0].parents[5], root)
    metrics = sorted(root.rglob("metrics.json"))
    first = json.loads(metrics[0].read_text())
    first.update(trained=False, subsets=[])
    metrics[0].write_text(json.dumps(first))
    out = tmp_path / "report"
    build_report(metrics, sorted(root.rglob("predictions.parquet")), out,
                 scenarios={"natural": [0.0]}, plot_metrics=["auc"])
    subsets = pl.read_csv(out / "subsets.csv")
    cell = subsets.filter((pl.col("method") == first["method"])
                          & (pl.col("scenario") == first["scenario"])
                          & ((pl.col("rate") - first["rate"]).abs() < 1e-9))
    assert cell["n_seeds"].to_list() == [2, 2] and cell["n_runs"].to_list() == [3, 3]
    assert set(subsets["n_runs"]) == {3}
    # the note names the run's feature set, which a method may be trained on several of
    assert (f"not trained on {first['feature_set']} in {first['scenario']} {first['rate']} "
            f"seed {first['seed']}") in (out / "results.md").read_text()


def test_a_run_of_another_build_of_the_cohort_cannot_enter_the_report(tmp_path):
    """Under ``--rerun-triggers mtime`` no training job reruns for a subject added to the
    cohort: the report took such runs, trained without it, as current (it compared the
    training settings only)."""
    from mmpipe.cohorts import build_manifest
    from mmpipe.cohorts.benchmark_view import built_benchmark_view
    from mmpipe.errors import InputError, StaleRunError
    from mmpipe.layout import CohortLayout
    from mmpipe.report.aggregate import cohort_runs

    def build(n: int) -> CohortLayout:
        rows = ["id,y,a"]
        for i in range(n):
            np.save(tmp_path / f"a{i}.npy", np.full(3, i, np.float32))
            rows.append(f"s{i},{i % 2},a{i}.npy")
        (tmp_path / "cohort.csv").write_text("\n".join(rows) + "\n")
        cfg = {"adapter": "csv", "csv": str(tmp_path / "cohort.csv"), "subject_column": "id",
               "labels": ["y"], "modalities": {"a": {"kind": "features", "column": "a",
                                                     "encoders": ["precomputed"]}}}
        build_manifest("toy", cfg, tmp_path / "toy")
        return CohortLayout(tmp_path / "toy")

    layout = build(8)
    run_dir = layout.run("all", "logreg", "natural", 0.0, 0)
    run_dir.mkdir(parents=True)
    (run_dir / "predictions.parquet").write_bytes(b"")
    # as a training job records it (tests/bench/test_run.py checks that it does)
    (run_dir / "metrics.json").write_text(json.dumps(
        {"params_hash": "h", "benchmark_view": built_benchmark_view(layout.root, "y")}))
    report = {"runs": {"all/logreg": {"params_hash": "h", "cells": ["natural-0.0"]}},
              "seeds": [0], "label": "y"}
    assert cohort_runs(layout, report) == [run_dir]
    build(9)   # a subject added, the manifest rebuilt; the run left as it was
    with pytest.raises(StaleRunError, match=r"trained on another build of the cohort.*"
                                            r"--forcerun split mask"):
        cohort_runs(layout, report)
    # a manifest that cannot be read is said, not taken for another build
    with pytest.raises(InputError, match=r"manifest\.parquet: label not in the manifest"):
        cohort_runs(layout, {**report, "label": "z"})


def test_the_weights_line_names_the_setting_the_runs_were_kept_by():
    """Counted from model.pt files alone, keep_models: all with an untrained run read as
    best, and best with one seed as all."""
    from mmpipe.report.aggregate import _weights_line

    assert "keep_models: all" in _weights_line(33, 36, 33, best=False)
    assert "the 3 run(s) that did not train have none" in _weights_line(33, 36, 33, False)
    assert "keep_models: best" in _weights_line(4, 4, 4, best=True)
    assert "keep_models: none" in _weights_line(0, 4, 4, best=False)
    assert _weights_line(0, 3, 0, best=False).startswith("No run trained")


def test_a_pattern_of_one_class_scores_nan_on_every_metric(tmp_path):
    """Accuracy stayed 1.0 where balanced accuracy and AUC were NaN: the inflated score
    the NaN was meant to prevent."""
    from mmpipe.report.aggregate import PATTERN_METRICS, _pattern_scores

    scores = _pattern_scores(np.array([1, 1, 1]), np.array([[0.2, 0.8]] * 3))
    assert set(scores) == set(PATTERN_METRICS) and all(np.isnan(v) for v in scores.values())
