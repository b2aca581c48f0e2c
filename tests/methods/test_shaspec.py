"""FeatImpute (ShaSpec-style): missing-feature generation, fusion, auxiliary losses, training."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.ham_recipe import focal_loss
from mmpipe.methods.shaspec import FeatImpute

N_CLASSES = 3
DIM = 16


def build(shapes, n_classes=N_CLASSES, **hp):
    torch.manual_seed(0)
    return FeatImpute(list(shapes), shapes, n_classes, **{"dim": DIM, **hp}).eval()


def test_registry_and_defaults():
    assert method_class("featimpute") is FeatImpute
    d = FeatImpute.defaults
    assert (d["lambda_shared"], d["lambda_domain"], d["dim"]) == (0.1, 0.02, 256)
    assert (d["shared_pairs"], d["missing_fill"]) == ("cyclic", "first")
    assert d["train_dropout"] == "random"          # official run.sh: --mode=random
    assert (d["optimizer"], d["task_loss"], d["class_weights"]) == ("rmsprop", "focal", True)
    assert not FeatImpute.permutation_invariant


def test_bad_hparams_rejected(shapes):
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        FeatImpute(list(shapes), shapes, 2, depth=3)
    with pytest.raises(ValueError, match="missing_fill"):
        FeatImpute(list(shapes), shapes, 2, missing_fill="zeros")
    with pytest.raises(ValueError, match="shared_pairs"):
        FeatImpute(list(shapes), shapes, 2, shared_pairs="star")
    with pytest.raises(ValueError, match="train_dropout"):
        FeatImpute(list(shapes), shapes, 2, train_dropout="half")


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("fill", ["first", "mean"])
def test_output_shape_and_no_modality_row(shapes, batch, n_classes, fill):
    x, present, y = batch
    present = present.clone()
    present[:2] = False
    model = build(shapes, n_classes=n_classes, missing_fill=fill)
    out = model(x, present)
    assert out.shape == (len(present), n_classes) and torch.isfinite(out).all()
    assert torch.all(model.fused_features(x, present)[:2] == 0)
    model.train()
    loss, _ = model.loss(x, present, y % n_classes)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.shared[0].weight.grad.abs().sum() > 0
    assert model.domain_classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("fill", ["first", "mean"])
def test_masked_values_ignored(shapes, batch, fill, assert_masking):
    x, present, _ = batch
    model = build(shapes, missing_fill=fill)
    assert_masking(model, x, present)


def test_adapters_only_when_widths_differ(shapes, make_batch):
    model = build(shapes)
    assert set(model.adapters) == set(shapes)
    assert all(model.adapters[m][0].in_features == s[0] for m, s in shapes.items())
    assert model.shared[0].in_features == DIM
    same = {"a": (2, 5), "b": (10,)}                           # 10 values each: no adapter
    model = build(same, n_classes=2)
    assert model.adapters is None and model.shared[0].in_features == 10
    x, present, _ = make_batch(same, batch=8, n_classes=2)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))
    assert model.pairs() == [(0, 1)]


def test_absent_slot_is_the_shared_feature_of_the_first_present(shapes):
    model = build(shapes)
    gen = torch.Generator().manual_seed(0)
    x = {m: torch.randn(3, *s, generator=gen) for m, s in shapes.items()}
    present = torch.tensor([[False, True, False, True],
                            [False, False, True, False],
                            [True, True, True, True]])
    r, s = model.encode(x, present)
    fused = model.fused_features(x, present)
    # row 0: ct and wsi absent → mri's shared feature; row 1: all but wsi absent → wsi's
    torch.testing.assert_close(fused[0, 0], r[0, 1])
    torch.testing.assert_close(fused[0, 2], r[0, 1])
    for j in (0, 1, 3):
        torch.testing.assert_close(fused[1, j], r[1, 2])
    # present slots: r + P[r; s] (residual fusion, one projection for every modality)
    for i, j in [(0, 1), (0, 3), (1, 2), (2, 0), (2, 3)]:
        expected = r[i, j] + model.proj(torch.cat([r[i, j], s[i, j]]))
        torch.testing.assert_close(fused[i, j], expected)
    assert not torch.allclose(fused[0, 1], r[0, 1])            # the fusion does something
    # the shared feature of a modality depends only on that modality's input
    r_alone, _ = model.encode({m: v[:1] for m, v in x.items()}, present[:1])
    torch.testing.assert_close(r_alone[0, 1], r[0, 1])
    # missing_fill mean: the mean of the present shared features
    mean_model = build(shapes, missing_fill="mean")
    r, _ = mean_model.encode(x, present)
    fused = mean_model.fused_features(x, present)
    torch.testing.assert_close(fused[0, 0], (r[0, 1] + r[0, 3]) / 2)
    # the head reads the concatenation of the M fused features
    torch.testing.assert_close(model(x, present), model.head(model.fused_features(
        x, present).flatten(1)))


def test_auxiliary_losses_and_their_weights(shapes, batch):
    x, present, y = batch
    model = build(shapes, dropout=0.0)
    r, s = model.encode(x, present)
    shared, domain = model.auxiliary_losses(r, s, present)
    # shared consistency: L1 over the cycle of modality pairs, subjects with both present
    assert model.pairs() == [(0, 1), (1, 2), (2, 3), (3, 0)]
    expected = sum(F.l1_loss(r[present[:, j] & present[:, k], j],
                             r[present[:, j] & present[:, k], k])
                   for j, k in model.pairs())
    torch.testing.assert_close(shared, expected)
    assert shared > 0
    # domain classification: which modality a present specific feature came from
    labels = torch.arange(4).expand_as(present)[present]
    torch.testing.assert_close(domain, F.cross_entropy(model.domain_classifier(s[present]),
                                                       labels))
    loss, logits = model.loss(x, present, y)
    task = focal_loss(logits, y, 2.0)
    torch.testing.assert_close(loss, task + 0.1 * shared + 0.02 * domain)
    off = build(shapes, dropout=0.0, lambda_shared=0.0, lambda_domain=0.0)
    loss_off, logits_off = off.loss(x, present, y)
    torch.testing.assert_close(loss_off, focal_loss(logits_off, y, 2.0))
    heavy = build(shapes, dropout=0.0, lambda_shared=1.0, lambda_domain=2.0)
    torch.testing.assert_close(heavy.loss(x, present, y)[0], task + shared + 2.0 * domain)
    # shared_pairs all: every pair
    assert build(shapes, shared_pairs="all").pairs() == [(0, 1), (0, 2), (0, 3), (1, 2),
                                                         (1, 3), (2, 3)]
    # no subject with both modalities of a pair: that pair adds nothing
    lone = torch.zeros_like(present)
    lone[:, 0] = True
    shared, domain = model.auxiliary_losses(r, s, lone)
    assert shared == 0 and torch.isfinite(domain)


def test_early_stopping_watches_the_task_loss(shapes, batch):
    """The shared and domain terms, which fall as the encoders train whatever the
    output's quality, were watched with the task."""
    x, present, y = batch
    model = build(shapes, dropout=0.0)
    with torch.no_grad():
        watched, logits = model.validation_loss(x, present, y)
        torch.testing.assert_close(logits, model(x, present))
        torch.testing.assert_close(watched, focal_loss(logits, y, 2.0))
        assert model.loss(x, present, y)[0] > watched


