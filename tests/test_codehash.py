"""Code keys over a copy of the package: what a job reads from a registry reruns it when
edited, while a new registry entry reruns nothing."""

from __future__ import annotations

import shutil

import pytest

from mmpipe import codehash

SOURCE = codehash.PACKAGE_ROOT


@pytest.fixture
def package(tmp_path, monkeypatch):
    """An editable copy of ``mmpipe`` that code keys read, caches cleared around it."""
    root = tmp_path / "mmpipe"
    shutil.copytree(SOURCE, root, ignore=shutil.ignore_patterns("__pycache__"))
    caches = (codehash._parsed, codehash._module_digest, codehash.code_key)

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


def _keys():
    return {name: codehash.code_key(*specs) for name, specs in
            (("train", TRAIN), ("clam", CLAM), ("med3d", MED3D), ("manifest", MANIFEST),
             ("demo", DEMO))}


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
    ("cohorts/__init__.py", "out = ADAPTERS[name](cohort_cfg, out_dir=out_dir, base_dir=base_dir)",
     "out = ADAPTERS[name](dict(cohort_cfg), out_dir=out_dir, base_dir=base_dir)", {"manifest"}),
    # how the manifest is built: the manifest alone (every store and run, and the demo
    # generator, reran on any edit of the builder while they read it through its module)
    ("cohorts/manifest.py", "NUMERIC_SHARE = 0.75", "NUMERIC_SHARE = 0.8", {"manifest"}),
    # how its files are read: every job that reads them
    ("cohorts/manifest_files.py", "if df[SUBJECT].null_count() or", "if False or",
     {"train", "clam", "med3d", "manifest"}),
    # what a run records of the manifest: the runs, no store and not the manifest
    ("cohorts/manifest_views.py", "& (pl.col(SUBJECT) != ALL_SUBJECTS))", ")", {"train"}),
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
