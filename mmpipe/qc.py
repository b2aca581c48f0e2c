"""QC records: why a subject's modality is present, absent or rejected.

Every stage that can lose a subject's input writes rows of the same shape, so the
cohort QC table is a concatenation and nothing disappears without a line in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl

QC_SCHEMA = {
    "subject_id": pl.String,
    "modality": pl.String,
    "stage": pl.String,      # adapter | preprocess | encode
    "status": pl.String,     # present/ok | absent | rejected | excluded
    "reason": pl.String,
    "path": pl.String,
}


def qc_frame(rows: Iterable[Mapping], extra: Mapping[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Rows → a QC frame with the standard columns (plus ``extra`` ones) in a fixed order."""
    schema = {**QC_SCHEMA, **(extra or {})}
    rows = [{k: r.get(k) for k in schema} for r in rows]
    return pl.DataFrame(rows, schema=schema, orient="row")
