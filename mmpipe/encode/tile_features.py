"""Tile features someone already extracted with CLAM, TRIDENT or STAMP (``tile_features``).

``setup`` reads every file's header (:func:`mmpipe.encoders.tile_features.inspect_tile_file`)
and checks that the readable files agree on how their features were made: each key of
:data:`~mmpipe.encoders.tile_features.PROVENANCE_KEYS` (the layout, feature encoder,
feature dimension, patch size, patch level, magnification, overlap, patch size in µm,
µm per pixel and coordinate unit), compared among the files that record it. Files that
disagree are not a few bad files but two extractions in one modality, whose features do
not share one space: the job stops with :class:`~mmpipe.errors.MixedTileFeaturesError`,
naming each differing value with an example subject and file, and writes nothing. The
agreed values go into the store's ``tile_features`` attribute (part of its encoding
signature: a model trained on one feature encoder's tiles refuses another's).

``run`` writes each subject's tiles as its bag (``bag/emb``, ``bag/coords``) and their
mean as its embedding, as the CLAM slide encoder does (:mod:`mmpipe.encode.slide`). A
file that cannot be used rejects its subject with the reason; when more than half of the
subjects with a file are rejected the job stops (:func:`mmpipe.encode.features.fail_if_most_rejected`).
"""

from __future__ import annotations

import logging
from collections import Counter

from mmpipe.encode.features import fail_if_most_rejected
from mmpipe.encoders.tile_features import (
    PROVENANCE_KEYS,
    TileFile,
    inspect_tile_file,
    read_tile_features,
)
from mmpipe.errors import InputError, MixedTileFeaturesError

log = logging.getLogger(__name__)

_EXAMPLES = 2


def _agreed(job, files: dict[str, TileFile]) -> dict:
    """The value of each provenance key among the files that record it; two values of
    one key stop the job."""
    agreed, conflicts = {}, []
    for key in PROVENANCE_KEYS:
        seen: dict[object, list[str]] = {}
        for sid, tf in files.items():
            if (value := tf.provenance.get(key)) is not None:
                seen.setdefault(value, []).append(sid)
        if len(seen) > 1:
            shown = ", ".join(
                f"{value!r} in {len(sids)} file(s), e.g. "
                + "; ".join(f"subject {s} ({files[s].path})" for s in sids[:_EXAMPLES])
                for value, sids in sorted(seen.items(), key=lambda kv: -len(kv[1])))
            conflicts.append(f"{key}: {shown}")
        agreed[key] = next(iter(seen), None)
    if conflicts:
        raise MixedTileFeaturesError(
            f"the {job.modality} tile feature files were made differently, so their features "
            f"cannot share one store: {' | '.join(conflicts)}. Give each extraction its own "
            "modality, or extract the odd files again the way the others were")
    return agreed


def setup(job, items) -> None:
    """Read the headers, check that the files agree, and fix the store's shapes."""
    errors: dict[str, str] = {}
    files: dict[str, TileFile] = {}
    for item in items:
        try:
            files[item.subject_id] = inspect_tile_file(item.source, job.cfg.get("feature_encoder"))
        except InputError as err:
            errors[item.subject_id] = err.reason
    job.state = {"files": files, "errors": errors}
    if not items and not job.rejected_paths:
        # a store of features 0 wide was written and could not be opened
        raise InputError(f"{job.modality}: no subject of the cohort has a tile feature file, "
                         "so nothing gives the store its feature dimension; drop the "
                         "modality, or give the files' folder")
    if not files:
        job.feature_shape = (0,)
        log.warning("%s: no readable tile feature file (%d with a path)", job.modality, len(items))
        return
    agreed = _agreed(job, files)
    dim = agreed["feature_dim"]
    job.feature_shape = job.bag_item_shape = (dim,)
    job.attrs["feature_shape_source"] = "the feature dimension of every readable file"
    job.attrs["tile_features"] = agreed
    job.attrs["tile_features_sources"] = {
        "files": len(files),
        "feature_encoder": dict(Counter(tf.encoder_source or "not recorded"
                                        for tf in files.values())),
        "not_recorded": {k: n for k in PROVENANCE_KEYS
                         if (n := sum(tf.provenance.get(k) is None for tf in files.values()))},
    }
    if agreed["feature_encoder"] is None:
        log.warning("%s: the files do not record their feature encoder; name it with "
                    "encoders.%s.feature_encoder", job.modality, job.cfg.get("name", "<name>"))
    if agreed["coords_unit"] is not None:
        job.bag_coord_dim = 2
        job.bag_coords = (f"(x, y) of each tile's top-left corner in {agreed['coords_unit']} "
                          f"({agreed['layout']} files)")
        for sid, tf in files.items():
            if tf.coords_file is None:
                errors[sid] = ("no tile coordinates: no CLAM h5_files/<slide>.h5 beside this "
                               ".pt file, and the modality's other files have coordinates")
    else:
        job.bag_coords = "none: the files hold no tile coordinates"


def run(job, items, writer, progress=None) -> None:
    files, errors = job.state["files"], job.state["errors"]
    rejected: dict[str, str] = {}
    for item in items:
        sid = item.subject_id
        try:
            if sid in errors:
                raise InputError(errors[sid], path=item.source)
            feats, coords = read_tile_features(files[sid])
        except InputError as err:  # the reason names the file: "file <path>: why"
            writer.reject(sid, str(err))
            rejected[sid] = str(err)
        else:
            if not writer.write(sid, feats.mean(axis=0), bag=feats, coords=coords):
                rejected[sid] = "rejected by the store writer"
        if progress is not None:
            progress.update(1)
    fail_if_most_rejected(job, len(items), rejected, settings="feature_encoder")
