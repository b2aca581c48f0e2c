"""The workflow on a tiny demo cohort, end to end: what lands in ``results/``.

``demo_run`` (tests/conftest.py) runs the real rules once (demo generator → manifest →
DICOM/slide preprocessing → every encoder → QC → training → report); these tests read
its outputs: a store for every modality, the benchmark report, Snakemake's report, and
nothing left to do on a second dry-run.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from mmpipe.store import FeatureStore
from tests.conftest import (
    jobs_of,
    snakemake_in,
)

pytestmark = pytest.mark.slow


def test_every_modality_has_a_complete_store(demo_run):
    cfg = yaml.safe_load((demo_run / "config.yaml").read_text())
    results = demo_run / "results" / "demo"
    manifest = pl.read_parquet(results / "manifest.parquet")
    for modality, spec in cfg["cohorts"]["demo"]["modalities"].items():
        for encoder in spec["encoders"]:
            store = FeatureStore(results / "features" / modality / f"{encoder}.zarr")
            f = store.to_numpy()
            assert f.subject_id.tolist() == manifest["subject_id"].to_list()
            assert f.present.sum() > 0, f"{modality}/{encoder} has no subject"
            assert store.attrs["encoder"] == encoder
            assert store.attrs["modality"] == modality
            if store.attrs["encoder_type"] in ("med3d", "vgg11_slices", "clam_resnet50"):
                # no offline weights in the demo: said in plain words
                assert store.attrs["weights_source"] == "random-init"
            if spec["kind"] != "table":
                absent = manifest[f"{modality}_path"].is_null().to_numpy()
                assert not f.present[absent].any()
    qc = pl.read_parquet(results / "qc.parquet")
    assert set(qc["status"].unique()) <= {"ok", "absent", "rejected", "excluded"}
    summary = (results / "stage1_summary.md").read_text()
    assert "RANDOM-INIT" in summary


def test_benchmark_report_and_runs(demo_run):
    results = demo_run / "results" / "demo"
    runs = sorted(results.glob("runs/*/*/*/seed0/metrics.json"))
    assert len(runs) == 7
    table = (results / "report" / "results.md").read_text()
    for method in ("mmare", "deepsets", "hgb", "bd"):
        assert method in table
    assert "Missing at test time: 50 % of the test subjects with the modality lose it" in table
    assert (results / "report" / "metric_vs_rate_auc_testmiss.png").stat().st_size > 0
    assert (results / "report" / "perf_vs_params_auc.png").stat().st_size > 0


def test_snakemake_report_holds_both_stages_with_their_captions(demo_run, tmp_path):
    """`snakemake --report` (README) builds; the stage-1 summary and the benchmark
    report are in it with their captions (workflow/report/*.rst)."""
    report = tmp_path / "report.html"
    run = snakemake_in(demo_run, "--report", str(report))
    assert run.returncode == 0, run.stderr[-3000:]
    html = report.read_text()
    assert "one row per feature store" in html            # stage1.rst
    assert "Missing-modality benchmark of cohort" in html  # benchmark.rst


def test_second_dry_run_has_nothing_to_do(demo_run):
    run = snakemake_in(demo_run, "-n")
    assert run.returncode == 0, run.stderr
    assert "Nothing to be done" in run.stdout + run.stderr


def test_the_rebuild_command_the_cli_prints_remakes_its_target_alone(demo_run):
    """The CLI's advice, ``snakemake --forcerun manifest <manifest>``, planned the whole
    benchmark (63 jobs on the demo, every training among them): ``--forcerun`` took the
    file as one more thing to force, and the default target ran."""
    from mmpipe.layout import rebuild_command

    manifest = Path("results") / "demo" / "manifest.parquet"  # as the config's layout names it
    run = snakemake_in(demo_run, "-n", "--nolock", *rebuild_command(manifest).split()[1:])
    assert run.returncode == 0, run.stderr[-4000:]
    assert jobs_of(run.stdout) == {"manifest": 1}, run.stdout[-3000:]
