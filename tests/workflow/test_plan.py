"""What the workflow plans, from dry-runs on the demo's config: the jobs, their resources
(GPU or not), their inputs and log files; and what a rule script sets up before its job.
Nothing here trains.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from tests.conftest import (
    REPO,
    jobs_of,
    mask_mri_t1_by_totalsegmentator,
    snakemake_in,
    write_demo_config,
)

pytestmark = pytest.mark.slow


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
