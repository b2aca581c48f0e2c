# Per-shard preprocessing: a fixed number of jobs per modality whatever the cohort size
# (see mmpipe/shards.py); on a cluster the shards run in parallel and `group:` bundles
# them with nothing else. They run before other ready jobs (`priority`): each is short
# and unlocks an encoder.


rule dicom_to_nifti:
    input:
        unpack(checkpointed_manifest),
    output:
        directory(L.shard("{modality}", "dicom", "{shard}")),
    log:
        L.log("dicom_to_nifti", "{modality}-shard{shard}"),
    benchmark:
        L.benchmark("dicom_to_nifti", "{modality}-shard{shard}")
    priority: 2
    group:
        "preprocess"
    conda:
        "../../envs/preprocess.yaml"
    params:
        dicom=mmparams.dicom_params(config),
        n_shards=config["shards"]["dicom"],
        manifest=manifest_view,
    script:
        "../scripts/dicom_to_nifti.py"


rule tile_slides:
    input:
        unpack(checkpointed_manifest),
    output:
        directory(L.shard("{modality}", "slide", "{shard}")),
    log:
        L.log("tile_slides", "{modality}-shard{shard}"),
    benchmark:
        L.benchmark("tile_slides", "{modality}-shard{shard}")
    priority: 2
    group:
        "preprocess"
    conda:
        "../../envs/preprocess.yaml"
    params:
        tiling=mmparams.tiling_params(config),
        n_shards=config["shards"]["slide"],
        manifest=manifest_view,
    script:
        "../scripts/tile_slides.py"


rule clinical_prompts:
    input:
        unpack(checkpointed_manifest),
    output:
        L.prompts("{modality}"),
    log:
        L.log("clinical_prompts", "{modality}"),
    benchmark:
        L.benchmark("clinical_prompts", "{modality}")
    priority: 2
    conda:
        "../../envs/preprocess.yaml"
    params:
        prompt=lambda w: mmparams.prompt_params(config, w.cohort, w.modality),
        manifest=manifest_view,
    script:
        "../scripts/clinical_prompts.py"


# TotalSegmentator masks of a volume or dicom modality whose config asks for them (`mask: {from:
# totalsegmentator}`): one job per modality, on the device `preprocess.totalsegmentator.device`
# names (a GPU slot only for `gpu`); the encoders read them for `roi_crop`
# (mmpipe/preprocess/segment.py). Its threads resample the volumes; the SLURM profile
# raises them with set-threads, as for the encoders.
rule segment:
    input:
        unpack(checkpointed_manifest),
        unpack(segment_inputs),
    output:
        directory(L.masks("{modality}")),
    log:
        L.log("segment", "{modality}"),
    benchmark:
        L.benchmark("segment", "{modality}")
    priority: 2
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        gpu=lambda w: int(config["preprocess"]["totalsegmentator"]["device"] == "gpu"),
    params:
        segment=lambda w: mmparams.segment_params(config, w.cohort, w.modality),
        kind=lambda w: COHORTS[w.cohort]["modalities"][w.modality]["kind"],
        manifest=manifest_view,
    script:
        "../scripts/segment.py"
