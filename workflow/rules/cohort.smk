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


# A checkpoint: the jobs after it read it as `ancient` and are rerun by the digest of the
# part they read (a modality's, or the benchmark's: `checkpointed_manifest` in
# common.smk), known once it is written.
checkpoint manifest:
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
