"""Faults and edits thrown at the whole workflow on the tiny demo (the session's
``demo_run``, copied per test): a job killed with SIGKILL, two runs in one directory, a
reordered config, an edited encoder module. After each, what a user can rely on holds:
nothing half-written looks finished, debris goes, and exactly the affected jobs rerun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mmpipe.errors import StoreError
from mmpipe.store import FeatureStore
from tests.conftest import REPO, jobs_of, snakemake_in, write_demo_config

pytestmark = pytest.mark.slow


def _copy(demo_run: Path, tmp_path: Path, name: str) -> Path:
    workdir = tmp_path / name
    shutil.copytree(demo_run, workdir, symlinks=True)
    return workdir


def _start(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory",
           str(workdir), "--cores", "1", *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_for(proc: subprocess.Popen, found, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not found():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _debris(workdir: Path) -> list[Path]:
    return [p for p in (workdir / "results").rglob("*.tmp-*")]


def test_a_killed_encoding_job_leaves_no_store_and_reruns(demo_run, tmp_path):
    """SIGKILL the slide encoding job while it writes: no store opens; a rerun completes."""
    workdir = _copy(demo_run, tmp_path, "killed-encode")
    target = "results/demo/features/wsi/clam_resnet50.zarr"
    shutil.rmtree(workdir / target)
    proc = _start(workdir, target)
    store_dir = workdir / "results/demo/features/wsi"
    _wait_for(proc, lambda: list(store_dir.glob("clam_resnet50.zarr.tmp-*/emb")),
              "the store's writing began")
    time.sleep(0.5)  # let it write some rows
    _kill(proc)
    assert list(store_dir.glob("clam_resnet50.zarr.tmp-*")), "killed before writing began"
    with pytest.raises(StoreError):
        FeatureStore(workdir / target)
    # what a user does after a kill: unlock the working directory, run again
    assert snakemake_in(workdir, "--unlock").returncode == 0
    run = snakemake_in(workdir, "--rerun-incomplete", target)  # not the runs that read it
    assert run.returncode == 0, run.stderr[-3000:]
    assert FeatureStore(workdir / target).present.tolist() == FeatureStore(
        demo_run / target).present.tolist()
    assert not _debris(workdir)


def test_a_killed_training_job_after_a_change_reruns_and_the_report_follows(demo_run,
                                                                          tmp_path):
    """The reported case: change a hyper-parameter, SIGKILL the training job, unlock and
    run again. The training reruns (not "Nothing to be done"), the debris goes, and the
    report lists runs trained with the new settings only."""
    workdir = _copy(demo_run, tmp_path, "killed-train")
    write_demo_config(workdir, mmare_overrides={"max_epochs": 400, "patience": 400})
    proc = _start(workdir)
    runs = workdir / "results/demo/runs/all/mmare"
    _wait_for(proc, lambda: list(runs.glob("*.tmp-*/seed0.tmp-*")), "mmare's training began")
    _kill(proc)
    assert _debris(workdir)
    assert snakemake_in(workdir, "--unlock").returncode == 0
    dry = snakemake_in(workdir, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = jobs_of(dry.stdout)
    assert jobs.get("train") == 2 and jobs.get("benchmark_report") == 1, dry.stdout[-3000:]
    run = snakemake_in(workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not _debris(workdir)
    report = (workdir / "results/demo/report/runs.csv").read_text()
    for metrics in runs.glob("*/seed0/metrics.json"):
        saved = json.loads(metrics.read_text())
        assert saved["hparams"]["max_epochs"] == 400
        assert metrics.relative_to(workdir).as_posix() in report
    assert "Nothing to be done" in (snakemake_in(workdir, "-n").stdout)


def test_a_stale_run_cannot_enter_the_report(demo_run, tmp_path):
    """A run on disk trained with other settings than the config's (here: its recorded
    hash edited, as a run left from an older config would be) stops the report."""
    workdir = _copy(demo_run, tmp_path, "stale")
    metrics = next((workdir / "results/demo/runs/all/deepsets").glob("*/seed0/metrics.json"))
    saved = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**saved, "params_hash": "0" * 64}))
    run = snakemake_in(workdir, "--forcerun", "benchmark_report")
    assert run.returncode != 0
    log = (workdir / "results/demo/logs/benchmark_report.log").read_text()
    assert "trained with other settings than the config's" in log
    assert metrics.parent.relative_to(workdir).as_posix() in log
    # the old report is gone, not left looking current
    assert not (workdir / "results/demo/report").exists()


def test_two_runs_in_one_directory(demo_run, tmp_path):
    """A second run while the first one works is refused; the first one finishes."""
    workdir = _copy(demo_run, tmp_path, "concurrent")
    write_demo_config(workdir, mmare_overrides={"max_epochs": 400, "patience": 400})
    # without the demo's cohort-wide patience (10), which stops MMARE within seconds
    # whatever its own, the first run trains long enough for the second to meet its lock
    # on a loaded machine too; a first run that reached its report meanwhile failed the
    # second's DAG build on the report it was replacing, not on the lock
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    del cfg["cohorts"]["demo"]["benchmark"]["trainer"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    first = _start(workdir)
    _wait_for(first, lambda: list((workdir / ".snakemake/locks").glob("*")),
              "the first run locked the directory")
    second = snakemake_in(workdir)
    assert second.returncode != 0
    # Snakemake refuses on the directory's lock or, when its DAG meets a job the first run
    # has in flight, on that job's incomplete output, which it checks before the lock (seen
    # on a loaded 2-core CI host); either way before it writes anything (no debris below)
    refusals = ("LockException", "cannot be locked", "Incomplete files")
    assert any(r in second.stderr for r in refusals), second.stderr[-2000:]
    assert first.wait(timeout=600) == 0
    assert "Nothing to be done" in snakemake_in(workdir, "-n").stdout
    assert not _debris(workdir)


def _reversed(value):
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    return [_reversed(v) for v in value] if isinstance(value, list) else value


def test_reordering_every_mapping_of_the_config_reruns_nothing(demo_run, tmp_path):
    workdir = _copy(demo_run, tmp_path, "reordered")
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump(_reversed(cfg), sort_keys=False))
    assert list(yaml.safe_load((workdir / "config.yaml").read_text())) == list(reversed(cfg))
    run = snakemake_in(workdir, "-n")
    assert run.returncode == 0, run.stderr
    assert "Nothing to be done" in run.stdout + run.stderr, run.stdout[-3000:]


def test_editing_the_text_encoder_reruns_only_text_stores_and_what_reads_them(demo_run,
                                                                            tmp_path):
    """A copy of the workflow whose text encoder module changed: the text store, the QC
    that reads every store, the runs whose feature set holds it and the report rerun;
    no other store, no preprocessing, no manifest."""
    code = tmp_path / "repo"
    code.mkdir()
    for part in ("Snakefile", "workflow", "mmpipe"):
        src = REPO / part
        (shutil.copytree(src, code / part, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, code / part))
    text = code / "mmpipe" / "encoders" / "text.py"
    text.write_text(text.read_text() + "\n\nUNUSED_BUT_CODE = 1\n")
    workdir = _copy(demo_run, tmp_path, "edited")
    run = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                          str(code / "Snakefile"), "--directory", str(workdir), "-n"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = jobs_of(run.stdout)
    assert set(jobs) == {"encode", "cohort_qc", "train", "benchmark_report", "all"}, jobs
    assert jobs["encode"] == 1 and "features/clinical/text_minilm.zarr" in run.stdout
    # bd on slide + clinical text; not mmare and deepsets on "all" (its clinical record is
    # the tabular encoding), not hgb
    assert jobs["train"] == 1 and "runs/slide_clinical/bd" in run.stdout
    assert "output: results/demo/runs/all" not in run.stdout
    # a comment or a docstring is not code: editing one reruns nothing
    text.write_text(text.read_text().replace("\n\nUNUSED_BUT_CODE = 1\n", "\n# a comment\n"))
    run = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                          str(code / "Snakefile"), "--directory", str(workdir), "-n"],
                         capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in run.stdout + run.stderr, run.stdout[-2000:]
