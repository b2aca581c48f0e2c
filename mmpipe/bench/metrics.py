"""Classification metrics of one run (DESIGN.md, "Evaluation protocol").

:func:`classification_metrics` returns, from the true classes and the predicted
probabilities ``[N, C]`` (prediction = arg-max):

- ``accuracy``; ``balanced_accuracy`` (mean recall over the classes present in
  ``y_true``, scikit-learn's definition);
- ``auc``: binary, ROC AUC of the score of class 1; multi-class, macro average of the
  one-vs-rest ROC AUCs (equal to scikit-learn's ``multi_class="ovr", average="macro"``
  when every class occurs in ``y_true``; classes absent from ``y_true`` have no AUC and
  are left out of the average, with a note). Undefined with a single class in
  ``y_true``: NaN and a note, never an exception;
- ``f1``, ``precision``, ``recall``: binary, scikit-learn's default
  ``average="binary"`` with class 1 as the positive class; multi-class, macro average
  over the classes occurring in ``y_true`` or the predictions (scikit-learn's default
  label set); an undefined ratio (no predicted / no true positive) counts as 0;
- ``ece``: expected calibration error of the max probability (confidence) in 15
  equal-width bins, ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` (Guo et al. 2017);
- ``n``: number of samples; ``notes``: list of strings saying why a value is NaN or
  how it was restricted (empty when there is nothing to say).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

# f1/precision/recall follow scikit-learn's binary default (class 1) for two classes;
# f1_macro averages over classes, the "mF1" the MMARE thesis reports
METRIC_KEYS = ("accuracy", "balanced_accuracy", "auc", "f1", "f1_macro", "precision", "recall",
               "ece")
ECE_BINS = 15


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


def _auc(y_true: np.ndarray, proba: np.ndarray, notes: list[str]) -> float:
    n_classes = proba.shape[1]
    classes = np.unique(y_true)
    if len(classes) < 2:
        notes.append(f"auc undefined: only class(es) {classes.tolist()} in y_true")
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y_true, proba[:, 1]))
    # one-vs-rest per class, macro average (sklearn multi_class="ovr", average="macro")
    aucs = [roc_auc_score(y_true == c, proba[:, c]) for c in classes]
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
    out: dict[str, Any] = {"n": int(len(y_true))}
    if len(y_true) == 0:
        out.update({k: float("nan") for k in METRIC_KEYS})
        out["notes"] = ["no samples"]
        return out
    pred = proba.argmax(axis=1)
    average = "binary" if n_classes == 2 else "macro"
    kw: dict[str, Any] = {"average": average, "zero_division": 0.0}
    if average == "binary":
        kw["pos_label"] = 1
    with warnings.catch_warnings():
        # balanced accuracy warns when predictions hold classes y_true lacks
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        out["accuracy"] = float(accuracy_score(y_true, pred))
        out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, pred))
        out["auc"] = _auc(y_true, proba, notes)
        out["f1"] = float(f1_score(y_true, pred, **kw))
        out["f1_macro"] = float(f1_score(y_true, pred, average="macro", zero_division=0.0))
        out["precision"] = float(precision_score(y_true, pred, **kw))
        out["recall"] = float(recall_score(y_true, pred, **kw))
    out["ece"] = expected_calibration_error(y_true, proba)
    out["notes"] = notes
    return {k: out[k] for k in (*METRIC_KEYS, "n", "notes")}
