# One job per (cohort, modality, encoder) store, in one of two rules by the encoder's
# type (the registry's needs_gpu): `encode` for a type that runs a network, which asks
# for one GPU (none under `device: cpu`), and `encode_cpu` for the others (tabular encoding, precomputed and tile
# features), so a cluster profile gives the networks their GPU, CPUs and memory and the
# table readers a plain CPU slot. Locally, `--resources gpu=N` lets at most N network
# encoders share the machine's GPUs (without it the gpu resource is not limited). One
# thread per job: torch gains about 1.5x from a second CPU thread, so on a CPU machine
# two encoders side by side finish sooner than one after the other; give a lone long job
# more with `--set-threads encode=N` (the SLURM profile does).
# The device and the batch size are read from the config by the job, not passed as
# params: they change how the job runs, not the store it writes, so they rerun nothing.


rule encode:
    input:
        unpack(checkpointed_manifest),
        unpack(encode_inputs),
    output:
        directory(L.store("{modality}", "{encoder}")),
    log:
        L.log("encode", "{modality}/{encoder}"),
    benchmark:
        L.benchmark("encode", "{modality}/{encoder}")
    wildcard_constraints:
        encoder=encoder_names(network=True),
    priority: encode_priority
    conda:
        "../../envs/encode.yaml"
    threads: 1
    resources:
        gpu=encode_gpus,
    params:
        encoder=lambda w: mmparams.encoder_params(config, w.cohort, w.modality, w.encoder),
        manifest=manifest_view,
    script:
        "../scripts/encode.py"


use rule encode as encode_cpu with:
    wildcard_constraints:
        encoder=encoder_names(network=False),
    resources:
        gpu=0,
