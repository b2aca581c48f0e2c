"""One batch in flight (:mod:`mmpipe.encode.in_flight`): queued forwards read back as
their own results, and each batch finished once the next is queued. The loops' order is
tested with each loop (``test_med3d_loop``, ``test_vgg11_loop``, ``test_slide_loop``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmpipe.encode.in_flight import InFlight, forward_queued
from mmpipe.encode.job import EncodeJob, exact_float32, forward


def _job(device="cpu"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 16))
    return EncodeJob(cfg={"type": "vgg11_slices"}, params={}, modality="ct",
                     device=torch.device(device), net=net.eval().to(device))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_batches_queued_one_behind_another_give_each_its_own_result(device):
    """On CUDA a queued batch's result is copied back behind its forward without blocking:
    with several batches queued before any is read, each must read back as its own
    forward, not another batch's or a copy not yet done."""
    xs = [torch.randn(n, 3, 16, 16) for n in (4, 1, 3)]
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    try:
        exact_float32(torch.device(device), "float32")
        job = _job(device=device)
        queued = [forward_queued(job, x) for x in xs]
        outs = [result() for result in queued]
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
    for x, out in zip(xs, outs, strict=True):
        assert out.device.type == "cpu" and out.dtype == torch.float32
        torch.testing.assert_close(out, forward(_job(), x), rtol=1e-5, atol=1e-6)


def test_in_flight_finishes_each_batch_once_the_next_is_submitted_and_the_last_on_drain():
    events = []
    in_flight = InFlight()
    for k in range(3):
        events.append(("queued", k))
        in_flight.submit(lambda k=k: k * 10, lambda out: events.append(("finished", out)))
    events.append("drain")
    in_flight.drain()
    in_flight.drain()  # nothing left: finishes nothing twice
    assert events == [("queued", 0), ("queued", 1), ("finished", 0), ("queued", 2),
                      ("finished", 10), "drain", ("finished", 20)]
