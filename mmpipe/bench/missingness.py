"""Missingness scenarios as presence masks, one file per (scenario, rate, seed).

A scenario mask is a bool ``[N, M]`` array over every subject of a cohort (all splits);
a method sees ``natural presence AND mask`` (:meth:`BenchData.with_present`). Masks are
written once and read by every method, so all methods face the same missing entries.

- ``natural``: the cohort as it is (the mask is the natural presence).
- ``mcar``: missing completely at random on top of the natural missingness, applied
  independently per modality to train, val and test alike, keeping at least one
  modality per subject (MMARE thesis 5.3); rates 0.2 / 0.4 / 0.6 by default (config).

- ``completeness`` (HAM, "No Modality Left Behind" 4.1): the value is the share of
  training subjects kept complete (1.0 / 0.75 / 0.5 / 0.25; the paper's "trained on a
  dataset with 25 % completeness", 75 % of the training data missing modalities). Among
  the training subjects that have every modality of ``modalities`` (config; default
  all), exactly that share stays complete and the others lose one of those modalities
  (``drop: one``, the paper's main setting) or a uniform number 1..k−1 of them (``drop:
  many``); the validation split is drawn the same way on its own (model selection sees
  data as incomplete as training's), and the test split is left as it is, so the subset
  evaluation of HAM's table 2 takes every subset from the test subjects that have it.
  (Until this version the level was drawn over train, val and test together: the test
  split lost modalities too, and the training split met the level only on average.)
- ``testmiss`` (bidirectional distillation's protocol): training and validation as they
  are; in the test split, exactly that share of the subjects having ``modality`` lose
  it (0 / 0.5 / 0.8 in the paper). Subjects for whom it is the only modality keep it
  (counted in the log).

A scenario is a function ``(present, value, seed, **context) -> mask``; the context
holds the cohort's column names (``cohort_modalities``), the seed's split (``parts``: each
row's part, and its ``test`` rows), and the scenario's options from the config.

Subset evaluation (HAM table 2): a trained model is also evaluated on every non-empty
modality subset of the test set (:func:`modality_subsets`, :func:`subset_mask`).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmpipe.errors import ConfigError, InputError
from mmpipe.fsutil import write_parquet

log = logging.getLogger(__name__)

SUBJECT = "subject_id"
DEFAULT_MCAR_RATES = (0.2, 0.4, 0.6)
# own random streams: mask and split draws of one seed are unrelated
_MCAR_STREAM = 0x3CA4
_COMPLETENESS_STREAM = 0x4A11
_TESTMISS_STREAM = 0x7E57
# parquet metadata key of a mask file's removal record
RECORD_KEY = "mmpipe.removed"


def _check_present(present: np.ndarray) -> np.ndarray:
    present = np.asarray(present)
    if present.ndim != 2 or present.dtype != bool:
        raise ValueError(f"presence must be a bool [N, M] array, got {present.dtype} "
                         f"{present.shape}")
    return present


def _mcar_at(present: np.ndarray, u: np.ndarray, p: float, scored: np.ndarray
             ) -> tuple[np.ndarray, int]:
    """Drop present entries with ``u < p``; a subject left with nothing gets back its
    dropped entry with the largest ``u``. Returns the mask and the number removed from
    the ``scored`` rows."""
    mask = present & (u >= p)
    emptied = np.flatnonzero(present.any(axis=1) & ~mask.any(axis=1))
    if len(emptied):
        cols = np.argmax(np.where(present[emptied], u[emptied], -1.0), axis=1)
        mask[emptied, cols] = True
    return mask, int(present[scored].sum() - mask[scored].sum())


def _scored_rows(present: np.ndarray, scored: np.ndarray | None) -> np.ndarray:
    """The rows a rate is met on: the subjects the benchmark scores (those with its
    label), every row when not given."""
    if scored is None:
        return np.ones(len(present), dtype=bool)
    scored = np.asarray(scored, dtype=bool)
    if scored.shape != (len(present),):
        raise ValueError(f"scored rows have shape {scored.shape}, presence {present.shape}")
    return scored


def max_mcar_rate(present: np.ndarray) -> float:
    """Largest share of present entries MCAR can remove while keeping one per subject."""
    k = _check_present(present).sum(axis=1)
    return float((k[k > 0] - 1).sum() / k.sum()) if k.sum() else 0.0


def mcar_mask(present: np.ndarray, rate: float, seed: int, *, calibrate: bool = True,
              scored: np.ndarray | None = None, **_) -> np.ndarray:
    """Drop present entries completely at random, never emptying a subject.

    One uniform draw ``u`` per (subject, modality) entry: a present entry is dropped when
    ``u < p``, independently of every other entry and of the data; a subject left with
    nothing gets back its dropped entry with the largest ``u`` (uniformly one of its
    dropped modalities). A modality a subject does not have is never added, and only
    present entries count in the rate.

    The restores would make the share removed fall short of ``rate`` if ``p = rate``
    (``calibrate=False``). With ``calibrate=True`` (default) the threshold ``p`` is
    calibrated on this seed's draws: the mask only shrinks as ``p`` grows, and each step
    of ``p`` past one ``u`` removes one entry or none (when it empties a subject the
    restore puts that very entry back), so a bisection on ``p`` makes the realised share
    of removed present entries equal ``rate`` to within one entry. Rates above
    :func:`max_mcar_rate` cannot be met (single-modality subjects lose nothing): all
    subjects then keep exactly one modality and a warning gives the realised rate.
    ``scored`` (bool per row) names the subjects the rate is met on, the ones the
    benchmark scores: subjects without the label are in no split, and counting their
    entries put the share removed from the scored ones off the rate (0.27 for 0.2 with
    as many unlabelled single-modality subjects as labelled ones). They are masked with
    the same threshold.

    Masks of one seed are nested: a higher rate removes a superset of the entries a
    lower rate removes.
    """
    present = _check_present(present)
    if (why := rate_problem("mcar", rate)) is not None:
        raise ConfigError(why)
    u = np.random.default_rng([_MCAR_STREAM, int(seed)]).random(present.shape)
    scored = _scored_rows(present, scored)
    n_present = int(present[scored].sum())
    if not calibrate or n_present == 0 or rate == 0:
        p = float(rate)
    else:
        target = rate * n_present
        lo, hi = 0.0, 1.0 + 1e-12
        if _mcar_at(present, u, hi, scored)[1] < target:
            log.warning("MCAR rate %.3f is not reachable while keeping one modality per "
                        "subject; at most %.3f of the present entries can be removed", rate,
                        max_mcar_rate(present[scored]))
            lo = hi
        while hi - lo > 1e-12:  # share(lo) < target <= share(hi)
            mid = (lo + hi) / 2
            if _mcar_at(present, u, mid, scored)[1] < target:
                lo = mid
            else:
                hi = mid
        below = _mcar_at(present, u, lo, scored)[1]
        above = _mcar_at(present, u, hi, scored)[1]
        p = lo if target - below < above - target else hi
    mask, removed = _mcar_at(present, u, p, scored)
    log.info("MCAR rate %.2f seed %d: threshold %.4f, %.4f of %d present entries removed",
             rate, seed, p, removed / max(n_present, 1), n_present)
    return mask


# the values each scenario's rate takes, (low, high, low included, high included), and
# what the rate is
RATE_RANGES: dict[str, tuple[float, float, bool, bool, str]] = {
    "natural": (0.0, 0.0, True, True, "no rate: natural missingness is the data's"),
    "mcar": (0.0, 1.0, True, False, "the share of present entries removed"),
    "completeness": (0.0, 1.0, False, True, "the share of complete training subjects"),
    "testmiss": (0.0, 1.0, True, True, "the share of test subjects losing the modality"),
}


def rate_problem(scenario: str, rate: float) -> str | None:
    """Why ``rate`` is not a rate of ``scenario`` (its :data:`RATE_RANGES`), or None."""
    low, high, low_in, high_in, what = RATE_RANGES[scenario]
    if (low < rate or (low_in and rate == low)) and (rate < high or (high_in and rate == high)):
        return None
    if scenario == "natural":
        return "natural missingness has no rate (give [0.0])"
    interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
    return f"{scenario}: {what} must be in {interval}, got {rate}"


def scenario_columns(scenario: str, cohort_modalities: Sequence[str],
                     names: Sequence[str] | None) -> list[int]:
    """The columns a scenario's ``modalities`` (or ``modality``) option names, in cohort
    order; a ConfigError for an unknown or repeated name, or a completeness scenario over
    fewer than two modalities."""
    mods = list(cohort_modalities)
    names = mods if names is None else list(names)
    unknown = [m for m in names if m not in mods]
    if unknown:
        raise ConfigError(f"{scenario}: unknown modalities {unknown} (cohort has {mods})")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:  # [wsi, wsi] passed as two modalities and made one incomplete
        raise ConfigError(f"{scenario}: modalities {repeated} named twice")
    if scenario == "completeness" and len(names) < 2:
        raise ConfigError("completeness needs at least two modalities to make subjects "
                          "incomplete")
    # in cohort order whatever the order of the names: the draws must not depend on it
    return sorted(mods.index(m) for m in names)


def natural_mask(present: np.ndarray, rate: float = 0.0, seed: int = 0, **_) -> np.ndarray:
    """The natural availability, unchanged (``rate`` and ``seed`` are ignored)."""
    return _check_present(present).copy()


# the parts of a split a completeness level is drawn in, each on its own
COMPLETENESS_PARTS = ("train", "val")


def completeness_mask(present: np.ndarray, complete: float, seed: int, *,
                      cohort_modalities: Sequence[str],
                      parts: np.ndarray | None = None,
                      modalities: Sequence[str] | None = None,
                      drop: str = "one", scored: np.ndarray | None = None,
                      **_) -> np.ndarray:
    """HAM's completeness level: ``complete`` is the share of the complete subjects left
    complete in the training split, and in the validation split on its own, among the
    ``scored`` ones (see :func:`mcar_mask`); the test split and the rows in no split are
    left as they are. ``parts``: each row's part of the seed's split.

    One seed's levels are nested in the training part (a lower level makes incomplete the
    same subjects first, losing the same modalities, then more); the validation part's are
    not, since its draw follows the training part's from one generator, whose draws number
    by the level. MCAR's masks are nested in every part."""
    present = _check_present(present)
    if (why := rate_problem("completeness", complete)) is not None:
        raise ConfigError(why)
    if drop not in ("one", "many"):
        raise ConfigError(f"completeness: drop must be 'one' or 'many', got {drop!r}")
    cols = scenario_columns("completeness", cohort_modalities, modalities)
    if parts is None:
        raise ValueError("completeness needs each row's part of the seed's split")
    parts = np.asarray(parts)
    rng = np.random.default_rng([_COMPLETENESS_STREAM, int(seed)])
    complete_rows = present[:, cols].all(axis=1) & _scored_rows(present, scored)
    mask = present.copy()
    for part in COMPLETENESS_PARTS:
        eligible = np.flatnonzero(complete_rows & (parts == part))
        n_drop = int(round((1 - complete) * len(eligible)))
        for row in rng.permutation(eligible)[:n_drop]:
            k = 1 if drop == "one" else int(rng.integers(1, len(cols)))
            mask[row, rng.choice(cols, size=k, replace=False)] = False
        log.info("completeness %.2f seed %d: %d of %d complete %s subjects made incomplete "
                 "(drop %s)", complete, seed, n_drop, len(eligible), part, drop)
    return mask


