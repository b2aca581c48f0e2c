"""Metrics against hand-computed values; undefined cases give NaN and a note, never a crash."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmpipe.bench.metrics import (
    COMMON_KEYS,
    METRIC_KEYS,
    POSITIVE_KEYS,
    classification_metrics,
    expected_calibration_error,
    metric_keys,
    nan_metrics,
)


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
    assert m["precision_positive"] == pytest.approx(0.5)
    assert m["recall_positive"] == pytest.approx(0.5)
    assert m["f1_positive"] == pytest.approx(0.5)
    # confidences 0.9 (right), 0.6 (wrong), 0.6 (wrong), 0.8 (right) in three bins:
    # 1/4 |1 - 0.9| + 2/4 |0 - 0.6| + 1/4 |1 - 0.8|
    assert m["ece"] == pytest.approx(0.025 + 0.3 + 0.05)


def test_binary_positive_class_is_one():
    # all predicted 1: precision of class 1 = 2/4, recall 1
    m = classification_metrics([0, 0, 1, 1], _binary([0.7, 0.6, 0.9, 0.8]))
    assert m["precision_positive"] == pytest.approx(0.5)
    assert m["recall_positive"] == pytest.approx(1.0)
    assert m["f1_positive"] == pytest.approx(2 / 3)
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
    assert m["precision_macro"] == pytest.approx(2.5 / 3)
    assert m["recall_macro"] == pytest.approx(2.5 / 3)
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # supports 1, 1, 2: (1 + 2/3 + 2 * 2/3) / 4
    assert m["f1_weighted"] == pytest.approx((1 + 2 / 3 + 4 / 3) / 4)
    # no per-class keys for three classes: nothing a "class 1" column could mislabel
    assert not set(POSITIVE_KEYS) & set(m)
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
    # a model that predicts the one class there is not "balanced" or F1-perfect (1.0 by
    # scikit-learn's definitions; 0.0 when that class is 0)
    for y, scores in (([1, 1, 1], [0.6, 0.7, 0.9]), ([0, 0, 0], [0.1, 0.2, 0.3])):
        m = classification_metrics(y, _binary(scores))
        for key in ("balanced_accuracy", "f1_macro", "precision_macro", "recall_macro",
                    "f1_weighted", "precision_positive", "recall_positive", "f1_positive"):
            assert math.isnan(m[key]), key
        assert m["accuracy"] == 1.0
        assert any("F1, precision and recall undefined" in n for n in m["notes"])


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
    m = classification_metrics(np.zeros(0, int), np.zeros((0, 3)))
    assert set(m) == {*COMMON_KEYS, "n", "notes"} and m["notes"] == ["no samples"]
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


def _sklearn_case(n_classes: int, n: int = 200, absent: int | None = None):
    """Random scores with some signal and tied values; ``absent``: a class never predicted."""
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, n)
    proba = rng.dirichlet(np.ones(n_classes), n)
    proba[np.arange(n), y] += 0.3 * rng.random(n)   # some signal, some ties of scores
    if absent is not None:
        proba[:, absent] *= 0.01
    proba = np.round(proba / proba.sum(1, keepdims=True), 2)
    proba = proba / proba.sum(1, keepdims=True)
    return y, proba


@pytest.mark.parametrize(("n_classes", "absent"), [(2, None), (3, None), (5, None), (3, 1),
                                                   (5, 4)])
def test_values_match_scikit_learn(n_classes, absent):
    from sklearn import metrics as skm

    y, proba = _sklearn_case(n_classes, absent=absent)
    pred = proba.argmax(1)
    if absent is not None:
        assert absent not in pred and absent in y   # the case the test means to cover
    got = classification_metrics(y, proba)
    assert set(got) == {*metric_keys(n_classes), "n", "notes"}
    auc = (skm.roc_auc_score(y, proba[:, 1]) if n_classes == 2
           else skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert got["auc"] == pytest.approx(auc)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        assert got[f"f1_{avg}"] == pytest.approx(
            skm.f1_score(y, pred, average=avg, zero_division=0))
    assert got["precision_macro"] == pytest.approx(
        skm.precision_score(y, pred, average="macro", zero_division=0))
    assert got["recall_macro"] == pytest.approx(
        skm.recall_score(y, pred, average="macro", zero_division=0))
    if n_classes == 2:
        assert got["f1_positive"] == pytest.approx(skm.f1_score(y, pred))
        assert got["precision_positive"] == pytest.approx(skm.precision_score(y, pred))
        assert got["recall_positive"] == pytest.approx(skm.recall_score(y, pred))
    else:
        assert not set(POSITIVE_KEYS) & set(got)


def test_weighted_differs_from_macro_on_imbalanced_classes():
    # 8 of class 0 all right, 2 of class 1 both wrong: F1 1 (class 0... with 2 FP: 16/18), 0
    y = [0] * 8 + [1] * 2
    m = classification_metrics(y, _binary([0.1] * 10))
    f1_0 = 2 * 0.8 * 1.0 / 1.8
    assert m["f1_macro"] == pytest.approx(f1_0 / 2)
    assert m["f1_weighted"] == pytest.approx(0.8 * f1_0)
    assert m["f1_positive"] == 0.0


def test_nan_metrics_follow_the_class_count():
    assert set(nan_metrics(4, 2)) == {*METRIC_KEYS, "n", "notes"}
    m = nan_metrics(4, 5, ["not trained"])
    assert set(m) == {*COMMON_KEYS, "n", "notes"} and m["notes"] == ["not trained"]
    assert m["n"] == 4 and all(math.isnan(m[k]) for k in COMMON_KEYS)


def test_scores_saturated_in_float32_keep_their_order():
    """A float32 softmax gives 1.0 from a margin of about 17 logits: every confident
    subject tied, counting one half, and an overfit network's AUC fell from 1.0 to 0.5
    on these margins (0.93 to 0.73 in a review's draw). Their complements still order
    them; a tie of the rows themselves stays a tie."""
    import torch

    y = np.array([0, 0, 1, 1])
    margins = torch.tensor([18.0, 20.0, 22.0, 24.0])
    logits = torch.stack([torch.zeros(4), margins], 1)
    proba = torch.softmax(logits, -1).numpy()
    assert proba.dtype == np.float32 and (proba[:, 1] == 1.0).all()
    assert classification_metrics(y, proba)["auc"] == pytest.approx(1.0)
    # three classes: class 2 saturated on four subjects, two of them of class 2; its
    # one-vs-rest AUC is 1.0 where the ties gave 0.75, the other classes' unchanged
    from sklearn.metrics import roc_auc_score

    logits3 = torch.stack([torch.zeros(4), torch.zeros(4), margins], 1)
    proba3 = np.concatenate([torch.softmax(logits3, -1).numpy(),
                             np.float32([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])])
    y3 = np.array([0, 1, 2, 2, 0, 1])
    tied = roc_auc_score(y3, proba3, multi_class="ovr", average="macro")
    assert classification_metrics(y3, proba3)["auc"] == pytest.approx(tied + 0.25 / 3)
    # equal rows stay tied: one half
    tied = np.float32([[0.2, 0.8], [0.2, 0.8]])
    assert classification_metrics([0, 1], tied)["auc"] == pytest.approx(0.5)
    # a tie whose complements differ by the float32 rounding of their parts stays a tie
    # (the first version broke it on that noise: 0.822 against 0.856, diff review)
    rounding = np.float32([[0.7, 0.15, 0.15], [0.7, 0.1, 0.2], [0.2, 0.7, 0.1],
                           [0.1, 0.2, 0.7], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]])
    assert np.delete(rounding, 0, 1).astype(np.float64).sum(1)[0] != \
        np.delete(rounding, 0, 1).astype(np.float64).sum(1)[1]
    y6 = np.array([0, 1, 1, 2, 0, 2])
    assert classification_metrics(y6, rounding)["auc"] == pytest.approx(
        roc_auc_score(y6, rounding / rounding.sum(1, keepdims=True), multi_class="ovr"))
    # below one half the complement orders nothing: scikit-learn's ties
    low = np.array([[0.7, 0.3], [0.7000001, 0.3], [0.6, 0.4]])
    assert classification_metrics([1, 0, 1], low)["auc"] == pytest.approx(
        roc_auc_score([1, 0, 1], low[:, 1]))
