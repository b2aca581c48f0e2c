"""What each job reads of the manifest, as a digest its rule carries as a parameter.

The stage-1 rules and the stage-2 rules read the manifest files as ``ancient``
(``checkpointed_manifest`` in the workflow): a rebuilt manifest reruns a job only when
the digest of the part it reads changed. Planning computes them (:mod:`mmpipe.params`);
the training job and the report compute the benchmark's again after the manifest, to
record and compare what their runs were trained on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.cohorts.manifest_files import (
    ALL_SUBJECTS,
    SPLIT,
    SUBJECT,
    modality_presence,
    read_manifest,
    read_qc,
    under_root,
)
from mmpipe.cohorts.split_groups import SPLIT_GROUP
from mmpipe.errors import InputError
from mmpipe.layout import CohortLayout
from mmpipe.preprocess.masks import mask_column

log = logging.getLogger(__name__)


def modality_view_digest(out_dir: str | Path, modality: str) -> str:
    """SHA-256 of what a modality's stage-1 jobs read through the manifest files: every
    subject in order (a store holds a row per subject), the modality's own columns (its
    path or its fields), the adapter's extra columns, its entry in the JSON, its adapter
    QC rows, and the size and mtime of each file its paths name (of a folder: the mtime of
    it and of each folder under it, which an added, removed, renamed or atomically
    replaced file changes). The stage-1 rules carry it as a parameter and read the
    manifest as ``ancient``: a manifest rebuilt for a label or another modality's fields
    reruns none of this modality's preprocessing and encoding, while new rows for it, or
    a regenerated demo image under the same name, rerun them. See :func:`_planned_digest`
    for ``"not built"`` and ``"unreadable"``."""
    return _planned_digest(out_dir, _view_digest, modality)


def benchmark_view_digest(out_dir: str | Path, label: str) -> str:
    """SHA-256 of what the stage-2 jobs (splits, masks, training) read through the
    manifest files: every subject in order, the benchmark's ``label``, the cohort's own
    split (its column and source) and which modalities each subject has (its modality
    names in name order, as :mod:`mmpipe.bench.prepare` reads them), and the subjects'
    ``split_group`` where the adapter writes one. Carried as a
    parameter like :func:`modality_view_digest`: a manifest rebuilt for a clinical field
    or a regenerated image under the same name redraws no split and no mask, and reruns
    only the training jobs whose stores changed."""
    return _planned_digest(out_dir, _benchmark_view, label)


def built_benchmark_view(out_dir: str | Path, label: str) -> str:
    """:func:`benchmark_view_digest` for a job that runs after the manifest (training,
    the report): where planning defers (no manifest, an unreadable one, a label it lacks)
    this raises :class:`InputError` naming the manifest, instead of a placeholder that
    would compare unequal to every run's."""
    digest = benchmark_view_digest(out_dir, label)
    if digest in ("not built", "unreadable", "label not in the manifest"):
        raise InputError(f"{digest} ({label!r} is the benchmark's label): rebuild the "
                         "manifest (the manifest rule)",
                         path=CohortLayout(Path(out_dir)).manifest())
    return digest


def _planned_digest(out_dir: str | Path, view: Callable[..., str], *args: str) -> str:
    """``view(root, *args, stamp)`` of the manifest files in ``out_dir``. ``"not built"``
    while there is no manifest; ``"unreadable"`` for a manifest a killed build left (the
    rules wait for the manifest job, which rebuilds it, and are then judged on the new
    one)."""
    layout = CohortLayout(Path(out_dir))
    files = (layout.manifest(), layout.manifest_meta(), layout.adapter_qc())
    try:
        stamp = tuple((st.st_size, st.st_mtime_ns) for st in (f.stat() for f in files))
    except FileNotFoundError:
        return "not built"
    try:
        return view(str(layout.root), *args, stamp)
    except (InputError, OSError, KeyError, ValueError, pl.exceptions.PolarsError) as err:
        # Snakemake evaluates a rule's parameters while planning, before the manifest
        # job it waits for has run: raising here would stop the run that repairs it
        log.debug("manifest of %s not readable while planning: %s", layout.root, err)
        return "unreadable"


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _file_stamp(path: str | None) -> Any:
    if path is None:
        return None
    p = Path(path)
    try:
        if not p.is_dir():
            st = p.stat()
            return [st.st_size, st.st_mtime_ns]
        # os.walk reads the entries' types without a stat each: one stat per folder
        return sorted([os.path.relpath(d, p), os.stat(d).st_mtime_ns]
                      for d, _, _ in os.walk(p))
    except OSError:
        return "missing"  # the job says which subject and file


# Once per planning process and manifest (its files' stamps are the key): raw files a
# run regenerates (the demo) come with a rebuilt manifest, read again after it
@functools.cache
def _view_digest(root: str, modality: str, stamp: tuple) -> str:
    df, meta = read_manifest(root)
    spec = meta["modalities"].get(modality)
    if spec is None:
        return "not in the manifest"
    own = [spec["path_column"]] if "path_column" in spec else list(spec.get("fields", []))
    # not another modality's mask (BraTS's and IXI's extra columns): its path, absolute,
    # reran this modality's jobs when the download moved, and whenever that mask changed
    # nor the split groups, which only the splits read
    others = {mask_column(m) for m in meta["modalities"] if m != modality} | {SPLIT_GROUP}
    extra = [c for c in meta.get("extra_columns", []) if c not in own and c not in others]
    paths = [c for c in (spec.get("path_column"), mask_column(modality)) if c in df.columns]
    files = [[_file_stamp(v) for v in df[c].to_list()] for c in paths]
    # where the dataset lies is no part of what a job reads from it: a download moved or
    # copied with its times (mv, cp -a, rsync -a) reruns nothing after the manifest
    # the dataset's root (a manifest before it had one: the source, a table file for most)
    source = meta.get("root") or meta.get("source")
    under = functools.partial(under_root, source)
    rows = df.select(SUBJECT, *own, *extra).with_columns(
        pl.col(c).map_elements(under, return_dtype=pl.String) for c in own + extra
        if c in paths).rows()
    # not the whole-cohort rows, which no store reads: a stray file in a download's folder
    # (a "skipped" row, there as soon as the listing rebuilds the manifest) reruns none of
    # the modality's jobs
    qc = read_qc(root).filter((pl.col("modality") == modality)
                              & (pl.col(SUBJECT) != ALL_SUBJECTS))
    qc_rows = [(sid, status, reason.replace(source.rstrip(os.sep) + os.sep, "") if source
                and reason else reason, under(path))
               for sid, status, reason, path in qc.select(SUBJECT, "status", "reason",
                                                          "path").rows()]
    return _digest({"spec": spec, "columns": [SUBJECT, *own, *extra], "rows": rows,
                    "qc": qc_rows, "files": files})


@functools.cache
def _benchmark_view(root: str, label: str, stamp: tuple) -> str:
    df, meta = read_manifest(root)
    if label not in df.columns:
        return "label not in the manifest"  # the job says so, with the manifest's labels
    modalities = sorted(meta["modalities"])
    columns = [SUBJECT, label, *([SPLIT] if SPLIT in df.columns else []),
               *([SPLIT_GROUP] if SPLIT_GROUP in df.columns else [])]
    # of the split's record, what a split file holds: not ``where`` (the CSV's path)
    source = (meta.get("split") or {}).get("source")
    return _digest({"columns": columns, "rows": df.select(columns).rows(),
                    "split_source": source, "modalities": modalities,
                    "presence": modality_presence(df, meta).select(modalities).rows()})
