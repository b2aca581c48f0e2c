"""DRIM: quiet softmax, masked attention, shared/unique losses, adversarial step, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.drim import DRIM, quiet_softmax, supcon_loss

N_CLASSES = 3
SMALL = {"dim": 16, "encoder_hidden": 32, "heads": 4, "dim_head": 8, "mlp_dim": 16,
         "disc_hidden": 32}


def build(shapes, n_classes=N_CLASSES, **hp):
    torch.manual_seed(0)
    return DRIM(list(shapes), shapes, n_classes, **{**SMALL, **hp}).eval()


def test_registry_and_official_defaults():
    assert method_class("drim") is DRIM
    d = DRIM.defaults
    assert (d["dim"], d["encoder_hidden"], d["dropout"]) == (128, 256, 0.2)
    assert (d["depth"], d["heads"], d["dim_head"], d["mlp_dim"]) == (1, 16, 64, 128)
    assert (d["temperature"], d["shared_weight"], d["unique_weight"]) == (0.07, 1.0, 0.8)
    assert (d["disc_lr"], d["disc_weight_decay"], d["disc_hidden"]) == (1e-3, 3e-4, 1024)
    assert (d["optimizer"], d["schedule"], d["lr"], d["weight_decay"]) == (
        "adamw", "cosine", 1e-3, 1e-2)
    assert (d["max_epochs"], d["batch_size"]) == (30, 24)
    assert d["sampler"] == "none"    # train_drimsurv.py: a plain shuffled loader
    assert DRIM.permutation_invariant


def test_bad_hparams_rejected(shapes):
    with pytest.raises(ValueError, match="quiet_softmax"):
        DRIM(list(shapes), shapes, 2, quiet_softmax="plain")
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        DRIM(list(shapes), shapes, 2, alpha=1.0)


def test_output_shape_and_no_modality_row(shapes, batch, assert_no_modality_rows_identical):
    x, present, _ = batch
    model = build(shapes)
    out = model(x, present)
    assert out.shape == (len(present), N_CLASSES) and torch.isfinite(out).all()
    # no modality: the CLS token attends to itself only, so every such row is the same
    assert_no_modality_rows_identical(model, x)


def test_any_number_of_modalities_and_classes(make_batch):
    shapes = {"a": (2, 5), "b": (7,)}
    x, present, y = make_batch(shapes, batch=8, n_classes=2)
    model = build(shapes, n_classes=2)
    assert model(x, present).shape == (8, 2)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))


def test_masked_values_ignored(shapes, batch, assert_masking):
    x, present, _ = batch
    model = build(shapes)
    assert_masking(model, x, present)


@pytest.mark.parametrize("softmax", ["official", "exact"])
def test_permutation_invariant(shapes, batch, softmax, assert_permutation_invariant):
    x, present, _ = batch
    assert_permutation_invariant(build(shapes, quiet_softmax=softmax), x, present)


def test_quiet_softmax():
    torch.manual_seed(0)
    s = 3 * torch.randn(5, 7)
    exact = quiet_softmax(s, variant="exact")
    torch.testing.assert_close(exact, s.exp() / (1 + s.exp().sum(-1, keepdim=True)))
    torch.testing.assert_close(exact, F.softmax(s, -1) * (1 - 1 / (1 + s.exp().sum(-1, keepdim=True))))
    shifted = s - s.amax(-1, keepdim=True)
    official = quiet_softmax(s, variant="official")
    torch.testing.assert_close(official, shifted.exp() / (1 + shifted.exp().sum(-1, keepdim=True)))
    for w in (exact, official):
        assert (w.sum(-1) < 1).all() and (w > 0).all()
    # the +1 lets "exact" put almost no weight anywhere; "official" keeps at least 1/2
    low = torch.full((1, 4), -20.0)
    assert quiet_softmax(low, variant="exact").sum() < 1e-6
    assert quiet_softmax(low, variant="official").sum() >= 0.5
    # stable for large scores
    big = torch.tensor([[1e4, 0.0, -1e4]])
    assert torch.isfinite(quiet_softmax(big, variant="exact")).all()
    with pytest.raises(ValueError):
        quiet_softmax(s, variant="plain")


@pytest.mark.parametrize("softmax", ["official", "exact"])
def test_attention_on_absent_modalities_is_exactly_zero(shapes, batch, softmax,
                                                        assert_attention_masked):
    x, present, _ = batch
    model = build(shapes, quiet_softmax=softmax, depth=2)
    shared, unique = model.embed(x, present)
    _, maps = model.fuse(shared, unique, present)
    for stage, mask in (("shared", present),
                        ("unique", torch.cat([present, torch.ones(len(present), 1).bool()], 1))):
        tokens = torch.cat([torch.ones(len(present), 1).bool(), mask], 1)  # CLS first
        assert len(maps[stage]) == 2
        for weights in maps[stage]:                  # [B, h, N, N] per layer
            assert_attention_masked(weights, tokens)
            assert torch.all(weights[:, :, 0].sum(-1) < 1)  # quiet softmax


def test_embeddings_are_l2_normalised_and_zero_where_absent(shapes, batch):
    x, present, _ = batch
    shared, unique = build(shapes).embed(x, present)
    for z in (shared, unique):
        torch.testing.assert_close(z[present].norm(dim=-1), torch.ones(int(present.sum())))
        assert torch.all(z[~present] == 0)


def test_supcon_decreases_when_a_patients_embeddings_agree():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 3, 32), dim=-1)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[4, 1:] = False
    before = supcon_loss(z, present)
    aligned = z.clone()
    aligned[0] = z[0, 0]                       # patient 0: identical shared embeddings
    assert supcon_loss(aligned, present) < before
    everyone = z[:, :1].expand_as(z).contiguous()
    assert supcon_loss(everyone, present) < supcon_loss(aligned, present)


def test_supcon_matches_the_official_formula_and_ignores_absent():
    torch.manual_seed(1)
    batch, n_mod, tau = 5, 3, 0.07
    z = F.normalize(torch.randn(batch, n_mod, 8), dim=-1)
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]]).bool()
    # explicit per-anchor SupCon over the present (patient, modality) pairs
    total = 0.0
    for i in range(batch):
        for a in range(n_mod):
            if not present[i, a]:
                continue
            others = [(k, b) for k in range(batch) for b in range(n_mod)
                      if present[k, b] and (k, b) != (i, a)]
            pos = [(k, b) for (k, b) in others if k == i]
            if not pos:
                continue
            sims = {kb: float(z[i, a] @ z[kb]) / tau for kb in others}
            shift = 1 / tau                          # the row maximum: self-similarity
            log_den = np.log(sum(np.exp(s - shift) for s in sims.values()) + 1e-6)
            total += -sum(sims[kb] - shift - log_den for kb in pos) / (len(pos) + 1e-6)
    expected = total / (batch * n_mod)
    torch.testing.assert_close(supcon_loss(z, present), torch.tensor(expected, dtype=torch.float32),
                               rtol=1e-4, atol=1e-5)
    garbage = z.clone()
    garbage[~present] = 5.0
    torch.testing.assert_close(supcon_loss(garbage, present), supcon_loss(z, present))


def test_loss_is_task_plus_weighted_shared_and_unique(shapes, batch):
    x, present, y = batch
    model = build(shapes)
    with torch.no_grad():
        terms = model.loss_terms(x, present, y)
        total, logits = model.loss(x, present, y)
    assert terms["shared"] > 0 and terms["unique"] > 0
    torch.testing.assert_close(total, terms["task"] + 1.0 * terms["shared"]
                               + 0.8 * terms["unique"])
    torch.testing.assert_close(terms["task"], F.cross_entropy(model(x, present), y))
    torch.testing.assert_close(logits, model(x, present))
    plain = build(shapes, shared_weight=0.0, unique_weight=0.0)
    with torch.no_grad():
        torch.testing.assert_close(plain.loss(x, present, y)[0],
                                   F.cross_entropy(plain(x, present), y))
    assert set(terms["pairs"]) == set(shapes)    # every modality present twice or more
    # early stopping watches the task: the auxiliary terms move with the discriminators
    with torch.no_grad():
        watched, watched_logits = model.validation_loss(x, present, y)
    torch.testing.assert_close(watched, terms["task"])
    torch.testing.assert_close(watched_logits, logits)




def test_a_temperature_of_its_own_keeps_the_official_base(shapes, batch):
    """The official ContrastiveLoss keeps base_temperature at 0.07 whatever temperature it
    is given: the term is scaled by t / 0.07, SupCon's normalisation of its gradient."""
    x, present, y = batch
    model = build(shapes, temperature=0.1)
    with torch.no_grad():
        shared, _ = model.embed(x, present.bool())
        terms = model.loss_terms(x, present, y)
    torch.testing.assert_close(terms["shared"], supcon_loss(shared, present.bool(), 0.1, 0.07))

