"""The SLURM check's reading of sacct (tests/cluster/run_demo.py), on rows copied from
the real run's sacct (comments as the plugin wrote them, a group job's included): a
check that passed on anything would prove nothing about the cluster run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cluster.run_demo import (
    PROFILE,
    _minutes,
    asks_for_gpu,
    check_sacct,
    compare_results,
    partitions,
    rule_of,
    write_cluster_config,
)


@pytest.fixture(scope="module")
def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    workdir: Path = tmp_path_factory.mktemp("demo")
    write_cluster_config(workdir)
    return yaml.safe_load((workdir / "config.yaml").read_text())


def _row(jobid, comment, partition="cpu", cpus=1, mem="8000M", limit="01:00:00",
         tres="billing=1,cpu=1,mem=8000M,node=1", state="COMPLETED"):
    return {"JobID": str(jobid), "JobName": "run", "Partition": partition,
            "AllocCPUS": str(cpus), "ReqMem": mem, "Timelimit": limit, "ReqTRES": tres,
            "State": state, "ElapsedRaw": "5", "Comment": comment}


def _good_run() -> list[dict]:
    """The shape of the real run: a group job of four shards, a network and a tabular
    encoder, a train job cancelled and resubmitted."""
    return [
        _row(1, "rule_manifest_wildcards_demo"),
        _row(2, "rule_preprocess_dicom_to_nifti_tile_slides", cpus=4, mem="32000M",
             tres="billing=4,cpu=4,mem=32000M,node=1"),
        _row(3, "rule_encode_wildcards_demo_mri_t1_med3d_demo", "gpu", 8, "32000M",
             "04:00:00", "billing=8,cpu=8,gres/gpu=1,mem=32000M,node=1"),
        _row(4, "rule_encode_cpu_wildcards_demo_clinical_tabular", mem="16000M",
             limit="04:00:00", tres="billing=1,cpu=1,mem=16000M,node=1"),
        _row(5, "rule_train_wildcards_demo_all_mmare_natural_0.0", limit="04:00:00",
             state="CANCELLED by 0"),
        # the retry: Snakemake's attempt 2, twice the time and memory
        _row(6, "rule_train_wildcards_demo_all_mmare_natural_0.0", mem="16000M",
             limit="08:00:00", tres="billing=1,cpu=1,mem=16000M,node=1"),
    ]


PLANNED = {"manifest": 1, "dicom_to_nifti": 2, "tile_slides": 2, "encode": 1,
           "encode_cpu": 1, "train": 1, "all": 1}
CANCELLED = ("5", "rule_train_wildcards_demo_all_mmare_natural_0.0")


def test_the_real_runs_shape_passes(profile, config):
    assert check_sacct(_good_run(), profile, config, PLANNED, CANCELLED) == []


@pytest.mark.parametrize("index,change,expected", [
    (2, {"Partition": "cpu"}, "partition 'cpu', the profile asks 'gpu'"),
    # an encoder that runs no network holds no GPU node
    (3, {"Partition": "gpu"}, "partition 'gpu', the profile asks 'cpu'"),
    (2, {"ReqTRES": "billing=8,cpu=8,mem=32000M,node=1"}, "gpu False, the profile asks True"),
    (3, {"ReqTRES": "billing=1,cpu=1,gres/gpu=1,mem=8000M,node=1"},
     "gpu True, the profile asks False"),
    # a table reader sized as a network encoder
    (3, {"AllocCPUS": "8"}, "cpus 8, the profile asks 1"),
    (3, {"ReqMem": "32000M"}, "mem_mb 32000, the profile asks 16000"),
    # the rule's own resources: `set-resources: encode` does not reach the copy
    (3, {"ReqMem": "8000M", "Timelimit": "01:00:00"}, "mem_mb 8000, the profile asks 16000"),
    (0, {"AllocCPUS": "2"}, "cpus 2, the profile asks 1"),
    (0, {"ReqMem": "4000M"}, "mem_mb 4000, the profile asks 8000"),
    (0, {"ReqMem": "64000M"}, "mem_mb 64000, the profile asks 8000"),  # no --mem: the node
    (1, {"AllocCPUS": "1"}, "cpus 1, the profile asks 4"),  # a group job: its shards' CPUs
    (1, {"ReqMem": "8000M"}, "mem_mb 8000, the profile asks 32000"),
    (0, {"Timelimit": "00:30:00"}, "runtime 30, the profile asks 60"),
    (5, {"State": "FAILED"}, "did not complete"),
    # a retry with the limits that stopped the first submission fails the same way
    (5, {"ReqMem": "8000M", "Timelimit": "04:00:00"}, "mem_mb 8000, the profile asks 16000"),
    (5, {"Timelimit": "04:00:00"}, "runtime 240, the profile asks 480"),
])
def test_a_job_that_differs_from_the_profile_fails(profile, config, index, change, expected):
    rows = _good_run()
    rows[index] = {**rows[index], **change}
    failures = check_sacct(rows, profile, config, PLANNED, CANCELLED)
    assert any(expected in f for f in failures), failures


def test_the_gpu_request_chooses_the_partition(profile):
    """A ``slurm_partition`` in the profile's resources would override the plugin's
    choice from the partition file, and send tabular encoders to GPU nodes again."""
    assert "slurm_partition" not in profile.get("default-resources", {})
    assert not any("slurm_partition" in res for res in profile.get("set-resources", {}).values())
    gpus = sorted(limits.get("max_gpu", 0) > 0 for limits in partitions(profile).values())
    assert gpus == [False, True]


def test_shards_outside_a_group_a_missing_job_and_an_unretried_cancel_fail(profile, config):
    rows = [r for r in _good_run() if r["JobID"] not in ("2", "4", "6")]
    rows.append(_row(7, "rule_dicom_to_nifti_wildcards_demo_ct_0"))
    failures = " | ".join(check_sacct(rows, profile, config, PLANNED, CANCELLED))
    assert "dicom_to_nifti ran as its own SLURM jobs" in failures
    assert "group preprocess: 0 SLURM job(s) for 4 planned jobs, expected 1" in failures
    assert "rule encode_cpu: 0 job(s) in SLURM, 1 planned" in failures
    assert "no later job completed after the cancel" in failures
    assert "no train job was seen" in " ".join(
        check_sacct(_good_run(), profile, config, PLANNED, None))


def test_results_that_differ_or_are_missing_are_reported(tmp_path):
    import numpy as np
    import zarr

    trees = []
    for name, value in (("local", 1.0), ("slurm", 2.0)):
        root = tmp_path / name / "results" / "demo"
        store = zarr.open_group(root / "features" / "ct" / "med3d.zarr", mode="w")
        store.create_array("emb", data=np.zeros((2, 3), dtype="float32"))
        bag = store.create_group("bag")
        bag.create_array("emb", data=np.full((4, 3), value, dtype="float32"))
        trees.append(tmp_path / name)
    (trees[0] / "results" / "demo" / "metrics.json").write_text('{"test": {"auc": 0.5}}')
    diffs, counts = compare_results(*trees)
    assert "results/demo/features/ct/med3d.zarr/bag/emb differs" in diffs
    assert "results/demo/metrics.json: only in the local run" in diffs
    assert "no predictions to compare" in diffs and counts["stores"] == 1


def test_comments_and_time_limits_are_read_as_sacct_writes_them():
    assert rule_of("rule_encode_wildcards_demo_ct_vgg11_slices") == ("encode",
                                                                      "demo_ct_vgg11_slices")
    assert rule_of("rule_benchmark_report") == ("benchmark_report", "")
    assert _minutes("04:00:00") == 240 and _minutes("1-00:00:00") == 1440


def test_a_training_job_asks_for_a_gpu_only_under_cuda(profile, config):
    """``device: cuda`` gives a torch method's training job a GPU (common.smk
    train_gpus); the check expected none for every training job."""
    row = _row(6, "rule_train_wildcards_demo_all_mmare_natural_0.0", "gpu", limit="04:00:00",
               tres="billing=1,cpu=1,gres/gpu=1,mem=8000M,node=1")
    rows = [*_good_run()[:4], row]
    planned = {**PLANNED, "train": 1}
    cuda = {**config, "device": "cuda"}
    failures = " | ".join(check_sacct(rows, profile, cuda, planned, None))
    assert "rule_train" not in failures, failures
    failures = " | ".join(check_sacct(rows, profile, config, planned, None))
    assert "gpu True, the profile asks False" in failures


def test_a_network_encoder_asks_for_no_gpu_under_device_cpu(profile, config):
    """``encode`` asks for a GPU unless the config runs on the CPU (common.smk
    encode_gpus): under ``cpu`` a GPU-partition encoder is a failure, not the norm."""
    on_cpu = {**config, "device": "cpu"}
    failures = " | ".join(check_sacct(_good_run(), profile, on_cpu, PLANNED, CANCELLED))
    assert "gpu True, the profile asks False" in failures, failures
    moved = [_row(3, "rule_encode_wildcards_demo_mri_t1_med3d_demo", "cpu", 8, "32000M",
                  "04:00:00", "billing=8,cpu=8,mem=32000M,node=1")]
    rows = [*_good_run()[:2], *moved, *_good_run()[3:]]
    assert check_sacct(rows, profile, on_cpu, PLANNED, CANCELLED) == []


def test_a_segment_job_asks_for_a_gpu_only_to_run_on_one(config):
    wildcards = "demo_ct"
    assert not asks_for_gpu("segment", wildcards, config)
    on_gpu = {**config, "preprocess": {**config.get("preprocess", {}),
                                       "totalsegmentator": {"device": "gpu"}}}
    assert asks_for_gpu("segment", wildcards, on_gpu)
