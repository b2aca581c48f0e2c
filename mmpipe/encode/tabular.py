"""Clinical tables as the plain tabular encoding (standardised numbers, one-hot
categories), fitted on the cohort, or reused from another cohort's store
(``encoding_from``), and stored with the features.

A value the encoding cannot place (a category it never saw, a text in a numeric
field) is encoded as documented in :mod:`mmpipe.encoders.tabular` and written as a
note on that subject (the store's ``reason`` of a present subject), with one warning
per field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

NOTE_PREFIX = "tabular: "


def load_encoding(path: str | Path, fields: Sequence[str], cfg: Mapping[str, Any]):
    """The fitted :class:`~mmpipe.encoders.tabular.TabularEncoding` recorded in the
    tabular feature store at ``path``; its fields must be the modality's ``fields``, and
    ``categorical``/``missing_values``, when the encoder config gives them, must match
    the stored ones (the stored encoding is used as it is)."""
    from mmpipe.encoders.tabular import TabularEncoding
    from mmpipe.store import FeatureStore

    where = f"encoders.{cfg.get('name', '<tabular>')}.encoding_from"
    try:
        store = FeatureStore(path)
    except StoreError as err:
        raise ConfigError(f"{where}: {err}") from None
    state = store.attrs.get("tabular_encoding")
    if not state:
        raise ConfigError(f"{where}: {path} holds no tabular encoding (no 'tabular_encoding' "
                          f"attribute; it was written by a {store.attrs.get('encoder_type')!r} "
                          "encoder): point it at a store of a 'tabular' encoder")
    encoding = TabularEncoding.from_dict(state)
    if set(encoding.fields) != set(fields):
        only_here = [f for f in fields if f not in encoding.fields]
        only_there = [f for f in encoding.fields if f not in fields]
        raise ConfigError(
            f"{where}: the encoding in {path} was fitted on fields {encoding.fields}, this "
            f"modality has {list(fields)} (not in the encoding: {only_here}; missing here: "
            f"{only_there}); the table modality must list the same fields")
    configured = TabularEncoding.from_config(cfg, encoding.fields)
    for key in ("categorical", "missing_values"):
        if cfg.get(key) is not None and getattr(configured, key) != getattr(encoding, key):
            raise ConfigError(
                f"encoders.{cfg.get('name', '<tabular>')}.{key} is {cfg[key]!r}, the encoding "
                f"reused from {path} has {getattr(encoding, key)!r}; the reused encoding is "
                f"applied as it was fitted: remove {key!r} or make it match")
    return encoding


def setup(job, items) -> None:
    """Fit the encoding on the subjects that have the table, or read it from the store
    named by the encoder's ``encoding_from``.

    Standardisation and blank imputation here use the whole cohort (stage 1 knows no
    split); stage 2's ``zscore`` (``benchmark.normalize``, the default) and ``l2`` refit
    both on each training split (:class:`~mmpipe.bench.data.Normalizer`), so no test
    statistic reaches a model's features. Under ``none`` (gradient boosting's, which a
    per-feature affine scaling does not move) the cohort-wide scaling stays: label-free,
    but fitted with the test subjects. The categories are the whole cohort's; one that only
    test subjects take is a column constant on the training rows, which ``zscore`` and
    ``l2`` zero (and on which gradient boosting cannot split).
    The encoding, fitted or reused, goes into the store's attributes.
    """
    from mmpipe.encoders.tabular import TabularEncoding

    fields = job.params["fields"]
    frame = (pl.DataFrame([i.source for i in items], orient="row", infer_schema_length=None)
             .select(fields) if items else pl.DataFrame({f: [] for f in fields}))
    source = job.cfg.get("encoding_from")
    if source:
        encoding = load_encoding(source, fields, job.cfg)
        _check_categories_kept(encoding, frame, job.cfg)
        _check_prompt_codes(encoding, job.params.get("prompt_missing_values"), job.cfg)
    else:
        encoding = TabularEncoding.from_config(job.cfg, fields).fit(frame)
    unplaced = []
    matrix = encoding.transform(frame, unplaced) if items else None
    notes: dict[str, list[str]] = {}
    for u in unplaced:
        notes.setdefault(items[u.row].subject_id, []).append(u.describe())
    no_value = encoding.all_missing(frame) if items else []
    job.state = (matrix, {sid: NOTE_PREFIX + "; ".join(n) for sid, n in notes.items()},
                 no_value, _sentinel_text(encoding))
    job.feature_shape = (encoding.n_features,)
    job.attrs = {"tabular_encoding": encoding.to_dict(),
                 "feature_names": list(encoding.feature_names),
                 "tabular_encoding_from": str(source) if source else None}


def _check_categories_kept(encoding, frame: pl.DataFrame, cfg: Mapping[str, Any]) -> None:
    """A field the reused encoding has categories for that are not numbers must reach it
    as text: the manifest reads a field as numbers unless a tabular encoder of the
    modality lists it in ``categorical``, and blanks the values that are not (stage 'X'
    became 'missing', with no note on the subject)."""
    from mmpipe.cohorts.numbers import parse_number

    for col in encoding.columns:
        if col["kind"] != "categorical" or not frame.schema[col["field"]].is_numeric():
            continue
        words = [c for c in col["categories"] if parse_number(c) is None]
        if words:
            raise ConfigError(
                f"encoders.{cfg.get('name', '<tabular>')}: {col['field']!r} is a category "
                f"field of the reused encoding, with categories {words} that are not "
                "numbers, but the manifest read it as numbers and blanks such values; set "
                f"encoders.{cfg.get('name', '<tabular>')}.categorical to the reused "
                f"encoding's {encoding.categorical}, which the manifest reads too")


def _check_prompt_codes(encoding, prompt_codes: Mapping[str, list] | None,
                        cfg: Mapping[str, Any]) -> None:
    """The reused encoding's blank codes against the prompts' of a text encoder of the same
    modality: where they differ, a subject whose every field is ``-1`` is absent from the
    tabular store and present in the text one (a prompt of "-1"s), and the two encodings'
    cells train and test on different subjects. The config check compares the codes of an
    encoding fitted here; a reused one's are in its store."""
    from mmpipe.preprocess.blank_codes import blank_code_differences

    if prompt_codes is None:
        return
    differ = blank_code_differences({"missing_values": encoding.missing_values}, prompt_codes)
    if differ:
        raise ConfigError(
            f"encoders.{cfg.get('name', '<tabular>')}: the encoding it reuses treats other "
            f"codes as blank than the modality's prompt ({differ}); give the prompt the "
            "reused encoding's missing_values")


