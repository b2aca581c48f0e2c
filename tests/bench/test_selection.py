"""Model selection: early stopping from min_epochs, cross-validation on the training part
(the test split never read), refit and fold ensemble, and the tuning budget."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from mmpipe.bench.data import BenchData, Normalizer
from mmpipe.bench.predict import predict_stores
from mmpipe.bench.run import build_method, run_experiment
from mmpipe.bench.selection import Selection, select_model, strata, stratified_folds, training_part
from mmpipe.bench.splits import read_split
from mmpipe.bench.trainer import TRAIN_DEFAULTS, fit
from mmpipe.bench.tuning import Tuning, candidate_overrides, selection_score
from mmpipe.methods import METHODS, method_class
from tests.bench.test_run import MODALITIES, cohort  # noqa: F401  (the module's fixture)


def _data(n: int = 90, seed: int = 0, shift: float = 1.2) -> BenchData:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = {"a": (rng.normal(size=(n, 5)) + shift * y[:, None]).astype(np.float32),
         "b": (rng.normal(size=(n, 3)) + shift * y[:, None]).astype(np.float32)}
    present = np.ones((n, 2), bool)
    present[rng.random(n) < 0.3, 1] = False
    x["b"][~present[:, 1]] = 0
    return BenchData(subject_id=np.array([f"s{i}" for i in range(n)]), y=y, x=x,
                     present=present, modalities=["a", "b"], n_classes=2)


def _select(method_cfg, train, val, selection=None, tuning=None, seed=0, normalize="none"):
    data = train
    cls = method_class(method_cfg["type"])
    hparams = build_method(method_cfg, data).hparams
    return select_model(lambda over: build_method({**method_cfg, **over}, data), cls, hparams,
                        TRAIN_DEFAULTS, train, val, seed=seed, device="cpu",
                        selection=Selection.from_config(selection),
                        tuning=Tuning.from_config(tuning), normalize=normalize)


def test_stratified_folds_hold_each_class_evenly():
    y = np.array([0] * 40 + [1] * 13)
    folds = stratified_folds(y, 5, seed=3)
    for k in range(5):
        counts = np.bincount(y[folds == k], minlength=2)
        assert 7 <= counts[0] <= 9 and 2 <= counts[1] <= 3
    assert not np.array_equal(folds, stratified_folds(y, 5, seed=4))


def test_a_split_group_lies_in_one_fold():
    """Two rows of one patient (a split group) in the training and the held-out folds
    scored a trial on a patient it had trained on."""
    y = np.array([0, 1] * 30)
    groups = [f"p{i // 3}" if i < 30 else None for i in range(60)]  # ten groups of three
    folds = stratified_folds(y, 5, seed=1, groups=groups)
    for g in {g for g in groups if g}:
        assert len({folds[i] for i, h in enumerate(groups) if h == g}) == 1, g
    assert len(set(folds.tolist())) == 5
    # without groups, or with none of two or more, the folds are the samples' own
    alone = stratified_folds(y, 5, seed=1)
    np.testing.assert_array_equal(stratified_folds(y, 5, 1, [None] * 60), alone)
    np.testing.assert_array_equal(stratified_folds(y, 5, 1, [f"s{i}" for i in range(60)]),
                                  alone)


def test_cross_validation_reads_the_split_groups():
    from mmpipe.bench.selection import _fit_cv

    class Member:
        kind = "sklearn"
        trained_on: list = []

        def fit(self, train, val, seed):
            Member.trained_on.append((set(train.subject_id), set(val.subject_id)))

        def fitted_settings(self):
            return {}

        def predict_proba(self, data):
            return np.tile([0.5, 0.5], (len(data.y), 1)).astype(np.float32)

    pool = _data(n=30)
    groups = {s: f"p{i // 2}" for i, s in enumerate(pool.subject_id)}  # pairs
    _fit_cv(Member, pool, {}, 0, "cpu", Selection("cv", folds=3), split_groups=groups)
    assert len(Member.trained_on) == 3
    for fitted, held in Member.trained_on:
        assert not {groups[s] for s in fitted} & {groups[s] for s in held}


def test_no_checkpoint_before_min_epochs():
    data = _data()
    train, val = data.subset(np.arange(60)), data.subset(np.arange(60, 90))
    method = build_method({"type": "concat_zero"}, data)
    # a learning rate this high makes epoch 1 the best by the loss on most seeds
    cfg = {**TRAIN_DEFAULTS, **method.hparams, "lr": 0.05, "max_epochs": 12, "patience": 2}
    first = fit(method, train, val, {**cfg, "min_epochs": 0}, seed=0)
    method = build_method({"type": "concat_zero"}, data)
    later = fit(method, train, val, {**cfg, "min_epochs": 6}, seed=0)
    assert later.best_epoch["train"] >= 6
    assert later.epochs["train"] >= 6 + 2 - 1
    assert first.settings["phases"][0]["min_epochs"] == 0
    assert later.settings["phases"][0]["min_epochs"] == 6


def test_early_stopping_on_the_loss_watches_the_method_s_validation_loss():
    """DRIM's total loss adds an adversarial term that moves with its discriminators'
    steps; early stopping watches what ``validation_loss`` returns (DRIM: its task)."""
    import torch

    data = _data()
    train, val = data.subset(np.arange(60)), data.subset(np.arange(60, 90))
    method = build_method({"type": "concat_zero"}, data)
    calls = []

    def watched(x, present, y, class_weight=None):
        calls.append(len(y))
        logits = method(x, present)
        # a quantity that falls every epoch: the last epoch is the best by it
        return torch.tensor(100.0 - len(calls)), logits

    method.validation_loss = watched
    cfg = {**TRAIN_DEFAULTS, **method.hparams, "max_epochs": 7, "patience": 2,
           "min_epochs": 0}
    result = fit(method, train, val, cfg, seed=0)
    assert calls == [30] * 7 and result.best_epoch == {"train": 7}


def test_fit_without_validation_runs_the_given_epochs():
    data = _data()
    method = build_method({"type": "deepsets"}, data)
    result = fit(method, data, None, {**TRAIN_DEFAULTS, **method.hparams}, seed=0,
                 epochs={"train": 4})
    assert result.epochs == {"train": 4} and result.best_epoch == {"train": 4}
    with pytest.raises(ValueError, match="epochs"):
        fit(method, data, None, TRAIN_DEFAULTS, seed=0)


def test_the_budget_is_the_same_pairs_for_every_method_and_defaults_come_first():
    tuning = Tuning.from_config({"trials": 4, "lr": [1, 3, 0.3], "capacity": [1, 0.5, 2]})
    pairs = tuning.factor_pairs()
    # the defaults, then one knob at a time: each moves within a budget of three
    assert pairs == [(1.0, 1.0), (3.0, 1.0), (1.0, 0.5), (0.3, 1.0)]
    full = Tuning(trials=99, lr=(1, 3, 0.3), capacity=(1, 0.5, 2)).factor_pairs()
    assert len(full) == 9 == len(set(full))
    mmare = candidate_overrides(method_class("mmare"), {"dim": 512, "lr": 1e-4}, TRAIN_DEFAULTS,
                                tuning)
    assert mmare[0] == {}
    for (lr_f, cap_f), over in zip(pairs[1:], mmare[1:], strict=True):
        assert over.get("lr", 1e-4) == pytest.approx(1e-4 * lr_f)
        assert over.get("dim", 512) == round(512 * cap_f)
    # list widths scale element-wise; a transformer's width stays a multiple of its heads
    mlp = candidate_overrides(method_class("concat_zero"), {"hidden": [256, 128]},
                              TRAIN_DEFAULTS, Tuning(trials=2, lr=(1.0,), capacity=(1.0, 0.5)))
    assert mlp == [{}, {"hidden": [128, 64]}]
    att = candidate_overrides(method_class("unilmmv"), {"width": 100, "heads": 8},
                              TRAIN_DEFAULTS, Tuning(trials=2, lr=(1.0,), capacity=(1.0, 0.5)))
    assert att[1]["width"] % 8 == 0
    # a capacity halved below what the method takes: hgb's trees need two leaves (its
    # max_leaf_nodes 1 failed the trial); at the floor already, no second trial
    hgb = candidate_overrides(method_class("hgb"), {"max_leaf_nodes": 3}, TRAIN_DEFAULTS,
                              Tuning(trials=2, lr=(1.0,), capacity=(1.0, 0.5)))
    assert hgb == [{}, {"max_leaf_nodes": 2}]
    assert candidate_overrides(method_class("hgb"), {"max_leaf_nodes": 2}, TRAIN_DEFAULTS,
                               Tuning(trials=2, lr=(1.0,), capacity=(1.0, 0.25))) == [{}]


def test_every_method_names_its_tuned_keys():
    for name in METHODS:
        cls = method_class(name)
        keys = cls.tuning_keys
        assert set(keys) <= {"lr", "capacity"}, name
        for role in keys.values():
            assert set(role) <= set(cls.defaults) | {"lr"}, (name, role)
        if getattr(cls, "kind", "torch") != "sklearn":
            assert keys.get("capacity"), f"{name} declares no capacity knob"


def test_the_trial_with_the_better_validation_score_is_kept():
    data = _data(shift=1.5)
    train, val = data.subset(np.arange(60)), data.subset(np.arange(60, 90))
    # lr factors far apart: a 1e-7 learning rate cannot leave its initial guess
    sel = _select({"type": "concat_zero", "max_epochs": 15, "lr": 1e-2}, train, val,
                  tuning={"trials": 2, "lr": [1, 1e-5], "capacity": [1]})
    trials = sel.record["trials"]
    assert [t["overrides"] for t in trials] == [{}, {"lr": pytest.approx(1e-7)}]
    assert trials[0]["val_loss"] < trials[1]["val_loss"]
    assert sel.overrides == {} and sel.record["chosen"] == {}
    assert selection_score(val.y, sel.val_proba, "loss") == pytest.approx(-trials[0]["val_loss"])



def test_a_later_trial_that_scores_better_is_kept():
    """The defaults (trial 0) at a learning rate that cannot move against a second trial
    that learns: keeping the first trial whatever it scores passed the test above."""
    data = _data(shift=1.5)
    train, val = data.subset(np.arange(60)), data.subset(np.arange(60, 90))
    sel = _select({"type": "concat_zero", "max_epochs": 15, "lr": 1e-7}, train, val,
                  tuning={"trials": 2, "lr": [1, 1e5], "capacity": [1]})
    trials = sel.record["trials"]
    assert [t["overrides"] for t in trials] == [{}, {"lr": pytest.approx(1e-2)}]
    assert trials[1]["val_loss"] < trials[0]["val_loss"]
    assert sel.overrides == {"lr": pytest.approx(1e-2)}
    assert selection_score(val.y, sel.val_proba, "loss") == pytest.approx(-trials[1]["val_loss"])


def test_trials_that_score_alike_keep_the_earlier():
    """Two trials with the same validation AUC (1.0 on separable classes): the earlier,
    the defaults, is kept, as tuning's docstring says."""
    data = _data(shift=5.0)
    train, val = data.subset(np.arange(60)), data.subset(np.arange(60, 90))
    sel = _select({"type": "concat_zero", "max_epochs": 5, "lr": 1e-3}, train, val,
                  tuning={"trials": 2, "lr": [1, 2], "capacity": [1], "choose_by": "auc"})
    trials = sel.record["trials"]
    assert [t["val_auc"] for t in trials] == [1.0, 1.0]
    assert sel.overrides == {} and sel.record["chosen"] == {}

