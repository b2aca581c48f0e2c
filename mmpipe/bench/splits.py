"""Patient-level stratified train/val/test splits, one file per cohort and seed.

Every method of a cohort reads the same split file for a given seed, so methods are
compared on identical subjects. The split is done once per patient (``subject_id`` is
unique: a duplicate raises rather than risking the same patient on both sides).

Hierarchical stratification (MMARE thesis): the finest stratum is
label x modality pattern (e.g. ``1 | ct+wsi``), so every split sees the same mix of
labels *and* of missingness patterns. A stratum too small to put at least one subject
in every split falls back to label-only: all the small strata of one label are merged
into one stratum ``label | *`` which is then split the same way (it may itself be
small: label is the coarsest key, its members are then placed by rounding alone).
"Too small" means fewer than ``min_per_stratum`` subjects, by default
``ceil(1 / min(positive ratio))`` (10 for 6:1:3): the smallest size whose proportional
share of the smallest split is at least one.

Counts follow the ratios as closely as possible overall: the per-split totals are the
largest-remainder rounding of ``N * ratios``; each stratum gets the floor of its
proportional share, and the leftover subjects go to the (stratum, split) pairs with the
largest fractional remainders until every split reaches its total. A label with at
least as many subjects as there are parts then has one in each (a subject moved from the
part holding most of it, so a part's total moves by one for each label it lacked), so
validation and test can score it; a rarer label is said in a warning, and each run's
notes name the part that lacks it. Ties and the
members of each stratum are ordered by a ``numpy`` Generator seeded with ``seed``, so a
split is a pure function of (subjects, labels, patterns, seed, ratios): the same seed
gives the same file, another seed another split, and the input order does not matter.

Subjects of one ``split_group`` (:mod:`mmpipe.cohorts.split_groups`: two rows of one
patient) are drawn as one unit (:func:`_draw_units`), stratified by its members' most
common label and pattern: the ratios, the strata and a label in every part then count
units, so a part's subjects can move off the ratios by the groups' sizes. The split file
names each subject's group (a ``split_group`` column, only where the cohort has groups),
so that cross-validation inside the training part keeps the groups whole too.

A cohort may bring its own split (config ``split``, carried by the manifest's ``split``
column): :func:`user_split` keeps its test set for every seed and draws train/val inside
its training part the same way (val share ``ratios[1] / (ratios[0] + ratios[1])``), or
keeps all three parts when the user's split names a validation part. Each split file
records where it comes from in its parquet metadata (:func:`read_split_source`):
``drawn``, ``column <name>`` or ``files``, and which parts are fixed.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from mmpipe.cohorts.manifest_files import SPLIT_PARTS, fixed_parts
from mmpipe.cohorts.split_groups import SPLIT_GROUP
from mmpipe.errors import ConfigError, InputError
from mmpipe.fsutil import atomic_file

log = logging.getLogger(__name__)

SPLITS = SPLIT_PARTS  # the manifest's user split names the same parts
DRAWN = "drawn"
# parquet metadata keys of a split file: where the split comes from, what it fixes
SOURCE_KEY, FIXED_KEY = "mmpipe:split_source", "mmpipe:split_fixed"
DEFAULT_RATIOS = (0.6, 0.1, 0.3)
FALLBACK = "*"
_EPS = 1e-9
_STREAM = 0x5B117  # own random stream: split and mask draws of one seed are unrelated


def _check_ratios(ratios: Sequence[float]) -> np.ndarray:
    r = np.asarray(ratios, dtype=float)
    if r.shape != (3,) or (r < 0).any() or not math.isclose(r.sum(), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split ratios must be three non-negative numbers (train, val, test) "
                          f"summing to 1, got {list(ratios)}")
    if r[0] <= 0 or r[2] <= 0:
        raise ConfigError(f"split ratios {list(ratios)}: train and test need a positive share")
    return r / r.sum()


def _largest_remainder(total: int, ratios: np.ndarray) -> np.ndarray:
    quota = total * ratios
    counts = np.floor(quota + _EPS).astype(np.int64)
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[: max(total - int(counts.sum()), 0)]] += 1
    return counts


def _strata(y: list[str], patterns: list[str], threshold: int) -> list[str]:
    """Stratum key per subject: ``label|pattern``, or ``label|*`` where that is too small."""
    fine = [f"{lab}|{pat}" for lab, pat in zip(y, patterns, strict=True)]
    size = Counter(fine)
    keys = [k if size[k] >= threshold else f"{lab}|{FALLBACK}"
            for k, lab in zip(fine, y, strict=True)]
    merged = sorted({k for k in fine if size[k] < threshold})
    if merged:
        log.info("split: %d label x pattern stratum/strata smaller than %d fall back to "
                 "label-only strata: %s", len(merged), threshold,
                 ", ".join(f"{k} ({size[k]})" for k in merged))
    return keys


def stratified_split(subject_ids: Sequence[str], y: Sequence, patterns: Sequence[str], seed: int,
                     ratios: Sequence[float] = DEFAULT_RATIOS,
                     min_per_stratum: int | None = None,
                     groups: Sequence[str | None] | None = None) -> pl.DataFrame:
    """Assign every subject to ``train``, ``val`` or ``test`` (see the module docstring);
    the subjects of one of ``groups`` (None: its own) to one part (:func:`_draw_units`).

    Returns ``subject_id, split`` in the order of ``subject_ids``.
    """
    ids, labels, pats = _check_subjects(subject_ids, y, patterns)
    split = _draw_units(ids, labels, pats, groups, seed, _check_ratios(ratios), min_per_stratum)
    counts = {name: int((split == name).sum()) for name in SPLITS}
    log.info("split seed %d: %s", seed, counts)
    return _frame(ids, split, groups)


def _check_subjects(subject_ids: Sequence[str], y: Sequence, patterns: Sequence[str]
                    ) -> tuple[list[str], list[str], list[str]]:
    ids = [str(s) for s in subject_ids]
    labels = [str(v) for v in np.asarray(y).tolist()]
    pats = [str(p) for p in patterns]
    if not (len(ids) == len(labels) == len(pats)):
        raise ValueError(f"subject_ids, y and patterns differ in length "
                         f"({len(ids)}, {len(labels)}, {len(pats)})")
    dup = sorted(s for s, n in Counter(ids).items() if n > 1)
    if dup:
        raise InputError(f"duplicate subject_id(s) {dup[:10]}: splits are patient-level, "
                         "each patient must appear once")
    return ids, labels, pats


def group_names(groups: Sequence[str | None] | None, n: int) -> list[str | None]:
    """Each subject's split group as the splits read it: the name stripped, None where
    the subject has none (no value, or a blank one)."""
    if groups is None:
        return [None] * n
    names = [None if g is None else str(g).strip() or None for g in groups]
    if len(names) != n:
        raise ValueError(f"{n} subjects but {len(names)} split groups")
    return names


def _frame(ids: list[str], split: np.ndarray,
           groups: Sequence[str | None] | None = None) -> pl.DataFrame:
    """The split table; with a ``split_group`` column where the cohort has groups, so
    that cross-validation inside the training part keeps them whole as well
    (:func:`mmpipe.bench.selection.stratified_folds`)."""
    cols = {"subject_id": ids, "split": split.tolist()}
    schema = {"subject_id": pl.Utf8, "split": pl.Utf8}
    names = group_names(groups, len(ids))
    if any(names):
        cols[SPLIT_GROUP], schema[SPLIT_GROUP] = names, pl.Utf8
    return pl.DataFrame(cols, schema=schema)


def _draw(ids: list[str], labels: list[str], pats: list[str], seed: int, r: np.ndarray,
          min_per_stratum: int | None) -> np.ndarray:
    """The split name of every subject, drawn with the (normalised) ratios ``r``; a zero
    ratio gets no subject."""
    threshold = (int(min_per_stratum) if min_per_stratum is not None
                 else math.ceil(1 / r[r > 0].min() - 1e-9))
    keys = _strata(labels, pats, threshold)

    rng = np.random.default_rng([_STREAM, int(seed)])
    members: dict[str, list[int]] = defaultdict(list)
    for i in sorted(range(len(ids)), key=lambda i: ids[i]):  # input order does not matter
        members[keys[i]].append(i)
    names = sorted(members)
    sizes = np.array([len(members[k]) for k in names], dtype=np.int64)

    # per-split totals, then per-stratum floors plus leftovers by largest remainder
    totals = _largest_remainder(len(ids), r)
    quota = sizes[:, None] * r[None, :]
    base = np.floor(quota + _EPS).astype(np.int64)
    alloc = base.copy()
    need = totals - alloc.sum(axis=0)
    left = sizes - alloc.sum(axis=1)
    jitter = rng.random(quota.shape) * 1e-6  # seeded tie-break between equal remainders
    score = quota - base + jitter
    pairs = sorted(((s, k) for s in range(len(names)) for k in range(3) if r[k] > 0),
                   key=lambda sk: -score[sk])
    for s, k in pairs:  # at most one extra subject per (stratum, split) ...
        if left[s] and need[k] and alloc[s, k] == base[s, k]:
            alloc[s, k] += 1
            left[s] -= 1
            need[k] -= 1
    for s, k in pairs:  # ... unless the totals cannot be met otherwise
        while left[s] and need[k]:
            alloc[s, k] += 1
            left[s] -= 1
            need[k] -= 1
    assert not left.any() and not need.any()
    _every_label_in_every_part(alloc, [labels[members[k][0]] for k in names], r, seed)

    split = np.empty(len(ids), dtype=object)
    for s, key in enumerate(names):
        idx = np.asarray(members[key])[rng.permutation(sizes[s])]
        bounds = np.cumsum(alloc[s])
        for k, part in enumerate(np.split(idx, bounds[:-1])):
            split[part] = SPLITS[k]
    log.info("split seed %d: %d subjects over %d strata", seed, len(ids), len(names))
    return split


def _draw_units(ids: list[str], labels: list[str], pats: list[str],
                groups: Sequence[str | None] | None, seed: int, r: np.ndarray,
                min_per_stratum: int | None) -> np.ndarray:
    """:func:`_draw` over units: each group's subjects one unit, the others their own.
    A unit is named by its first subject ID and stratified by its members' most common
    label and pattern (ties: the first by ID), so the ratios, the strata and a label in
    every part hold over units; a cohort without groups draws exactly as :func:`_draw`."""
    names = group_names(groups, len(ids))
    members: dict[str, list[int]] = defaultdict(list)
    for i in sorted(range(len(ids)), key=lambda i: ids[i]):
        members[f"group:{names[i]}" if names[i] else f"subject:{ids[i]}"].append(i)
    units = list(members.values())
    if all(len(u) == 1 for u in units):
        return _draw(ids, labels, pats, seed, r, min_per_stratum)

    def common(values: list[str]) -> str:
        counts = Counter(values)
        return max(values, key=lambda v: counts[v])  # the first of the most common

    unit_split = _draw([ids[u[0]] for u in units], [common([labels[i] for i in u]) for u in units],
                       [common([pats[i] for i in u]) for u in units], seed, r, min_per_stratum)
    split = np.empty(len(ids), dtype=object)
    for u, part in zip(units, unit_split, strict=True):
        split[u] = part
    mixed = sum(len({labels[i] for i in u}) > 1 for u in units)
    log.info("split seed %d: %d subjects in %d split groups drawn as units (%d of mixed "
             "labels)", seed, sum(len(u) for u in units if len(u) > 1),
             sum(len(u) > 1 for u in units), mixed)
    return split


def _every_label_in_every_part(alloc: np.ndarray, stratum_labels: list[str], r: np.ndarray,
                               seed: int) -> None:
    """Give each part with a positive ratio at least one subject of every label that has
    as many subjects as there are such parts, moving one at a time from the part holding
    most of that label (its largest stratum there): placed by rounding alone, 6 positives
    in 100 left validation without one in 4 seeds of 5, so its AUC was NaN and early
    stopping and the trial choice had nothing to go by. A label with fewer subjects than
    parts leaves a part without it, said in a warning. A part's total moves by one for each
    label it lacked."""
    parts = [k for k in range(3) if r[k] > 0]
    for label in sorted(set(stratum_labels)):
        rows = [s for s, lab in enumerate(stratum_labels) if lab == label]
        if alloc[rows].sum() < len(parts):
            empty = [SPLITS[k] for k in parts if not alloc[rows, k].sum()]
            log.warning("split seed %d: label %r has %d subject(s), fewer than the %d parts: "
                        "%s get(s) none of it (its metrics there are NaN)", seed, label,
                        int(alloc[rows].sum()), len(parts), ", ".join(empty))
            continue
        for k in parts:
            if alloc[rows, k].sum():
                continue
            donor = max(parts, key=lambda j: (alloc[rows, j].sum(), -j))
            s = max(rows, key=lambda s: (alloc[s, donor], -s))
            alloc[s, donor] -= 1
            alloc[s, k] += 1


def user_split(subject_ids: Sequence[str], y: Sequence, patterns: Sequence[str],
               parts: Sequence[str | None], seed: int, ratios: Sequence[float] = DEFAULT_RATIOS,
               min_per_stratum: int | None = None,
               groups: Sequence[str | None] | None = None) -> pl.DataFrame:
    """The split of a cohort that brings its own (``parts``: each subject's part in it).

    Its test subjects are the test set for every seed. When it names a validation part,
    its train and val parts are kept as they are too (every seed, the same three parts);
    otherwise its training part is split into train and val for ``seed`` as
    :func:`stratified_split` splits a cohort (label x pattern strata), with the val share
    ``ratios[1] / (ratios[0] + ratios[1])``. Returns ``subject_id, split`` in the order of
    ``subject_ids``.
    """
    ids, labels, pats = _check_subjects(subject_ids, y, patterns)
    given = [None if p is None else str(p) for p in parts]
    if len(given) != len(ids):
        raise ValueError(f"{len(ids)} subjects but {len(given)} parts")
    none = [i for i, p in zip(ids, given, strict=True) if p is None]
    if none:
        raise InputError(f"subject(s) {none[:10]} are in no part of the cohort's split")
    bad = sorted({p for p in given if p not in SPLITS})
    if bad:
        raise InputError(f"unknown split part(s) {bad} (known: {list(SPLITS)})")
    for part in ("train", "test"):
        if part not in given:
            raise InputError(f"the cohort's split puts no labelled subject in {part!r}")
    split = np.array(given, dtype=object)
    if fixed_parts(given) != SPLITS:
        r = _check_ratios(ratios)
        inner = np.array([r[0], r[1], 0.0]) / (r[0] + r[1])
        train = [i for i, p in enumerate(given) if p == "train"]
        split[train] = _draw_units([ids[i] for i in train], [labels[i] for i in train],
                                   [pats[i] for i in train],
                                   None if groups is None else [groups[i] for i in train],
                                   seed, inner, min_per_stratum)
    _warn_split_groups(ids, split, groups, seed)
    counts = {name: int((split == name).sum()) for name in SPLITS}
    log.info("split seed %d: %s fixed by the cohort's split, %s", seed,
             ", ".join(fixed_parts(given)), counts)
    return _frame(ids, split, groups)


def _warn_split_groups(ids: list[str], split: np.ndarray,
                       groups: Sequence[str | None] | None, seed: int) -> None:
    """A group the cohort's own split puts in two parts stays so (the user's parts are
    kept as given), said in a warning."""
    parts: dict[str, set[str]] = defaultdict(set)
    for i, name in enumerate(group_names(groups, len(ids))):
        if name:
            parts[name].add(split[i])
    for name in sorted(g for g, p in parts.items() if len(p) > 1):
        log.warning("split seed %d: group %r lies in parts %s, as the cohort's own split "
                    "places it; kept as given", seed, name, sorted(parts[name]))


def write_split(df: pl.DataFrame, path: str | Path, *, source: str = DRAWN,
                fixed: Sequence[str] = ()) -> Path:
    """Write a split atomically (``subject_id, split``, and ``split_group`` where the
    cohort has groups), with where it comes from (``drawn``, ``column <name>``,
    ``files``) and the parts it fixes for every seed in the parquet metadata: the
    columns stay as stage 2 reads them."""
    _check_split_frame(df, path)
    columns = ["subject_id", "split"] + [SPLIT_GROUP] * (SPLIT_GROUP in df.columns)
    with atomic_file(path) as tmp:
        df.select(columns).write_parquet(
            tmp, metadata={SOURCE_KEY: source, FIXED_KEY: ",".join(fixed)})
    return Path(path)


def read_split_source(path: str | Path) -> dict[str, str | list[str]]:
    """``{"source": ..., "fixed": [...]}`` of a split file (see :func:`write_split`)."""
    meta = pl.read_parquet_metadata(path)
    fixed = meta.get(FIXED_KEY, "")
    # a file written before splits recorded their source was always drawn
    return {"source": meta.get(SOURCE_KEY, DRAWN), "fixed": fixed.split(",") if fixed else []}


def split_groups(split: pl.DataFrame) -> dict[str, str]:
    """subject_id -> split group of the subjects of a split table that have one."""
    if SPLIT_GROUP not in split.columns:
        return {}
    return {s: g for s, g in zip(split["subject_id"], split[SPLIT_GROUP], strict=True) if g}


def read_split(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError("split file not found; build it first (the split rule)", path=path)
    df = pl.read_parquet(path)
    _check_split_frame(df, path)
    return df


def _check_split_frame(df: pl.DataFrame, path: str | Path) -> None:
    if not {"subject_id", "split"} <= set(df.columns):
        raise InputError(f"split table needs columns subject_id and split, has {df.columns}",
                         path=path)
    bad = sorted(set(df["split"].to_list()) - set(SPLITS))
    if bad:
        raise InputError(f"unknown split name(s) {bad} (known: {list(SPLITS)})", path=path)
    if df["subject_id"].n_unique() != df.height:
        raise InputError("split table lists a subject twice", path=path)
