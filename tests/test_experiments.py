"""The paper experiments of ``experiments/`` run from a dataset's download layout to a
report: each on a miniature copy written with the real file names and formats."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
import yaml

from mmpipe.cohorts.demo.ixi import write_ixi
from tests.conftest import REPO, snakemake_in

pytestmark = pytest.mark.slow


def _swap(node, old: str, new: str):
    """The experiment config with every mention of encoder ``old`` replaced by ``new``."""
    if isinstance(node, dict):
        return {k: _swap(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_swap(v, old, new) for v in node]
    return new if node == old else node


def test_ixi_experiment_runs_from_the_download_layout(tmp_path):
    plan = write_ixi(tmp_path / "IXI", n_subjects=24, seed=1)
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    exp = yaml.safe_load((REPO / "experiments" / "ixi_mmare.yaml").read_text())
    # MedicalNet weights cannot be downloaded here: the demo's random-init Med3D stands in
    exp = _swap(exp, "med3d_resnet18", "med3d_demo")
    exp["device"] = "cpu"
    ixi = exp["cohorts"]["ixi"]
    ixi["root"] = str(tmp_path / "IXI")
    ixi["benchmark"].update(seeds=[0], default_scenarios=["natural"], tuning={"trials": 1},
                            runs={"mmare": ["mri"], "logreg": ["mri"]})
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    run = snakemake_in(tmp_path, "--configfile", str(tmp_path / "experiment.yaml"))
    if run.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}"
                         for p in (tmp_path / "results").rglob("*.log"))
        pytest.fail(f"snakemake failed:\n{run.stderr[-4000:]}\n{logs}")
    results = tmp_path / "results" / "ixi"
    manifest = pl.read_parquet(results / "manifest.parquet")
    assert set(manifest["subject_id"]) == set(plan.subjects)
    report = (results / "report" / "results.md").read_text()
    assert "mmare" in report and "logreg" in report
    qc = pl.read_parquet(results / "qc" / "adapter.parquet")
    assert {"skipped", "merged", "conflict"} <= set(qc["status"])
