rule benchmark_report:
    input:
        runs=report_inputs,
        jobs=report_job_flags,
    output:
        report(
            directory(L.report()),
            # results.md opens with the per-scenario summary: the page to read first
            patterns=["{name}.md", "{name}.png", "{name}.csv"],
            caption="../report/benchmark.rst",
            category="Benchmark",
            subcategory="{cohort}",
        ),
    log:
        L.log("benchmark_report"),
    benchmark:
        L.benchmark("benchmark_report")
    conda:
        "../../envs/bench.yaml"
    params:
        report=lambda w: mmparams.report_params(config, w.cohort),
    script:
        "../scripts/benchmark_report.py"
