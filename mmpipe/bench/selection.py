"""Model selection of one seed: the tuning trials, early stopping, and what is kept.

Two strategies, chosen per cohort (``benchmark.selection``):

- ``validation`` (default): each trial trains on the training split with early stopping
  on the validation split; the trial with the best validation score is kept.
- ``cv``: for small cohorts, where a validation split of a few dozen subjects makes
  early stopping and the choice among trials noise. The training and validation splits
  together (the *training part*; the test split is never read) are cut into ``folds``
  stratified folds (each split group, two rows of one patient, in one fold); each fold
  trains on the others with early stopping on itself, and a trial is scored on its
  out-of-fold predictions. The chosen trial's final model is then
  either ``refit``: trained once on the whole training part for the median of the
  folds' best epochs (per phase), or ``ensemble``: the fold models themselves, their
  probabilities averaged. Scikit-learn methods have no epochs to carry over, so under
  ``cv`` they keep their fold ensemble whatever ``final`` says (recorded in the run).
  Under z-scores each fold re-standardises with its training folds' statistics (a
  normaliser fitted after the training part's: z-scoring is affine, so the two compose to
  the training folds' own z-score), so a held-out fold never shapes its own features; a
  fold ensemble keeps each member's normaliser with it. Under ``l2`` with a tabular store
  (whose statistics the row scaling follows, so they do not compose) each fold fits its
  normaliser on the raw training folds; a fold ensemble's members then read raw
  features, and the run's own normaliser becomes ``none`` (:attr:`Selected.normalizer`).

The validation metrics a run reports are those of the kept model on the validation
split, or the out-of-fold metrics under ``cv``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmpipe.bench.budget import Selection
from mmpipe.bench.data import BenchData, Normalizer
from mmpipe.bench.splits import group_names
from mmpipe.bench.trainer import LOG_HEADER, FitResult, NotTrainable, fit, predict_proba
from mmpipe.bench.tuning import TrialRecord, Tuning, candidate_overrides, selection_score
from mmpipe.errors import out_of_memory
from mmpipe.methods import TRAINER_KEYS

log = logging.getLogger(__name__)


class FoldEnsemble:
    """The fold models of cross-validation as one model: their probabilities averaged.
    ``normalizers``: each member's fold normaliser (:func:`_fit_cv`), applied to the
    run-normalised inputs before that member scores them (the raw inputs, where the run's
    normalisation is ``none`` because the folds fit theirs on raw features:
    :attr:`Selected.normalizer`); None where a member takes them
    as they are (normalisation without statistics, or a model from before fold
    normalisers, which trained on the run's)."""

    kind = "ensemble"

    def __init__(self, members: list, normalizers: list[Normalizer | None] | None = None):
        self.members = list(members)
        self.normalizers = list(normalizers) if normalizers else [None] * len(self.members)
        if len(self.normalizers) != len(self.members):
            raise ValueError(f"{len(self.members)} fold models, {len(self.normalizers)} "
                             "normalisers")

    def member_inputs(self, data: BenchData):
        """(member, the data as that member was trained to read it) for each fold model."""
        for member, norm in zip(self.members, self.normalizers, strict=True):
            yield member, (data if norm is None else norm.transform(data))

    @property
    def hparams(self) -> dict[str, Any]:
        return getattr(self.members[0], "hparams", {})

    @property
    def derived(self) -> dict[str, Any]:
        return getattr(self.members[0], "derived", {})

    def state_dict(self) -> dict[str, Any]:
        return {"members": [m.state_dict() for m in self.members],
                "normalizers": [None if n is None else n.state_dict()
                                for n in self.normalizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state.get("members", [])) != len(self.members):
            raise ValueError(f"an ensemble of {len(self.members)} models, the state holds "
                             f"{len(state.get('members', []))}")
        norms = state.get("normalizers", [None] * len(self.members))
        if len(norms) != len(self.members):
            raise ValueError(f"an ensemble of {len(self.members)} models, the state holds "
                             f"{len(norms)} normalisers")
        for m, s in zip(self.members, state["members"], strict=True):
            m.load_state_dict(s)
        self.normalizers = [None if n is None else Normalizer.from_state(n) for n in norms]

    def eval(self) -> FoldEnsemble:
        for m in self.members:
            if hasattr(m, "eval"):
                m.eval()
        return self

    def trainable_parameters(self) -> int:
        """One member's: the model's size (the run records that it is an ensemble)."""
        return int(self.members[0].trainable_parameters())

    def report_notes(self) -> list[str]:
        first = self.members[0]
        return first.report_notes() if hasattr(first, "report_notes") else []


def strata(data: BenchData) -> np.ndarray:
    """Label × missingness pattern of each subject, the strata the splits use too."""
    _, pattern = np.unique(data.present, axis=0, return_inverse=True)
    return data.y * (int(pattern.max(initial=0)) + 1) + pattern.reshape(-1)


def stratified_folds(y: np.ndarray, k: int, seed: int,
                     groups: Sequence[str | None] | None = None) -> np.ndarray:
    """Fold index of each sample: each stratum (a class, or :func:`strata`) shuffled and
    dealt round-robin, so every fold holds each stratum in about the same share.

    ``groups``: each sample's split group (None: its own). A group's samples share one
    fold, dealt as one unit of its members' most common stratum (ties: the smallest), as
    the splits draw them (:mod:`mmpipe.bench.splits`): two rows of one patient in the
    training and the held-out folds would score a trial on a patient it trained on.
    Without groups the folds are those of the samples alone."""
    names = group_names(groups, len(y))
    if any(names):
        unit_of: dict[str, int] = {}
        unit = np.array([unit_of.setdefault(f"group:{g}" if g else f"sample:{i}", len(unit_of))
                         for i, g in enumerate(names)])
        # each unit's most common stratum: one pass over (unit, stratum) counts
        pairs, counts = np.unique(np.stack([unit, y]), axis=1, return_counts=True)
        order = np.lexsort((pairs[1], -counts, pairs[0]))  # per unit: most, then smallest
        first = order[np.r_[True, np.diff(pairs[0][order]) != 0]]
        return stratified_folds(pairs[1][first], k, seed)[unit]
    rng = np.random.default_rng([seed, 7919])  # its own stream, apart from the split's
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)  # the next class starts where this one left off
    return fold


@dataclass
class Selected:
    """What a seed keeps: the model, how it trained, and its validation predictions."""

    method: Any
    result: FitResult
    val_proba: np.ndarray
    val_evaluation: str                     # "scenario" (the val split) | "out_of_fold"
    val_part: BenchData                     # the subjects of val_proba, in its order
    overrides: dict[str, Any]
    # rows of val_proba that are the folds' prior: no fold model could read their input
    val_no_input: np.ndarray | None = None
    record: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    seconds: float = 0.0                    # every trial, fold and refit
    # the normalisation the kept model reads, where it is not the run's (a fold ensemble
    # whose members normalise raw features: Normalizer.folds_refit_raw)
    normalizer: Normalizer | None = None

    @property
    def val_y(self) -> np.ndarray:
        return self.val_part.y

    @property
    def val_ids(self) -> np.ndarray:
        return self.val_part.subject_id


def training_part(train: BenchData, val: BenchData) -> BenchData:
    """The training and validation splits as one set (cross-validation's pool)."""
    parts = (train, val)
    return BenchData(subject_id=np.concatenate([p.subject_id for p in parts]),
                     y=np.concatenate([p.y for p in parts]),
                     x={m: np.concatenate([p.x[m] for p in parts]) for m in train.modalities},
                     present=np.concatenate([p.present for p in parts]),
                     modalities=list(train.modalities), n_classes=train.n_classes,
                     label_name=train.label_name, label_values=train.label_values,
                     provenance=train.provenance)


def _log(lines: list[str], trial: int, fold: str) -> list[str]:
    return [f"{trial}\t{fold}\t{line}" for line in lines]


def _fit_validation(build: Callable[[], Any], train: BenchData, val: BenchData,
                    cfg: dict[str, Any], seed: int, device) -> tuple[Any, FitResult, np.ndarray]:
    torch.manual_seed(seed)
    method = build()
    result = fit(method, train, val, cfg, seed, device)
    return method, result, predict_proba(method, val, device)


def _fit_cv(build: Callable[[], Any], pool: BenchData, cfg: dict[str, Any], seed: int, device,
            selection: Selection, normalize: str = "none",
            split_groups: Mapping[str, str] | None = None, raw: BenchData | None = None
            ) -> tuple[list, list[Normalizer | None], list[FitResult], np.ndarray, np.ndarray]:
    """Each fold's model, its normaliser (None when ``normalize`` fits no statistics and
    ``raw`` is not given),
    its fit, the out-of-fold probabilities, and the rows of them that are the training
    folds' prior (no input the fold model can read). ``pool`` is normalised with the whole
    training part's statistics; a fold's normaliser is fitted on its training folds of
    ``pool`` alone (:meth:`Normalizer.fit`), so the held-out fold's features do not
    depend on the held-out fold. A split group of ``split_groups`` (subject_id -> group)
    lies in one fold. ``raw``: ``pool`` before the run's normalisation, row for row, where
    that normalisation's statistics do not compose (:attr:`Normalizer.folds_refit_raw`):
    each fold's normaliser is then fitted on the raw training folds and reads raw
    features."""
    groups = ([split_groups.get(s) for s in pool.subject_id] if split_groups else None)
    folds = stratified_folds(strata(pool), selection.folds, seed, groups)
    oof = np.zeros((len(pool.y), pool.n_classes), dtype=np.float64)
    unscored = np.zeros(len(pool.y), dtype=bool)
    members, norms, results = [], [], []
    for k in range(selection.folds):
        held = np.flatnonzero(folds == k)
        if not len(held):
            continue
        # the raw features where the fold's statistics do not compose with the run's
        source = pool if raw is None else raw
        fit_part, held_part = source.subset(np.flatnonzero(folds != k)), source.subset(held)
        norm = Normalizer(normalize)
        if raw is not None or norm.fits:
            norm.fit(fit_part)
            fit_part, held_part = norm.transform(fit_part), norm.transform(held_part)
        else:
            # no statistics to refit (l2 and none are per subject), but a modality the
            # training folds lack is absent for the fold model all the same
            norm = Normalizer("none").fit(fit_part)
            if norm.unseen:
                held_part = norm.transform(held_part)
            else:
                norm = None
        # a modality none of the training folds has is absent in the held-out fold too
        # (Normalizer.unseen): a subject left without input gets the folds' prior
        scored = held_part.present.any(axis=1)
        if not scored.all():
            oof[held[~scored]] = np.bincount(fit_part.y, minlength=pool.n_classes) / len(
                fit_part.y)
            unscored[held[~scored]] = True
            held, held_part = held[scored], held_part.subset(scored)
        torch.manual_seed(seed)
        method = build()
        result = fit(method, fit_part, held_part, cfg, seed, device)
        oof[held] = predict_proba(method, held_part, device)
        members.append(method)
        norms.append(norm)
        results.append(result)
    return members, norms, results, oof, unscored


def _fold_divergence(results: list) -> dict[str, list[int | None]]:
    """Per phase any fold diverged in, each fold's epoch of it (None: it did not)."""
    phases = sorted({p for r in results for p in r.diverged})
    return {p: [r.diverged.get(p) for r in results] for p in phases}


def _median_epochs(results: list[FitResult]) -> dict[str, int]:
    """The folds' median best epoch per phase; a fold without an eligible checkpoint
    (best epoch 0: it kept its last weights) counts with the epochs it ran. A phase no
    fold ran (``max_epochs: 0``, HyperMM's ``phi_max_epochs: 0``) stays unrun."""
    return {p: (0 if all(r.epochs[p] == 0 for r in results) else
                max(1, int(np.median([r.best_epoch[p] or r.epochs[p] for r in results]))))
            for p in results[0].best_epoch}


def _unscorable(judged: BenchData, choose_by: str) -> str | None:
    """Why no trial could be scored by ``choose_by`` on ``judged`` (no subject, or one
    class), or None: a metric defined for any prediction is defined for the uniform
    one. One class is unscorable under the loss too, which is defined there: the trial
    most confident in that class won, a choice of no use to tell the classes apart."""
    classes = np.unique(judged.y)
    if len(classes) == 1:
        return (f"the {len(judged.y)} subjects the trials are judged on are all of class "
                f"{classes[0]}: no {choose_by} there tells the classes apart")
    uniform = np.full((len(judged.y), judged.n_classes), 1 / judged.n_classes)
    if not np.isnan(selection_score(judged.y, uniform, choose_by)):
        return None
    return f"{choose_by} is not defined on the {len(judged.y)} subjects the trials are judged on"


def select_model(build: Callable[[dict[str, Any]], Any], method_cls, hparams: dict[str, Any],
                 trainer_defaults: dict[str, Any], train: BenchData, val: BenchData, *,
                 seed: int, device, selection: Selection, tuning: Tuning,
                 normalize: str = "none",
                 split_groups: Mapping[str, str] | None = None,
                 raw_pool: BenchData | None = None) -> Selected:
    """Spend the tuning budget on ``train``/``val`` (never the test split) and return the
    chosen model. ``build(overrides)`` makes a fresh method with those hyper-parameters,
    ``hparams`` are the method's settings without overrides (its class defaults and its
    config, trainer keys included). ``train``/``val`` come normalised with ``normalize``
    (:class:`~mmpipe.bench.data.Normalizer`; fitted on ``train``, or on both under
    ``cv``, whose folds then re-standardise on their training folds, and keep each of
    ``split_groups``, subject_id -> group, in one fold). ``raw_pool``: under ``cv``, the
    training part before normalisation, row for row as ``train`` then ``val``, when the
    folds fit their normalisers on raw features (:attr:`Normalizer.folds_refit_raw`).
    Raises :class:`NotTrainable` when no trial could train."""
    candidates = candidate_overrides(method_cls, hparams, trainer_defaults, tuning)
    sklearn = getattr(method_cls, "kind", "torch") == "sklearn"
    pool = training_part(train, val) if selection.strategy == "cv" else None
    not_compared = (_unscorable(pool if pool is not None else val, tuning.choose_by)
                    if len(candidates) > 1 else None)
    if not_compared:
        # every trial would score NaN and the first be kept by default: the record named
        # a choice by choose_by that nothing made, for the budget's cost in training
        log.warning("trials not compared: %s; the method's defaults train alone",
                    not_compared)
        candidates = candidates[:1]
    if raw_pool is not None and (pool is None or not np.array_equal(raw_pool.subject_id,
                                                                    pool.subject_id)):
        raise ValueError("raw_pool is cross-validation's training part before "
                         "normalisation, row for row")
    trials: list[TrialRecord] = []
    best: tuple[float, int] | None = None
    kept: dict[str, Any] = {}
    log_lines: list[str] = []
    seconds = 0.0
    for t, over in enumerate(candidates):
        record = TrialRecord(over)
        trials.append(record)

        def make(over=over):
            return build(over)

        merged = {**hparams, **over}
        cfg = {**trainer_defaults, **{k: merged[k] for k in TRAINER_KEYS if k in merged}}
        try:
            if selection.strategy == "validation":
                method, result, proba = _fit_validation(make, train, val, cfg, seed, device)
                y, members, norms, results = val.y, None, None, [result]
                unscored = None
            else:
                members, norms, results, proba, unscored = _fit_cv(
                    make, pool, cfg, seed, device, selection, normalize, split_groups,
                    raw_pool)
                if not members:
                    raise NotTrainable("no fold could train")
                diverged = [k for k, r in enumerate(results) if r.diverged]
                if diverged and selection.final == "refit":
                    # the refit has no validation split to keep a checkpoint from: where
                    # a fold diverged, it would diverge with nothing to fall back on
                    raise NotTrainable(f"fold(s) {diverged} diverged, and a refit without "
                                       "a validation split keeps no checkpoint")
                y, method, result = pool.y, None, results[0]
        except NotTrainable as err:
            record.error = str(err)
            continue
        except (ValueError, RuntimeError) as err:
            # a scaled setting the method cannot build (LARGO's CP rank at half width) is
            # a failed trial; the method's own defaults must build and train. Memory the
            # device lacks is the machine's, not the setting's: as a failed trial it left
            # the method fewer trials on a smaller GPU than on a larger one
            if t == 0 or out_of_memory(err):
                raise
            record.error = f"{type(err).__name__}: {err}"
            continue
        for i, r in enumerate(results):
            log_lines += _log(r.lines, t, str(i) if selection.strategy == "cv" else "-")
            seconds += r.seconds
        record.best_epoch = ({p: [r.best_epoch[p] for r in results] for p in result.best_epoch}
                             if selection.strategy == "cv" else dict(result.best_epoch))
        record.diverged = (_fold_divergence(results) if selection.strategy == "cv"
                           else dict(result.diverged))
        score = selection_score(y, proba, tuning.choose_by)
        record.score = None if np.isnan(score) else score
        rank = -np.inf if np.isnan(score) else score
        if best is None or rank > best[0]:
            best = (rank, t)
            kept = {"method": method, "members": members, "norms": norms, "results": results,
                    "proba": proba, "unscored": unscored, "cfg": cfg, "make": make}
    if best is None:
        raise NotTrainable("; ".join(sorted({r.error or "?" for r in trials})))
    chosen = trials[best[1]].overrides

    def _record(final: str) -> dict[str, Any]:
        return {
            "strategy": selection.strategy,
            # folds_trained: the folds that held subjects of the training part (and
            # trained)
            **({"folds": selection.folds, "folds_trained": len(kept["results"]),
                "final": final} if selection.strategy == "cv" else {}),
            # one candidate is chosen by nothing (its training settings leave choose_by out)
            "budget": tuning.trials, "trials_run": len(candidates),
            "choose_by": tuning.choose_by if len(candidates) > 1 else None,
            **({"not_compared": not_compared} if not_compared else {}),
            "n_selection": len(val_part),  # subjects the choice was judged on
            "trials": [r.as_dict(tuning.choose_by) for r in trials],
            "chosen": chosen,
        }

    final = "validation"
    normalizer = None
    if selection.strategy == "validation":
        method, result = kept["method"], kept["results"][0]
        val_part, evaluation = val, "scenario"
    else:
        val_part, evaluation = pool, "out_of_fold"
        results = kept["results"]
        if selection.final == "refit" and not sklearn:
            epochs = _median_epochs(results)
            torch.manual_seed(seed)
            method = kept["make"]()
            try:
                result = fit(method, pool, None, kept["cfg"], seed, device, epochs=epochs)
            except NotTrainable as err:
                # the trials' record stands: it lost every trial's out-of-fold score
                raise NotTrainable(f"the refit of the chosen trial {chosen} on the training "
                                   f"part: {err}",
                                   selection=_record(f"the refit failed: {err}")) from err
            log_lines += _log(result.lines, best[1], "refit")
            seconds += result.seconds
            # per fold, as the ensemble: what the flags and the reader judge
            result.epochs = {p: [r.epochs[p] for r in results] for p in epochs}
            result.best_epoch = {p: [r.best_epoch[p] for r in results] for p in epochs}
            result.diverged = _fold_divergence(results)
            final = f"refit on the training part for the folds' median best epochs {epochs}"
        else:
            method = FoldEnsemble(kept["members"], kept["norms"])
            if raw_pool is not None:
                # its members normalise raw features: the run's normalisation only marks
                # what no subject of the training part has absent, as theirs do
                normalizer = Normalizer("none").fit(raw_pool)
            result = copy.copy(results[0])
            # the members' own settings where they differ (a scikit-learn fold chooses
            # its regularisation on its own held-out fold)
            settings = [r.settings for r in results]
            if any(s != settings[0] for s in settings):
                result.settings = {"folds": settings}
            result.epochs = {p: [r.epochs[p] for r in results] for p in results[0].epochs}
            result.best_epoch = {p: [r.best_epoch[p] for r in results]
                                 for p in results[0].best_epoch}
            result.diverged = _fold_divergence(results)
            result.seconds = float(sum(r.seconds for r in results))
            result.n_fit = max(r.n_fit for r in results)  # the largest member's folds
            final = f"ensemble of the {len(method.members)} fold models"
    header = "trial\tfold\t" + LOG_HEADER
    return Selected(method=method, result=result, val_proba=kept["proba"],
                    val_evaluation=evaluation, val_part=val_part, overrides=chosen,
                    val_no_input=kept["unscored"], record=_record(final),
                    log=header + "\n" + "\n".join(log_lines) + "\n", seconds=seconds,
                    normalizer=normalizer)