@pytest.mark.parametrize("final", ["refit", "ensemble"])
def test_cv_scores_out_of_fold_on_the_training_part(final):
    data = _data()
    train, val = data.subset(np.arange(50)), data.subset(np.arange(50, 70))
    sel = _select({"type": "deepsets", "max_epochs": 8, "patience": 3, "lr": 1e-3}, train, val,
                  selection={"strategy": "cv", "folds": 3, "final": final})
    assert sel.val_evaluation == "out_of_fold"
    assert sorted(sel.val_ids) == sorted([*train.subject_id, *val.subject_id])
    assert sel.record["strategy"] == "cv" and sel.record["folds"] == 3
    assert len(sel.result.best_epoch["train"]) == 3   # one best epoch per fold
    if final == "ensemble":
        assert len(sel.method.members) == 3
    else:
        assert "median" in sel.record["final"]


def _run(cohort_dir, root, out, selection, method=None):
    method = method or {"type": "deepsets", "max_epochs": 10, "patience": 3, "lr": 1e-3}
    meta = {"cohort": "toy", "feature_set": "all", "method": method["type"],
            "scenario": "mcar", "rate": 0.4}
    return run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y", method,
                          root / "split.parquet", root / "mask.parquet", out, seed=0,
                          meta=meta, selection=selection, evaluate_subsets=False,
                          tuning={"trials": 2, "lr": [1, 3], "capacity": [1]})


