"""Code keys over a copy of the package: what a job reads from a registry reruns it when
edited, while a new registry entry reruns nothing."""

from __future__ import annotations

import ast
import re
import shutil

import pytest

from mmpipe import codehash

SOURCE = codehash.PACKAGE_ROOT


@pytest.fixture
def package(tmp_path, monkeypatch):
    """An editable copy of ``mmpipe`` that code keys read, caches cleared around it."""
    root = tmp_path / "mmpipe"
    shutil.copytree(SOURCE, root, ignore=shutil.ignore_patterns("__pycache__"))
    caches = (codehash._tree, codehash._summary, codehash._parsed, codehash.code_key)

    def clear():
        for c in caches:
            c.cache_clear()

    monkeypatch.setattr(codehash, "PACKAGE_ROOT", root)
    clear()

    def edit(module: str, old: str, new: str):
        path = root / module
        text = path.read_text()
        assert old in text, (module, old)
        path.write_text(text.replace(old, new, 1))
        clear()

    yield edit
    monkeypatch.undo()
    clear()


TRAIN = ("bench/run", "methods/mmare")
CLAM = ("encoders/clam", "encode/slide", "encode/run",
        "encoders/registry:ENCODER_TYPES[clam_resnet50]")
MED3D = ("encoders/med3d", "encode/med3d", "encode/run", "encoders/registry:ENCODER_TYPES[med3d]")
MANIFEST = ("cohorts/manifest", "mmpipe.cohorts.mmist", "cohorts:build_manifest")
DEMO = ("cohorts/demo",)
PROMPTS = ("preprocess/prompts", "cohorts/manifest_files", "made_with")
TABULAR = ("encoders/tabular", "encode/tabular", "encode/run",
           "encoders/registry:ENCODER_TYPES[tabular]")


def _keys():
    return {name: codehash.code_key(*specs) for name, specs in
            (("train", TRAIN), ("clam", CLAM), ("med3d", MED3D), ("manifest", MANIFEST),
             ("demo", DEMO), ("prompts", PROMPTS), ("tabular", TABULAR))}


@pytest.mark.parametrize("module,old,new,rerun", [
    # the trainer's phase keys live in the method registry (were in no key)
    ("methods/__init__.py", '"monitor", "min_epochs")', '"monitor")', {"train"}),
    # an encoder type's builder and the helper it calls (were in no key)
    ("encoders/registry.py", "return _on(device, build_clam_resnet50(cfg), channels_last=True)",
     "return _on(device, build_clam_resnet50(cfg))", {"clam"}),
    # a helper every network encoder's builder calls
    ("encoders/registry.py", "module = module.to(memory_format=torch.channels_last)",
     "module = module.to(memory_format=torch.contiguous_format)", {"clam", "med3d"}),
    ("encoders/registry.py", 'settings=("weights", "sha256", "transform", "depth"),',
     'settings=("weights", "sha256", "transform"),', {"med3d"}),
    # what writes every manifest (was in no key)
    ("cohorts/__init__.py", "out = ADAPTERS[name].adapt(cohort_cfg, out_dir=out_dir, base_dir=base_dir)",
     "out = ADAPTERS[name].adapt(dict(cohort_cfg), out_dir=out_dir, base_dir=base_dir)",
     {"manifest"}),
    # how the manifest is built: the manifest alone (every store and run, and the demo
    # generator, reran on any edit of the builder while they read it through its module)
    ("cohorts/manifest.py", "NUMERIC_SHARE = 0.75", "NUMERIC_SHARE = 0.8", {"manifest"}),
    # how its files are read: every job that reads them
    ("cohorts/manifest_files.py", "if df[SUBJECT].null_count() or", "if False or",
     {"train", "clam", "med3d", "manifest", "prompts", "tabular"}),
    # what a run records of the manifest: the runs, no store and not the manifest
    ("cohorts/benchmark_view.py", '"presence": modality_presence(df, meta)',
     '"presence": modality_presence(df, meta).head(0)', {"train"}),
    # how a stage-1 job's view of it is stamped decides what reruns and writes nothing:
    # no key (the training jobs reran on every edit while they imported it)
    ("cohorts/manifest_views.py", "& (pl.col(SUBJECT) != ALL_SUBJECTS))", ")", set()),
    # the name of a file inside a run's folder, which no Snakemake output names: a
    # renamed one reran nothing, and the next report found no finished run
    ("layout.py", '"metrics.json"', '"run_metrics.json"', {"train"}),
    ("layout.py", 'SHARD_TILES = "tiles.parquet"', 'SHARD_TILES = "grid.parquet"',
     {"clam", "med3d", "tabular"}),
    # the tabular encoding: its stores, not the prompts (nor the text stores after them),
    # which read only how a value is spelt as a category
    ("encoders/tabular.py", '"unseen", "not_a_number"', '"unseen", "not a number"',
     {"tabular"}),
    ("encoders/categories.py", 'MISSING = "missing"', 'MISSING = "blank"',
     {"tabular", "prompts"}),
    # where outputs lie (a path Snakemake checks): nothing
    ("layout.py", 'return f"seed{seed}"', 'return "seed" + str(seed)', set()),
])
def test_what_a_job_reads_from_a_registry_is_in_its_key(package, module, old, new, rerun):
    before = _keys()
    package(module, old, new)
    after = _keys()
    assert {k for k in before if before[k] != after[k]} == rerun


