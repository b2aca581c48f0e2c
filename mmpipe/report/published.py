"""Published figures to set beside our runs, always labelled as such.

They come from one run on the authors' own split, not from repeated seeds, so the
report shows them in a separate block and never counts them for "best" marks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class PublishedRow:
    """One method's published numbers.

    ``counterpart`` is the (method, feature set) of ours that re-implements it on the
    same cohort, when there is one.
    """

    method: str
    metrics: Mapping[str, float]
    trainable_parameters: float | None
    counterpart: tuple[str, str] | None = None


@dataclass(frozen=True)
class PublishedFigures:
    label: str                      # what tables and plots print above/beside the rows
    source: str                     # the full citation
    cohort: str
    task: str
    rows: tuple[PublishedRow, ...]
    metric_notes: Mapping[str, str] = field(default_factory=dict)

    def to_frame(self) -> pl.DataFrame:
        metrics = sorted({k for r in self.rows for k in r.metrics})
        return pl.DataFrame({
            "method": [r.method for r in self.rows],
            **{m: [r.metrics.get(m) for r in self.rows] for m in metrics},
            "trainable_parameters": [r.trainable_parameters for r in self.rows],
            "counterpart_method": [r.counterpart[0] if r.counterpart else None
                                   for r in self.rows],
            "counterpart_feature_set": [r.counterpart[1] if r.counterpart else None
                                        for r in self.rows],
        }, schema_overrides={"trainable_parameters": pl.Float64})


# MMARE thesis, Table 5.6: MMIST-ccRCC, 12-month vital status, the thesis's own
# train/val/test split of 431/62/124 patients (not the release's train/test split of
# clinical+genomic_split.csv, 497/121), one run (values as the thesis's table prints
# them). "mF1" is the macro F1, our `f1_macro`.
MMIST_VITAL12_TABLE_5_6 = PublishedFigures(
    # natural missingness said in the label too: the figures and the LaTeX table show the
    # label only, and the block sits under whichever of our scenario blocks comes last
    label="published (MMARE thesis Table 5.6, natural missingness, single split)",
    source=("MMARE thesis, Table 5.6: MMIST-ccRCC 12-month vital status (vital_status_12), "
            "natural missingness (the cohort as released), the thesis's own train/val/test "
            "split 431/62/124, one run"),
    cohort="mmist_ccrcc",
    task="vital_status_12",
    rows=(
        PublishedRow("DRIM", {"balanced_accuracy": 0.780, "auc": 0.799, "f1_macro": 0.693}, 16.9e6,
                     counterpart=("drim", "with_clinical")),
        PublishedRow("AdaCoMed", {"balanced_accuracy": 0.739, "auc": 0.850, "f1_macro": 0.624}, 18.7e6,
                     counterpart=("adacomed", "with_clinical")),
        PublishedRow("UniLMMV", {"balanced_accuracy": 0.766, "auc": 0.810, "f1_macro": 0.628}, 21.0e6,
                     counterpart=("unilmmv", "with_clinical")),
        PublishedRow("HyperMM", {"balanced_accuracy": 0.638, "auc": 0.653, "f1_macro": 0.638}, 12.9e6,
                     counterpart=("hypermm", "with_clinical")),
        PublishedRow("MMARE without clinical",
                     {"balanced_accuracy": 0.633, "auc": 0.664, "f1_macro": 0.535}, 1.4e6,
                     counterpart=("mmare", "without_clinical")),
        PublishedRow("MMARE with clinical",
                     {"balanced_accuracy": 0.775, "auc": 0.799, "f1_macro": 0.685}, 1.4e6,
                     counterpart=("mmare", "with_clinical")),
    ),
    metric_notes={"f1_macro": "published value is the macro F1 (mF1)"},
)

PUBLISHED: dict[tuple[str, str], PublishedFigures] = {
    (MMIST_VITAL12_TABLE_5_6.cohort, MMIST_VITAL12_TABLE_5_6.task): MMIST_VITAL12_TABLE_5_6,
}


def published_for(cohort: str, label: str | None = None) -> PublishedFigures | None:
    """The published figures for a cohort (and label, when given), or None."""
    for (c, task), figures in PUBLISHED.items():
        if c == cohort and (label is None or label == task):
            return figures
    return None
