# Per-shard preprocessing: a fixed number of jobs per modality whatever the cohort
# size (see mmpipe/shards.py); on a cluster the shards run in parallel and `group:`
# bundles them with nothing else. They run before other ready jobs (`priority`): each is
# short and unlocks an encoder.


rule dicom_to_nifti:
    input:
        **manifest_files("{cohort}"),
    output:
        directory(f"{RESULTS}/{{cohort}}/preprocess/{{modality}}/volumes/shard{{shard}}"),
    params:
        dicom=lambda w: mmconfig.dicom_params(config),
        n_shards=config["shards"]["dicom"],
    priority: 2
    log:
        f"{RESULTS}/{{cohort}}/logs/dicom_to_nifti/{{modality}}-shard{{shard}}.log",
    benchmark:
        f"{RESULTS}/{{cohort}}/benchmarks/dicom_to_nifti/{{modality}}-shard{{shard}}.tsv"
    group:
        "preprocess"
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/dicom_to_nifti.py"


rule tile_slides:
    input:
        **manifest_files("{cohort}"),
    output:
        directory(f"{RESULTS}/{{cohort}}/preprocess/{{modality}}/tiles/shard{{shard}}"),
    params:
        tiling=lambda w: mmconfig.tiling_params(config),
        n_shards=config["shards"]["slide"],
    priority: 2
    log:
        f"{RESULTS}/{{cohort}}/logs/tile_slides/{{modality}}-shard{{shard}}.log",
    benchmark:
        f"{RESULTS}/{{cohort}}/benchmarks/tile_slides/{{modality}}-shard{{shard}}.tsv"
    group:
        "preprocess"
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/tile_slides.py"


rule clinical_prompts:
    input:
        **manifest_files("{cohort}"),
    output:
        f"{RESULTS}/{{cohort}}/preprocess/{{modality}}/prompts.parquet",
    params:
        prompt=lambda w: mmconfig.prompt_params(config, w.cohort, w.modality),
    priority: 2
    log:
        f"{RESULTS}/{{cohort}}/logs/clinical_prompts/{{modality}}.log",
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../scripts/clinical_prompts.py"
