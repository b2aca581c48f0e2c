"""Reading ahead of the network: ``fn(item)`` for a stream of items, computed by worker
threads while the caller runs the forward pass on earlier results, in order, with at
most ``depth`` results waiting (a volume each in the volume loops, a batch's share of
tiles in the slide loop), so memory stays bounded however long the cohort.

Threads by default, for every image loop. The slide loop: OpenSlide, libtiff and
Pillow decode outside the GIL, so threads read tiles in parallel, and an open slide
handle is shared without pickling it. The volume loops: a volume's read and MONAI
transforms (4 ms at the demo's Med3D input, against about 30 ms of forward) hold the GIL
for little of the forward's time, and a thread starts at once where a DataLoader worker
process took about 0.3 s of every job (``benchmarks/encoder_throughput.py``). Several
threads call one transform: the inference transforms keep no state between calls. The
readers' torch operators (MONAI's resampling) use the job's intra-op threads as the
forward does, so a job given N threads may run up to 2N on its N cores while both work.
On a GPU node the volume loops can read in processes instead
(:mod:`mmpipe.encode.reader_processes`): there each thread hands its item to a process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(fn: Callable[[T], R], items: Iterable[T], workers: int,
               depth: int | None = None) -> Iterator[R]:
    """``fn(item)`` for each item, in the items' order. ``workers`` 0 computes each
    result when it is asked for (no thread); otherwise ``workers`` threads keep up to
    ``depth`` (default ``2 × workers``) results ready. An exception raised by ``fn``
    reaches the caller at that item's turn; a caller that stops early cancels what was
    not started."""
    if workers <= 0:
        yield from map(fn, items)
        return
    depth = max(int(depth or 2 * workers), 1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmpipe-read")
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
