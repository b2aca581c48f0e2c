"""Baselines: shapes, masking, permutation invariance, late-fusion loss, training."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.baselines import (
    CompleteCaseStandard,
    DeepSets,
    LateFusion,
    SingleModality,
    ZeroFillConcat,
)

N_CLASSES = 3
# (registry name, class, extra hparams)
METHODS = [
    ("deepsets", DeepSets, {}),
    ("concat_zero", ZeroFillConcat, {}),
    ("concat_zero", ZeroFillConcat, {"indicators": True}),
    ("standard", CompleteCaseStandard, {}),
    ("late_fusion", LateFusion, {}),
    ("single", SingleModality, {"modality": "wsi"}),
]
IDS = ["deepsets", "concat_zero", "concat_zero-indicators", "standard", "late_fusion", "single"]


def build(cls, shapes, **hp):
    torch.manual_seed(0)
    return cls(list(shapes), shapes, N_CLASSES, **hp).eval()


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_registry_shape_and_defaults(name, cls, hp, shapes, batch):
    assert method_class(name) is cls
    for key, value in {"lr": 1e-4, "weight_decay": 1e-4, "batch_size": 64, "patience": 25,
                       "sampler": "weighted"}.items():
        assert cls.defaults[key] == value
    x, present, _ = batch
    out = build(cls, shapes, **hp)(x, present)
    assert out.shape == (len(present), N_CLASSES) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_masked_values_ignored(name, cls, hp, shapes, batch, assert_masking):
    x, present, _ = batch
    model = build(cls, shapes, **hp)
    assert_masking(model, x, present)


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_no_modality_present_is_finite(name, cls, hp, shapes, batch):
    x, present, _ = batch
    present = torch.zeros_like(present)
    out = build(cls, shapes, **hp)(x, present)
    assert torch.isfinite(out).all()


def test_higher_rank_inputs_are_flattened(make_batch):
    shapes = {"a": (2, 3), "b": (1, 4)}
    x, present, _ = make_batch(shapes, batch=8)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    for cls, hp in [(DeepSets, {}), (ZeroFillConcat, {}), (LateFusion, {}),
                    (SingleModality, {"modality": "a"})]:
        model = build(cls, shapes, **hp)
        torch.testing.assert_close(model(x, present), model(flat, present))


@pytest.mark.parametrize("cls", [DeepSets, LateFusion])
def test_pooling_methods_are_permutation_invariant(cls, shapes, batch,
                                                   assert_permutation_invariant):
    assert cls.permutation_invariant
    x, present, _ = batch
    assert_permutation_invariant(build(cls, shapes), x, present)


def test_deepsets_is_the_mean_of_encodings(shapes):
    model = build(DeepSets, shapes)
    x = {m: torch.randn(1, *s) for m, s in shapes.items()}
    present = torch.tensor([[True, False, True, False]])
    pooled = (model.encoders["ct"](x["ct"]) + model.encoders["wsi"](x["wsi"])) / 2
    torch.testing.assert_close(model(x, present), model.head(pooled))


def test_zero_fill_concat_fills_zeros_itself(shapes, batch):
    x, present, _ = batch
    model = build(ZeroFillConcat, shapes)
    ones = {m: torch.ones_like(v) for m, v in x.items()}  # caller did not zero anything
    zeroed = {m: v * present[:, j].view(-1, 1) for j, (m, v) in enumerate(ones.items())}
    torch.testing.assert_close(model(ones, present), model(zeroed, present))
    assert model.mlp[0].in_features == sum(s[0] for s in shapes.values())
    with_ind = build(ZeroFillConcat, shapes, indicators=True)
    assert with_ind.mlp[0].in_features == sum(s[0] for s in shapes.values()) + len(shapes)
    # with indicators the presence itself is an input: a zero vector that is present
    # differs from an absent modality
    zeros = {m: torch.zeros(2, *s) for m, s in shapes.items()}
    pres = torch.tensor([[True, True, True, True], [True, True, True, False]])
    out = with_ind(zeros, pres)
    assert not torch.allclose(out[0], out[1])
    out = model(zeros, pres)
    torch.testing.assert_close(out[0], out[1])


def test_standard_trains_on_complete_cases():
    assert CompleteCaseStandard.train_subset == "complete"
    assert ZeroFillConcat.train_subset == "all"
    assert "indicators" not in CompleteCaseStandard.defaults


def test_late_fusion_averages_probabilities(shapes, batch):
    x, present, _ = batch
    model = build(LateFusion, shapes)
    per_mod = model.modality_logits(x, present)
    probs = F.softmax(per_mod, -1) * present.unsqueeze(-1)
    expected = probs.sum(1) / present.sum(1, keepdim=True)
    torch.testing.assert_close(F.softmax(model(x, present), -1), expected)
    torch.testing.assert_close(model(x, present).exp().sum(-1), torch.ones(len(present)))


def test_late_fusion_loss_trains_each_head_on_its_modality(shapes, batch):
    x, present, y = batch
    model = build(LateFusion, shapes)
    loss, logits = model.loss(x, present, y)
    per_mod = model.modality_logits(x, present)
    expected = sum(F.cross_entropy(per_mod[present[:, j], j], y[present[:, j]])
                   for j in range(len(shapes)))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, model(x, present))
    # a modality's head gets no gradient from subjects that lack it
    only_ct = present.clone()
    only_ct[:, 1:] = False
    model.zero_grad()
    model.loss(x, only_ct, y)[0].backward()
    assert model.heads["ct"][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0
               for m in ("mri", "wsi", "clinical") for p in model.heads[m].parameters())


def test_single_modality(shapes, batch):
    x, present, _ = batch
    with pytest.raises(ValueError, match="required"):
        SingleModality(list(shapes), shapes, 2)
    with pytest.raises(ValueError, match="not in the feature set"):
        SingleModality(list(shapes), shapes, 2, modality="genomics")
    model = build(SingleModality, shapes, modality="wsi")
    with torch.no_grad():
        model.prior.copy_(torch.tensor([0.5, -1.0, 2.0]))
    out = model(x, present)
    has = present[:, 2]
    torch.testing.assert_close(out[~has], model.prior.detach().expand(int((~has).sum()), -1))
    torch.testing.assert_close(out[has], model.mlp(x["wsi"][has]))
    # the other modalities are ignored entirely
    other = {m: (v if m == "wsi" else torch.randn_like(v)) for m, v in x.items()}
    torch.testing.assert_close(model(other, present), out)


def test_parameter_counts(shapes):
    c, total = N_CLASSES, sum(s[0] for s in shapes.values())

    def head(d_in, hidden):
        n = 0
        for h in hidden:
            n += d_in * h + h
            d_in = h
        return n + d_in * c + c

    assert build(DeepSets, shapes).trainable_parameters() == (
        sum(s[0] * 256 + 256 for s in shapes.values()) + head(256, [128]))
    assert build(ZeroFillConcat, shapes).trainable_parameters() == head(total, [256, 128])
    assert build(ZeroFillConcat, shapes, indicators=True).trainable_parameters() == head(
        total + len(shapes), [256, 128])
    assert build(CompleteCaseStandard, shapes).trainable_parameters() == head(total, [256, 128])
    assert build(LateFusion, shapes).trainable_parameters() == sum(
        head(s[0], [256, 128]) for s in shapes.values())
    assert build(SingleModality, shapes, modality="wsi").trainable_parameters() == (
        head(24, [256, 128]) + c)


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_training_reduces_the_loss(name, cls, hp, shapes, separable, train_steps):
    # the Standard baseline only ever trains on complete subjects
    x, present, y = separable(shapes, complete=cls.train_subset == "complete")
    if cls is SingleModality:  # subjects without the modality can only get the prior
        keep = present[:, list(shapes).index(hp["modality"])]
        x, present, y = {m: v[keep] for m, v in x.items()}, present[keep], y[keep]
    model = build(cls, shapes, **hp)
    before, after, accuracy = train_steps(model, x, present, y, lr=1e-3)
    assert after < 0.5 * before
    assert accuracy > 0.9


# plain shuffled batches and an unweighted loss, as their official code trains
PRIOR_BY_PAPER = ("muse", "adacomed", "drim", "hypermm", "hypermm_e2e")


def test_every_method_trains_on_balanced_classes_by_default():
    """The headline metric is balanced accuracy and the neural methods train on
    class-balanced batches (the weighted sampler, or class weights) unless their paper's
    code trains otherwise; the scikit-learn baselines fitted the class prior
    (``class_weight: None``), which cost them balanced accuracy on an imbalanced label
    for their prior, not for their reading of the data."""
    from mmpipe.bench.trainer import TRAIN_DEFAULTS
    from mmpipe.methods import METHODS, method_class

    for name in METHODS:
        cls = method_class(name)
        settings = {**TRAIN_DEFAULTS, **cls.defaults}
        if getattr(cls, "kind", "neural") == "sklearn":
            assert settings["class_weight"] == "balanced", name
        elif name not in PRIOR_BY_PAPER:
            assert (settings["sampler"] in ("weighted", "oversample")
                    or settings["class_weights"]), name
        else:
            assert settings["sampler"] == "none" and not settings["class_weights"], name


def test_the_single_modality_prior_starts_where_the_subjects_lacking_it_say():
    """Started at zeros and moved by Adam at lr 1e-4 a step, the prior stayed near uniform
    (±0.06 after a demo-sized run): a subject lacking the modality scored about 0.5 even
    where missingness told its class, and under testmiss [0.5, 0.5] exactly, its argmax
    the first class though the training split was mostly the other."""
    shapes = {"a": (4,), "b": (4,)}
    x = {m: torch.zeros(10, 4) for m in shapes}
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    present = torch.ones(10, 2, dtype=torch.bool)
    present[[0, 4, 5, 6, 7], 1] = False          # b lacking: 1 of 4 negatives, 4 of 6 positives
    balanced = SingleModality(list(shapes), shapes, 2, modality="b")  # weighted sampler
    balanced.prepare(x, present, y)
    def shares(p):  # as prepare mixes in a thousandth evenly
        p = torch.as_tensor(p, dtype=torch.float64)
        return ((1 - 1e-3) * p / p.sum() + 1e-3 / len(p)).float()

    # shares (1.5 / 4, 4.5 / 6) normalised
    torch.testing.assert_close(balanced.prior.detach().exp(), shares([1.5 / 4, 4.5 / 6]))
    plain = SingleModality(list(shapes), shapes, 2, modality="b", sampler="none")
    plain.prepare(x, present, y)
    torch.testing.assert_close(plain.prior.detach().exp(), shares([1.5, 4.5]))
    # no training subject lacks it: the training split's class shares
    balanced.prepare(x, torch.ones(10, 2, dtype=torch.bool), y)
    torch.testing.assert_close(balanced.prior.detach().exp(), shares([0.4, 0.6]))
    out = balanced.eval()(x, present)
    assert out[~present[:, 1]].argmax(1).tolist() == [1] * 5
    # a third class training lacks: a share far below the others, not the largest (its
    # 0.5 / 1 outweighed the classes training has)
    three = SingleModality(list(shapes), shapes, 3, modality="b")
    three.prepare(x, present, y)
    torch.testing.assert_close(three.prior.detach().exp(), shares([1.5 / 4, 4.5 / 6, 0.0]))
    assert torch.isfinite(three.prior).all()
    three.prepare(x, torch.ones(10, 2, dtype=torch.bool), y)
    torch.testing.assert_close(three.prior.detach().exp(), shares([0.4, 0.6, 0.0]))
