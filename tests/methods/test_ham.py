"""HAM and Channel Dropout: generated weights, μ resampling, focal loss, dropout, training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.blocks import nonempty_subsets
from mmpipe.methods.ham import HAM, ChannelDropout
from mmpipe.methods.ham_recipe import focal_loss

N_CLASSES = 3
CLASSES = [(HAM, {}), (ChannelDropout, {})]
IDS = ["ham", "modality_dropout"]


def build(cls, shapes, n_classes=N_CLASSES, **hp):
    torch.manual_seed(0)
    return cls(list(shapes), shapes, n_classes, **hp).eval()


def test_registry_and_defaults():
    assert method_class("ham") is HAM
    assert method_class("modality_dropout") is ChannelDropout
    for cls in (HAM, ChannelDropout):
        d = cls.defaults
        assert (d["optimizer"], d["task_loss"], d["class_weights"], d["sampler"]) == (
            "rmsprop", "focal", True, "none")
    assert HAM.defaults["n_it"] == 10 and ChannelDropout.defaults["p_drop"] == 0.5
    assert ChannelDropout.defaults["task_hidden"] == HAM.defaults["task_hidden"]
    assert not HAM.permutation_invariant and not ChannelDropout.permutation_invariant


def test_bad_hparams_rejected(shapes):
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        HAM(list(shapes), shapes, 2, depth=3)
    with pytest.raises(ValueError, match="task_loss"):
        HAM(list(shapes), shapes, 2, task_loss="hinge")
    with pytest.raises(ValueError, match="hyper_init"):
        HAM(list(shapes), shapes, 2, hyper_init="xavier")
    with pytest.raises(ValueError, match="n_it"):
        HAM(list(shapes), shapes, 2, n_it=0)
    with pytest.raises(ValueError, match="p_drop"):
        ChannelDropout(list(shapes), shapes, 2, p_drop=1.0)


@pytest.mark.parametrize("cls,hp", CLASSES, ids=IDS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_output_shape_and_no_modality_row(cls, hp, shapes, batch, n_classes):
    x, present, _ = batch
    present = present.clone()
    present[:2] = False
    model = build(cls, shapes, n_classes=n_classes, **hp)
    for train in (False, True):
        model.train(train)
        out = model(x, present)
        assert out.shape == (len(present), n_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("cls,hp", CLASSES, ids=IDS)
def test_masked_values_ignored(cls, hp, shapes, batch, assert_masking):
    x, present, _ = batch
    model = build(cls, shapes, **hp)
    assert_masking(model, x, present)


@pytest.mark.parametrize("cls", [HAM, ChannelDropout])
def test_two_modalities_and_higher_rank_inputs(cls, make_batch):
    shapes = {"a": (2, 3), "b": (1, 4)}
    x, present, y = make_batch(shapes, batch=8, n_classes=2)
    model = build(cls, shapes, n_classes=2)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))
    model.train()
    loss, _ = model.loss(x, present, y)
    loss.backward()
    assert torch.isfinite(loss)


def test_hypernetwork_outputs_every_task_parameter(shapes):
    model = build(HAM, shapes)
    d_in, hidden, c = sum(s[0] for s in shapes.values()), 32, N_CLASSES
    n_task = d_in * hidden + hidden + hidden * c + c
    assert model.n_task_params == n_task
    linears = [m for m in model.hypernet if isinstance(m, nn.Linear)]
    assert len(linears) == 4                                    # 4 linear layers
    assert [lin.out_features for lin in linears] == [32, 8, 32, n_task]
    assert linears[0].in_features == len(shapes)                # reads μ only
    assert all(isinstance(m, nn.ReLU) for m in model.hypernet[1:-1:2])
    # the task model has no parameter of its own: the hypernetwork is everything
    assert model.trainable_parameters() == sum(p.numel() for p in model.hypernet.parameters())
    # ChannelDropout is the same task network with learned weights
    assert build(ChannelDropout, shapes).trainable_parameters() == n_task


def test_generated_weights_depend_on_mu(shapes):
    model = build(HAM, shapes)
    mus = nonempty_subsets(len(shapes)).long()
    assert mus.shape == (2 ** len(shapes) - 1, len(shapes))
    (w1, b1), (w2, b2) = model.generate(mus)
    assert w1.shape == (len(mus), 32, sum(s[0] for s in shapes.values()))
    assert w2.shape == (len(mus), N_CLASSES, 32) and b2.shape == (len(mus), N_CLASSES)
    flat = torch.cat([w1.flatten(1), b1, w2.flatten(1), b2], 1)
    assert flat.shape[1] == model.n_task_params
    dist = torch.cdist(flat, flat)
    assert (dist + torch.eye(len(mus)) * 1e9).min() > 1e-3     # every pattern its own model
    # scaled init: generated weights spread like PyTorch's default linear init
    for w in (w1, w2):
        target = 1 / math.sqrt(3 * w.shape[-1])
        assert 0.7 * target < float(w.detach().std()) < 1.3 * target


def test_forward_is_the_task_model_of_each_subjects_pattern(shapes, batch):
    x, present, _ = batch
    model = build(HAM, shapes)
    out = model(x, present)
    for i in (0, 1, 5, 17):
        (w1, b1), (w2, b2) = model.generate(present[i:i + 1].long())
        inp = torch.cat([x[m][i] * present[i, j] for j, m in enumerate(shapes)])
        expected = F.linear(F.relu(F.linear(inp, w1[0], b1[0])), w2[0], b2[0])
        torch.testing.assert_close(out[i], expected)
        # alone or in a batch: the same prediction
        torch.testing.assert_close(model({m: v[i:i + 1] for m, v in x.items()},
                                         present[i:i + 1])[0], out[i])


def test_mu_resampled_every_n_it_iterations(shapes, batch):
    x, present, y = batch
    model = build(HAM, shapes).train()
    torch.manual_seed(3)
    mus, logits_seen = [], []
    for _ in range(25):
        _, logits = model.loss(x, present, y)
        mus.append(model.current_mu.clone())
        logits_seen.append(logits.detach())
    assert model.mu_draws == 3                                 # calls 0, 10, 20
    for block in (mus[0:10], mus[10:20], mus[20:25]):
        assert all(torch.equal(m, block[0]) for m in block)
        assert block[0].any()                                  # never the empty pattern
    # over many draws μ does change
    for _ in range(75):
        model.loss(x, present, y)
        mus.append(model.current_mu.clone())
    assert model.mu_draws == 10
    assert len({tuple(m.tolist()) for m in mus}) > 1
    # evaluation: no draw, each subject's own presence
    model.eval()
    with torch.no_grad():
        loss, logits = model.loss(x, present, y)
    assert model.mu_draws == 10
    torch.testing.assert_close(logits, model(x, present))
    torch.testing.assert_close(loss, focal_loss(logits, y, 2.0))


def test_effective_presence_is_present_and_mu_never_empty(shapes, batch):
    x, present, y = batch
    model = build(HAM, shapes, n_it=1).train()
    torch.manual_seed(0)
    for _ in range(40):
        eff = model.training_presence(present)
        mu = model.current_mu
        assert not (eff & ~present).any()                      # only drops modalities
        assert eff.any(1)[present.any(1)].all()                # nobody emptied
        kept = (present & mu).any(1)
        assert torch.equal(eff[kept], (present & mu)[kept])    # present AND μ
        assert torch.equal(eff[~kept], present[~kept])         # else the own presence
    # the loss feeds the effective presence to the hypernetwork
    torch.manual_seed(5)
    _, logits = model.loss(x, present, y)
    torch.manual_seed(5)
    model._calls = 0
    eff = model.training_presence(present)
    torch.testing.assert_close(logits, model(x, eff))
    # mu_sampling off: training sees the natural presence
    plain = build(HAM, shapes, mu_sampling=False).train()
    _, logits = plain.loss(x, present, y)
    torch.testing.assert_close(logits, plain(x, present))
    assert plain.mu_draws == 0


def test_focal_loss():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 3, generator=gen)
    y = torch.randint(3, (20,), generator=gen)
    w = torch.tensor([0.5, 2.0, 1.0])
    torch.testing.assert_close(focal_loss(logits, y, 0.0), F.cross_entropy(logits, y))
    torch.testing.assert_close(focal_loss(logits, y, 0.0, w), F.cross_entropy(logits, y, weight=w))
    p = F.softmax(logits, -1)[torch.arange(20), y]
    expected = (w[y] * -(1 - p) ** 2 * p.log()).sum() / w[y].sum()
    torch.testing.assert_close(focal_loss(logits, y, 2.0, w), expected)
    assert focal_loss(logits, y, 2.0) < F.cross_entropy(logits, y)
    # the methods use it, or cross-entropy when asked
    shapes = {"a": (4,), "b": (3,)}
    x = {"a": torch.randn(6, 4), "b": torch.randn(6, 3)}
    present = torch.ones(6, 2, dtype=torch.bool)
    yy = torch.tensor([0, 1, 2, 0, 1, 2])
    for cls in (HAM, ChannelDropout):
        model = build(cls, shapes, focal_gamma=0.0)
        loss, logits = model.loss(x, present, yy, w)
        torch.testing.assert_close(loss, F.cross_entropy(logits, yy, weight=w))
        model = build(cls, shapes, task_loss="ce", focal_gamma=5.0)
        loss, logits = model.loss(x, present, yy)
        torch.testing.assert_close(loss, F.cross_entropy(logits, yy))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 2.0])
def test_focal_loss_of_a_sure_prediction_has_finite_gradients(gamma):
    """At a margin of 17 or more, 1 − p is exactly 0 in float32: with 0 < γ < 1 the
    power's infinite derivative there times 0 gave NaN gradients from a finite loss, and
    the optimiser wrote NaN into the weights."""
    logits = torch.tensor([[20.0, 0.0], [0.5, 0.0]], requires_grad=True)
    loss = focal_loss(logits, torch.tensor([0, 0]), gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), logits.grad
    assert logits.grad[0].abs().max() < 1e-6  # the sure row adds (almost) nothing
    # the other row's gradient is the formula's, as before
    p = torch.sigmoid(torch.tensor(0.5))
    expected = (1 - p) ** gamma * (1 - gamma * p * torch.log(p) / (1 - p)) * (1 - p) / 2
    torch.testing.assert_close(logits.grad[1, 1], expected)


def test_channel_dropout_never_empties_a_subject(shapes, batch):
    _, present, _ = batch
    present = present.clone()
    present[0] = False                                         # a subject with nothing
    model = build(ChannelDropout, shapes).train()
    torch.manual_seed(0)
    kept = torch.zeros(present.shape)
    for _ in range(300):
        mask = model.drop_mask(present)
        assert not (mask & ~present).any()
        assert mask.any(1)[present.any(1)].all()
        assert not mask[0].any()
        kept += mask
    # each present modality survives about half the time (more for single-modality rows)
    full = present.all(1)
    rate = kept[full].mean() / 300
    assert 0.4 < float(rate) < 0.65
    single = present.sum(1) == 1
    assert torch.equal(kept[single], 300.0 * present[single].float())


def test_channel_dropout_only_in_training(shapes, batch):
    x, present, _ = batch
    model = build(ChannelDropout, shapes)
    zero_filled = torch.cat([x[m] * present[:, j:j + 1] for j, m in enumerate(shapes)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x, present), model.mlp(zero_filled))
        torch.testing.assert_close(model(x, present), model(x, present))
        model.train()                                          # dropout 0: only the masking
        torch.manual_seed(0)
        train_out = model(x, present)
    multi = present.sum(1) > 1
    assert not torch.allclose(train_out[multi], model.eval()(x, present)[multi])
    single = present.sum(1) == 1                               # nothing to drop there
    torch.testing.assert_close(train_out[single], model(x, present)[single])


@pytest.mark.parametrize("cls", [HAM, ChannelDropout], ids=IDS)
def test_fit_learns(cls, shapes, separable, bench_data):
    from mmpipe.bench.metrics import classification_metrics
    from mmpipe.bench.trainer import fit, predict_proba

    def bench(draw):  # class means fixed, presence and noise from the draw: train and
        # validation are two draws of one distribution
        return bench_data(*separable(shapes, n=120, n_classes=2, seed=1000 + draw,
                                     means_seed=0), tag=f"s{draw}")

    train, val = bench(0), bench(1)
    model = build(cls, shapes, n_classes=2)
    cfg = {k: model.hparams[k] for k in ("optimizer", "sampler", "class_weights")}
    result = fit(model, train, val, {**cfg, "lr": 1e-3, "max_epochs": 15, "patience": 15,
                                     "batch_size": 16}, seed=0)
    assert result.epochs["train"] >= 1
    proba = predict_proba(model, val)
    assert classification_metrics(val.y, proba)["balanced_accuracy"] > 0.85


def test_report_notes_give_the_recipe_that_ran(shapes):
    """Channel Dropout's note said p=0.5 and HAM's focal gamma=2 whatever the config set."""
    ham = " ".join(build(HAM, shapes, task_loss="focal", focal_gamma=1.0).report_notes())
    assert "focal loss (gamma 1)" in ham and "gamma=2" not in ham
    drop = " ".join(build(ChannelDropout, shapes, p_drop=0.2, task_loss="ce",
                          optimizer="adam").report_notes())
    assert "p=0.2" in drop and "cross-entropy, adam" in drop
    assert "p=0.5" not in drop and "focal" not in drop
