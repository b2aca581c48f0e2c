rule demo_cohort:
    output:
        directory(L.raw()),
    log:
        L.log("demo_cohort"),
    benchmark:
        L.benchmark("demo_cohort")
    conda:
        "../../envs/cohort.yaml"
    params:
        demo=lambda w: mmparams.demo_params(config, w.cohort),
    script:
        "../scripts/demo_cohort.py"


rule manifest:
    input:
        unpack(manifest_inputs),
    output:
        **L.manifest_files(),
    log:
        L.log("manifest"),
    conda:
        "../../envs/cohort.yaml"
    params:
        cohort=lambda w: mmparams.manifest_params(config, w.cohort),
    script:
        "../scripts/manifest.py"
