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


onerror:
    # Snakemake removed the outputs of the jobs it reran, not the report built from them
    import sys
    from mmpipe.report.stale import mark_stale_report

    for cohort in config["run_cohorts"]:
        if "benchmark" in COHORTS[cohort]:
            report = layout(cohort).report()
            missing = mark_stale_report(report, training_outputs(cohort))
            if missing:
                print(
                    f"{report} is marked stale (STALE.md): "
                    f"{len(missing)} of the runs it was built from are not on disk "
                    "or were trained after it",
                    file=sys.stderr,
                )


rule all:
    default_target: True
    input:
        all_outputs(),
