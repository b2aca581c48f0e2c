"""Histogram gradient boosting: absent modalities as NaN, fit/predict, saving, real data."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from mmpipe.bench.data import BenchData
from mmpipe.methods import method_class
from mmpipe.methods.hgb import HistGradientBoosting

SHAPES = {"clinical": (4,), "genomic": (3,)}


def _bench(n=200, seed=0, n_classes=2, p_absent=0.3) -> BenchData:
    """Label readable from clinical feature 0 and genomic feature 1; genomic often absent."""
    rng = np.random.default_rng(seed)
    y = rng.integers(n_classes, size=n)
    clinical = rng.normal(size=(n, 4)).astype(np.float32)
    clinical[:, 0] += 3.0 * y
    genomic = rng.normal(size=(n, 3)).astype(np.float32)
    genomic[:, 1] += 3.0 * y
    present = np.ones((n, 2), dtype=bool)
    present[:, 1] = rng.random(n) > p_absent
    genomic[~present[:, 1]] = 0.0
    return BenchData(np.array([f"s{i}" for i in range(n)]), y,
                     {"clinical": clinical, "genomic": genomic}, present,
                     ["clinical", "genomic"], n_classes)


def _fit(data, **hparams):
    return HistGradientBoosting(data.modalities, data.shapes(), data.n_classes,
                                **hparams).fit(data, None, seed=0)


def test_registry_and_kind():
    assert method_class("hgb") is HistGradientBoosting
    assert HistGradientBoosting.kind == "sklearn" and HistGradientBoosting.name == "hgb"


def test_absent_modalities_are_nan():
    data = _bench(n=20)
    method = HistGradientBoosting(data.modalities, data.shapes(), 2)
    feats = method.features(data)
    assert feats.shape == (20, 7)
    absent = ~data.present[:, 1]
    assert np.isnan(feats[absent, 4:]).all()
    assert not np.isnan(feats[~absent]).any()
    np.testing.assert_array_equal(feats[:, :4], data.x["clinical"])


def test_fit_predict():
    train, test = _bench(seed=0), _bench(seed=1)
    method = _fit(train)
    proba = method.predict_proba(test)
    assert proba.shape == (len(test), 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert (proba.argmax(1) == test.y).mean() > 0.8
    assert method.trainable_parameters() > method.hparams["max_iter"]  # nodes of all trees
    assert method.predict_proba(test.subset([])).shape == (0, 2)


def test_masked_values_ignored():
    train, test = _bench(seed=0), _bench(seed=1)
    method = _fit(train)
    ref = method.predict_proba(test)
    x = {m: v.copy() for m, v in test.x.items()}
    x["genomic"][~test.present[:, 1]] = 1e3
    noisy = BenchData(test.subject_id, test.y, x, test.present, test.modalities, 2)
    np.testing.assert_array_equal(method.predict_proba(noisy), ref)


def test_unseen_class_gets_zero_probability():
    data = _bench(n_classes=3)
    keep = np.flatnonzero(data.y != 1)
    method = _fit(data.subset(keep))
    proba = method.predict_proba(data)
    assert proba.shape == (len(data), 3)
    assert np.all(proba[:, 1] == 0)


def test_hparams_and_class_weight():
    data = _bench()
    with pytest.raises(ValueError, match="unknown"):
        HistGradientBoosting(data.modalities, data.shapes(), 2, n_trees=3)
    method = _fit(data, class_weight="balanced", max_iter=20, lr=1e-3)  # trainer keys pass
    assert method.model.max_iter == 20 and method.model.class_weight == "balanced"
    assert not method.model.early_stopping


def test_state_dict_roundtrip(tmp_path):
    train, test = _bench(seed=0), _bench(seed=1)
    method = _fit(train, max_iter=30)
    buf = io.BytesIO()
    torch.save({"sklearn": method.state_dict()}, buf)
    buf.seek(0)
    # weights_only: tensors and plain types, no pickled estimator that could run code
    state = torch.load(buf, weights_only=True)["sklearn"]
    other = HistGradientBoosting(train.modalities, train.shapes(), 2)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.predict_proba(test), method.predict_proba(test))
    assert other.hparams["max_iter"] == 30


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_tree_arrays_predict_what_scikit_learn_predicts(n_classes):
    """Predictions walk the stored arrays; they are scikit-learn's own, NaN routing included."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mmpipe.methods.hgb import TreeArrays

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    x[rng.random(x.shape) < 0.25] = np.nan
    y = rng.integers(0, n_classes, 300)
    model = HistGradientBoostingClassifier(max_iter=25, random_state=0).fit(x, y)
    forest = TreeArrays.from_state(TreeArrays.from_sklearn(model).state())
    np.testing.assert_allclose(forest.proba(x), model.predict_proba(x), atol=1e-12)


