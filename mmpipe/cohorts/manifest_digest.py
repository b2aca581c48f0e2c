"""The digest of a part of the manifest, as planning computes it before the manifest job
may have run: the shared step of :mod:`mmpipe.cohorts.benchmark_view` (what the stage-2
jobs read) and :mod:`mmpipe.cohorts.manifest_views` (what a modality's stage-1 jobs
read)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.errors import InputError
from mmpipe.layout import CohortLayout

log = logging.getLogger(__name__)

# what planned_digest gives where there is no manifest to read yet
NOT_BUILT = "not built"
UNREADABLE = "unreadable"


def planned_digest(out_dir: str | Path, view: Callable[..., str], *args: str) -> str:
    """``view(root, *args, stamp)`` of the manifest files in ``out_dir``. ``"not built"``
    while there is no manifest; ``"unreadable"`` for a manifest a killed build left (the
    rules wait for the manifest job, which rebuilds it, and are then judged on the new
    one)."""
    layout = CohortLayout(Path(out_dir))
    files = (layout.manifest(), layout.manifest_meta(), layout.adapter_qc())
    try:
        stamp = tuple((st.st_size, st.st_mtime_ns) for st in (f.stat() for f in files))
    except FileNotFoundError:
        return NOT_BUILT
    try:
        return view(str(layout.root), *args, stamp)
    except (InputError, OSError, KeyError, ValueError, pl.exceptions.PolarsError) as err:
        # Snakemake evaluates a rule's parameters while planning, before the manifest
        # job it waits for has run: raising here would stop the run that repairs it
        log.debug("manifest of %s not readable while planning: %s", layout.root, err)
        return UNREADABLE


def digest_of(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


