"""Volume readers in worker processes (``loader_processes: true``), for a GPU node.

A volume's read and MONAI transforms are Python that holds the GIL (4-8 ms a demo
volume), so reader threads do not add up: on a GPU every demo volume job ran at its
Python's pace, about 100 volumes/s whatever the threads. Here each volume is read in a
forked worker process instead. :func:`mmpipe.encode.prefetch.read_ahead` still orders
and bounds the results: its threads each hand one item to the pool and wait, with the
GIL released, so ``workers`` threads keep ``workers`` processes busy.

``fn`` reaches each worker when it is forked, not pickled; each item is pickled to a
worker, and a tensor comes back through shared memory (``torch.multiprocessing``), so
the job's own process spends little a volume (its share is in the reader ceiling of
``benchmarks/encoder_throughput.py``). A worker runs torch on one
thread, as DataLoader's workers do (a forked child must not enter the parent's OpenMP
pool), and dies with the job (``PR_SET_PDEATHSIG`` on Linux) rather than wait on its
queue for ever once the job was killed. A worker that dies (a reader that crashed on a
file, the kernel's out-of-memory killer) fails the job with :class:`ReaderDiedError`
naming a subject in flight: nothing is written for the job, and a rerun starts clean.

Forking a process that holds torch and MONAI costs tens of milliseconds a worker, more
than processes save on a job of a few dozen small volumes; threads stay the default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mmpipe.errors import MmpipeError

_WORKER_FN: Callable | None = None  # a worker's ``fn``, set when it starts


class ReaderDiedError(MmpipeError):
    """A reader process died (crashed or was killed) with subjects in flight."""


class ReaderProcesses:
    """``fn`` run in ``workers`` forked processes: call the instance with an item, from
    any thread, to get ``fn(item)``. A context manager: the workers stop on exit."""

    def __init__(self, fn: Callable, workers: int):
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=_fork_context(),
                                         initializer=_start_worker,
                                         initargs=(fn, os.getpid()))

    def __call__(self, item):
        try:
            return self._pool.submit(_call_worker_fn, item).result()
        except BrokenProcessPool as err:
            raise ReaderDiedError(
                f"a reader process died (crashed, or killed by the system: out of memory?) "
                f"while {_describe(item)} was in flight, maybe in that process; nothing was "
                "written. Rerun with fewer loader_workers, or loader_processes: false to "
                "read in the job's own process") from err

    def __enter__(self) -> ReaderProcesses:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _describe(item) -> str:
    sid, source = getattr(item, "subject_id", None), getattr(item, "source", None)
    if sid is None:
        return repr(item)
    return f"subject {sid!r}" + (f" ({source})" if source is not None else "")


def _fork_context():
    import torch.multiprocessing as torch_mp  # its pickler sends tensors by shared memory

    # fork: a worker inherits ``fn`` (a transform and its state) without pickling it;
    # elsewhere (macOS) the platform's default start method, which pickles it
    return torch_mp.get_context("fork" if sys.platform.startswith("linux") else None)


def _start_worker(fn: Callable, parent: int) -> None:
    global _WORKER_FN
    _WORKER_FN = fn
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the job died before the line above
            os._exit(1)
    import torch

    torch.set_num_threads(1)


def _call_worker_fn(item):
    return _WORKER_FN(item)
