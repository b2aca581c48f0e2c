"""The manifest's files: what they hold, and the one way every stage writes and reads them.

Files under ``results/{cohort}/``:

- ``manifest.parquet``: ``subject_id``, label column(s), ``{modality}_path`` for
  every non-table modality, every table field under its own name, the
  adapter's extra (non-modality) columns, then ``split`` when the cohort brings its own
  split (:mod:`mmpipe.cohorts.manifest`, which builds them).
- ``manifest.json``: cohort, adapter, labels, modalities (kind and
  ``path_column`` or ``fields``), ``n_subjects``, ``extra_columns``, plus
  ``n_excluded``, ``n_label_missing``, per-modality status ``counts``, ``source``,
  ``split`` (null, or where the user's split comes from and its part counts) and
  ``unused_columns`` (columns of the source files that the config does not use).
- ``qc/adapter.parquet``: subject_id, modality, stage ("adapter"), status, reason, path
  (``mmpipe.qc.QC_SCHEMA``). Rows about a whole file rather than one subject have
  subject_id ``*``: one ``column``/``unused`` row per source column the config does not
  use, and one ``split``/``fixed`` row saying which parts the user's split fixes.

Every job after the manifest reads them through this module, and what each reads of them
is keyed by :mod:`mmpipe.cohorts.manifest_views` and :mod:`mmpipe.cohorts.benchmark_view`:
how the manifest is built is in no later job's code key, so an edit of an adapter or of
the builder reruns the manifest and then only the jobs whose part of it changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from mmpipe.errors import InputError
from mmpipe.fsutil import atomic_write_text, write_parquet
from mmpipe.layout import CohortLayout

if TYPE_CHECKING:
    from mmpipe.cohorts.manifest import Manifest

SUBJECT = "subject_id"
# QC rows about a whole source file, not one subject: subject_id ALL_SUBJECTS
ALL_SUBJECTS = "*"
# QC status of a table value that was not a number in a numeric field and was set to
# blank; one row per value, next to the modality's present/absent row
NON_NUMERIC = "non_numeric"
# the user's split: the manifest column, its canonical parts
SPLIT = "split"
SPLIT_PARTS = ("train", "val", "test")


def fixed_parts(parts: list[str | None]) -> tuple[str, ...]:
    """What a user's split fixes: the test set, and train/val too once it names a val part."""
    return SPLIT_PARTS if "val" in parts else ("test",)


def write_manifest(manifest: Manifest, out_dir: str | Path) -> None:
    """Write QC, JSON, then the parquet last: a manifest.parquet on disk implies the rest."""
    layout = CohortLayout(Path(out_dir))
    write_parquet(manifest.qc, layout.adapter_qc())
    # the JSON's bytes are decided here, in the readers' key (mmpipe.fsutil, which only
    # places files, is in none)
    atomic_write_text(layout.manifest_meta(), json.dumps(manifest.meta, indent=2) + "\n")
    write_parquet(manifest.frame, layout.manifest())


def manifest_columns(meta: dict) -> list[str]:
    """Every column the manifest must hold according to its JSON."""
    cols = [SUBJECT, *meta["labels"]]
    for spec in meta["modalities"].values():
        if "path_column" in spec:
            cols.append(spec["path_column"])
    for spec in meta["modalities"].values():
        cols.extend(f for f in spec.get("fields", []) if f not in cols)
    cols.extend(meta.get("extra_columns", []))
    if meta.get("split"):
        cols.append(SPLIT)
    return cols


def read_manifest(out_dir: str | Path) -> tuple[pl.DataFrame, dict]:
    """Read ``out_dir/manifest.parquet`` and its JSON, checking that they agree."""
    layout = CohortLayout(Path(out_dir))
    pq, js = layout.manifest(), layout.manifest_meta()
    for p in (pq, js):
        if not p.exists():
            raise InputError("manifest not found; build it first (mmpipe manifest / the "
                             "manifest rule)", path=p)
    df = pl.read_parquet(pq)
    meta = json.loads(js.read_text())
    missing = [c for c in manifest_columns(meta) if c not in df.columns]
    if missing:
        raise InputError(f"manifest lacks column(s) {missing} that {js.name} declares",
                         path=pq)
    if df[SUBJECT].null_count() or df[SUBJECT].n_unique() != df.height:
        raise InputError("subject_id must be unique and non-null", path=pq)
    if meta.get("n_subjects") != df.height:
        raise InputError(f"{js.name} says {meta.get('n_subjects')} subjects, the parquet "
                         f"holds {df.height}: files from two different builds", path=pq)
    return df, meta


def modality_presence(df: pl.DataFrame, meta: dict) -> pl.DataFrame:
    """subject_id and one bool column per modality (path non-null, or any field non-null)."""
    exprs = []
    for name, spec in meta["modalities"].items():
        if "path_column" in spec:
            exprs.append(pl.col(spec["path_column"]).is_not_null().alias(name))
        else:
            exprs.append(pl.any_horizontal([pl.col(f).is_not_null() for f in spec["fields"]])
                         .alias(name))
    return df.select(pl.col(SUBJECT), *exprs)


def read_qc(out_dir: str | Path) -> pl.DataFrame:
    path = CohortLayout(Path(out_dir)).adapter_qc()
    if not path.exists():
        raise InputError("adapter QC not found; build the manifest first", path=path)
    return pl.read_parquet(path)


def under_root(root: str | None, path: str | None) -> str | None:
    """``path`` relative to the dataset's ``root`` when it lies under it, else as is."""
    if path is None or not root:
        return path
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel == ".." or rel.startswith(".." + os.sep) else rel


def path_under_root(meta: dict, path: str | None) -> str | None:
    """A manifest path as it lies in its dataset: relative to the manifest's ``root`` (a
    manifest before it had one: its source) when under it, else as is. A dataset moved
    with its files keeps these."""
    return under_root(meta.get("root") or meta.get("source"), path)