def testmiss_mask(present: np.ndarray, rate: float, seed: int, *,
                  cohort_modalities: Sequence[str],
                  test: np.ndarray | None = None, modality: str | None = None, **_
                  ) -> np.ndarray:
    """BD's protocol: ``modality`` removed from exactly ``rate`` of the test subjects having
    it; training and validation untouched."""
    present = _check_present(present)
    if modality is None:
        raise ConfigError("testmiss needs the 'modality' that goes missing at test time")
    if test is None:
        raise ValueError("testmiss needs the test rows of the seed's split")
    if (why := rate_problem("testmiss", rate)) is not None:
        raise ConfigError(why)
    (col,) = scenario_columns("testmiss", cohort_modalities, [modality])
    has = np.asarray(test, dtype=bool) & present[:, col]
    alone = has & (present.sum(axis=1) == 1)
    rows = np.flatnonzero(has & ~alone)
    n_drop = int(round(rate * has.sum()))
    if n_drop > len(rows):
        log.warning("testmiss %s %.2f: only %d of the %d test subjects with it have another "
                    "modality; %d keep it", modality, rate, len(rows), int(has.sum()),
                    int(alone.sum()))
        n_drop = len(rows)
    mask = present.copy()
    rng = np.random.default_rng([_TESTMISS_STREAM, int(seed)])
    mask[rng.permutation(rows)[:n_drop], col] = False
    log.info("testmiss %s %.2f seed %d: removed from %d of %d test subjects", modality, rate,
             seed, n_drop, int(has.sum()))
    return mask


