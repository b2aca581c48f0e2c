"""The trainer's noise augmentation (MMARE thesis 4.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmpipe.bench.run import build_method
from mmpipe.bench.trainer import NotTrainable, _augment, fit, predict_proba


def test_noise_lands_on_present_features_of_a_share_p_of_the_rows_only():
    n = 4000
    x = {"a": torch.zeros(n, 8), "b": torch.zeros(n, 3, 4)}
    present = torch.ones(n, 2, dtype=torch.bool)
    present[::2, 1] = False
    out = _augment(x, present, 0.3, 0.1, torch.Generator().manual_seed(0))
    for j, (m, v) in enumerate(out.items()):
        assert v.shape == x[m].shape
        hit = v.reshape(n, -1).ne(0).any(1)
        assert not hit[~present[:, j]].any()  # an absent modality stays absent
        share = hit[present[:, j]].float().mean().item()
        assert abs(share - 0.3) < 0.04
        noise = v[hit]
        assert noise.ne(0).all() and abs(noise.std().item() - 0.1) < 0.01


def test_noise_follows_the_generator_and_leaves_the_input_alone():
    x = {"a": torch.randn(64, 5)}
    present = torch.ones(64, 1, dtype=torch.bool)
    before = x["a"].clone()
    a = _augment(x, present, 0.3, 0.1, torch.Generator().manual_seed(4))
    b = _augment(x, present, 0.3, 0.1, torch.Generator().manual_seed(4))
    assert torch.equal(a["a"], b["a"]) and torch.equal(x["a"], before)
    assert _augment(x, present, 0.0, 0.1, torch.Generator()) is x


def _diverging(after_calls: int):
    """concat_zero whose training loss turns inf after ``after_calls`` training batches."""
    from tests.bench.test_selection import _data

    data = _data(n=60)
    train, val = data.subset(np.arange(40)), data.subset(np.arange(40, 60))
    torch.manual_seed(0)  # the same initial weights each call
    method = build_method({"type": "concat_zero"}, train)
    loss, calls = method.loss, [0]

    def diverging_loss(*args):
        value, logits = loss(*args)
        if not method.training:  # the validation loss may call it too
            return value, logits
        calls[0] += 1
        return (value * float("inf") if calls[0] > after_calls else value), logits

    method.loss = diverging_loss
    return method, train, val


def test_a_phase_that_diverges_after_a_checkpoint_keeps_it():
    """A non-finite loss failed the whole trial even when early stopping held a checkpoint
    of an earlier epoch: with one trial (or every trial so) the seed was not trained and
    left out of the method's mean."""
    cfg = {"max_epochs": 30, "patience": 100, "min_epochs": 1}
    method, train, val = _diverging(after_calls=5)
    result = fit(method, train, val, cfg, seed=0)
    at = result.diverged["train"]
    assert result.epochs["train"] == at and 1 <= result.best_epoch["train"] < at
    # the weights kept are those of a run stopped before that epoch
    clean, *_ = _diverging(after_calls=10**9)
    reference = fit(clean, train, val, {**cfg, "max_epochs": at - 1}, seed=0)
    assert reference.best_epoch == result.best_epoch
    np.testing.assert_array_equal(predict_proba(method, val), predict_proba(clean, val))
    # diverged before any checkpoint: the trial fails, as before
    method, train, val = _diverging(after_calls=0)
    with pytest.raises(NotTrainable, match="the training loss is inf in phase 'train', epoch 1"):
        fit(method, train, val, cfg, seed=0)


def test_cross_validation_records_the_folds_that_diverged():
    from mmpipe.bench.selection import _fold_divergence
    from mmpipe.bench.trainer import FitResult

    folds = [FitResult(), FitResult(diverged={"train": 7}), FitResult()]
    assert _fold_divergence(folds) == {"train": [None, 7, None]}
    assert _fold_divergence([FitResult(), FitResult()]) == {}


def test_a_refit_whose_last_step_leaves_non_finite_weights_is_not_trained():
    """A refit has no validation split: a last step with a finite loss and a NaN gradient
    returned NaN weights unflagged, and scoring them crashed the run."""
    method, train, _ = _diverging(after_calls=10**9)
    loss, calls = method.loss, [0]

    def nan_gradient_on_the_last_step(x, present, y, class_weight=None):
        value, logits = loss(x, present, y, class_weight)
        if method.training:
            calls[0] += 1
            if calls[0] == 5:  # 40 subjects, one batch an epoch: epoch 5's step
                # sqrt at 0: a finite loss whose gradient is 0 × inf
                value = value + 0.0 * torch.sqrt(next(method.parameters()).sum() * 0.0)
        return value, logits

    method.loss = nan_gradient_on_the_last_step
    with pytest.raises(NotTrainable, match="weights are not finite after phase 'train', "
                                           "epoch 5"):
        fit(method, train, None, {}, seed=0, epochs={"train": 5})