def test_a_new_registry_entry_reruns_nothing(package):
    before = _keys()
    package("methods/__init__.py", '    "mmare": "mmpipe.methods.mmare:MMARE",',
            '    "mmare": "mmpipe.methods.mmare:MMARE",\n    "new": "mmpipe.methods.new:New",')
    package("encoders/registry.py", "def _build_vgg(cfg, device):",
            "def _build_new(cfg, device):\n    return None\n\n\ndef _build_vgg(cfg, device):")
    package("cohorts/__init__.py", "def build_manifest(",
            "def _unused():\n    return None\n\n\ndef build_manifest(")
    assert _keys() == before


def test_a_name_a_registry_re_exports_is_followed_to_its_module():
    """``from mmpipe.cohorts import read_manifest`` reads cohorts/manifest_files.py, which
    the key must cover although the registry itself is not followed."""
    import ast

    tree = ast.parse("from mmpipe.cohorts import read_manifest\n")
    names: list = []
    codehash._imports(tree, "bench", names)
    assert ("mmpipe.cohorts", "read_manifest") in names
    assert "cohorts/manifest_files" in codehash.module_closure(["mmpipe.cohorts:read_manifest"])


# -- the disk cache of module digests ------------------------------------------------------


def _fresh_summary(monkeypatch, path):
    """``path``'s summary in a process that has not read it (the in-process cache
    cleared), with parsing refused: what the disk cache alone serves."""
    codehash._summary.cache_clear()

    def refuse(*args, **kwargs):
        raise AssertionError("parsed again")

    with monkeypatch.context() as m:
        m.setattr(codehash.ast, "parse", refuse)
        try:
            return codehash._summary(path)
        finally:
            codehash._summary.cache_clear()


def test_a_module_hashed_before_is_read_from_the_disk_cache(monkeypatch):
    path = codehash._module_file("bench/run")
    first = codehash._summary(path)
    assert _fresh_summary(monkeypatch, path) == first


def test_an_edited_module_is_hashed_again_not_read_from_the_cache(package, monkeypatch):
    path = codehash.PACKAGE_ROOT / "bench" / "run.py"
    before = codehash._summary(path)
    package("bench/run.py", "\ndef ", "\ndef _added():\n    return 1\n\n\ndef ")
    with pytest.raises(AssertionError, match="parsed again"):
        _fresh_summary(monkeypatch, path)
    assert codehash._summary(path)[0] != before[0]


@pytest.mark.parametrize("damage", ["", "{\"digest\": \"abc\", \"imports\": []}", "[1, 2]",
                                    "{\"digest\": \"", "{\"digest\": \"" + "a" * 64 +
                                    "\", \"imports\": {\"mmpipe.x\": []}}"])
