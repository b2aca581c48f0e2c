"""One benchmark run: a method on a feature set, under a missingness scenario, for a seed.

Everything a run needs comes from files shared by all methods (the feature stores,
the split of this seed, the mask of this scenario, rate and seed), so every method
is compared on the same subjects and the same missing entries: every feature set of a
cohort is scored on every labelled test subject of the split, one it has no input for
(none of its modalities in the stores, or none left by the scenario) with the training
prior, flagged ``no_input``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from mmpipe.bench.bundle import save_bundle
from mmpipe.bench.data import BenchData, Normalizer, load_feature_set
from mmpipe.bench.flags import run_flags
from mmpipe.bench.metrics import classification_metrics, nan_metrics
from mmpipe.bench.missingness import (
    align_mask,
    modality_subsets,
    read_mask,
    read_removal_record,
    realised_rate,
    subset_mask,
)
from mmpipe.bench.selection import FoldEnsemble, Selection, select_model, training_part
from mmpipe.bench.shared_fits import SharedFits, fit_key
from mmpipe.bench.splits import read_split, read_split_source, split_groups
from mmpipe.bench.trainer import TRAIN_DEFAULTS, FitResult, NotTrainable, predict_proba
from mmpipe.bench.tuning import Tuning
from mmpipe.cohorts.benchmark_view import built_benchmark_view
from mmpipe.fsutil import atomic_dir
from mmpipe.hashing import params_hash
from mmpipe.layout import (
    METRICS,
    MODEL,
    PREDICTIONS,
    TRAIN_LOG,
    CohortLayout,
    cell_name,
    parse_cell,
    seed_name,
)
from mmpipe.methods import method_class

log = logging.getLogger(__name__)
# scenarios whose protocol keeps a subject's only modality among the run's own: BD's
# test-time missingness ("subjects for whom it is the only modality keep it")
_ONLY_MODALITY_STAYS = ("testmiss",)


def _apply_mask(data: BenchData, mask_path: Path, scenario: str) -> tuple[BenchData, int]:
    """The scenario's mask on this feature set's presence, and how many subjects the mask
    would leave without any of its modalities that keep their only one. A mask is drawn
    over the cohort's modalities; under ``testmiss`` the protocol's "the only modality
    stays" holds among the run's modalities as its stores hold them (a subject without
    the slide in a slide+clinical run keeps its clinical record, whatever else it has
    outside the feature set). Under MCAR and completeness a run of fewer modalities loses
    what the mask takes, as every other run of the cell: a CT-only model cannot score a
    subject whose CT was masked, and gets the prior there, counted in the run's notes."""
    ids, mask, modalities = read_mask(mask_path)
    masked = data.present & align_mask(ids, mask, modalities, data.subject_id.tolist(),
                                       data.modalities, path=mask_path)
    if scenario not in _ONLY_MODALITY_STAYS:
        return data.with_present(masked), 0
    alone = np.flatnonzero(data.present.sum(axis=1) == 1)
    kept = alone[~masked[alone].any(axis=1)]
    masked[kept] = data.present[kept]
    return data.with_present(masked), len(kept)


def _rate_on_feature_set(stored: BenchData, masked: BenchData, idx: dict[str, np.ndarray],
                         scenario: str, record: dict[str, Any] | None
                         ) -> dict[str, Any] | None:
    """The scenario's rate as the run's own feature set met it (the cell's mask record
    says it over the cohort's modalities): under ``testmiss`` the share of the run's test
    subjects having the modality that lost it, fewer where it is their only modality of
    the feature set (a slide+clinical run keeps the clinical record of every test
    subject without a slide); under MCAR the share of the run's present entries removed,
    more in a narrower feature set (the cohort-wide mask keeps each subject one modality,
    which may lie outside it); under ``completeness`` the share of its training subjects
    complete in its modalities (those of the scenario's) kept complete, more in a
    narrower feature set (a subject that lost a modality outside it is complete in it).
    None for ``natural``, a feature set without the modality the scenario takes, or one
    holding fewer than two of the completeness scenario's."""
    options = (record or {}).get("options") or {}
    if scenario == "completeness":
        named = options.get("modalities")
        names = [m for m in stored.modalities if named is None or m in named]
        if len(names) < 2:  # one modality is complete wherever it is present
            return None
        parts = np.full(len(stored.y), "", dtype=object)
        parts[idx["train"]] = "train"
        rate, of = realised_rate(scenario, stored.present, masked.present,
                                 cohort_modalities=stored.modalities, parts=parts,
                                 modalities=names)
        return {"rate": rate, "rate_of": of}
    if scenario not in ("mcar", "testmiss"):
        return None
    modality = options.get("modality")
    if scenario == "testmiss" and modality not in stored.modalities:
        return None
    test = np.zeros(len(stored.y), dtype=bool)
    test[idx["test"]] = True
    rate, of = realised_rate(scenario, stored.present, masked.present,
                             cohort_modalities=stored.modalities, test=test, modality=modality)
    return {"rate": rate, "rate_of": of}