def test_report_notes_give_the_encoders_widths(shapes):
    """A tuned width (dim is DRIM's capacity knob) was described as the default's 128."""
    note = build(shapes, dim=64, encoder_hidden=48).report_notes()[0]
    assert "Linear-48-GELU-Linear-64" in note


def test_report_notes_say_which_checkpoint_and_batches_ran(shapes):
    """The note said the best-validation checkpoint was kept and batches were plain
    shuffled even under min_epochs = max_epochs (the official keep-the-last rule the
    docstring gives) or a weighted sampler."""
    default = build(shapes).report_notes()[2]
    assert "best-validation checkpoint by the task loss is kept" in default
    assert "plain shuffled" in default
    last = build(shapes, min_epochs=30, sampler="weighted").report_notes()[2]
    assert "last epoch's weights are kept" in last and "best-validation" not in last
    assert "weighted sampler" in last and "plain shuffled batches as" not in last
    by_auc = build(shapes, monitor="auc", min_epochs=5).report_notes()[2]
    assert "by validation auc from epoch 5 on" in by_auc

def test_unique_loss_reaches_only_unique_encoders(shapes, batch):
    x, present, y = batch
    model = build(shapes)
    model.train()
    model.loss_terms(x, present, y)["unique"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0
               for p in model.shared_encoders.parameters())
    assert all(p.grad is None for p in model.discriminators.parameters())
    assert sum(p.grad.abs().sum() for p in model.unique_encoders.parameters()
               if p.grad is not None) > 0


