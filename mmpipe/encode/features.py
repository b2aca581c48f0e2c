"""Pre-extracted features imported as they are (``precomputed`` encoder)."""

from __future__ import annotations

import logging

from mmpipe.errors import InputError

log = logging.getLogger(__name__)


def _load(item, cfg: dict):
    from mmpipe.encoders.precomputed import load_feature_file

    return load_feature_file(item.source, key=cfg.get("key"), flatten=cfg.get("flatten", True))


def setup(job, items) -> None:
    """Learn the feature shape from the first readable file."""
    job.state = {}
    for item in items:
        try:
            arr = _load(item, job.cfg)
        except InputError:
            continue
        job.feature_shape, job.state = arr.shape, {item.subject_id: arr}
        return
    job.feature_shape = (0,)
    log.warning("%s: no readable feature file at all", job.modality)


def run(job, items, writer, progress=None) -> None:
    for item in items:
        try:
            arr = job.state.get(item.subject_id)
            if arr is None:
                arr = _load(item, job.cfg)
            if arr.shape != writer.feature_shape:
                raise InputError(f"feature shape {arr.shape} differs from the cohort's "
                                 f"{writer.feature_shape}", path=item.source)
        except InputError as err:
            writer.reject(item.subject_id, err.reason)
        else:
            writer.write(item.subject_id, arr)
        if progress is not None:
            progress.update(1)