def test_cv_never_reads_the_test_split(cohort, tmp_path):  # noqa: F811
    """Changing every test subject's features changes nothing the selection saw."""
    root, cohort_dir = cohort
    selection = {"strategy": "cv", "folds": 3, "final": "refit"}
    first = _run(cohort_dir, root, tmp_path / "a", selection)
    split = read_split(root / "split.parquet")
    test_ids = set(split.filter(pl.col("split") == "test")["subject_id"])
    # poison the test subjects' stored features in a copy of the cohort
    import shutil

    import zarr

    poisoned = tmp_path / "poisoned"
    shutil.copytree(cohort_dir, poisoned)
    for m in MODALITIES:
        group = zarr.open_group(str(poisoned / "features" / m / "precomputed.zarr"), mode="r+")
        ids = [str(s) for s in group["subject_id"][:]]
        emb = group["emb"][:]
        rows = np.array([s in test_ids for s in ids])
        emb[rows] = np.random.default_rng(1).normal(size=emb[rows].shape) * 50
        group["emb"][:] = emb
    second = _run(poisoned, root, tmp_path / "b", selection)
    assert first["selection"] == second["selection"]     # same trials, same scores, same pick
    assert first["val"] == second["val"]                  # out-of-fold metrics unchanged
    assert first["test"]["auc"] != second["test"]["auc"]  # the poison did reach the test split
    preds = pl.read_parquet(tmp_path / "a" / "predictions.parquet")
    oof = preds.filter(pl.col("evaluation") == "out_of_fold")
    assert not set(oof["subject_id"]) & test_ids
    assert set(oof["subject_id"]) == set(split["subject_id"]) - test_ids