def test_shared_trainer_entry_points():
    from mmpipe.bench.trainer import fit, predict_proba

    train, val = _bench(seed=0), _bench(seed=1)
    method = HistGradientBoosting(train.modalities, train.shapes(), 2)
    result = fit(method, train, val, {}, seed=3)
    assert result.seconds > 0 and method.model.random_state == 3
    assert predict_proba(method, val).shape == (len(val), 2)


CSV = "mmist-ccrcc/clinical+genomic_split.csv"
GENOMIC = ["VHL_mutation", "PBMR1_mutation", "TTN_mutation"]


def test_mmist_clinical_auc(shared_data):
    """The specification's sanity check: HGB on MMIST-ccRCC's clinical table predicts 12-month
    vital status with AUC about 0.86 over 10 stratified 80/20 splits (-1 = unknown → NaN;
    the genomic columns form a second modality, absent when all three are unknown)."""
    pl = pytest.importorskip("polars")
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit

    from tests.conftest import require

    df = pl.read_csv(require(shared_data / CSV), infer_schema_length=None)
    clinical_cols = [c for c in df.columns
                     if c not in ("case_id", "vital_status_12", "Split", *GENOMIC)]

    def table(cols):
        v = df.select(cols).cast(pl.Float64).to_numpy().astype(np.float32)
        v[v == -1] = np.nan
        return v

    clinical, genomic = table(clinical_cols), table(GENOMIC)
    present = np.stack([np.ones(len(df), bool), ~np.isnan(genomic).all(1)], 1)
    genomic[~present[:, 1]] = 0.0
    y = df["vital_status_12"].to_numpy().astype(np.int64)
    data = BenchData(df["case_id"].to_numpy(), y, {"clinical": clinical, "genomic": genomic},
                     present, ["clinical", "genomic"], 2)
    aucs = []
    for tr, te in StratifiedShuffleSplit(10, test_size=0.2, random_state=0).split(clinical, y):
        method = HistGradientBoosting(data.modalities, data.shapes(), 2)
        method.fit(data.subset(tr), None, seed=0)
        aucs.append(roc_auc_score(y[te], method.predict_proba(data.subset(te))[:, 1]))
    print(f"MMIST clinical HGB AUC {np.mean(aucs):.3f} ± {np.std(aucs):.3f}")
    assert np.mean(aucs) > 0.80, aucs


def test_a_class_missing_from_training_gets_zero_and_the_others_scikit_learns_scores():
    data = _bench(n=150, seed=2, n_classes=3)
    train = data.subset(np.flatnonzero(data.y != 1))  # class 1 never seen in training
    method = _fit(train, max_iter=20)
    proba = method.predict_proba(data)
    assert proba.shape == (150, 3) and (proba[:, 1] == 0).all()
    expected = method.model.predict_proba(method.features(data))
    np.testing.assert_allclose(proba[:, [0, 2]], expected, atol=1e-6)


def test_a_small_cohort_is_not_predicted_as_a_constant():
    """The demo's failure: with scikit-learn's 20 samples per leaf, 36 training subjects
    allow no split (two leaves of 20), every tree is one leaf and every subject gets the
    training prior (AUC 0.50). The size-aware leaf lets the trees split."""
    train, test = _bench(n=36, seed=0, p_absent=0.2), _bench(n=100, seed=1)
    method = _fit(train)
    proba = method.predict_proba(test)[:, 1]
    assert np.ptp(proba) > 0.5
    assert (proba.round() == test.y).mean() > 0.8
    assert method.model.min_samples_leaf == 3  # min(20, max(2, 36 // 10))
    settings = method.fitted_settings()
    assert settings["min_samples_leaf"] == 3
    assert "n_train=36" in settings["min_samples_leaf_rule"]
    # the cause, pinned: scikit-learn's default leaf size on the same cohort is a constant
    constant = _fit(train, min_samples_leaf=20).predict_proba(test)[:, 1]
    assert np.ptp(constant) == 0
    assert _fit(train, min_samples_leaf=20).fitted_settings()["min_samples_leaf_rule"] == "fixed"


