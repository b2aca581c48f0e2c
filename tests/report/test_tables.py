"""Results tables: mean ± std cells, bold best per block (lowest ECE), CSV/Markdown/LaTeX."""

from __future__ import annotations

import io
import re

import polars as pl
import pytest

from mmpipe.report.aggregate import collect_runs, summarise
from mmpipe.report.published import MMIST_VITAL12_TABLE_5_6
from mmpipe.report.tables import format_params, format_table, tex_escape, write_tables
from tests.report.test_aggregate import write_fake_runs

LABEL = "published (MMARE thesis Table 5.6, natural missingness, single split)"


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    metrics_paths, _ = write_fake_runs(tmp_path_factory.mktemp("runs"))
    return summarise(collect_runs(metrics_paths))


def _md_block(md: str, heading: str) -> list[str]:
    lines = md.splitlines()
    start = lines.index(f"## {heading}")
    block = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            block.append(line)
    return block


def _md_rows(block: list[str]) -> dict[str, list[str]]:
    return {cells[0]: cells for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in block[2:])}


def test_markdown_cells_and_bold(summary):
    md = format_table(summary)["md"]
    block = _md_block(md, "Natural missingness")
    header = [c.strip() for c in block[0].strip("|").split("|")]
    # binary: the positive class named by its label value beside macro and weighted F1
    assert header == ["Method", "Balanced accuracy", "AUC", "Macro F1", "Weighted F1",
                      "F1 (positive: dead)", "Accuracy", "ECE ↓",
                      "Trainable parameters", "Seeds"]
    assert block[1].count("|") == len(header) + 1
    rows = _md_rows(block)
    assert list(rows) == ["concat_zero", "hypermm", "mmare"]
    # mmare natural: seeds 0.80/0.81/0.82 -> 0.810 ± 0.010, the best balanced accuracy
    assert rows["mmare"][1] == "**0.810 ± 0.010**"
    assert rows["hypermm"][1] == "0.710 ± 0.010"
    # ECE: lower is better -> hypermm (0.051) bold, mmare not
    assert rows["hypermm"][7] == "**0.051 ± 0.001**"
    assert not rows["mmare"][7].startswith("**")
    assert rows["mmare"][8] == "1.4M" and rows["concat_zero"][8] == "50.0k"
    assert rows["mmare"][9] == "3"
    assert sum(cell.startswith("**") for r in rows.values() for cell in r) == 7  # one bold cell per metric column


def test_one_block_per_scenario_and_rate(summary):
    md = format_table(summary)["md"]
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == ["## Natural missingness", "## MCAR: 20 % of present entries removed",
                        "## MCAR: 40 % of present entries removed", "## MCAR: 60 % of present entries removed"]
    rows = _md_rows(_md_block(md, "MCAR: 60 % of present entries removed"))
    assert rows["mmare"][1] == "**0.750 ± 0.010**"     # 0.80 - 0.06 + 0.01


def test_csv(summary):
    df = pl.read_csv(io.StringIO(format_table(summary)["csv"]))
    assert len(df) == 3 * 4
    assert {"source", "scenario", "rate", "method", "balanced_accuracy", "ece",
            "trainable_parameters", "n_seeds", "best"} <= set(df.columns)
    r = df.filter((pl.col("method") == "hypermm") & (pl.col("rate") == 0.2)).row(0, named=True)
    assert r["balanced_accuracy"] == "0.690 ± 0.010"
    assert r["best"] == "ece" and r["trainable_parameters"] == 12_900_000
    assert df.filter(pl.col("method") == "mmare")["best"].to_list() == [
        "balanced_accuracy;auc;f1_macro;f1_weighted;f1_positive;accuracy"] * 4