def test_a_fold_ensemble_is_saved_and_predicts_like_the_run(cohort, tmp_path):  # noqa: F811
    root, cohort_dir = cohort
    out = tmp_path / "run"
    _run(cohort_dir, root, out, {"strategy": "cv", "folds": 3, "final": "ensemble"})
    saved = json.loads((out / "metrics.json").read_text())
    assert "ensemble of the 3 fold models" in saved["selection"]["final"]
    stores = {m: cohort_dir / "features" / m / "precomputed.zarr" for m in MODALITIES}
    scores = predict_stores(out, stores)
    preds = pl.read_parquet(out / "predictions.parquet").filter(
        (pl.col("split") == "test") & (pl.col("evaluation") == "scenario"))
    # predict has every modality, the run's test subjects had the mask applied: compare on
    # the subjects the mask left complete
    full = preds.filter(pl.col("pattern") == "a+b+c")
    mine = scores.join(full.select("subject_id", pl.col("score_1").alias("run")), on="subject_id")
    assert len(mine) > 0
    np.testing.assert_allclose(mine["score_1"], mine["run"], rtol=1e-4, atol=1e-5)


def test_the_dataclass_defaults_are_the_schema_defaults():
    """A partial `tuning:` block keeps the documented values of the keys it leaves out."""
    import yaml

    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    bench = schema["$defs"]["benchmark"]["properties"]
    assert Tuning.from_config(bench["tuning"]["default"]) == Tuning()
    assert Selection.from_config(bench["selection"]["default"]) == Selection()
    assert Tuning.from_config({"trials": 8}).lr == Tuning().lr


def test_a_trial_that_cannot_build_or_diverges_is_recorded_not_fatal():
    data = _data(n=60)
    train, val = data.subset(np.arange(40)), data.subset(np.arange(40, 60))
    # plain SGD at lr x 1e12 diverges: the trial fails with its reason, the defaults stay
    sel = _select({"type": "concat_zero", "max_epochs": 4, "lr": 1e-3, "optimizer": "sgd"},
                  train, val, tuning={"trials": 2, "lr": [1, 1e12], "capacity": [1]})
    assert sel.overrides == {}
    assert "error" in sel.record["trials"][1] and sel.record["trials"][0].get("error") is None
    # the defaults themselves must build: an error there is not hidden
    with pytest.raises(RuntimeError, match="negative dimension"):
        _select({"type": "concat_zero", "max_epochs": 2, "hidden": [-4]}, train, val,
                tuning={"trials": 1})


