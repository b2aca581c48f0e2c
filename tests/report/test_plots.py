"""Figures: written atomically, non-empty, readable PNG/SVG, placeholders when empty."""

from __future__ import annotations

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


def test_perf_vs_params_skips_methods_without_parameters(tables, tmp_path):
    summary = tables[0].with_columns(
        pl.when(pl.col("method") == "concat_zero").then(None)
        .otherwise(pl.col("trainable_parameters_mean")).alias("trainable_parameters_mean"))
    _png(plots.plot_perf_vs_params(summary, "balanced_accuracy", tmp_path / "p.png"))


def test_pattern_heatmap(tables, tmp_path):
    _png(plots.plot_pattern_heatmap(tables[1], "balanced_accuracy", tmp_path / "h.png"))
    _png(plots.plot_pattern_heatmap(tables[1], "auc", tmp_path / "h2.png", scenario="mcar",
                                    rate=0.6))


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
