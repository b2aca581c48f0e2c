"""A report or stage-1 summary that no longer describes what is on disk says so.

Each test changes a copy of ``demo_run`` and runs it short of the report, kills it, or
makes a job fail, and reads the marks the report and the summary carry (STALE.md).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
import yaml

from mmpipe.layout import CohortLayout
from tests.conftest import (
    snakemake_cmd,
    snakemake_in,
    write_demo_config,
)

pytestmark = pytest.mark.slow


def test_training_refuses_a_store_made_with_other_settings_than_the_configs(demo_run,
                                                                          tmp_path):
    """A store Snakemake did not rerun after the config changed (encoded by hand with
    `mmpipe encode`, copied, --touch; here --rerun-triggers mtime) was read by the
    training as if made with the config's settings."""
    workdir = tmp_path / "stale_store"
    shutil.copytree(demo_run, workdir, symlinks=True)
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["encoders"]["tabular"]["categorical"] = ["sex"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = snakemake_in(workdir, "--rerun-triggers", "mtime", "--forcerun", "train",
                       "--", "results/demo/runs/clinical_tabular/hgb/natural-0.0")
    assert run.returncode != 0
    log = CohortLayout(workdir / "results" / "demo").log("train", "clinical_tabular/hgb/natural-0.0")
    assert re.search(r"clinical/tabular.zarr \(modality 'clinical'\) was encoded with other "
                     r"encoder settings than the config's", log.read_text()), log.read_text()


def test_a_failed_rerun_marks_the_report_it_leaves_stale(demo_run, tmp_path):
    """A training job whose rerun fails has lost its old output (Snakemake removes it),
    so the report left from the run before no longer describes the runs on disk: the
    failed run marks it, and the next good run rebuilds it without the marks."""
    workdir = tmp_path / "stale"
    shutil.copytree(demo_run, workdir, symlinks=True)
    report = workdir / "results" / "demo" / "report"
    assert not (report / "STALE.md").exists()
    # a valid width no machine holds (2 PB of weights): the job fails when it builds MMARE
    write_demo_config(workdir, mmare_overrides={"head": [2 ** 40]})
    run = snakemake_in(workdir)
    assert run.returncode != 0
    assert "is marked stale (STALE.md)" in run.stderr
    assert "/runs/all/mmare/" in (report / "STALE.md").read_text()
    assert (report / "results.md").read_text().startswith("**Stale report.**")
    write_demo_config(workdir)
    run = snakemake_in(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    assert not (report / "STALE.md").exists()
    assert (report / "results.md").read_text().startswith("# Results: demo")


def test_a_killed_snakemake_leaves_the_report_marked(demo_run, tmp_path):
    """Killed, Snakemake runs neither onerror nor onsuccess, after it may have removed a
    run's outputs: the report of the runs before read as finished. The mark onstart
    writes stays; the next run that ends with the report agreeing removes it."""
    import signal
    import subprocess
    import time

    workdir = tmp_path / "killed"
    shutil.copytree(demo_run, workdir, symlinks=True)
    report = workdir / "results" / "demo" / "report"
    write_demo_config(workdir, mmare_overrides={"dropout": 0.2})
    proc = subprocess.Popen(snakemake_cmd(workdir, "--cores", "1"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (report / "STALE.md").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "onstart never marked the report"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed, unmarked"
    assert "has not finished" in (report / "STALE.md").read_text()
    assert (report / "results.md").read_text().startswith("**Stale report.**")
    run = snakemake_in(workdir, "--unlock")
    assert run.returncode == 0, run.stderr[-4000:]
    run = snakemake_in(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    assert not (report / "STALE.md").exists()
    assert (report / "results.md").read_text().startswith("# Results: demo")


def test_a_retrain_that_stops_short_of_the_report_marks_it_stale(demo_run, tmp_path):
    """A run that succeeds short of the report (a target, --until, --omit-from) after a
    change retrained runs the report still described as they were: only a failed run
    marked it."""
    workdir = tmp_path / "short"
    shutil.copytree(demo_run, workdir, symlinks=True)
    report = workdir / "results" / "demo" / "report"
    write_demo_config(workdir, mmare_overrides={"dropout": 0.2})
    run = snakemake_in(workdir, "--omit-from", "benchmark_report")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "is marked stale (STALE.md)" in run.stderr
    stale = (report / "STALE.md").read_text()
    assert "did not rebuild the report" in stale and "/runs/all/mmare/" in stale


def test_stores_rebuilt_short_of_training_mark_the_report_stale(demo_run, tmp_path):
    """A run that rebuilt a store after a change of its encoder and stopped before
    training (--until) left the report of the runs on the store before unmarked."""
    workdir = tmp_path / "stores_only"
    shutil.copytree(demo_run, workdir, symlinks=True)
    report = workdir / "results" / "demo" / "report"
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["encoders"]["tabular"]["categorical"] = ["sex"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = snakemake_in(workdir, "--until", "encode_cpu")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "is marked stale (STALE.md)" in run.stderr
    stale = (report / "STALE.md").read_text()
    assert "rebuilt after it" in stale and "clinical/tabular.zarr" in stale
    # the stage-1 summary, which counts that store's verdicts, too
    banner = (workdir / "results" / "demo" / "stage1_summary.md").read_text().split("\n\n")[0]
    assert re.match(r"\*\*Stale summary\.\*\* 1 of the stores it describes were written "
                    r"after it \(first: `results/demo/features/clinical/tabular.zarr`", banner), \
        banner
    assert "did not rebuild the summary" in banner


def test_a_cohort_the_run_does_not_name_is_not_marked_for_what_it_never_built(demo_run,
                                                                                tmp_path):
    """A cohort outside `run_cohorts` whose config names runs and stores it has not built
    yet (a seed and an encoder added, to run later): its report and summary describe
    what they were built from, and a run of other cohorts leaves them unmarked. They
    are marked when what they were built from goes, or is rebuilt: the command a refusal
    prints, `snakemake --force <a cohort's store>`, rebuilds the store of a cohort outside
    `run_cohorts` (MMIST-ccRCC runs through `--config run_cohorts=...`), and the hooks had
    marked the run's cohorts only."""
    workdir = tmp_path / "config_ahead"
    shutil.copytree(demo_run, workdir, symlinks=True)
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    demo = cfg["cohorts"]["demo"]
    demo["benchmark"]["seeds"] = [*demo["benchmark"]["seeds"], 7]
    demo["modalities"]["clinical"]["encoders"].append("tabular_again")
    cfg["encoders"]["tabular_again"] = dict(cfg["encoders"]["tabular"])
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = snakemake_in(workdir, "--config", "run_cohorts=[]")
    assert run.returncode == 0, run.stderr[-4000:]
    assert not (workdir / "results" / "demo" / "report" / "STALE.md").exists(), \
        (workdir / "results" / "demo" / "report" / "STALE.md").read_text()
    summary = (workdir / "results" / "demo" / "stage1_summary.md").read_text()
    assert not summary.startswith("**Stale summary.**"), summary[:300]
    # a store its runs read, gone (a forced rebuild that failed removes it): both marked
    shutil.rmtree(workdir / "results" / "demo" / "features" / "clinical" / "tabular.zarr")
    run = snakemake_in(workdir, "--config", "run_cohorts=[]")
    assert run.returncode == 0, run.stderr[-4000:]
    stale = (workdir / "results" / "demo" / "report" / "STALE.md").read_text()
    assert "clinical/tabular.zarr" in stale, stale
    summary = (workdir / "results" / "demo" / "stage1_summary.md").read_text()
    assert summary.startswith("**Stale summary.** 1 of the stores it describes are not on "
                              "disk"), summary[:300]
    # rebuilt by a target of its own: written after the report and the summary
    run = snakemake_in(workdir, "--config", "run_cohorts=[]", "--force",
                       "results/demo/features/clinical/tabular.zarr")
    assert run.returncode == 0, run.stderr[-4000:]
    stale = (workdir / "results" / "demo" / "report" / "STALE.md").read_text()
    assert "rebuilt after it" in stale and "clinical/tabular.zarr" in stale, stale
    summary = (workdir / "results" / "demo" / "stage1_summary.md").read_text()
    assert summary.startswith("**Stale summary.** 1 of the stores it describes were written "
                              "after it"), summary[:300]


def test_a_manifest_rebuilt_alike_leaves_the_stage1_summary_unmarked(demo_run, tmp_path):
    """A manifest job rewrites the adapter's QC table with the same bytes, and the
    stores it describes stay: the summary, marked for the table's newer time, said it
    described stores rebuilt since (and stayed so where Snakemake, comparing a small
    file's checksum, reran nothing after the manifest)."""
    workdir = tmp_path / "manifest_alike"
    shutil.copytree(demo_run, workdir, symlinks=True)
    run = snakemake_in(workdir, "--forcerun", "manifest", "--until", "manifest")
    assert run.returncode == 0, run.stderr[-4000:]
    summary = (workdir / "results" / "demo" / "stage1_summary.md").read_text()
    assert summary.startswith("# Stage 1 summary"), summary[:400]