def test_an_auc_that_is_never_defined_scores_no_checkpoint_and_is_flagged():
    """A validation split of one class under ``monitor: auc``: every epoch scores -inf, so
    early stopping keeps no checkpoint and stops after its patience with the last weights
    (best epoch 0), which nothing flagged."""
    from mmpipe.bench.flags import run_flags

    data = _data()
    val = data.subset(np.flatnonzero(data.y == 1)[:20])
    train = data.subset(np.setdiff1d(np.arange(len(data.y)), np.flatnonzero(data.y == 1)[:20]))
    method = build_method({"type": "concat_zero"}, data)
    cfg = {**TRAIN_DEFAULTS, **method.hparams, "monitor": "auc", "max_epochs": 40,
           "patience": 3, "min_epochs": 0}
    result = fit(method, train, val, cfg, seed=0)
    assert result.best_epoch == {"train": 0} and result.epochs == {"train": 3}
    mixed = np.array([0, 1, 0, 1])
    flags = run_flags(trained=True, val_predicted=mixed, test_predicted=mixed, n_classes=2,
                      best_epoch=result.best_epoch, epochs=result.epochs)
    assert [f["flag"] for f in flags] == ["no_checkpoint"]
    folds = run_flags(trained=True, val_predicted=mixed, test_predicted=mixed, n_classes=2,
                      best_epoch={"train": [0, 5, 7]}, epochs={"train": [3, 9, 11]})
    assert [f["flag"] for f in folds] == ["no_checkpoint"]
    assert "1 of 3 folds" in folds[0]["reason"]
    # a phase set to run no epoch scored nothing because it ran nothing
    assert run_flags(trained=True, val_predicted=mixed, test_predicted=mixed, n_classes=2,
                     best_epoch={"phi": 0, "rho": 4}, epochs={"phi": 0, "rho": 9}) == []


def test_a_fold_ensemble_records_each_folds_fitted_settings():
    """Each fold of a scikit-learn method picks its own regularisation on its held-out
    fold; the run recorded fold 0's as if every member had it."""
    data = _data(n=120, shift=0.4)
    train, val = data.subset(np.arange(90)), data.subset(np.arange(90, 120))
    sel = _select({"type": "logreg"}, train, val,
                  selection={"strategy": "cv", "folds": 4, "final": "ensemble"})
    members = [m.fitted_settings() for m in sel.method.members]
    settings = sel.result.settings
    assert len({m["C"] for m in members}) > 1  # the folds chose differently here
    assert settings == {"folds": [{"estimator": m} for m in members]}
    assert sel.record["folds_trained"] == len(sel.method.members) == 4



def test_a_held_out_fold_is_standardised_without_itself():
    """Under cv with z-scores, a fold's held-out subjects are scored by a model whose
    normalisation saw only its training folds: moving one held-out subject's features far
    away leaves the other subjects of its fold scored as before (with the training part's
    z-scores alone, the outlier shifted every feature its fold-mates were scaled by)."""
    data = _data(n=60, seed=2)
    train, val = data.subset(np.arange(45)), data.subset(np.arange(45, 60))
    method = {"type": "deepsets", "max_epochs": 4, "patience": 2, "lr": 1e-3}

    def out_of_fold(train):
        # as run_seed: the training part's z-scores, then the selection
        norm = Normalizer("zscore").fit(training_part(train, val))
        sel = _select(method, norm.transform(train), norm.transform(val),
                      selection={"strategy": "cv", "folds": 3, "final": "ensemble"},
                      tuning={"trials": 1}, normalize="zscore")
        return dict(zip(sel.val_ids, sel.val_proba[:, 1], strict=True))

    first = out_of_fold(train)
    moved = train.subset(np.arange(len(train.y)))  # a copy
    moved.x["a"][0] += 40.0
    second = out_of_fold(moved)
    pool = training_part(train, val)
    folds = stratified_folds(strata(pool), 3, seed=0)
    mates = pool.subject_id[(folds == folds[0]) & (pool.subject_id != train.subject_id[0])]
    assert len(mates) >= 10
    np.testing.assert_allclose([second[s] for s in mates], [first[s] for s in mates],
                               rtol=0, atol=1e-5)
    assert abs(second[train.subject_id[0]] - first[train.subject_id[0]]) > 1e-3


