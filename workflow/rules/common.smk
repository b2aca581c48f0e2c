# Config validation, wildcard constraints and input functions. No logic lives in the
# rules: paths come from mmpipe.layout (the one owner of the results layout), parameter
# sets from mmpipe.params (what each output depends on, canonical), settings from
# mmpipe.config.
import os
import re
import sys

sys.path.insert(0, workflow.basedir)  # `mmpipe` importable without installation

from mmpipe import config as mmconfig
from mmpipe import cohorts as mmcohorts
from mmpipe import params as mmparams
from mmpipe.bench.missingness import NEEDS_SPLIT, SCENARIOS
from mmpipe.encoders.device import names_cuda
from mmpipe.encoders.registry import get_encoder_type
from mmpipe.layout import NAME_PATTERN, REPORT_PAGE, CohortLayout, cell_name, parse_cell
from mmpipe.preprocess.masks import reads_segmented_masks

mmconfig.check_config_files(workflow.configfiles)
mmconfig.validate_config(config)

RESULTS = config["results"]
COHORTS = config["cohorts"]
ENCODERS = config["encoders"]


def layout(cohort):
    return CohortLayout.of(RESULTS, cohort)


# the rules' path patterns: the layout with wildcards
L = layout("{cohort}")


wildcard_constraints:
    cohort=NAME_PATTERN,
    modality=NAME_PATTERN,
    encoder=NAME_PATTERN,
    shard=r"\d+",
    feature_set=NAME_PATTERN,
    method=NAME_PATTERN,
    scenario="|".join(SCENARIOS),
    rate=r"[0-9]+\.[0-9]+",
    seed=r"\d+",


def manifest_inputs(wildcards):
    """Raw inputs the adapter reads: the generated demo cohort, the user's CSV (and the
    split files of its own split, which the manifest carries), or the tables of a
    dataset's download (``mmpipe.cohorts.source_tables``)."""
    cohort = COHORTS[wildcards.cohort]
    if cohort["adapter"] == "demo":
        return {"raw": layout(wildcards.cohort).raw_summary()}
    if cohort["adapter"] == "csv":
        # `~` expanded as the adapter reads them (mmpipe.cohorts.manifest.config_path); any
        # other path as written, so an existing workflow sees the same inputs
        split_files = (cohort.get("split") or {}).get("files", {})
        files = {"csv": cohort["csv"], **{f"split_{k}": p for k, p in split_files.items()}}
        return {key: os.path.expanduser(path) for key, path in files.items()}
    return {f"table_{i}": str(p) for i, p in enumerate(mmcohorts.source_tables(cohort))}


def checkpointed_manifest(wildcards):
    """The manifest files as the jobs that read part of them (shards, prompts, masks,
    stores; splits, scenario masks, training) take them: once the ``manifest`` checkpoint
    is done, as ``ancient``. Their ``manifest`` parameter, the digest of the part they
    read (``manifest_view``, ``benchmark_view``), reruns them, not the manifest's mtime:
    a manifest rebuilt for the table's fields leaves every image store, and every split
    and mask unless a subject's record comes or goes; one for the benchmark's label
    redraws the splits and reruns no store. Only this input (and the report's,
    ``report_inputs``) waits for the checkpoint, and the default target names every
    job's output, so a dry run still plans every job."""
    checkpoints.manifest.get(cohort=wildcards.cohort)
    return {k: ancient(v) for k, v in layout(wildcards.cohort).manifest_files().items()}


def manifest_view(wildcards):
    """A modality's rows, QC, spec and the stamps of its files (its masks' only for an
    encoder that reads them)."""
    return mmparams.manifest_view(
        config, wildcards.cohort, wildcards.modality, getattr(wildcards, "encoder", None)
    )


def benchmark_view(wildcards):
    """The subjects, the label, the split and each subject's modalities."""
    return mmparams.benchmark_view(config, wildcards.cohort)


def encode_inputs(wildcards):
    """The store's inputs other than the manifest (``checkpointed_manifest``)."""
    w = wildcards
    return layout(w.cohort).encode_inputs(config, w.modality, w.encoder, manifest=False)


