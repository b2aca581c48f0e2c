# One job per (cohort, modality, encoder) store. Network encoders ask for one GPU:
# run locally with `--resources gpu=N` to let at most N of them share the machine's
# GPUs (without it the gpu resource is not limited); the SLURM profile maps it to
# a GPU request. One thread per job: torch gains about 1.5x from a second CPU thread,
# so on a CPU machine two encoders side by side finish sooner than one after the
# other; give a lone long job more with `--set-threads encode=N` (the SLURM profile does).
# The device and the batch size are read from the config by the job, not passed as
# params: they change how the job runs, not the store it writes, so they rerun nothing.


rule encode:
    input:
        unpack(encode_inputs),
    output:
        directory(L.store("{modality}", "{encoder}")),
    log:
        L.log("encode", "{modality}-{encoder}"),
    benchmark:
        L.benchmark("encode", "{modality}-{encoder}")
    priority: encode_priority
    conda:
        "../../envs/encode.yaml"
    threads: 1
    resources:
        gpu=encoder_gpus,
    params:
        encoder=lambda w: mmparams.encoder_params(config, w.cohort, w.modality, w.encoder),
    script:
        "../scripts/encode.py"
