"""End to end: the Snakemake workflow on a tiny demo cohort.

Runs the real rules (demo generator → manifest → DICOM/slide preprocessing →
every encoder → QC) once, then checks the properties users rely on: stores for
every modality, nothing left to do on a second dry-run, and a tiling change that
reruns only the slide jobs.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from mmpipe.layout import CohortLayout
from mmpipe.store import FeatureStore
from tests.conftest import (
    REPO,
    jobs_of,
    mask_mri_t1_by_totalsegmentator,
    snakemake_cmd,
    snakemake_in,
    write_demo_config,
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

def test_the_rebuild_command_the_cli_prints_remakes_its_target_alone(demo_run):
    """The CLI's advice, ``snakemake --forcerun manifest <manifest>``, planned the whole
    benchmark (63 jobs on the demo, every training among them): ``--forcerun`` took the
    file as one more thing to force, and the default target ran."""
    from mmpipe.layout import rebuild_command

    manifest = Path("results") / "demo" / "manifest.parquet"  # as the config's layout names it
    run = snakemake_in(demo_run, "-n", "--nolock", *rebuild_command(manifest).split()[1:])
    assert run.returncode == 0, run.stderr[-4000:]
    assert jobs_of(run.stdout) == {"manifest": 1}, run.stdout[-3000:]


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


def test_second_dry_run_has_nothing_to_do(demo_run):
    run = snakemake_in(demo_run, "-n")
    assert run.returncode == 0, run.stderr
    assert "Nothing to be done" in run.stdout + run.stderr


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


def test_dag_size_does_not_grow_with_the_cohort(tmp_path):
    """Shards are fixed: a 1,000-subject cohort dry-runs with as many jobs as a 10-subject one."""
    counts = []
    for n in (10, 1000):
        workdir = tmp_path / f"n{n}"
        workdir.mkdir()
        write_demo_config(workdir)
        cfg = yaml.safe_load((workdir / "config.yaml").read_text())
        cfg["cohorts"]["demo"]["demo"]["n_subjects"] = n
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        run = snakemake_in(workdir, "-n")
        assert run.returncode == 0, run.stderr
        counts.append(jobs_of(run.stdout))
    assert counts[0] == counts[1]



def test_a_config_key_written_twice_stops_the_workflow(tmp_path):
    """Snakemake reads the config with a loader that keeps the last of two equal keys: a
    second method under a name in use replaced the first, and the workflow ran on."""
    write_demo_config(tmp_path)
    text = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(text.replace(
        "\nmethods:\n", "\nmethods:\n  mmare: {type: mmare, dim: 8}\n", 1))
    run = snakemake_in(tmp_path, "-n")
    assert run.returncode != 0
    assert "the key 'mmare' is written twice" in run.stdout + run.stderr

def test_each_store_is_encoded_by_the_rule_of_its_encoders_kind(tmp_path):
    """The encode rules' wildcard constraints come from the encoder registry: a network
    encoder's store in ``encode`` (one GPU, the profile's CPUs and memory), every other in
    ``encode_cpu``; each store has exactly one of them."""
    from mmpipe.encoders.registry import get_encoder_type

    write_demo_config(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    run = snakemake_in(tmp_path, "-n")
    assert run.returncode == 0, run.stderr
    rule_of = {}
    for block in run.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        out = re.search(r"output: \S+/features/\w+/([\w-]+)\.zarr", block)
        if rule.startswith("encode"):
            rule_of[out.group(1)] = rule
    assert set(rule_of.values()) == {"encode", "encode_cpu"}
    for encoder, rule in rule_of.items():
        network = get_encoder_type(cfg["encoders"][encoder]["type"]).needs_gpu
        assert rule == ("encode" if network else "encode_cpu"), encoder


@pytest.mark.parametrize("device", ["cpu", "auto", "cuda"])
def test_a_network_encoder_asks_for_a_gpu_unless_the_config_runs_on_the_cpu(tmp_path, device):
    """``encode`` asked for gpu=1 under ``device: cpu`` too: on SLURM each network
    encoder went to the GPU partition and left its GPU idle (and a cluster without one
    could not place it); locally the gpu resource ran them one at a time."""
    write_demo_config(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["device"] = device
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = snakemake_in(tmp_path, "-n")
    assert run.returncode == 0, run.stderr
    gpus = {}
    for job in re.split(r"\n\[[^\]]+\]", run.stdout):  # a job's lines follow its time
        rule = re.search(r"^(?:local)?rule (\w+):", job, re.M)
        if rule and rule.group(1).startswith("encode"):
            gpus.setdefault(rule.group(1), set()).add(
                int(re.search(r"resources: .*\bgpu=(\d)", job).group(1)))
    assert gpus == {"encode": {int(device != "cpu")}, "encode_cpu": {0}}, gpus


@pytest.mark.parametrize("device, gpus", [("cpu", 0), ("gpu", 1)])
def test_the_segment_job_asks_for_a_gpu_only_to_run_on_one(tmp_path, device, gpus):
    """The segment rule asked for gpu=1 whatever the device: on SLURM a CPU
    TotalSegmentator run took a GPU-partition slot and left the GPU idle."""
    write_demo_config(tmp_path)
    cfg = mask_mri_t1_by_totalsegmentator(yaml.safe_load((tmp_path / "config.yaml").read_text()),
                                          tmp_path / "weights")
    cfg.setdefault("preprocess", {}).setdefault("totalsegmentator", {})["device"] = device
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = snakemake_in(tmp_path, "-n", "--until", "segment")
    assert run.returncode == 0, run.stderr
    block = run.stdout.split("\nrule segment:")[1].split("\n\n")[0]
    assert re.search(rf"resources: .*\bgpu={gpus}\b", block), block


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_a_training_job_asks_for_a_gpu_only_when_the_config_names_cuda(tmp_path, device):
    """With ``device: cuda`` no training job asked for a GPU: on a SLURM profile each went
    to the CPU partition and stopped there (no CUDA). A scikit-learn baseline never asks."""
    write_demo_config(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["device"] = device
    # a `single` run expands into single_<modality> runs, which no methods entry names
    cfg["cohorts"]["demo"]["benchmark"]["runs"]["single"] = {"feature_sets": ["all"],
                                                             "scenarios": ["natural"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    # the training jobs follow the manifest checkpoint: build it, then plan the rest
    assert snakemake_in(tmp_path, "--until", "manifest").returncode == 0
    run = snakemake_in(tmp_path, "-n")
    assert run.returncode == 0, run.stderr
    gpus = {}
    for block in re.split(r"\nrule train(?:_method)?:", run.stdout)[1:]:
        method = re.search(r"wildcards: .*\bmethod=(\w+)", block).group(1)
        gpus.setdefault(method, set()).add(int(re.search(r"resources: .*\bgpu=(\d)",
                                                         block).group(1)))
    assert gpus.pop("hgb") == {0}
    assert any(m.startswith("single_") for m in gpus), gpus
    assert gpus and all(g == {int(device == "cuda")} for g in gpus.values()), gpus


def test_a_csv_cohorts_files_under_home_are_the_manifest_jobs_inputs(tmp_path, monkeypatch):
    """A csv cohort's table and split files given as ``~/...`` are read from the home
    folder by the adapter (``config_path``), so the manifest job must take them from
    there too: handed to Snakemake as written, ``~/cohort.csv`` was a missing input."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cohort.csv").write_text("id,label,age,sex,smoking,stage,site\n"
                                      "A,0,61,F,never,II,1\nB,1,70,M,former,III,2\n")
    (home / "test.txt").write_text("B\n")
    monkeypatch.setenv("HOME", str(home))
    workdir = tmp_path / "work"
    workdir.mkdir()
    write_demo_config(workdir)
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    demo = cfg["cohorts"]["demo"]
    cfg["cohorts"] = {"mine": {
        "adapter": "csv", "csv": "~/cohort.csv", "subject_column": "id",
        "labels": demo["labels"], "split": {"files": {"test": "~/test.txt"}},
        "modalities": {"clinical": demo["modalities"]["clinical"]},
        "benchmark": {"label": demo["labels"][0],
                      "feature_sets": {"t": {"clinical": "tabular"}}, "runs": {"hgb": ["t"]}}}}
    cfg["run_cohorts"] = ["mine"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = snakemake_in(workdir, "-n", "--until", "manifest")
    assert run.returncode == 0, run.stderr
    block = run.stdout.split("\ncheckpoint manifest:")[1].split("\n\n")[0]
    assert f"input: {home / 'cohort.csv'}, {home / 'test.txt'}" in block, block


def test_no_two_jobs_share_a_log_or_a_benchmark_file(tmp_path):
    """Names may hold a dash: modality ``clin`` with encoder ``x-tab`` and modality
    ``clin-x`` with encoder ``tab`` wrote one log and one timing file, the second job's
    over the first's."""
    (tmp_path / "cohort.csv").write_text("id,label,age,stage\nA,0,61,2\nB,1,70,3\n"
                                         "C,0,55,1\nD,1,66,3\n")
    write_demo_config(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["encoders"].update({"x-tab": {"type": "tabular"}, "tab": {"type": "tabular"}})
    cfg["cohorts"] = {"mine": {
        "adapter": "csv", "csv": "cohort.csv", "subject_column": "id", "labels": ["label"],
        "modalities": {"clin": {"kind": "table", "fields": ["age"], "encoders": ["x-tab"]},
                       "clin-x": {"kind": "table", "fields": ["stage"], "encoders": ["tab"]}},
        "benchmark": {"label": "label", "seeds": [0], "default_scenarios": ["natural"],
                      "feature_sets": {"t": {"clin": "x-tab", "clin-x": "tab"}},
                      "runs": {"hgb": ["t"]}}}}
    cfg["run_cohorts"] = ["mine"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = snakemake_in(tmp_path, "-n")
    assert run.returncode == 0, run.stderr
    for what in ("log", "benchmark"):
        paths = re.findall(rf"^\s+{what}: (\S+)$", run.stdout, flags=re.MULTILINE)
        assert any("clin-x" in p for p in paths), run.stdout
        assert len(paths) == len(set(paths)), sorted(paths)


def test_a_rule_script_holds_the_tokenizers_pool_to_the_jobs_threads():
    """Snakemake limits the OpenMP and BLAS pools to a job's threads; the text encoder's
    tokenizers started one thread per core of the node in a ``threads: 1`` job."""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO / 'workflow/scripts')!r})\n"
        "import _bootstrap\n"
        "class Job:\n    log, threads = [], 1\n"
        "_bootstrap.start(Job)\n"
        "from tokenizers.implementations import BertWordPieceTokenizer\n"
        "vocab = {'[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3, 'a': 4}\n"
        "BertWordPieceTokenizer(vocab=vocab).encode_batch(['a a a'] * 1000)\n"
        "print(os.environ['RAYON_NUM_THREADS'], len(os.listdir('/proc/self/task')))\n")
    env = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out[0] == "1"
    assert int(out[1]) <= 2, out  # the interpreter's thread and one worker
