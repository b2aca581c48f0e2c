"""Pre-extracted features imported as they are (``precomputed`` encoder).

The cohort's feature shape (every stored embedding has it) comes from the encoder's
``feature_shape`` when the config gives one, else it is the most common shape among
the files that load cleanly: one wrong file, first or not, is rejected on its own and
never decides the shape for the others. A tie between shapes stops the job with
:class:`FeatureCohortError` asking for ``feature_shape``: no rule could tell the good
files from the bad ones, and guessing would reject good subjects.

Each file is read once when the shape is given; otherwise the shape scan keeps the
arrays it loads, up to :data:`CACHE_BYTES` in all, for the write pass, and only files
beyond that budget are read a second time (a large cohort is never held in memory).
A file that fails in the scan is not read again: its reason is kept.

When more than half of the subjects with a feature file are rejected, the job fails
with :class:`FeatureCohortError` (counts and example reasons) instead of writing a
store that is mostly holes: that is a wrong ``key``/``flatten``/``feature_shape`` or
a wrong folder, not a few bad subjects.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from mmpipe.errors import ConfigError, InputError

log = logging.getLogger(__name__)

# Arrays kept between the shape scan and the write pass (bytes, all subjects together).
CACHE_BYTES = 256 * 2**20
# Rejected share of the subjects with a file above which the job fails.
MAX_REJECTED_SHARE = 0.5
_EXAMPLES = 3


class FeatureCohortError(InputError):
    """Most of a cohort's feature files are unusable: the job stops instead of writing."""


def _load(item, cfg: dict):
    from mmpipe.encoders.precomputed import load_feature_file

    return load_feature_file(item.source, key=cfg.get("key"), flatten=cfg.get("flatten", True))


def _config_shape(cfg: dict) -> tuple[int, ...] | None:
    shape = cfg.get("feature_shape")
    if shape is None:
        return None
    shape = tuple(int(v) for v in shape)
    if not shape or min(shape) < 1:
        raise ConfigError(f"encoder {cfg.get('name', '')!r}: feature_shape must be a non-empty "
                          f"list of positive integers, got {list(shape)}")
    if cfg.get("flatten", True) and len(shape) > 1 and 1 in shape:
        raise ConfigError(f"encoder {cfg.get('name', '')!r}: feature_shape {list(shape)} has "
                          "singleton axes, but flatten: true squeezes them from every file; "
                          "give the squeezed shape or set flatten: false")
    return shape


def _majority_shape(shapes: dict[str, tuple[int, ...]], job) -> tuple[tuple[int, ...], str]:
    """The most common shape and how it was chosen; a tie is an error."""
    counts = Counter(shapes.values())
    top = max(counts.values())
    tied = sorted(s for s, n in counts.items() if n == top)
    if len(tied) > 1:
        raise FeatureCohortError(
            f"{job.modality} feature files: shapes {tied} are equally common ({top} files "
            f"each), so nothing tells the right files from the wrong ones; set "
            f"encoders.{job.cfg.get('name', '<name>')}.feature_shape to the right shape")
    return tied[0], f"most common shape: {top} of {len(shapes)} readable files"


def setup(job, items) -> None:
    """Fix the cohort's feature shape: from config, else the majority of readable files."""
    job.state = {"arrays": {}, "errors": {}}
    shape = _config_shape(job.cfg)
    if shape is not None:
        job.feature_shape = shape
        job.attrs["feature_shape_source"] = "config feature_shape"
        return
    arrays, errors = job.state["arrays"], job.state["errors"]
    shapes: dict[str, tuple[int, ...]] = {}
    cached = 0
    for item in items:
        try:
            arr = _load(item, job.cfg)
        except InputError as err:
            errors[item.subject_id] = err.reason
            continue
        shapes[item.subject_id] = arr.shape
        if cached + arr.nbytes <= CACHE_BYTES:
            arrays[item.subject_id] = arr
            cached += arr.nbytes
    if not items and not job.rejected_paths:
        # a store of features 0 wide was written and could not be opened
        raise FeatureCohortError(
            f"{job.modality}: no subject of the cohort has a feature file, so nothing gives "
            f"the store its feature shape; set encoders.{job.cfg.get('name', '<name>')}."
            "feature_shape to store every subject as absent, or drop the modality")
    if not shapes:
        job.feature_shape = (0,)
        job.attrs["feature_shape_source"] = "no readable feature file"
        log.warning("%s: no readable feature file at all (%d with a path)", job.modality,
                    len(items))
        return
    job.feature_shape, how = _majority_shape(shapes, job)
    job.attrs["feature_shape_source"] = how
    log.info("%s: feature shape %s (%s); %d of %d files kept in memory for writing",
             job.modality, job.feature_shape, how, len(arrays), len(items))


def fail_if_most_rejected(job, n_items: int, rejected: dict[str, str],
                          settings: str = "key, flatten and feature_shape") -> None:
    """Stop the job when more than half of the subjects with a file were rejected, here
    (``n_items`` read, ``rejected``) or by the adapter (``job.rejected_paths``: a path with
    no file at it, as a wrong folder leaves every path); ``settings`` are the encoder
    settings the message asks the user to check."""
    rejected = {**job.rejected_paths, **rejected}
    n_items += len(job.rejected_paths)
    if not n_items or len(rejected) <= MAX_REJECTED_SHARE * n_items:
        return
    kinds = Counter(_reason_kind(r) for r in rejected.values())
    examples = "; ".join(f"{sid}: {reason}" for sid, reason in list(rejected.items())[:_EXAMPLES])
    raise FeatureCohortError(
        f"{len(rejected)} of {n_items} subjects with a {job.modality} feature file were "
        f"rejected (more than {MAX_REJECTED_SHARE:.0%}), so no store is written: "
        + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        + f". Cohort feature shape {job.feature_shape} "
        f"({job.attrs.get('feature_shape_source', '?')}). Examples: {examples}. "
        f"Check the files and the encoder's {settings} "
        f"(encoders.{job.cfg.get('name', '<name>')}).")


def _reason_kind(reason: str) -> str:
    """A short category of a rejection reason, for the summary of a failed job."""
    for needle, kind in (("differs from the cohort", "wrong shape"),
                         ("non-finite", "non-finite values"), ("zero tiles", "zero tiles"),
                         ("features are empty", "empty"), ("not an HDF5", "not HDF5"),
                         ("is missing", "missing dataset"),
                         ("pickled object array", "pickled objects"),
                         ("not found", "file not found"), ("cannot read", "unreadable")):
        if needle in reason:
            return kind
    return "other"


def run(job, items, writer, progress=None) -> None:
    state = job.state or {"arrays": {}, "errors": {}}
    arrays, errors = state["arrays"], state["errors"]
    how = job.attrs.get("feature_shape_source", "")
    rejected: dict[str, str] = {}
    for item in items:
        sid = item.subject_id
        try:
            if sid in errors:
                raise InputError(errors.pop(sid), path=item.source)
            arr = arrays.pop(sid, None)
            if arr is None:
                arr = _load(item, job.cfg)
            if arr.shape != writer.feature_shape:
                raise InputError(f"feature shape {arr.shape} differs from the cohort's "
                                 f"{writer.feature_shape} ({how})", path=item.source)
        except InputError as err:
            writer.reject(sid, str(err))
            rejected[sid] = str(err)
        else:
            if not writer.write(sid, np.asarray(arr)):
                rejected[sid] = "rejected by the store writer"
        if progress is not None:
            progress.update(1)
    fail_if_most_rejected(job, len(items), rejected)