def test_latex_structure(summary):
    tex = format_table(summary)["tex"]
    lines = tex.splitlines()
    assert r"\begin{tabular}{lrrrrrrrrr}" in lines and lines[-1] == r"\end{tabular}"
    assert tex.count(r"\toprule") == 1 and tex.count(r"\bottomrule") == 1
    assert tex.count(r"\multicolumn{10}{l}") == 4 and tex.count(r"\midrule") == 4
    body = [line for line in lines if line.endswith(r"\\") and "&" in line]
    assert all(line.count("&") == 9 for line in body)
    assert r"\textbf{0.810 $\pm$ 0.010}" in tex
    assert "concat\\_zero" in tex and "concat_zero" not in tex.replace("concat\\_zero", "")
    assert r"ECE $\downarrow$" in tex
    assert "±" not in tex


def test_published_block(summary):
    tables = format_table(summary, published=MMIST_VITAL12_TABLE_5_6)
    md = tables["md"]
    assert md.count(f"## {LABEL}") == 1
    assert md.index(f"## {LABEL}") > md.index("## MCAR: 60 % of present entries removed")
    rows = _md_rows(_md_block(md, LABEL))
    assert rows["DRIM"][1:4] == ["0.780", "0.799", "0.693"]    # no "±", never bold
    assert rows["MMARE with clinical"][8] == "1.4M" and rows["HyperMM"][8] == "12.9M"
    assert rows["DRIM"][6] == "–" and rows["DRIM"][9] == "–"   # accuracy/ECE not published
    # the fake runs are of the feature set "all": no counterpart ran
    assert "MMARE without clinical ↔ ours: mmare [without_clinical], not run here" in md
    # published rows do not steal "best": ours stay bold in their blocks
    assert _md_rows(_md_block(md, "Natural missingness"))["mmare"][1].startswith("**")
    assert tex_escape(LABEL) in tables["tex"]
    df = pl.read_csv(io.StringIO(tables["csv"]))
    pub = df.filter(pl.col("source") == LABEL)
    assert pub["method"].to_list()[0] == "DRIM" and len(pub) == 6
    assert pub["best"].is_null().all() and pub["scenario"].is_null().all()
    assert df.filter(pl.col("source") == "this benchmark").height == 12


def test_feature_set_column_when_several(summary):
    other = summary.filter(pl.col("method") == "mmare").with_columns(
        pl.lit("without_clinical").alias("feature_set"),
        (pl.col("balanced_accuracy_mean") + 0.1).alias("balanced_accuracy_mean"))
    md = format_table(pl.concat([summary, other]))["md"]
    block = _md_block(md, "Natural missingness")
    assert block[0].startswith("| Method | Feature set |")
    assert "| mmare | without_clinical | **0.910 ± 0.010** |" in md


def test_multiclass_columns_have_no_per_class_f1(summary):
    # a 5-class task: its runs hold no *_positive metrics, so no column claims a class
    multi = summary.drop([c for c in summary.columns if "_positive" in c]).with_columns(
        pl.lit(None, pl.String).alias("positive_label"))
    md = format_table(multi)["md"]
    header = _md_block(md, "Natural missingness")[0]
    assert "Macro F1 | Weighted F1 | Accuracy" in header and "positive" not in md
    # a metric every run left NaN (a not-trained multi-class run's f1_positive) is no column
    nan_col = multi.with_columns(pl.lit(None, pl.Float64).alias("f1_positive_mean"))
    assert "positive" not in format_table(nan_col)["md"]


def test_preamble_opens_the_markdown(summary):
    md = format_table(summary, title="Results: demo", preamble="## Summary\n\nbest: mmare")["md"]
    assert md.startswith("# Results: demo\n\n## Summary\n\nbest: mmare\n\n## Tables\n")


