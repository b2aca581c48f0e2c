"""Which early-stopping settings to make the default, measured on validation data only.

For each seed's split (natural missingness), the training split is cut once more: an
inner validation part (stratified, ``--inner`` of it) drives early stopping, and the
checkpoint it keeps is scored on the seed's *validation* split, which stopping never
saw. The test split is not loaded at all. Settings compared by default: the monitor
(validation balanced accuracy, as the MMARE thesis; loss; AUC) and the first epoch a
checkpoint may come from (``min_epochs``); ``--variants`` compares others instead, each a
JSON object of trainer settings and method hyper-parameters over the method's defaults
(``{}`` is the defaults). Printed: mean ± std over seeds of the held-out AUC and balanced
accuracy, and how often the kept checkpoint is epoch 1.

    python benchmarks/selection_defaults.py --cohort-dir results/mmist_ccrcc \\
        --label vital_status_12 --feature-set ct=precomputed mri=precomputed \\
        wsi=precomputed clinical=tabular --seeds 5

HyperMM's vector adapter width on MMIST-ccRCC (``mmpipe/methods/hypermm.py``):

    python benchmarks/selection_defaults.py --cohort-dir results/mmist_ccrcc \\
        --label vital_status_12 --feature-set ct=precomputed mri=precomputed \\
        wsi=precomputed clinical=tabular --seeds 10 --normalize l2 --methods hypermm \\
        --variants '{}' '{"adapter_dim": 512}' '{"adapter_dim": 128}'

The cohort's stores and split files must exist (``snakemake`` builds them).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmpipe.bench.data import Normalizer, load_feature_set  # noqa: E402
from mmpipe.bench.metrics import classification_metrics  # noqa: E402
from mmpipe.bench.run import _split_indices, build_method  # noqa: E402
from mmpipe.bench.selection import stratified_folds  # noqa: E402
from mmpipe.bench.trainer import TRAIN_DEFAULTS, fit, predict_proba  # noqa: E402
from mmpipe.layout import CohortLayout  # noqa: E402
from mmpipe.methods import TRAINER_KEYS  # noqa: E402

SETTINGS = [
    {"monitor": "balanced_accuracy", "min_epochs": 0},
    {"monitor": "loss", "min_epochs": 0},
    {"monitor": "loss", "min_epochs": 5},
    {"monitor": "auc", "min_epochs": 5},
]


def split_variant(variant: dict) -> tuple[dict, dict]:
    """(trainer settings, method hyper-parameters) of a variant: the trainer's keys go to
    ``fit``'s settings, the rest to the method's config."""
    trainer = {k: v for k, v in variant.items() if k in TRAINER_KEYS}
    return trainer, {k: v for k, v in variant.items() if k not in TRAINER_KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort-dir", type=Path, required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--feature-set", nargs="+", required=True, help="modality=encoder ...")
    ap.add_argument("--methods", nargs="+", default=["concat_zero", "late_fusion", "mmare"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--inner", type=int, default=7, help="1/inner of the training split "
                    "drives early stopping")
    ap.add_argument("--normalize", default="zscore")
    ap.add_argument("--variants", nargs="+", type=json.loads, default=SETTINGS,
                    help="JSON objects of trainer settings and method hyper-parameters to "
                         "compare (default: the early-stopping settings above)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    layout = CohortLayout(args.cohort_dir)
    feature_set = dict(kv.split("=", 1) for kv in args.feature_set)
    data, _ = load_feature_set(args.cohort_dir, feature_set, args.label)
    print(f"# settings compared on {args.cohort_dir.name} ({args.label}), natural "
          f"missingness, {args.seeds} splits; stopping on 1/{args.inner} of each training "
          f"split, scored on the validation split; {platform.processor() or platform.machine()}"
          f", torch {torch.__version__}, CPU, 1 thread")
    print("| method | variant | held-out val AUC | val bAcc | epoch-1 kept | s |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.methods:
        for variant in args.variants:
            setting, overrides = split_variant(variant)
            start = time.perf_counter()
            aucs, baccs, first = [], [], 0
            for seed in range(args.seeds):
                idx, groups = _split_indices(data, layout.split(seed))
                # as run_seed: a subject without input is neither trained nor validated on
                train, val = (data.subset(idx[k]).with_input() for k in ("train", "val"))
                fold = stratified_folds(train.y, args.inner, seed,
                                        [groups.get(s) for s in train.subject_id])
                inner_train, inner_val = (train.subset(np.flatnonzero(fold != 0)),
                                          train.subset(np.flatnonzero(fold == 0)))
                norm = Normalizer(args.normalize).fit(inner_train)
                inner_train, inner_val, val = (norm.transform(d)
                                               for d in (inner_train, inner_val, val))
                torch.manual_seed(seed)
                method = build_method({"type": name, **overrides}, data)
                cfg = {**TRAIN_DEFAULTS, **{k: v for k, v in method.hparams.items()
                                            if k in TRAINER_KEYS}, **setting}
                result = fit(method, inner_train, inner_val, cfg, seed)
                first += any(e == 1 for e in result.best_epoch.values())
                m = classification_metrics(val.y, predict_proba(method, val))
                aucs.append(m["auc"])
                baccs.append(m["balanced_accuracy"])
            print(f"| {name} | {json.dumps(variant) if variant else 'defaults'} | "
                  f"{statistics.mean(aucs):.3f} ± {statistics.stdev(aucs):.3f} | "
                  f"{statistics.mean(baccs):.3f} ± {statistics.stdev(baccs):.3f} | "
                  f"{first}/{args.seeds} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
