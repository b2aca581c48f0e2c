"""Canonical parameter sets and their hash: one spelling of "the same settings".

A mapping's key order never means anything in a parameter set (the YAML a user reorders,
a dict built in another order), so :func:`canonical` sorts keys recursively and
:func:`params_hash` hashes that form. Lists keep their order: where a list's order means
nothing, the code that reads it sorts it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from functools import cache
from pathlib import Path
from typing import Any

from mmpipe.errors import InputError

log = logging.getLogger(__name__)


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys sorted, recursively (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def params_hash(params: Any) -> str:
    """SHA-256 (hex) of a JSON-able parameter set; key order does not matter."""
    blob = json.dumps(canonical(params), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file, read in chunks so multi-GB checkpoints never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


# Weight files and TotalSegmentator's model folders are hashed while Snakemake builds the
# DAG, in every invocation and, under a cluster executor, in every job's own invocation:
# GBs read again each time. A file's digest is therefore also kept on disk, keyed by what
# changes whenever its content can have changed (path, inode, size, mtime and ctime:
# ctime cannot be set back by a user, so a file rewritten in place, even to the same size
# and mtime, misses). Small files are quicker to read than to look up.
_DISK_CACHE_MIN_BYTES = 1 << 20


def hash_cache_dir() -> Path:
    """Where file digests are kept between processes: ``$MMPIPE_HASH_CACHE``, else
    ``$XDG_CACHE_HOME/mmpipe/sha256``, else ``~/.cache/mmpipe/sha256``."""
    if os.environ.get("MMPIPE_HASH_CACHE"):
        return Path(os.environ["MMPIPE_HASH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmpipe" / "sha256"


def _identity(path: Path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _from_disk(key: str) -> str | None:
    try:
        value = (hash_cache_dir() / key).read_text().strip()
    except OSError:
        return None
    # an entry cut short or written by something else is not a digest: hash again
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None


def _to_disk(key: str, digest: str) -> None:
    folder = hash_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(digest)
        os.replace(tmp, folder / key)  # concurrent jobs write the same value: last one wins
    except OSError as err:  # a cache that cannot be written costs time, never a result
        log.debug("file digest not cached in %s: %s", folder, err)


# A file modified less than this before it was read may still change within its mtime's
# resolution without a new identity (git's "racy clean"): its digest is not kept on disk
_SETTLED_NS = 2_000_000_000


@cache
def _cached_sha256(identity: tuple) -> str:
    path, size, mtime_ns = identity[0], identity[3], identity[4]
    if size < _DISK_CACHE_MIN_BYTES:
        return sha256_file(path)
    key = hashlib.sha256("\0".join(map(str, identity)).encode()).hexdigest()
    if (digest := _from_disk(key)) is None:
        digest = sha256_file(path)
        if _identity(Path(path)) == identity and time.time_ns() - mtime_ns > _SETTLED_NS:
            _to_disk(key, digest)
    return digest


def _folder_sha256(path: Path) -> str:
    """The digest of a folder's files, names and contents, with its linked subfolders
    walked too (``Path.rglob`` goes into none: TotalSegmentator weights replaced in a
    linked ``fold_0`` reran nothing). A link to nothing counts by its name (fetched
    later, it reruns the jobs; the job reading the files says what is missing), and a
    folder reached twice (a link loop, two names for it) is walked once, under its first
    name in the walk's order: real folders before links, each in name order, not the
    file system's listing, which a copy to another disk reorders."""
    files: list[tuple[Path, str]] = []
    seen = {os.path.realpath(path)}
    for here, folders, names in os.walk(path, followlinks=True):
        folders.sort(key=lambda f: (os.path.islink(os.path.join(here, f)), f))
        kept = []
        for folder in folders:
            real = os.path.realpath(os.path.join(here, folder))
            if real not in seen:
                seen.add(real)
                kept.append(folder)
        folders[:] = kept
        for name in names:
            file = Path(here) / name
            if file.is_file():
                files.append((file, ""))
            elif not file.exists():
                files.append((file, "a link to nothing"))
    digest = hashlib.sha256()
    for f, missing in sorted(files):
        digest.update(f.relative_to(path).as_posix().encode())
        digest.update((missing or content_sha256(f)).encode())
    return digest.hexdigest()


def content_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (names and contents, in name order:
    :func:`_folder_sha256`). A file is read once while it does not change: per process,
    and for files of 1 MiB or more across processes (:func:`hash_cache_dir`)."""
    path = Path(path)
    if path.is_dir():
        return _folder_sha256(path)
    resolved = path.resolve()
    for _ in range(3):
        identity = _identity(resolved)
        digest = _cached_sha256(identity)
        if _identity(resolved) == identity:
            return digest
        # written to while read: that digest is cached under an identity the file no
        # longer has, so it is never served; read it again
    raise InputError("the file kept changing while it was hashed (still being written?)",
                     path=resolved)
