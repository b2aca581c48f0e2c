"""Results tables in the seeds' layout: methods × metrics, one block per (scenario, rate).

Cells read "mean ± std" over seeds; within each block the best mean of each metric is in
bold (highest, or lowest for ECE), ties at the printed precision all bold; the best is
chosen among the rows with a value on every seed they ran (a row with some seeds
untrained shows its mean over the others, never bold, unless no row is whole). A dagger marks
a row that a Wilcoxon signed-rank test over seeds finds different from the block's best
(p < 0.05, :mod:`mmpipe.report.stats`); the CSV carries every p. A mean over fewer seeds
than trained (the metric undefined on the others) says so: "[k]". Published figures, when
given, follow in a block of their own, labelled, never bold.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.fsutil import atomic_file
from mmpipe.layout import REPORT_TABLES

DEFAULT_METRICS = ("balanced_accuracy", "auc", "f1_macro", "f1_weighted", "f1_positive",
                   "accuracy", "ece")
LOWER_IS_BETTER = frozenset({"ece", "loss", "brier"})
METRIC_LABELS = {
    "balanced_accuracy": "Balanced accuracy", "auc": "AUC", "f1_macro": "Macro F1",
    "f1_weighted": "Weighted F1", "precision_macro": "Macro precision",
    "recall_macro": "Macro recall", "accuracy": "Accuracy", "ece": "ECE",
}
# binary runs only: of class 1, named by its label value where the runs record it
POSITIVE_METRICS = {"f1_positive": "F1", "precision_positive": "Precision",
                    "recall_positive": "Recall"}
SCENARIO_ORDER = ("natural", "mcar", "completeness", "testmiss")
SIGNIFICANCE = 0.05
DAGGER = "†"
# the places a mean is printed with: means level at them are level (bold together, and
# the summary's claims are decided on them)
SHOWN_DECIMALS = 3
OURS = "this benchmark"


def metric_label(metric: str, arrow: bool = True, positive: str | None = None) -> str:
    """A metric's column/axis name; ``positive``: the label value of a binary task's
    positive class, named in the ``*_positive`` metrics' labels."""
    if metric in POSITIVE_METRICS:
        what = f"positive: {positive}" if positive is not None else "positive class"
        return f"{POSITIVE_METRICS[metric]} ({what})"
    label = METRIC_LABELS.get(metric, metric.replace("_", " "))
    if arrow and metric in LOWER_IS_BETTER:
        label += " ↓"
    return label


def group_label(scenario: str, rate: float | None) -> str:
    if scenario == "natural":
        return "Natural missingness" if not rate else f"Natural + {rate:.0%} missing"
    if scenario == "mcar":
        # the share of every present entry together: each modality loses its own share
        # (a subject with one modality loses none), not this one (mcar_mask)
        return f"MCAR: {rate * 100:g} % of present entries removed"
    if scenario == "completeness":
        return (f"Completeness: {rate * 100:g} % of the complete training subjects kept "
                "complete (HAM)")
    if scenario == "testmiss":
        return (f"Missing at test time: {rate * 100:g} % of the test subjects with the "
                "modality lose it (BD)")
    return scenario if rate is None else f"{scenario} {rate:g}"


