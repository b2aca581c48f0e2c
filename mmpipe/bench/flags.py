"""Flags of a run that finished but should not be read at face value.

A method that predicts one class for every subject scores the chance level of balanced
accuracy and an AUC that may still look fine; a method whose early stopping kept the
first epoch learnt nothing its validation loss could see; a method that could not train
has NaN metrics. Each of these is a property of the run, not of a table cell, so the run
records it (``metrics.json``: ``"flags"``) and the report lists it with its reason.

:func:`run_flags` returns a list of ``{"flag": name, "reason": text}``, empty when
nothing is wrong. Flag names (:data:`FLAGS`):

- ``not_trained``: training raised ``NotTrainable``; its metrics are NaN, its predictions
  the training prior. No other flag is raised for such a run: the prior is one class by
  construction, not a collapse;
- ``single_class_test`` / ``single_class_val``: every prediction of that split is the
  same class (with two or more subjects, and two or more classes in the task);
- ``first_epoch``: a training phase that ran past it kept its first eligible checkpoint
  (epoch 1, or ``min_epochs`` when a checkpoint may only come from that epoch on)
  (methods without epochs, e.g. gradient boosting, have no entry and are not flagged);
  under cross-validation (a best epoch per fold) when any fold did, with the count;
- ``no_checkpoint``: a phase that ran epochs but never scored a checkpoint (best epoch 0:
  the monitored metric undefined at every epoch, e.g. an AUC on a validation split or
  fold of one class), so it kept its last weights after its patience or its last epoch,
  an epoch count that no validation chose; under cross-validation when any fold did;
- ``diverged``: a phase's training loss or validation outputs became NaN or infinite
  after a checkpoint, which it kept (as early stopping keeps it against any later
  epoch); one that diverged before any checkpoint did not train (``not_trained``);
- ``one_class_validation``: the validation subjects the model was judged on are all of
  one class (a rare label, a mask or feature set that left a class without input): early
  stopping on their loss kept the checkpoint most confident in that class, a choice of
  no use to tell the classes apart (the trials are not compared there, the selection's
  ``not_compared``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

FLAGS = ("not_trained", "single_class_test", "single_class_val", "first_epoch",
         "no_checkpoint", "diverged", "one_class_validation")
# flags that say the run's predictions carry no information about the subject
COLLAPSE_FLAGS = frozenset({"single_class_test", "single_class_val"})


def _single_class(split: str, predicted: np.ndarray, n_classes: int) -> dict[str, str] | None:
    predicted = np.asarray(predicted).reshape(-1)
    if len(predicted) < 2 or n_classes < 2:
        return None
    classes = np.unique(predicted)
    if len(classes) != 1:
        return None
    return {"flag": f"single_class_{split}",
            "reason": f"every {split} prediction ({len(predicted)} subjects) is class "
                      f"{int(classes[0])}"}


def run_flags(*, trained: bool, val_predicted: np.ndarray, test_predicted: np.ndarray,
              n_classes: int, best_epoch: Mapping[str, int], epochs: Mapping[str, int],
              first_eligible: Mapping[str, int] | None = None,
              diverged: Mapping[str, int | list[int | None]] | None = None,
              judged_y: np.ndarray | None = None) -> list[dict[str, str]]:
    """Flags of one run (see the module docstring).

    ``val_predicted``/``test_predicted``: the arg-max class of each subject scored under
    the scenario (subjects without any modality, scored with the prior, included: they
    are part of what the method outputs). ``best_epoch``/``epochs``: per training phase,
    the 1-based epoch whose checkpoint was kept and the epochs run (``FitResult``);
    ``first_eligible``: per phase the first epoch a checkpoint could come from (``1``
    unless ``min_epochs`` says later): keeping it is the same sign as keeping epoch 1.
    ``diverged``: per phase that diverged, its epoch (per fold under cross-validation,
    None for a fold that did not). ``judged_y``: the classes of the validation subjects
    early stopping judged the model on (None: no validation split did, as under
    cross-validation, whose held-out folds hold every class the training part has).
    """
    first_eligible = first_eligible or {}
    if not trained:
        return [{"flag": "not_trained",
                 "reason": "training failed (NotTrainable); metrics are NaN, predictions "
                           "the training prior"}]
    flags = [f for f in (_single_class("test", test_predicted, n_classes),
                         _single_class("val", val_predicted, n_classes)) if f is not None]
    for phase in sorted(best_epoch):
        best, run = best_epoch[phase], epochs.get(phase)
        if best is None:
            continue
        first = int(first_eligible.get(phase, 1))
        what = "epoch-1" if first == 1 else f"first eligible (epoch {first})"
        folds = isinstance(best, list)  # cross-validation: one best epoch per fold
        # (best epoch, epochs run) of each fold, or of the one fit; a fold's count may be
        # unknown (None), the one fit's must be known for its first epoch to mean anything
        fits = (list(zip(best, run if isinstance(run, list) else [None] * len(best),
                         strict=True)) if folds else [(best, run)])
        where = f" on {{}} of {len(best)} folds" if folds else ""
        # a phase set to run no epoch (HyperMM's phi_max_epochs: 0) has nothing to score
        unscored = sum(int(b) == 0 and (r is None or int(r) > 0) for b, r in fits)
        if unscored:
            flags.append({"flag": "no_checkpoint",
                          "reason": f"phase {phase!r} never scored a checkpoint"
                                    f"{where.format(unscored)} (the monitored metric "
                                    "undefined at every epoch, e.g. an AUC on one class): "
                                    "it kept its last weights"})
        # only that epoch run: keeping it is no sign of anything
        firsts = sum(int(b) == first and (folds if r is None else int(r) > first)
                     for b, r in fits)
        if firsts:
            flags.append({"flag": "first_epoch",
                          "reason": f"phase {phase!r} kept its {what} checkpoint"
                                    + (where.format(firsts) if folds
                                       else f" of {int(run)} epochs")})
    judged = np.unique(np.asarray(judged_y)) if judged_y is not None else np.array([])
    if n_classes >= 2 and len(judged) == 1 and any(int(r or 0) > 0 for r in epochs.values()
                                                   if not isinstance(r, list)):
        flags.append({"flag": "one_class_validation",
                      "reason": f"the {len(judged_y)} validation subjects it was judged on "
                                f"are all of class {int(judged[0])}: its early stopping could "
                                "not tell the classes apart"})
    for phase, at in sorted((diverged or {}).items()):
        folds = [a for a in at if a is not None] if isinstance(at, list) else [at]
        where = f" on {len(folds)} of {len(at)} folds" if isinstance(at, list) else ""
        flags.append({"flag": "diverged",
                      "reason": f"phase {phase!r} diverged{where} (a non-finite training "
                                f"loss or validation output, at epoch "
                                f"{', '.join(map(str, folds))}) and kept its checkpoint "
                                "of an earlier epoch"})
    return flags
