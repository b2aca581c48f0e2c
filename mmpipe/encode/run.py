"""Encode one modality of one cohort with one encoder into one feature store.

This is the function behind ``mmpipe encode`` and the Snakemake ``encode`` rule:
gather every manifest subject's input, run the frozen encoder, write the Zarr store
atomically with its provenance.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm import tqdm

from mmpipe.encode.inputs import SubjectInput, gather_inputs
from mmpipe.errors import ConfigError
from mmpipe.store import FeatureStoreWriter, params_hash

log = logging.getLogger(__name__)


_NO_NETWORK = {
    "precomputed": "pre-extracted features, imported as they are",
    "tabular": "none: tabular encoding, no network",
}


def _attrs(cohort: str, modality: str, params: dict, weights, device: torch.device) -> dict:
    preprocessing = {k: params[k] for k in ("dicom", "tiling", "prompt", "fields") if k in params}
    preprocessing["transform"] = params["config"].get("transform")
    return {
        "cohort": cohort,
        "modality": modality,
        "kind": params["kind"],
        "encoder": params["encoder"],
        "encoder_type": params["config"]["type"],
        "encoder_config": params["config"],
        "weights_source": _NO_NETWORK.get(params["config"]["type"], "none (no network)"),
        "weights_sha256": None,
        "weights_random_init": False,
        **(weights.to_attrs() if weights is not None else {}),
        "preprocessing": preprocessing,
        "preprocessing_hash": params_hash(preprocessing),
        "code_version": params.get("code"),
        "device": str(device),
    }


def _log_summary(inputs: list[SubjectInput], modality: str) -> None:
    counts: dict[str, int] = {}
    for item in inputs:
        counts[item.status] = counts.get(item.status, 0) + 1
    log.info("%s: %d subjects, inputs %s", modality, len(inputs), counts)


def encode_store(cohort_dir: str | Path, modality: str, params: dict, out: str | Path, *,
                 device: str = "auto", shard_dirs: list | None = None,
                 prompts: str | Path | None = None) -> Path:
    from mmpipe.encoders.device import resolve_device
    from mmpipe.encoders.registry import get_encoder_type

    cohort_dir = Path(cohort_dir)
    # the entry name lets weight errors say which `encoders.<name>` to edit
    cfg = {**params["config"], "name": params["encoder"]}
    etype = get_encoder_type(cfg["type"])
    kind = params["kind"]
    inputs = gather_inputs(cohort_dir, modality, kind, shard_dirs=shard_dirs, prompts=prompts,
                           fields=params.get("fields"))
    _log_summary(inputs, modality)
    ready = [i for i in inputs if i.status == "ok"]
    dev = resolve_device(device)
    ids = [i.subject_id for i in inputs]
    cohort = cohort_dir.name

    net, weights, extra_attrs, bag = None, None, {}, (None, 0)
    feature_shape = etype.feature_shape(cfg)
    first: dict = {}
    tab_values = None
    if etype.name == "precomputed":
        from mmpipe.encode.features import load_all_shapes

        feature_shape, first = load_all_shapes(ready, cfg)
        if feature_shape is None:
            feature_shape = (0,)
            log.warning("%s: no readable feature file at all", modality)
    elif etype.name == "tabular":
        from mmpipe.encode.table import fit_tabular

        encoding, tab_values = fit_tabular(ready, params["fields"], cfg)
        feature_shape = (tab_values.shape[1],)
        weights = None
        extra_attrs = {"tabular_encoding": encoding.to_dict(),
                       "feature_names": list(encoding.feature_names)}
    elif etype.name == "text":
        net, weights = etype.build(cfg, dev)
        feature_shape = (net.dim,)
    else:
        net, weights = etype.build(cfg, dev)
        net.eval()
    if etype.name == "clam_resnet50" and cfg.get("keep_bag", True):
        bag = (feature_shape, 2)
    if etype.name == "vgg11_slices" and cfg.get("keep_bag", False):
        bag = (feature_shape, 1)

    attrs = _attrs(cohort, modality, params, weights, dev) | extra_attrs
    if bag[0] is not None:
        attrs["bag"] = {"coords": "level-0 (x, y) of each tile" if bag[1] == 2
                        else "slice index after preprocessing"}
    if attrs["weights_random_init"]:
        log.warning("RANDOM WEIGHTS: store %s is written from a random-init %s: its features "
                    "are not pretrained", out, params["encoder"])

    with FeatureStoreWriter(out, ids, feature_shape, attrs, bag_item_shape=bag[0],
                            bag_coord_dim=bag[1]) as writer:
        for item in inputs:
            if item.status != "ok":
                writer.mark(item.subject_id, item.status, item.reason)
        progress = tqdm(total=len(ready), desc=f"{modality}/{params['encoder']}", unit="subject",
                        mininterval=5)
        _run(etype.name, ready, writer, net, cfg, dev, params, first, tab_values, progress)
        progress.close()
        writer.commit()
    return Path(out)


def _run(name, ready, writer, net, cfg, dev, params, first, tab_values, progress) -> None:
    if name == "med3d":
        from mmpipe.encode.volume import encode_med3d, median_spacing_for

        encode_med3d(ready, writer, net, cfg, dev, median_spacing_for(cfg.get("transform", {}),
                                                                      ready), progress)
    elif name == "vgg11_slices":
        from mmpipe.encode.volume import encode_vgg_slices, median_spacing_for

        encode_vgg_slices(ready, writer, net, cfg, dev,
                          median_spacing_for(cfg.get("transform", {}), ready), progress)
    elif name == "clam_resnet50":
        from mmpipe.encode.slide import encode_slides

        encode_slides(ready, writer, net, cfg, dev, params.get("tiling", {}), progress)
    elif name == "text":
        from mmpipe.encode.table import encode_text

        encode_text(ready, writer, net, progress)
    elif name == "tabular":
        from mmpipe.encode.table import write_tabular

        write_tabular(ready, writer, tab_values, progress)
    elif name == "precomputed":
        from mmpipe.encode.features import encode_features

        encode_features(ready, writer, cfg, first, progress)
    else:
        raise ConfigError(f"no encoding loop for encoder type {name!r}")