def test_training_drops_a_random_subset_of_each_subject_s_modalities(shapes, batch):
    """ShaSpec trains its final model with random modality dropout (official run.sh,
    ``--mode=random``): it trained on the natural presence only, so the generation path
    never learnt on most subsets. Each training subject keeps 1 to all of its present
    modalities, uniformly many, and its slots are filled from a random kept one."""
    x, present, y = batch
    model = build(shapes, dropout=0.0)
    seen = []
    fuse = model.fuse

    def spy(r, s, kept, first=None):
        seen.append((kept.clone(), first))
        return fuse(r, s, kept, first)

    model.fuse = spy
    torch.manual_seed(0)
    model.train()
    for _ in range(200):
        model.loss(x, present, y)
    counts = present.sum(1)
    sizes = {i: set() for i in range(len(y))}
    fills = {i: set() for i in range(len(y))}
    for kept, first in seen:
        assert not (kept & ~present).any() and (kept.sum(1) >= counts.clamp(max=1)).all()
        assert kept[torch.arange(len(y)), first][counts > 0].all()  # the fill is kept
        for i in range(len(y)):
            sizes[i].add(int(kept[i].sum()))
            fills[i].add(int(first[i]))
    for i in range(len(y)):
        assert sizes[i] == set(range(1, int(counts[i]) + 1)) or counts[i] == 0
        assert fills[i] == set(torch.nonzero(present[i]).flatten().tolist()) or counts[i] == 0
    # evaluation sees every present modality; so does training with train_dropout: none
    seen.clear()
    model.eval()
    with torch.no_grad():
        model.loss(x, present, y)
    assert torch.equal(seen[-1][0], present) and seen[-1][1] is None
    plain = build(shapes, dropout=0.0, train_dropout="none").train()
    plain_seen = []
    plain_fuse = plain.fuse
    plain.fuse = lambda r, s, kept, first=None: (plain_seen.append(kept.clone()),
                                                 plain_fuse(r, s, kept, first))[1]
    plain.loss(x, present, y)
    assert torch.equal(plain_seen[0], present)


