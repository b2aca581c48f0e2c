"""Classification metrics of one run, the same for every method (README: "What lands in
``results/``").

:func:`classification_metrics` returns, from the true classes and the predicted
probabilities ``[N, C]`` (prediction = arg-max):

- ``accuracy``; ``balanced_accuracy`` (mean recall over the classes present in
  ``y_true``, scikit-learn's definition);
- ``auc``: binary, ROC AUC of the score of class 1; multi-class, macro average of the
  one-vs-rest ROC AUCs (equal to scikit-learn's ``multi_class="ovr", average="macro"``
  when every class occurs in ``y_true``; classes absent from ``y_true`` have no AUC and
  are left out of the average, with a note). Equal scores above one half are ordered
  by the other classes' probability, which holds them more finely, where scikit-learn
  counts them tied: a float32 score that saturated at 1.0 keeps its order. Undefined with a single class in
  ``y_true``: NaN and a note, never an exception; so are ``balanced_accuracy`` and the
  F1, precision and recall values below, which then measure one class (scikit-learn
  gives a model that predicts that class 1.0: a modality subset whose few test subjects
  share a class would have entered the report's means as perfect). Early stopping on
  balanced accuracy over a one-class validation split thus keeps no checkpoint (the
  run is flagged ``no_checkpoint``);
- ``f1_macro``, ``precision_macro``, ``recall_macro``: unweighted mean over the classes
  occurring in ``y_true`` or the predictions (scikit-learn's ``average="macro"`` and its
  default label set); ``f1_weighted``: the per-class F1 weighted by the class's support
  in ``y_true`` (``average="weighted"``). An undefined ratio (no predicted / no true
  positive) counts as 0;
- binary only, ``f1_positive``, ``precision_positive``, ``recall_positive``: of class 1,
  the positive class (scikit-learn's ``average="binary"``); the report names it by its
  label value (``label_values[1]``). A multi-class run has no such keys: one class's F1
  is no summary of a multi-class task, and a column named "class 1" that held a macro
  average misled (see :func:`metric_keys`);
- ``ece``: expected calibration error of the max probability (confidence) in 15
  equal-width bins, ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` (Guo et al. 2017);
- ``n``: number of samples; ``notes``: list of strings saying why a value is NaN or
  how it was restricted (empty when there is nothing to say).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Plain numpy rather than scikit-learn: every training job computes these, and importing
# sklearn.metrics (or scipy.stats) costs ~2 s per job, which dominated the demo grid's wall time. The
# tests check the values against scikit-learn.

# the keys of every run, whatever its class count; f1_macro is the "mF1" the MMARE thesis
# reports
COMMON_KEYS = ("accuracy", "balanced_accuracy", "auc", "f1_macro", "f1_weighted",
               "precision_macro", "recall_macro", "ece")
# binary runs only: class 1 (the second label value, sorted) as the positive class
POSITIVE_KEYS = ("f1_positive", "precision_positive", "recall_positive")
# every key a run may hold (binary runs hold all, multi-class runs COMMON_KEYS)
METRIC_KEYS = (*COMMON_KEYS, *POSITIVE_KEYS)
ECE_BINS = 15


def metric_keys(n_classes: int) -> tuple[str, ...]:
    """The metric keys of a run with ``n_classes`` classes."""
    return METRIC_KEYS if n_classes == 2 else COMMON_KEYS


def nan_metrics(n: int, n_classes: int, notes: list[str] | None = None) -> dict[str, Any]:
    """The metrics of a run that has none (not trained, no samples): every key of its
    class count NaN, ``notes`` saying why."""
    return {**dict.fromkeys(metric_keys(n_classes), float("nan")), "n": int(n),
            "notes": list(notes or [])}


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS
                               ) -> float:
    """ECE of the arg-max prediction: bins ``(i/n, (i+1)/n]`` of the max probability."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    if len(y_true) == 0:
        return float("nan")
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        sel = bins == b
        ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def _average_ranks(x: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """1-based ranks of ``x``, ties broken by ``tiebreak`` (ascending) where given, and
    the ties left sharing their average rank."""
    keys = (x,) if tiebreak is None else (tiebreak, x)  # lexsort: the last key first
    order = np.lexsort(keys)
    change = np.zeros(max(len(x) - 1, 0), dtype=bool)
    for key in keys:
        change |= np.diff(key[order]) != 0
    cuts = np.flatnonzero(change) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(x)]])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _finer_rest(score: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """The order of equal scores, as a tie-break key: above one half, a probability is
    held more finely by the other classes' (its complement). A float32 score reaches
    1.0 at a margin of about 17 logits, where the complements still differ (4e-8 and
    1e-9); an overfit network's confident subjects had all counted one half. Below one
    half the complement is the coarser and orders nothing. The complement is rounded to
    16 bits (5 significant digits): the float32 rounding of the probabilities it sums
    (0.7 beside 0.15 + 0.15, or beside 0.1 + 0.2) orders nothing either."""
    mantissa, exponent = np.frexp(rest)
    rounded = np.ldexp(np.round(mantissa * 2.0**16) / 2.0**16, exponent)
    return np.where(score >= 0.5, -rounded, 0.0)


def roc_auc(positive: np.ndarray, score: np.ndarray, rest: np.ndarray | None = None) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half). ``rest``: the other
    classes' probability, which orders equal scores where it is the finer
    (:func:`_finer_rest`)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    score = np.asarray(score, dtype=np.float64)
    ranks = _average_ranks(score, None if rest is None else
                           _finer_rest(score, np.asarray(rest, dtype=np.float64)))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _prf(y_true: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-label precision, recall, F1; an undefined ratio counts as 0 (zero_division=0)."""
    tp = np.array([np.sum((pred == c) & (y_true == c)) for c in labels], dtype=np.float64)
    n_pred = np.array([np.sum(pred == c) for c in labels], dtype=np.float64)
    n_true = np.array([np.sum(y_true == c) for c in labels], dtype=np.float64)
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def _auc(y_true: np.ndarray, proba: np.ndarray, notes: list[str]) -> float:
    n_classes = proba.shape[1]
    classes = np.unique(y_true)
    if len(classes) < 2:
        notes.append(f"auc undefined: only class(es) {classes.tolist()} in y_true")
        return float("nan")
    # equal scores are ordered by the other classes' probability where it is the finer;
    # distinct scores keep scikit-learn's order
    if n_classes == 2:
        return roc_auc(y_true == 1, proba[:, 1], proba[:, 0])
    # one-vs-rest per class, macro average (sklearn multi_class="ovr", average="macro")
    aucs = [roc_auc(y_true == c, proba[:, c], np.delete(proba, c, axis=1).sum(axis=1))
            for c in classes]
    if len(classes) < n_classes:
        absent = sorted(set(range(n_classes)) - set(classes.tolist()))
        notes.append(f"auc: macro over classes {classes.tolist()}; class(es) {absent} "
                     "absent from y_true")
    return float(np.mean(aucs))


def classification_metrics(y_true, proba) -> dict[str, Any]:
    """Metrics of one evaluation (see the module docstring); ``proba`` is ``[N, C]``."""
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] < 2 or proba.shape[0] != len(y_true):
        raise ValueError(f"proba must be [N, C] with C >= 2 and N = {len(y_true)}, "
                         f"got {proba.shape}")
    n_classes = proba.shape[1]
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= n_classes):
        raise ValueError(f"y_true must lie in 0..{n_classes - 1}")
    if not np.isfinite(proba).all():
        raise ValueError("proba holds non-finite values")
    notes: list[str] = []
    if len(y_true) == 0:
        return nan_metrics(0, n_classes, ["no samples"])
    out: dict[str, Any] = {"n": int(len(y_true))}
    pred = proba.argmax(axis=1)
    out["accuracy"] = float(np.mean(pred == y_true))
    present = np.unique(y_true)
    out["balanced_accuracy"] = float(np.mean([np.mean(pred[y_true == c] == c) for c in present]))
    out["auc"] = _auc(y_true, proba, notes)
    # scikit-learn's label set for macro averages: classes in y_true or in the predictions
    labels = np.union1d(present, np.unique(pred))
    precision, recall, f1 = _prf(y_true, pred, labels)
    support = np.array([np.sum(y_true == c) for c in labels], dtype=np.float64)
    out["f1_macro"] = float(f1.mean())
    out["f1_weighted"] = float(np.sum(f1 * support) / support.sum())
    out["precision_macro"] = float(precision.mean())
    out["recall_macro"] = float(recall.mean())
    if n_classes == 2:  # scikit-learn's average="binary", positive class 1
        p1, r1, f11 = _prf(y_true, pred, np.array([1]))
        out["precision_positive"], out["recall_positive"], out["f1_positive"] = (
            float(p1[0]), float(r1[0]), float(f11[0]))
    out["ece"] = expected_calibration_error(y_true, proba)
    if len(present) < 2:
        # one class scores a model that predicts it 1.0 (or 0.0 when the class is 0) on
        # every ratio below: no reading of the other class enters any of them
        for key in ("balanced_accuracy", "f1_macro", "precision_macro", "recall_macro",
                    "f1_weighted", "precision_positive", "recall_positive", "f1_positive"):
            if key in out:
                out[key] = float("nan")
        notes.append("balanced accuracy, F1, precision and recall undefined: only class(es) "
                     f"{present.tolist()} in y_true")
    out["notes"] = notes
    return {k: out[k] for k in (*metric_keys(n_classes), "n", "notes")}