def test_a_damaged_cache_entry_is_computed_again(damage, package, tmp_path, monkeypatch):
    """An entry cut short, or written by something else, is not a digest: the module is
    hashed again and its key is the one an empty cache gives."""
    monkeypatch.setenv("MMPIPE_HASH_CACHE", str(tmp_path / "cache"))
    package("bench/run.py", "x", "x")  # clears the in-process caches
    want = codehash.code_key(*TRAIN)
    for entry in (tmp_path / "cache" / "code").iterdir():
        entry.write_text(damage)
    package("bench/run.py", "x", "x")
    assert codehash.code_key(*TRAIN) == want


def test_a_cache_that_cannot_be_written_costs_time_not_a_key(package, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("MMPIPE_HASH_CACHE", str(tmp_path / "cache"))
    package("bench/run.py", "x", "x")
    want = codehash.code_key(*TRAIN)
    monkeypatch.setenv("MMPIPE_HASH_CACHE", str(tmp_path / "a_file"))  # no folder under it
    package("bench/run.py", "x", "x")
    assert codehash.code_key(*TRAIN) == want


def test_no_home_folder_costs_the_cache_not_the_key(package, monkeypatch):
    """``Path.home()`` raises RuntimeError where neither HOME nor a passwd entry gives
    one (a container's uid): the Snakefile could not be parsed at all."""
    package("bench/run.py", "x", "x")
    want = codehash.code_key(*TRAIN)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(codehash, "hash_cache_dir", no_home)
    package("bench/run.py", "x", "x")
    assert codehash.code_key(*TRAIN) == want


def test_another_hosts_temporary_entry_is_left_alone(package, tmp_path, monkeypatch):
    """Every job's own Snakemake run of a cluster writes the same entries into a shared
    folder at once: another host's temporary file is its writer's, not debris."""
    monkeypatch.setenv("MMPIPE_HASH_CACHE", str(tmp_path / "cache"))
    package("bench/run.py", "x", "x")
    codehash.code_key(*TRAIN)
    entries = sorted((tmp_path / "cache" / "code").iterdir())
    # named as mmpipe.fsutil names its temporary files, which it sweeps as debris
    others = [e.with_name(f"{e.name}.tmp-node042-12345") for e in entries]
    for entry, other in zip(entries, others, strict=True):
        entry.unlink()
        other.write_text("{}")
    package("bench/run.py", "x", "x")
    codehash.code_key(*TRAIN)
    assert all(other.exists() for other in others)
    assert all(entry.exists() for entry in entries)


# -- every rule script's imports are in its rule's code key --------------------------------

SCRIPTS = codehash.PACKAGE_ROOT.parent / "workflow" / "scripts"
# modules that decide where and how a job runs, never what it writes (the device; the
# logging a job sets up): the rules leave them out of every key on purpose
HOW_A_JOB_RUNS = {"encoders/device", "logs"}


def _script_specs(script: str) -> list[str]:
    """What a rule script imports from mmpipe: ``module:name`` for a registry package
    (what is read from it is keyed by name), the module otherwise."""
    specs = []
    for node in ast.walk(ast.parse((SCRIPTS / script).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmpipe"):
            module = node.module.removeprefix("mmpipe.").replace(".", "/")
            if module in codehash.REGISTRIES:
                specs += [f"{node.module}:{a.name}" for a in node.names]
            else:
                specs.append(module)
    return specs


def _keyed_specs(monkeypatch, *calls) -> list[str]:
    """The specs every ``code_key`` of these params calls hashes (a rule's params)."""
    from mmpipe import params

    seen: list[str] = []
    real = params.code_key

    def recording(*specs):
        seen.extend(specs)
        return real(*specs)

    monkeypatch.setattr(params, "code_key", recording)
    for call in calls:
        call()
    return seen


def _rule_code(rules_file: str, script: str) -> list[str]:
    """The literal ``code=mmparams.code_key(...)`` of the rule that runs ``script``."""
    text = (SCRIPTS.parent / "rules" / rules_file).read_text()
    rule = next(r for r in text.split("\nrule ") if f"scripts/{script}" in r)
    return ast.literal_eval("[" + re.search(r"code=mmparams\.code_key\((.*?)\)", rule)
                            .group(1) + "]")


@pytest.fixture(scope="module")
def demo_config():
    from mmpipe.config import load_config

    cfg = load_config(codehash.PACKAGE_ROOT.parent / "config.yaml")
    demo = cfg["cohorts"]["demo"]
    demo["modalities"]["ct"]["mask"] = {"from": "totalsegmentator", "roi_subset": ["liver"]}
    return cfg


def _rule_calls(cfg, script):
    from mmpipe import params as p

    first = next(iter(cfg["cohorts"]["demo"]["benchmark"]["runs"]))
    feature_set = cfg["cohorts"]["demo"]["benchmark"]["runs"][first]["feature_sets"][0]
    encoders = [(m, e) for m, spec in cfg["cohorts"]["demo"]["modalities"].items()
                for e in spec.get("encoders", [])]
    return {
        "manifest.py": [[lambda: p.manifest_params(cfg, "demo")]],
        "demo_cohort.py": [[lambda: p.demo_params(cfg, "demo")]],
        "dicom_to_nifti.py": [[lambda: p.dicom_params(cfg)]],
        "tile_slides.py": [[lambda: p.tiling_params(cfg)]],
        "segment.py": [[lambda: p.segment_params(cfg, "demo", "ct")]],
        "clinical_prompts.py": [[lambda: p.prompt_params(cfg, "demo", "clinical")]],
        "encode.py": [[lambda m=m, e=e: p.encoder_params(cfg, "demo", m, e),
                       lambda m=m: p.manifest_view(cfg, "demo", m)] for m, e in encoders],
        "split.py": [[lambda: p.split_params(cfg, "demo"), lambda: p.benchmark_view(cfg, "demo")]],
        "mask.py": [[lambda: p.mask_params(cfg, "demo", "natural"),
                     lambda: p.benchmark_view(cfg, "demo")]],
        "train.py": [[lambda: p.train_params(cfg, "demo", feature_set, first),
                      lambda: p.benchmark_view(cfg, "demo")]],
        "benchmark_report.py": [[lambda: p.report_params(cfg, "demo")]],
    }[script]


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py")
                                          if not p.name.startswith("_")))
def test_what_a_rule_script_imports_is_in_its_rules_code_key(script, demo_config,
                                                             monkeypatch):
    """An edit of a module a job runs must rerun the job: the clinical prompts read the
    manifest through ``manifest_files``, which their key left out."""
    wanted = set(codehash.module_closure(_script_specs(script))) - HOW_A_JOB_RUNS
    if script == "cohort_qc.py":
        keyed = [_rule_code("qc.smk", script)]
    else:
        keyed = [_keyed_specs(monkeypatch, *calls) for calls in _rule_calls(demo_config, script)]
    for specs in keyed:
        assert not wanted - set(codehash.module_closure(specs)), (script, specs)


def test_a_package_init_that_no_key_covers_holds_no_code():
    """Importing a module runs its package's ``__init__.py``, which no key follows: a
    ``torch.set_default_dtype`` there would change every output of the package and rerun
    nothing. The registries' (keyed by the entry a job reads) and the demo generator's
    (keyed whole, as its rule's code) hold code; every other holds its docstring alone,
    and the package root its version."""
    root = codehash.PACKAGE_ROOT
    keyed = {f"{name}/__init__.py" for name in codehash.REGISTRIES} | {"cohorts/demo/__init__.py"}
    for init in sorted(root.rglob("__init__.py")):
        rel = init.relative_to(root).as_posix()
        if rel in keyed:
            continue
        body = [node for node in ast.parse(init.read_text()).body
                if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        if rel == "__init__.py":
            assert [ast.unparse(node).split(" = ")[0] for node in body] == ["__version__"]
            continue
        assert body == [], f"{rel} holds code that no code key covers"
