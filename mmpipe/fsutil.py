"""Atomic writes: a killed job never leaves a half-written output that looks finished.

Every output is written into a temporary sibling ``{name}.tmp-{host}-{pid}`` and renamed
into place only when complete. What a killed writer leaves is removed by the next writer
of the same output, and by :func:`sweep_debris` when a workflow run starts.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)


TMP_MARK = ".tmp-"
# what tmp_sibling names, and tmp_keeping_suffix's names, whose suffix a writer that
# picks its format by it needs last (whose they are, _is_debris reads from the tag)
_KEPT_SUFFIX = re.compile(r"\.nii(?:\.gz)?$")
_TMP_NAME = re.compile(r"\.tmp-(?:.+-)?\d+(?:\.nii(?:\.gz)?)?$")
# Linux's largest pid (PID_MAX_LIMIT, 2**22): an old-style name's number above it is no
# writer's pid but a user's date or count (``summary.csv.tmp-20240611``)
_PID_LIMIT = 2 ** 22


def _writer_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _is_debris(tmp: Path, *, other_hosts: bool) -> bool:
    """Whether a ``{name}.tmp-{host}-{pid}`` file or folder was left by a writer that is
    gone: a writer of this host whose process no longer runs. A writer of another host
    cannot be asked; ``other_hosts`` says whether to count it as gone, which is true only
    for the next writer of the same output (Snakemake lets one job at a time write an
    output). A name without this host's tag is counted as another host's: older versions
    wrote ``{name}.tmp-{pid}``, and a subject's file (``B.tmp-99999.nii.gz`` in a shard)
    or a user's (``summary.csv.tmp-20240611``) can look like that, so the sweep, which
    walks finished outputs too, took them for debris."""
    tag = _KEPT_SUFFIX.sub("", tmp.name.rsplit(TMP_MARK, 1)[-1])
    host, _, pid = tag.rpartition("-")
    # a date (summary.csv.tmp-2024-06-11), or a number beyond any pid, is a user's name;
    # a word and a number (summary.csv.tmp-backup-2) cannot be told from a writer's tag
    if (host and host != socket.gethostname()
            and not host.replace("-", "").strip("0123456789")) or (
            not host and pid.isdigit() and int(pid) > _PID_LIMIT):
        return False
    if host != socket.gethostname() or not pid.isdigit():
        return other_hosts
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # alive, someone else's; or no pid at all
        return False
    return False


def _remove(path: Path) -> None:
    log.warning("removing %s, left by an interrupted run", path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def tmp_sibling(path: Path) -> Path:
    """A fresh temporary sibling of ``path``; debris of killed writers is removed (their
    temporary folders, and the old output a replacement had renamed aside). A name beside
    the output of the form ``{name}.tmp-{word}-{number}`` is taken for a writer's tag and
    removed; a date or a number beyond any pid after ``.tmp-`` is kept."""
    name = glob.escape(path.name)
    for pattern in (f"{name}{TMP_MARK}*", f"{name}.old{TMP_MARK}*"):
        for stale in path.parent.glob(pattern):
            # a writer's name only: a user's ``report.tmp-before-rerun`` beside the output
            # was removed, folder and all, by its next writer
            if _TMP_NAME.search(stale.name) and _is_debris(stale, other_hosts=True):
                _remove(stale)
    return path.with_name(f"{path.name}{TMP_MARK}{_writer_tag()}")


def tmp_keeping_suffix(path: Path, suffix: str) -> Path:
    """A temporary sibling ``.{stem}.tmp-{host}-{pid}{suffix}`` of ``path`` (which ends in
    ``suffix``, ``.nii.gz`` or ``.nii``), for a writer that picks its format by the name's
    end (SimpleITK); the sweep knows it as debris once its writer is gone."""
    if not _KEPT_SUFFIX.fullmatch(suffix) or not path.name.endswith(suffix):
        raise ValueError(f"{path}: a kept suffix is .nii or .nii.gz, got {suffix!r}")
    return path.with_name(f".{path.name[:-len(suffix)]}{TMP_MARK}{_writer_tag()}{suffix}")


def sweep_debris(root: str | Path) -> list[Path]:
    """Remove what killed writers of this host left anywhere under ``root`` (the Snakefile
    does this when a run with jobs to do starts), so outputs that will not be written
    again keep no half-written sibling and no disk is lost to them. Live writers' files
    are left alone, and so are other hosts' (a cluster job of a concurrent run may be
    writing them; the next writer of the same output removes them if they are debris)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.rglob(f"*{TMP_MARK}*")
             if _TMP_NAME.search(p.name) and _is_debris(p, other_hosts=False)]
    # a killed writer's folder holds its own temporary files: remove the outermost only
    found = [p for p in found if not any(q in p.parents for q in found)]
    for p in found:
        _remove(p)
    return found


def replace_dir(tmp: Path, path: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``path``.

    An existing ``path`` is renamed aside (a ``.old.tmp-`` sibling, debris for the sweep
    if the job dies) before the new one takes its place, and removed last. Removing it in
    place first let a kill part-way through leave a folder whose top-level files outlived
    its data: ``rmtree`` reaches a store's chunks before its root ``zarr.json``, whose
    ``complete`` flag then vouched for chunks that were gone."""
    old = None
    if path.exists():
        old = path.with_name(f"{path.name}.old{TMP_MARK}{_writer_tag()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:  # the old output goes back: a failed rename loses nothing
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class TemporaryTakenError(RuntimeError):
    """A job's temporary folder was removed while the job wrote it: another run writing
    the same output took it for a killed job's (a rerun while the first run's cluster
    job still ran). What the job wrote after that is partial, so it is not installed."""


# a file each atomic folder holds while it is written, naming its writer once: a folder
# made again at the same path lacks it, on a file system (NFS) whose client may report a
# removed folder's cached attributes, or give a new folder a freed inode's number
_WRITER_MARK = ".mmpipe-writer"


def _still_there(fd: int, path: Path, token: str) -> bool:
    """Whether the folder open as ``fd`` is still the one at ``path``, holding the mark
    written there with ``token``. Held open, its inode cannot be reused by a folder made
    again at ``path`` on a local file system; removed, it has no link."""
    try:
        held, now = os.fstat(fd), os.stat(path)
        mark = (path / _WRITER_MARK).read_text()
    except OSError:  # gone, or NFS's stale handle of a folder another client removed
        return False
    return (held.st_nlink > 0 and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
            and mark == token)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it onto ``path`` on success only, and
    only if it is still the folder made here (:class:`TemporaryTakenError`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    tmp.mkdir()
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    token = f"{_writer_tag()} {uuid.uuid4().hex}"
    try:
        (tmp / _WRITER_MARK).write_text(token)
        yield tmp
        # another host's writer of the same output (or of one that holds it) removes this
        # folder as debris on sight; the writes after it (a nested atomic_dir's, a
        # library's) made it again, holding only what came later, which was installed as
        # the whole output
        if not _still_there(fd, tmp, token):
            raise TemporaryTakenError(
                f"{tmp} was removed while this job wrote it, by another run writing it or "
                "the output that holds it (which took this job for a killed one): this "
                "job's output is partial and not installed; the other run's output stands")
        (tmp / _WRITER_MARK).unlink()
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; rename it onto ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)  # inside: a rename that fails (onto a folder) leaves no debris
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet(df: pl.DataFrame, path: str | Path,
                  metadata: dict[str, str] | None = None) -> Path:
    with atomic_file(path) as tmp:
        df.write_parquet(tmp, **({"metadata": metadata} if metadata else {}))
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
