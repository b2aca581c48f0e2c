"""Reading features someone already extracted (.npy / .npz / .pt / .pth).

Released cohorts often ship embeddings instead of images (MMIST-ccRCC: Med3D
vectors stored as ``arr_0`` of shape (1, 1, 512, 1), CLAM slide vectors (1, 1024)).
Every failure is an :class:`InputError` naming the file and the reason, so the
caller can record the subject's modality as rejected rather than crash or,
worse, store NaNs. Nothing is ever unpickled: ``.npy``/``.npz`` are read with
``allow_pickle=False`` and ``.pt`` with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mmpipe.errors import InputError, out_of_memory, read_error_words, shared_cause
from mmpipe.io.declared_size import beyond_file

log = logging.getLogger(__name__)

SUFFIXES = (".npy", ".npz", ".pt", ".pth")
# names the common writers use for the one array of a file
_DEFAULT_KEYS = ("arr_0", "features", "feats")


def _pick(names: list[str], key: str | None, path: Path) -> str:
    if key is not None:
        if key not in names:
            raise InputError(f"no array {key!r} in the file (it holds {names})", path)
        return key
    if len(names) == 1:
        return names[0]
    for k in _DEFAULT_KEYS:
        if k in names:
            return k
    if not names:
        raise InputError("the file holds no arrays", path)
    raise InputError(f"the file holds several arrays {names}; set the encoder's 'key' "
                     "to the one to use", path)


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        name = _pick(list(data.files), key, path)
        return np.asarray(data[name])


def _torch_array(path: Path, key: str | None, mmap: bool = False) -> Any:
    """The file's tensor (or the dict's ``key``), loaded with ``weights_only``; ``mmap``
    maps its storage instead of reading it."""
    import torch

    obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    if isinstance(obj, dict):
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor | np.ndarray)}
        if key is None and "features" in tensors:
            key = "features"
        obj = tensors[_pick(sorted(tensors), key, path)]
    if isinstance(obj, torch.Tensor | np.ndarray):
        return obj
    raise InputError(f"expected a tensor or a dict of tensors, found {type(obj).__name__}", path)


def _read_torch(path: Path, key: str | None) -> np.ndarray:
    obj = _torch_array(path, key)
    if isinstance(obj, np.ndarray):
        return obj
    return obj.detach().cpu().float().numpy() if obj.is_floating_point() else obj.numpy()


def _dtype_kind(obj: Any) -> str:
    """numpy's kind of the dtype :func:`_read_torch` would return for ``obj``."""
    import torch

    if isinstance(obj, np.ndarray):
        return obj.dtype.kind
    if obj.is_floating_point():
        return "f"  # read as float32
    try:
        return torch.empty(0, dtype=obj.dtype).numpy().dtype.kind
    except TypeError:  # no numpy dtype (e.g. quantised): _read_torch could not read it
        return "?"


def torch_feature_shape(path: str | Path, key: str | None = None) -> tuple[int, ...]:
    """The shape of a ``.pt`` file's features without reading their values: a zip-format
    file (``torch.save``'s since torch 1.6) is memory-mapped, so only its header and
    pickle are read; an older file, or one the filesystem cannot map, is read whole.
    Refused as :func:`load_feature_file` refuses it, except for the values (non-finite
    ones are found when the features are read)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("feature file not found", path)
    with _read_errors(path):
        with open(path, "rb") as fh:
            zip_format = fh.read(4) == b"PK\x03\x04"  # as torch.serialization tells it
        try:
            obj = _torch_array(path, key, mmap=zip_format)
        except RuntimeError:
            if not zip_format:
                raise
            obj = _torch_array(path, key)  # the same tensor, read instead of mapped
    if _dtype_kind(obj) not in "biuf":
        raise InputError(f"features have non-numeric dtype {obj.dtype}", path)
    return tuple(int(n) for n in obj.shape)


@contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """A reader's failure as the :class:`InputError` naming the file."""
    try:
        yield
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(_value_error_reason(exc, path), path) from exc
    except Exception as exc:  # truncated zip, bad header, unpickling errors of torch.load ...
        if out_of_memory(exc):
            # the machine's, which fails the job so that a larger node reruns it, unless
            # the file cannot hold what its header asks for (numpy says how much)
            declared = getattr(exc, "_total_size", None)
            why = beyond_file(int(declared), path) if declared is not None else None
            if why is None:
                raise
            raise InputError(f"cannot read features: {why}", path) from exc
        if shared_cause(exc):  # a mount that dropped, a full disk: the job's
            raise
        raise InputError(f"cannot read features: {read_error_words(exc)}", path) from exc


def _value_error_reason(exc: ValueError, path: Path) -> str:
    """numpy refuses pickles before unpickling anything (allow_pickle=False): say it plainly."""
    text = str(exc)
    if "Object arrays cannot be loaded" in text:
        return ("cannot read features: the file holds a pickled object array, not numbers; "
                "refused without unpickling it (np.load allow_pickle=False)")
    if "pickled" in text:
        with open(path, "rb") as fh:
            pickle_opcode = fh.read(1) == b"\x80"
        what = "a Python pickle" if pickle_opcode else "not a NumPy file (no .npy header)"
        return (f"cannot read features: the file is {what}, numpy would have to unpickle "
                "it; refused without unpickling it (np.load allow_pickle=False)")
    return f"cannot read features: {type(exc).__name__}: {exc}"


def as_float32(arr: np.ndarray, what: str, path: Path) -> np.ndarray:
    """Numeric features as the store's float32, refused where that would change them
    beyond its rounding: NaN or inf in the file, and finite values past float32's range
    (they became inf, and were reported as NaN or inf the file does not hold). Integers
    past 2^24 round as float64 values do, to float32's relative precision."""
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.isfinite(arr).sum())
        if bad:
            raise InputError(f"{what} hold {bad} non-finite value(s) (NaN/inf) of {arr.size}",
                             path)
        top = float(np.abs(arr).max()) if arr.size else 0.0
        if top > np.finfo(np.float32).max:
            raise InputError(f"{what} hold values past float32's range (largest magnitude "
                             f"{top:.3g}), which the store's float32 cannot hold", path)
    return arr.astype(np.float32, copy=False)


def load_feature_file(path: str | Path, key: str | None = None, flatten: bool = True) -> np.ndarray:
    """One subject's pre-extracted features as float32.

    ``key`` picks an array of an .npz or a tensor of a .pt dict; without it the
    single array is used, else ``arr_0`` / ``features`` / ``feats``. ``flatten``
    squeezes singleton axes ((1, 1, 512, 1) → (512,)), keeping at least one axis.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unsupported feature file type {suffix!r} (use one of {list(SUFFIXES)})", path)
    if not path.is_file():
        raise InputError("feature file not found", path)
    with _read_errors(path):
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            arr = _read_npz(path, key)
        else:
            arr = _read_torch(path, key)

    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"features have non-numeric dtype {arr.dtype}", path)
    if arr.size == 0:
        raise InputError(f"features are empty (shape {arr.shape})", path)
    arr = as_float32(arr, "features", path)
    if flatten:
        arr = np.squeeze(arr)
        if arr.ndim == 0:
            arr = arr.reshape(1)
    return np.ascontiguousarray(arr)
