"""Encode one modality of one cohort with one encoder into one feature store.

This is the function behind ``mmpipe encode`` and the Snakemake ``encode`` rule:
gather every manifest subject's input, run the encoder type's loop (the registry
names it), write the Zarr store atomically with its provenance. One subject whose
input or embedding is unusable is rejected with the reason; the others are written.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

from mmpipe.encode.inputs import SubjectInput, gather_inputs, input_file
from mmpipe.encode.job import EncodeJob, SubjectWriter
from mmpipe.encoders.registry import get_encoder_type
from mmpipe.errors import InputError
from mmpipe.hashing import params_hash
from mmpipe.job_failures import check_inputs_there, check_none_went, not_there_error
from mmpipe.store import FeatureStoreWriter

log = logging.getLogger(__name__)


_NO_NETWORK = {
    "precomputed": "pre-extracted features, imported as they are",
    "tile_features": "pre-extracted tile features (CLAM, TRIDENT or STAMP), imported as they are",
    "tabular": "none: tabular encoding, no network",
}


def _attrs(cohort: str, job: EncodeJob) -> dict:
    params = job.params
    preprocessing = {k: params[k] for k in ("dicom", "tiling", "prompt", "fields", "mask")
                     if k in params}
    preprocessing["transform"] = params["config"].get("transform")
    preprocessing.update(job.preprocessing)
    attrs = {
        "cohort": cohort,
        "modality": job.modality,
        "kind": params["kind"],
        "encoder": params["encoder"],
        "encoder_type": params["config"]["type"],
        "encoder_config": params["config"],
        "weights_source": _NO_NETWORK.get(params["config"]["type"], "none (no network)"),
        "weights_sha256": None,
        "weights_random_init": False,
        **(job.weights.to_attrs() if job.weights is not None else {}),
        "preprocessing": preprocessing,
        "preprocessing_hash": params_hash(preprocessing),
        "embedding_settings": get_encoder_type(params["config"]["type"]).embedding_settings(
            params["config"]),
        "code_version": params.get("code"),
        "device": str(job.device),
        **job.attrs,
    }
    if job.bag_item_shape is not None:
        attrs["bag"] = {"coords": job.bag_coords}
    return attrs


def _log_summary(inputs: list[SubjectInput], modality: str) -> None:
    counts: dict[str, int] = {}
    for item in inputs:
        counts[item.status] = counts.get(item.status, 0) + 1
    log.info("%s: %d subjects, inputs %s", modality, len(inputs), counts)


# what MONAI imports (``import monai`` imports every submodule, each optional dependency
# it finds) and an encoding job never uses, about 5 s of its start-up together:
# Hugging Face transformers (MONAI's transchex; the text encoder runs its BERT without it,
# mmpipe.encoders.bert), the hub client MONAI's ResNet imports for downloads (mmpipe
# loads weights from a path, never from a hub), plotting (monai.visualize), signal
# processing and statistics (monai.transforms' ultrasound map, monai.metrics),
# scikit-image and scikit-learn (monai.metrics), pandas (monai.utils.profiling's tables,
# 0.3 s; mmpipe reads its tables with polars); and MONAI's own packages for training,
# evaluation and applications, which no package an encoding job uses imports (losses,
# metrics, ignite handlers and engines, bundles, federated learning, Auto3DSeg, the
# optimisers, the apps but for the datasets and utilities monai.apps itself imports),
# about 0.6 s; SciPy's ndimage and sparse matrices (0.5-0.6 s), which MONAI's transforms
# import for spline resampling, distance transforms and the ultrasound confidence map,
# where mmpipe's volume recipe resamples with torch (bilinear, trilinear, nearest)
NEVER_IN_AN_ENCODING_JOB = (
    "transformers", "huggingface_hub", "requests", "matplotlib", "pandas", "scipy.signal",
    "scipy.stats", "scipy.ndimage", "scipy.sparse", "skimage", "sklearn",
    "monai.losses", "monai.metrics", "monai.handlers", "monai.engines", "monai.bundle",
    "monai.fl", "monai.auto3dseg", "monai.optimizers", "monai.apps.auto3dseg",
    "monai.apps.deepedit", "monai.apps.deepgrow", "monai.apps.detection",
    "monai.apps.generation", "monai.apps.nnunet", "monai.apps.nuclick",
    "monai.apps.pathology", "monai.apps.reconstruction", "monai.apps.vista3d")


def skip_unused_imports() -> None:
    """In a process that encodes one store, make ``import`` fail for what MONAI would
    import and the job never uses (:data:`NEVER_IN_AN_ENCODING_JOB`). MONAI's optional
    import then records the package as missing and goes on; code that does need it fails
    with an ImportError, never silently. Only for a process that ends with the job (the
    ``encode`` rule, ``mmpipe encode``), before anything imports MONAI: it changes the
    process's imports for good."""
    for name in NEVER_IN_AN_ENCODING_JOB:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def encode_store(cohort_dir: str | Path, modality: str, params: dict, out: str | Path, *,
                 device: str = "auto", settings: dict | None = None,
                 shard_dirs: list | None = None, prompts: str | Path | None = None,
                 masks: str | Path | None = None) -> Path:
    """Write the store of ``modality`` encoded as ``params`` says
    (:func:`mmpipe.params.encoder_params`); ``settings`` are the encoder's execution
    settings (batch size, loader workers: :func:`mmpipe.encoders.registry.execution_settings`),
    which change how the job runs, not what it writes."""
    from mmpipe.encoders.device import resolve_device

    cohort_dir = Path(cohort_dir)
    # the entry name lets weight errors say which `encoders.<name>` to edit
    cfg = {**params["config"], **(settings or {}), "name": params["encoder"]}
    etype = get_encoder_type(cfg["type"])
    inputs = gather_inputs(cohort_dir, modality, params["kind"], shard_dirs=shard_dirs,
                           shard_settings=params.get("dicom") or params.get("tiling"),
                           prompts=prompts, fields=params.get("fields"), masks=masks)
    _log_summary(inputs, modality)
    ready = [i for i in inputs if i.status == "ok"]
    # the files read, there at the start (none there: the data's mount missing on this
    # node fails the job) and, for a subject rejected, still there at the end (one gone
    # is the mount dropping during the job): as a preprocessing shard judges its inputs
    files = {i.subject_id: f for i in ready if (f := input_file(i, params["kind"]))}
    gone = check_inputs_there(files)
    ready = [i for i in ready if i.subject_id not in gone]
    # a type that runs no network (tables, imported features) never needs the config's
    # GPU: under `device: cuda` its job, on a CPU node, stopped with "CUDA not available"
    job = EncodeJob(cfg=cfg, params=params, modality=modality,
                    device=resolve_device(device if etype.needs_gpu else "cpu"),
                    rejected_paths={i.subject_id: i.reason for i in inputs
                                    if i.status == "rejected" and i.path_rejected})
    loop = etype.loop_module()
    loop.setup(job, ready)
    attrs = {**_attrs(cohort_dir.name, job), "run_settings": dict(settings or {})}
    if attrs["weights_random_init"]:
        log.warning("RANDOM WEIGHTS: store %s is written from a random-init %s: its features "
                    "are not pretrained", out, params["encoder"])

    with FeatureStoreWriter(out, [i.subject_id for i in inputs], job.feature_shape, attrs,
                            bag_item_shape=job.bag_item_shape,
                            bag_coord_dim=job.bag_coord_dim) as store:
        for item in inputs:
            if item.status != "ok":
                store.mark(item.subject_id, item.status, item.reason)
        writer = SubjectWriter(store, {i.subject_id: i.reason for i in ready if i.reason})
        for sid in sorted(gone):  # moved or deleted since the manifest was built
            writer.reject(sid, str(not_there_error(files[sid])))
        progress = tqdm(total=len(ready), desc=f"{modality}/{params['encoder']}",
                        unit="subject", mininterval=5)
        loop.run(job, ready, writer, progress)
        progress.close()
        check_none_went(files, gone, (sid for sid in writer.rejected if sid in files))
        with_input = len(ready) + len(job.rejected_paths)
        if with_input and not writer.written and not writer.absent:
            # every input failed: a cause they share (a missing library, a device error, a
            # wrong setting or folder), not each subject's; a store of rejections would look
            # finished. The adapter's rejected paths count (every path in a wrong folder:
            # "file not found"); a preprocessing stage's rejections, each subject's own
            # defect, do not. Inputs the loop found empty, a table of missing_values codes,
            # are absent.
            rejected = {**job.rejected_paths, **writer.rejected}
            shown = "; ".join(f"{s}: {r}" for s, r in list(rejected.items())[:3])
            raise InputError(f"{modality}/{params['encoder']}: all {with_input} "
                             f"subjects with an input were rejected or empty, so no store is "
                             f"written ({shown})")
        store.commit()
    return Path(out)