def segment_inputs(wildcards):
    """A dicom modality's shards (masks are made on their NIfTI); the manifest comes
    from ``checkpointed_manifest``."""
    shards = layout(wildcards.cohort).modality_shards(config, wildcards.modality)
    return {"shards": shards} if shards else {}


def cohort_stores(cohort):
    return [
        layout(cohort).store(modality, encoder)
        for modality, spec in COHORTS[cohort]["modalities"].items()
        for encoder in spec["encoders"]
    ]


def encode_priority(wildcards):
    """Stores a benchmark feature set reads come first: training waits on them, not on
    a store no feature set reads (the demo's VGG11 slices)."""
    bench = COHORTS[wildcards.cohort].get("benchmark") or {}
    used = {(m, e) for fs in bench.get("feature_sets", {}).values() for m, e in fs.items()}
    return 1 if (wildcards.modality, wildcards.encoder) in used else 0


def encoder_names(network):
    """The ``encoder`` wildcard of ``encode`` (``network``: the config's encoders whose
    type runs a network, the registry's ``needs_gpu``) or of ``encode_cpu`` (the others),
    so each store has one rule and a profile sizes the two kinds apart."""
    names = [
        re.escape(n)
        for n, e in ENCODERS.items()
        if get_encoder_type(e["type"]).needs_gpu == network
    ]
    return "|".join(names) or "(?!)"  # an empty kind matches nothing


def encode_gpus(wildcards):
    """A network encoder's GPU slot: one unless the config runs on the CPU (``device:
    cpu``), where the job held a GPU it never used, and a cluster without a GPU
    partition could not place it. Under ``auto`` it asks, so a profile sends it to a GPU."""
    return int(str(config["device"]).strip().lower() != "cpu")


def train_gpus(wildcards):
    """A training job's GPU slot: one when the config names CUDA (``device: cuda``) and
    the method trains with torch; a scikit-learn baseline never uses it. Under ``auto``
    a job asks for none and trains on the CPU (``training_device`` in bench/run.py)."""
    from mmpipe.methods.hparams import method_kind

    cuda = names_cuda(config["device"])
    # the run's own method config: single-modality runs (single_<modality>) are no entry
    # of config["methods"]
    run = mmconfig.benchmark_run(config, wildcards.cohort, wildcards.feature_set, wildcards.method)
    return int(cuda and method_kind(run["config"]["type"]) == "torch")


def all_outputs():
    """The default target: every cohort's stores, QC, every training output (each cell,
    or each method's folder of cells under ``train_jobs: method``) and its job's flag,
    the report, and the outputs whose settings no later job's params carry
    (``kept_intermediates``)."""
    outputs = []
    for cohort in config["run_cohorts"]:
        lay = layout(cohort)
        outputs += list(lay.manifest_files().values())
        outputs += cohort_stores(cohort)
        outputs.append(lay.cohort_qc())
        outputs += kept_intermediates(cohort)
        if "benchmark" in COHORTS[cohort]:
            outputs += training_outputs(cohort) + training_job_flags(cohort)
            outputs.append(lay.report())
    return outputs


def kept_intermediates(cohort):
    """The demo's generated cohort, the TotalSegmentator masks the encoders read, and
    the benchmark's splits and scenario masks: the jobs that read them do not carry their
    settings. When such a job fails after a change of them, Snakemake records the new
    settings all the same and removes its output, and it rebuilds a removed intermediate
    only when a later job is due (snakemake#3808, #1978): the next run had "Nothing to be
    done", the runs of the old split standing. Asked for here, a removed one is rebuilt,
    and what reads it after it."""
    lay = layout(cohort)
    spec = COHORTS[cohort]
    outputs = [lay.raw_summary()] if spec["adapter"] == "demo" else []
    outputs += sorted(
        {
            lay.masks(modality)
            for modality, mod in spec["modalities"].items()
            for encoder in mod.get("encoders", [])
            if reads_segmented_masks(ENCODERS[encoder], mod)
        },
        key=str,
    )
    if "benchmark" in spec:
        stores = set(cohort_stores(cohort))
        outputs += [path for path in training_inputs(cohort) if path not in stores]
    return outputs


def mask_inputs(wildcards):
    """The seed's split where the scenario acts on the test split only (the manifest
    comes from ``checkpointed_manifest``)."""
    w = wildcards
    return {"split": layout(w.cohort).split(w.seed)} if w.scenario in NEEDS_SPLIT else {}