def test_auxiliary_losses_ignore_absent_modalities(shapes, batch):
    """Absent modalities' features (computed from zeros) do not enter the auxiliary terms."""
    x, present, _ = batch
    model = build(shapes)
    r, s = model.encode(x, present)
    noise = 100 * torch.randn_like(r)
    mask = present.unsqueeze(-1)
    shared, domain = model.auxiliary_losses(r, s, present)
    shared2, domain2 = model.auxiliary_losses(torch.where(mask, r, noise),
                                              torch.where(mask, s, noise), present)
    torch.testing.assert_close((shared, domain), (shared2, domain2))


def test_fit_learns(shapes, separable, bench_data):
    from mmpipe.bench.metrics import classification_metrics
    from mmpipe.bench.trainer import fit, predict_proba

    def bench(draw):  # class means fixed, presence and noise from the draw: train and
        # validation are two draws of one distribution
        return bench_data(*separable(shapes, n=120, n_classes=2, seed=1000 + draw,
                                     means_seed=0), tag=f"s{draw}")

    train, val = bench(0), bench(1)
    model = build(shapes, n_classes=2)
    cfg = {k: model.hparams[k] for k in ("optimizer", "sampler", "class_weights")}
    result = fit(model, train, val, {**cfg, "lr": 1e-3, "max_epochs": 15, "patience": 15,
                                     "batch_size": 16}, seed=0)
    assert result.epochs["train"] >= 1
    assert classification_metrics(val.y, predict_proba(model, val))["balanced_accuracy"] > 0.85


def test_report_notes_give_the_recipe_that_ran(shapes):
    """The note said weighted focal loss, RMSprop, feature noise and head dropout 0.3
    whatever the config set."""
    default = " ".join(build(shapes).report_notes())
    assert "class-weighted focal loss (gamma 2), rmsprop at lr 0.0001" in default
    assert "Gaussian feature noise (p 0.3" in default and "head dropout 0.3" in default
    ran = " ".join(build(shapes, task_loss="ce", noise_p=0.0, dropout=0.0, lr=3e-4,
                         class_weights=False).report_notes())
    assert "cross-entropy, rmsprop at lr 0.0003, no feature noise, head dropout 0" in ran
    assert "focal" not in ran and "weighted" not in ran


def test_two_stage_trains_every_modality_then_random_mode(shapes, separable, bench_data):
    """The official run.sh trains with every modality, then random mode from that
    checkpoint; only one stage of random mode could be run."""
    from mmpipe.bench.trainer import fit

    train, val = (bench_data(*separable(shapes, n=60, n_classes=2, seed=s, means_seed=0),
                             tag=f"t{s}") for s in (1, 2))
    model = build(shapes, n_classes=2, dropout=0.0, train_dropout="two_stage")
    kept_by_phase: dict[str, list] = {"full": [], "random": []}
    fuse = model.fuse

    def spy(r, s, kept, first=None):
        if model.training:
            phase = "random" if model.random_modes else "full"
            kept_by_phase[phase].append((kept.clone(), first))
        return fuse(r, s, kept, first)

    model.fuse = spy
    cfg = {k: model.hparams[k] for k in ("optimizer", "sampler", "class_weights")}
    result = fit(model, train, val, {**cfg, "lr": 1e-3, "max_epochs": 2, "patience": 2,
                                     "batch_size": 60, "noise_p": 0.0}, seed=0)
    assert list(result.epochs) == ["full", "random"]
    assert [p["name"] for p in result.settings["phases"]] == ["full", "random"]
    full, random_mode = kept_by_phase["full"], kept_by_phase["random"]
    assert full and random_mode
    present = int(torch.as_tensor(train.present).sum())  # batches of every subject
    assert all(first is None and int(kept.sum()) == present for kept, first in full)
    assert all(first is not None for _, first in random_mode)
    assert any(int(kept.sum()) < present for kept, _ in random_mode)
    assert "two stages as the official run.sh" in " ".join(model.report_notes())
    # the default runs one stage of random mode
    assert [p.name for p in build(shapes).phases({})] == ["train"]
