# One job per (cohort, modality, encoder) store. Network encoders ask for one GPU:
# run locally with `--resources gpu=N` to let at most N of them share the machine's
# GPUs (without it the gpu resource is not limited); the SLURM profile maps it to
# a GPU request.


rule encode:
    input:
        unpack(encode_inputs),
    output:
        directory(f"{RESULTS}/{{cohort}}/features/{{modality}}/{{encoder}}.zarr"),
    params:
        encoder=lambda w: mmconfig.encoder_params(config, w.cohort, w.modality, w.encoder),
        device=config["device"],
    resources:
        gpu=encoder_gpus,
    threads: 2
    log:
        f"{RESULTS}/{{cohort}}/logs/encode/{{modality}}-{{encoder}}.log",
    benchmark:
        f"{RESULTS}/{{cohort}}/benchmarks/encode/{{modality}}-{{encoder}}.tsv"
    conda:
        "../../envs/encode.yaml"
    script:
        "../scripts/encode.py"
