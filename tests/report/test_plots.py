"""Figures: written atomically, non-empty, readable PNG/SVG, placeholders when empty."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mmpipe.report import plots
from mmpipe.report.aggregate import collect_runs, pattern_metrics, summarise
from mmpipe.report.published import MMIST_VITAL12_TABLE_5_6
from tests.report.test_aggregate import write_fake_runs

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    metrics_paths, prediction_paths = write_fake_runs(tmp_path_factory.mktemp("runs"))
    return summarise(collect_runs(metrics_paths)), pattern_metrics(prediction_paths)


def _png(path, min_bytes=10_000):
    assert path.exists() and path.read_bytes()[:8] == PNG
    assert path.stat().st_size > min_bytes, path.stat().st_size
    assert not list(path.parent.glob("*.tmp-*"))
    return path


def test_metric_vs_rate(tables, tmp_path):
    out = plots.plot_metric_vs_rate(tables[0], "balanced_accuracy", tmp_path / "mvr.png")
    assert out == tmp_path / "mvr.png"
    _png(out)


def test_metric_vs_rate_svg(tables, tmp_path):
    out = plots.plot_metric_vs_rate(tables[0], "auc", tmp_path / "mvr.svg")
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text


def test_radar(tables, tmp_path):
    for rate in (0.0, 0.4):
        _png(plots.plot_radar(tables[0], rate, ["balanced_accuracy", "auc", "f1_positive",
                                                 "accuracy", "ece"], tmp_path / f"radar-{rate}.png"))


def test_perf_vs_params(tables, tmp_path):
    plain = _png(plots.plot_perf_vs_params(tables[0], "auc", tmp_path / "p.png"))
    with_pub = _png(plots.plot_perf_vs_params(tables[0], "auc", tmp_path / "pp.png",
                                              published=MMIST_VITAL12_TABLE_5_6))
    assert with_pub.read_bytes() != plain.read_bytes()


def test_perf_vs_params_skips_methods_without_parameters(tables, tmp_path, monkeypatch):
    """A method without trainable parameters has no place on a log axis: it is named
    under the axes, not drawn at an invented x."""
    summary = tables[0].with_columns(
        pl.when(pl.col("method") == "concat_zero").then(None)
        .otherwise(pl.col("trainable_parameters_mean")).alias("trainable_parameters_mean"))
    _png(plots.plot_perf_vs_params(summary, "balanced_accuracy", tmp_path / "p.png"))
    seen = {}

    def keep(fig, out):
        ax = fig.axes[0]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["texts"] = [t.get_text() for t in ax.texts]
        return out

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_perf_vs_params(summary, "balanced_accuracy", tmp_path / "q.png")
    assert "not shown (no trainable parameters): concat_zero" in seen["texts"], seen
    assert not any(t.startswith("concat_zero") for t in seen["legend"])
    assert any(t.startswith("mmare") for t in seen["legend"])


def test_pattern_heatmap(tables, tmp_path, monkeypatch):
    _png(plots.plot_pattern_heatmap(tables[1], "balanced_accuracy", tmp_path / "h.png"))
    _png(plots.plot_pattern_heatmap(tables[1], "auc", tmp_path / "h2.png", scenario="mcar",
                                    rate=0.6))
    # one row per method, one column per pattern of the group, each cell its mean
    seen = {}

    def keep(fig, out):
        ax = fig.axes[0]
        seen["rows"] = [t.get_text() for t in ax.get_yticklabels()]
        seen["cells"] = [t.get_text() for t in ax.texts]
        return out

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_pattern_heatmap(tables[1], "balanced_accuracy", tmp_path / "h3.png")
    group = tables[1].filter((pl.col("scenario") == "natural") & (pl.col("rate") == 0.0))
    assert sorted(seen["rows"]) == sorted(group["method"].unique().to_list()), seen["rows"]
    means = {f"{v:.2f}" for v in group["balanced_accuracy_mean"].drop_nulls().to_list()}
    shown = {c.split(" ")[0].split("\n")[0] for c in seen["cells"]}
    assert means <= shown, (means, shown)


def test_nothing_to_draw_writes_nothing(tables, tmp_path):
    # a group without runs gets no figure at all: no placeholder picture in the report
    empty = tables[0].clear()
    assert plots.plot_metric_vs_rate(empty, "auc", tmp_path / "a.png") is None
    assert plots.plot_metric_vs_rate(tables[0], "auc", tmp_path / "t.png",
                                     scenario="testmiss") is None
    assert plots.plot_radar(tables[0], 0.9, ["auc", "f1_macro", "ece"], tmp_path / "b.png") is None
    assert plots.plot_pattern_heatmap(tables[1].clear(), "auc", tmp_path / "c.png") is None
    assert plots.plot_perf_vs_params(empty, "auc", tmp_path / "d.png") is None
    assert list(tmp_path.iterdir()) == []


def _untrained(summary: pl.DataFrame, method: str) -> pl.DataFrame:
    """``method``'s natural row, copied from mmare's, untrained on every seed."""
    natural = summary.filter((pl.col("scenario") == "natural") & (pl.col("method") == "mmare"))
    means = [c for c in summary.columns if c.endswith("_mean") or c.endswith("_std")]
    return natural.with_columns(pl.lit(method).alias("method"),
                                pl.lit(method).alias("method_type"),
                                *[pl.lit(None, dtype=pl.Float64).alias(c) for c in means])


def _radar_seen(monkeypatch) -> dict:
    """The legend's labels and the figure's texts of the next figure saved."""
    seen: dict = {}

    def keep(fig, out):
        seen["labels"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        seen["texts"] = [t.get_text() for t in fig.texts]
        return out

    monkeypatch.setattr(plots, "_save", keep)
    return seen


def test_radar_leaves_out_a_method_without_values(tables, tmp_path, monkeypatch):
    """A baseline that never trained in the group was drawn as a polygon at 0 on every
    axis (its NaN means as zeros), which reads as the worst method."""
    summary = tables[0]
    untrained = _untrained(summary, "hgb")
    if "family" in summary.columns:
        untrained = untrained.with_columns(pl.lit("baselines").alias("family"))
    seen = _radar_seen(monkeypatch)
    plots.plot_radar(pl.concat([summary, untrained], how="diagonal_relaxed"), 0.0,
                     ["balanced_accuracy", "auc", "accuracy"], tmp_path / "r.png")
    assert seen["labels"] and not any(label.startswith("hgb") for label in seen["labels"])
    # ...and says so: left out without a word, it read as never run
    assert "not shown (no value here): hgb" in seen["texts"]
    # the same in the parameters plot, beside the methods without parameters
    seen.clear()

    def keep_axes(fig, out):
        seen["texts"] = [t.get_text() for t in fig.axes[0].texts]
        return out

    monkeypatch.setattr(plots, "_save", keep_axes)
    hgb_params = pl.concat([summary, untrained.with_columns(
        pl.lit(10.0).alias("trainable_parameters_mean"))], how="diagonal_relaxed")
    plots.plot_perf_vs_params(hgb_params, "balanced_accuracy", tmp_path / "p.png")
    assert any("not shown (no value here): hgb" in t for t in seen["texts"]), seen


def test_the_figures_rank_as_the_tables_bold(tmp_path, monkeypatch):
    """mmare's mean over 4 of its 5 seeds was labelled "#1" in the figure while the table
    bolded muse, the best with a value on every seed."""
    from mmpipe.report.stats import wilcoxon_vs_best

    values = {"mmare": [0.82, 0.81, 0.80, 0.83, None], "muse": [0.75, 0.76, 0.74, 0.75, 0.76],
              "deepsets": [0.70, 0.71, 0.69, 0.70, 0.72]}
    runs = pl.DataFrame([{"cohort": "c", "feature_set": "all", "method": m, "method_type": m,
                          "family": "fusion", "scenario": "natural", "rate": 0.0, "seed": s,
                          "balanced_accuracy": v, "trainable_parameters": 1000.0 * (i + 1),
                          "trained": True}
                         for i, (m, vals) in enumerate(values.items())
                         for s, v in enumerate(vals)])
    summary = wilcoxon_vs_best(runs, summarise(runs), ["balanced_accuracy"])
    seen = {}

    def keep(fig, out):
        seen["texts"] = [t.get_text() for ax in fig.axes for t in ax.texts]
        return out

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_perf_vs_params(summary, "balanced_accuracy", tmp_path / "p.png")
    ranks = {t.split(" ", 1)[0]: t.split(" ", 1)[1] for t in seen["texts"] if t.startswith("#")}
    assert ranks["#1"].startswith("muse") and ranks["#2"].startswith("deepsets"), seen["texts"]
    assert not any(t.startswith("mmare") for t in ranks.values())


def _rate_summary(values: dict[str, dict[float, float | None]],
                  no_value: tuple[str, float, int] | None = None) -> pl.DataFrame:
    """The summary of three seeds per method and MCAR rate (None: no seed trained;
    ``no_value``: the (method, rate, seed) that trained without a value)."""
    from mmpipe.report.stats import wilcoxon_vs_best

    runs = pl.DataFrame([{"cohort": "c", "feature_set": "all", "method": m, "method_type": m,
                          "family": "fusion", "scenario": "mcar", "rate": r, "seed": s,
                          "balanced_accuracy": (None if v is None or (m, r, s) == no_value
                                                else v + 0.01 * s),
                          "trained": v is not None}
                         for m, by_rate in values.items() for r, v in by_rate.items()
                         for s in range(3)], schema_overrides={"balanced_accuracy": pl.Float64})
    return wilcoxon_vs_best(runs, summarise(runs), ["balanced_accuracy"])


def test_a_method_without_a_value_at_the_hardest_rate_is_not_ranked_first(tmp_path,
                                                                          monkeypatch):
    """B trained at MCAR 0.2 and 0.5 but on no seed at 0.8: its row there has no mean,
    which was filtered out before the ranking, so its mean over the two easier rates
    beat A's over all three and the legend called it "#1"."""
    seen = {}

    def keep(fig, out):
        # a series short of some seed's value says so; the rank is what is checked here
        seen["marked"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        seen["labels"] = [t.removesuffix(" (not every seed)") for t in seen["marked"]]
        return out

    monkeypatch.setattr(plots, "_save", keep)
    values = {"A": {0.2: 0.80, 0.5: 0.70, 0.8: 0.60}, "B": {0.2: 0.78, 0.5: 0.72, 0.8: None}}
    plots.plot_metric_vs_rate(_rate_summary(values), "balanced_accuracy", tmp_path / "m.png")
    assert "#1 A" in seen["labels"] and "B" in seen["labels"], seen["labels"]
    assert "B (not every seed)" in seen["marked"], seen["marked"]
    # a rate where no method trained is no rate to cover (every series missed it, and the
    # ranking fell back to all of them)
    # A short of a value on one seed at 0.2 (no series has every seed then): B, with no
    # value at 0.8, still does not lead; the restriction to every rate had been dropped
    plots.plot_metric_vs_rate(_rate_summary(values, no_value=("A", 0.2, 2)),
                              "balanced_accuracy", tmp_path / "m3.png")
    assert "#1 A" in seen["labels"] and "B" in seen["labels"], seen["labels"]
    values["A"][0.8], values["B"][0.5] = None, None
    plots.plot_metric_vs_rate(_rate_summary(values), "balanced_accuracy", tmp_path / "m2.png")
    assert "#1 A" in seen["labels"] and "B" in seen["labels"], seen["labels"]


def test_a_rate_of_zero_is_not_drawn_twice_at_zero(tmp_path, monkeypatch):
    """An MCAR rate of 0.0 beside natural missingness drew two points at x = 0 on every
    line (natural missingness is drawn at 0 where nothing is removed)."""
    drawn = []
    monkeypatch.setattr(plots, "_draw_line",
                        lambda ax, part, *args, **kwargs: drawn.append(sorted(part["x"])))
    monkeypatch.setattr(plots, "_save", lambda fig, out: out)
    summary = _rate_summary({"A": {0.0: 0.80, 0.4: 0.70}, "B": {0.0: 0.78, 0.4: 0.72}})
    natural = summary.filter(pl.col("rate") == 0).with_columns(scenario=pl.lit("natural"))
    plots.plot_metric_vs_rate(pl.concat([summary, natural]), "balanced_accuracy",
                              tmp_path / "m.png")
    assert sorted(drawn) == [[0.0, 0.4], [0.0, 0.4]], drawn
    # a series without a value at its own rate 0 keeps natural missingness at 0
    drawn.clear()
    summary = _rate_summary({"A": {0.0: 0.80, 0.4: 0.70}, "B": {0.0: None, 0.4: 0.72}})
    natural = summary.filter(pl.col("rate") == 0).with_columns(
        scenario=pl.lit("natural"), balanced_accuracy_mean=pl.lit(0.75))
    plots.plot_metric_vs_rate(pl.concat([summary, natural], how="diagonal_relaxed"),
                              "balanced_accuracy", tmp_path / "o.png")
    assert sorted(drawn) == [[0.0, 0.4], [0.0, 0.4]], drawn
    # without a rate of 0, natural missingness is the point at 0
    drawn.clear()
    plots.plot_metric_vs_rate(pl.concat([summary.filter(pl.col("rate") > 0), natural]),
                              "balanced_accuracy", tmp_path / "n.png")
    assert sorted(drawn) == [[0.0, 0.4], [0.0, 0.4]], drawn


def test_a_heatmap_cell_over_fewer_seeds_says_how_many(tmp_path, monkeypatch):
    """A pattern in one seed's test split only printed a bare "0.80" like a cell over
    every seed, under a title that says "mean ± std over seeds"."""
    rows = [{"cohort": "c", "feature_set": "all", "method": "mmare", "method_type": "mmare",
             "family": "fusion", "scenario": "natural", "rate": 0.0, "pattern": p,
             "balanced_accuracy": v, "n": 4.0}
            for p, values in {"ct+wsi": [0.70, 0.72, 0.74], "ct": [0.80]}.items()
            for v in values]
    table = summarise(pl.DataFrame(rows).with_columns(
        pl.Series("seed", [0, 1, 2, 0])), keys=("cohort", "feature_set", "method",
                                                "method_type", "family", "scenario", "rate",
                                                "pattern"))
    table = table.rename({"n_seeds": "n_runs", "n_mean": "n"})
    seen = {}

    def keep(fig, out):
        seen["texts"] = [t.get_text() for t in fig.axes[0].texts]
        return out

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_pattern_heatmap(table, "balanced_accuracy", tmp_path / "h.png")
    assert "0.80\n[1/3]" in seen["texts"], seen["texts"]
    assert "0.72\n±0.02" in seen["texts"]


def test_the_radar_draws_a_method_short_of_a_seed_after_the_whole_ones(tmp_path,
                                                                      monkeypatch):
    """With any method whole, every method short of a seed was left off the radar, even
    with fewer methods than it draws, under a title saying "methods over metrics"."""
    from mmpipe.report.stats import wilcoxon_vs_best

    metrics = ["balanced_accuracy", "auc", "accuracy"]
    values = {"mmare": [0.82, 0.81, 0.80, 0.83, None], "muse": [0.75, 0.76, 0.74, 0.75, 0.76],
              "deepsets": [0.70, 0.71, 0.69, 0.70, 0.72]}
    runs = pl.DataFrame([{"cohort": "c", "feature_set": "all", "method": m, "method_type": m,
                          "family": "fusion", "scenario": "natural", "rate": 0.0, "seed": s,
                          **{k: v for k in metrics}, "trained": v is not None}
                         for m, vals in values.items() for s, v in enumerate(vals)])
    summary = wilcoxon_vs_best(runs, summarise(runs), metrics)
    seen = {}

    def keep(fig, out):
        seen["labels"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        seen["title"] = fig.axes[0].get_title()
        return out

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_radar(summary, 0.0, metrics, tmp_path / "r.png")
    assert sorted(seen["labels"]) == ["deepsets", "mmare (not every seed)", "muse"]
    # room for two: the whole ones, ranked as the tables bold
    plots.plot_radar(summary, 0.0, metrics, tmp_path / "r2.png", top=2)
    assert sorted(seen["labels"]) == ["deepsets", "muse"], seen
    assert "the 2 best of 3 methods" in seen["title"]
    # a later axis over some seeds only is marked too: only the first axis was read
    short_auc = runs.with_columns(auc=pl.when((pl.col("method") == "muse")
                                              & (pl.col("seed") == 4)).then(None)
                                  .otherwise(pl.col("auc")))
    plots.plot_radar(wilcoxon_vs_best(short_auc, summarise(short_auc), metrics), 0.0,
                     metrics, tmp_path / "r3.png")
    assert "muse (not every seed)" in seen["labels"], seen


def test_the_figures_say_they_show_the_test_split_and_mark_a_series_short_of_seeds(
        tmp_path, monkeypatch):
    """The rate, radar and parameter figures said neither which split nor how many seeds
    their means are over, and the rate and parameter figures drew a method whose mean
    left a seed out like any other, beside a "#1" ranked among the whole ones only."""
    seen = {}

    def keep(fig, out):
        seen[Path(out).name] = (
            " ".join(t.get_text() for t in fig.texts) + " "
            + " ".join(ax.get_title() + " " + ax.get_ylabel() for ax in fig.axes),
            [t.get_text() for ax in fig.axes if ax.get_legend()
             for t in ax.get_legend().get_texts()])
        return out

    monkeypatch.setattr(plots, "_save", keep)
    values = {"A": {0.2: 0.80, 0.5: 0.70}, "B": {0.2: 0.82, 0.5: 0.75}}
    summary = _rate_summary(values, no_value=("B", 0.5, 1))
    plots.plot_metric_vs_rate(summary, "balanced_accuracy", tmp_path / "rate.png")
    text, legend = seen["rate.png"]
    assert "test split, mean ± std over 3 seeds" in text, text
    assert "B (not every seed)" in legend and "#1 A" in legend, legend
    at = summary.filter(pl.col("rate") == 0.5).with_columns(
        pl.lit(1000.0).alias("trainable_parameters_mean"))
    plots.plot_perf_vs_params(at, "balanced_accuracy", tmp_path / "params.png",
                              scenario="mcar", rate=0.5)
    text, legend = seen["params.png"]
    assert "test split, mean ± std over 3 seeds" in text, text
    assert legend == ["A", "B (not every seed)"], legend


def _capture_lines(monkeypatch, drawer: str) -> tuple[dict, dict]:
    """The (x, mean) points ``plots.<drawer>`` is given, by label, and the figure's texts."""
    drawn, seen = {}, {}

    def draw(ax, part, metric, style, label, band=True):
        drawn[label] = list(zip(part.sort("x")["x"], part.sort("x")[f"{metric}_mean"],
                                strict=True))

    def keep(fig, out):
        seen["texts"] = [t.get_text() for t in fig.texts]
        return out

    monkeypatch.setattr(plots, drawer, draw)
    monkeypatch.setattr(plots, "_save", keep)
    return drawn, seen


def test_a_rate_without_a_value_is_a_gap_and_said(tmp_path, monkeypatch):
    """B trained on no seed at MCAR 0.4: its line and band ran straight across 0.4,
    labelled "(not every seed)"; C, untrained at every rate, was left out without a word."""
    drawn, seen = _capture_lines(monkeypatch, "_draw_line")
    summary = _rate_summary({"A": {0.2: 0.80, 0.4: 0.75, 0.6: 0.70},
                             "B": {0.2: 0.78, 0.4: None, 0.6: 0.69},
                             "C": {0.2: None, 0.4: None, 0.6: None}})
    plots.plot_metric_vs_rate(summary, "balanced_accuracy", tmp_path / "m.png")
    (b,) = [points for label, points in drawn.items() if "B" in label]
    assert [x for x, _ in b] == [0.2, 0.4, 0.6] and b[1][1] is None  # a gap at 0.4
    assert not any("C" in label for label in drawn)
    assert ("a gap: no value at some rate (B); not shown (no value at any rate): C"
            in seen["texts"]), seen["texts"]


def test_a_baseline_without_a_value_at_a_rate_is_a_gap_and_said(tmp_path, monkeypatch):
    """hgb untrained at MCAR 0.4 and short of a seed at 0.6: its grey line ran straight
    across 0.4, unmarked, and its point at 0.6, a mean over 2 of 3 seeds, was unmarked
    too (the methods' lines had both)."""
    from mmpipe.methods.families import BASELINE_FAMILY

    drawn, seen = _capture_lines(monkeypatch, "_draw_reference")
    summary = _rate_summary({"A": {0.2: 0.80, 0.4: 0.75, 0.6: 0.70},
                             "hgb": {0.2: 0.70, 0.4: None, 0.6: 0.60}},
                            no_value=("hgb", 0.6, 1))
    summary = summary.with_columns(pl.when(pl.col("method") == "hgb").then(
        pl.lit(BASELINE_FAMILY)).otherwise(pl.col("family")).alias("family"))
    plots.plot_metric_vs_rate(summary, "balanced_accuracy", tmp_path / "m.png")
    ((label, points),) = drawn.items()
    assert label == "hgb (not every seed)", label
    assert [x for x, _ in points] == [0.2, 0.4, 0.6] and points[1][1] is None
    assert any("a gap: no value at some rate (hgb)" in t for t in seen["texts"]), seen


def test_radar_says_a_method_it_cannot_rank(tables, tmp_path, monkeypatch):
    """An ordinary method untrained on every seed of the group was never among the ranked,
    so the note meant to name it was never written, and the title's count included it."""
    summary = tables[0]
    seen = _radar_seen(monkeypatch)
    plots.plot_radar(pl.concat([summary, _untrained(summary, "muse")], how="diagonal_relaxed"),
                     0.0, ["balanced_accuracy", "auc", "accuracy"], tmp_path / "r.png")
    assert not any(label.startswith("muse") for label in seen["labels"])
    assert "not shown (no value here): muse" in seen["texts"]


def test_a_pattern_of_feature_sets_that_read_other_modalities_is_said_to_differ(tmp_path,
                                                                               monkeypatch):
    """"ct+wsi" under a feature set of CT and WSI is every subject with both; under one
    with the clinical table too, only those without it: the heatmap put both in one column
    with nothing said but the column's n range."""
    def table(sets):
        rows = [{"cohort": "c", "feature_set": fs, "method": m, "method_type": m,
                 "family": "fusion", "scenario": "natural", "rate": 0.0, "pattern": p,
                 "balanced_accuracy": 0.7, "n": 4.0, "seed": 0}
                for fs, m, patterns in sets for p in patterns]
        out = summarise(pl.DataFrame(rows), keys=("cohort", "feature_set", "method",
                                                  "method_type", "family", "scenario",
                                                  "rate", "pattern"))
        return out.rename({"n_seeds": "n_runs", "n_mean": "n"})

    seen = {}

    def keep(fig, out):
        seen["notes"] = [t.get_text() for t in fig.texts]
        seen["xlabel"] = fig.axes[0].get_xlabel()
        return out

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_pattern_heatmap(table([("ct_wsi", "bd", ["ct+wsi", "wsi"]),
                                      ("all", "mmare", ["ct+wsi", "clinical+ct+wsi"])]),
                               "balanced_accuracy", tmp_path / "h.png")
    assert seen["xlabel"].startswith("Modalities of the row's feature set present")
    assert any("one column holds other subjects in other rows" in t for t in seen["notes"])
    # one feature set, or several reading the same modalities: nothing to say
    plots.plot_pattern_heatmap(table([("all", "bd", ["ct+wsi", "wsi"]),
                                      ("all", "mmare", ["ct+wsi", "ct"])]),
                               "balanced_accuracy", tmp_path / "h.png")
    assert seen["xlabel"].startswith("Modalities present") and seen["notes"] == []