def cohort_seeds(cohort):
    return mmconfig.benchmark_settings(config, cohort)["seeds"]


def cell_list(w):
    """The ``{scenario}-{rate}`` cells a training job trains: its own under
    ``train_jobs: cell``, every cell of its (feature set, method) under ``method``."""
    if "scenario" in w.keys():
        return [cell_name(w.scenario, w.rate)]
    return mmconfig.run_cells(config, w.cohort, w.feature_set, w.method)


def train_inputs(wildcards):
    """The stores of the feature set, the split of every seed and the mask of every
    (cell, seed); the manifest comes from ``checkpointed_manifest``. The job finds each by
    its path in the layout, not by its position."""
    w = wildcards
    return training_reads(w.cohort, w.feature_set, cell_list(w))


def training_reads(cohort, feature_set, cells, seeds=None):
    """What a training job of ``feature_set`` over ``cells`` reads, by kind (of
    ``seeds``, by default the cohort's)."""
    lay = layout(cohort)
    modalities = COHORTS[cohort]["benchmark"]["feature_sets"][feature_set]
    seeds = cohort_seeds(cohort) if seeds is None else seeds
    return {
        "stores": [lay.store(m, e) for m, e in modalities.items()],
        "splits": [lay.split(s) for s in seeds],
        "masks": [lay.mask(*parse_cell(cell), s) for cell in cells for s in seeds],
    }


def cohort_runs(cohort):
    """(feature set, method) of every run of the cohort's benchmark."""
    if "benchmark" not in COHORTS[cohort]:
        return []
    return [(r["feature_set"], r["method"]) for r in mmconfig.benchmark_runs(config, cohort)]


def cohort_cell_keys(cohort):
    """(feature set, method, scenario, rate) of every cell of the cohort's benchmark."""
    settings = mmconfig.benchmark_settings(config, cohort)
    return [
        (run["feature_set"], run["method"], *parse_cell(cell))
        for run in mmconfig.benchmark_runs(config, cohort)
        for cell in mmconfig.cells_of(settings, run)
    ]


def cohort_cells(cohort):
    """Every cell directory of the cohort's benchmark; each holds one run per seed."""
    if "benchmark" not in COHORTS[cohort]:
        return []
    lay = layout(cohort)
    return [lay.cell(*key) for key in cohort_cell_keys(cohort)]


def report_inputs(wildcards):
    """The cohort's training outputs, planned again once the ``manifest`` checkpoint is
    done: a rebuilt manifest reruns no training job whose view of it is unchanged, and
    without the wait the report, planned while those jobs still looked due, reran with
    them gone (a stray file in a download reran it)."""
    checkpoints.manifest.get(cohort=wildcards.cohort)
    return training_outputs(wildcards.cohort)


def training_outputs(cohort):
    """What the cohort's training jobs write: its cells, or one directory per
    (feature set, method) holding them (``train_jobs: method``)."""
    if mmconfig.benchmark_settings(config, cohort)["train_jobs"] == "cell":
        return cohort_cells(cohort)
    return [layout(cohort).method_runs(fs, method) for fs, method in cohort_runs(cohort)]


def training_inputs(cohort):
    """The stores, splits and masks the cohort's training jobs read (``training_reads``)."""
    settings = mmconfig.benchmark_settings(config, cohort)
    return sorted(
        {
            path
            for run in mmconfig.benchmark_runs(config, cohort)
            for paths in training_reads(
                cohort, run["feature_set"], mmconfig.cells_of(settings, run)
            ).values()
            for path in paths
        },
        key=str,
    )


def training_job_flags(cohort):
    """The flags of the cohort's training jobs (``CohortLayout.train_job_done``):
    Snakemake checks a job's outputs only as far as they are asked for, so the runs
    alone, there from the other ``train_jobs`` mode, would not run a job whose flag is
    missing. The default target asks for them too: asked for by the report alone, they
    were looked at only when the report had to be rebuilt."""
    lay = layout(cohort)
    if mmconfig.benchmark_settings(config, cohort)["train_jobs"] == "method":
        return [lay.train_job_done(fs, method) for fs, method in cohort_runs(cohort)]
    return [lay.train_job_done(*key) for key in cohort_cell_keys(cohort)]


