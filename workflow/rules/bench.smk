# Stage 2: shared splits and masks, then the training jobs. Under `train_jobs: cell` (the
# default) one job per (feature set, method, scenario, rate) trains every seed of that cell
# in one process (a run trains in seconds; a job's start-up costs as much). Under
# `train_jobs: method` one job per (feature set, method) trains all of its cells, same
# layout on disk. A job's params hold exactly its method's settings, so changing one
# method's hyper-parameter reruns only its jobs. They read the manifest's subjects, label,
# split and modality presence (`benchmark_view`), so a rebuild for a clinical field redraws
# no split and no mask.


rule split:
    input:
        unpack(checkpointed_manifest),
    output:
        L.split("{seed}"),
    log:
        L.log("split", "seed{seed}"),
    benchmark:
        L.benchmark("split", "seed{seed}")
    priority: 1  # short, and every training job waits on it
    conda:
        "../../envs/bench.yaml"
    params:
        split=lambda w: mmparams.split_params(config, w.cohort),
        manifest=benchmark_view,
    script:
        "../scripts/split.py"


rule mask:
    input:
        unpack(checkpointed_manifest),
        unpack(mask_inputs),
    output:
        L.mask("{scenario}", "{rate}", "{seed}"),
    log:
        L.log("mask", "{scenario}-{rate}-seed{seed}"),
    benchmark:
        L.benchmark("mask", "{scenario}-{rate}-seed{seed}")
    priority: 1  # short, and every training job waits on it
    conda:
        "../../envs/bench.yaml"
    params:
        mask=lambda w: mmparams.mask_params(config, w.cohort, w.scenario),
        manifest=benchmark_view,
    script:
        "../scripts/mask.py"


rule train:
    input:
        unpack(checkpointed_manifest),
        unpack(train_inputs),
    output:
        directory(L.cell("{feature_set}", "{method}", "{scenario}", "{rate}")),
        touch(L.train_job_done("{feature_set}", "{method}", "{scenario}", "{rate}")),
    log:
        L.log("train", "{feature_set}/{method}/{scenario}-{rate}"),
    benchmark:
        L.benchmark("train", "{feature_set}/{method}/{scenario}-{rate}")
    conda:
        "../../envs/bench.yaml"
    threads: 1
    # a GPU slot only when the config names CUDA: `device: cuda` on a SLURM profile sent
    # every training job to the CPU partition, where it stopped (no CUDA there)
    resources:
        gpu=train_gpus,
    params:
        train=lambda w: mmparams.train_params(config, w.cohort, w.feature_set, w.method),
        stores=lambda w: mmparams.store_params(config, w.cohort, w.feature_set),
        cells=cell_list,
        manifest=benchmark_view,
    script:
        "../scripts/train.py"


use rule train as train_method with:
    output:
        directory(L.method_runs("{feature_set}", "{method}")),
        touch(L.train_job_done("{feature_set}", "{method}")),
    log:
        L.log("train", "{feature_set}/{method}"),
    benchmark:
        L.benchmark("train", "{feature_set}/{method}")
