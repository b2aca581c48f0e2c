"""Atomic writes: a killed job never leaves a half-written output that looks finished."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)


def tmp_sibling(path: Path) -> Path:
    """A fresh temporary sibling of ``path``; leftovers of killed writers are removed.

    Only one job writes a given output at a time (Snakemake sees to that), so any
    ``{name}.tmp-*`` beside it is debris of a killed run.
    """
    for stale in path.parent.glob(f"{glob.escape(path.name)}.tmp-*"):
        log.warning("removing %s, left by an interrupted run", stale)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it onto ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; rename it onto ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_parquet(df: pl.DataFrame, path: str | Path) -> Path:
    with atomic_file(path) as tmp:
        df.write_parquet(tmp)
    return Path(path)
