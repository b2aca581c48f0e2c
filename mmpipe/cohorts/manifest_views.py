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
import re
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
from mmpipe.io.walk import _walked, folder_stamps
from mmpipe.preprocess.masks import mask_column


def modality_view_digest(out_dir: str | Path, modality: str, with_mask: bool = True) -> str:
    """SHA-256 of what a modality's stage-1 jobs read through the manifest files: every
    subject in order (a store holds a row per subject), the modality's own columns (its
    path or its fields), the adapter's extra columns, its entry in the JSON, its adapter
    QC rows, and the size and mtime of each file its paths name (of a folder: the mtime of
    it and of each folder under it, linked ones included, which an added, removed,
    renamed or atomically replaced file changes, its links to nothing, and the size and
    mtime of each file a link in it points to; of a file, also the files its format keeps
    its data in, :func:`_companions`). The stage-1 rules carry it as a parameter and read the
    manifest as ``ancient``: a manifest rebuilt for a label or another modality's fields
    reruns none of this modality's preprocessing and encoding, while new rows for it, or
    a regenerated demo image under the same name, rerun them. ``with_mask``: the
    modality's own mask column and its files too, for a job that reads them (an encoder
    whose transform reads the adapter's mask); the others read none, and brain masks
    added for one sequence reran every volume store of the cohort. See
    :func:`~mmpipe.cohorts.manifest_digest.planned_digest` for ``"not built"`` and
    ``"unreadable"``."""
    return planned_digest(out_dir, _view_digest, modality, with_mask)


# the keys of a Hamamatsu index (.vms: JPEG files, .vmu: an NGR file) that name the
# files OpenSlide reads its pixels from
_HAMAMATSU_FILES = re.compile(r"(ImageFile|MapFile|OptimisationFile)(\(\d+,\d+\))?")


def _metaimage_data(path: Path) -> list[Path]:
    """The files a MetaImage header's ``ElementDataFile`` names: one file, a ``LIST`` of
    files (the lines after it), or a pattern ``name%03d.raw first last step``; none when
    the data is in the header (``LOCAL``)."""
    with open(path, errors="replace") as fh:
        for line in itertools.islice(fh, 64):  # a header is a few dozen lines
            key, _, value = line.partition("=")
            if key.strip() != "ElementDataFile":
                continue
            value = value.strip()
            if not value or value == "LOCAL":
                return []
            if value.split()[0] == "LIST":
                return [path.parent / n.strip() for n in fh if n.strip()]
            parts = value.split()
            if "%" in parts[0] and len(parts) >= 3:
                try:
                    first, last = int(parts[1]), int(parts[2])
                    step = int(parts[3]) if len(parts) > 3 else 1
                    return [path.parent / (parts[0] % i)
                            for i in range(first, last + (1 if step > 0 else -1), step)]
                except (ValueError, TypeError):
                    return []  # the reader names a pattern it cannot read
            return [path.parent / value]
    return []


def _companions(path: Path) -> list[Path]:
    """The files a format keeps its data in beside the file a manifest names: a MetaImage
    header's ``ElementDataFile`` (``.mhd`` + ``.raw``, as LUNA16 ships CT; a list or a
    pattern of files), an Analyze header's ``.img``, a MIRAX slide's folder of the same
    stem, the JPEG or NGR files a Hamamatsu index (``.vms``, ``.vmu``) names, and the
    CLAM ``h5_files/<slide>.h5`` that lends a ``pt_files/<slide>.pt`` its tile
    coordinates (only once it is there: a .pt without one is read alone). Replaced, even
    atomically, or (the h5) written after the store, they changed no stamp, and the store
    kept the old voxels, or the subject its rejection."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".mhd":
            return _metaimage_data(path)
        if suffix in (".vms", ".vmu"):
            with open(path, errors="replace") as fh:
                named = [v.strip() for k, _, v in (line.partition("=")
                                                   for line in itertools.islice(fh, 4096))
                         if _HAMAMATSU_FILES.fullmatch(k.strip()) and v.strip()]
            return [path.parent / name for name in dict.fromkeys(named)]
    except OSError:
        return []
    if suffix == ".hdr":
        return [path.with_suffix(".img")]
    if suffix == ".mrxs":
        return [path.with_suffix("")]
    if suffix == ".pt":
        h5 = path.parent.parent / "h5_files" / f"{path.stem}.h5"
        return [h5] if h5.is_file() else []
    return []


def _linked_files(folder: Path) -> list[list]:
    """``[link, size, mtime]`` of each link to a file under ``folder`` (relative to it),
    of its target: a folder of links into a store elsewhere keeps its mtimes when a
    target is replaced. (Here, not in :func:`~mmpipe.io.walk.folder_stamps`: that module
    is in every DICOM shard's code key.)"""
    stamps: list[list] = []
    for _, entries in _walked(folder):
        for entry in entries:
            if entry.is_symlink() and entry.is_file():
                st = entry.stat()  # the target's
                stamps.append([os.path.relpath(entry.path, folder), st.st_size,
                               st.st_mtime_ns])
    return stamps


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
        # a folder without links keeps the stamp it had: no other cohort's jobs rerun
        return sorted(folder_stamps(p)) + _linked_files(p)
    except OSError:
        return "missing"  # the job says which subject and file


# Once per planning process and manifest (its files' stamps are the key): raw files a
# run regenerates (the demo) come with a rebuilt manifest, read again after it
@functools.cache
def _view_digest(root: str, modality: str, with_mask: bool, stamp: tuple) -> str:
    df, meta = read_manifest(root)
    spec = meta["modalities"].get(modality)
    if spec is None:
        return "not in the manifest"
    own = [spec["path_column"]] if "path_column" in spec else list(spec.get("fields", []))
    # not another modality's mask (BraTS's and IXI's extra columns): its path, absolute,
    # reran this modality's jobs when the download moved, and whenever that mask changed
    # nor the split groups, which only the splits read
    others = {mask_column(m) for m in meta["modalities"]
              if m != modality or not with_mask} | {SPLIT_GROUP}
    extra = [c for c in meta.get("extra_columns", []) if c not in own and c not in others]
    paths = [c for c in (spec.get("path_column"), mask_column(modality) if with_mask else None)
             if c in df.columns]
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