def test_pairs_are_joint_and_rolled_shared(shapes, batch):
    x, present, _ = batch
    model = build(shapes)
    shared, unique = model.embed(x, present)
    pairs = model._pairs(shared, unique, present)
    rows = present[:, 2]
    joint, marginal = pairs["wsi"]
    torch.testing.assert_close(joint, torch.cat([shared[rows, 2], unique[rows, 2]], 1))
    torch.testing.assert_close(marginal[:, 16:], unique[rows, 2])
    torch.testing.assert_close(marginal[:, :16], shared[rows, 2].roll(1, 0))
    one = present.clone()
    one[:, 0] = False
    one[3, 0] = True                             # ct present once: skipped
    assert "ct" not in model._pairs(shared, unique, one)


def test_discriminators_step_only_in_training(shapes, batch):
    x, present, y = batch
    model = build(shapes)
    before = [p.detach().clone() for p in model.discriminators.parameters()]
    with torch.no_grad():
        model.loss(x, present, y)                # validation: eval, no grad
    model.train()
    with torch.no_grad():
        model.loss(x, present, y)                # train mode but no grad: still no step
    after = list(model.discriminators.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    loss, _ = model.loss(x, present, y)          # a training call keeps its pairs
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    loss.backward()
    assert all(p.grad is None for p in model.discriminators.parameters())
    model.after_step()                           # and the trainer's after_step steps them
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    stepped = [p.detach().clone() for p in after]
    model.after_step()                           # once: the pairs are spent
    assert all(torch.equal(a, b) for a, b in zip(stepped, after, strict=True))
    model.loss(x, present, y)
    with pytest.raises(RuntimeError, match="after_step"):
        model.loss(x, present, y)                # a loop that skips the step is caught
    trained = {id(p) for p in model.phases({})[0].parameters()}
    assert not trained & {id(p) for p in model.discriminators.parameters()}
    assert len(trained) == len(list(model.parameters())) - len(
        list(model.discriminators.parameters()))


class _StepInsideLoss(DRIM):
    """The order this module used before the trainer's ``after_step``: the discriminator
    step inside ``loss``, the encoders' loss through a copy of the discriminators."""

    def _unique_loss(self, pairs):
        total = next(self.head.parameters()).new_zeros(())
        for m, (joint, _) in pairs.items():
            disc = self.discriminators[m]
            frozen = {name: p.detach().clone() for name, p in disc.named_parameters()}
            logits = (torch.func.functional_call(disc, frozen, (joint,))
                      if torch.is_grad_enabled() else disc(joint))
            total = total + F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return total

    def loss(self, x, present, y, class_weight=None):
        total, logits = super().loss(x, present, y, class_weight)
        super().after_step()
        return total, logits

    def after_step(self):
        pass


def test_discriminator_step_after_backward_trains_as_the_step_inside_the_loss(
        shapes, bench_draws):
    """Moving the discriminators' step after the trainer's backward (no copy of their
    weights) keeps every weight bit for bit: same arithmetic, same random stream."""
    from mmpipe.bench.trainer import fit

    train, _ = bench_draws(shapes, n=60, n_classes=2, p_present=0.6, means_seed=3)
    cfg = {"optimizer": "adamw", "lr": 1e-3, "max_epochs": 3, "patience": 3,
           "batch_size": 24, "noise_p": 0.0}
    states = []
    for cls in (DRIM, _StepInsideLoss):
        torch.manual_seed(0)
        model = cls(list(shapes), shapes, 2, **SMALL)
        fit(model, train, None, cfg, seed=0, epochs={"train": 3})
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_discriminators_learn_to_separate_dependent_pairs():
    """Pairs whose unique half copies the shared half: the discriminator separates joint
    from rolled pairs after a few steps (its loss drops well below 2·log 2)."""
    torch.manual_seed(0)
    shapes = {"a": (4,), "b": (4,)}
    model = DRIM(list(shapes), shapes, 2, **{**SMALL, "dropout": 0.0, "disc_lr": 1e-2}).train()
    s = F.normalize(torch.randn(32, 16), dim=-1)
    pairs = {"a": (torch.cat([s, s], 1), torch.cat([s.roll(1, 0), s], 1))}
    first = model.discriminator_step(pairs)
    for _ in range(40):
        last = model.discriminator_step(pairs)
    assert first > 1.2 and last < 0.3


def test_fit_with_the_shared_trainer(shapes, tmp_path, bench_draws, fit_and_score):
    train, val = bench_draws(shapes, n=90, n_classes=2, p_present=0.6, mean_scale=1.5,
                             noise=1.0, means_seed=10)
    torch.manual_seed(0)
    model = DRIM(list(shapes), shapes, 2, **SMALL)
    cfg = {"optimizer": "adamw", "schedule": "cosine", "lr": 1e-3, "weight_decay": 1e-2,
           "max_epochs": 8, "patience": 8, "batch_size": 24, "noise_p": 0.0}
    assert fit_and_score(model, train, val, cfg, log_path=tmp_path / "train.log") > 0.8
    assert model._disc_optimizer is not None     # the adversarial step ran
