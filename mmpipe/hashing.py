"""Canonical parameter sets and their hash: one spelling of "the same settings".

A mapping's key order never means anything in a parameter set (the YAML a user reorders,
a dict built in another order), so :func:`canonical` sorts keys recursively and
:func:`params_hash` hashes that form. Lists keep their order: where a list's order means
nothing, the code that reads it sorts it.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any


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


@cache
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def content_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (names and contents, in name order);
    computed once per process for a file that has not changed."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f.relative_to(path).as_posix().encode())
            digest.update(content_sha256(f).encode())
        return digest.hexdigest()
    st = os.stat(path)
    return _cached_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)