def format_params(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def positive_label(summary: pl.DataFrame) -> str | None:
    """The positive class's label value of the runs in ``summary``, when they agree on one."""
    if "positive_label" not in summary.columns:
        return None
    values = summary["positive_label"].drop_nulls().unique().to_list()
    return values[0] if len(values) == 1 else None


def present_metrics(summary: pl.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The ``metrics`` some row of ``summary`` has a mean of: the columns follow the class
    count (no per-class F1 in a multi-class task)."""
    return [m for m in metrics if f"{m}_mean" in summary.columns
            and summary[f"{m}_mean"].fill_nan(None).drop_nulls().len() > 0]


def _scenario_key(s: Any) -> tuple:
    return (SCENARIO_ORDER.index(s), "") if s in SCENARIO_ORDER else (len(SCENARIO_ORDER), str(s))


def _label_columns(summary: pl.DataFrame) -> list[str]:
    cols = [c for c in ("cohort", "feature_set") if c in summary.columns
            and summary[c].n_unique() > 1]
    return ["method", *cols]


def _blocks(summary: pl.DataFrame, metrics: Sequence[str], group: Sequence[str], decimals: int,
            method_order: Sequence[str] | None) -> list[dict[str, Any]]:
    labels = _label_columns(summary)
    order = {m: i for i, m in enumerate(method_order or [])}

    def row_key(r: dict) -> tuple:
        return (order.get(r["method"], len(order)), *(str(r[c]) for c in labels))

    def group_key(g: tuple) -> tuple:
        return tuple(_scenario_key(v) if c == "scenario" else (v is None, v or 0)
                     for c, v in zip(group, g, strict=True))

    blocks = []
    keys = sorted(summary.select(list(group)).unique().iter_rows(), key=group_key)
    for g in keys:
        part = summary.filter(pl.all_horizontal([pl.col(c) == v for c, v in zip(group, g,
                                                                              strict=True)]))
        rows = sorted(part.iter_rows(named=True), key=row_key)
        best, contenders = {}, {}
        for m in metrics:
            valued = [r for r in rows
                      if r.get(f"{m}_mean") is not None and not math.isnan(r[f"{m}_mean"])]
            # a row with a value on only some of its seeds is not crowned (as the summary
            # and the † test's reference row: stats.wilcoxon_vs_best)
            full = [r for r in valued if r.get(f"{m}_complete", True)]
            contenders[m] = {id(r) for r in (full or valued)}
            vals = [round(r[f"{m}_mean"], decimals) for r in (full or valued)]
            if vals:
                best[m] = min(vals) if m in LOWER_IS_BETTER else max(vals)
        out_rows = []
        for r in rows:
            cells = {}
            for m in metrics:
                mean, std = r.get(f"{m}_mean"), r.get(f"{m}_std")
                bold = (mean is not None and m in best and id(r) in contenders[m]
                        and round(mean, decimals) == best[m])
                # a row level with the best at the printed precision is bold, one of the
                # † test's references (stats.wilcoxon_vs_best), never marked different;
                # a † says "behind the best", so a row ahead of it in mean (over some of
                # its seeds only, so not crowned) carries none
                behind = (mean is not None and m in best and not math.isnan(mean) and (
                    round(mean, decimals) > best[m] if m in LOWER_IS_BETTER
                    else round(mean, decimals) < best[m]))
                cells[m] = (mean, std, bold, r.get(f"{m}_p_holm") if behind else None)
            out_rows.append({"labels": {c: r[c] for c in labels}, "cells": cells,
                             "short": {m: _short(r, m) for m in metrics},
                             "params": r.get("trainable_parameters_mean"),
                             "n_seeds": _seeds(r), "counterpart": None})
        named = dict(zip(group, g, strict=True))
        title = (group_label(named["scenario"], named.get("rate"))
                 if "scenario" in named and set(named) <= {"scenario", "rate"}
                 else ", ".join(f"{c} = {v}" for c, v in named.items()))
        blocks.append({"title": title, "group": named, "rows": out_rows, "source": OURS})
    return blocks


def _published_block(published, metrics: Sequence[str], labels: list[str],
                     ran: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """``ran``: the (method, feature set) rows of ours, where the summary says; a
    counterpart not among them is said not to have run (the note named it as ours)."""
    rows = []
    for p in published.rows:
        cells = {m: (p.metrics.get(m), None, False, None) for m in metrics}
        counterpart = None
        if p.counterpart:
            counterpart = f"{p.counterpart[0]} [{p.counterpart[1]}]" + (
                "" if ran is None or tuple(p.counterpart) in ran else ", not run here")
        rows.append({"labels": {c: (p.method if c == "method" else None) for c in labels},
                     "cells": cells, "params": p.trainable_parameters, "n_seeds": None,
                     "counterpart": counterpart})
    return {"title": published.label, "group": {}, "rows": rows, "source": published.label,
            "published": published}


def _cell(mean: float | None, std: float | None, decimals: int, pm: str = " ± ") -> str:
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f}{pm}{std:.{decimals}f}"


def _seeds(r: dict) -> str | None:
    """Seeds run, as "trained/run" when some of them could not train."""
    n, trained = r.get("n_seeds"), r.get("n_trained")
    if n is None:
        return None
    return str(n) if trained is None or trained == n else f"{trained}/{n}"


def _short(r: dict, m: str) -> int | None:
    """The seeds a metric's mean is over, when fewer than the seeds that trained (the
    metric undefined on the others, e.g. an AUC on a test split of one class): the Seeds
    column counts runs, so the cell says it."""
    n, mean = r.get(f"{m}_n"), r.get(f"{m}_mean")
    trained = r.get("n_trained") if r.get("n_trained") is not None else r.get("n_seeds")
    if n is None or trained is None or mean is None or math.isnan(mean) or n >= trained:
        return None
    return int(n)


def _over(r: dict, m: str) -> str:
    n = r.get("short", {}).get(m)
    return "" if n is None else f" [{n}]"


def _mark(p: float | None) -> str:
    return DAGGER if p is not None and not math.isnan(p) and p < SIGNIFICANCE else ""


def _csv(blocks, metrics, group, labels, decimals) -> str:
    records = []
    for b in blocks:
        for r in b["rows"]:
            rec: dict[str, Any] = {"source": b["source"]}
            rec.update({c: b["group"].get(c) for c in group})
            rec.update({c: r["labels"].get(c) for c in labels})
            rec.update({m: _cell(*r["cells"][m][:2], decimals) + _over(r, m) for m in metrics})
            rec.update({f"{m}_p_vs_best_holm": r["cells"][m][3] for m in metrics})
            rec["trainable_parameters"] = r["params"]
            rec["n_seeds"] = r["n_seeds"]
            rec["best"] = ";".join(m for m in metrics if r["cells"][m][2]) or None
            rec["counterpart"] = r["counterpart"]
            records.append(rec)
    pcols = [f"{m}_p_vs_best_holm" for m in metrics]
    cols = ["source", *group, *labels, *metrics, *pcols, "trainable_parameters", "n_seeds",
            "best", "counterpart"]
    schema = {c: (pl.Float64 if c in ("trainable_parameters", "rate", *pcols)
                  else pl.String) for c in cols}
    df = pl.DataFrame([tuple(r.get(c) for c in cols) for r in records], schema=schema,
                      orient="row")
    buf = io.StringIO()
    df.write_csv(buf)
    return buf.getvalue()


def md_escape(s: Any) -> str:
    """A value as a Markdown table cell's text: its ``|`` escaped."""
    return "" if s is None else str(s).replace("|", "\\|")


def _markdown(blocks, metrics, labels, decimals, title, positive=None, preamble=None) -> str:
    header = ([c.replace("_", " ").capitalize() for c in labels]
              + [metric_label(m, positive=positive) for m in metrics]
              + ["Trainable parameters", "Seeds"])
    align = ["---"] * len(labels) + ["---:"] * (len(metrics) + 2)
    lines = [f"# {title}", ""] if title else []
    if preamble:
        lines += [preamble.rstrip(), "", "## Tables", ""]
    lines += ["Mean ± std over seeds (sample std). Within each block the best mean per metric "
              f"is in **bold** (highest; lowest for ECE ↓; among the rows with a value on "
              f"every seed: a mean over some seeds only is bold only when no row has every "
              f"seed); [k] after a mean: over k seeds only, the metric being undefined on the "
              f"others (e.g. AUC on a test split of one class); Seeds k/n: k of the n seeds "
              f"run trained, the others left out (*Flagged runs*); {DAGGER} marks a mean that a "
              "two-sided Wilcoxon signed-rank test over the seeds (paired: same split and mask) finds "
              f"different from the best (from every bold mean, where several are level), its p "
              f"Holm-corrected over the block's rows below {SIGNIFICANCE:g} (the corrected p "
              "in results.csv, `<metric>_p_vs_best_holm`; the raw one in summary.csv, "
              "`<metric>_p`). The best is the best on these "
              "test runs, so a † says a row is behind it, not that the best would win on "
              "other data; and since it is picked from the runs it is tested on, a † comes "
              "more often than the level when no method differs (in a simulation of equal "
              "methods over 10 seeds, in 8 % of 5-row blocks, 14 % of 20-row and 20 % of "
              "25-row ones, against 5 %: benchmarks/report_statistics.py). With n seeds "
              "the test cannot go below p = 2/2^n (0.25 for 3 "
              "seeds, 0.0625 for 5, 0.002 for 10), and the correction multiplies the smallest "
              "p by the rows tested (every row with a mean and two seeds paired with the "
              "best, but the bold ones): a block "
              "testing k rows shows no † unless k·2/2^n < "
              f"{SIGNIFICANCE:g}.", ""]
    for b in blocks:
        lines += [f"## {b['title']}", ""]
        pub = b.get("published")
        if pub is not None:
            lines += [f"Published figures, not ours: {pub.source}. One run on the authors' "
                      "split, not mean ± std over seeds, so not directly comparable.", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
        for r in b["rows"]:
            cells = [md_escape(r["labels"].get(c)) for c in labels]
            for m in metrics:
                mean, std, bold, p = r["cells"][m]
                text = _cell(mean, std, decimals) + _mark(p) + _over(r, m)
                cells.append(f"**{text}**" if bold else text)
            cells += [format_params(r["params"]),
                      "–" if r["n_seeds"] is None else str(r["n_seeds"])]
            lines.append("| " + " | ".join(cells) + " |")
        if pub is not None:
            notes = [f"{r['labels']['method']} ↔ ours: {r['counterpart']}"
                     for r in b["rows"] if r["counterpart"]]
            notes += [f"{metric_label(m, False)}: {note}" for m, note in pub.metric_notes.items()
                      if m in metrics]
            if notes:
                lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    return "\n".join(lines)


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "±": r"$\pm$", "↓": r"$\downarrow$",
                "↔": r"$\leftrightarrow$", "–": "--"}


def tex_escape(s: Any) -> str:
    return "" if s is None else "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(s))


def _latex(blocks, metrics, labels, decimals, title, positive=None) -> str:
    ncol = len(labels) + len(metrics) + 2
    header = ([tex_escape(c.replace("_", " ").capitalize()) for c in labels]
              + [tex_escape(metric_label(m, positive=positive)) for m in metrics]
              + ["Params", "Seeds"])
    lines = ["% generated by mmpipe.report.tables; needs \\usepackage{booktabs}",
             "% mean $\\pm$ std over seeds; best mean per metric within each block in bold"
             " (among rows with a value on every seed, or all when none has)"
             " (ECE: lowest); $^\\dagger$: Wilcoxon signed-rank p < 0.05 against the best,"
             " Holm-corrected over the block's rows;"
             " [k]: a mean over k seeds only (the metric undefined on the others)"]
    if title:
        lines.append(f"% {tex_escape(title)}")
    lines += [r"\begin{tabular}{" + "l" * len(labels) + "r" * (len(metrics) + 2) + "}",
              r"\toprule", " & ".join(header) + r" \\"]
    for b in blocks:
        lines += [r"\midrule",
                  rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{tex_escape(b['title'])}}}}} \\"]
        for r in b["rows"]:
            cells = [tex_escape(r["labels"].get(c)) for c in labels]
            for m in metrics:
                mean, std, bold, p = r["cells"][m]
                text = (tex_escape(_cell(mean, std, decimals)) + (r"$^\dagger$" if _mark(p) else "")
                        + _over(r, m))
                cells.append(rf"\textbf{{{text}}}" if bold else text)
            cells += [tex_escape(format_params(r["params"])),
                      "--" if r["n_seeds"] is None else str(r["n_seeds"])]
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for b in blocks:
        if b.get("published") is not None:
            lines.append(f"% {tex_escape(b['title'])}: {tex_escape(b['published'].source)}")
    return "\n".join(lines) + "\n"


