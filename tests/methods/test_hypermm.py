"""HyperMM: hypernetwork-conditioned φ, set aggregation, the two training phases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.base import Phase
from mmpipe.methods.hypermm import HyperMM, HyperMMEndToEnd

N_CLASSES = 3
BLOCK = (16, 3, 3)  # a small stand-in for VGG11's 512×7×7 blocks
BLOCKS = {"ct": BLOCK, "mri": BLOCK, "pet": BLOCK}
SAME = {"ct": (10,), "mri": (10,), "wsi": (10,)}


def _make(cls, shapes, **hparams):
    """A method with narrow heads (the defaults' 512 units only slow the tests down)."""
    small = {"rho_hidden": 64, **({"cls_hidden": 64} if cls is HyperMM else {})}
    return cls(list(shapes), shapes, N_CLASSES, **{**small, **hparams})


def _phi_params(method):
    names = ("embedding", "hypernet", "adapters", "decoder", "classifier")
    return [p for n in names if getattr(method, n, None) is not None
            for p in getattr(method, n).parameters()]


def test_registry():
    assert method_class("hypermm") is HyperMM
    assert method_class("hypermm_e2e") is HyperMMEndToEnd
    assert HyperMM.permutation_invariant and HyperMMEndToEnd.permutation_invariant
    # train+test.py: shuffled single-subject batches and an unweighted BCE, in both
    # variants; the trainer's default would resample the classes to balance
    for cls in (HyperMM, HyperMMEndToEnd):
        assert (cls.defaults["sampler"], cls.defaults["class_weights"]) == ("none", False)


@pytest.mark.parametrize("shapes", [BLOCKS, SAME, {"ct": (16,), "mri": (12,), "wsi": (24,)}],
                         ids=["blocks", "vectors", "vectors-adapters"])
@pytest.mark.parametrize("cls", [HyperMM, HyperMMEndToEnd])
def test_shapes(cls, shapes, make_batch):
    x, present, _ = make_batch(shapes, batch=8)
    method = _make(cls, shapes)
    method.eval()
    out = method(x, present)
    assert out.shape == (8, N_CLASSES) and torch.isfinite(out).all()
    rep = method.representation(x, present)
    c = next(iter(shapes.values()))[0]
    expected = c * BLOCK[1] * BLOCK[2] if shapes is BLOCKS else min(s[0] for s in shapes.values())
    assert rep.shape == (8, expected)
    assert (method.adapters is not None) == (len({s for s in shapes.values()}) > 1)


def test_vgg_block_shapes_follow_official_code():
    """512×7×7 blocks: 1×1 conv 512→512 generated from a 5-d embedding through 20 hidden
    units, ρ and the temporary classifier read the flattened 25088 values (HyperMM.py)."""
    shapes = {"mri": (512, 7, 7), "pet": (512, 7, 7)}
    method = HyperMM(list(shapes), shapes, 2, rho_layers=2)
    assert method.embedding.weight.shape == (2, 5)
    assert method.hypernet[-1].out_features == 512 * 512 + 512
    assert method.rho[0].in_features == 512 * 7 * 7
    assert method.classifier[0].in_features == 512 * 7 * 7
    assert [type(m).__name__ for m in method.rho] == ["Linear", "ReLU", "Dropout", "Linear"]
    w, b = method.generated()
    assert w.shape == (2, 512, 512) and b.shape == (2, 512)
    # scaled init: generated weights spread like a default conv init, std 1/sqrt(3 fan_in)
    assert w.std().item() == pytest.approx(1 / np.sqrt(3 * 512), rel=0.05)
    gap = HyperMM(list(shapes), shapes, 2, pool="gap")
    assert gap.rho[0].in_features == 512
    x = {m: torch.randn(2, *s) for m, s in shapes.items()}
    assert gap(x, torch.ones(2, 2, dtype=torch.bool)).shape == (2, 2)


def test_conv_phi_is_a_generated_one_by_one_conv():
    method = _make(HyperMM, BLOCKS)
    x = {m: torch.randn(4, *BLOCK) for m in BLOCKS}
    present = torch.ones(4, 3, dtype=torch.bool)
    z = method.phi(x, present)
    w, b = method.generated()
    for j, m in enumerate(BLOCKS):
        ref = F.conv2d(x[m], w[j][:, :, None, None], b[j])
        torch.testing.assert_close(z[:, j], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["mean", "sum", "max"])
@pytest.mark.parametrize("cls", [HyperMM, HyperMMEndToEnd])
def test_masked_values_ignored(cls, aggregation, shapes, batch, assert_masking):
    x, present, _ = batch
    method = _make(cls, shapes, aggregation=aggregation)
    assert_masking(method, x, present)


def test_masked_values_ignored_blocks(make_batch, assert_masked_values_ignored):
    x, present, _ = make_batch(BLOCKS, batch=8)
    assert_masked_values_ignored(_make(HyperMM, BLOCKS), x, present)


def test_phi_loss_ignores_masked_values(shapes, batch):
    x, present, y = batch
    method = _make(HyperMM, shapes)
    loss, logits = method.phi_loss(x, present, y)
    noisy = {m: torch.where(present[:, j].view(-1, 1), v, 1e3 * torch.randn_like(v))
             for j, (m, v) in enumerate(x.items())}
    loss2, logits2 = method.phi_loss(noisy, present, y)
    torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(logits2, logits)
    assert logits.shape == (len(y), N_CLASSES)


@pytest.mark.parametrize("aggregation", ["mean", "sum", "max"])
def test_permutation_invariant(aggregation, shapes, batch, assert_permutation_invariant):
    x, present, _ = batch
    method = _make(HyperMM, shapes, aggregation=aggregation)
    assert_permutation_invariant(method, x, present)
    assert_permutation_invariant(_make(HyperMMEndToEnd, shapes,
                                                 aggregation=aggregation), x, present)


def test_set_function_of_present_modalities():
    """Swapping two modalities' inputs together with their embeddings leaves the output
    unchanged: φ is shared and only the embedding tells modalities apart."""
    method = _make(HyperMM, SAME).eval()
    x = {m: torch.randn(5, *s) for m, s in SAME.items()}
    present = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    ref = method(x, present)
    with torch.no_grad():
        method.embedding.weight[[0, 1]] = method.embedding.weight[[1, 0]].clone()
    swapped = {"ct": x["mri"], "mri": x["ct"], "wsi": x["wsi"]}
    out = method(swapped, present[:, [1, 0, 2]])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["mean", "sum", "max"])
