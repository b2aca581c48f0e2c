"""Bidirectional distillation and its Filling / AE comparators: contract, branch choice,
loss terms and their gradients, imputation only where absent, training with the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.distillation import (
    AutoEncoderImpute,
    BidirectionalDistillation,
    Filling,
    Prompt,
)

N_CLASSES = 3
MISS = "clinical"
METHODS = [
    ("bd", BidirectionalDistillation, {}),
    ("bd", BidirectionalDistillation, {"kd_form": "official", "train_subjects": "with_modality"}),
    ("bd_filling", Filling, {}),
    ("bd_filling", Filling, {"fill": "mean", "train_subjects": "all"}),
    ("ae_impute", AutoEncoderImpute, {}),
    ("ae_impute", AutoEncoderImpute, {"ae_training": "joint", "train_subjects": "all"}),
]
IDS = ["bd", "bd-official-with_modality", "filling", "filling-mean-all", "ae", "ae-joint-all"]


def build(cls, shapes, n_classes=N_CLASSES, **hp):
    torch.manual_seed(0)
    return cls(list(shapes), shapes, n_classes, **{"missing_modality": MISS, **hp}).eval()


def split(model, x, present):
    """The zero-filled inputs of the branches."""
    return model.inputs(x, present)


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_registry_shape_and_finite(name, cls, hp, shapes, batch):
    assert method_class(name) is cls
    x, present, _ = batch
    model = build(cls, shapes, **hp)
    out = model(x, present)
    assert out.shape == (len(present), N_CLASSES) and torch.isfinite(out).all()
    none = model(x, torch.zeros_like(present))  # a row without any modality
    assert torch.isfinite(none).all()
    assert build(cls, shapes, n_classes=2, **hp)(x, present).shape == (len(present), 2)


def test_paper_hyper_parameters():
    d = BidirectionalDistillation.defaults
    assert (d["lambda_s"], d["lambda_m"], d["tau"]) == (0.5, 0.6, 1.2)
    assert (d["prompt_dim"], d["prompt_hidden"], d["feat_dim"]) == (50, 100, 256)
    assert (d["classifier_hidden"], d["dropout"], d["kd_form"]) == ([64], 0.5, "standard")
    assert d["missing_modality"] is None and d["train_subjects"] == "complete"
    for cls in (BidirectionalDistillation, Filling, AutoEncoderImpute):
        assert (cls.defaults["lr"], cls.defaults["batch_size"], cls.defaults["sampler"]) == (
            1e-4, 64, "weighted")
        assert cls.permutation_invariant is False


def test_bad_hyper_parameters(shapes):
    mods = list(shapes)
    with pytest.raises(ValueError, match="required"):
        BidirectionalDistillation(mods, shapes, 2)
    with pytest.raises(ValueError, match="not in the feature set"):
        Filling(mods, shapes, 2, missing_modality="genomics")
    with pytest.raises(ValueError, match="besides"):
        AutoEncoderImpute(["ct"], {"ct": (4,)}, 2, missing_modality="ct")
    with pytest.raises(ValueError, match="train_subjects"):
        BidirectionalDistillation(mods, shapes, 2, missing_modality=MISS, train_subjects="all")
    with pytest.raises(ValueError, match="kd_form"):
        BidirectionalDistillation(mods, shapes, 2, missing_modality=MISS, kd_form="hinton")
    with pytest.raises(ValueError, match="fill"):
        Filling(mods, shapes, 2, missing_modality=MISS, fill="median")
    with pytest.raises(ValueError, match="ae_training"):
        AutoEncoderImpute(mods, shapes, 2, missing_modality=MISS, ae_training="gan")
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        BidirectionalDistillation(mods, shapes, 2, missing_modality=MISS, lambda_x=1.0)


def test_train_subjects_sets_the_trainer_subset(shapes):
    assert build(BidirectionalDistillation, shapes).train_subset == "complete"
    assert build(BidirectionalDistillation, shapes,
                 train_subjects="with_modality").train_subset == f"with:{MISS}"
    assert build(Filling, shapes, train_subjects="all").train_subset == "all"
    assert build(AutoEncoderImpute, shapes).train_subset == "complete"


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_masked_values_ignored(name, cls, hp, shapes, batch, assert_masking):
    x, present, _ = batch
    model = build(cls, shapes, **hp)
    assert_masking(model, x, present)


@pytest.mark.parametrize("cls", [BidirectionalDistillation, Filling, AutoEncoderImpute])
def test_higher_rank_inputs_are_flattened(cls, make_batch):
    shapes = {"a": (2, 3), "b": (1, 4), MISS: (2, 2)}
    x, present, _ = make_batch(shapes, batch=8)
    model = build(cls, shapes)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))


def test_architecture_follows_the_official_models(shapes):
    model = build(BidirectionalDistillation, shapes)
    for branch in (model.multi, model.single):
        assert set(branch.encoders) == {"ct", "mri", "wsi"}
        lin, drop, act = branch.encoders["wsi"]
        assert (lin.in_features, lin.out_features, drop.p) == (24, 256, 0.5)
        assert isinstance(act, nn.ReLU)
        first, last = branch.classifier[0], branch.classifier[-1]
        assert (first.in_features, first.out_features) == (3 * 256 + 50, 64)
        assert (last.in_features, last.out_features) == (64, N_CLASSES)
    assert isinstance(model.multi.slot, nn.Linear)
    assert (model.multi.slot.in_features, model.multi.slot.out_features) == (8, 50)
    prompt = model.single.slot
    assert isinstance(prompt, Prompt) and prompt.unk.shape == (8,)
    assert [(m.in_features, m.out_features) for m in prompt.mlp if isinstance(m, nn.Linear)] == [
        (8, 100), (100, 50)]


def test_branch_selection(shapes, batch):
    x, present, _ = batch
    model = build(BidirectionalDistillation, shapes)
    has = present[:, list(shapes).index(MISS)]
    assert has.any() and (~has).any()
    (z_m, _, _), (z_s, _, _) = model.branches(x, present)
    out = model(x, present)
    torch.testing.assert_close(out[has], z_m[has])
    torch.testing.assert_close(out[~has], z_s[~has])
    # the single-modal branch never reads the missing modality, even where present
    other = {m: (torch.randn_like(v) if m == MISS else v) for m, v in x.items()}
    torch.testing.assert_close(model.branches(other, present)[1][0], z_s)
    # its prompt is one vector for every subject
    _, _, p = model.branches(x, present)[1]
    torch.testing.assert_close(p, p[:1].expand_as(p))
    # the choice follows only missing_modality: dropping another modality keeps the branch
    fewer = present.clone()
    fewer[:, 0] = False
    (z_m2, _, _), (z_s2, _, _) = model.branches(x, fewer)
    out2 = model(x, fewer)
    torch.testing.assert_close(out2[has], z_m2[has])
    torch.testing.assert_close(out2[~has], z_s2[~has])


def _complete_batch(shapes, n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(n, *s, generator=gen) for m, s in shapes.items()}
    return x, torch.ones(n, len(shapes), dtype=torch.bool), torch.arange(n) % N_CLASSES


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # KLDivLoss as in the code
@pytest.mark.parametrize("kd_form", ["standard", "official"])
def test_loss_is_the_paper_sum_with_its_lambdas_and_tau(shapes, kd_form):
    x, present, y = _complete_batch(shapes)
    model = build(BidirectionalDistillation, shapes, kd_form=kd_form)
    (z_m, f_m, c_m), (z_s, f_s, p) = model.branches(x, present)
    ce_m, ce_s = F.cross_entropy(z_m, y), F.cross_entropy(z_s, y)
    feat_m = F.mse_loss(f_m, f_s)
    feat_s = F.mse_loss(torch.cat([f_s, p], -1), torch.cat([f_m, c_m], -1))
    if kd_form == "standard":
        kl = F.kl_div(F.log_softmax(z_s / 1.2, -1), F.log_softmax(z_m / 1.2, -1),
                      reduction="batchmean", log_target=True)
    else:  # the official expression, verbatim in torch terms
        kl = nn.KLDivLoss(log_target=True)(F.log_softmax(z_s, -1) / 1.2,
                                           F.log_softmax(z_m / 1.2, -1))
    terms = model.loss_terms(x, present, y)
    for key, ref in [("ce_multi", ce_m), ("ce_single", ce_s), ("feat_to_multi", feat_m),
                     ("feat_to_single", feat_s), ("kl_to_single", kl)]:
        torch.testing.assert_close(terms[key], ref, msg=key)
        # the official expression is no divergence (τ after the log-softmax): it can be < 0
        assert ref > 0 if (key, kd_form) != ("kl_to_single", "official") else ref != 0
    loss, logits = model.loss(x, present, y)
    torch.testing.assert_close(loss, ce_m + 0.6 * feat_m + ce_s + 0.5 * (feat_s + kl))
    torch.testing.assert_close(logits, z_m)
    # with both λ set to 0 only the two cross-entropies remain
    plain = build(BidirectionalDistillation, shapes, kd_form=kd_form, lambda_s=0.0, lambda_m=0.0)
    torch.testing.assert_close(plain.loss(x, present, y)[0], ce_m + ce_s)
    # τ enters the KL term
    hot = build(BidirectionalDistillation, shapes, kd_form=kd_form, tau=4.0)
    assert not torch.allclose(hot.loss_terms(x, present, y)["kl_to_single"], kl)


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_early_stopping_watches_the_task_on_every_validation_subject(name, cls, hp, shapes,
                                                                     batch):
    """The joint loss was watched: BD's feature terms (two thirds of it) and the AE's
    reconstruction fall for as long as the model trains, so early stopping never stopped
    (the official BD keeps the best validation F1 of the test-time output); and a loss
    over the training rows alone never scored the subjects without the modality, whose
    path (a branch, a fill, a generated modality) is half the task."""
    x, present, y = batch
    model = build(cls, shapes, **hp)
    phases = model.phases({})
    watched = {p.name: p.loss or model.validation_loss for p in phases}
    last = watched[phases[-1].name]  # the phase whose checkpoint is the model
    without = ~model.has_missing(present)
    assert without.any() and (~without).any()
    flipped = torch.where(without, (y + 1) % N_CLASSES, y)
    with torch.no_grad():
        loss, logits = last(x, present, y)
        torch.testing.assert_close(logits, model(x, present))
        assert last(x, present, flipped)[0] != loss
        # the task, on the split as it is and without MISS, whatever the last phase
        # trains on (AE's classifier phase trained on its own loss and was validated
        # with it, on the split as it is only)
        j = list(shapes).index(MISS)
        dropped = present.clone()
        dropped[:, j] &= ~torch.cat([present[:, :j], present[:, j + 1:]], 1).any(1)
        torch.testing.assert_close(loss, (F.cross_entropy(logits, y) + F.cross_entropy(
            model(x, dropped), y)) / 2)


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_a_whole_validation_split_still_scores_the_path_without_the_modality(name, cls, hp,
                                                                             shapes):
    """Under testmiss the validation split is whole: every subject took the multi-modal
    path, and BD's epoch was chosen blind to the single-modal branch that scores most
    test subjects (scrambled, the validation loss did not move)."""
    x, present, y = _complete_batch(shapes)
    model = build(cls, shapes, **hp)
    last = model.phases({})[-1]  # the phase whose checkpoint is the model
    watched = last.loss or model.validation_loss  # as the trainer validates it
    with torch.no_grad():
        before = watched(x, present, y)[0]
        if cls is BidirectionalDistillation:
            for p in model.single.parameters():
                p.add_(torch.randn_like(p))
        elif cls is Filling:
            model.fill_value.add_(5.0)
        else:
            for p in model.generator.parameters():
                p.add_(torch.randn_like(p))
        after = watched(x, present, y)[0]
    assert not torch.isclose(before, after)


def _grads(model, term, x, present, y):
    model.zero_grad()
    model.loss_terms(x, present, y)[term].backward()
    return {n: p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()}


def test_each_distillation_term_moves_one_branch(shapes):
    x, present, y = _complete_batch(shapes)
    model = build(BidirectionalDistillation, shapes).train()
    torch.manual_seed(0)
    g = _grads(model, "feat_to_multi", x, present, y)  # single → multi, features only
    assert any(v for n, v in g.items() if n.startswith("multi.encoders"))
    assert not any(v for n, v in g.items() if n.startswith("single.") or "classifier" in n)
    g = _grads(model, "feat_to_single", x, present, y)  # multi → single, the prompt only
    assert g["single.slot.unk"] and any(v for n, v in g.items() if n.startswith("single.slot"))
    assert not any(v for n, v in g.items() if not n.startswith("single.slot"))
    g = _grads(model, "kl_to_single", x, present, y)    # multi → single, predictions
    assert any(v for n, v in g.items() if n.startswith("single.encoders"))
    assert not any(v for n, v in g.items() if n.startswith("multi."))
    g = _grads(model, "ce_multi", x, present, y)
    assert not any(v for n, v in g.items() if n.startswith("single."))


def test_with_modality_trains_only_on_subjects_having_it(shapes, batch):
    x, present, y = batch
    has = present[:, list(shapes).index(MISS)]
    for cls in (BidirectionalDistillation, Filling, AutoEncoderImpute):
        model = build(cls, shapes, train_subjects="with_modality")
        flipped = torch.where(has, y, (y + 1) % N_CLASSES)
        torch.testing.assert_close(model.loss(x, present, flipped)[0],
                                   model.loss(x, present, y)[0])
    # Filling with "all" does learn from the filled-in subjects
    model = build(Filling, shapes, train_subjects="all")
    flipped = torch.where(has, y, (y + 1) % N_CLASSES)
    assert not torch.allclose(model.loss(x, present, flipped)[0], model.loss(x, present, y)[0])


def test_class_weights_reach_every_cross_entropy(shapes):
    x, present, y = _complete_batch(shapes)
    w = torch.tensor([1.0, 2.0, 0.5])
    model = build(BidirectionalDistillation, shapes)
    (z_m, _, _), (z_s, _, _) = model.branches(x, present)
    terms = model.loss_terms(x, present, y, w)
    torch.testing.assert_close(terms["ce_multi"], F.cross_entropy(z_m, y, weight=w))
    torch.testing.assert_close(terms["ce_single"], F.cross_entropy(z_s, y, weight=w))


def test_phases(shapes, batch):
    model = build(BidirectionalDistillation, shapes, train_subjects="with_modality")
    multi, joint = model.phases({"lr": 1e-3})
    assert (multi.name, joint.name, multi.lr) == ("multi", "bd", 1e-3)
    assert {id(p) for p in multi.parameters()} == {id(p) for p in model.multi.parameters()}
    assert len(list(joint.parameters())) == len(list(model.parameters()))
    assert [p.name for p in build(BidirectionalDistillation, shapes,
                                  pretrain_multi=False).phases({})] == ["bd"]
    # phase "multi": CE of the multi-modal branch on the subjects having the modality,
    # validated on the test-time (branch-selected) logits
    x, present, y = batch
    has = present[:, list(shapes).index(MISS)]
    loss, logits = multi.loss(x, present, y)
    (z_m, _, _), _ = model.branches(x, present)
    torch.testing.assert_close(loss, F.cross_entropy(z_m[has], y[has]))
    torch.testing.assert_close(logits, model(x, present))
    ae = build(AutoEncoderImpute, shapes)
    rec, cls = ae.phases({})
    # the classifier phase watches the project's default monitor, the validation loss
    assert (rec.name, rec.monitor, cls.name, cls.monitor) == (
        "ae", "loss", "classifier", "loss")
    assert {id(p) for p in rec.parameters()} == {id(p) for p in ae.generator.parameters()}
    assert {id(p) for p in cls.parameters()} == {id(p) for p in ae.multi.parameters()}
    assert [p.name for p in build(AutoEncoderImpute, shapes,
                                  ae_training="joint").phases({})] == ["train"]


def test_filling_fills_only_absent_rows(shapes, batch):
    x, present, _ = batch
    has = present[:, list(shapes).index(MISS)]
    model = build(Filling, shapes)
    others, missing = split(model, x, present)
    torch.testing.assert_close(model(x, present), model.multi(others, missing)[0])
    assert torch.all(missing[~has] == 0)
    mean = build(Filling, shapes, fill="mean")
    mean.prepare(x, present, torch.arange(len(has)) % N_CLASSES)
    expected = x[MISS][has].mean(0)
    torch.testing.assert_close(mean.fill_value, expected)
    assert "fill_value" in mean.state_dict()
    filled = torch.where(has.unsqueeze(-1), missing, expected)
    torch.testing.assert_close(mean(x, present), mean.multi(others, filled)[0])
    # the official code's fill: -1 in every feature (dataset.py)
    official = build(Filling, shapes, fill="minus_one")
    torch.testing.assert_close(official.fill_value, torch.full_like(expected, -1.0))
    torch.testing.assert_close(official(x, present), official.multi(
        others, torch.where(has.unsqueeze(-1), missing, -1.0))[0])


def test_ae_uses_generated_features_only_where_absent(shapes, batch):
    x, present, y = batch
    has = present[:, list(shapes).index(MISS)]
    model = build(AutoEncoderImpute, shapes)
    others, missing = split(model, x, present)
    out = model(x, present)
    generated = model.generate(others)
    torch.testing.assert_close(out[has], model.multi(others, missing)[0][has])
    torch.testing.assert_close(out[~has], model.multi(others, generated)[0][~has])
    # phase "ae" loss: reconstruction MSE where the modality is present
    rec, _ = model.ae_loss(x, present, y)
    torch.testing.assert_close(rec, F.mse_loss(generated[has], missing[has]))
    # changing the generator changes only the subjects lacking the modality
    with torch.no_grad():
        model.generator[-1].bias.add_(1.0)
    out2 = model(x, present)
    torch.testing.assert_close(out2[has], out[has])
    assert not torch.allclose(out2[~has], out[~has])
    # phase "classifier" leaves the generator out of the graph (in training: validated,
    # it scores the generated inputs as the task)
    model.train().zero_grad()
    model.classifier_loss(x, present, y)[0].backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert any(p.grad is not None for p in model.multi.parameters())
    # joint: CE + lambda_rec · MSE
    joint = build(AutoEncoderImpute, shapes, ae_training="joint", lambda_rec=2.0)
    ce, rec, _ = joint._terms(x, present, y)
    torch.testing.assert_close(rec, joint.ae_loss(x, present, y)[0])
    torch.testing.assert_close(joint.loss(x, present, y)[0], ce + 2.0 * rec)


def test_not_trainable_without_two_classes_having_the_modality(shapes, batch):
    from mmpipe.bench.trainer import NotTrainable

    x, present, y = batch
    has = present[:, list(shapes).index(MISS)]
    y = torch.where(has, torch.zeros_like(y), torch.ones_like(y))
    model = build(BidirectionalDistillation, shapes, train_subjects="with_modality")
    with pytest.raises(NotTrainable, match="two classes"):
        model.prepare(x, present, y)
    build(Filling, shapes, train_subjects="all").prepare(x, present, y)  # all rows: fine


@pytest.mark.parametrize("cls", [BidirectionalDistillation, Filling, AutoEncoderImpute])
def test_fit_with_the_trainer(cls, tmp_path, separable, bench_data):
    from mmpipe.bench.trainer import fit, predict_proba

    shapes = {"wsi": (12,), MISS: (6,)}

    def bench(n, seed, p_miss):  # only MISS ever absent; the same class means in every split
        return bench_data(*separable(shapes, n=n, seed=seed, missing={MISS: p_miss},
                                     mean_scale=1.5, noise=1.0, means_seed=123), tag=f"s{seed}")

    train, val = bench(60, 0, p_miss=0.0), bench(48, 1, p_miss=0.5)
    method = build(cls, shapes, feat_dim=32)
    result = fit(method, train, val, {"lr": 3e-3, "max_epochs": 8, "patience": 8,
                                      "batch_size": 20, "noise_p": 0.0}, seed=0,
                 log_path=tmp_path / "train.log")
    expected = {BidirectionalDistillation: ["multi", "bd"], Filling: ["train"],
                AutoEncoderImpute: ["ae", "classifier"]}[cls]
    assert list(result.epochs) == expected
    proba = predict_proba(method, val)
    pred = proba.argmax(1)
    balanced = np.mean([np.mean(pred[val.y == c] == c) for c in range(N_CLASSES)])
    assert balanced > 0.7  # chance is 1/3
    has = val.present[:, 1]
    assert np.mean(pred[~has] == val.y[~has]) > 0.6  # also without the modality


@pytest.mark.parametrize("cls", [BidirectionalDistillation, Filling, AutoEncoderImpute])
def test_with_modality_fits_on_the_subjects_having_it(cls, tmp_path, separable, bench_data):
    """The trainer kept every training subject and the losses masked those without the
    modality: the weighted sampler balanced the classes over rows that did not train
    (one class lacking the modality more often left the rows that did unbalanced), and
    n_fit counted them."""
    from mmpipe.bench.trainer import fit

    shapes = {"wsi": (12,), MISS: (6,)}
    train = bench_data(*separable(shapes, n=60, seed=0, missing={MISS: 0.4}, means_seed=123),
                       tag="s0")
    has = train.present[:, 1]
    assert 0 < has.sum() < len(has)
    method = build(cls, shapes, feat_dim=8, train_subjects="with_modality")
    val = bench_data(*separable(shapes, n=30, seed=1, missing={MISS: 0.4}, means_seed=123),
                     tag="s1")
    result = fit(method, train, val, {"max_epochs": 1, "batch_size": 20, "noise_p": 0.0},
                 seed=0, log_path=tmp_path / "train.log")
    assert result.n_fit == int(has.sum())


@pytest.mark.parametrize("cls", [BidirectionalDistillation, Filling, AutoEncoderImpute])
def test_report_notes_name_the_adaptations(cls, shapes):
    notes = build(cls, shapes).report_notes()
    assert notes and all(isinstance(n, str) for n in notes)
    assert any(MISS in n and "zero-filled" in n for n in notes)
    assert any("train_subjects='complete'" in n for n in notes)
    # the settings that ran (a tuning trial's lr), not fixed words ("Adam, mini-batches")
    ran = " ".join(build(cls, shapes, optimizer="sgd", lr=3e-3, batch_size=1).report_notes())
    assert "sgd, lr 0.003, batches of 1" in ran


def test_an_absent_other_modality_is_left_out_of_the_feature_losses(shapes, batch):
    """Under train_subjects: with_modality a training row can lack another modality,
    whose block of encoded features is its encoder's output on the zero fill: the
    feature losses pulled that encoder's bias towards the other branch's from such rows."""
    x, present, y = batch
    other = next(m for m in shapes if m != MISS)
    j = list(shapes).index(other)
    lacking = present.clone()
    lacking[:, j] = False
    lacking[:, list(shapes).index(MISS)] = True
    model = build(BidirectionalDistillation, shapes, train_subjects="with_modality")
    g = _grads(model, "feat_to_multi", x, lacking, y)
    assert not g[f"multi.encoders.{other}.0.bias"]
    assert any(v for n, v in g.items() if n.startswith("multi.encoders."))
    # the mean over the blocks a row has: by hand on the original batch
    terms = model.loss_terms(x, present, y)
    (_, f_m, c_m), (_, f_s, p) = model.branches(x, present)
    width = model.hparams["feat_dim"]
    rows = present[:, list(shapes).index(MISS)]
    cols = torch.cat([present[:, list(shapes).index(m)].unsqueeze(-1).expand(-1, width)
                      for m in model.other_dims], dim=-1)
    by_hand = [((f_m - f_s)[i][cols[i]].pow(2).mean()) for i in range(len(y))
               if rows[i] and cols[i].any()]
    torch.testing.assert_close(terms["feat_to_multi"], torch.stack(by_hand).mean())
    # rows with no other modality have no feature to match: they do not dilute the mean
    only = torch.zeros_like(present)
    only[:, list(shapes).index(MISS)] = True
    doubled = ({m: torch.cat([v, v]) for m, v in x.items()}, torch.cat([present, only]),
               torch.cat([y, y]))
    torch.testing.assert_close(model.loss_terms(*doubled)["feat_to_multi"],
                               terms["feat_to_multi"])
    fused = torch.cat([f_s, p], -1) - torch.cat([f_m, c_m], -1)
    keep = torch.cat([cols, torch.ones_like(p, dtype=torch.bool)], -1)
    by_hand = [fused[i][keep[i]].pow(2).mean() for i in range(len(y)) if rows[i]]
    torch.testing.assert_close(terms["feat_to_single"], torch.stack(by_hand).mean())


def test_the_validation_loss_under_complete_training_leaves_absent_blocks_out(shapes, batch):
    """Under train_subjects: complete the trainer keeps complete training subjects, but the
    validation split is not filtered: its feature terms, which early stopping reads,
    compared the branches on the zero fill of an absent other modality."""
    x, present, y = batch
    present = present.clone()
    present[:, list(shapes).index(MISS)] = True
    present[: len(y) // 2, list(shapes).index(next(m for m in shapes if m != MISS))] = False
    complete = build(BidirectionalDistillation, shapes)
    assert complete.hparams["train_subjects"] == "complete"
    masked = build(BidirectionalDistillation, shapes, train_subjects="with_modality")
    with torch.no_grad():
        got, want = complete.loss_terms(x, present, y), masked.loss_terms(x, present, y)
    for term in ("feat_to_multi", "feat_to_single"):
        torch.testing.assert_close(got[term], want[term])
    # a complete (training) batch keeps the path it trained on
    assert complete.encoded_columns(torch.ones_like(present)) is None


def test_the_run_notes_name_the_protocols_noise_and_sampler():
    # run with the protocol's feature noise and class-balancing sampler, which the official
    # code has neither of, the notes named only the optimiser and the batches
    from mmpipe.methods import method_class

    shapes = {"a": (8,), "b": (5,)}
    for name in ("bd", "bd_filling", "ae_impute"):
        notes = " ".join(method_class(name)(list(shapes), shapes, 2,
                                            missing_modality="b").report_notes())
        assert "Gaussian feature noise on 0.3" in notes and "weighted class-balancing" in notes
