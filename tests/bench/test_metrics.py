"""Metrics against hand-computed values; undefined cases give NaN and a note, never a crash."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmpipe.bench.metrics import METRIC_KEYS, classification_metrics, expected_calibration_error


def _binary(p1):
    p1 = np.asarray(p1, dtype=float)
    return np.column_stack([1 - p1, p1])


def test_binary_by_hand():
    # predictions 0, 1, 0, 1 for truth 0, 0, 1, 1
    m = classification_metrics([0, 0, 1, 1], _binary([0.1, 0.6, 0.4, 0.8]))
    assert m["n"] == 4 and m["notes"] == []
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    # positive scores 0.4, 0.8 vs negative 0.1, 0.6: 3 of 4 pairs ordered
    assert m["auc"] == pytest.approx(0.75)
    # class 1: TP 1 (0.8), FP 1 (0.6), FN 1 (0.4)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    # confidences 0.9 (right), 0.6 (wrong), 0.6 (wrong), 0.8 (right) in three bins:
    # 1/4 |1 - 0.9| + 2/4 |0 - 0.6| + 1/4 |1 - 0.8|
    assert m["ece"] == pytest.approx(0.025 + 0.3 + 0.05)


def test_binary_positive_class_is_one():
    # all predicted 1: precision of class 1 = 2/4, recall 1
    m = classification_metrics([0, 0, 1, 1], _binary([0.7, 0.6, 0.9, 0.8]))
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_multiclass_by_hand():
    y = [0, 1, 2, 2]
    proba = np.array([[0.7, 0.2, 0.1],     # 0 right
                      [0.3, 0.4, 0.3],     # 1 right
                      [0.2, 0.5, 0.3],     # 1 wrong (truth 2)
                      [0.1, 0.2, 0.7]])    # 2 right
    m = classification_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    # per class precision 1, 1/2, 1; recall 1, 1, 1/2; F1 1, 2/3, 2/3 (macro)
    assert m["precision"] == pytest.approx(2.5 / 3)
    assert m["recall"] == pytest.approx(2.5 / 3)
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # one-vs-rest AUCs: class 0 1, class 1 2/3, class 2 (1 + 0.5 + 1 + 1) / 4
    assert m["auc"] == pytest.approx((1 + 2 / 3 + 0.875) / 3)
    assert m["auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    # confidences 0.7, 0.7 (right) | 0.4 (right) | 0.5 (wrong)
    assert m["ece"] == pytest.approx(0.5 * 0.3 + 0.25 * 0.6 + 0.25 * 0.5)


def test_auc_undefined_with_one_class_is_nan_with_a_note():
    m = classification_metrics([1, 1, 1], _binary([0.2, 0.7, 0.9]))
    assert math.isnan(m["auc"])
    assert any("auc undefined" in n for n in m["notes"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)


def test_multiclass_with_an_absent_class_averages_the_others():
    y = [0, 0, 1, 1]
    proba = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    m = classification_metrics(y, proba)
    expected = np.mean([roc_auc_score(np.array(y) == c, proba[:, c]) for c in (0, 1)])
    assert m["auc"] == pytest.approx(expected)
    assert any("absent" in n for n in m["notes"])


def test_empty_and_invalid_inputs():
    m = classification_metrics(np.zeros(0, int), np.zeros((0, 2)))
    assert m["n"] == 0 and all(math.isnan(m[k]) for k in METRIC_KEYS)
    with pytest.raises(ValueError):
        classification_metrics([0, 1], np.ones((3, 2)) / 2)
    with pytest.raises(ValueError):
        classification_metrics([0, 2], np.ones((2, 2)) / 2)


def test_ece_perfect_and_worst():
    assert expected_calibration_error([0, 1], _binary([0.0, 1.0])) == pytest.approx(0.0)
    assert expected_calibration_error([1, 0], _binary([0.0, 1.0])) == pytest.approx(1.0)
    # 10 predictions at confidence 0.7, 7 right: calibrated
    y = [1] * 7 + [0] * 3
    assert expected_calibration_error(y, _binary([0.7] * 10)) == pytest.approx(0.0)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_values_match_scikit_learn(n_classes):
    from sklearn import metrics as skm

    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 200)
    proba = rng.dirichlet(np.ones(n_classes), 200)
    proba[np.arange(200), y] += 0.3 * rng.random(200)   # some signal, some ties of scores
    proba = np.round(proba / proba.sum(1, keepdims=True), 2)
    proba = proba / proba.sum(1, keepdims=True)
    pred = proba.argmax(1)
    got = classification_metrics(y, proba)
    avg = "binary" if n_classes == 2 else "macro"
    auc = (skm.roc_auc_score(y, proba[:, 1]) if n_classes == 2
           else skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert got["auc"] == pytest.approx(auc)
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average=avg))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred, average=avg))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred, average=avg))