def test_write_tables_atomic(summary, tmp_path):
    paths = write_tables(summary, tmp_path / "report", published=MMIST_VITAL12_TABLE_5_6)
    assert [p.name for p in paths] == ["results.csv", "results.md", "results.tex"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert paths[1].read_text().startswith("# Results: demo")
    assert not list((tmp_path / "report").glob("*.tmp-*"))


def test_format_params():
    assert [format_params(v) for v in (None, float("nan"), 0, 512, 1_400_000, 16_900_000)] == [
        "–", "–", "0", "512", "1.4M", "16.9M"]
    assert re.fullmatch(r"\\_a\\&b\\%", tex_escape("_a&b%"))


def test_a_mean_over_fewer_seeds_than_trained_says_how_many():
    """AUC undefined on one seed's test split (one class there): the Seeds column read 3
    and the AUC cell gave no sign that its mean is over 2."""
    runs = pl.DataFrame([{"cohort": "c", "feature_set": "all", "method": method,
                          "method_type": method, "scenario": "natural", "rate": 0.0,
                          "seed": seed, "balanced_accuracy": 0.7 + 0.01 * seed + bonus,
                          "auc": None if seed == 0 else 0.8 + 0.01 * seed + bonus,
                          "trained": True}
                         for method, bonus in (("mmare", 0.05), ("hgb", 0.0))
                         for seed in range(3)])
    tables = format_table(summarise(runs), metrics=("balanced_accuracy", "auc"))
    rows = _md_rows(_md_block(tables["md"], "Natural missingness"))
    # no row has every seed of AUC: the best of them is bold, and says it is over 2
    assert rows["mmare"][1:] == ["**0.760 ± 0.010**", "**0.865 ± 0.007 [2]**", "–", "3"], rows
    assert rows["hgb"][2] == "0.815 ± 0.007 [2]"
    assert "[k] after a mean: over k seeds only" in tables["md"]
    assert "0.865 ± 0.007 [2]" in tables["csv"] and "[2]" in tables["tex"]


def test_a_row_level_with_the_best_is_bold_and_carries_no_dagger(summary):
    """The † test's reference is one row on unrounded means: a row level with it at the
    printed precision (0.8104 beside 0.810) was bold and "different from the best" at once."""
    natural = (pl.col("scenario") == "natural") & (pl.col("method") == "hypermm")
    level = summary.with_columns(
        balanced_accuracy_mean=pl.when(natural).then(0.8096)
        .otherwise(pl.col("balanced_accuracy_mean")),
        balanced_accuracy_p_holm=pl.when(natural).then(0.01).otherwise(None))
    rows = _md_rows(_md_block(format_table(level)["md"], "Natural missingness"))
    assert rows["hypermm"][1] == "**0.810 ± 0.010**" and rows["mmare"][1].startswith("**0.810")
    # a row below the best keeps its dagger
    below = level.with_columns(balanced_accuracy_mean=pl.when(natural).then(0.71)
                               .otherwise(pl.col("balanced_accuracy_mean")))
    rows = _md_rows(_md_block(format_table(below)["md"], "Natural missingness"))
    assert rows["hypermm"][1] == "0.710 ± 0.010†"
    # a row ahead of the best in mean, over some of its seeds only (so not crowned), is
    # not "behind it": the two-sided test's † said so of a row the table showed ahead
    ahead = level.with_columns(
        balanced_accuracy_mean=pl.when(natural).then(0.95)
        .otherwise(pl.col("balanced_accuracy_mean")),
        balanced_accuracy_complete=pl.when(natural).then(False).otherwise(True))
    rows = _md_rows(_md_block(format_table(ahead)["md"], "Natural missingness"))
    assert rows["hypermm"][1] == "0.950 ± 0.010" and rows["mmare"][1].startswith("**0.810")


def test_a_published_rows_counterpart_is_said_not_run_where_it_did_not(tmp_path):
    """The notes named every counterpart as ours, a row of the table or not."""
    metrics_paths, _ = write_fake_runs(tmp_path, feature_set="with_clinical")
    md = format_table(summarise(collect_runs(metrics_paths)),
                      published=MMIST_VITAL12_TABLE_5_6)["md"]
    assert "- HyperMM ↔ ours: hypermm [with_clinical]\n" in md
    assert "- MMARE with clinical ↔ ours: mmare [with_clinical]\n" in md
    assert "- DRIM ↔ ours: drim [with_clinical], not run here\n" in md
