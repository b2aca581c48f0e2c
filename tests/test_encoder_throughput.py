"""``benchmarks/encoder_throughput.py``, what its GPU table rests on: ``--precision``
reaches every encoder that runs a network, and only those (an encoder without one has no
forward to run at a precision), and the bare forward runs as the job runs it."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from mmpipe.config import load_config
from mmpipe.encode import med3d
from mmpipe.encode.inputs import SubjectInput
from mmpipe.encode.job import EncodeJob
from mmpipe.encode.volume import VolumeReading
from mmpipe.encoders.registry import get_encoder_type
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from encoder_throughput import forward_replaced_by_zeros, set_precision  # noqa: E402


def test_precision_reaches_every_network_encoder_and_no_other():
    cfg = load_config(REPO / "config.yaml")
    before = {k: dict(v) for k, v in cfg["encoders"].items()}
    set_precision(cfg, None)
    assert cfg["encoders"] == before
    set_precision(cfg, "bfloat16")
    networks = {k for k, v in before.items() if get_encoder_type(v["type"]).build is not None}
    assert networks and networks != set(before)  # the config has both kinds
    for name, enc in cfg["encoders"].items():
        assert enc.get("precision") == ("bfloat16" if name in networks
                                        else before[name].get("precision"))


def test_the_bare_forward_runs_under_the_jobs_float32_flags(monkeypatch):
    """On CUDA the job turns cuDNN's TF32 off for a float32 encoder; a bare forward timed
    without that ran Med3D 2.4 to 2.8 times faster than the job could (an H200), so the bare
    network is built as the job builds it, flags included."""
    from encoder_throughput import _bare_forward

    import mmpipe.encode.job as job

    calls = []
    real = job.exact_float32
    monkeypatch.setattr(job, "exact_float32",
                        lambda device, precision: calls.append((device.type, precision))
                        or real(device, precision))
    cfg = {"type": "med3d", "depth": 10, "allow_random_init": True,
           "transform": {"resize": [8, 16, 16]}}
    rate = _bare_forward(get_encoder_type("med3d"), cfg, torch.device("cpu"), 1)
    assert rate > 0 and calls == [("cpu", "float32")]


def test_reader_processes_reach_the_volume_encoders_only():
    from encoder_throughput import reader_overrides

    from mmpipe.encoders.registry import ENCODER_TYPES, READS_AHEAD, READS_IN_PROCESSES

    assert READS_IN_PROCESSES <= READS_AHEAD <= set(ENCODER_TYPES)
    cfg = load_config(REPO / "config.yaml")
    for name, enc in cfg["encoders"].items():
        got = reader_overrides(cfg, name, 4, loader_processes=True)
        processes = enc["type"] in READS_IN_PROCESSES
        workers = {"loader_workers": 4} if enc["type"] in READS_AHEAD else {}
        assert got == {**workers, **({"loader_processes": True} if processes else {})}
        assert reader_overrides(cfg, name, None, loader_processes=False) == {}


def test_volume_input_gives_the_demos_encoders_of_its_type_its_transform_and_batch():
    from encoder_throughput import set_volume_input

    cfg = load_config(REPO / "config.yaml")
    before = copy.deepcopy(cfg)
    set_volume_input(cfg, None)
    assert cfg == before
    set_volume_input(cfg, "med3d_resnet18")
    real = before["encoders"]["med3d_resnet18"]
    assert cfg["encoders"]["med3d_demo"]["transform"] == real["transform"]
    assert cfg["encoders"]["med3d_demo"]["batch_size"] == real["batch_size"]
    changed = {k for k in cfg["encoders"] if cfg["encoders"][k] != before["encoders"][k]}
    assert changed == {"med3d_demo"}  # the demo's vgg11_slices, of another type, as it was
    for wrong in ("tabular", "no_such_encoder"):
        with pytest.raises(SystemExit, match=wrong):
            set_volume_input(copy.deepcopy(before), wrong)


def test_the_reader_ceiling_runs_the_med3d_loop_without_its_network():
    """The ceiling's jobs are the Med3D loop's own, with zeros where the forward was: the
    network is never called, every volume is written, and the loop is whole after."""
    class Unreachable(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the network ran")

    rows = {}

    class Writer:
        def write(self, sid, emb, bag=None, coords=None):
            rows[sid] = np.asarray(emb)

    job = EncodeJob(cfg={"batch_size": 2, "loader_workers": 0}, params={}, modality="ct",
                    device=torch.device("cpu"), net=Unreachable(), feature_shape=(4,),
                    state=VolumeReading(lambda sid: torch.ones(1, 4, 4, 4), {}))
    items = [SubjectInput(sid, "ok", "", sid) for sid in ("a", "b", "c")]
    with forward_replaced_by_zeros():
        med3d.run(job, items, Writer())
    assert list(rows) == ["a", "b", "c"] and all((r == 0).all() for r in rows.values())
    with pytest.raises(AssertionError, match="the network ran"):
        med3d.run(job, items, Writer())
