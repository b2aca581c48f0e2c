"""Clinical tables as the plain tabular encoding (standardised numbers, one-hot
categories), fitted on the cohort and stored with the features."""

from __future__ import annotations

import polars as pl


def setup(job, items) -> None:
    """Fit the encoding on the subjects that have the table.

    Standardisation here uses the whole cohort (stage 1 knows no split); stage 2
    refits its normalisation on each training split, so no test statistic leaks
    into a model. The fitted state goes into the store's attributes.
    """
    from mmpipe.encoders.tabular import TabularEncoding

    fields = job.params["fields"]
    frame = pl.DataFrame([i.source for i in items], orient="row", infer_schema_length=None)
    encoding = TabularEncoding.from_config(job.cfg, fields)
    job.state = encoding.fit_transform(frame.select(fields)) if items else None
    if not items:
        encoding.fit(pl.DataFrame({f: [] for f in fields}))
    job.feature_shape = (encoding.n_features,)
    job.attrs = {"tabular_encoding": encoding.to_dict(),
                 "feature_names": list(encoding.feature_names)}


def run(job, items, writer, progress=None) -> None:
    for item, row in zip(items, job.state if job.state is not None else [], strict=True):
        writer.write(item.subject_id, row)
    if progress is not None:
        progress.update(len(items))
