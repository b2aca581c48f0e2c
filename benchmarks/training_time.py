"""Training seconds per run of every method on MMIST-sized data, and the wall time of
the default stage-2 grid.

1. Per method: one run (default hyper-parameters, one seed, natural missingness) on
   MMIST-ccRCC-sized features: the real stores when `results/mmist_ccrcc` holds them,
   otherwise synthetic features of the same size and availability (618 subjects; CT 512-d
   for 39 %, MRI 512-d for 8 %, WSI 1024-d and clinical 384-d for all). Prints training
   seconds, epochs and trainable parameters.
2. With --grid: the wall time of `snakemake --cores N` over the demo's whole stage-2 grid
   (every split, mask, training job and the report), stage 1 already built.

    python benchmarks/training_time.py [--methods mmare deepsets] [--grid --cores 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmpipe.bench.data import BenchData, Normalizer, load_feature_set
from mmpipe.bench.metrics import classification_metrics
from mmpipe.bench.run import build_method
from mmpipe.bench.splits import stratified_split
from mmpipe.bench.trainer import TRAIN_DEFAULTS, NotTrainable, fit, predict_proba
from mmpipe.config import load_config
from mmpipe.layout import CohortLayout

REPO = Path(__file__).resolve().parents[1]
MMIST = {"ct": (512, 0.387), "mri": (512, 0.084), "wsi": (1024, 1.0), "clinical": (384, 1.0)}


def mmist_sized(seed: int = 0) -> tuple[BenchData, str]:
    cohort = CohortLayout.of(REPO / "results", "mmist_ccrcc")
    fs = {"ct": "precomputed", "mri": "precomputed", "wsi": "precomputed",
          "clinical": "text_minilm"}
    if all(cohort.store(m, e).exists() for m, e in fs.items()):
        data, _ = load_feature_set(cohort.root, fs, "vital_status_12")
        return data, "real MMIST-ccRCC stores"
    rng = np.random.default_rng(seed)
    n = 618
    y = (rng.random(n) < 75 / 618).astype(np.int64) ^ 1
    present = np.stack([rng.random(n) < share for _, share in MMIST.values()], axis=1)
    x = {m: (rng.normal(size=(n, d)) * present[:, [j]]).astype(np.float32)
         for j, (m, (d, _)) in enumerate(MMIST.items())}
    return BenchData(subject_id=np.array([f"s{i}" for i in range(n)]), y=y, x=x,
                     present=present, modalities=list(MMIST), n_classes=2), "synthetic, MMIST-sized"


def time_methods(names: list[str] | None) -> None:
    cfg = load_config(REPO / "config.yaml")
    data, source = mmist_sized()
    split = stratified_split(data.subject_id.tolist(), data.y, data.patterns(), 0)["split"]
    split = np.asarray(split.to_list())
    train, val, test = (data.subset(np.flatnonzero(split == k)) for k in ("train", "val", "test"))
    norm = Normalizer("zscore").fit(train)
    train, val, test = (norm.transform(d) for d in (train, val, test))
    print(f"data: {source}; {len(train.y)}/{len(val.y)}/{len(test.y)} train/val/test")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, cpu")
    print(f"{'method':28s} {'train s':>8s} {'epochs':>14s} {'params':>10s} {'test AUC':>8s}")
    methods = {k: v for k, v in cfg["methods"].items() if names is None or k in names}
    for name, mcfg in methods.items():
        if mcfg["type"] == "single" and "modality" not in mcfg:
            mcfg = {**mcfg, "modality": "wsi"}
            name = f"{name}_wsi"
        mcfg = {k: v for k, v in mcfg.items() if k != "normalize"}
        method = build_method(mcfg, data)
        train_cfg = {**TRAIN_DEFAULTS, **{k: v for k, v in getattr(method, "hparams", {}).items()
                                          if k in TRAIN_DEFAULTS}}
        start = time.perf_counter()
        try:
            result = fit(method, train, val, train_cfg, seed=0)
        except NotTrainable as err:
            print(f"{name:28s} not trainable on this feature set: {err}")
            continue
        seconds = time.perf_counter() - start
        auc = classification_metrics(test.y, predict_proba(method, test))["auc"]
        epochs = ",".join(str(e) for e in result.epochs.values()) or "-"
        print(f"{name:28s} {seconds:8.1f} {epochs:>14s} {method.trainable_parameters():10d} "
              f"{auc:8.3f}")


def time_grid(cores: int) -> None:
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--forcerun", "split",
           "mask", "--until", "benchmark_report", "--quiet", "rules"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    print(f"default stage-2 grid of the demo config: {time.perf_counter() - start:.0f} s wall "
          f"on {cores} cores (splits, masks, every training job, the report)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    time_methods(args.methods)
    if args.grid:
        time_grid(args.cores)


if __name__ == "__main__":
    main()