def _split_indices(data: BenchData, split_path: Path
                   ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each part's rows of ``data``, and the split file's groups (subject_id -> group)."""
    split = read_split(split_path)
    where = dict(zip(split["subject_id"], split["split"], strict=True))
    missing = [s for s in data.subject_id if s not in where]
    if missing:
        raise ValueError(f"{len(missing)} subjects have features but no split in {split_path} "
                         f"(e.g. {missing[:3]}): rebuild the split")
    labels = np.array([where[s] for s in data.subject_id])
    return ({name: np.flatnonzero(labels == name) for name in ("train", "val", "test")},
            split_groups(split))


def build_method(method_cfg: dict[str, Any], data: BenchData):
    cls = method_class(method_cfg["type"])
    hparams = {k: v for k, v in method_cfg.items() if k != "type"}
    return cls(data.modalities, data.shapes(), data.n_classes, **hparams)


def _predictions(data: BenchData, proba: np.ndarray, split: str, evaluation: str,
                 no_input: np.ndarray) -> pl.DataFrame:
    cols = {"subject_id": data.subject_id.tolist(), "split": [split] * len(data.y),
            "label": data.y.tolist()}
    for c in range(proba.shape[1]):
        cols[f"score_{c}"] = proba[:, c].astype(float).tolist()
    cols["predicted"] = proba.argmax(1).tolist() if len(proba) else []
    cols["pattern"] = data.patterns()
    cols["evaluation"] = [evaluation] * len(data.y)
    cols["no_input"] = no_input.tolist()
    return pl.DataFrame(cols)


def _score(method, data: BenchData, prior: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities; subjects left without any input (and every subject of an untrained
    method) get the training prior, flagged in ``no_input``."""
    no_input = ~data.present.any(axis=1) if method is not None else np.ones(len(data.y), bool)
    proba = np.tile(prior, (len(data.y), 1)).astype(np.float32)
    keep = np.flatnonzero(~no_input)
    if len(keep):
        proba[keep] = predict_proba(method, data.subset(keep), device)
    return proba, no_input


def run_experiment(cohort_dir: str | Path, feature_set: dict[str, str], label: str,
                   method_cfg: dict[str, Any], split_path: str | Path, mask_path: str | Path,
                   out_dir: str | Path, *, seed: int, meta: dict[str, Any],
                   normalize: str = "zscore", evaluate_subsets: bool = True,
                   device: str = "cpu", selection: dict[str, Any] | None = None,
                   tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one run; writes metrics.json, predictions.parquet, train.log,
    model.pt into ``out_dir`` atomically and returns the metrics."""
    data, dropped = load_feature_set(Path(cohort_dir), feature_set, label)
    return run_seed(data, dropped, feature_set, label, method_cfg, split_path, mask_path,
                    out_dir, seed=seed, meta=meta, normalize=normalize,
                    evaluate_subsets=evaluate_subsets, device=device, selection=selection,
                    tuning=tuning)


def gpu_slots(resources) -> int:
    """The GPUs a training job holds: its ``gpu`` resource, or on a site that takes GPUs
    only as a SLURM ``gres`` (``gpu:2``, ``gpu:a100:1``, ``gpu``) the count there. The
    plugin refuses both at once; read from ``gpu`` alone, a job given the gres trained on
    the CPU beside the GPU it held."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    for item in str(getattr(resources, "gres", "") or "").split(","):
        name, *rest = item.strip().split(":")
        if name == "gpu":
            gpus += int(rest[-1]) if rest and rest[-1].isdigit() else 1
    return gpus


def training_device(configured: str, gpu_slots: int) -> str:
    """The device a training job of the workflow trains on: the configured one where the
    job holds a GPU slot (``device: cuda`` and a torch method), else the CPU. Under
    ``auto`` a training job holds none, so it trains on the CPU: it took a node's GPU it
    had not asked for (eight jobs beside an encoder on one workstation GPU, another
    job's GPU on a node whose scheduler does not fence devices), and a seed's numbers on
    a GPU are not its numbers on the CPU."""
    return configured if gpu_slots else "cpu"


def run_cell(layout: CohortLayout, train: dict[str, Any], scenario: str, rate: float,
             out_dir: str | Path, *, meta: dict[str, Any], device: str = "cpu"
             ) -> list[dict[str, Any]]:
    """Every seed of one (feature set, method, scenario, rate) cell, into
    ``out_dir/seed{S}/``; the cell appears whole or not at all.

    ``train`` is the job's parameter set (:func:`mmpipe.params.train_params`): the
    method, feature set, label, normalisation and seeds; each seed's split and mask are
    found in ``layout``. One process trains every seed: a demo run trains in about a
    second, while starting a job (Python, torch, the stores) costs several.
    """
    data, dropped = load_feature_set(layout.root, train["feature_set"], train["label"])
    with atomic_dir(out_dir) as tmp:
        return _train_cells(layout, data, dropped, train, {cell_name(scenario, rate): tmp},
                            meta=meta, device=device)[cell_name(scenario, rate)]


def run_cells(layout: CohortLayout, train: dict[str, Any], cells: list[str],
              out_dir: str | Path, *, meta: dict[str, Any], device: str = "cpu"
              ) -> dict[str, list[dict[str, Any]]]:
    """Every ``{scenario}-{rate}`` cell of ``cells`` into ``out_dir/{cell}/seed{S}/``, the
    features loaded once (a ``train_jobs: method`` job); ``out_dir`` appears whole or not
    at all. Cells whose seeds train on the same data (``testmiss`` and ``natural``) train
    each seed once (:mod:`mmpipe.bench.shared_fits`)."""
    data, dropped = load_feature_set(layout.root, train["feature_set"], train["label"])
    with atomic_dir(out_dir) as tmp:
        return _train_cells(layout, data, dropped, train, {cell: tmp / cell for cell in cells},
                            meta=meta, device=device)


def _train_cells(layout: CohortLayout, data: BenchData, dropped: list[dict],
                 train: dict[str, Any], cell_dirs: dict[str, Path], *, meta: dict[str, Any],
                 device: str) -> dict[str, list[dict[str, Any]]]:
    """Seed by seed, every cell: a seed's fits are shared between its cells and dropped
    before the next seed, so the job holds at most one model per cell. A one-cell job
    has nothing to share and hashes no data for it."""
    signature = params_hash(train)
    # what of the manifest these runs read: the report refuses runs of another build
    # (``--rerun-triggers mtime`` reruns no training job for new subjects or labels)
    meta = {**meta, "benchmark_view": built_benchmark_view(layout.root, train["label"]),
            # the training code's key (the method's module and the training loop), which
            # `mmpipe predict` compares with its own
            "code_version": train.get("code")}
    keep = train.get("keep_models", "all")
    results: dict[str, list[dict[str, Any]]] = {cell: [] for cell in cell_dirs}
    for seed in sorted(train["seeds"]):
        fits = SharedFits() if len(cell_dirs) > 1 else None
        for cell, cell_dir in cell_dirs.items():
            scenario, rate = parse_cell(cell)
            results[cell].append(run_seed(
                data, dropped, train["feature_set"], train["label"], train["method"],
                layout.split(seed), layout.mask(scenario, rate, seed),
                cell_dir / seed_name(seed), seed=seed,
                meta={**meta, "scenario": scenario, "rate": rate},
                normalize=train["normalize"], evaluate_subsets=train["evaluate_subsets"],
                device=device, train_hash=signature, selection=train.get("selection"),
                tuning=train.get("tuning"), keep_model=keep != "none",
                fits=fits, cell=cell))
    if keep == "best":
        for cell, cell_dir in cell_dirs.items():
            _keep_best_model(cell_dir, results[cell])
    return results


# what ``keep_models: best`` keeps a seed by, in turn: a validation split of one class
# (a rare label, a mask that left a class without input) has no AUC on any seed, and
# every seed's model.pt had been deleted with the runs trained
KEEP_BY = ("auc", "balanced_accuracy")


def best_validation_seed(results: list[dict[str, Any]]) -> tuple[int | None, str | None]:
    """The trained seed with the highest validation AUC (the lowest seed on a tie), and
    what chose it; where no seed has a finite one, by validation balanced accuracy, then
    the lowest trained seed. The test split plays no part. (None, None) when no seed
    trained."""
    trained = [r for r in results if r["trained"]]
    for metric in KEEP_BY:
        scored = [(r["val"][metric], -r["seed"]) for r in trained
                  if r["val"].get(metric) is not None and np.isfinite(r["val"][metric])]
        if scored:
            return -max(scored)[1], f"validation {metric}"
    if trained:
        return min(r["seed"] for r in trained), "the lowest trained seed (no validation " \
            "metric is defined on any)"
    return None, None


def _keep_best_model(cell_dir: Path, results: list[dict[str, Any]]) -> None:
    """``keep_models: best``: only the best validation seed's ``model.pt`` stays; every
    seed's ``metrics.json`` says which seed holds the cell's weights (``model_seed``) and
    what chose it (``model_seed_by``)."""
    best, by = best_validation_seed(results)
    for r in results:
        run_dir = cell_dir / seed_name(r["seed"])
        if r["seed"] != best:
            (run_dir / MODEL).unlink(missing_ok=True)
        r["model"] = MODEL if r["seed"] == best else None
        r["model_seed"], r["model_seed_by"] = best, by
        (run_dir / METRICS).write_text(json.dumps(r, indent=2, default=float))


def _zeroed_note(normalizer: Normalizer) -> list[str]:
    zeroed = normalizer.zeroed()
    if not zeroed:
        return []
    return ["features constant over the subjects the normaliser was fitted on are zero for "
            "every subject (no weight trains on them): "
            + ", ".join(f"{m} {n} of {width}" for m, (n, width) in zeroed.items())]


def _absent_label_notes(data: BenchData, parts: list[tuple[str, BenchData]],
                        test: BenchData) -> list[str]:
    """A label without a subject in a part (too rare for the split to give each part one,
    or left without input by the mask): that part's AUC and early stopping cannot see it."""
    notes = []
    for name, part in [*parts, ("test", test)]:
        absent = [data.label_values[c] if c < len(data.label_values) else c
                  for c in range(data.n_classes) if not (part.y == c).any()]
        if absent:
            notes.append(f"no {name} subject has label {', '.join(map(str, absent))}")
    return notes


def run_seed(data: BenchData, dropped: list[dict], feature_set: dict[str, str], label: str,
             method_cfg: dict[str, Any], split_path: str | Path, mask_path: str | Path,
             out_dir: str | Path, *, seed: int, meta: dict[str, Any], normalize: str = "zscore",
             evaluate_subsets: bool = True, device: str = "cpu",
             train_hash: str | None = None, selection: dict[str, Any] | None = None,
             tuning: dict[str, Any] | None = None, keep_model: bool = True,
             fits: SharedFits | None = None, cell: str | None = None) -> dict[str, Any]:
    """One seed on already loaded features (see :func:`run_experiment`): the tuning
    budget spent and the model chosen on the training and validation splits
    (:mod:`mmpipe.bench.selection`), then scored on the test split. ``keep_model``
    False writes no ``model.pt`` (``benchmark.keep_models: none``). With ``fits``, the
    fits of the job's other cells (``cell`` names this one): a cell of the same seed that
    trained on these very data lends its model instead of training it again."""
    selection_cfg, tuning_cfg = Selection.from_config(selection), Tuning.from_config(tuning)
    stored = data
    data, kept_one = _apply_mask(data, Path(mask_path), meta.get("scenario", ""))
    idx, groups = _split_indices(data, Path(split_path))
    mask_record = read_removal_record(mask_path)
    run_rate = _rate_on_feature_set(stored, data, idx, meta.get("scenario", ""), mask_record)
    train, val, test = (data.subset(idx[k]) for k in ("train", "val", "test"))
    notes = [f"{len(dropped)} subjects dropped before splitting: "
             f"{sorted({d['reason'] for d in dropped})}"] if dropped else []
    notes += [f"{modality}: {len(sids)} subject(s) the store holds as present have NaN or "
              f"inf features (a store not written by mmpipe's writer, or damaged), read as "
              f"absent: {', '.join(sids[:10])}{' ...' if len(sids) > 10 else ''}"
              for modality, sids in sorted(data.unreadable.items()) if sids]
    if kept_one:
        notes.append(f"{kept_one} subjects kept their only modality of this feature set "
                     "(the protocol keeps it; the mask, drawn over the cohort's modalities, "
                     "had taken it)")
    # subjects without any modality of this feature set (in its stores, or left by the
    # mask) cannot be trained on; at test time they get the training prior, flagged in
    # the predictions, so every feature set is scored on the same test subjects
    for key, part in (("train", train), ("val", val)):
        none = ~part.present.any(axis=1)
        if none.any():
            by_mask = int((none & stored.present[idx[key]].any(axis=1)).sum())
            scored = ("left out of training" if key == "train" else
                      "scored with the training prior, as such test subjects are")
            notes.append(
                f"{int(none.sum())} {key} subjects had no modality of this feature set and "
                f"were {scored} ({by_mask} of them left without one by the scenario's mask, "
                "which keeps a modality among the cohort's as the manifest lists them, not "
                "among this feature set's or those the stores hold)")
    # the label prior of the subjects the model would be fitted on, inputs or not: where
    # none has an input the prior of those with one is empty (a row of zeros)
    labelled = train.y if selection_cfg.strategy == "validation" else np.concatenate(
        [train.y, val.y])
    # the subjects the validation score covers: every one, as the test score covers every
    # test subject; scored on those with an input alone, a narrow feature set's score read
    # an easier set than its test score and won the report's choice by validation
    val_everyone = val if selection_cfg.strategy == "validation" else training_part(train, val)
    val_split = val
    train, val = train.with_input(), val.with_input()
    # z-scores from the data the model is chosen on: the training split, or under
    # cross-validation the whole training part (never the test split), which each fold
    # then re-standardises on its own training folds (selection._fit_cv)
    fitted_on = train if selection_cfg.strategy == "validation" else training_part(train, val)
    normalizer = Normalizer(normalize).fit(fitted_on)
    raw_test = test
    train, val, test = (normalizer.transform(d) for d in (train, val, test))
    if normalizer.unseen:
        lost = int((~val.present.any(axis=1)).sum())
        notes.append(f"no subject the model is fitted on has {', '.join(normalizer.unseen)}: "
                     "absent for every subject (no weight of its encoder trains)"
                     + (f"; {lost} validation subject(s) left without input were scored "
                        "with the training prior" if lost else ""))
        val = val.with_input()
    # l2's tabular statistics do not compose with a fold's refit: the folds take the raw
    # training part, row for row as the normalised one (less what `unseen` emptied)
    raw_pool = (fitted_on.subset(np.flatnonzero(np.isin(
        fitted_on.subject_id, np.concatenate([train.subject_id, val.subject_id]))))
        if selection_cfg.strategy == "cv" and normalizer.folds_refit_raw else None)
    notes += _zeroed_note(normalizer) + _absent_label_notes(
        data, [("training", train), ("validation", val)]
        if selection_cfg.strategy == "validation" else [("training", fitted_on)], test)
    if selection_cfg.strategy == "cv":
        sizes = Counter(groups[s] for s in fitted_on.subject_id if s in groups)
        if kept := sum(n > 1 for n in sizes.values()):
            notes.append(f"cross-validation keeps each of the training part's {kept} split "
                         "groups of two or more subjects in one fold")
    torch.manual_seed(seed)
    method = build_method(method_cfg, data)
    sklearn_kind = getattr(method, "kind", "torch") == "sklearn"
    prior_of = fitted_on.y if len(fitted_on.y) else labelled
    prior = (np.bincount(prior_of, minlength=data.n_classes) / len(prior_of) if len(prior_of)
             else np.full(data.n_classes, 1 / data.n_classes))
    chosen: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        def select():
            # a part the mask or the feature set emptied: nothing to train on, or for a
            # network nothing to stop on (a scikit-learn method needs no validation)
            if selection_cfg.strategy == "validation":
                empty = [name for name, part in (("training", train), ("validation", val))
                         if not len(part.y) and (name == "training" or not sklearn_kind)]
            else:
                empty = [] if len(fitted_on.y) else ["training or validation"]
            if empty:
                raise NotTrainable(f"no {' or '.join(empty)} subject has an input")
            return select_model(lambda over: build_method({**method_cfg, **over}, data),
                                method_class(method_cfg["type"]), method.hparams,
                                TRAIN_DEFAULTS, train, val, seed=seed, device=device,
                                selection=selection_cfg, tuning=tuning_cfg,
                                normalize=normalize, split_groups=groups,
                                raw_pool=raw_pool)

        shared_with, selection_record = None, None
        try:
            if fits is None:
                sel = select()
            else:
                key = fit_key(seed, {"method": method_cfg, "selection": selection,
                                     "tuning": tuning, "normalize": normalize,
                                     "device": str(device)}, train, val)
                sel, shared_with = fits.select(key, cell, select)
            if shared_with is not None:
                notes.append(f"trained once with cell {shared_with}: this cell's training "
                             "and validation data are that cell's (as a scenario that masks "
                             "the test split only leaves them), so its model is that cell's")
            method, result, chosen = sel.method, sel.result, sel.overrides
            selection_record = sel.record
            if sel.normalizer is not None:  # a fold ensemble whose members read raw features
                normalizer = sel.normalizer
                test = normalizer.transform(raw_test)
            (tmp / TRAIN_LOG).write_text(sel.log)
            trained = True
        except NotTrainable as err:
            # recorded, not hidden: the run exists, its metrics are NaN with the reason
            log.warning("%s not trained: %s", method_cfg["type"], err)
            notes.append(f"not trained: {err}; metrics are NaN, predictions are the "
                         "training prior")
            (tmp / TRAIN_LOG).write_text(f"not trained: {err}\n")
            result, trained, sel = FitResult(), False, None
            selection_record = err.selection
        start = time.perf_counter()
        frames, metrics = [], {}
        if sel is not None:  # the validation split's, or the out-of-fold predictions
            frames.append(_predictions(sel.val_part, sel.val_proba, "val", sel.val_evaluation,
                                       np.zeros(len(sel.val_part), bool)
                                       if sel.val_no_input is None else sel.val_no_input))
            # and those no model reads, at the training prior
            left = normalizer.transform(val_everyone.subset(
                ~np.isin(val_everyone.subject_id, sel.val_part.subject_id)))
            left_proba = np.tile(prior, (len(left.y), 1)).astype(np.float32)
            if len(left.y):
                frames.append(_predictions(left, left_proba, "val", sel.val_evaluation,
                                           np.ones(len(left.y), bool)))
            metrics["val"] = classification_metrics(np.concatenate([sel.val_y, left.y]),
                                                    np.concatenate([sel.val_proba, left_proba]))
        else:  # the validation split, every subject at the prior
            metrics["val"] = nan_metrics(len(val_split.y), data.n_classes, ["not trained"])
            frames.append(_predictions(val_split, np.tile(prior, (len(val_split.y), 1)),
                                       "val", "scenario", np.ones(len(val_split.y), bool)))
        # every validation subject, those scored at the prior too, as the test flag reads
        # every test subject (flags.run_flags): the subjects with input alone flagged a
        # collapse on validation that the same predictions on test were not
        val_predicted = np.concatenate([f["predicted"].to_numpy() for f in frames])
        proba, no_input = _score(method if trained else None, test, prior, device)
        metrics["test"] = (classification_metrics(test.y, proba) if trained
                           else nan_metrics(len(test.y), data.n_classes, ["not trained"]))
        frames.append(_predictions(test, proba, "test", "scenario", no_input))
        flags = run_flags(trained=trained, n_classes=data.n_classes,
                          val_predicted=val_predicted,
                          test_predicted=proba.argmax(1), best_epoch=result.best_epoch,
                          epochs=result.epochs, first_eligible=result.first_eligible,
                          diverged=result.diverged,
                          judged_y=(sel.val_y if sel is not None
                                    and sel.val_evaluation == "scenario" else None))
        subsets = []
        if trained and evaluate_subsets and len(data.modalities) > 1:
            for subset in modality_subsets(data.modalities):
                part = test.with_present(subset_mask(test.present, data.modalities, subset))
                # the subjects given exactly this subset: every modality of it (HAM
                # table 2); any of it mixed a+b's row with a-only inputs
                cols = [data.modalities.index(m) for m in subset]
                keep = np.flatnonzero(part.present[:, cols].all(axis=1))
                if not len(keep):
                    continue
                part = part.subset(keep)
                proba, no_input = _score(method, part, prior, device)
                subsets.append({"modalities": list(subset),
                                **classification_metrics(part.y, proba)})
                frames.append(_predictions(part, proba, "test", "+".join(subset), no_input))
        n_no_input = int((~test.present.any(axis=1)).sum())
        if n_no_input:
            unseen = (f", or only {', '.join(normalizer.unseen)}, which no subject the "
                      "model is fitted on has" if normalizer.unseen else "")
            notes.append(f"{n_no_input} test subjects had no modality of this feature set "
                         f"(none in its stores, or none left under this scenario{unseen}) and "
                         "were scored with the training prior")
        out = {
            **meta, "seed": seed, "method_type": method_cfg["type"],
            # what the report needs to name the classes (the positive one of a binary task)
            "label": label, "n_classes": data.n_classes,
            "label_values": list(data.label_values), "test": metrics["test"],
            "val": metrics["val"], "subsets": subsets,
            "trained": trained,
            # a collapsed or untrained run, or one that kept its first epoch (bench/flags.py)
            "flags": flags,
            "method_notes": method.report_notes() if hasattr(method, "report_notes") else [],
            "trainable_parameters": int(method.trainable_parameters()),
            # the whole tuning budget's, every trial (and fold) included; spent once, in
            # the cell named by training_shared_with when that is not None
            "training_seconds": round(sel.seconds if sel is not None else result.seconds, 3),
            "training_shared_with": shared_with,
            "evaluation_seconds": round(time.perf_counter() - start, 3),
            "epochs": result.epochs, "best_epoch": result.best_epoch,
            "hparams": {**getattr(method, "hparams", {})},
            # those hparams left None that the method derived, as it built them (LARGO's
            # rank follows the tuned width, and was recorded as None)
            "derived_hparams": {**getattr(method, "derived", {})},
            # the tuning budget and model selection: every trial's validation score and
            # the overrides the kept model trained with (in hparams too)
            "selection": selection_record,
            # the settings fit() ran with: trainer defaults, the method's recipe and the
            # cohort's overrides merged, per phase
            "training": result.settings, "params_hash": train_hash,
            "feature_set": meta.get("feature_set"),
            "encoders": feature_set, "normalize": normalize, "device": str(device),
            "n_train": len(train.y), "n_val": len(val.y), "n_test": len(test.y), "notes": notes,
            # drawn per seed, or the cohort's own (which parts it fixes): with all three
            # fixed, seeds differ by initialisation alone, and the report says so
            "split": read_split_source(split_path),
            # what the cell's mask took from the labelled subjects over the cohort's
            # modalities: an MCAR rate the cohort cannot meet is met as far as it can be,
            # and the report says so
            "scenario_mask": mask_record,
            # the same rate as this run's feature set met it (_rate_on_feature_set)
            "scenario_feature_set": run_rate,
            # subjects training iterated over: the training part under a cv refit, the
            # largest member's folds for an ensemble, the subjects a method's train_subset
            # keeps (complete cases, those with one modality); None when nothing trained
            "n_fit": result.n_fit if trained else None,
            # the run's weights file in its folder, or None (benchmark.keep_models)
            "model": MODEL if keep_model and trained else None,
        }
        pl.concat(frames, how="vertical_relaxed").write_parquet(tmp / PREDICTIONS)
        (tmp / METRICS).write_text(json.dumps(out, indent=2, default=float))
        # neural and sklearn methods both expose state_dict()/load_state_dict() of plain data
        ensemble = {"ensemble": len(method.members)} if isinstance(method, FoldEnsemble) else {}
        if keep_model and trained:  # an untrained method has no weights to keep
            save_bundle(tmp / MODEL, method={**method_cfg, **chosen},
                        state=method.state_dict(), **ensemble, modalities=data.modalities,
                        shapes=data.shapes(), n_classes=data.n_classes, label=label,
                        label_values=list(data.label_values),
                        normalizer=normalizer.state_dict(), feature_set=feature_set,
                        encodings=data.provenance, meta=meta)
    log.info("%s on %s (%s %.1f, seed %d): test balanced accuracy %.3f, AUC %.3f",
             method_cfg["type"], meta.get("feature_set"), meta.get("scenario"),
             meta.get("rate", 0.0), seed, metrics["test"]["balanced_accuracy"],
             metrics["test"]["auc"])
    return out
