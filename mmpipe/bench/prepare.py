"""The files every method of a cohort shares: one split per seed, one mask per
(scenario, rate, seed). Built from the manifest, so they exist before any method runs
and do not change when a method or an encoder does."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from mmpipe.bench.missingness import (
    NEEDS_SPLIT,
    realised_rate,
    removal_record,
    scenario_mask,
    write_mask,
)
from mmpipe.bench.splits import DRAWN, read_split, stratified_split, user_split, write_split
from mmpipe.cohorts.manifest_files import SPLIT, fixed_parts, modality_presence, read_manifest
from mmpipe.cohorts.split_groups import SPLIT_GROUP

log = logging.getLogger(__name__)


def _presence(cohort_dir: Path) -> tuple[pl.DataFrame, dict, pl.DataFrame, list[str]]:
    """(manifest, its JSON, subject_id + one bool column per modality, modality names).

    Modalities in name order, whatever order the config (and so the manifest) lists them
    in: the split's strata and the masks' random draws follow this order, and a cohort
    is the same cohort however its config is written."""
    manifest, meta = read_manifest(cohort_dir)
    modalities = sorted(meta["modalities"])
    presence = modality_presence(manifest, meta).select("subject_id", *modalities)
    return manifest, meta, presence, modalities


def make_split(cohort_dir: str | Path, label: str, seed: int, ratios, out: str | Path) -> pl.DataFrame:
    """Patient-level stratified split of the subjects that have ``label`` (a manifest's
    ``split_group`` kept in one part); when the cohort brings its own split (the
    manifest's ``split`` column), its test set (and val set, when it names one) is kept
    for every seed. The file records which."""
    manifest, meta, presence, modalities = _presence(Path(cohort_dir))
    user = meta.get("split")
    has_label = manifest[label].is_not_null().to_numpy()
    if not has_label.all():
        log.warning("%d subjects without %r are left out of the split",
                    int((~has_label).sum()), label)
    labelled = manifest.filter(has_label)
    patterns = ["+".join(m for m, p in zip(modalities, row, strict=True) if p)
                for row in presence.filter(has_label).select(modalities).iter_rows()]
    ids, y = labelled["subject_id"].to_list(), labelled[label].to_numpy()
    groups = labelled[SPLIT_GROUP].to_list() if SPLIT_GROUP in labelled.columns else None
    if user is None:
        split = stratified_split(ids, y, patterns, seed, ratios=tuple(ratios), groups=groups)
        write_split(split, out, source=DRAWN)
        return split
    parts = labelled[SPLIT].to_list()
    split = user_split(ids, y, patterns, parts, seed, ratios=tuple(ratios), groups=groups)
    write_split(split, out, source=user["source"], fixed=fixed_parts(parts))
    return split


def make_mask(cohort_dir: str | Path, scenario: str, rate: float, seed: int,
              out: str | Path, options: dict | None = None,
              split_path: str | Path | None = None, label: str | None = None) -> np.ndarray:
    """The scenario's presence mask over every cohort modality (natural availability
    AND the scenario's removals); stage-2 runs AND it with their stores' presence.
    ``options`` are the scenario's config options; ``split_path`` the seed's split, for
    scenarios that treat its parts apart (:data:`NEEDS_SPLIT`); ``label`` the benchmark's
    label: a rate is met on the subjects that have it (the others are in no split)."""
    manifest, _, presence, modalities = _presence(Path(cohort_dir))
    scored = None if label is None else manifest[label].is_not_null().to_numpy()
    present = presence.select(modalities).to_numpy().astype(bool)
    test = parts = None
    if split_path is not None:
        split = read_split(split_path)
        where = dict(zip(split["subject_id"], split["split"], strict=True))
        parts = np.array([where.get(s) or "" for s in presence["subject_id"]])
        test = parts == "test"
    elif scenario in NEEDS_SPLIT:
        raise ValueError(f"scenario {scenario!r} needs the seed's split")
    # drawn in subject-ID order, as the split is: a reordered source table must not redraw
    # any subject's mask (a subject added redraws the masks of the subjects after it in
    # that order, as it redraws the split)
    ids = presence["subject_id"].cast(str).to_list()
    order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
    drawn = scenario_mask(present[order], scenario, rate, seed, cohort_modalities=modalities,
                          test=None if test is None else test[order],
                          parts=None if parts is None else parts[order],
                          scored=None if scored is None else scored[order], **(options or {}))
    mask = np.empty_like(drawn)
    mask[order] = drawn
    realised = realised_rate(scenario, present, mask, cohort_modalities=modalities,
                             scored=scored, test=test, parts=parts, **(options or {}))
    write_mask(ids, mask, modalities, out,
               record=removal_record(present, mask, scored, realised, options))
    return mask
