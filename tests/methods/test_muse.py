"""MUSE: graph construction, masking, batch-independent evaluation, edge dropping, losses,
training."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods import muse as muse_module
from mmpipe.methods.muse import (
    MUSE,
    EdgeSAGEConv,
    build_graph,
    drop_edges,
    supervised_contrastive,
    unsupervised_contrastive,
)

N_CLASSES = 3
HIDDEN = 16


def build(shapes, n_classes=N_CLASSES, prepared=None, **hp):
    torch.manual_seed(0)
    model = MUSE(list(shapes), shapes, n_classes, **{"hidden": HIDDEN, **hp})
    if prepared is not None:
        model.prepare(*prepared)
    return model.eval()


def test_registry_and_official_defaults():
    assert method_class("muse") is MUSE
    d = MUSE.defaults
    # src/core/run.py (ADNI) and src/core/gnn.py (MML)
    assert (d["hidden"], d["ffn_layers"], d["gnn_layers"], d["dropout"]) == (128, 2, 2, 0.25)
    assert (d["temperature"], d["edge_drop_p"], d["unsup_weight"], d["sup_weight"]) == (
        0.07, 0.5, 0.5, 0.5)
    assert (d["lr"], d["weight_decay"], d["batch_size"], d["max_epochs"]) == (1e-4, 0.0, 256, 100)
    assert (d["sampler"], d["monitor"], d["patience"]) == ("none", "auc", 100)
    assert d["eval_graph"] == "reference"
    assert MUSE.permutation_invariant


def test_bad_hparams_rejected(shapes):
    for hp, match in [({"eval_graph": "transductive"}, "eval_graph"),
                      ({"ffn_layers": 1}, "ffn_layers"), ({"gnn_layers": 0}, "gnn_layers"),
                      ({"edge_drop_p": 1.5}, "edge_drop_p"), ({"temperature": 0}, "temperature"),
                      ({"depth": 3}, "unknown hyper-parameters")]:
        with pytest.raises(ValueError, match=match):
            MUSE(list(shapes), shapes, 2, **hp)


@pytest.mark.parametrize("mode", ["reference", "single", "batch"])
def test_output_shape_finite_and_no_modality_rows(shapes, batch, mode):
    x, present, y = batch
    model = build(shapes, prepared=batch, eval_graph=mode)
    out = model(x, present)
    assert out.shape == (len(present), N_CLASSES) and torch.isfinite(out).all()
    empty = present.clone()
    empty[:3] = False
    for train in (False, True):
        model.train(train)
        out = model(x, empty)
        assert torch.isfinite(out).all()
    # a subject with no edge reads nothing: every such subject gets the same output
    model.eval()
    out = model(x, empty)
    torch.testing.assert_close(out[1:3], out[:1].expand(2, -1))


def test_two_modalities_two_classes_and_higher_rank(make_batch):
    shapes = {"a": (1, 8), "b": (2, 3)}
    data = make_batch(shapes, batch=10, n_classes=2)
    x, present, y = data
    model = build(shapes, n_classes=2, prepared=data)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))
    model.train()
    loss, logits = model.loss(x, present, y)
    assert logits.shape == (10, 2) and torch.isfinite(loss)


@pytest.mark.parametrize("mode", ["reference", "single", "batch"])
def test_masked_values_ignored(shapes, batch, mode, assert_masking):
    x, present, _ = batch
    model = build(shapes, prepared=batch, eval_graph=mode)
    assert_masking(model, x, present)


def test_reference_ignores_masked_training_values(shapes, batch):
    # absent entries of the stored training split never reach an evaluation output
    x, present, y = batch
    model = build(shapes, prepared=batch)
    noisy = {m: torch.where(present[:, j].view(-1, 1), v, 1e3 * torch.randn_like(v))
             for j, (m, v) in enumerate(x.items())}
    other = build(shapes, prepared=(noisy, present, y))
    torch.testing.assert_close(other(x, present), model(x, present), rtol=0, atol=1e-6)


def test_permutation_invariant(shapes, batch, assert_permutation_invariant):
    x, present, _ = batch
    assert_permutation_invariant(build(shapes, prepared=batch), x, present)


def test_graph_has_one_edge_per_present_pair(batch):
    _, present, _ = batch
    n_pat, n_mod = present.shape
    graph = build_graph(present)
    pairs = {(int(i), int(j)) for i, j in present.nonzero()}
    src, dst = graph.edge_index
    up = src < n_pat
    assert graph.edge_index.shape[1] == 2 * len(pairs) and graph.n_nodes == n_pat + n_mod
    # each present pair: exactly one patient→modality and one modality→patient edge
    ups = [(int(s), int(d) - n_pat) for s, d in zip(src[up], dst[up], strict=True)]
    downs = [(int(d), int(s) - n_pat) for s, d in zip(src[~up], dst[~up], strict=True)]
    assert sorted(ups) == sorted(pairs) and sorted(downs) == sorted(pairs)
    # the edge carries the features of its own (patient, modality) pair
    patient = torch.where(up, src, dst)
    torch.testing.assert_close(graph.patient, patient)
    torch.testing.assert_close(graph.modality, torch.where(up, dst, src) - n_pat)
    # receive-only patients keep their incoming edges only
    receive = torch.arange(n_pat) % 2 == 1
    graph = build_graph(present, receive_only=receive)
    src, dst = graph.edge_index
    assert not receive[src[src < n_pat]].any()
    assert int((dst < n_pat).sum()) == len(pairs)
    assert graph.edge_index.shape[1] == len(pairs) + int(present[~receive].sum())
    # private modality nodes: one copy per patient, no node shared by two patients
    graph = build_graph(present, private_modalities=True)
    src, dst = graph.edge_index
    mod_nodes = torch.where(src < n_pat, dst, src)
    assert graph.n_nodes == n_pat + n_pat * n_mod
    torch.testing.assert_close(mod_nodes, n_pat + graph.patient * n_mod + graph.modality)


def test_forward_builds_edges_for_present_pairs_only(shapes, batch, monkeypatch):
    x, present, y = batch
    model = build(shapes, eval_graph="batch")
    seen = []
    real = muse_module.build_graph
    monkeypatch.setattr(muse_module, "build_graph",
                        lambda p, *a, **k: seen.append(p.clone()) or real(p, *a, **k))
    for train in (False, True):
        model.train(train)
        model(x, present)
    assert len(seen) == 2 and all(torch.equal(p, present) for p in seen)


def test_edge_sage_messages_use_edge_features():
    torch.manual_seed(0)
    conv = EdgeSAGEConv(4, 3)
    x = torch.randn(3, 4)
    edge_index = torch.tensor([[1, 2], [0, 0]])  # nodes 1 and 2 send to node 0
    attr = torch.randn(2, 3)
    out = conv(x, edge_index, attr)
    msgs = F.relu(conv.message_lin(torch.cat([x[1:], attr], -1)))
    expected0 = F.relu(conv.update_lin(torch.cat([msgs.mean(0), x[0]])))
    torch.testing.assert_close(out[0], expected0)
    # a node without incoming edges aggregates zeros
    torch.testing.assert_close(out[1], F.relu(conv.update_lin(torch.cat([torch.zeros(4), x[1]]))))
    assert not torch.allclose(conv(x, edge_index, attr + 1.0)[0], out[0])


@pytest.mark.parametrize("mode", ["reference", "single"])
def test_evaluation_is_batch_independent(shapes, batch, make_batch, mode):
    x, present, _ = batch
    model = build(shapes, prepared=make_batch(shapes, batch=40, seed=5), eval_graph=mode)
    with torch.no_grad():
        together = model(x, present)
        for i in range(0, len(present), 5):
            alone = model({m: v[i:i + 1] for m, v in x.items()}, present[i:i + 1])
            torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-6)
        order = torch.randperm(len(present), generator=torch.Generator().manual_seed(0))
        shuffled = model({m: v[order] for m, v in x.items()}, present[order])
    torch.testing.assert_close(shuffled, together[order], rtol=0, atol=1e-6)


def test_official_batch_inference_depends_on_the_batch(shapes, batch):
    # why "batch" is not the default: patients interact through the modality nodes
    x, present, _ = batch
    model = build(shapes, eval_graph="batch")
    with torch.no_grad():
        together = model(x, present)
        alone = torch.cat([model({m: v[i:i + 1] for m, v in x.items()}, present[i:i + 1])
                           for i in range(len(present))])
    assert (alone - together).abs().max() > 1e-4  # vs < 1e-6 for the other modes


def test_reference_graph_uses_the_training_patients(shapes, batch, make_batch):
    x, present, _ = batch
    ref_x, ref_present, ref_y = make_batch(shapes, batch=40, seed=5)
    one = build(shapes, prepared=(ref_x, ref_present, ref_y))
    two = build(shapes, prepared=({m: 3 * v for m, v in ref_x.items()}, ref_present, ref_y))
    assert (one(x, present) - two(x, present)).abs().max() > 1e-4
    with pytest.raises(RuntimeError, match="prepare"):
        build(shapes)(x, present)
    # the modality nodes average the training patients: equal to scoring each subject as a
    # receive-only node beside the training split, computed by hand
    both = {m: torch.cat([ref_x[m], x[m][:1]]) for m in shapes}
    both_present = torch.cat([ref_present, present[:1]])
    emb = one.encode(both, both_present)
    receive = torch.arange(41) == 40
    z = one.patient_states(emb, both_present, receive_only=receive)[40:]
    torch.testing.assert_close(one(x, present)[:1], one.classifier(z))


def test_state_dict_round_trip_keeps_the_reference(shapes, batch, make_batch):
    x, present, _ = batch
    model = build(shapes, prepared=make_batch(shapes, batch=40, seed=5))
    fresh = build(shapes)
    fresh.load_state_dict(model.state_dict())
    assert fresh.ref_x.shape[0] == 40
    torch.testing.assert_close(fresh(x, present), model(x, present))


def test_drop_edges():
    torch.manual_seed(0)
    present = torch.rand(2000, 4) < 0.7
    present[:, 0] |= ~present.any(1)
    count = present.sum(1)
    aug = drop_edges(present, 0.5)
    assert not (aug & ~present).any()            # only existing edges can go
    assert (aug.sum(1) >= 1).all()               # every patient keeps at least one
    single = count == 1
    assert torch.equal(aug[single], present[single])
    changed = (aug != present).any(1)
    assert abs(changed[count >= 2].float().mean().item() - 0.5) < 0.05
    # when cut, a patient keeps k ∈ {1, …, n−1} edges, every value reachable
    cut = changed & (count == 4)
    assert set(aug[cut].sum(1).tolist()) == {1, 2, 3}
    assert torch.equal(drop_edges(present, 0.0), present)
    full = drop_edges(present, 1.0)
    assert (full.sum(1)[count >= 2] < count[count >= 2]).all()


def test_edge_dropping_only_in_training_loss(shapes, batch, monkeypatch):
    x, present, y = batch
    model = build(shapes, prepared=batch)
    calls = []
    real = muse_module.drop_edges
    monkeypatch.setattr(muse_module, "drop_edges",
                        lambda p, rate: calls.append(rate) or real(p, rate))
    for train in (False, True):
        model.train(train)
        model(x, present)
    model.eval()
    model.loss(x, present, y)
    assert calls == []
    model.train()
    model.loss(x, present, y)
    assert calls == [0.5]


def test_loss_combines_the_terms_with_the_official_weights(shapes, batch):
    x, present, y = batch
    model = build(shapes, prepared=batch).train()
    torch.manual_seed(3)
    terms, logits = model.loss_terms(x, present, y)
    torch.manual_seed(3)
    total, logits2 = model.loss(x, present, y)
    torch.testing.assert_close(total, terms["cls"] + 0.5 * terms["unsup"] + 0.5 * terms["sup"])
    torch.testing.assert_close(logits, logits2)
    assert terms["unsup"] > 0 and terms["sup"] > 0
    torch.testing.assert_close(terms["cls"], F.cross_entropy(logits, y))
    # weights are hyper-parameters; with both at 0 the training loss is the CE alone
    plain = build(shapes, prepared=batch, unsup_weight=0.0, sup_weight=0.0).train()
    torch.manual_seed(3)
    loss, logits = plain.loss(x, present, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    # evaluation: the head's CE on the batch-independent logits
    model.eval()
    loss, logits = model.loss(x, present, y)
    torch.testing.assert_close(logits, model(x, present))
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))


def test_contrastive_losses_on_known_values():
    scale = 1 / 0.07
    tiny = math.log1p(math.exp(-scale))      # BCE / CE of a logit ±1/τ on the right side
    u = torch.eye(2)
    # identical orthogonal views: each patient finds its own other view
    torch.testing.assert_close(unsupervised_contrastive(u, u, scale), torch.tensor(tiny))
    assert unsupervised_contrastive(u, u.flip(0), scale) > 10  # views swapped
    # orthogonal, different labels: diagonal logit 1/τ (target 1), off-diagonal 0 → log 2
    torch.testing.assert_close(supervised_contrastive(u, u, torch.tensor([0, 1]), scale),
                               torch.tensor((2 * tiny + 2 * math.log(2)) / 4))
    # opposite patients: fine when their labels differ, about 1/τ / 2 when they agree
    v = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    torch.testing.assert_close(supervised_contrastive(v, v, torch.tensor([0, 1]), scale),
                               torch.tensor(tiny))
    torch.testing.assert_close(supervised_contrastive(v, v, torch.tensor([1, 1]), scale),
                               torch.tensor((2 * tiny + 2 * (scale + tiny)) / 4))


def test_backward_reaches_every_part(shapes, batch):
    x, present, y = batch
    model = build(shapes, prepared=batch).train()
    model.loss(x, present, y)[0].backward()
    for name in ("modality_nodes", "gnn.convs.0.message_lin.weight", "projection.0.weight",
                 "classifier.0.weight", "encoders.ct.linears.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_parameter_count(shapes):
    h, c, m = HIDDEN, N_CLASSES, len(shapes)
    encoders = sum(d[0] * h + h + 2 * h + 2 * (h * h + h) for d in shapes.values())
    gnn = 2 * ((2 * h * h + h) + (2 * h * h + h)) + (3 * h * h + h)
    expected = encoders + m * h + gnn + (h * h + h) + (h * h + h) + (h * c + c)
    assert build(shapes).trainable_parameters() == expected


def test_short_fit_learns(shapes, separable, bench_data):
    from mmpipe.bench.metrics import classification_metrics
    from mmpipe.bench.trainer import fit, predict_proba

    def bench(n, seed, tag):  # class means fixed, presence and noise from the seed
        return bench_data(*separable(shapes, n=n, seed=seed, p_present=0.6, mean_scale=1.5,
                                     noise=1.0, means_seed=0), tag=tag)

    train, val = bench(120, 1, "t"), bench(60, 2, "v")
    torch.manual_seed(0)
    method = MUSE(list(shapes), shapes, N_CLASSES, hidden=32)
    fit(method, train, val, {**method.hparams, "lr": 3e-3, "max_epochs": 20, "patience": 20,
                             "batch_size": 32}, seed=0)
    proba = predict_proba(method, val)
    assert classification_metrics(val.y, proba)["balanced_accuracy"] > 0.7


def test_the_rendered_propagate_module_is_not_left_in_the_temporary_folder(tmp_path):
    """PyG writes EdgeSAGEConv's rendered ``propagate`` to a temporary file at the first
    instance and never removes it: one file a process in /tmp, for ever."""
    code = ("import sys; from mmpipe.methods.muse import EdgeSAGEConv; EdgeSAGEConv(4, 2); "
            "EdgeSAGEConv(4, 2); "
            "print(sys.modules['mmpipe.methods.muse_EdgeSAGEConv_propagate'].__file__)")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True, check=True)
    rendered = Path(done.stdout.strip())
    assert rendered.parent == tmp_path  # PyG did render it there ...
    assert not rendered.exists()        # ... and it is gone
    assert not list(tmp_path.glob("*_propagate_*.py"))


def test_one_seed_trains_the_same_weights_at_four_threads(shapes, separable, bench_data):
    """The edge update gathered its nodes by indexing, whose backward scatter-adds in
    parallel: with four threads, one seed gave other weights on every fit."""
    from tests.methods.conftest import assert_same_weights, fit_twice

    train, val = (bench_data(*separable(shapes, n=1024, seed=s, p_present=0.6, means_seed=0),
                             tag=f"s{s}") for s in (1, 2))
    cfg = {**MUSE(list(shapes), shapes, N_CLASSES, hidden=32).hparams, "lr": 3e-3,
           "max_epochs": 2, "patience": 2, "batch_size": 512}
    assert_same_weights(*fit_twice(
        lambda: MUSE(list(shapes), shapes, N_CLASSES, hidden=32), train, val, cfg, threads=4))