def test_a_class_the_training_split_lacks_weighs_nothing():
    """Weighted as if it had one subject, a class the training split lacks carried about
    98 % of the validation loss early stopping reads; the classes it has keep their
    weights n / (classes × n_c)."""
    from mmpipe.bench.data import BenchData

    rng = np.random.default_rng(0)
    y = np.r_[rng.integers(0, 2, 100), rng.integers(0, 3, 30)]
    data = BenchData(subject_id=[str(i) for i in range(130)], y=y,
                     x={"a": (rng.normal(size=(130, 5)) + y[:, None]).astype(np.float32)},
                     present=np.ones((130, 1), bool), modalities=["a"], n_classes=3)
    train, val = data.subset(np.arange(100)), data.subset(np.arange(100, 130))
    method = build_method({"type": "concat_zero"}, train)
    seen, loss = [], method.loss
    method.loss = lambda x, p, yy, w=None: (seen.append(w), loss(x, p, yy, w))[1]
    fit(method, train, val, {"class_weights": True, "max_epochs": 1}, seed=0)
    counts = np.bincount(train.y, minlength=3)
    assert counts[2] == 0
    torch.testing.assert_close(seen[0], torch.tensor([100 / (2 * counts[0]),
                                                      100 / (2 * counts[1]), 0.0],
                                                     dtype=torch.float32))


def test_a_validation_split_of_classes_training_lacks_is_scored_unweighted():
    """Every validation subject of a class the training split lacks (weight 0): the
    weighted validation loss was 0/0, and early stopping kept no epoch."""
    from mmpipe.bench.data import BenchData

    rng = np.random.default_rng(0)
    y = np.r_[rng.integers(0, 2, 100), np.full(10, 2)]
    data = BenchData(subject_id=[str(i) for i in range(110)], y=y,
                     x={"a": (rng.normal(size=(110, 5)) + y[:, None]).astype(np.float32)},
                     present=np.ones((110, 1), bool), modalities=["a"], n_classes=3)
    train, val = data.subset(np.arange(100)), data.subset(np.arange(100, 110))
    method = build_method({"type": "concat_zero"}, train)
    result = fit(method, train, val, {"class_weights": True, "max_epochs": 3,
                                      "monitor": "loss"}, seed=0)
    assert result.best_epoch["train"] >= 1
    assert all(np.isfinite(float(line.split("\t")[3])) for line in result.lines)
    # late fusion's term of a modality only such subjects have is 0/0 alone, though
    # other validation subjects weigh
    x = {"a": rng.normal(size=(54, 5)).astype(np.float32),
         "b": rng.normal(size=(54, 3)).astype(np.float32)}
    present = np.ones((54, 2), bool)
    present[40:50, 1] = False
    x["b"][~present[:, 1]] = 0
    data = BenchData(subject_id=[f"s{i}" for i in range(54)],
                     y=np.r_[np.tile([0, 1], 25), np.full(4, 2)], x=x, present=present,
                     modalities=["a", "b"], n_classes=3)
    train, val = data.subset(np.arange(40)), data.subset(np.arange(40, 54))
    torch.manual_seed(0)
    method = build_method({"type": "late_fusion"}, train)
    result = fit(method, train, val, {"class_weights": True, "max_epochs": 3,
                                      "patience": 3}, seed=0)
    assert result.best_epoch["train"] >= 1
    assert all(np.isfinite(float(line.split("\t")[3])) for line in result.lines)


def _nan_validation_loss(after_calls: int):
    """concat_zero whose validation loss turns NaN, its logits finite, after that many
    validation passes."""
    method, train, val = _diverging(after_calls=10**9)
    loss, calls = method.validation_loss, [0]

    def nan_after(x, present, y, class_weight=None):
        value, logits = loss(x, present, y, class_weight)
        calls[0] += 1
        return (value * float("nan") if calls[0] > after_calls else value), logits

    method.validation_loss = nan_after
    return method, train, val


def test_a_non_finite_validation_loss_with_finite_outputs_is_a_divergence():
    """A validation loss of NaN beside finite logits (an auxiliary term gone bad) kept no
    checkpoint under ``monitor: loss`` and let the phase run on: it is a divergence, as a
    non-finite training loss is, and keeps the checkpoint taken before it."""
    cfg = {"max_epochs": 30, "patience": 100, "min_epochs": 1, "monitor": "loss"}
    method, train, val = _nan_validation_loss(after_calls=3)
    result = fit(method, train, val, cfg, seed=0)
    assert result.diverged == {"train": 4} and result.epochs["train"] == 4
    assert 1 <= result.best_epoch["train"] <= 3
    method, train, val = _nan_validation_loss(after_calls=0)
    with pytest.raises(NotTrainable, match="the validation loss is nan in phase 'train', "
                                           "epoch 1"):
        fit(method, train, val, cfg, seed=0)


def test_training_draws_are_not_the_draws_that_made_the_weights():
    """Each trial seeds torch with the seed, builds the method, then fit seeded torch and
    the batch generator with the same seed again: the first dropout masks, noise and
    batch order were drawn from the very numbers that had initialised the weights."""
    import torch

    from mmpipe.bench.trainer import seed_everything

    torch.manual_seed(3)
    weights = torch.empty(1000).uniform_()
    gen = seed_everything(3)
    dropout, order = torch.rand(1000), torch.rand(1000, generator=gen)
    assert not torch.equal(dropout, weights) and not torch.equal(order, weights)
    assert not torch.equal(dropout, order)
    gen = seed_everything(3)  # still one seed's draws, run after run
    assert torch.equal(torch.rand(1000), dropout)
    assert torch.equal(torch.rand(1000, generator=gen), order)