def test_a_feature_constant_in_the_training_folds_is_zero_for_the_held_out_fold():
    """A category only some held-out subjects have is constant in the training folds: the
    fold model's weight for it never trained, so it is zero for the held-out subjects as
    for the training folds (it was 1, or 5.9 in the training part's scale, which those
    very held-out subjects set, before the fold normaliser refitted)."""
    data = _data(n=60, seed=2)
    train, val = data.subset(np.arange(45)), data.subset(np.arange(45, 60))
    pool = training_part(train, val)
    folds = stratified_folds(strata(pool), 3, seed=0)
    held = np.flatnonzero(folds == 0)
    rare = np.zeros(len(pool.y), np.float32)
    rare[held[:3]] = 1.0                                 # only in fold 0, held out there
    pool.x["a"][:, 0] = rare
    within = Normalizer("zscore").fit(pool)
    scaled = within.transform(pool)
    fit_part = scaled.subset(np.flatnonzero(folds != 0))
    fold = Normalizer("zscore").fit(fit_part)
    got = fold.transform(scaled.subset(held)).x["a"][:3, 0]
    alone = Normalizer("zscore").fit(pool.subset(np.flatnonzero(folds != 0)))
    want = alone.transform(pool.subset(held)).x["a"][:3, 0]
    np.testing.assert_array_equal(got, 0.0)
    np.testing.assert_array_equal(want, 0.0)
    # the selection gives its folds that normaliser (the first member is fold 0's)
    n_train = len(train.y)
    sel = _select({"type": "deepsets", "max_epochs": 2, "patience": 1, "lr": 1e-3},
                  scaled.subset(np.arange(n_train)),
                  scaled.subset(np.arange(n_train, len(pool.y))),
                  selection={"strategy": "cv", "folds": 3, "final": "ensemble"},
                  tuning={"trials": 1}, normalize="zscore")
    member = sel.method.normalizers[0].transform(scaled.subset(held))
    np.testing.assert_array_equal(member.x["a"][:3, 0], 0.0)


def test_a_phase_no_fold_ran_stays_unrun_in_the_refit():
    """HyperMM's ``phi_max_epochs: 0`` under cv: the refit ran one epoch of the phase the
    folds (whose out-of-fold score chose the trial) never ran."""
    from mmpipe.bench.selection import _median_epochs
    from mmpipe.bench.trainer import FitResult

    folds = [FitResult(epochs={"phi": 0, "rho": e}, best_epoch={"phi": 0, "rho": b})
             for e, b in ((9, 4), (7, 0), (8, 5))]
    assert _median_epochs(folds) == {"phi": 0, "rho": 5}


def test_each_run_says_how_many_subjects_its_model_trained_on():
    """``n_train`` is the training split; the kept model trained on the training part
    under a cv refit, on a member's folds in an ensemble, on the complete cases for a
    complete-case method (the report's optimiser steps counted the split for all)."""
    data = _data(n=90)
    train, val = data.subset(np.arange(60)), data.subset(np.arange(60, 90))
    method = {"type": "deepsets", "max_epochs": 3, "patience": 2}
    one = {"trials": 1}
    assert _select(method, train, val, tuning=one).result.n_fit == 60
    refit = _select(method, train, val, tuning=one,
                    selection={"strategy": "cv", "folds": 3, "final": "refit"})
    assert refit.result.n_fit == 90
    ensemble = _select(method, train, val, tuning=one,
                       selection={"strategy": "cv", "folds": 3, "final": "ensemble"})
    assert ensemble.result.n_fit == 60  # 90 in 3 stratified folds of 30
    complete = _select({"type": "standard", "max_epochs": 3, "patience": 2}, train, val,
                       tuning=one)
    assert complete.result.n_fit == int(train.present.all(axis=1).sum()) < 60


@pytest.mark.parametrize("error", [
    "torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')",
    "RuntimeError('[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can\\'t "
    "allocate memory: you tried to allocate 4294967296 bytes')"])
def test_a_trial_out_of_memory_fails_the_job_not_the_trial(error):
    """A trial that ran out of GPU (or CPU) memory was a failed trial like a setting that
    cannot build: the method then had fewer trials on a smaller machine than on a larger
    one."""
    import torch

    data = _data(n=60)
    train, val = data.subset(np.arange(40)), data.subset(np.arange(40, 60))
    cfg = {"type": "concat_zero", "max_epochs": 2}

    def build(over):
        if over:  # any trial but the defaults
            raise eval(error, {"torch": torch})
        return build_method({**cfg, **over}, train)

    with pytest.raises((torch.OutOfMemoryError, RuntimeError), match="memory"):
        select_model(build, method_class("concat_zero"), build_method(cfg, train).hparams,
                     TRAIN_DEFAULTS, train, val, seed=0, device="cpu",
                     selection=Selection.from_config(None),
                     tuning=Tuning.from_config({"trials": 2}), normalize="none")


def _diverging_defaults(cfg, train, after: int):
    """A builder whose default trial's training loss turns inf after ``after`` batches."""
    def build(over):
        method = build_method({**cfg, **over}, train)
        if not over:
            loss, calls = method.loss, [0]

            def diverging(*args):
                value, logits = loss(*args)
                if method.training:
                    calls[0] += 1
                    if calls[0] > after:
                        value = value * float("inf")
                return value, logits

            method.loss = diverging
        return method
    return build


