"""Deterministic sharding of subjects, and file names made from subject IDs.

A subject belongs to shard ``sha1(subject_id) mod n_shards``. The number of shards is
fixed in config, so the Snakemake DAG has the same size for 60 or 60,000 subjects and
is known before the manifest exists (no checkpoint), while a cluster still runs the
shards in parallel. A subject keeps its shard when others are added or removed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from mmpipe.errors import StoreError
from mmpipe.layout import SHARD_SETTINGS

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def shard_of(subject_id: str, n_shards: int) -> int:
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return int(hashlib.sha1(str(subject_id).encode()).hexdigest(), 16) % n_shards


def in_shard(subject_ids: Iterable[str], shard: int, n_shards: int) -> list[str]:
    """The subjects of ``shard``, in their original order."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} outside 0..{n_shards - 1}")
    return [s for s in subject_ids if shard_of(s, n_shards) == shard]


def safe_name(subject_id: str) -> str:
    """A file name for ``subject_id``; unsafe characters are replaced and a short hash
    keeps two IDs that differ only in those characters apart."""
    sid = str(subject_id)
    clean = _UNSAFE.sub("_", sid)
    if clean == sid and clean not in (".", ".."):
        return clean
    return f"{clean}-{hashlib.sha1(sid.encode()).hexdigest()[:8]}"


def write_shard_settings(folder: Path, params: Mapping) -> None:
    """Record in a preprocessing shard the settings and code key that made it."""
    (Path(folder) / SHARD_SETTINGS).write_text(json.dumps(params, sort_keys=True, default=str))


def check_shard_settings(folders: Iterable[Path], expected: Mapping, what: str) -> None:
    """Refuse shards made with other settings than ``expected`` (what the store records
    as its preprocessing). Snakemake reruns a shard whose settings changed; ``mmpipe
    encode`` reads the shards as they lie, and labelled tiles of ``max_tiles: 2`` with
    the config's 4."""
    want = json.loads(json.dumps(expected, sort_keys=True, default=str))
    for folder in folders:
        path = Path(folder) / SHARD_SETTINGS
        if not path.is_file():
            raise StoreError(f"{folder}: the shard records no {what} settings (made by an "
                             "older mmpipe): rerun its preprocessing")
        made = json.loads(path.read_text())
        if made != want:
            key = next(k for k in sorted(set(made) | set(want)) if made.get(k) != want.get(k))
            raise StoreError(f"{folder}: the shard was made with other {what} settings than "
                             f"the config's ({key}: {made.get(key)!r} there, "
                             f"{want.get(key)!r} now): rerun its preprocessing")
