rule benchmark_report:
    input:
        runs=lambda w: training_outputs(w.cohort),
    output:
        report(
            directory(f"{RESULTS}/{{cohort}}/report"),
            patterns=["{name}.png", "{name}.csv"],
            caption="../report/benchmark.rst",
            category="Benchmark",
            subcategory="{cohort}",
        ),
    params:
        scenarios=lambda w: mmconfig.benchmark_settings(config, w.cohort)["scenarios"],
        cells=lambda w: cohort_cells(w.cohort),
        seeds=lambda w: cohort_seeds(w.cohort),
        label=lambda w: mmconfig.benchmark_settings(config, w.cohort)["label"],
        code=mmconfig.code_version("report"),
    log:
        f"{RESULTS}/{{cohort}}/logs/benchmark_report.log",
    conda:
        "../../envs/bench.yaml"
    script:
        "../scripts/benchmark_report.py"
