"""Zarr v3 feature stores: the contract between stage 1 and stage 2.

One store per (cohort, modality, encoder)::

    {name}.zarr/
        subject_id   str      [N]            every manifest subject, manifest order
        present      bool     [N]            True where ``emb`` holds a value
        status       str      [N]            "ok" | "absent" | "rejected"
        reason       str      [N]            why a subject is not present; for a present
                                             subject "" or a note (files skipped on reading)
        emb          float32  [N, *shape]    NaN for subjects that are not present
        bag/emb      float32  [T, *item]     optional per-item features (tiles, slices)
        bag/coords   int64    [T, k]         optional item coordinates (level-0 pixels...)
        bag/offsets  int64    [N + 1]        items of subject i are rows offsets[i]:offsets[i+1]

Group attributes carry the provenance (encoder, weights source and SHA-256 or
``random-init``, preprocessing parameters and their hash, package versions,
creation time) and ``complete: true``, which is written last.

Zarr reads chunks that were never written as the fill value, without error,
so a half-written store would look valid. Stores are therefore written into a
temporary sibling and renamed into place only once complete; readers also
refuse a store whose ``complete`` flag is missing.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from mmpipe.errors import StoreError
from mmpipe.fsutil import replace_dir, tmp_sibling

log = logging.getLogger(__name__)

STATUSES = ("ok", "absent", "rejected")
_VERSIONED_PACKAGES = ("mmpipe", "torch", "monai", "numpy", "zarr", "SimpleITK", "openslide-python",
                       "tokenizers", "safetensors")


# what makes two stores' features comparable: the same encoder, weights and columns
# (SIGNATURE_KEYS), made from inputs preprocessed the same way (PREPROCESSING_KEYS)
# (tile_features: the tool, feature encoder and patch geometry of imported tile features;
# precision: a network's forward under autocast, recorded only when not float32)
SIGNATURE_KEYS = ("encoder_type", "weights_sha256", "weights_random_init", "weights_init_seed",
                  "weights_projection_sha256", "feature_shape", "feature_names",
                  "tabular_encoding", "tile_features", "precision", "embedding_settings")
PREPROCESSING_KEYS = ("preprocessing_hash",)


def encoding_signature(attrs: dict[str, Any]) -> dict[str, Any]:
    """How a store's features were made, from its attributes: what a model trained on
    them must find again in a store it scores."""
    return {k: attrs[k] for k in (*SIGNATURE_KEYS, *PREPROCESSING_KEYS) if k in attrs}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _strings(arr: Any) -> np.ndarray:
    # zarr returns numpy's variable-width StringDType; stage 2 wants plain str arrays
    return np.array([str(v) for v in np.asarray(arr).tolist()], dtype=str)


class FeatureStoreWriter:
    """Write one feature store atomically.

    Use as a context manager; on an exception the temporary store is removed and
    nothing appears at ``path``. Subjects are written one at a time and reach the disk a
    whole chunk at a time (each chunk encoded once), so the cohort never has to fit in
    memory when subjects come in manifest order.
    """

    def __init__(
        self,
        path: str | Path,
        subject_ids: Sequence[str],
        feature_shape: Sequence[int],
        attrs: dict[str, Any],
        *,
        bag_item_shape: Sequence[int] | None = None,
        bag_coord_dim: int = 0,
        rows_per_chunk: int | None = None,
        bag_rows_per_chunk: int | None = None,
    ):
        self.path = Path(path)
        ids = [str(s) for s in subject_ids]
        if len(set(ids)) != len(ids):
            dup = sorted({s for s in ids if ids.count(s) > 1})
            raise StoreError(f"{self.path}: duplicate subject IDs {dup[:5]}")
        if "" in ids:  # what a lost subject_id chunk reads as (FeatureStore refuses it)
            raise StoreError(f"{self.path}: an empty subject ID")
        self.subject_ids = ids
        self._index = {s: i for i, s in enumerate(ids)}
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tmp_sibling(self.path)
        n = len(ids)
        item_size = int(np.prod(self.feature_shape)) or 1
        if rows_per_chunk is None:
            # ~16 MB float32 chunks, at least one row
            rows_per_chunk = max(1, min(n, (4 * 1024 * 1024) // item_size)) if n else 1
        self.group = zarr.open_group(str(self._tmp), mode="w", zarr_format=3)
        self.group.create_array("subject_id", shape=(n,), dtype=str)
        if n:
            self.group["subject_id"][:] = np.asarray(ids, dtype=str)
        self._present = np.zeros(n, dtype=bool)
        self._status = np.array(["absent"] * n, dtype=object)
        self._reason = np.array(["not processed"] * n, dtype=object)
        self.emb = self.group.create_array(
            "emb",
            shape=(n, *self.feature_shape),
            chunks=(rows_per_chunk, *self.feature_shape),
            dtype="float32",
            fill_value=np.nan,
        )
        self._rows = _RowBuffer(self.emb, n)
        self._bag = None
        if bag_item_shape is not None:
            bag = self.group.create_group("bag")
            item = tuple(int(d) for d in bag_item_shape)
            if bag_rows_per_chunk is None:
                # ~16 MB too: 4096 CLAM tiles of 1024, 167 VGG blocks of 512x7x7 (4096 of
                # those made 411 MB chunks, read whole for one subject's 1 MB bag)
                per_item = int(np.prod(item)) or 1
                bag_rows_per_chunk = max(1, min(4096, (4 * 1024 * 1024) // per_item))
            self._bag = {
                "emb": _AppendBuffer(bag.create_array(
                    "emb", shape=(0, *item), chunks=(bag_rows_per_chunk, *item),
                    dtype="float32")),
                "offsets": np.zeros(n + 1, dtype=np.int64),
                "counts": np.zeros(n, dtype=np.int64),
                "coords": (_AppendBuffer(bag.create_array(
                    "coords", shape=(0, bag_coord_dim),
                    chunks=(16 * bag_rows_per_chunk, max(bag_coord_dim, 1)), dtype="int64"))
                           if bag_coord_dim else None),
                "group": bag,
            }
        self.attrs = dict(attrs)
        self._closed = False

    # -- writing -----------------------------------------------------------------------------
    def _row(self, subject_id: str) -> int:
        try:
            return self._index[str(subject_id)]
        except KeyError:
            raise StoreError(f"{self.path}: subject {subject_id!r} is not in this store") from None

    def write(self, subject_id: str, emb: np.ndarray, bag: np.ndarray | None = None,
              coords: np.ndarray | None = None) -> None:
        """Store the embedding (and optional item bag) of one subject.

        Bags must be written in manifest order of the subjects that have one,
        since they are appended to one flat array.
        """
        i = self._row(subject_id)
        emb = np.asarray(emb, dtype=np.float32)
        if emb.shape != self.feature_shape:
            raise StoreError(f"{self.path}: subject {subject_id!r} has embedding shape "
                             f"{emb.shape}, store expects {self.feature_shape}")
        if not np.all(np.isfinite(emb)):
            raise StoreError(f"{self.path}: subject {subject_id!r} has non-finite embedding values")
        self._rows.put(i, emb)
        if self._bag is not None:
            if bag is None:
                raise StoreError(f"{self.path}: subject {subject_id!r} written without its bag")
            self._append_bag(i, np.asarray(bag, dtype=np.float32), coords)
        self._present[i] = True
        self._status[i] = "ok"
        self._reason[i] = ""

    def _append_bag(self, i: int, bag: np.ndarray, coords: np.ndarray | None) -> None:
        b = self._bag
        if b["counts"][i] or (self._present[i + 1:].any()):
            raise StoreError(f"{self.path}: bags must be written once each, in subject order")
        # checked before anything is appended: Zarr broadcast a (2, 1) bag into items of
        # (4,), and a bag appended before its coordinates were refused shifted every later
        # bag against the offsets
        item = b["emb"].array.shape[1:]
        if bag.shape[1:] != item:
            raise StoreError(f"{self.path}: subject {self.subject_ids[i]!r}: bag items of "
                             f"shape {bag.shape[1:]}, the store holds {item}")
        if b["coords"] is not None:
            dim = b["coords"].array.shape[1]
            coords = None if coords is None else np.asarray(coords, dtype=np.int64)
            # the shape itself: a transposed (dim, n) array of the right size was scrambled
            if coords is None or coords.shape != (len(bag), dim):
                raise StoreError(f"{self.path}: subject {self.subject_ids[i]!r}: bag "
                                 f"coordinates missing or not {len(bag)} x {dim}")
        b["emb"].append(bag)
        if b["coords"] is not None:
            b["coords"].append(coords)
        b["counts"][i] = len(bag)

    def mark(self, subject_id: str, status: str, reason: str) -> None:
        """Record why a subject has no embedding (``absent`` or ``rejected``)."""
        if status not in ("absent", "rejected"):
            raise StoreError(f"mark() takes 'absent' or 'rejected', not {status!r}")
        i = self._row(subject_id)
        if self._present[i]:
            raise StoreError(f"{self.path}: subject {subject_id!r} already has an embedding")
        self._status[i] = status
        self._reason[i] = reason or status
        self._rows.settle(i)

    def note(self, subject_id: str, text: str) -> None:
        """Attach a note to a stored subject (its ``reason`` while its status is ok)."""
        i = self._row(subject_id)
        if not self._present[i]:
            raise StoreError(f"{self.path}: subject {subject_id!r} has no embedding to note")
        self._reason[i] = text

    def commit(self) -> Path:
        """Write the index arrays and provenance, then rename the store into place."""
        g = self.group
        n = len(self.subject_ids)
        self._rows.flush()
        if self._bag is not None:
            for buffer in (self._bag["emb"], self._bag["coords"]):
                if buffer is not None:
                    buffer.flush()
        for name, values, dtype in (("present", self._present, bool),
                                    ("status", self._status, str),
                                    ("reason", self._reason, str)):
            arr = g.create_array(name, shape=(n,), dtype=dtype)
            if n:
                arr[:] = np.asarray(values, dtype=dtype)
        if self._bag is not None:
            offsets = np.concatenate([[0], np.cumsum(self._bag["counts"])]).astype(np.int64)
            arr = self._bag["group"].create_array("offsets", shape=(n + 1,), dtype="int64")
            arr[:] = offsets
        attrs = dict(self.attrs)
        attrs.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        attrs.setdefault("package_versions", package_versions())
        attrs["feature_shape"] = list(self.feature_shape)
        attrs["n_subjects"] = n
        attrs["n_present"] = int(self._present.sum())
        attrs["status_counts"] = {s: int((self._status == s).sum()) for s in STATUSES}
        g.attrs.update(_jsonable(attrs))
        # the flag goes last: a store without it was not finished
        g.attrs["complete"] = True
        replace_dir(self._tmp, self.path)
        self._closed = True
        log.info("wrote %s: %d/%d subjects present", self.path, attrs["n_present"], n)
        return self.path

    def abort(self) -> None:
        if not self._closed and self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()


class _RowBuffer:
    """Rows of an array held until every row of their chunk is written or marked, then
    written as one chunk. Zarr re-encodes a whole chunk on every write into it, so row by
    row a 16 MB chunk was compressed once per subject (quadratic in the cohort size)."""

    def __init__(self, array: zarr.Array, n: int):
        self.array = array
        self.rows = array.chunks[0]
        self.blocks: dict[int, np.ndarray] = {}
        self.settled = np.zeros(n, dtype=bool)
        self.open = np.bincount(np.arange(n) // self.rows,
                                minlength=-(-n // self.rows)) if n else np.zeros(0, int)

    def put(self, i: int, row: np.ndarray) -> None:
        c = i // self.rows
        if self.settled[i] and not self.open[c] and c not in self.blocks:
            self.array[i] = row  # rewritten after its chunk went out
            return
        # a row marked first and written now, while its chunk is still open, goes into the
        # chunk's block: written to the array alone, the block would cover it with NaN
        block = self.blocks.get(c)
        if block is None:
            lo, hi = c * self.rows, min((c + 1) * self.rows, len(self.settled))
            block = self.blocks[c] = np.full((hi - lo, *row.shape), np.nan, dtype=row.dtype)
        block[i - c * self.rows] = row
        self.settle(i)

    def settle(self, i: int) -> None:
        """Row ``i`` gets no (further) value: write its chunk once all its rows are settled."""
        if self.settled[i]:
            return
        self.settled[i] = True
        c = i // self.rows
        self.open[c] -= 1
        if not self.open[c]:
            self._write(c)

    def _write(self, c: int) -> None:
        block = self.blocks.pop(c, None)
        if block is not None:  # a chunk of marked rows only stays the fill value
            self.array[c * self.rows:c * self.rows + len(block)] = block

    def flush(self) -> None:
        for c in list(self.blocks):
            self._write(c)


class _AppendBuffer:
    """Rows appended to a growing array, written a whole chunk at a time (an append
    straight into Zarr re-encodes the array's last chunk every time)."""

    def __init__(self, array: zarr.Array):
        self.array = array
        self.rows = array.chunks[0]
        self.pending: list[np.ndarray] = []
        self.n_pending = 0

    def append(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.n_pending += len(rows)
        if self.n_pending >= self.rows:
            self._write(whole_chunks_only=True)

    def flush(self) -> None:
        self._write(whole_chunks_only=False)

    def _write(self, whole_chunks_only: bool) -> None:
        if not self.pending:
            return
        data = np.concatenate(self.pending)
        n = (len(data) // self.rows) * self.rows if whole_chunks_only else len(data)
        start = self.array.shape[0]  # a multiple of the chunk rows until the last write
        self.array.resize((start + n, *self.array.shape[1:]))
        self.array[start:start + n] = data[:n]
        rest = data[n:]
        self.pending = [rest] if len(rest) else []
        self.n_pending = len(rest)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


@dataclass(frozen=True)
class Features:
    """A store's content in memory: NaN rows where ``present`` is False."""

    subject_id: np.ndarray
    emb: np.ndarray
    present: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    attrs: dict[str, Any]


class FeatureStore:
    """Read-only access to a finished feature store (lazy; numpy or dask)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no feature store here")
        try:
            self.group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        except Exception as err:  # zarr raises several types for a broken store
            raise StoreError(f"{self.path}: not a readable Zarr v3 store ({err})") from err
        self.attrs = dict(self.group.attrs)
        if self.attrs.get("complete") is not True:
            raise StoreError(f"{self.path}: store is incomplete (no 'complete' flag); "
                             "it was not finished by its writer: delete it and rerun")
        for name in ("subject_id", "present", "status", "reason", "emb"):
            if name not in self.group:
                raise StoreError(f"{self.path}: array {name!r} missing")
        self._check_whole()

    def _check_whole(self) -> None:
        """The arrays as the writer left them, by what it recorded: a copy that lost a
        chunk (an interrupted ``cp -r`` or rsync) reads it as its fill value, so a lost
        ``present`` chunk opened as a store whose modality no subject has, silently."""
        g, n = self.group, self.group["subject_id"].shape[0]
        bad = [f"{a} of shape {g[a].shape}" for a in ("present", "status", "reason")
               if g[a].shape != (n,)]
        # a lost subject_id chunk reads as empty IDs (the writer refuses them): every ID
        # of a store whose IDs fit one chunk, refused downstream as listed "more than
        # once", and one new subject scored under ''
        if nameless := int((_strings(g["subject_id"][:]) == "").sum()):
            bad.append(f"{nameless} subject(s) without an ID")
        if g["emb"].shape != (n, *self.attrs.get("feature_shape", g["emb"].shape[1:])) \
                or g["emb"].dtype != np.float32:
            bad.append(f"emb of shape {g['emb'].shape} and type {g['emb'].dtype}")
        if not bad:
            present, status = self.present, _strings(g["status"][:])
            counts = {s: int((status == s).sum()) for s in STATUSES}
            recorded = self.attrs.get("status_counts")
            if (n != self.attrs.get("n_subjects", n)
                    or int(present.sum()) != self.attrs.get("n_present", int(present.sum()))
                    or (recorded is not None and counts != recorded)
                    or (present != (status == "ok")).any()):
                bad.append(f"{int(present.sum())} present and statuses {counts}, where the "
                           f"writer recorded {self.attrs.get('n_present')} present and "
                           f"{recorded}")
            # the writer writes each chunk of rows that holds a present subject's: one
            # lost reads as NaN, and stage 2 dropped the modality of those subjects
            emb = g["emb"]
            row_blocks = len(np.unique(np.flatnonzero(present) // max(emb.chunks[0], 1)))
            needed = row_blocks * int(np.prod([-(-d // c) for d, c in
                                               zip(emb.shape[1:], emb.chunks[1:], strict=True)]))
            if emb.nchunks_initialized < needed:
                bad.append(f"{emb.nchunks_initialized} chunks of emb where its present "
                           f"subjects fill {needed}")
        if bad:
            raise StoreError(f"{self.path}: its arrays disagree with its {n} subjects or "
                             f"with what its writer recorded ({'; '.join(bad)}): a damaged "
                             "copy (a chunk lost in transfer?); delete it and rerun")

    @property
    def subject_ids(self) -> np.ndarray:
        return _strings(self.group["subject_id"][:])

    @property
    def present(self) -> np.ndarray:
        return np.asarray(self.group["present"][:], dtype=bool)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.attrs["feature_shape"])

    @property
    def emb(self) -> zarr.Array:
        return self.group["emb"]

    def __len__(self) -> int:
        return self.group["subject_id"].shape[0]

    def to_numpy(self) -> Features:
        return Features(
            subject_id=self.subject_ids,
            emb=np.asarray(self.emb[:]),
            present=self.present,
            status=_strings(self.group["status"][:]),
            reason=_strings(self.group["reason"][:]),
            attrs=self.attrs,
        )

    def to_dask(self):
        import dask.array as da

        return da.from_zarr(self.emb)

    @property
    def has_bag(self) -> bool:
        return "bag" in self.group

    def bag(self, subject_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-item features (and coordinates) of one subject; empty when absent."""
        if not self.has_bag:
            raise StoreError(f"{self.path}: this store keeps no per-item bag")
        ids = self.subject_ids
        hits = np.flatnonzero(ids == str(subject_id))
        if not len(hits):
            raise StoreError(f"{self.path}: subject {subject_id!r} is not in this store")
        bag = self.group["bag"]
        lo, hi = (int(v) for v in bag["offsets"][hits[0]:hits[0] + 2])
        coords = bag["coords"][lo:hi] if "coords" in bag else None
        return np.asarray(bag["emb"][lo:hi]), coords


def open_store(path: str | Path) -> FeatureStore:
    return FeatureStore(path)


def read_features(path: str | Path) -> Features:
    """Load a whole store into memory (the common case for stage 2)."""
    return FeatureStore(path).to_numpy()
