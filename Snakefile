# mmpipe: multimodal learning with missing modalities, from raw cohorts to results.
# Stage 1: cohorts -> manifest -> preprocessing -> frozen encoders -> Zarr feature stores.
# Stage 2: splits and masks -> one training job per run -> tables, plots and a report.
# Every rule is a thin call into the mmpipe library (workflow/scripts/*.py).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/report.smk"


onstart:
    # what killed jobs of earlier runs left (temporary siblings of outputs) goes first
    from mmpipe.fsutil import sweep_debris

    sweep_debris(RESULTS)
    # each report is marked until this run ends and finds it agrees with its runs: killed,
    # Snakemake runs no handler, after it may have removed a run's outputs
    mark_reports_under_way()


onerror:
    from mmpipe.report.stale import FAILED

    mark_stale_reports(FAILED)


onsuccess:
    # a target or --until short of the report: its runs were retrained, it was not
    from mmpipe.report.stale import NOT_REBUILT

    mark_stale_reports(NOT_REBUILT)


rule all:
    default_target: True
    input:
        all_outputs(),