@pytest.mark.parametrize(("n_train", "leaf"), [(10, 2), (36, 3), (199, 19), (200, 20),
                                                (431, 20)])
def test_the_auto_leaf_size_is_scikit_learns_default_from_200_subjects(n_train, leaf):
    assert HistGradientBoosting.auto_min_samples_leaf(n_train) == leaf


@pytest.mark.parametrize("bad", [0, -3, 2.5, "small", True])
def test_a_bad_leaf_size_is_a_config_error(bad):
    from mmpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="min_samples_leaf"):
        HistGradientBoosting(["clinical"], {"clinical": (4,)}, 2, min_samples_leaf=bad)


def test_tuning_keys_name_real_hyper_parameters():
    keys = HistGradientBoosting.tuning_keys
    assert keys == {"lr": ("learning_rate",), "capacity": ("max_leaf_nodes",)}
    assert all(k in HistGradientBoosting.defaults for names in keys.values() for k in names)


def test_a_tabular_blank_is_nan_not_the_cohorts_mean():
    """Stage 1 filled a blank numeric field with the whole cohort's mean, test subjects
    included; HGB runs without the z-score that refits it on the training split, so that
    value (shaped by the test subjects) sat among the training values its splits cut."""
    from mmpipe.bench.data import BenchData

    encoding = {"columns": [{"kind": "numeric", "name": "age"},
                            {"kind": "categorical", "name": "sex", "categories": ["F", "M"]}]}
    # age, age=missing, sex=F, sex=M, sex=missing
    x = np.array([[0.5, 0, 1, 0, 0], [0.13, 1, 0, 1, 0], [-0.2, 0, 0, 0, 1]], np.float32)
    data = BenchData(np.array(["a", "b", "c"]), np.array([0, 1, 0]), {"clinical": x},
                     np.ones((3, 1), bool), ["clinical"], 2,
                     provenance={"clinical": {"tabular_encoding": encoding}})
    method = HistGradientBoosting(["clinical"], {"clinical": (5,)}, 2)
    expected = x.copy()
    expected[1, 0] = np.nan   # b's age; c's blank sex is a category of its own and stays
    np.testing.assert_array_equal(method.features(data), expected)
    # a model saved before blanks were NaN trained on the filled value, and still reads it
    state = method.fit(data).state_dict()
    assert state.pop("blank_as_nan") is True
    old = HistGradientBoosting(["clinical"], {"clinical": (5,)}, 2)
    old.load_state_dict(state)
    np.testing.assert_array_equal(old.features(data), x)


def test_a_modality_no_training_subject_has_trains_and_predicts_as_without_it():
    """Its columns were NaN for every training row: scikit-learn's binning failed with a
    bare ValueError, which stopped the job instead of recording the seed."""
    data = _bench()
    data.present[:, 1] = False
    method = _fit(data)
    without = _fit(BenchData(subject_id=data.subject_id, y=data.y,
                             x={m: v for m, v in data.x.items() if m != data.modalities[1]},
                             present=np.delete(data.present, 1, axis=1),
                             modalities=[m for i, m in enumerate(data.modalities) if i != 1],
                             n_classes=data.n_classes))
    later = _bench(seed=1)  # subjects that do have it: the trees never split on it
    np.testing.assert_allclose(
        method.predict_proba(later),
        without.predict_proba(BenchData(
            subject_id=later.subject_id, y=later.y,
            x={m: v for m, v in later.x.items() if m != later.modalities[1]},
            present=np.delete(later.present, 1, axis=1),
            modalities=[m for i, m in enumerate(later.modalities) if i != 1],
            n_classes=later.n_classes)), atol=1e-6)
