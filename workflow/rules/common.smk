# Config validation, wildcard constraints and input functions. No logic lives in
# the rules: they pass parameters to the mmpipe library.
import sys

sys.path.insert(0, workflow.basedir)  # `mmpipe` importable without installation

from mmpipe import config as mmconfig
from mmpipe.bench.missingness import NEEDS_SPLIT
from mmpipe.config import GPU_ENCODERS

mmconfig.validate_config(config)

RESULTS = config["results"]
COHORTS = config["cohorts"]
ENCODERS = config["encoders"]


wildcard_constraints:
    cohort="[A-Za-z0-9_-]+",
    modality="[A-Za-z0-9_-]+",
    encoder="[A-Za-z0-9_-]+",
    shard=r"\d+",


def modality_kind(cohort, modality):
    return COHORTS[cohort]["modalities"][modality]["kind"]


def manifest_files(cohort):
    base = f"{RESULTS}/{cohort}"
    return {
        "manifest": f"{base}/manifest.parquet",
        "meta": f"{base}/manifest.json",
        "adapter_qc": f"{base}/qc/adapter.parquet",
    }


def manifest_inputs(wildcards):
    """Raw inputs the adapter reads: the generated demo cohort, or the user's CSV."""
    cohort = COHORTS[wildcards.cohort]
    if cohort["adapter"] == "demo":
        return {"raw": f"{RESULTS}/{wildcards.cohort}/raw"}
    if cohort["adapter"] == "csv":
        return {"csv": cohort["csv"]}
    return {}


def shard_dirs(cohort, modality):
    kind = modality_kind(cohort, modality)
    if kind == "dicom":
        n, sub = config["shards"]["dicom"], "volumes"
    elif kind == "slide":
        n, sub = config["shards"]["slide"], "tiles"
    else:
        return []
    return [f"{RESULTS}/{cohort}/preprocess/{modality}/{sub}/shard{k}" for k in range(n)]


def encode_inputs(wildcards):
    inputs = manifest_files(wildcards.cohort)
    shards = shard_dirs(wildcards.cohort, wildcards.modality)
    if shards:
        inputs["shards"] = shards
    if ENCODERS[wildcards.encoder]["type"] == "text":
        inputs["prompts"] = (
            f"{RESULTS}/{wildcards.cohort}/preprocess/{wildcards.modality}/prompts.parquet"
        )
    return inputs


def store_path(cohort, modality, encoder):
    return f"{RESULTS}/{cohort}/features/{modality}/{encoder}.zarr"


def cohort_stores(cohort):
    return [
        store_path(cohort, modality, encoder)
        for modality, spec in COHORTS[cohort]["modalities"].items()
        for encoder in spec["encoders"]
    ]


def encode_priority(wildcards):
    """Stores a benchmark feature set reads come first: training waits on them, not on
    a store no feature set reads (the demo's VGG11 slices)."""
    bench = COHORTS[wildcards.cohort].get("benchmark") or {}
    used = {(m, e) for fs in bench.get("feature_sets", {}).values() for m, e in fs.items()}
    return 1 if (wildcards.modality, wildcards.encoder) in used else 0


def encoder_gpus(wildcards):
    return 1 if ENCODERS[wildcards.encoder]["type"] in GPU_ENCODERS else 0


def all_outputs():
    outputs = []
    for cohort in config["run_cohorts"]:
        outputs += list(manifest_files(cohort).values())
        outputs += cohort_stores(cohort)
        outputs.append(f"{RESULTS}/{cohort}/qc.parquet")
        if "benchmark" in COHORTS[cohort]:
            outputs.append(f"{RESULTS}/{cohort}/report")
    return outputs


wildcard_constraints:
    feature_set="[A-Za-z0-9_-]+",
    method="[A-Za-z0-9_-]+",
    scenario="natural|mcar|completeness|testmiss",
    rate=r"[0-9.]+",
    seed=r"\d+",


def mask_inputs(wildcards):
    """The manifest; and the seed's split where the scenario acts on the test split only."""
    w = wildcards
    inputs = dict(manifest_files(w.cohort))
    if w.scenario in NEEDS_SPLIT:
        inputs["split"] = f"{RESULTS}/{w.cohort}/splits/seed{w.seed}.parquet"
    return inputs


def cohort_seeds(cohort):
    return mmconfig.benchmark_settings(config, cohort)["seeds"]


def cell_list(w):
    """The ``{scenario}-{rate}`` cells a training job trains: its own under
    ``train_jobs: cell``, every cell of its (feature set, method) under ``method``."""
    if "scenario" in w.keys():
        return [f"{w.scenario}-{w.rate}"]
    return mmconfig.run_cells(config, w.cohort, w.feature_set, w.method)


def train_inputs(wildcards):
    """The stores of the feature set, and the split of every seed and the mask of every
    (cell, seed), cell by cell."""
    w = wildcards
    bench = COHORTS[w.cohort]["benchmark"]
    feature_set = bench["feature_sets"][w.feature_set]
    seeds = cohort_seeds(w.cohort)
    return {
        **manifest_files(w.cohort),
        "stores": [store_path(w.cohort, m, e) for m, e in feature_set.items()],
        "splits": [f"{RESULTS}/{w.cohort}/splits/seed{s}.parquet" for s in seeds],
        "masks": [
            f"{RESULTS}/{w.cohort}/masks/{cell}/seed{s}.parquet"
            for cell in cell_list(w)
            for s in seeds
        ],
    }


def cohort_runs(cohort):
    """(feature set, method) of every run of the cohort's benchmark."""
    if "benchmark" not in COHORTS[cohort]:
        return []
    return [(r["feature_set"], r["method"]) for r in mmconfig.benchmark_runs(config, cohort)]


def cohort_cells(cohort):
    """Every ``runs/{feature set}/{method}/{scenario}-{rate}`` directory of the cohort's
    benchmark; each holds one run per seed."""
    return [
        f"{RESULTS}/{cohort}/runs/{fs}/{method}/{cell}"
        for fs, method in cohort_runs(cohort)
        for cell in mmconfig.run_cells(config, cohort, fs, method)
    ]


def training_outputs(cohort):
    """What the cohort's training jobs write: its cells, or one directory per
    (feature set, method) holding them (``train_jobs: method``)."""
    if mmconfig.benchmark_settings(config, cohort)["train_jobs"] == "cell":
        return cohort_cells(cohort)
    return [f"{RESULTS}/{cohort}/runs/{fs}/{method}" for fs, method in cohort_runs(cohort)]