@pytest.mark.parametrize("strategy", [{"strategy": "validation"},
                                      {"strategy": "cv", "folds": 3, "final": "ensemble"}])
def test_a_trial_that_diverged_says_so_in_its_record(strategy):
    """A trial that diverged after a checkpoint keeps it and may be chosen: its record
    said nothing of it, and only the job's log did."""
    data = _data(n=60)
    train, val = data.subset(np.arange(40)), data.subset(np.arange(40, 60))
    cfg = {"type": "concat_zero", "max_epochs": 6, "min_epochs": 1}
    sel = select_model(_diverging_defaults(cfg, train, after=2), method_class("concat_zero"),
                       build_method(cfg, train).hparams, TRAIN_DEFAULTS, train, val, seed=0,
                       device="cpu", selection=Selection.from_config(strategy),
                       tuning=Tuning.from_config({"trials": 2}), normalize="none")
    defaults, other = sel.record["trials"]
    if strategy["strategy"] == "validation":
        assert defaults["diverged"] == {"train": 3}
    else:  # each fold's epoch of it
        assert defaults["diverged"] == {"train": [3, 3, 3]}
    assert "diverged" not in other


def test_a_refit_is_not_chosen_where_its_folds_diverged():
    """A fold that diverged after a checkpoint keeps it; but a refit runs without a
    validation split and keeps none, so choosing that setting made the refit diverge and
    the seed untrained. Under `final: refit` such a trial fails; the others are chosen."""
    import torch

    data = _data(n=60)
    train, val = data.subset(np.arange(40)), data.subset(np.arange(40, 60))
    cfg = {"type": "concat_zero", "max_epochs": 6, "min_epochs": 1}

    def select(final):
        return select_model(_diverging_defaults(cfg, train, after=2),
                            method_class("concat_zero"),
                            build_method(cfg, train).hparams, TRAIN_DEFAULTS, train, val,
                            seed=0, device="cpu",
                            selection=Selection.from_config({"strategy": "cv", "folds": 3,
                                                             "final": final}),
                            tuning=Tuning.from_config({"trials": 2}), normalize="none")

    refit = select("refit")
    assert "diverged, and a refit without a validation split" in refit.record["trials"][0]["error"]
    assert refit.overrides != {}
    assert torch.isfinite(torch.as_tensor(refit.record["trials"][1]["val_loss"]))


def test_a_refit_that_fails_keeps_the_trials_record(failing_refit):
    """The refit runs outside the trials: its failure lost every trial's out-of-fold score
    from the run's record, which said only that a loss was NaN."""
    from mmpipe.bench.trainer import NotTrainable

    data = _data(n=60)
    train, val = data.subset(np.arange(40)), data.subset(np.arange(40, 60))
    with pytest.raises(NotTrainable, match=r"the refit of the chosen trial \{.*\} on the "
                                           r"training part: the training loss is nan") as err:
        _select({"type": "concat_zero", "max_epochs": 3}, train, val,
                selection={"strategy": "cv", "folds": 3, "final": "refit"},
                tuning={"trials": 2})
    record = err.value.selection
    assert record["trials_run"] == 2 and len(record["trials"]) == 2
    assert all(t["val_loss"] is not None for t in record["trials"])
    assert record["final"].startswith("the refit failed: the training loss is nan")


def test_one_candidate_records_no_choice():
    """One trial is chosen by nothing: its training settings leave choose_by out, and the
    record said "loss" whatever the config said."""
    data = _data(n=40, seed=3)
    train, val = data.subset(np.arange(30)), data.subset(np.arange(30, 40))
    one = _select({"type": "logreg"}, train, val, tuning={"trials": 4, "choose_by": "auc"})
    assert one.record["trials_run"] == 1 and one.record["choose_by"] is None
    two = _select({"type": "deepsets", "max_epochs": 2, "patience": 1, "lr": 1e-3}, train, val,
                  tuning={"trials": 2, "choose_by": "auc"})
    assert two.record["trials_run"] == 2 and two.record["choose_by"] == "auc"