def format_table(summary: pl.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS,
                 group: Sequence[str] = ("scenario", "rate"), *, published=None,
                 decimals: int = SHOWN_DECIMALS, method_order: Sequence[str] | None = None,
                 title: str | None = None, preamble: str | None = None) -> dict[str, str]:
    """The summary (from :func:`mmpipe.report.aggregate.summarise`) as CSV, Markdown and
    LaTeX: ``{"csv": ..., "md": ..., "tex": ...}``.

    Rows are methods (with the feature set when the summary has several), columns the
    metrics, trainable parameters and the number of seeds; one block per ``group``.
    ``published`` (:class:`~mmpipe.report.published.PublishedFigures`) adds a labelled
    block of published figures. The CSV says in ``best`` which metrics a row is best on.
    ``preamble`` (Markdown, e.g. :func:`mmpipe.report.summary.summary_markdown`) opens
    the Markdown after its title. Metrics no row has are left out.
    """
    metrics = present_metrics(summary, metrics)
    positive = positive_label(summary)
    group = list(group)
    labels = _label_columns(summary)
    blocks = _blocks(summary, metrics, group, decimals, method_order)
    if published is not None:
        ran = (set(summary.select("method", "feature_set").iter_rows())
               if {"method", "feature_set"} <= set(summary.columns) else None)
        blocks.append(_published_block(published, metrics, labels, ran))
    return {"csv": _csv(blocks, metrics, group, labels, decimals),
            "md": _markdown(blocks, metrics, labels, decimals, title, positive, preamble),
            "tex": _latex(blocks, metrics, labels, decimals, title, positive)}


def write_tables(summary: pl.DataFrame, out_dir: str | Path, published=None,
                 **kwargs: Any) -> list[Path]:
    """Write ``results.csv``, ``results.md`` and ``results.tex`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    if "title" not in kwargs and "cohort" in summary.columns and summary["cohort"].n_unique() == 1:
        kwargs["title"] = f"Results: {summary['cohort'][0]}"
    tables = format_table(summary, published=published, **kwargs)
    written = []
    for ext in ("csv", "md", "tex"):
        path = out_dir / f"{REPORT_TABLES}.{ext}"
        with atomic_file(path) as tmp:
            tmp.write_text(tables[ext], encoding="utf-8")
        written.append(path)
    return written