# scenario name -> (present, value, seed, **context) -> mask
SCENARIOS: dict[str, Callable[..., np.ndarray]] = {
    "natural": natural_mask,
    "mcar": mcar_mask,
    "completeness": completeness_mask,
    "testmiss": testmiss_mask,
}
# the config options each scenario takes besides its rates
SCENARIO_OPTIONS: dict[str, tuple[str, ...]] = {
    "natural": (), "mcar": (), "completeness": ("modalities", "drop"), "testmiss": ("modality",),
}
# scenarios whose mask depends on the seed's split
NEEDS_SPLIT = ("completeness", "testmiss")
# scenarios that leave the training and validation splits as ``natural`` leaves them:
# their cells train the natural cell's model (mmpipe.bench.shared_fits)
TEST_SPLIT_ONLY = ("testmiss",)


def scenario_mask(present: np.ndarray, scenario: str, rate: float, seed: int,
                  **context) -> np.ndarray:
    """The presence mask of ``scenario`` at ``rate`` for ``seed`` (a subset of ``present``)."""
    try:
        fn = SCENARIOS[scenario]
    except KeyError:
        raise ConfigError(f"unknown missingness scenario {scenario!r} "
                          f"(known: {sorted(SCENARIOS)})") from None
    mask = fn(_check_present(present), rate, seed, **context)
    assert not (mask & ~present).any(), "a scenario must never add a modality"
    return mask


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, by size then in ``modalities`` order (HAM table 2)."""
    mods = list(modalities)
    return [c for k in range(1, len(mods) + 1) for c in itertools.combinations(mods, k)]


def subset_mask(present: np.ndarray, modalities: Sequence[str], subset: Sequence[str]
                ) -> np.ndarray:
    """``present`` restricted to the modalities of ``subset``."""
    present = _check_present(present)
    mods = list(modalities)
    unknown = [m for m in subset if m not in mods]
    if unknown:
        raise ConfigError(f"subset names unknown modalities {unknown} (known: {mods})")
    keep = np.array([m in set(subset) for m in mods], dtype=bool)
    return present & keep[None, :]


def align_mask(subject_ids: Sequence[str], mask: np.ndarray, modalities: Sequence[str],
               to_subjects: Sequence[str], to_modalities: Sequence[str],
               path: str | Path | None = None) -> np.ndarray:
    """Rows and columns of a cohort-wide mask for the subjects and modalities of some data;
    ``path``, the mask file, is named when it does not cover them."""
    ids = [str(s) for s in subject_ids]
    row = {s: i for i, s in enumerate(ids)}
    col = {m: j for j, m in enumerate(modalities)}
    missing = [str(s) for s in to_subjects if str(s) not in row]
    if missing:
        raise InputError(f"mask lacks {len(missing)} subject(s) {missing[:5]}; the mask file "
                         "is from another build of the cohort: rebuild it", path=path)
    lacking = [m for m in to_modalities if m not in col]
    if lacking:
        raise InputError(f"mask lacks modalities {lacking} (has {list(modalities)}); the "
                         "mask file is from another build of the cohort: rebuild it",
                         path=path)
    rows = np.array([row[str(s)] for s in to_subjects], dtype=np.int64)
    cols = np.array([col[m] for m in to_modalities], dtype=np.int64)
    return np.asarray(mask, dtype=bool)[np.ix_(rows, cols)]


def realised_rate(scenario: str, present: np.ndarray, mask: np.ndarray, *,
                  cohort_modalities: Sequence[str], scored: np.ndarray | None = None,
                  test: np.ndarray | None = None, parts: np.ndarray | None = None,
                  modalities: Sequence[str] | None = None,
                  modality: str | None = None, **_) -> tuple[float | None, int] | None:
    """The value a scenario's rate names, as ``mask`` realised it, and how many units it
    is a share of (it is met to within one of them): MCAR's share of the ``scored``
    subjects' present entries removed; completeness's share of the complete scored
    training subjects (``parts``) kept complete; testmiss's share of the test subjects
    having ``modality`` that lost it. None for ``natural``. MCAR and testmiss can fall
    short (a subject keeps one modality); the report says so."""
    rows = _scored_rows(present, scored)
    if scenario == "mcar":
        n = int(present[rows].sum())
        met = n - int((present & mask)[rows].sum())
    elif scenario == "completeness" and parts is not None:
        cols = scenario_columns(scenario, cohort_modalities, modalities)
        eligible = present[:, cols].all(axis=1) & rows & (np.asarray(parts) == "train")
        n, met = int(eligible.sum()), int((eligible & mask[:, cols].all(axis=1)).sum())
    elif scenario == "testmiss" and test is not None and modality is not None:
        (col,) = scenario_columns(scenario, cohort_modalities, [modality])
        has = np.asarray(test, dtype=bool) & present[:, col]
        n, met = int(has.sum()), int((has & ~mask[:, col]).sum())
    else:
        return None
    return (met / n if n else None), n


def removal_record(present: np.ndarray, mask: np.ndarray, scored: np.ndarray | None = None,
                   realised: tuple[float | None, int] | None = None,
                   options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a mask took from the ``scored`` subjects (every row when None) over the
    cohort's modalities: their present entries, how many it removed, the share, the
    largest share MCAR can remove while each keeps a modality (:func:`max_mcar_rate`),
    the scenario's rate as realised (:func:`realised_rate`: ``rate``, of ``rate_of``),
    and the scenario's ``options`` it was drawn with (testmiss's ``modality``), with
    which a run measures the rate on its own feature set."""
    present, mask = _check_present(present), _check_present(mask)
    rows = _scored_rows(present, scored)
    n, kept = int(present[rows].sum()), int((present & mask)[rows].sum())
    rate, rate_of = realised if realised is not None else (None, None)
    return {"present": n, "removed": n - kept, "share": (n - kept) / n if n else None,
            "max_mcar_share": max_mcar_rate(present[rows]), "rate": rate, "rate_of": rate_of,
            "options": dict(options or {})}


