"""A change reruns exactly the jobs that read what changed: a method's setting, the
slides' tiling, a table's field, the demo's slides.
"""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from mmpipe.layout import CohortLayout
from tests.conftest import (
    jobs_of,
    snakemake_in,
    write_demo_config,
)

pytestmark = pytest.mark.slow


def test_changing_one_mmare_hyperparameter_reruns_only_mmare(demo_run, tmp_path):
    workdir = tmp_path / "hp"
    shutil.copytree(demo_run, workdir, symlinks=True)
    write_demo_config(workdir, mmare_overrides={"dropout": 0.2})
    run = snakemake_in(workdir, "-n")
    assert run.returncode == 0, run.stderr
    jobs = jobs_of(run.stdout)
    assert set(jobs) == {"train", "benchmark_report", "all"}
    assert jobs["train"] == 2  # mmare × (natural, mcar 0.4), one seed
    outputs = [line.split("output:")[1].strip() for line in run.stdout.splitlines()
               if line.strip().startswith("output:") and "/runs/" in line]
    assert len(outputs) == 2 and all("/runs/all/mmare/" in o for o in outputs), outputs


def test_tiling_change_reruns_only_slidejobs_of(demo_run, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(demo_run, workdir, symlinks=True)
    write_demo_config(workdir, max_tiles=5)
    run = snakemake_in(workdir, "-n")
    assert run.returncode == 0, run.stderr
    jobs = jobs_of(run.stdout)
    assert jobs.get("tile_slides") == 2
    assert jobs.get("encode") == 1  # the clam_resnet50 store of the slides, nothing else
    # and what depends on that store: the runs whose feature set holds it, the report
    assert set(jobs) == {"tile_slides", "encode", "cohort_qc", "train", "benchmark_report", "all"}
    # mmare and deepsets on "all" × 2 scenarios, bd on slide + clinical; not hgb (tabular)
    assert jobs["train"] == 5
    assert "wsi-clam_resnet50" in run.stdout or "features/wsi/clam_resnet50.zarr" in run.stdout


def test_a_split_or_mask_a_failed_rerun_removed_is_rebuilt_and_its_runs_rerun(demo_run,
                                                                              tmp_path):
    """A split or mask job that fails after a change of its settings (new ratios) has its
    output removed and, by a Snakemake bug, the new settings recorded; Snakemake rebuilt no
    removed intermediate while the runs built from it looked current: the next run had
    "Nothing to be done", and the runs of the old split stood. The default target asks for
    them, so a removed one is rebuilt, and the runs that read it retrain."""
    workdir = tmp_path / "gone"
    shutil.copytree(demo_run, workdir, symlinks=True)
    lay = CohortLayout.of(workdir / "results", "demo")
    lay.split(0).unlink()
    run = snakemake_in(workdir, "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = jobs_of(run.stdout)
    assert jobs.get("split") == 1 and jobs.get("train", 0) >= 1, jobs
    assert "benchmark_report" in jobs


def _jobs_ran(run) -> set[tuple[str, str]]:
    """(rule, wildcards without the cohort) of every job a snakemake run ran."""
    ran = re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):\n(?:.*\n)*?\s*wildcards: ([^\n]*)",
                     run.stdout + run.stderr, flags=re.M)
    return {(rule, re.sub(r"cohort=demo,? ?", "", wc)) for rule, wc in ran}


def test_reruns_follow_what_each_job_reads_of_the_manifest(tmp_path):
    """The manifest holds the table's fields, so dropping one rebuilds it; the stage-1
    jobs of the other modalities read their part of it by digest and stay (they all
    reran on the manifest's new mtime: 28 of 29 jobs), and so do the split and the masks,
    which read its subjects, label, split and modality presence (they reran, and with
    them every training job). Its own workflow, not a copy of ``demo_run``: a copy's
    manifest names files at other paths, which reruns every stage-1 job."""
    workdir = tmp_path
    write_demo_config(workdir)
    lay = CohortLayout.of("results", "demo")
    qc, wsi = str(lay.cohort_qc()), str(lay.store("wsi", "clam_resnet50"))
    t1 = str(lay.store("mri_t1", "med3d_demo"))
    hgb = str(lay.cell("clinical_tabular", "hgb", "natural", 0.0))  # its split and mask
    first = snakemake_in(workdir, qc, t1, hgb)
    assert first.returncode == 0, first.stderr[-3000:]
    config = workdir / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    clinical = cfg["cohorts"]["demo"]["modalities"]["clinical"]
    clinical["fields"].remove("site")
    del clinical["prompt"]["phrases"]["site"]
    config.write_text(yaml.safe_dump(cfg))
    run = snakemake_in(workdir, qc, hgb)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = _jobs_ran(run)
    assert jobs == {("manifest", ""), ("clinical_prompts", "modality=clinical"),
                    ("encode", "modality=clinical, encoder=text_minilm"),
                    ("encode_cpu", "modality=clinical, encoder=tabular"),
                    ("cohort_qc", ""),
                    ("train", "feature_set=clinical_tabular, method=hgb, scenario=natural, "
                              "rate=0.0")}, jobs
    again = snakemake_in(workdir, "-n", qc, hgb)
    assert "Nothing to be done" in again.stdout + again.stderr
    # the demo regenerated with slides of another size under the same names: the
    # manifest's rows are the same, the files are not, and the slide jobs rerun (they
    # kept the old slides' features when the digest held the rows alone). The volumes
    # are rewritten only where they change, so the T1 store stays (the rule's output was
    # the folder, which Snakemake empties before the job: every image store reran); no
    # modality comes or goes, so no split or mask is redrawn and the runs on the clinical
    # table alone stay
    cfg["cohorts"]["demo"]["demo"]["slide_size"] = [512, 640]
    config.write_text(yaml.safe_dump(cfg))
    run = snakemake_in(workdir, wsi, t1, hgb)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = _jobs_ran(run)
    assert jobs == {("demo_cohort", ""), ("manifest", ""),
                    ("tile_slides", "modality=wsi, shard=0"),
                    ("tile_slides", "modality=wsi, shard=1"),
                    ("encode", "modality=wsi, encoder=clam_resnet50")}, jobs