def _sentinel_text(encoding) -> str:
    missing = encoding.missing_values
    if isinstance(missing, dict):
        return "; ".join(f"{f}: {', '.join(v)}" for f, v in missing.items() if v)
    return ", ".join(missing)


def run(job, items, writer, progress=None) -> None:
    """Store each subject's row. A subject whose every field is one of the encoder's
    ``missing_values`` is absent, as the manifest makes a subject whose every field is
    blank: it holds no value, and stage 2 then sees the modality missing, not a row of
    "missing" indicators that a method would read as a present table."""
    matrix, notes, no_value, sentinels = job.state
    for sid, note in notes.items():
        writer.notes[sid] = "; ".join(t for t in (writer.notes.get(sid), note) if t)
    for item, row, empty in zip(items, matrix if matrix is not None else [], no_value,
                                strict=True):
        if empty:
            writer.mark(item.subject_id, "absent",
                        f"every field is blank or a missing_values code ({sentinels})")
        else:
            writer.write(item.subject_id, row)
    if any(no_value):
        empty = [i.subject_id for i, e in zip(items, no_value, strict=True) if e]
        log.warning("%d subject(s) with every table field a missing_values code (%s) stored "
                    "as absent: %s", len(empty), sentinels,
                    ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))
    if progress is not None:
        progress.update(len(items))
