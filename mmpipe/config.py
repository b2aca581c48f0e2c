"""Configuration: schema validation with readable errors, defaults, cross-checks,
and the parameter sets that decide what a config change reruns.

The same function validates the config for the Snakefile and for the ``mmpipe``
commands, so both see the same defaults.
"""

from __future__ import annotations

import ast
import copy
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mmpipe.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

# which encoder types can read which modality kinds
ENCODER_INPUTS = {
    "volume": {"med3d", "vgg11_slices"},
    "dicom": {"med3d", "vgg11_slices"},
    "slide": {"clam_resnet50"},
    "table": {"text", "tabular"},
    "features": {"precomputed"},
}
# encoder types that run a network, and so ask the scheduler for a GPU
GPU_ENCODERS = {"med3d", "vgg11_slices", "clam_resnet50", "text"}


@cache
def _schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": set_defaults})
    return cls(_schema())


def _where(error) -> str:
    return "config." + ".".join(str(p) for p in error.absolute_path) if error.absolute_path else "config"


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate ``cfg`` in place (filling defaults) and return it.

    Raises :class:`ConfigError` listing every problem with the key it is under.
    """
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))
    problems = [f"{_where(e)}: {e.message}" for e in errors]
    if not problems:
        problems = _cross_check(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def _cross_check(cfg: dict[str, Any]) -> list[str]:
    problems = []
    encoders = cfg["encoders"]
    for name in cfg.get("run_cohorts", []):
        if name not in cfg["cohorts"]:
            problems.append(f"config.run_cohorts: unknown cohort {name!r} "
                            f"(known: {sorted(cfg['cohorts'])})")
    for cname, cohort in cfg["cohorts"].items():
        if cohort["adapter"] == "csv":
            for key in ("csv", "subject_column"):
                if key not in cohort:
                    problems.append(f"config.cohorts.{cname}: the csv adapter needs {key!r}")
        if cohort["adapter"] == "mmist_ccrcc" and "root" not in cohort:
            problems.append(f"config.cohorts.{cname}: the mmist_ccrcc adapter needs 'root'")
        for mname, mod in cohort["modalities"].items():
            where = f"config.cohorts.{cname}.modalities.{mname}"
            if mod["kind"] == "table" and not mod.get("fields"):
                problems.append(f"{where}: a table modality needs 'fields'")
            if cohort["adapter"] == "csv" and mod["kind"] != "table" and "column" not in mod:
                problems.append(f"{where}: the csv adapter needs the 'column' holding the path")
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
                if etype not in ENCODER_INPUTS[mod["kind"]]:
                    problems.append(f"{where}.encoders: {ename!r} ({etype}) cannot read "
                                    f"{mod['kind']!r} inputs; use one of "
                                    f"{sorted(ENCODER_INPUTS[mod['kind']])}")
                if etype == "text" and "prompt" not in mod:
                    problems.append(f"{where}: the text encoder {ename!r} needs a 'prompt' block")
        problems += _check_benchmark(cfg, cname, cohort)
    return problems


def _check_benchmark(cfg: dict, cname: str, cohort: dict) -> list[str]:
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
    scenarios = bench.get("scenarios", cfg.get("benchmark", {}).get("scenarios", {}))
    for name in bench.get("default_scenarios", []):
        if name not in scenarios:
            problems.append(f"{where}.default_scenarios: {name!r} is not among the cohort's "
                            f"scenarios {sorted(scenarios)}")
    for method, entry in bench["runs"].items():
        if method not in cfg.get("methods", {}):
            problems.append(f"{where}.runs: unknown method {method!r} "
                            f"(defined: {sorted(cfg.get('methods', {}))})")
        sets, run_scenarios = run_entry(entry, bench.get("default_scenarios", list(scenarios)))
        for fs in sets:
            if fs not in bench["feature_sets"]:
                problems.append(f"{where}.runs.{method}: unknown feature set {fs!r}")
        for name in run_scenarios:
            if name not in scenarios:
                problems.append(f"{where}.runs.{method}: scenario {name!r} is not among the "
                                f"cohort's scenarios {sorted(scenarios)}")
    for name, spec in scenarios.items():
        options = spec if isinstance(spec, dict) else {}
        named = options.get("modalities", []) + ([options["modality"]] if "modality" in options
                                                 else [])
        for mod in named:
            if mod not in cohort["modalities"]:
                problems.append(f"{where}.scenarios.{name}: unknown modality {mod!r}")
        if name == "testmiss" and "modality" not in options:
            problems.append(f"{where}.scenarios.testmiss: name the 'modality' that goes "
                            "missing at test time")
        unused = set(options) - {"rates"} - {"completeness": {"modalities", "drop"},
                                            "testmiss": {"modality"}}.get(name, set())
        if unused:
            problems.append(f"{where}.scenarios.{name}: options {sorted(unused)} do not apply")
    return problems


def load_config(path: str | Path = "config.yaml", overrides: dict | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as fh:
        cfg = yaml.safe_load(fh) or {}
    if overrides:
        _deep_update(cfg, overrides)
    return validate_config(cfg)


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


# -- parameter sets: what each job depends on -----------------------------------------------
# Snakemake reruns a job when its params change. Each job gets exactly the settings it
# depends on, plus a hash of the source of the code that implements it (Snakemake's own
# code trigger does not see changes inside imported modules).

_PACKAGE_ROOT = Path(__file__).resolve().parent


@cache
def code_version(*parts: str) -> str:
    """SHA-256 (12 hex) of the mmpipe sources named by ``parts`` (modules or subpackages)."""
    digest = hashlib.sha256()
    for part in sorted(parts):
        target = _PACKAGE_ROOT / part
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
        for f in files:
            digest.update(f.relative_to(_PACKAGE_ROOT).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def method_sources(module: str) -> list[str]:
    """``module`` (e.g. ``methods/ham``) and every ``mmpipe.methods`` module it imports,
    transitively: a shared block changes a method's results as much as its own code."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        tree = ast.parse((_PACKAGE_ROOT / f"{mod}.py").read_text())
        for node in ast.walk(tree):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            todo += [n.removeprefix("mmpipe.").replace(".", "/") for n in names
                     if n.startswith("mmpipe.methods.")]
    return sorted(seen)


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