def test_aggregation(aggregation):
    method = _make(HyperMM, SAME, aggregation=aggregation)
    f = torch.randn(4, 3, 6)
    present = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    out = method.aggregate(f, present)
    for i in range(3):
        rows = f[i][present[i]]
        ref = {"mean": rows.mean(0), "sum": rows.sum(0), "max": rows.amax(0)}[aggregation]
        torch.testing.assert_close(out[i], ref)
    assert torch.equal(out[3], torch.zeros(6))  # no modality: a finite, constant input


def test_rho_variants():
    three = _make(HyperMM, SAME)
    two = _make(HyperMM, SAME, rho_layers=2)
    assert sum(isinstance(m, torch.nn.Linear) for m in three.rho) == 3
    assert sum(isinstance(m, torch.nn.Linear) for m in two.rho) == 2
    # the narrowest rho a tuning trial can reach: every layer has a unit (rho_hidden 1
    # made a layer of none, its output the last bias alone)
    narrow = _make(HyperMM, SAME, rho_hidden=1)
    assert [m.out_features for m in narrow.rho if isinstance(m, torch.nn.Linear)] == [
        1, 1, N_CLASSES]


def test_invalid_configurations():
    with pytest.raises(ValueError, match="aggregation"):
        _make(HyperMM, SAME, aggregation="median")
    with pytest.raises(ValueError, match="rho_layers"):
        _make(HyperMM, SAME, rho_layers=4)
    with pytest.raises(ValueError, match="unknown"):
        _make(HyperMM, SAME, emb=3)
    with pytest.raises(ValueError, match="unknown"):
        _make(HyperMMEndToEnd, SAME, phi_max_epochs=3)
    with pytest.raises(ValueError, match="block"):
        HyperMM(["a", "b"], {"a": (512, 7, 7), "b": (512,)}, N_CLASSES)
    with pytest.raises(ValueError, match="one shape"):
        HyperMM(["a", "b"], {"a": (512, 7, 7), "b": (256, 7, 7)}, N_CLASSES)