def report_job_flags(wildcards):
    checkpoints.manifest.get(cohort=wildcards.cohort)
    return training_job_flags(wildcards.cohort)


def watched_cohorts():
    """The cohorts whose report and stage-1 summary the hooks mark: the run's, and every
    configured cohort with either on disk. A target of another cohort's output (the
    ``snakemake --force <path>`` a refusal prints) rebuilds it without that cohort in
    ``run_cohorts``, and its report went on describing the store before, unmarked."""
    return [
        c
        for c in COHORTS
        if c in config["run_cohorts"]
        or (layout(c).report() / REPORT_PAGE).is_file()
        or layout(c).stage1_summary().is_file()
    ]


def benchmarked(cohorts):
    """Those of ``cohorts`` that have a benchmark, hence a report."""
    return [c for c in cohorts if "benchmark" in COHORTS[c]]


def mark_reports_under_way():
    # onerror and onsuccess do not run when Snakemake itself is killed
    from mmpipe.report.stale import mark_summary_under_way, mark_under_way

    watched = watched_cohorts()
    for cohort in benchmarked(watched):
        mark_under_way(layout(cohort).report())
    for cohort in watched:
        mark_summary_under_way(layout(cohort).stage1_summary())


def built_view(cohort):
    """The cohort's ``benchmark_view`` now, or None where the manifest gives none to
    compare a run's with (not built, unreadable, without the label)."""
    from mmpipe.cohorts.benchmark_view import NO_LABEL
    from mmpipe.cohorts.manifest_digest import NOT_BUILT, UNREADABLE

    view = mmparams.benchmark_view(config, cohort)
    return None if view in (NOT_BUILT, UNREADABLE, NO_LABEL) else view


def reads_of_reported_runs(cohort, report_dir):
    """The stores, splits and masks the runs a report was built from read, as the config
    names them (a run of a feature set the config no longer has: its split and mask)."""
    from mmpipe.report.stale import report_cells

    lay = layout(cohort)
    reads = []
    for feature_set, scenario, rate, seed in report_cells(report_dir):
        if feature_set in COHORTS[cohort]["benchmark"]["feature_sets"]:
            cells = [cell_name(scenario, rate)]
            for paths in training_reads(cohort, feature_set, cells, [seed]).values():
                reads += paths
        else:  # its stores are no longer named; its split and mask are
            reads += [lay.split(seed), lay.mask(scenario, rate, seed)]
    return reads


def mark_stale_reports(cause):
    # Snakemake removes the outputs of the jobs it reruns, not the report built from them
    import sys
    from mmpipe.report.stale import (
        mark_stale_report,
        mark_stale_summary,
        report_built_from,
        spoken_for,
        summary_described,
    )

    watched = watched_cohorts()
    for cohort in watched:
        lay = layout(cohort)
        stores = cohort_stores(cohort)
        if cohort not in config["run_cohorts"]:
            described = [lay.store(*key) for key in summary_described(lay.cohort_qc())]
            stores = spoken_for(stores, described)
        missing = mark_stale_summary(
            lay.stage1_summary(),
            lay.cohort_qc(),
            stores,
            cause,
            adapter_qc=lay.adapter_qc(),
        )
        if missing:
            print(
                f"{lay.stage1_summary()} is marked stale: of the stores it describes and "
                f"the manifest's QC table, {len(missing)} are not on disk or changed since",
                file=sys.stderr,
            )

    for cohort in benchmarked(watched):
        report_dir = layout(cohort).report()
        outputs, inputs = training_outputs(cohort), training_inputs(cohort)
        if cohort not in config["run_cohorts"]:
            outputs = spoken_for(outputs, report_built_from(report_dir))
            inputs = spoken_for(inputs, reads_of_reported_runs(cohort, report_dir))
        missing = mark_stale_report(
            report_dir,
            outputs,
            cause,
            inputs,
            view=built_view(cohort),
        )
        if missing:
            print(
                f"{report_dir} is marked stale (STALE.md): "
                f"{len(missing)} of the runs it was built from, or of what they read, "
                "are not on disk or were written after it, or the manifest changed "
                "what they read of it",
                file=sys.stderr,
            )
