"""AdaCoMed-style mixture of modality experts: experts, gate, masking, invariance, training."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.base import TRAINER_KEYS
from mmpipe.methods.moe import ModalityExperts, modality_combinations

DIM = 8
N_CLASSES = 3
VARIANTS = [
    {},
    {"fusion": "mean"},
    {"gate_features": "mean"},
    {"gate_features": "none", "mix": "probs"},
    {"max_combination_size": 2},
]
IDS = ["default", "fusion-mean", "gate-mean", "gate-none-probs", "max-size-2"]


def build(shapes, n_classes=N_CLASSES, **hp):
    torch.manual_seed(0)
    return ModalityExperts(list(shapes), shapes, n_classes, **{"dim": DIM, **hp}).eval()


def test_registry_and_defaults():
    assert method_class("adacomed") is ModalityExperts
    d = ModalityExperts.defaults
    assert (d["dim"], d["fusion"], d["gate_features"], d["mix"], d["dropout"]) == (
        512, "concat", "concat", "logits", 0.1)
    # official train.py: Adam 1e-4, batch 128, 100 epochs, cosine, no early stopping
    assert (d["lr"], d["weight_decay"], d["optimizer"], d["batch_size"]) == (1e-4, 0.0, "adam",
                                                                             128)
    assert (d["max_epochs"], d["patience"], d["schedule"], d["sampler"]) == (100, 100, "cosine",
                                                                             "none")
    assert {"lr", "schedule", "sampler", "noise_p"} <= set(TRAINER_KEYS)
    assert ModalityExperts.permutation_invariant


def test_bad_hparams_rejected(shapes):
    for hp, match in [({"fusion": "attention"}, "fusion"), ({"mix": "max"}, "mix"),
                      ({"gate_features": "all"}, "gate_features"),
                      ({"max_combination_size": 0}, "max_combination_size"),
                      ({"max_combination_size": 5}, "max_combination_size"),
                      ({"depth": 2}, "unknown hyper-parameters")]:
        with pytest.raises(ValueError, match=match):
            ModalityExperts(list(shapes), shapes, 2, **hp)


def test_one_expert_per_combination(shapes):
    model = build(shapes)
    assert len(model.experts) == len(model.combos) == 2 ** len(shapes) - 1
    assert len(set(model.combos)) == len(model.combos)
    assert all(list(c) == sorted(c) for c in model.combos)
    capped = build(shapes, max_combination_size=2)
    assert len(capped.experts) == 4 + 6 and max(len(c) for c in capped.combos) == 2
    # more than 64 experts: an error that names the way out
    seven = {f"m{i}": (3,) for i in range(7)}
    with pytest.raises(ValueError, match="127 experts.*max_combination_size"):
        ModalityExperts(list(seven), seven, 2)
    assert len(ModalityExperts(list(seven), seven, 2, dim=4, max_combination_size=2).experts) == 28
    # the canonical order does not depend on the order the modalities come in
    assert modality_combinations(["b", "a", "c"], None) == modality_combinations(["c", "a", "b"],
                                                                                 None)


def test_expert_inputs(shapes):
    model = build(shapes)
    for combo, expert in zip(model.combos, model.experts, strict=True):
        assert expert[0].in_features == len(combo) * DIM       # concatenation of its encodings
        assert expert[-1].out_features == N_CLASSES
    assert model.gate.in_features == len(shapes) + len(shapes) * DIM
    mean = build(shapes, fusion="mean", gate_features="mean")
    assert all(e[0].in_features == DIM for e in mean.experts)
    assert mean.gate.in_features == len(shapes) + DIM
    assert build(shapes, gate_features="none").gate.in_features == len(shapes)


@pytest.mark.parametrize("hp", VARIANTS, ids=IDS)
def test_output_shape_and_no_modality_row(shapes, batch, hp):
    x, present, _ = batch
    model = build(shapes, **hp)
    out = model(x, present)
    assert out.shape == (len(present), N_CLASSES) and torch.isfinite(out).all()
    none = present.clone()
    none[:3] = False
    out = model(x, none)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:3], torch.zeros(3, N_CLASSES))  # uniform probabilities
    # and the loss stays finite with such rows, with finite gradients
    model.train()
    loss, _ = model.loss(x, none, torch.zeros(len(none), dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_higher_rank_inputs_are_flattened(make_batch):
    shapes = {"a": (2, 3), "b": (1, 4), "c": (5,)}
    x, present, _ = make_batch(shapes, batch=8)
    model = build(shapes)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))


@pytest.mark.parametrize("hp", VARIANTS, ids=IDS)
def test_masked_values_ignored(shapes, batch, hp, assert_masking):
    x, present, _ = batch
    model = build(shapes, **hp)
    assert_masking(model, x, present)


@pytest.mark.parametrize("hp", VARIANTS, ids=IDS)
def test_permutation_invariant(shapes, batch, hp, assert_permutation_invariant):
    x, present, _ = batch
    assert_permutation_invariant(build(shapes, **hp), x, present)


def test_gate_masks_unavailable_experts(shapes, batch):
    x, present, _ = batch
    model = build(shapes)
    weights = model.gate_weights(x, present)
    cols = {m: j for j, m in enumerate(model.modalities)}
    for i in range(len(present)):
        have = {m for m in model.modalities if present[i, cols[m]]}
        for e, combo in enumerate(model.combos):
            if not set(combo) <= have:
                assert weights[i, e].item() == 0.0          # exactly zero, not small
            else:
                assert weights[i, e].item() > 0.0
    torch.testing.assert_close(weights.sum(1), torch.ones(len(present)))
    # a complete subject can use every expert; a single-modality one only its own
    single = torch.zeros(1, len(shapes), dtype=torch.bool)
    single[0, cols["wsi"]] = True
    w = model.gate_weights({m: v[:1] for m, v in x.items()}, single)[0]
    assert w[model.combos.index(("wsi",))].item() == 1.0 and w.sum().item() == 1.0
    # no modality: no expert, all weights 0
    assert torch.all(model.gate_weights(x, torch.zeros_like(present)) == 0)


def test_gate_reads_presence_and_features(shapes, batch):
    x, present, _ = batch
    model = build(shapes)
    ref = model.gate_weights(x, present)
    # features enter the gate: changing a present modality moves the weights
    x2 = {m: (v * 3.0 if m == "wsi" else v) for m, v in x.items()}
    moved = present[:, 2] & (present.sum(1) > 1)
    assert not torch.allclose(model.gate_weights(x2, present)[moved], ref[moved])
    # presence-only gate: same presence pattern, same weights whatever the features
    plain = build(shapes, gate_features="none")
    torch.testing.assert_close(plain.gate_weights(x2, present), plain.gate_weights(x, present))


@pytest.mark.parametrize("mix", ["logits", "probs"])
def test_output_is_the_gated_mixture(shapes, batch, mix):
    x, present, _ = batch
    model = build(shapes, mix=mix)
    with torch.no_grad():
        g = model.gate_weights(x, present)
        logits = model.expert_logits(x, present)
        out = model(x, present)
    if mix == "logits":
        expected = (g.unsqueeze(-1) * logits).sum(1)
        torch.testing.assert_close(out, expected)
    else:
        expected = (g.unsqueeze(-1) * F.softmax(logits, -1)).sum(1)
        torch.testing.assert_close(F.softmax(out, -1), expected)
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(len(present)))


def test_expert_concatenates_in_name_order(shapes):
    """Expert {ct, mri} reads [enc_ct, enc_mri] whatever order the modalities are listed in."""
    model = build(shapes)
    x = {m: torch.randn(1, *s) for m, s in shapes.items()}
    present = torch.tensor([[True, True, False, False]])    # ct, mri
    e = model.combos.index(("ct", "mri"))
    enc = torch.cat([model.encoders["ct"](x["ct"]), model.encoders["mri"](x["mri"])], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.expert_logits(x, present)[0, e],
                                   model.experts[e](enc)[0])


def test_subject_output_does_not_depend_on_the_batch(shapes, batch):
    x, present, _ = batch
    model = build(shapes)
    with torch.no_grad():
        full = model(x, present)
        alone = torch.cat([model({m: v[i:i + 1] for m, v in x.items()}, present[i:i + 1])
                           for i in range(len(present))])
        perm = torch.randperm(len(present), generator=torch.Generator().manual_seed(0))
        shuffled = model({m: v[perm] for m, v in x.items()}, present[perm])
    torch.testing.assert_close(alone, full)
    torch.testing.assert_close(shuffled, full[perm])


def test_parameter_counts(shapes):
    d, c, n_mod = DIM, N_CLASSES, len(shapes)
    enc = sum(s[0] * d + d for s in shapes.values())
    combos = [k for size in range(1, n_mod + 1) for k in itertools.combinations(range(n_mod), size)]
    experts = sum((len(k) * d * d + d) + (d * c + c) for k in combos)
    gate = (n_mod + n_mod * d) * len(combos) + len(combos)
    assert build(shapes).trainable_parameters() == enc + experts + gate
    experts_mean = len(combos) * ((d * d + d) + (d * c + c))
    gate_none = n_mod * len(combos) + len(combos)
    assert build(shapes, fusion="mean", gate_features="none").trainable_parameters() == (
        enc + experts_mean + gate_none)


@pytest.mark.parametrize("hp", VARIANTS, ids=IDS)
def test_training_reduces_the_loss(shapes, hp, separable, train_steps):
    x, present, y = separable(shapes)
    model = build(shapes, **hp)
    before, after, accuracy = train_steps(model, x, present, y, lr=1e-2)
    assert after < 0.5 * before
    assert accuracy > 0.9


def test_fit_with_the_trainer(shapes, tmp_path, separable, bench_data):
    from mmpipe.bench.metrics import classification_metrics
    from mmpipe.bench.trainer import fit, predict_proba

    # same class means, fresh subjects: split one draw
    full = bench_data(*separable(shapes, n=180))
    train, val = full.subset(np.arange(120)), full.subset(np.arange(120, 180))
    model = build(shapes, dim=16)
    cfg = {k: model.hparams[k] for k in TRAINER_KEYS if k in model.hparams}
    result = fit(model, train, val, {**cfg, "lr": 3e-3, "max_epochs": 15, "batch_size": 32},
                 seed=0, log_path=tmp_path / "train.log")
    assert result.epochs == {"train": 15}
    proba = predict_proba(model, val)
    assert classification_metrics(val.y, proba)["balanced_accuracy"] > 0.8
