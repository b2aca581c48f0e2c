"""What a modality's stage-1 jobs read of the manifest, as a digest their rules carry as a
parameter.

The stage-1 rules and the stage-2 rules read the manifest files as ``ancient``
(``checkpointed_manifest`` in the workflow): a rebuilt manifest reruns a job only when
the digest of the part it reads changed. Planning computes them (:mod:`mmpipe.params`);
what the stage-2 jobs read is :mod:`mmpipe.cohorts.benchmark_view`. No job's code key
holds this module: it decides what reruns, and writes no output.
"""

from __future__ import annotations

import functools
import itertools
import os
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.cohorts.manifest_digest import digest_of, planned_digest
from mmpipe.cohorts.manifest_files import (
    ALL_SUBJECTS,
    SUBJECT,
    read_manifest,
    read_qc,
    under_root,
)
from mmpipe.cohorts.split_groups import SPLIT_GROUP
from mmpipe.io.walk import folder_stamps
from mmpipe.preprocess.masks import mask_column


def modality_view_digest(out_dir: str | Path, modality: str) -> str:
    """SHA-256 of what a modality's stage-1 jobs read through the manifest files: every
    subject in order (a store holds a row per subject), the modality's own columns (its
    path or its fields), the adapter's extra columns, its entry in the JSON, its adapter
    QC rows, and the size and mtime of each file its paths name (of a folder: the mtime of
    it and of each folder under it, linked ones included, which an added, removed,
    renamed or atomically replaced file changes, and its links to nothing). The stage-1 rules carry it as a parameter and read the
    manifest as ``ancient``: a manifest rebuilt for a label or another modality's fields
    reruns none of this modality's preprocessing and encoding, while new rows for it, or
    a regenerated demo image under the same name, rerun them. See
    :func:`~mmpipe.cohorts.manifest_digest.planned_digest` for ``"not built"`` and
    ``"unreadable"``."""
    return planned_digest(out_dir, _view_digest, modality)


def _companions(path: Path) -> list[Path]:
    """The files a format keeps its data in beside the file a manifest names: a MetaImage
    header's ``ElementDataFile`` (``.mhd`` + ``.raw``, as LUNA16 ships CT), an Analyze
    header's ``.img``, a MIRAX slide's folder of the same stem. Replaced, even atomically,
    they changed no stamp, and the volume's store kept the old voxels."""
    suffix = path.suffix.lower()
    if suffix == ".mhd":
        try:
            with open(path, errors="replace") as fh:
                for line in itertools.islice(fh, 64):  # a header is a few dozen lines
                    key, _, value = line.partition("=")
                    if key.strip() == "ElementDataFile":
                        value = value.strip()
                        # LOCAL: in the header itself; LIST or a pattern: many files
                        if value and value != "LOCAL" and not value.startswith("LIST") \
                                and "%" not in value:
                            return [path.parent / value]
                        return []
        except OSError:
            return []
        return []
    if suffix == ".hdr":
        return [path.with_suffix(".img")]
    if suffix == ".mrxs":
        return [path.with_suffix("")]
    return []


def _stat_stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _file_stamp(path: str | None) -> Any:
    if path is None:
        return None
    p = Path(path)
    try:
        if not p.is_dir():
            stamp = _stat_stamp(p)
            for companion in _companions(p):
                try:
                    stamp.append([companion.name, sorted(folder_stamps(companion))
                                  if companion.is_dir() else _stat_stamp(companion)])
                except OSError:
                    stamp.append([companion.name, "missing"])
            return stamp
        # as the DICOM reader walks it: linked folders once, no hidden or system folder,
        # no link up the tree (it would stamp the whole cohort for each subject)
        return sorted(folder_stamps(p))
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
    return digest_of({"spec": spec, "columns": [SUBJECT, *own, *extra], "rows": rows,
                    "qc": qc_rows, "files": files})