def write_mask(subject_ids: Sequence[str], mask: np.ndarray, modalities: Sequence[str],
               path: str | Path, record: dict[str, Any] | None = None) -> Path:
    """Write ``subject_id`` plus one bool column per modality, atomically; ``record``
    (:func:`removal_record`) goes into the parquet metadata, the columns staying as
    stage 2 reads them."""
    mask = _check_present(mask)
    mods = list(modalities)
    if SUBJECT in mods or len(set(mods)) != len(mods):
        raise ConfigError(f"modality names must be unique and not {SUBJECT!r}: {mods}")
    if mask.shape != (len(subject_ids), len(mods)):
        raise ValueError(f"mask has shape {mask.shape}, expected "
                         f"({len(subject_ids)}, {len(mods)})")
    df = pl.DataFrame({SUBJECT: [str(s) for s in subject_ids],
                       **{m: mask[:, j] for j, m in enumerate(mods)}},
                      schema={SUBJECT: pl.Utf8, **{m: pl.Boolean for m in mods}})
    metadata = None if record is None else {RECORD_KEY: json.dumps(record)}
    return write_parquet(df, path, metadata=metadata)


def read_removal_record(path: str | Path) -> dict[str, Any] | None:
    """The :func:`removal_record` of a mask file; None for a file written before masks
    recorded it."""
    text = pl.read_parquet_metadata(path).get(RECORD_KEY)
    return None if text is None else json.loads(text)


def read_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(subject_ids, mask [N, M], modalities)`` of a mask file."""
    path = Path(path)
    if not path.exists():
        raise InputError("missingness mask not found; build it first (the mask rule)", path=path)
    df = pl.read_parquet(path)
    if SUBJECT not in df.columns:
        raise InputError(f"mask file has no {SUBJECT!r} column", path=path)
    mods = [c for c in df.columns if c != SUBJECT]
    bad = [m for m in mods if df[m].dtype != pl.Boolean or df[m].null_count()]
    if bad:
        raise InputError(f"mask columns {bad} are not non-null booleans", path=path)
    ids = np.asarray(df[SUBJECT].to_list(), dtype=str)
    mask = (np.column_stack([df[m].to_numpy() for m in mods]).astype(bool) if mods
            else np.zeros((df.height, 0), dtype=bool))
    return ids, mask, mods
