"""One batch in flight: the image loops (Med3D, VGG11 slices, CLAM tiles) queue a batch's
forward, then finish the batch before it (write its subjects) while the device computes.

:func:`~mmpipe.encode.job.forward` waits for its result, so a loop that called it added
the forward's time to its own: on an H200 the Med3D demo job ran at the sum of the two
(2.7–3.0 ms a volume of reading hand-off, loop and store, plus 2.1 ms of forward). With
one batch in flight it should be bound by the slower of the two (not yet measured on a
GPU). The network runs the same operations either way; on the CPU the forward has run by
the time :func:`forward_queued` returns, so only the order of the writes moves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmpipe.encode.job import autocast, forward


def forward_queued(job, x) -> Callable[[], Any]:
    """The network queued on one batch ``x`` (on the CPU), as
    :func:`~mmpipe.encode.job.forward` runs it; the function returned gives the result,
    float32 on the CPU, waiting for it if need be.

    On CUDA the host returns once the kernels are queued: the batch is staged in
    page-locked memory and copied without blocking, the result is copied back the same way
    behind the forward, and an event on the job's device marks the end of that copy,
    which the result waits for. The page-locked blocks come from torch's caching host
    allocator, which does not hand a block out again before the copies queued on it are
    done."""
    if job.device.type != "cuda":
        out = forward(job, x)
        return lambda: out
    import torch

    # on the job's device: an event recorded on another device's stream (the current
    # device, cuda:0, for a job on cuda:1) would be done at once, before the copy
    with torch.cuda.device(job.device):
        x = x.pin_memory().to(job.device, non_blocking=True)
        with autocast(job):
            out = job.net(x).float()
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()

    def result():
        copied.synchronize()
        # a pageable copy (the embeddings, small beside the batch): the loops and the
        # store keep views of a result for a while (a slide's bag until its last tile),
        # which would hold page-locked memory the caching host allocator never gives back
        return host.clone()
    return result


class InFlight:
    """A loop's batches, each finished once the next batch's forward is queued.

    ``submit(result, finish)`` takes a batch's :func:`forward_queued` result and what to do
    with it (write its subjects), then finishes the batch submitted before it; ``drain()``
    finishes the last. Batches are finished in the order they were submitted, so the store
    sees its subjects' writes in the same order as without this."""

    def __init__(self):
        self._last: tuple[Callable[[], Any], Callable[[Any], None]] | None = None

    def submit(self, result: Callable[[], Any], finish: Callable[[Any], None]) -> None:
        # the new batch's forward was queued when its result was made, before this call
        self.drain()
        self._last = (result, finish)

    def drain(self) -> None:
        last, self._last = self._last, None
        if last is not None:
            last[1](last[0]())