def test_trials_that_no_validation_split_can_score_are_not_run():
    """A validation split of one class under ``choose_by: auc`` scored every trial NaN:
    the first was kept by default, the budget spent for nothing, and the record said the
    trials were chosen by AUC."""
    data = _data(n=60, seed=3)
    ones = np.flatnonzero(data.y == 1)[:10]
    train = data.subset(np.setdiff1d(np.arange(len(data.y)), ones))
    sel = _select({"type": "deepsets", "max_epochs": 2, "patience": 1, "lr": 1e-3}, train,
                  data.subset(ones), tuning={"trials": 3, "choose_by": "auc"})
    assert sel.record["trials_run"] == 1 and sel.record["choose_by"] is None
    assert sel.record["not_compared"] == ("the 10 subjects the trials are judged on are all "
                                          "of class 1: no auc there tells the classes apart")
    # the loss is defined there, but it chose the trial most confident in the one class
    by_loss = _select({"type": "deepsets", "max_epochs": 2, "patience": 1, "lr": 1e-3}, train,
                      data.subset(ones), tuning={"trials": 2, "choose_by": "loss"})
    assert by_loss.record["trials_run"] == 1 and by_loss.record["not_compared"].endswith(
        "no loss there tells the classes apart")
    # a method of one candidate (logreg chooses its C itself) had no trials to compare
    one = _select({"type": "logreg"}, train, data.subset(ones),
                  tuning={"trials": 3, "choose_by": "auc"})
    assert "not_compared" not in one.record


def test_a_fold_model_that_never_saw_a_modality_scores_no_subject_by_it():
    """Under cross-validation a modality few subjects have can be absent from one fold's
    training folds: that fold model reads it as absent (its normaliser's ``unseen``), so
    a subject with that modality alone is scored by the fold models that trained on it,
    and is never given to one as a row without input."""
    from mmpipe.bench.selection import FoldEnsemble
    from mmpipe.bench.trainer import predict_proba

    class Member:
        kind = "sklearn"

        def __init__(self, value):
            self.value = np.asarray(value, np.float32)

        def predict_proba(self, data):
            assert data.present.any(axis=1).all(), "a row without input"
            return np.tile(self.value, (len(data.y), 1))

    def part(present):
        present = np.asarray(present, bool)
        return BenchData(subject_id=np.array([f"s{i}" for i in range(len(present))]),
                         y=np.zeros(len(present), np.int64),
                         x={"a": np.ones((len(present), 2), np.float32),
                            "c": np.ones((len(present), 3), np.float32)},
                         present=present, modalities=["a", "c"], n_classes=2)

    never_c = Normalizer("zscore").fit(part([[1, 0], [1, 0], [1, 0]]))
    with_c = Normalizer("zscore").fit(part([[1, 1], [1, 0], [1, 1]]))
    assert never_c.unseen == ["c"] and with_c.unseen == []
    assert Normalizer.from_state(never_c.state_dict()).unseen == ["c"]
    ensemble = FoldEnsemble([Member([0.2, 0.8]), Member([0.6, 0.4])], [never_c, with_c])
    proba = predict_proba(ensemble, part([[1, 1], [0, 1]]), "cpu")
    np.testing.assert_allclose(proba, [[0.4, 0.6], [0.6, 0.4]], rtol=1e-6)


@pytest.mark.parametrize("normalize", ["zscore", "l2", "none"])
def test_a_held_out_subject_a_fold_model_cannot_read_gets_the_folds_prior(normalize):
    """Its only modality absent from the fold's training folds, a held-out subject was
    given to the fold model (early stopping and out-of-fold scores) as a row without
    input."""
    from mmpipe.bench.selection import _fit_cv

    class Member:
        kind = "sklearn"

        def fit(self, train, val, seed):
            assert val.present.any(axis=1).all(), "a row without input"

        def fitted_settings(self):
            return {}

        def predict_proba(self, data):
            assert data.present.any(axis=1).all(), "a row without input"
            return np.tile([0.5, 0.5], (len(data.y), 1)).astype(np.float32)

    pool = _data(n=30)
    pool.present[0] = [False, True]  # s0 alone has b: no other fold trains on it
    pool.present[1:, 1] = False
    folds = stratified_folds(strata(pool), 3, 0)
    members, norms, _, oof, unscored = _fit_cv(Member, pool, {}, 0, "cpu",
                                               Selection("cv", folds=3), normalize=normalize)
    others = pool.y[folds != folds[0]]
    np.testing.assert_allclose(oof[0], np.bincount(others, minlength=2) / len(others))
    assert unscored.tolist() == [True] + [False] * 29  # flagged no_input in the predictions
    assert norms[folds[0]].unseen == ["b"]
