# Its output is the summary the generator writes last, not the folder: Snakemake deletes
# a directory() output before the job, and the generator rewrites only the files an
# option changes (their mtimes, in the manifest's view digests, decide what reruns).
rule demo_cohort:
    output:
        L.raw_summary(),
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
    benchmark:
        L.benchmark("manifest")
    conda:
        "../../envs/cohort.yaml"
    params:
        cohort=lambda w: mmparams.manifest_params(config, w.cohort),
    script:
        "../scripts/manifest.py"
