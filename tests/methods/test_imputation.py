"""Mean and kNN feature imputation: training statistics, neighbours, sklearn parity, masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.impute import KNNImputer
from sklearn.preprocessing import StandardScaler

from mmpipe.methods import method_class
from mmpipe.methods.base import TRAINER_KEYS
from mmpipe.methods.baselines import ZeroFillConcat
from mmpipe.methods.imputation import KNNImpute, MeanImpute

N_CLASSES = 3
METHODS = [("mean_impute", MeanImpute, {}), ("knn_impute", KNNImpute, {}),
           ("knn_impute", KNNImpute, {"standardize": False, "k": 2, "indicators": True})]
IDS = ["mean", "knn", "knn-raw-k2-indicators"]


def build(cls, shapes, train=None, **hp):
    """A model prepared on ``train`` (x, present, y)."""
    torch.manual_seed(0)
    model = cls(list(shapes), shapes, N_CLASSES, **hp)
    if train is not None:
        model.prepare(*train)
    return model.eval()


@pytest.fixture
def train_split(shapes, make_batch):
    return make_batch(shapes, batch=40, seed=5)


def test_registry_and_defaults():
    assert method_class("mean_impute") is MeanImpute
    assert method_class("knn_impute") is KNNImpute
    for cls in (MeanImpute, KNNImpute):
        assert issubclass(cls, ZeroFillConcat)           # the concat MLP, not a copy of it
        for key, value in {"hidden": [256, 128], "dropout": 0.3, "indicators": False,
                           "lr": 1e-4, "batch_size": 64, "patience": 25,
                           "sampler": "weighted"}.items():
            assert cls.defaults[key] == value
    assert (KNNImpute.defaults["k"], KNNImpute.defaults["standardize"]) == (5, True)
    assert not MeanImpute.permutation_invariant


def test_bad_hparams_rejected(shapes):
    with pytest.raises(ValueError, match="k must be"):
        KNNImpute(list(shapes), shapes, 2, k=0)
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        MeanImpute(list(shapes), shapes, 2, k=3)


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_same_network_as_concat_zero(name, cls, hp, shapes):
    ind = {"indicators": hp["indicators"]} if "indicators" in hp else {}
    ref = build(ZeroFillConcat, shapes, **ind)
    model = build(cls, shapes, **hp)
    assert model.trainable_parameters() == ref.trainable_parameters()
    assert [type(layer) for layer in model.mlp] == [type(layer) for layer in ref.mlp]


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_forward_needs_prepare(name, cls, hp, shapes, batch):
    x, present, _ = batch
    with pytest.raises(RuntimeError, match="prepare"):
        build(cls, shapes, **hp)(x, present)


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_output_shape_and_no_modality_row(name, cls, hp, shapes, batch, train_split):
    x, present, _ = batch
    model = build(cls, shapes, train_split, **hp)
    out = model(x, present)
    assert out.shape == (len(present), N_CLASSES) and torch.isfinite(out).all()
    none = torch.zeros_like(present)
    assert torch.isfinite(model(x, none)).all()
    # nothing to measure a distance with: every modality gets the training mean
    if cls is KNNImpute:
        filled = model.filled(x, none)
        torch.testing.assert_close(filled, model.means.expand_as(filled))


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_masked_values_ignored(name, cls, hp, shapes, batch, train_split,
                               assert_masking):
    x, present, _ = batch
    model = build(cls, shapes, train_split, **hp)
    assert_masking(model, x, present)


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_subject_output_does_not_depend_on_the_batch(name, cls, hp, shapes, batch, train_split):
    """Evaluation imputes from the training bank only, never from the other subjects."""
    x, present, _ = batch
    model = build(cls, shapes, train_split, **hp)
    with torch.no_grad():
        full = model(x, present)
        alone = torch.cat([model({m: v[i:i + 1] for m, v in x.items()}, present[i:i + 1])
                           for i in range(len(present))])
        # the other subjects replaced by very different ones: row 0 is unchanged
        other = {m: torch.cat([v[:1], 50 * torch.randn_like(v[1:])]) for m, v in x.items()}
        changed = model(other, present)
    torch.testing.assert_close(alone, full)
    torch.testing.assert_close(changed[:1], full[:1])


def test_mean_fills_exactly_the_training_means(shapes, train_split, batch):
    xt, pt, yt = train_split
    model = build(MeanImpute, shapes, train_split)
    x, present, _ = batch
    filled = model.filled(x, present)
    start = 0
    for j, (m, s) in enumerate(shapes.items()):
        block = filled[:, start:start + s[0]]
        start += s[0]
        expected = xt[m][pt[:, j]].mean(0)                 # over subjects that have m only
        assert not torch.allclose(expected, xt[m].mean(0))  # (absent zeros would pull it)
        torch.testing.assert_close(block[~present[:, j]],
                                   expected.expand(int((~present[:, j]).sum()), -1))
        torch.testing.assert_close(block[present[:, j]], x[m][present[:, j]])
    # the means are buffers: saved with the model, loaded into a fresh one
    fresh = build(MeanImpute, shapes)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x, present), model(x, present))


def test_mean_impute_notes(shapes, train_split):
    xt, pt, yt = train_split
    assert build(MeanImpute, shapes, train_split).report_notes() == []
    # z-scored on the training subjects that have each modality: means 0, same as concat_zero
    z = {}
    for j, m in enumerate(shapes):
        rows = xt[m][pt[:, j]]
        z[m] = torch.where(pt[:, j:j + 1], (xt[m] - rows.mean(0)) / rows.std(0), 0.0)
    notes = build(MeanImpute, shapes, (z, pt, yt)).report_notes()
    assert any("same function as concat_zero" in n for n in notes)
    # a modality nobody in training has: zeros, and the report says so
    pt2 = pt.clone()
    pt2[:, 3] = False
    pt2[~pt2.any(1), 0] = True
    model = build(KNNImpute, shapes, (xt, pt2, yt))
    assert any("clinical" in n and "zeros" in n for n in model.report_notes())
    x = {m: v[:2] for m, v in xt.items()}
    present = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert torch.all(model.filled(x, present)[:, -shapes["clinical"][0]:] == 0)


def hand_bank():
    """Five training subjects, two 1-d modalities "a", "b" and a 1-d target "t"."""
    shapes = {"a": (1,), "b": (1,), "t": (1,)}
    a = torch.tensor([[0.0], [1.0], [10.0], [0.2], [0.0]])
    b = torch.tensor([[0.0], [0.0], [0.0], [5.0], [0.1]])
    t = torch.tensor([[100.0], [200.0], [300.0], [400.0], [0.0]])
    present = torch.tensor([[True, True, True],
                            [True, True, True],
                            [True, True, True],
                            [True, True, True],
                            [True, True, False]])          # subject 4 lacks the target
    return shapes, ({"a": a, "b": b, "t": t * present[:, 2:]}, present,
                    torch.zeros(5, dtype=torch.long))


def test_knn_picks_the_right_neighbours():
    shapes, train = hand_bank()
    model = build(KNNImpute, shapes, train, k=2, standardize=False)
    # query: a = 0.1, b = 0.05 present, t absent (its value 999 must not count anywhere)
    x = {"a": torch.tensor([[0.1]]), "b": torch.tensor([[0.05]]), "t": torch.tensor([[999.0]])}
    present = torch.tensor([[True, True, False]])
    idx, valid = model.neighbours(x, present, "t")
    # subject 4 is the closest but has no target: subjects 0 and 1 are the neighbours
    assert sorted(idx[0].tolist()) == [0, 1] and valid.all()
    torch.testing.assert_close(model.filled(x, present)[0, 2], torch.tensor(150.0))
    # only "b" present: distance on b alone (subject 3 with b = 5 is far)
    only_b = torch.tensor([[False, True, False]])
    x_b = {"a": torch.tensor([[10.0]]), "b": torch.tensor([[4.0]]), "t": torch.tensor([[0.0]])}
    idx, _ = model.neighbours(x_b, only_b, "t")
    assert idx[0, 0].item() == 3                            # b = 5 is nearest to 4
    # k larger than the candidates: all four subjects with the target, uniformly
    big = build(KNNImpute, shapes, train, k=10, standardize=False)
    idx, valid = big.neighbours(x, present, "t")
    assert int(valid.sum()) == 4 and 4 not in idx[0][valid[0]].tolist()
    torch.testing.assert_close(big.filled(x, present)[0, 2], torch.tensor(250.0))


def test_knn_standardises_the_distance():
    """Standardised: a one-unit gap on a narrow modality outweighs six on a wide one."""
    shapes = {"a": (1,), "b": (1,), "t": (1,)}
    a = torch.tensor([[0.0], [10.0], [100.0], [100.0]])      # wide spread (std ~48)
    b = torch.tensor([[1.0], [0.0], [0.0], [1.0]])           # narrow spread (std 0.5)
    t = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    present = torch.ones(4, 3, dtype=torch.bool)
    train = ({"a": a, "b": b, "t": t}, present, torch.zeros(4, dtype=torch.long))
    x = {"a": torch.tensor([[4.0]]), "b": torch.tensor([[0.0]]), "t": torch.tensor([[0.0]])}
    query = torch.tensor([[True, True, False]])
    raw = build(KNNImpute, shapes, train, k=1, standardize=False)
    std = build(KNNImpute, shapes, train, k=1, standardize=True)
    assert raw.neighbours(x, query, "t")[0].item() == 0      # 4² + 1² < 6² + 0²
    assert std.neighbours(x, query, "t")[0].item() == 1      # b's unit gap is 2 stds
    torch.testing.assert_close(std.filled(x, query)[0, 2], torch.tensor(2.0))
    torch.testing.assert_close(std.center, torch.tensor([52.5, 0.5, 2.5]))
    torch.testing.assert_close(std.scale[1], torch.tensor(0.5))   # population std (ddof 0)


def _with_nan(x, present, shapes):
    return np.concatenate([np.where(present[:, j:j + 1].numpy(), x[m].numpy(), np.nan)
                           for j, m in enumerate(shapes)], axis=1).astype(np.float64)


@pytest.mark.parametrize("standardize", [False, True])
def test_knn_matches_sklearn(standardize, make_batch):
    """Block-missing features: KNNImputer (nan_euclidean, uniform) gives the same values.

    Standardised: KNNImputer on StandardScaler-ed features, transformed back (the mean of
    the neighbours commutes with the affine scaling)."""
    shapes = {"a": (2,), "b": (3,), "c": (1,)}
    xt, pt, yt = make_batch(shapes, batch=40, seed=1)
    xt = {m: 3.0 * v + j for j, (m, v) in enumerate(xt.items())}
    xt = {m: v * pt[:, j:j + 1] for j, (m, v) in enumerate(xt.items())}
    xq, pq, _ = make_batch(shapes, batch=15, seed=2)
    model = build(KNNImpute, shapes, (xt, pt, yt), k=3, standardize=standardize)
    xt_nan, xq_nan = _with_nan(xt, pt, shapes), _with_nan(xq, pq, shapes)
    scaler = StandardScaler().fit(xt_nan) if standardize else None

    def sk(data):
        imputer = KNNImputer(n_neighbors=3)
        if scaler is None:
            return imputer.fit(xt_nan).transform(data)
        return scaler.inverse_transform(imputer.fit(scaler.transform(xt_nan))
                                        .transform(scaler.transform(data)))

    np.testing.assert_allclose(model.filled(xq, pq).numpy(), sk(xq_nan), rtol=1e-5, atol=1e-5)
    # training subjects in training mode: sklearn's transform of the training data itself
    model.train()
    np.testing.assert_allclose(model.filled(xt, pt).numpy(), sk(xt_nan), rtol=1e-5, atol=1e-5)


def test_raw_features_far_from_zero_find_the_exact_neighbours(make_batch):
    """Unstandardised, the float32 expansion of the distance cancelled on features around
    1000 (spread 1): every query of 50 had other neighbours than exact arithmetic."""
    shapes = {"a": (64,), "t": (1,)}
    xt, _, yt = make_batch(shapes, batch=200, seed=3)
    xq, _, _ = make_batch(shapes, batch=50, seed=4)
    xt = {m: v + 1000.0 for m, v in xt.items()}
    xq = {m: v + 1000.0 for m, v in xq.items()}
    pt, pq = torch.ones(200, 2, dtype=torch.bool), torch.ones(50, 2, dtype=torch.bool)
    pq[:, 1] = False
    model = build(KNNImpute, shapes, (xt, pt, yt), k=5, standardize=False)
    idx, _ = model.neighbours(xq, pq, "t")
    exact = torch.cdist(xq["a"].double(), xt["a"].double()).topk(5, largest=False).indices
    assert [sorted(r) for r in idx.tolist()] == [sorted(r) for r in exact.tolist()]


def test_training_subject_is_never_its_own_neighbour(shapes, train_split):
    xt, pt, _ = train_split
    model = build(KNNImpute, shapes, train_split, k=3).train()
    rows = torch.arange(len(pt))
    for j, m in enumerate(shapes):
        idx, valid = model.neighbours(xt, pt, m)
        lacking = ~pt[:, j]
        assert lacking.any()
        assert not (idx[lacking] == rows[lacking].unsqueeze(1))[valid[lacking]].any()
        # every neighbour has the target modality
        assert model.bank_present[idx[valid], j].all()


def test_knn_bank_is_saved_and_loaded(shapes, train_split, batch):
    x, present, _ = batch
    model = build(KNNImpute, shapes, train_split)
    assert model.bank.shape == (40, sum(s[0] for s in shapes.values()))
    fresh = build(KNNImpute, shapes)
    assert fresh.bank.shape[0] == 0
    # what is derived from the bank (its standardised copy) is not saved, but rebuilt
    assert not [k for k in model.state_dict() if "standard" in k or "sqnorm" in k]
    fresh.load_state_dict(model.state_dict())
    assert fresh.bank.shape[0] == 40
    torch.testing.assert_close(fresh(x, present), model(x, present))


@pytest.mark.parametrize("name,cls,hp", METHODS, ids=IDS)
def test_fit_with_the_trainer(name, cls, hp, shapes, tmp_path, separable, bench_data):
    from mmpipe.bench.metrics import classification_metrics
    from mmpipe.bench.trainer import fit, predict_proba

    full = bench_data(*separable(shapes, n=180))
    train, val = full.subset(np.arange(120)), full.subset(np.arange(120, 180))
    model = cls(list(shapes), shapes, N_CLASSES, **hp)
    cfg = {k: model.hparams[k] for k in TRAINER_KEYS if k in model.hparams}
    result = fit(model, train, val, {**cfg, "lr": 1e-3, "max_epochs": 10, "batch_size": 32},
                 seed=0, log_path=tmp_path / "train.log")
    assert bool(model.fitted) and result.epochs == {"train": 10}
    if cls is KNNImpute:
        assert model.bank.shape[0] == 120                  # the training split, nothing else
    proba = predict_proba(model, val)
    assert classification_metrics(val.y, proba)["balanced_accuracy"] > 0.8
