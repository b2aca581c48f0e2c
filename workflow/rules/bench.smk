# Stage 2: shared splits and masks, then the training jobs. Under `train_jobs: cell` (the
# default) one job per (feature set, method, scenario, rate) trains every seed of that cell
# in one process (a run trains in seconds; a job's start-up costs as much). Under
# `train_jobs: method` one job per (feature set, method) trains all of its cells, same
# layout on disk. A job's params hold exactly its method's settings, so changing one
# method's hyper-parameter reruns only its jobs.


rule split:
    input:
        **manifest_files("{cohort}"),
    output:
        f"{RESULTS}/{{cohort}}/splits/seed{{seed}}.parquet",
    params:
        split=lambda w: mmconfig.split_params(config, w.cohort),
    priority: 1  # short, and every training job waits on it
    log:
        f"{RESULTS}/{{cohort}}/logs/split/seed{{seed}}.log",
    conda:
        "../../envs/bench.yaml"
    script:
        "../scripts/split.py"


rule mask:
    input:
        unpack(mask_inputs),
    output:
        f"{RESULTS}/{{cohort}}/masks/{{scenario}}-{{rate}}/seed{{seed}}.parquet",
    params:
        mask=lambda w: mmconfig.mask_params(config, w.cohort, w.scenario),
    priority: 1  # short, and every training job waits on it
    log:
        f"{RESULTS}/{{cohort}}/logs/mask/{{scenario}}-{{rate}}-seed{{seed}}.log",
    conda:
        "../../envs/bench.yaml"
    script:
        "../scripts/mask.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        directory(
            f"{RESULTS}/{{cohort}}/runs/{{feature_set}}/{{method}}/{{scenario}}-{{rate}}"
        ),
    params:
        train=lambda w: mmconfig.train_params(config, w.cohort, w.feature_set, w.method),
        seeds=lambda w: cohort_seeds(w.cohort),
        cells=cell_list,
        device=config["device"],
    threads: 1
    log:
        f"{RESULTS}/{{cohort}}/logs/train/{{feature_set}}/{{method}}/{{scenario}}-{{rate}}.log",
    benchmark:
        f"{RESULTS}/{{cohort}}/benchmarks/train/{{feature_set}}/{{method}}/{{scenario}}-{{rate}}.tsv"
    conda:
        "../../envs/bench.yaml"
    script:
        "../scripts/train.py"


use rule train as train_method with:
    output:
        directory(f"{RESULTS}/{{cohort}}/runs/{{feature_set}}/{{method}}"),
    log:
        f"{RESULTS}/{{cohort}}/logs/train/{{feature_set}}/{{method}}.log",
    benchmark:
        f"{RESULTS}/{{cohort}}/benchmarks/train/{{feature_set}}/{{method}}.tsv"
