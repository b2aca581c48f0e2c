"""Shared fixtures: where the real data lives, and skipping cleanly without it."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(items) -> None:
    """The files marked ``slow`` first. ``pytest-xdist`` hands out whole files in this
    order (``--dist loadfile --no-loadscope-reorder`` in ``pyproject.toml``; its default
    reorder puts the files of fewest tests, the workflow's, last): the longest start
    first and the many short files fill the workers' ends, so neither waits on the
    other's last file."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread per worker: ``pytest-xdist`` runs two workers on CI's two cores,
    and at torch's default of every core they ran four threads on two (method tests on
    tiny tensors 10-100x slower where cores were shared); a methods fixture that set one
    thread for the rest of its worker's session made the count depend on which files
    xdist handed that worker. Tests of the thread count set their own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (see README: tests and real data)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _hash_cache(tmp_path_factory):
    """File digests the tests compute (and the workflows they run) are cached in a folder
    of the session, not in the user's ``~/.cache``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMPIPE_HASH_CACHE", str(tmp_path_factory.mktemp("sha256_cache")))
        yield


class RunsCode:
    """What a crafted file carries: unpickling it calls ``open(marker, "w")``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data file not found: {path}")
    return path


# -- the workflow on a tiny demo, shared by the workflow and reliability tests --------------

N_SUBJECTS = 16


def deny_listing(monkeypatch, denied) -> None:
    """``Path.iterdir`` raises PermissionError for the folders ``denied(path)`` picks:
    these tests run as root, which lists a ``chmod 000`` folder, so this stands in."""
    listed = Path.iterdir

    def iterdir(self):
        if denied(self):
            raise PermissionError(13, "Permission denied", str(self))
        return listed(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """This repository's workflow run in ``workdir``, by the interpreter of the tests."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), *args]


def snakemake_in(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, "--cores", "2", *args), capture_output=True,
                          text=True, timeout=900)


def jobs_of(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry-run."""
    counts = {}
    for line in dry_run_output.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="module")
def raw_config() -> dict:
    """The repository's ``config.yaml`` as YAML reads it, before validation (deep-copy it
    before changing it: one module shares it)."""
    return yaml.safe_load((REPO / "config.yaml").read_text())


def mask_mri_t1_by_totalsegmentator(cfg: dict, weights: Path | None = None) -> dict:
    """The demo's T1 masked by TotalSegmentator's left kidney and encoded by ``med3d_roi``
    (``med3d_demo`` cropped to the mask) beside its other encoders, which read no mask."""
    cfg["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"] = {
        "from": "totalsegmentator", "roi_subset": ["kidney_left"]}
    roi = copy.deepcopy(cfg["encoders"]["med3d_demo"])
    roi["transform"] = {**(roi.get("transform") or {}), "roi_crop": {"margin": 2}}
    cfg["encoders"]["med3d_roi"] = roi
    cfg["cohorts"]["demo"]["modalities"]["mri_t1"]["encoders"].append("med3d_roi")
    if weights is not None:
        cfg["preprocess"]["totalsegmentator"] = {"weights": str(weights)}
    return cfg


def write_demo_config(workdir: Path, mmare_overrides: dict | None = None,
                      train_jobs: str = "cell", **slide_overrides) -> None:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["cohorts"]["demo"]["demo"] = {"n_subjects": N_SUBJECTS, "seed": 3}
    cfg["run_cohorts"] = ["demo"]
    cfg["device"] = "cpu"
    cfg["preprocess"]["slide"].update({"max_tiles": 8, **slide_overrides})
    cfg["preprocess"]["dicom"]["min_slices"] = 4
    # a small stage-2 grid, one seed: three methods under natural and MCAR 40 %, and BD
    # under its own protocol (the clinical record missing at test: a mask built from the split)
    cfg["cohorts"]["demo"]["benchmark"].update(
        seeds=[0], default_scenarios=["natural", "mcar"], train_jobs=train_jobs,
        # two trials: the budget's machinery runs, at half the cost of the default four
        tuning={"trials": 2},
        scenarios={"natural": [0.0], "mcar": [0.4],
                   "testmiss": {"rates": [0.5], "modality": "clinical"}},
        runs={"mmare": ["all"], "deepsets": ["all"], "hgb": ["clinical_tabular"],
              "bd": {"feature_sets": ["slide_clinical"], "scenarios": ["testmiss"]}})
    for name in ("mmare", "deepsets", "bd"):
        cfg["methods"][name]["max_epochs"] = 20
    cfg["methods"]["mmare"].update(mmare_overrides or {})
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    write_demo_config(workdir)
    run = snakemake_in(workdir)
    if run.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}"
                         for p in (workdir / "results").rglob("*.log"))
        pytest.fail(f"snakemake failed:\n{run.stderr[-6000:]}\n{logs}")
    return workdir
