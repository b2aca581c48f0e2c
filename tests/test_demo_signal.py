"""The demo's planted signal survives stage 1: fusion of its stores beats each store
alone, and a store whose rows no longer belong to their subjects falls to chance.

The workflow tests' demo (``demo_run``, 16 subjects) is too small to tell a signal from
noise, so this module runs stage 1 of its own demo through the same Snakefile: 120
subjects and the modalities that encode fast (the MRI volumes and the CT series through
Med3D, the clinical record through the tabular encoding; slides are switched off, so the
generator does not render them, and CLAM's store is not checked here), about 50 s on 2
cores. Each score is the AUC of out-of-fold predictions
(repeated stratified k-fold over the subjects, the same folds for every feature set) of
the project's ``logreg`` method, fitted through the trainer on the z-scored stores, so it
measures the stores, not one split's luck. ``benchmarks/demo_signal.py`` prints the
same story, step by step, on the full demo.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mmpipe.bench.data import BenchData, Normalizer, load_feature_set
from mmpipe.bench.run import build_method
from mmpipe.bench.trainer import fit, predict_proba
from tests.conftest import REPO, snakemake_in

pytestmark = pytest.mark.slow

FEATURES = {"mri_t1": "med3d_demo", "mri_t2": "med3d_demo", "ct": "med3d_demo",
            "clinical": "tabular"}
N_SUBJECTS = 120
FOLDS, REPEATS = 4, 3
# strong shrinkage: about a hundred subjects against 512 features per volume
METHOD = {"type": "logreg", "C": 0.01}


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory) -> BenchData:
    workdir = tmp_path_factory.mktemp("signal")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = cfg["cohorts"]["demo"]
    demo["demo"] = {"n_subjects": N_SUBJECTS, "seed": 11, "missing": {"wsi": 1.0},
                    "n_corrupt_ct": 0, "n_corrupt_slides": 0}
    # the prompt is the text encoder's, which this demo does not run
    demo["modalities"] = {m: {**{k: v for k, v in demo["modalities"][m].items()
                                 if k != "prompt"}, "encoders": [FEATURES[m]]}
                          for m in FEATURES}
    demo["benchmark"].update(feature_sets={"signal": FEATURES}, runs={"logreg": ["signal"]},
                             scenarios={"natural": [0.0]}, default_scenarios=["natural"])
    cfg.update(run_cohorts=["demo"], device="cpu")
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    stores = [f"results/demo/features/{m}/{e}.zarr" for m, e in FEATURES.items()]
    run = snakemake_in(workdir, *stores)
    assert run.returncode == 0, run.stderr[-4000:]
    data, _ = load_feature_set(workdir / "results" / "demo", FEATURES, "label")
    return data


def _auc(y, score) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def _oof_auc(data: BenchData) -> float:
    """Mean AUC over repeats of the out-of-fold probabilities of the positive class."""
    from sklearn.model_selection import StratifiedKFold

    aucs = []
    for repeat in range(REPEATS):
        score = np.zeros(len(data))
        folds = StratifiedKFold(FOLDS, shuffle=True, random_state=repeat)
        for train_idx, test_idx in folds.split(np.zeros(len(data)), data.y):
            norm = Normalizer("zscore").fit(data.subset(train_idx))
            method = build_method(METHOD, data)
            fit(method, norm.transform(data.subset(train_idx)), None, {}, seed=repeat,
                epochs={})
            score[test_idx] = predict_proba(method, norm.transform(data.subset(test_idx)))[:, 1]
        aucs.append(_auc(data.y, score))
    return float(np.mean(aucs))


def _single(data: BenchData, modality: str) -> BenchData:
    """The subjects that have ``modality``, with that modality only."""
    j = data.modalities.index(modality)
    rows = data.subset(data.present[:, j])
    return BenchData(subject_id=rows.subject_id, y=rows.y, x={modality: rows.x[modality]},
                     present=rows.present[:, [j]], modalities=[modality],
                     n_classes=data.n_classes)


def _permuted(data: BenchData, modality: str, seed: int = 0) -> BenchData:
    """``modality``'s rows shuffled among the subjects that have it: a store written in
    another order than its subject list."""
    j = data.modalities.index(modality)
    rows = np.flatnonzero(data.present[:, j])
    x = dict(data.x)
    x[modality] = x[modality].copy()
    x[modality][rows] = x[modality][np.random.default_rng(seed).permutation(rows)]
    return BenchData(subject_id=data.subject_id, y=data.y, x=x, present=data.present,
                     modalities=data.modalities, n_classes=data.n_classes)


def signal_report(data: BenchData) -> dict[str, float]:
    return {"fused": _oof_auc(data), **{m: _oof_auc(_single(data, m)) for m in data.modalities}}


# each modality's planted reading alone gives an AUC near 0.8 (mmpipe/cohorts/demo/plan.py);
# one draw of chance at this size reaches 0.6
SIGNAL_FLOOR = 0.7


def signal_problems(aucs: dict[str, float]) -> list[str]:
    """What is wrong with the signal: a modality that lost it, or fusion not above each."""
    problems = [f"{m} has lost its signal (AUC {a:.2f})" for m, a in aucs.items()
                if m != "fused" and a < SIGNAL_FLOOR]
    problems += [f"fusion (AUC {aucs['fused']:.2f}) does not beat {m} (AUC {a:.2f})"
                 for m, a in aucs.items() if m != "fused" and a >= aucs["fused"]]
    return problems


def test_fusion_beats_every_modality_and_none_is_at_chance(demo_features):
    aucs = signal_report(demo_features)
    assert not signal_problems(aucs), aucs


def test_a_store_whose_rows_left_their_subjects_falls_to_chance(demo_features):
    """The bug the check exists for: features written in another order than the subjects
    (the permutation keeps every value and the store's shape)."""
    modality = "mri_t1"
    intact = _oof_auc(_single(demo_features, modality))
    shuffled = _oof_auc(_single(_permuted(demo_features, modality), modality))
    assert intact > SIGNAL_FLOOR, intact
    assert abs(shuffled - 0.5) < 0.15, shuffled
    assert f"{modality} has lost its signal (AUC {shuffled:.2f})" in signal_problems(
        {"fused": 1.0, modality: shuffled})
