"""LARGO: CP-decomposed family of subset models, parameter budget, routing, loss, training."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.base import TRAINER_KEYS
from mmpipe.methods.blocks import nonempty_subsets
from mmpipe.methods.largo import LARGO, matched_rank, parameter_counts

N_CLASSES = 3
HIDDEN = 64  # the smallest convenient width whose budget fits the test shapes
STEMS = ["modality", "subset"]


def build(shapes, stem="modality", n_classes=N_CLASSES, **hp):
    torch.manual_seed(0)
    if stem == "subset":
        hp.setdefault("rank", 4)  # unshared stems cannot be budget-matched (see below)
    return LARGO(list(shapes), shapes, n_classes, **{"hidden": HIDDEN, "stem": stem,
                                                     **hp}).eval()


def flat_cat(x, names):
    return torch.cat([x[m].reshape(len(x[m]), -1) for m in names], dim=1)


def test_registry_and_defaults():
    assert method_class("largo") is LARGO
    d = LARGO.defaults
    assert (d["rank"], d["stem"], d["lambda_full"]) == (None, "modality", 1.0)
    assert (d["lr"], d["weight_decay"], d["batch_size"], d["patience"]) == (1e-4, 1e-4, 64, 25)
    assert {"lr", "batch_size", "sampler", "noise_p"} <= set(TRAINER_KEYS)


def test_bad_hparams_rejected(shapes):
    with pytest.raises(ValueError, match="stem"):
        LARGO(list(shapes), shapes, 2, stem="shared")
    with pytest.raises(ValueError, match="n_layers"):
        LARGO(list(shapes), shapes, 2, n_layers=0)
    with pytest.raises(ValueError, match="rank"):
        LARGO(list(shapes), shapes, 2, rank=0)
    with pytest.raises(ValueError, match="lambda_full"):
        LARGO(list(shapes), shapes, 2, lambda_full=-1.0)
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        LARGO(list(shapes), shapes, 2, depth=3)
    # unshared per-subset stems cost 2^(M-1) dedicated stems: over budget whenever the
    # inputs are wide against the hidden layers (as embeddings are)
    with pytest.raises(ValueError, match="no CP rank fits"):
        LARGO(list(shapes), shapes, 2, stem="subset", hidden=HIDDEN)
    # a width too small for S heads and biases is refused, not silently over budget
    with pytest.raises(ValueError, match="no CP rank fits"):
        LARGO(list(shapes), shapes, 2, hidden=8)
    assert LARGO(list(shapes), shapes, 2, stem="subset", rank=3).rank == 3


@pytest.mark.parametrize("stem", STEMS)
def test_output_shape_and_empty_rows(shapes, batch, stem):
    x, present, _ = batch
    model = build(shapes, stem)
    out = model(x, present)
    assert out.shape == (len(present), N_CLASSES) and torch.isfinite(out).all()
    none = present.clone()
    none[:3] = False
    out = model(x, none)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:3], torch.zeros(3, N_CLASSES))


def test_higher_rank_inputs_are_flattened(make_batch):
    shapes = {"a": (2, 3), "b": (1, 4), "c": (5,)}
    x, present, _ = make_batch(shapes, batch=8)
    model = build(shapes, hidden=32)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))


@pytest.mark.parametrize("stem", STEMS)
def test_masked_values_ignored(shapes, batch, stem, assert_masking):
    x, present, _ = batch
    model = build(shapes, stem)
    assert_masking(model, x, present)


@pytest.mark.parametrize("stem", STEMS)
def test_relabelling_modalities_keeps_the_output(shapes, batch, stem,
                                                 assert_permutation_invariant):
    assert LARGO.permutation_invariant
    x, present, _ = batch
    model = build(shapes, stem)
    with torch.no_grad():  # distinct subset models, so a wrong lookup would show
        for layer in model.inner:
            layer.subset_factor.add_(torch.randn_like(layer.subset_factor))
    assert_permutation_invariant(model, x, present)


# ------------------------------------------------------------------ parameter budget
@pytest.mark.parametrize("shapes", [
    {"ct": (16,), "mri": (12,), "wsi": (24,), "clinical": (8,)},
    {"a": (20,), "b": (7,)},
    {"a": (30,), "b": (5,), "c": (11,)},
    {f"m{i}": (10 + i,) for i in range(5)},
], ids=["M4", "M2", "M3", "M5"])
def test_parameter_count_matches_one_dedicated_model(shapes):
    model = build(shapes, n_classes=2, hidden=96)
    dims = [s[0] for s in shapes.values()]
    counts = parameter_counts(dims, 96, 2, 2, model.rank)
    assert model.trainable_parameters() == counts["largo"]
    assert model.dedicated_parameters() == counts["dedicated"]
    # the analytic dedicated count is that of the plain MLP LARGO holds for the full set
    full = model.dedicated_model(list(shapes))
    assert sum(p.numel() for p in full.parameters()) == counts["dedicated"]
    largo, dedicated = model.trainable_parameters(), model.dedicated_parameters()
    assert largo <= dedicated and (dedicated - largo) / dedicated <= 0.05
    # the largest such rank: one more goes over budget
    assert parameter_counts(dims, 96, 2, 2, model.rank + 1)["largo"] > dedicated
    assert model.rank == matched_rank(dims, 96, 2, 2)
    assert model.n_subsets == 2 ** len(shapes) - 1


def test_parameter_count_mmist():
    shapes = {"ct": (512,), "mri": (512,), "wsi": (1024,), "clinical": (384,)}
    model = LARGO(list(shapes), shapes, 2)
    h, s, r = 256, 15, model.rank
    dedicated = (2432 * h + h) + 2 * (h * h + h) + (h * 2 + 2)
    largo = (2432 * h + s * h) + 2 * (r * (2 * h + s) + s * h) + s * (h * 2 + 2)
    assert model.dedicated_parameters() == dedicated == 754_946
    assert model.trainable_parameters() == largo
    assert r == 107 and abs(dedicated - largo) / dedicated < 0.01
    notes = " ".join(model.report_notes())
    assert "rank 107" in notes and f"{largo} parameters" in notes and str(dedicated) in notes


def test_unshared_stems_count(shapes):
    model = build(shapes, "subset")
    dims = [s[0] for s in shapes.values()]
    subset_stems = sum(sum(d for d, on in zip(dims, row, strict=True) if on) * HIDDEN
                       for row in nonempty_subsets(len(dims)).tolist())
    assert subset_stems == 8 * sum(dims) * HIDDEN  # each modality in 2^(M-1) subsets
    assert model.trainable_parameters() == parameter_counts(dims, HIDDEN, 2, N_CLASSES, 4,
                                                            "subset")["largo"]


# ------------------------------------------------------------------ the CP family
def test_subset_weights_equal_at_init_and_distinct_after_perturbation(shapes):
    model = build(shapes)
    n = 2 ** len(shapes) - 1
    assert model.n_subsets == n and len(set(model.subsets)) == n
    assert nonempty_subsets(4).shape == (15, 4) and nonempty_subsets(4).any(1).all()
    for layer in model.inner:
        assert torch.equal(layer.subset_factor, torch.ones(n, model.rank))
        w = layer.weights().detach()
        assert w.shape == (n, HIDDEN, HIDDEN)
        torch.testing.assert_close(w, w[:1].expand_as(w))  # one shared model at init
        # W_s = Σ_r A[s, r] u_r v_rᵀ, and the Kaiming-normal variance 2 / fan_in
        u, v = layer.out_factor.detach(), layer.in_factor.detach()
        torch.testing.assert_close(w[0], (u * layer.subset_factor[0].detach()) @ v.T)
        assert abs(w[0].var().item() / (2 / HIDDEN) - 1) < 0.35
        torch.testing.assert_close(v.norm(dim=0), v.norm(dim=0)[:1].expand(model.rank))
    with torch.no_grad():
        for layer in model.inner:
            layer.subset_factor.add_(0.1 * torch.randn_like(layer.subset_factor))
    for layer in model.inner:
        w = layer.weights().detach()
        for i, j in itertools.combinations(range(n), 2):
            assert not torch.allclose(w[i], w[j])


def test_cp_layer_matches_materialised_weights(shapes):
    model = build(shapes)
    layer = model.inner[0]
    with torch.no_grad():
        layer.subset_factor.normal_()
        layer.bias.normal_()
    h = torch.randn(6, HIDDEN)
    rows = torch.tensor([0, 3, 14, 7, 7, 1])
    expected = torch.einsum("boi,bi->bo", layer.weights()[rows], h) + layer.bias[rows]
    torch.testing.assert_close(layer(h, rows), expected)


# ------------------------------------------------------------------ routing
@pytest.mark.parametrize("stem", STEMS)
def test_each_subject_goes_through_its_own_subset_model(shapes, batch, stem):
    x, present, _ = batch
    model = build(shapes, stem)
    with torch.no_grad():
        for layer in model.inner:
            layer.subset_factor.add_(torch.randn_like(layer.subset_factor))
        model.stem_bias.normal_()
    out = model(x, present)
    names = list(shapes)
    for i in range(len(present)):
        pattern = [m for j, m in enumerate(names) if present[i, j]]
        # in the model's mode (a fresh Sequential trained, and dropped out, after eval())
        dedicated = model.dedicated_model(pattern)
        assert dedicated.training is model.training
        row = {m: v[i:i + 1] for m, v in x.items()}
        torch.testing.assert_close(out[i:i + 1], dedicated(flat_cat(row, pattern)))
        # alone in its batch: the same (rows do not interact)
        torch.testing.assert_close(out[i:i + 1], model(row, present[i:i + 1]))
    # the same values with fewer modalities present: that smaller subset's model
    i = 0  # the complete row
    assert present[i].all()
    fewer = present[i:i + 1].clone()
    fewer[0, 1] = False
    pattern = [m for j, m in enumerate(names) if fewer[0, j]]
    row = {m: v[i:i + 1] for m, v in x.items()}
    smaller = model(row, fewer)
    torch.testing.assert_close(smaller, model.dedicated_model(pattern).eval()(
        flat_cat(row, pattern)))
    assert not torch.allclose(smaller, out[i:i + 1])


def test_subset_rows_follow_the_pattern(shapes):
    model = build(shapes)
    masks = nonempty_subsets(len(shapes))
    assert torch.equal(model.subset_rows(masks), torch.arange(len(masks)))
    assert model.subset_rows(torch.zeros(1, len(shapes), dtype=torch.bool)).item() == -1
    with pytest.raises(ValueError, match="not a non-empty subset"):
        model.subset_index([])


# ------------------------------------------------------------------ sampling and loss
def test_sampled_subsets_are_nonempty_subsets_of_the_present_ones(shapes):
    model = build(shapes).train()
    present = torch.tensor([[True, True, False, False]] * 3000
                           + [[False, False, False, False], [False, False, True, False]])
    torch.manual_seed(0)
    sampled = model.sample_subsets(present)
    assert not (sampled & ~present).any()
    assert sampled[:-2].any(1).all() and not sampled[-2].any()
    assert torch.equal(sampled[-1], present[-1])
    # uniform over the 2^2 − 1 non-empty subsets of two present modalities
    codes = (sampled[:-2, 0].long() + 2 * sampled[:-2, 1].long()).bincount(minlength=4)
    assert codes[0] == 0
    assert ((codes[1:].float() / 3000 - 1 / 3).abs() < 0.04).all()
    # every subset of four present modalities is reachable
    torch.manual_seed(1)
    full = model.sample_subsets(torch.ones(4000, 4, dtype=torch.bool))
    assert len(set(model.subset_rows(full).tolist())) == 15
    # the draw depends on the mask and the seed only
    torch.manual_seed(0)
    assert torch.equal(model.sample_subsets(present), sampled)


def test_training_loss_has_the_sampled_and_the_full_term(shapes, batch):
    x, present, y = batch
    model = build(shapes, dropout=0.0, lambda_full=0.7)
    with torch.no_grad():
        for layer in model.inner:
            layer.subset_factor.add_(torch.randn_like(layer.subset_factor))
    model.train()
    torch.manual_seed(5)
    loss, logits = model.loss(x, present, y)
    torch.manual_seed(5)
    sampled = model.sample_subsets(present)
    assert not torch.equal(sampled, present)  # the sampled term is not the full one
    with torch.no_grad():
        full = F.cross_entropy(model(x, present), y)
        part = F.cross_entropy(model.route(x, sampled), y)
    torch.testing.assert_close(loss.detach(), part + 0.7 * full)
    torch.testing.assert_close(logits.detach(), model(x, present).detach())
    # a single present modality: the only subset to sample is the full one
    single = torch.zeros_like(present)
    single[torch.arange(len(present)), torch.arange(len(present)) % 4] = True
    loss, _ = model.loss(x, single, y)
    with torch.no_grad():
        torch.testing.assert_close(loss, 1.7 * F.cross_entropy(model(x, single), y))
    # evaluation: the prediction's loss only, no sampling
    model.eval()
    loss, _ = model.loss(x, present, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x, present), y))


def test_loss_backward_reaches_the_sampled_subset_models(shapes):
    model = build(shapes, dropout=0.0).train()
    x = {m: torch.randn(8, *s) for m, s in shapes.items()}
    present = torch.ones(8, 4, dtype=torch.bool)  # all subjects complete
    y = torch.arange(8) % N_CLASSES
    torch.manual_seed(0)
    sampled_rows = set(model.subset_rows(model.sample_subsets(present)).tolist())
    torch.manual_seed(0)
    loss, _ = model.loss(x, present, y)
    loss.backward()
    assert torch.isfinite(loss)
    grad = model.head_weight.grad.abs().sum((1, 2))
    reached = set(torch.nonzero(grad).squeeze(1).tolist())
    assert reached == sampled_rows | {14}  # 14: the full set, through the full-set term
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------ training
def test_short_fit_with_the_shared_trainer(separable, bench_data):
    from sklearn.metrics import balanced_accuracy_score

    from mmpipe.bench.trainer import fit, predict_proba

    def bench(seed):  # class means fixed, presence and noise from the seed
        return bench_data(*separable({"a": (8,), "b": (6,), "c": (10,)}, seed=seed,
                                     p_present=0.6, mean_scale=1.5, noise=1.0, means_seed=0),
                          tag=f"s{seed}")

    train, val = bench(0), bench(1)
    model = LARGO(train.modalities, train.shapes(), N_CLASSES, hidden=48)
    fit(model, train, val, {"lr": 3e-3, "max_epochs": 15, "patience": 15, "batch_size": 32,
                            "noise_p": 0.0}, seed=0)
    proba = predict_proba(model, val)
    assert proba.shape == (len(val.y), N_CLASSES)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert balanced_accuracy_score(val.y, proba.argmax(1)) > 0.8  # chance: 1/3


@pytest.mark.parametrize("stem", STEMS)
def test_one_seed_trains_the_same_weights_at_two_threads(stem, separable, bench_data):
    """``subset_factor[rows]`` and the other gathers by indexing scatter-add their
    gradients in parallel: with two threads, one seed gave other weights on every fit."""
    from tests.methods.conftest import assert_same_weights, fit_twice

    shapes = {"a": (8,), "b": (6,), "c": (10,)}
    train, val = (bench_data(*separable(shapes, n=1024, seed=s, p_present=0.6, means_seed=0),
                             tag=f"s{s}") for s in (0, 1))
    hp = {"hidden": HIDDEN, "stem": stem, **({"rank": 4} if stem == "subset" else {})}
    assert_same_weights(*fit_twice(
        lambda: LARGO(train.modalities, train.shapes(), N_CLASSES, **hp), train, val,
        {"lr": 3e-3, "max_epochs": 2, "patience": 2, "batch_size": 512}, threads=2))
