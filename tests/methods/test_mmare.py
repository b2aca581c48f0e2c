"""MMARE: shapes, masking, conditioning on missingness, fusion order, ablations, training."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mmpipe.methods import method_class
from mmpipe.methods.base import TRAINER_KEYS
from mmpipe.methods.mmare import MMARE

DIM = 16  # equal to the "ct" width of the shared SHAPES: identity adapter there
ABLATIONS = list(itertools.product([True, False], ["pairwise", "mean"]))


def build(shapes, n_classes=3, **hp):
    torch.manual_seed(0)
    return MMARE(list(shapes), shapes, n_classes, **{"dim": DIM, **hp}).eval()


def test_registry_and_defaults():
    assert method_class("mmare") is MMARE
    d = MMARE.defaults
    assert (d["dim"], d["cond_scale"], d["head"], d["dropout"]) == (512, 0.05, [256, 128], 0.3)
    assert (d["lr"], d["weight_decay"], d["batch_size"], d["patience"]) == (1e-4, 1e-4, 64, 25)
    assert (d["sampler"], d["noise_p"]) == ("weighted", 0.3)
    assert {"lr", "weight_decay", "batch_size", "patience", "sampler", "noise_p"} <= set(TRAINER_KEYS)
    assert MMARE.permutation_invariant is False  # pairwise fusion depends on order


def test_bad_hparams_rejected(shapes):
    with pytest.raises(ValueError, match="fusion"):
        MMARE(list(shapes), shapes, 2, fusion="attention")
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        MMARE(list(shapes), shapes, 2, depth=3)


@pytest.mark.parametrize("conditioning,fusion", ABLATIONS)
def test_output_shape(shapes, batch, conditioning, fusion):
    x, present, _ = batch
    model = build(shapes, conditioning=conditioning, fusion=fusion)
    out = model(x, present)
    assert out.shape == (present.shape[0], 3) and torch.isfinite(out).all()


def test_adapters_identity_where_width_matches(shapes):
    model = build(shapes)
    assert isinstance(model.adapters["ct"], nn.Identity)
    for m in ("mri", "wsi", "clinical"):
        lin, act = model.adapters[m]
        assert isinstance(lin, nn.Linear) and isinstance(act, nn.ReLU)
        assert (lin.in_features, lin.out_features) == (shapes[m][0], DIM)


def test_higher_rank_inputs_are_flattened(make_batch):
    shapes = {"a": (2, 8), "b": (1, 16), "c": (5,)}
    x, present, _ = make_batch(shapes, batch=8)
    model = build(shapes)
    assert isinstance(model.adapters["a"], nn.Identity)  # 2×8 = 16 = DIM
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))


@pytest.mark.parametrize("conditioning,fusion", ABLATIONS)
def test_masked_values_ignored(shapes, batch, conditioning, fusion,
                               assert_masking):
    x, present, _ = batch
    model = build(shapes, conditioning=conditioning, fusion=fusion)
    assert_masking(model, x, present)


def test_subject_without_modalities_gets_constant_output(shapes, batch):
    x, present, _ = batch
    present = present.clone()
    present[:2] = False
    x = {m: v.clone() for m, v in x.items()}
    x["wsi"][1] = 1e3
    model = build(shapes)
    out = model(x, present)
    with torch.no_grad():
        expected = model.head(torch.zeros(1, DIM))
    torch.testing.assert_close(out[:2], expected.expand(2, -1))


@pytest.mark.parametrize("conditioning", [True, False])
def test_mean_fusion_is_permutation_invariant(shapes, batch, conditioning,
                                              assert_permutation_invariant):
    x, present, _ = batch
    assert_permutation_invariant(build(shapes, conditioning=conditioning, fusion="mean"),
                                 x, present)


def test_pairwise_fusion_depends_on_order(shapes, batch, assert_permutation_dependent):
    # by design (thesis 4.2): h folds the modalities in one after the other
    x, present, _ = batch
    assert_permutation_dependent(build(shapes, fusion="pairwise"), x, present)


def test_pairwise_eval_is_deterministic_and_training_shuffles(shapes, batch):
    x, present, _ = batch
    model = build(shapes, dropout=0.0)
    model.eval()
    with torch.no_grad():
        first, second = model(x, present), model(x, present)
    assert torch.equal(first, second)
    # in eval the order is self.modalities order, present first
    order = model.fusion_order(present)
    for i in range(len(present)):
        k = int(present[i].sum())
        assert order[i, :k].tolist() == sorted(order[i, :k].tolist())
        assert present[i, order[i, :k]].all() and not present[i, order[i, k:]].any()
    # in training the present modalities come in a random order (dropout off here)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        shuffled = torch.stack([model(x, present) for _ in range(8)])
    multi = present.sum(1) >= 2
    assert not torch.allclose(shuffled[:, multi], first[multi].expand(8, -1, -1))
    # one present modality: nothing to order, same output as in eval
    single = present.sum(1) == 1
    torch.testing.assert_close(shuffled[:, single], first[single].expand(8, -1, -1))
    # shuffle_order false: training order is the eval order
    fixed = build(shapes, dropout=0.0, shuffle_order=False).train()
    with torch.no_grad():
        torch.testing.assert_close(fixed(x, present), fixed.eval()(x, present))


def test_pairwise_step_matches_the_formula(shapes):
    # h ← LN(h + MLP(h ⊕ e_next)), h initialised with the first present modality (4.2)
    model = build(shapes, conditioning=False)
    x = {m: torch.randn(1, *s) for m, s in shapes.items()}
    present = torch.tensor([[False, True, False, True]])  # mri, clinical
    e = model.embed(x, present)[0]
    fusion = model.fusion
    h = fusion.norm(e[1] + fusion.mlp(torch.cat([e[1], e[3]])))
    torch.testing.assert_close(model.fuse(x, present)[0], h)


def test_conditioning_only_on_present_modalities(shapes, batch):
    """Adapters never see an absent row's values (zeros reach them); absent embeddings
    stay zero whatever the conditioning computes for them."""
    x, present, _ = batch
    x = {m: v + 100.0 for m, v in x.items()}  # absent rows carry values that must not pass
    model = build(shapes)
    seen = {}
    for m in ("mri", "wsi", "clinical"):
        model.adapters[m].register_forward_hook(
            lambda mod, inp, out, m=m: seen.__setitem__(m, inp[0].detach().clone()))
    with torch.no_grad():
        emb = model.embed(x, present)
    for j, m in enumerate(model.modalities):
        if m in seen:
            assert torch.all(seen[m][~present[:, j]] == 0)
            assert torch.all(seen[m][present[:, j]] != 0)
    assert torch.all(emb[~present] == 0)
    assert torch.all(emb[present].abs().sum(-1) > 0)
    # the conditioned embedding is LN(e + γ⊙e + β) with γ, β from the missingness vector
    e = model.adapters["wsi"](x["wsi"][present[:, 2]])
    missing = (~present[present[:, 2]]).float()
    gamma, beta = 0.05 * model.gamma(missing), 0.05 * model.beta(missing)
    torch.testing.assert_close(emb[present[:, 2], 2], model.cond_norm(e + gamma * e + beta))


def test_conditioning_follows_the_missingness_pattern(shapes):
    """Same values, different sets of present modalities → different conditioned embedding.

    The *indicator* of an absent modality reaches the output through γ, β (that is the
    conditioning), while its *values* never do (test_masked_values_ignored).
    """
    model = build(shapes)
    x = {m: torch.randn(1, *s).expand(2, *s).clone() for m, s in shapes.items()}
    # both rows: ct and one other modality; the other one differs
    present = torch.tensor([[True, True, False, False], [True, False, True, False]])
    with torch.no_grad():
        emb = model.embed(x, present)
    assert not torch.allclose(emb[0, 0], emb[1, 0])       # ct conditioned differently
    plain = build(shapes, conditioning=False)
    with torch.no_grad():
        emb = plain.embed(x, present)
    torch.testing.assert_close(emb[0, 0], emb[1, 0])      # without conditioning: the same

    # the weights of modality j's missingness column act exactly on the rows lacking j
    x, present = _batch_for_columns(shapes)
    with torch.no_grad():
        ref = model(x, present)
        for layer in (model.gamma, model.beta):
            layer.weight[:, 3] += 1.0                      # column of "clinical"
        out = model(x, present)
    lacks = ~present[:, 3]
    assert not torch.allclose(out[lacks], ref[lacks])
    torch.testing.assert_close(out[~lacks], ref[~lacks])


def _batch_for_columns(shapes):
    gen = torch.Generator().manual_seed(3)
    present = torch.tensor([[True, True, True, True], [True, False, True, False],
                            [False, True, False, True], [True, True, False, False]])
    x = {m: torch.randn(4, *s, generator=gen) * present[:, j].view(-1, 1)
         for j, m in enumerate(shapes) for s in [shapes[m]]}
    return x, present


def test_parameter_counts(shapes):
    d, c = DIM, 3
    adapters = sum(s[0] * d + d for m, s in shapes.items() if s[0] != d)
    cond = 2 * (len(shapes) * d + d) + 2 * d
    fusion = (2 * d * d + d) + (d * d + d) + 2 * d
    head = (d * 256 + 256) + (256 * 128 + 128) + (128 * c + c)
    assert build(shapes).trainable_parameters() == adapters + cond + fusion + head
    assert build(shapes, conditioning=False).trainable_parameters() == adapters + fusion + head
    assert build(shapes, fusion="mean").trainable_parameters() == adapters + cond + head
    assert build(shapes, conditioning=False, fusion="mean").trainable_parameters() == (
        adapters + head)


def test_parameter_count_mmist():
    shapes = {"ct": (512,), "mri": (512,), "wsi": (1024,), "clinical": (384,)}
    model = MMARE(list(shapes), shapes, 2)
    d = 512
    expected = ((1024 * d + d) + (384 * d + d)                     # wsi, clinical adapters
                + 2 * (4 * d + d) + 2 * d                           # g, h, LN
                + (2 * d * d + d) + (d * d + d) + 2 * d             # fusion MLP, LN
                + (d * 256 + 256) + (256 * 128 + 128) + (128 * 2 + 2))
    assert model.trainable_parameters() == expected == 1_681_026


@pytest.mark.parametrize("conditioning,fusion", ABLATIONS)
def test_training_reduces_the_loss(shapes, conditioning, fusion, separable, train_steps):
    x, present, y = separable(shapes)
    model = build(shapes, conditioning=conditioning, fusion=fusion)
    before, after, accuracy = train_steps(model, x, present, y)
    assert after < 0.5 * before
    assert accuracy > 0.9


def test_the_run_notes_say_where_mmare_is_the_projects_reading():
    # MMARE had no notes: its noise's deviation and the head's reading were in comments only
    from mmpipe.methods import method_class

    shapes = {"a": (512,), "b": (5,)}
    notes = method_class("mmare")(list(shapes), shapes, 2).report_notes()
    assert any("std 0.1, which the thesis does not give" in n for n in notes)
    assert any("a already 512-wide, passed without an adapter" in n for n in notes)
