"""Validation-only choice of MMIST-ccRCC's stage-2 settings for MMARE with clinical data.

For each candidate (clinical encoding × feature normalisation × sampler), MMARE is
trained on the same repeated stratified splits (natural missingness) and scored on the
validation and the test split. The choice is the candidate with the best mean
validation AUC; the test column is printed so the reader sees what the choice cost or
gained, but it never enters the choice. Needs the MMIST-ccRCC stores
(`snakemake --config run_cohorts='[mmist_ccrcc]'` builds them).

    python benchmarks/mmist_selection.py [--seeds 10] [--ratios 0.7 0.1 0.2]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmpipe.bench.prepare import make_mask, make_split  # noqa: E402
from mmpipe.bench.run import run_experiment  # noqa: E402

IMAGING = {"ct": "precomputed", "mri": "precomputed", "wsi": "precomputed"}
LABEL = "vital_status_12"
CANDIDATES = [
    {"clinical": "text_minilm", "normalize": "zscore", "sampler": "weighted"},
    {"clinical": "tabular", "normalize": "zscore", "sampler": "weighted"},
    {"clinical": "text_minilm", "normalize": "l2", "sampler": "weighted"},
    {"clinical": "tabular", "normalize": "l2", "sampler": "weighted"},
    {"clinical": "tabular", "normalize": "zscore", "sampler": "oversample"},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort-dir", type=Path, default=REPO / "results" / "mmist_ccrcc")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--ratios", type=float, nargs=3, default=(0.7, 0.1, 0.2))
    args = ap.parse_args()
    if not (args.cohort_dir / "manifest.parquet").exists():
        sys.exit(f"no MMIST-ccRCC stores in {args.cohort_dir}: build them first")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    print(f"# MMARE on MMIST-ccRCC ({LABEL}), natural missingness, {args.seeds} stratified "
          f"splits {tuple(args.ratios)}; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, CPU, 1 thread")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in range(args.seeds):
            make_split(args.cohort_dir, LABEL, seed, args.ratios, tmp / f"split{seed}.parquet")
            make_mask(args.cohort_dir, "natural", 0.0, seed, tmp / f"mask{seed}.parquet")
        for cand in CANDIDATES:
            start = time.perf_counter()
            scores = {"val_auc": [], "val_bacc": [], "test_auc": [], "test_bacc": []}
            for seed in range(args.seeds):
                r = run_experiment(
                    args.cohort_dir, {**IMAGING, "clinical": cand["clinical"]}, LABEL,
                    {"type": "mmare", "sampler": cand["sampler"]}, tmp / f"split{seed}.parquet",
                    tmp / f"mask{seed}.parquet", tmp / "run" / f"{len(rows)}-{seed}", seed=seed,
                    meta={}, normalize=cand["normalize"], evaluate_subsets=False)
                for split in ("val", "test"):
                    scores[f"{split}_auc"].append(r[split]["auc"])
                    scores[f"{split}_bacc"].append(r[split]["balanced_accuracy"])
            rows.append((cand, scores, time.perf_counter() - start))
    best = max(rows, key=lambda row: statistics.mean(row[1]["val_auc"]))
    print("| clinical | normalize | sampler | val AUC | val bAcc | test AUC | test bAcc | s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for cand, scores, secs in rows:
        cells = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
                 for v in scores.values()]
        mark = " ← chosen (best validation AUC)" if cand is best[0] else ""
        print(f"| {cand['clinical']} | {cand['normalize']} | {cand['sampler']} | "
              + " | ".join(cells) + f" | {secs:.0f} |{mark}")


if __name__ == "__main__":
    main()