def manifest_params(cfg: dict, cohort_name: str) -> dict:
    """What the manifest depends on: the adapter and the modality layout, not the encoders."""
    c = cohort(cfg, cohort_name)
    mods = {m: {k: v for k, v in spec.items() if k in ("kind", "column", "fields")}
            for m, spec in c["modalities"].items()}
    keep = {k: v for k, v in c.items() if k in ("adapter", "labels", "root", "csv", "subject_column")}
    return {**keep, "modalities": mods, "code": code_version("cohorts")}


def demo_params(cfg: dict, cohort_name: str) -> dict:
    return {**cohort(cfg, cohort_name).get("demo", {}),
            "code": code_version("cohorts/demo", "io/tiff_writer")}


def dicom_params(cfg: dict) -> dict:
    return {**cfg["preprocess"]["dicom"], "code": code_version("io/dicom", "preprocess/dicom_shard")}


def tiling_params(cfg: dict) -> dict:
    return {**cfg["preprocess"]["slide"], "code": code_version("io/slide", "preprocess/tiling", "preprocess/slide_shard")}


def prompt_params(cfg: dict, cohort_name: str, modality_name: str) -> dict:
    c = cohort(cfg, cohort_name)
    mod = modality(cfg, cohort_name, modality_name)
    return {"fields": mod["fields"], "labels": c["labels"], "prompt": mod.get("prompt", {}),
            "code": code_version("preprocess/prompts")}


_KIND_CODE = {
    "volume": ("preprocess/volume",),
    "dicom": ("preprocess/volume",),
    "slide": ("io/slide", "preprocess/tiling"),
    "table": ("preprocess/prompts",),
    "features": (),
}


def encoder_params(cfg: dict, cohort_name: str, modality_name: str, encoder_name: str) -> dict:
    """Everything an encoding job's output depends on (not the device: results must not)."""
    mod = modality(cfg, cohort_name, modality_name)
    if encoder_name not in mod["encoders"]:
        raise ConfigError(f"modality {modality_name!r} of cohort {cohort_name!r} does not use "
                          f"encoder {encoder_name!r}")
    enc = cfg["encoders"][encoder_name]
    params: dict[str, Any] = {
        "encoder": encoder_name,
        "config": enc,
        "kind": mod["kind"],
        "code": code_version("encoders", "encode", "store", *_KIND_CODE[mod["kind"]]),
    }
    if mod["kind"] == "dicom":
        params["dicom"] = dicom_params(cfg)
    if mod["kind"] == "slide":
        params["tiling"] = tiling_params(cfg)
    if mod["kind"] == "table":
        params["fields"] = mod["fields"]
        if enc["type"] == "text":
            params["prompt"] = prompt_params(cfg, cohort_name, modality_name)
    return params


