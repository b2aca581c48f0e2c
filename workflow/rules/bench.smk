# Stage 2: shared splits and masks, then one training job per
# (feature set, method, scenario, rate) that trains every seed of that cell in one process
# (a run trains in seconds; a job's start-up costs as much). A job's params hold exactly
# its method's settings, so changing one method's hyper-parameter reruns only its jobs.


rule split:
    input:
        **manifest_files("{cohort}"),
    output:
        f"{RESULTS}/{{cohort}}/splits/seed{{seed}}.parquet",
    params:
        split=lambda w: mmconfig.split_params(config, w.cohort),
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
