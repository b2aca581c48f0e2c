"""``benchmark.train_jobs``: one job per cell or one per (feature set, method), the
same runs on disk either way, and a switch between them retrains once.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import (
    jobs_of,
    snakemake_in,
    write_demo_config,
)

pytestmark = pytest.mark.slow


def test_method_jobs_train_every_cell_and_rerun_per_method(demo_run, tmp_path):
    """`train_jobs: method` (the demo's): one job per (feature set, method), the same
    runs on disk, and a changed MMARE hyper-parameter reruns MMARE's one job."""
    workdir = tmp_path / "method"
    shutil.copytree(demo_run, workdir, symlinks=True)
    shutil.rmtree(workdir / "results" / "demo" / "runs")
    write_demo_config(workdir, train_jobs="method")
    dry = snakemake_in(workdir, "-n")
    assert dry.returncode == 0, dry.stderr
    assert jobs_of(dry.stdout) == {"train_method": 4, "benchmark_report": 1, "all": 1}
    run = snakemake_in(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    results = workdir / "results" / "demo"
    cells = sorted(p.parent.parent.relative_to(results / "runs").as_posix()
                   for p in results.glob("runs/*/*/*/seed0/metrics.json"))
    assert cells == sorted(p.parent.parent.relative_to(demo_run / "results" / "demo" / "runs")
                           .as_posix() for p in (demo_run / "results" / "demo")
                           .glob("runs/*/*/*/seed0/metrics.json"))
    assert (results / "logs" / "train" / "all" / "mmare.log").is_file()
    assert "mmare" in (results / "report" / "results.md").read_text()

    write_demo_config(workdir, mmare_overrides={"dropout": 0.2}, train_jobs="method")
    dry = snakemake_in(workdir, "-n")
    assert dry.returncode == 0, dry.stderr
    assert jobs_of(dry.stdout) == {"train_method": 1, "benchmark_report": 1, "all": 1}
    outputs = [line.split("output:")[1].strip() for line in dry.stdout.splitlines()
               if line.strip().startswith("output:") and "/runs/" in line]
    assert [o.split("/runs/")[1] for o in outputs] == [
        "all/mmare, results/demo/train_jobs/all/mmare.done"]


def test_a_switch_of_train_jobs_runs_the_new_modes_jobs_once(demo_run, tmp_path):
    """The runs of `train_jobs: cell` jobs were taken as the method jobs' outputs, of
    which Snakemake had no record: only the report reran, and no later setting or code
    change ever retrained them (the report refused them, and the next plan was the
    report again)."""
    workdir = tmp_path / "switched"
    shutil.copytree(demo_run, workdir, symlinks=True)
    write_demo_config(workdir, train_jobs="method")
    dry = snakemake_in(workdir, "-n")
    assert dry.returncode == 0, dry.stderr
    assert jobs_of(dry.stdout) == {"train_method": 4, "benchmark_report": 1, "all": 1}
    # a setting changed in the other mode and restored on the way back: the cell jobs'
    # flags and records were of the runs before the method jobs rewrote them, so only the
    # report was planned, and it refused MMARE's runs (trained with the changed setting)
    write_demo_config(workdir, mmare_overrides={"dropout": 0.2}, train_jobs="method")
    run = snakemake_in(workdir)
    assert run.returncode == 0, run.stderr[-4000:]
    write_demo_config(workdir)
    dry = snakemake_in(workdir, "-n")
    assert dry.returncode == 0, dry.stderr
    # every cell: the method jobs rewrote them all
    assert jobs_of(dry.stdout) == {"train": 7, "benchmark_report": 1, "all": 1}
    # the cell jobs run short of the report, which stays the method mode's (built on the
    # default settings): back there, the method jobs' flags (removed by the cell jobs)
    # were asked for by that report alone, which had nothing to rebuild, so nothing ran
    # on the cell jobs' runs
    write_demo_config(workdir, train_jobs="method")
    assert snakemake_in(workdir).returncode == 0
    write_demo_config(workdir)
    cells = sorted(str(p.relative_to(workdir)).replace("/runs/", "/train_jobs/") + ".done"
                   for p in (workdir / "results" / "demo" / "runs").glob("*/*/*")
                   if p.is_dir())  # the cell jobs' flags: their runs are there already
    run = snakemake_in(workdir, *cells)
    assert run.returncode == 0, run.stderr[-4000:]
    assert len(cells) == 7 and not (workdir / "results/demo/train_jobs/all/mmare.done").exists()
    write_demo_config(workdir, train_jobs="method")
    dry = snakemake_in(workdir, "-n")
    assert dry.returncode == 0, dry.stderr
    assert jobs_of(dry.stdout) == {"train_method": 4, "benchmark_report": 1, "all": 1}
