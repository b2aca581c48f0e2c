"""Logistic regression: zero-filled features with presence columns, C chosen on validation,
predictions from plain arrays, absent values ignored, saving and predicting from a bundle."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from mmpipe.bench.data import BenchData
from mmpipe.errors import ConfigError
from mmpipe.methods import method_class
from mmpipe.methods.logreg import C_GRID, LogisticRegression

SHAPES = {"clinical": (8,), "ct": (16,), "wsi": (24,)}


def _draws(bench_draws, n_classes=2, n=96, seeds=(0, 1, 2), **kw):
    """Train, validation and test as draws of one problem (shared class means), noisy
    enough that the validation log loss has a minimum inside the grid."""
    return bench_draws(SHAPES, seeds=seeds, n=n, n_classes=n_classes, noise=2.0, **kw)


def _make(data, **hparams) -> LogisticRegression:
    return LogisticRegression(data.modalities, data.shapes(), data.n_classes, **hparams)


def _with_absent_values(data: BenchData, value_seed: int = 1) -> BenchData:
    """The same subjects with large random values written where a modality is absent."""
    rng = np.random.default_rng(value_seed)
    x = {}
    for j, m in enumerate(data.modalities):
        v = data.x[m].copy()
        absent = ~data.present[:, j]
        v[absent] = 1e3 * rng.normal(size=v[absent].shape)
        x[m] = v
    return BenchData(data.subject_id, data.y, x, data.present, data.modalities, data.n_classes)


def test_registry_kind_and_tuning_keys():
    assert method_class("logreg") is LogisticRegression
    assert LogisticRegression.kind == "sklearn" and LogisticRegression.name == "logreg"
    # C is chosen on validation by the method itself: nothing for a tuning budget to scale
    assert LogisticRegression.tuning_keys == {}
    assert "tuning_keys" in (LogisticRegression.__doc__ or "")


def test_the_grid_is_half_decades_from_1e_3_to_1e2():
    assert len(C_GRID) == 11 and list(C_GRID) == sorted(C_GRID)
    np.testing.assert_allclose(C_GRID, 10.0 ** np.arange(-3, 2.5, 0.5))


def test_features_are_zero_filled_with_presence_columns(bench_draws):
    (data,) = _draws(bench_draws, seeds=(0,), n=30)
    noisy = _with_absent_values(data)
    method = _make(data)
    feats = method.features(noisy)
    assert feats.shape == (30, 8 + 16 + 24 + 3)
    np.testing.assert_array_equal(feats[:, -3:], data.present.astype(float))
    start = 0
    for j, m in enumerate(data.modalities):
        block = feats[:, start:start + SHAPES[m][0]]
        assert (block[~data.present[:, j]] == 0).all()  # the 1e3 values never get in
        np.testing.assert_allclose(block[data.present[:, j]], data.x[m][data.present[:, j]])
        start += SHAPES[m][0]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fit_predict_and_the_arrays_predict_what_scikit_learn_predicts(bench_draws, n_classes):
    train, val, test = _draws(bench_draws, n_classes=n_classes)
    method = _make(train).fit(train, val, seed=0)
    proba = method.predict_proba(test)
    assert proba.shape == (len(test), n_classes) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert (proba.argmax(1) == test.y).mean() > 0.7
    # the numpy predictions from the stored arrays equal scikit-learn's own, at the chosen C
    model = method._estimator(method.selection["C"]).fit(method.features(train), train.y)
    np.testing.assert_allclose(proba, model.predict_proba(method.features(test)), atol=1e-6)
    if n_classes > 2:  # multinomial: one coefficient row per class
        assert method.coef.shape == (n_classes, 8 + 16 + 24 + 3)
    assert method.trainable_parameters() == method.coef.size + method.intercept.size
    assert method.predict_proba(test.subset([])).shape == (0, n_classes)


def test_c_is_chosen_by_validation_log_loss_and_recorded(bench_draws):
    from sklearn.metrics import log_loss

    train, val, _ = _draws(bench_draws)
    method = _make(train).fit(train, val, seed=0)
    s = method.fitted_settings()
    assert s["C_selection"] == "validation log loss" and s["C_grid"] == list(C_GRID)
    assert len(s["val_log_loss"]) == len(C_GRID)
    assert s["C"] == C_GRID[int(np.argmin(s["val_log_loss"]))]
    # each recorded loss is scikit-learn's log loss of that grid point's model
    for c, recorded in zip(C_GRID[::5], s["val_log_loss"][::5], strict=True):
        model = method._estimator(c).fit(method.features(train), train.y)
        expected = log_loss(val.y, model.predict_proba(method.features(val)), labels=[0, 1])
        assert recorded == pytest.approx(expected, rel=1e-9)
    # the choice is an interior optimum on this noisy problem, not a grid edge
    assert C_GRID[0] < s["C"] < C_GRID[-1]


def test_a_tie_goes_to_the_smaller_c(bench_draws, monkeypatch):
    import mmpipe.methods.logreg as logreg

    train, val, _ = _draws(bench_draws)
    monkeypatch.setattr(logreg, "log_loss", lambda proba, classes, y: 0.5)
    method = _make(train).fit(train, val, seed=0)
    assert method.selection["C"] == C_GRID[0]


def test_a_fixed_c_and_balanced_weights(bench_draws):
    train, val, _ = _draws(bench_draws)
    method = _make(train, C=0.5, class_weight="balanced", lr=1e-3, patience=10)  # trainer keys pass
    method.fit(train, val, seed=0)
    s = method.fitted_settings()
    assert s["C"] == 0.5 and s["C_selection"] == "fixed" and "C_grid" not in s
    assert s["class_weight"] == "balanced"
    assert "lr" not in method.hparams


def test_without_validation_auto_falls_back_to_c_1_and_says_so(bench_draws):
    train, val, _ = _draws(bench_draws)
    method = _make(train).fit(train, val.subset([]), seed=0)
    assert method.selection["C"] == 1.0
    assert any("no validation subjects" in n for n in method.report_notes())


@pytest.mark.parametrize("hparams, message", [
    ({"C": 0}, "C must be"), ({"C": "large"}, "C must be"), ({"C": True}, "C must be"),
    ({"class_weight": "inverse"}, "class_weight"), ({"max_iter": 0}, "max_iter"),
])
def test_bad_settings_are_config_errors(hparams, message):
    with pytest.raises(ConfigError, match=message):
        LogisticRegression(["clinical"], {"clinical": (4,)}, 2, **hparams)
    with pytest.raises(ValueError, match="unknown"):
        LogisticRegression(["clinical"], {"clinical": (4,)}, 2, alpha=1.0)


def test_one_training_class_is_not_trainable(bench_draws):
    from mmpipe.bench.trainer import NotTrainable

    train, val, _ = _draws(bench_draws)
    with pytest.raises(NotTrainable, match="two classes"):
        _make(train).fit(train.subset(np.flatnonzero(train.y == 0)), val, seed=0)


def test_absent_values_never_reach_the_output(bench_draws):
    """As the neural methods' masking check: large values written where a modality is
    absent (in training, validation and test data) change nothing; present ones do."""
    train, val, test = _draws(bench_draws, n_classes=3)
    assert (~test.present).any()
    method = _make(train).fit(train, val, seed=0)
    ref = method.predict_proba(test)
    np.testing.assert_array_equal(method.predict_proba(_with_absent_values(test)), ref)
    # fitted on perturbed training and validation data: the same model
    other = _make(train).fit(_with_absent_values(train, 2), _with_absent_values(val, 3), seed=0)
    np.testing.assert_array_equal(other.coef, method.coef)
    np.testing.assert_array_equal(other.predict_proba(test), ref)
    # the opposite: changing present values changes the output (the check is not vacuous)
    shifted = BenchData(test.subject_id, test.y, {m: v + 5.0 * test.present[:, [j]]
                                                  for j, (m, v) in enumerate(test.x.items())},
                        test.present, test.modalities, 3)
    assert not np.allclose(method.predict_proba(shifted), ref)


def test_a_class_missing_from_training_gets_zero(bench_draws):
    train, val, test = _draws(bench_draws, n_classes=3)
    keep = np.flatnonzero(train.y != 1)
    method = _make(train).fit(train.subset(keep), val, seed=0)  # val still has class 1
    proba = method.predict_proba(test)
    assert proba.shape == (len(test), 3) and (proba[:, 1] == 0).all()
    assert np.isfinite(method.fitted_settings()["val_log_loss"]).all()


def test_state_dict_roundtrip(bench_draws):
    train, val, test = _draws(bench_draws, n_classes=3)
    method = _make(train, class_weight="balanced").fit(train, val, seed=0)
    buf = io.BytesIO()
    torch.save({"sklearn": method.state_dict()}, buf)
    buf.seek(0)
    # weights_only: tensors and plain types, no pickled estimator that could run code
    state = torch.load(buf, weights_only=True)["sklearn"]
    other = _make(train)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.predict_proba(test), method.predict_proba(test))
    assert other.hparams["class_weight"] == "balanced"
    assert other.fitted_settings()["C"] == method.fitted_settings()["C"]
    # weights of another feature layout are refused, not silently misread
    wrong = LogisticRegression(["clinical", "ct"], {"clinical": (8,), "ct": (16,)}, 3)
    with pytest.raises(ValueError, match="layout"):
        wrong.load_state_dict(state)


def test_a_saved_bundle_predicts_what_the_run_predicted(bench_draws, tmp_path):
    """run.py's save_bundle → predict.py's load_run (build from the config, load the
    state, refit nothing): the same probabilities, through the normaliser as in a run."""
    from mmpipe.bench.bundle import save_bundle
    from mmpipe.bench.data import Normalizer
    from mmpipe.bench.predict import load_run
    from mmpipe.bench.run import build_method
    from mmpipe.bench.trainer import fit, predict_proba

    train, val, test = _draws(bench_draws)
    norm = Normalizer("zscore").fit(train)
    train, val, test = (norm.transform(d) for d in (train, val, test))
    cfg = {"type": "logreg", "class_weight": "balanced"}
    method = build_method(cfg, train)
    result = fit(method, train, val, {}, seed=0)
    assert result.settings["estimator"]["C"] in C_GRID  # what metrics.json records
    save_bundle(tmp_path / "model.pt", method=cfg, state=method.state_dict(),
                modalities=train.modalities, shapes=train.shapes(), n_classes=2,
                label="y", label_values=[0, 1], normalizer=norm.state_dict(),
                feature_set=dict.fromkeys(SHAPES, "precomputed"),
                encodings={m: {} for m in SHAPES}, meta={})
    loaded, bundle = load_run(tmp_path)
    assert isinstance(loaded, LogisticRegression)
    assert Normalizer.from_state(bundle["normalizer"]).mode == "zscore"
    np.testing.assert_array_equal(predict_proba(loaded, test), predict_proba(method, test))
    assert loaded.trainable_parameters() == method.trainable_parameters()