# -- stage 2 -------------------------------------------------------------------------------

def benchmark_settings(cfg: dict, cohort_name: str) -> dict:
    """Global benchmark settings with the cohort's overrides (seeds, scenarios, ratios)."""
    bench = cohort(cfg, cohort_name).get("benchmark")
    if not bench:
        raise ConfigError(f"cohort {cohort_name!r} has no 'benchmark' section")
    overrides = {k: v for k, v in bench.items()
                 if k in ("seeds", "scenarios", "ratios", "normalize", "train_jobs")}
    settings = {**cfg["benchmark"], **overrides, "label": bench["label"]}
    # a scenario is given as its list of rates, or as {rates: [...], <its options>}
    raw = settings["scenarios"]
    settings["scenarios"] = {name: list(v["rates"] if isinstance(v, dict) else v)
                             for name, v in raw.items()}
    settings["scenario_options"] = {name: {k: x for k, x in v.items() if k != "rates"}
                                    if isinstance(v, dict) else {} for name, v in raw.items()}
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
            if mcfg["type"] == "single" and "modality" not in mcfg:
                runs += [{"feature_set": fs, "method": f"{method}_{m}",
                          "config": {**mcfg, "modality": m}, "scenarios": run_scenarios}
                         for m in bench["feature_sets"][fs]]
            else:
                runs.append({"feature_set": fs, "method": method, "config": mcfg,
                             "scenarios": run_scenarios})
    return runs


def _run(cfg: dict, cohort_name: str, feature_set: str, method: str) -> dict:
    for run in benchmark_runs(cfg, cohort_name):
        if run["feature_set"] == feature_set and run["method"] == method:
            return run
    raise ConfigError(f"cohort {cohort_name!r} has no run of {method!r} on {feature_set!r}")


def run_config(cfg: dict, cohort_name: str, feature_set: str, method: str) -> dict:
    return _run(cfg, cohort_name, feature_set, method)["config"]


def run_cells(cfg: dict, cohort_name: str, feature_set: str, method: str) -> list[str]:
    """The ``{scenario}-{rate}`` cells of one run, in config order."""
    rates = benchmark_settings(cfg, cohort_name)["scenarios"]
    return [f"{scenario}-{rate}"
            for scenario in _run(cfg, cohort_name, feature_set, method)["scenarios"]
            for rate in rates[scenario]]


def split_params(cfg: dict, cohort_name: str) -> dict:
    s = benchmark_settings(cfg, cohort_name)
    return {"ratios": s["ratios"], "label": s["label"], "code": code_version("bench/splits")}


def mask_params(cfg: dict, cohort_name: str, scenario: str) -> dict:
    options = benchmark_settings(cfg, cohort_name)["scenario_options"].get(scenario, {})
    return {"options": options, "code": code_version("bench/missingness")}


def train_params(cfg: dict, cohort_name: str, feature_set: str, method: str) -> dict:
    """What a training job depends on: its method's settings, its feature set, the
    normalisation, and the code of the benchmark, of the method and of the method
    modules it imports (not of other methods)."""
    s = benchmark_settings(cfg, cohort_name)
    mcfg = run_config(cfg, cohort_name, feature_set, method)
    from mmpipe.methods import METHODS

    module = METHODS.get(mcfg["type"], ":").split(":")[0].removeprefix("mmpipe.")
    # a method may override the cohort's feature normalisation (trees need none)
    normalize = mcfg.get("normalize", s["normalize"])
    return {
        "method": {k: v for k, v in mcfg.items() if k != "normalize"},
        "feature_set": cohort(cfg, cohort_name)["benchmark"]["feature_sets"][feature_set],
        "label": s["label"],
        "normalize": normalize,
        "evaluate_subsets": s["evaluate_subsets"],
        "code": code_version("bench", *method_sources(module.replace(".", "/"))),
    }