def test_phases_freeze_phi_for_rho(separable):
    method = _make(HyperMM, SAME)
    phases = method.phases({"lr": 1e-3, "max_epochs": 7, "patience": 3})
    assert [p.name for p in phases] == ["phi", "rho"]
    phi, rho = phases
    assert isinstance(phi, Phase) and phi.loss == method.phi_loss and phi.monitor == "loss"
    assert phi.max_epochs == 50 and phi.lr == 1e-3 and phi.patience == 3
    assert rho.loss is None and rho.max_epochs == 7
    assert set(rho.extra["frozen"]) == {"embedding", "hypernet", "decoder", "classifier"}

    phi_ids = {id(p) for p in phi.parameters()}
    assert phi_ids == {id(p) for p in _phi_params(method)}
    assert not phi_ids & {id(p) for p in method.rho.parameters()}
    assert all(p.requires_grad for p in method.parameters())

    rho_params = list(rho.parameters())
    assert {id(p) for p in rho_params} == {id(p) for p in method.rho.parameters()}
    assert not any(p.requires_grad for p in _phi_params(method))
    assert all(p.requires_grad for p in method.rho.parameters())
    method.train()
    assert method.rho.training and not method.hypernet.training
    # the shared trainer's optimiser sees ρ only
    from mmpipe.bench.trainer import _optimizer
    opt = _optimizer(rho, rho.parameters())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in rho_params}

    # one ρ step: φ gets no gradient and does not move
    x, present, y = separable(SAME, n=16)
    before = [p.detach().clone() for p in _phi_params(method)]
    loss, _ = method.loss(x, present, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in _phi_params(method))
    assert all(torch.equal(a, p) for a, p in zip(before, _phi_params(method), strict=True))
    # φ's parameters count although frozen
    assert method.trainable_parameters() == sum(p.numel() for p in method.parameters())
    # phases can be run again: the φ phase releases φ
    phi.parameters()
    assert all(p.requires_grad for p in method.parameters())


MIXED = {"ct": (16,), "mri": (12,), "wsi": (24,)}


def test_phase_phi_trains_the_adapters_and_rho_freezes_them(separable):
    """On modalities of different widths (MMIST's with_clinical) the adapters are φ's:
    left out of phase φ they stayed at their random init in both phases, and no test
    with equal widths could tell."""
    method = _make(HyperMM, MIXED)
    assert method.adapters is not None
    phi, rho = method.phases({"lr": 1e-3})
    adapters = {id(p) for p in method.adapters.parameters()}
    assert adapters <= {id(p) for p in phi.parameters()}
    x, present, y = separable(MIXED, n=16)
    method.zero_grad()
    method.phi_loss(x, present, y)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in method.adapters.parameters())
    rho.parameters()
    assert not adapters & {id(p) for p in rho.parameters()}
    assert not any(p.requires_grad for p in method.adapters.parameters())


def test_phase_phi_loss_is_the_reconstruction_plus_the_cross_entropy(separable):
    """The official ``mse + ce``: deleting the reconstruction term passed every test."""
    x, present, y = separable(SAME, n=16)
    method = _make(HyperMM, SAME, lambda_rec=2.0).eval()
    loss, _ = method.phi_loss(x, present, y)
    z = method.phi(x, present)
    item_logits = method.classifier(method._pool(z)[present])
    ce = F.cross_entropy(item_logits, y.unsqueeze(1).expand_as(present)[present])
    rec = method._reconstruction(z, x, present)
    assert rec > 0
    torch.testing.assert_close(loss, ce + 2.0 * rec)
    # a batch with no present item adds nothing (its mean over no item was NaN)
    none = torch.zeros_like(present)
    assert torch.isfinite(method.phi_loss(x, none, y)[0])


def test_end_to_end_early_stopping_watches_the_task(separable):
    """With a positive lambda_rec the reconstruction, which falls as φ trains, was
    watched with the cross-entropy."""
    x, present, y = separable(SAME, n=16)
    method = _make(HyperMMEndToEnd, SAME, lambda_rec=1.0).eval()
    with torch.no_grad():
        watched, logits = method.validation_loss(x, present, y)
        torch.testing.assert_close(watched, F.cross_entropy(logits, y))
        assert method.loss(x, present, y)[0] > watched


