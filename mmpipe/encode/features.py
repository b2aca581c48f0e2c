"""Pre-extracted features imported as they are (``precomputed`` encoder)."""

from __future__ import annotations

import logging

from mmpipe.errors import InputError

log = logging.getLogger(__name__)


def load_all_shapes(items, cfg: dict):
    """Load the first readable file to learn the feature shape; returns (shape, cache)."""
    from mmpipe.encoders.precomputed import load_feature_file

    for item in items:
        try:
            arr = load_feature_file(item.source, key=cfg.get("key"), flatten=cfg.get("flatten", True))
        except InputError:
            continue
        return arr.shape, {item.subject_id: arr}
    return None, {}


def encode_features(items, writer, cfg: dict, first: dict, progress=None) -> None:
    from mmpipe.encoders.precomputed import load_feature_file

    for item in items:
        try:
            arr = first.get(item.subject_id)
            if arr is None:
                arr = load_feature_file(item.source, key=cfg.get("key"),
                                        flatten=cfg.get("flatten", True))
            if arr.shape != writer.feature_shape:
                raise InputError(f"feature shape {arr.shape} differs from the cohort's "
                                 f"{writer.feature_shape}", path=item.source)
        except InputError as err:
            err.for_subject(item.subject_id)
            log.warning("rejected %s", err)
            writer.mark(item.subject_id, "rejected", err.reason)
        else:
            writer.write(item.subject_id, arr)
        if progress is not None:
            progress.update(1)
