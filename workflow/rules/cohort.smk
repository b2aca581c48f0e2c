rule demo_cohort:
    output:
        directory(f"{RESULTS}/{{cohort}}/raw"),
    params:
        demo=lambda w: mmconfig.demo_params(config, w.cohort),
    log:
        f"{RESULTS}/{{cohort}}/logs/demo_cohort.log",
    benchmark:
        f"{RESULTS}/{{cohort}}/benchmarks/demo_cohort.tsv"
    conda:
        "../../envs/cohort.yaml"
    script:
        "../scripts/demo_cohort.py"


rule manifest:
    input:
        unpack(manifest_inputs),
    output:
        **manifest_files("{cohort}"),
    params:
        cohort=lambda w: mmconfig.manifest_params(config, w.cohort),
    log:
        f"{RESULTS}/{{cohort}}/logs/manifest.log",
    conda:
        "../../envs/cohort.yaml"
    script:
        "../scripts/manifest.py"