def test_end_to_end_has_one_phase_over_everything(separable):
    method = _make(HyperMMEndToEnd, SAME)
    assert method.decoder is None and method.classifier is None  # CE only (lambda_rec = 0)
    (phase,) = method.phases({})
    assert phase.name == "train" and phase.loss is None
    assert {id(p) for p in phase.parameters()} == {id(p) for p in method.parameters()}
    with_rec = _make(HyperMMEndToEnd, SAME, lambda_rec=1.0)
    assert with_rec.decoder is not None
    x, present, y = separable(SAME, n=16)
    ce, _ = method.loss(x, present, y)
    torch.manual_seed(0)
    total, logits = with_rec.loss(x, present, y)
    assert logits.shape == (16, N_CLASSES) and total > F.cross_entropy(logits, y)


def _steps(method, loss_fn, params, data, n=40, lr=1e-3):
    x, present, y = data
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=lr)
    losses = []
    method.train()
    for _ in range(n):
        loss, _ = loss_fn(x, present, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("shapes", [SAME, BLOCKS], ids=["vectors", "blocks"])
def test_two_step_training_smoke(shapes, separable):
    torch.manual_seed(0)
    data = separable(shapes, n=48, mean_scale=1.0)
    method = _make(HyperMM, shapes)
    phi, rho = method.phases({})
    losses = _steps(method, phi.loss, phi.parameters(), data)
    assert losses[-1] < 0.7 * losses[0]
    frozen = [p.detach().clone() for p in _phi_params(method)]
    losses = _steps(method, method.loss, rho.parameters(), data)
    assert losses[-1] < 0.7 * losses[0]
    assert all(torch.equal(a, p) for a, p in zip(frozen, _phi_params(method), strict=True))
    method.eval()
    acc = (method(data[0], data[1]).argmax(1) == data[2]).float().mean()
    assert acc > 0.8


def test_end_to_end_training_smoke(separable):
    torch.manual_seed(0)
    data = separable(SAME, n=48, mean_scale=1.0)
    method = _make(HyperMMEndToEnd, SAME)
    (phase,) = method.phases({})
    losses = _steps(method, method.loss, phase.parameters(), data)
    assert losses[-1] < 0.7 * losses[0]


def test_shared_trainer_runs_both_phases(tmp_path, separable, bench_data):
    from mmpipe.bench.trainer import fit, predict_proba

    train = val = bench_data(*separable(SAME, n=60, mean_scale=1.0))
    method = _make(HyperMM, SAME, phi_max_epochs=3)
    result = fit(method, train, val, {"lr": 1e-3, "max_epochs": 5, "batch_size": 16}, seed=0,
                 log_path=tmp_path / "train.log")
    assert result.epochs == {"phi": 3, "rho": 5}
    assert not any(p.requires_grad for p in method.hypernet.parameters())
    proba = predict_proba(method, val)
    assert proba.shape == (60, N_CLASSES)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)


def test_the_report_reads_every_departure_from_the_official_code_that_ran():
    """On VGG blocks the report read no note, where the docstring lists seven departures
    from the official code, each run by default."""
    blocks = method_class("hypermm")(["t1", "t2"], {"t1": (512, 7, 7), "t2": (512, 7, 7)}, 2)
    notes = " | ".join(blocks.report_notes())
    for said in ("hyper_init: scaled", "rho of three linear layers", "mini-batches",
                 "ReduceLROnPlateau", "binary BCE", "phase phi keeps its best validation"):
        assert said in notes, said
    assert "vector features" not in notes
    official = method_class("hypermm")(["t1", "t2"], {"t1": (512, 7, 7), "t2": (512, 7, 7)},
                                       2, hyper_init="default", rho_layers=2)
    assert "hyper_init" not in " ".join(official.report_notes())
    assert "three linear layers" not in " ".join(official.report_notes())
    vectors = method_class("hypermm")(["ct", "wsi", "tab"],
                                      {"ct": (512,), "wsi": (1024,), "tab": (28,)}, 2)
    assert "each modality first mapped to 28 values by its own linear adapter" in (
        vectors.report_notes()[0])
    e2e = method_class("hypermm_e2e")(["t1", "t2"], {"t1": (512, 7, 7), "t2": (512, 7, 7)}, 2)
    assert not any("phase phi keeps" in n for n in e2e.report_notes())
