"""Clinical tables: prompts through a text encoder, or the plain tabular encoding."""

from __future__ import annotations

import logging

import polars as pl

log = logging.getLogger(__name__)

_TEXT_CHUNK = 256  # prompts encoded per call: bounded memory whatever the cohort size


def encode_text(items, writer, encoder, progress=None) -> None:
    for start in range(0, len(items), _TEXT_CHUNK):
        chunk = items[start:start + _TEXT_CHUNK]
        embs = encoder.encode([i.source for i in chunk])
        for item, emb in zip(chunk, embs, strict=True):
            writer.write(item.subject_id, emb)
        if progress is not None:
            progress.update(len(chunk))


def fit_tabular(items, fields: list[str], cfg: dict):
    """Fit the tabular encoding on the subjects that have the table.

    Standardisation here uses the whole cohort (stage 1 knows no split); stage 2
    refits its normalisation on each training split, so no test statistic leaks
    into a model. The fitted state goes into the store's attributes.
    """
    from mmpipe.encoders.tabular import TabularEncoding

    frame = pl.DataFrame([i.source for i in items], orient="row", infer_schema_length=None)
    encoding = TabularEncoding.from_config(cfg, fields)
    values = encoding.fit_transform(frame.select(fields))
    return encoding, values


def write_tabular(items, writer, values, progress=None) -> None:
    for item, row in zip(items, values, strict=True):
        writer.write(item.subject_id, row)
    if progress is not None:
        progress.update(len(items))
