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
``benchmarks/encoder_throughput.py``). A worker runs torch on one thread, as
DataLoader's workers do (a forked child must not enter the parent's OpenMP pool), and
ends within a second of the job (a thread watches its parent, as DataLoader's workers
do) rather than wait on its queue for ever once the job was killed.

A worker that dies takes the pool down with every item in flight. Each of those items is
then read again alone, in a process of its own, and the pool is replaced for the items
after them. An item whose lone reader crashes (a fatal signal such as SIGSEGV or
SIGABRT: a reader library failing on that file) is the file's fault, and ``on_crash``
turns it into a result, a rejection in the volume loops; without ``on_crash``, or when
the lone reader is killed (SIGKILL: the kernel's out-of-memory killer, a user) or exits,
the job fails with :class:`ReaderDiedError` naming the subject: a subject is never
rejected for want of memory on one node.

Forking a process that holds torch and MONAI costs tens of milliseconds a worker, more
than processes save on a job of a few dozen small volumes; threads stay the default.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mmpipe.errors import MmpipeError

_WORKER_FN: Callable | None = None  # a worker's ``fn``, set when it starts
WATCH_SECONDS = 0.5  # how often a worker checks that its job is alive
# signals by which a process ends when its own code fails: the file it read is at fault
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE,
                           signal.SIGILL})


class ReaderDiedError(MmpipeError):
    """A reader process died reading a subject alone: killed, or crashed where no
    ``on_crash`` turns a crash into a result."""


class ReaderProcesses:
    """``fn`` run in ``workers`` forked processes: call the instance with an item, from
    any thread, to get ``fn(item)``; ``on_crash(item, reason)`` gives the result for an
    item whose reader crashes on it. A context manager: the workers stop on exit."""

    def __init__(self, fn: Callable, workers: int,
                 on_crash: Callable[[object, str], object] | None = None):
        self._fn, self._workers, self._on_crash = fn, workers, on_crash
        self._lock = threading.Lock()
        self._pool = self._new_pool()
        # fork the workers now, from this thread, not from the first of read_ahead's
        # threads to submit: a child of a thread pool's thread tries to join that thread
        # at its exit (concurrent.futures' exit hook) and ends with status 1
        self._pool.submit(int).result()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self._workers, mp_context=_fork_context(),
                                   initializer=_start_worker, initargs=(self._fn, os.getpid()))

    def __call__(self, item):
        pool = self._pool
        try:
            future = pool.submit(_call_worker_fn, item)
            while True:
                try:
                    return future.result(timeout=WATCH_SECONDS)
                except TimeoutError:
                    # a pool that breaks may drop a request it never fails (Python 3.11's
                    # terminate_broken clears its pending requests without the lock that
                    # submit takes): such a request would be waited on for ever
                    if self._pool is not pool or getattr(pool, "_broken", False):
                        break
        except (BrokenProcessPool, CancelledError):
            pass
        with self._lock:  # the first thread to see it replaces the pool
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
        return self._read_alone(item)

    def _read_alone(self, item):
        ctx = _fork_context()
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_read_and_send, args=(self._fn, item, there, os.getpid()),
                           daemon=True)
        proc.start()
        there.close()
        try:
            received = _receive(here, proc)
        finally:
            # the child waits to be ended, so that a tensor's shared memory stays until
            # this side holds it; ended too when receiving failed, or it would wait for ever
            if proc.is_alive():
                proc.kill()
            proc.join()
            here.close()
        if received is not None:
            ok, out = received
            if not ok:
                raise out
            return out
        code = proc.exitcode
        how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit code {code}")
        if code is not None and -code in CRASH_SIGNALS and self._on_crash is not None:
            return self._on_crash(item, f"its reader crashed on it ({how}), read alone in a "
                                        "process of its own")
        raise ReaderDiedError(
            f"{_describe(item)}: its reader process died ({how}), read alone in a process "
            "of its own after the pool it was read in died. A kill (SIGKILL) is most often "
            "the out-of-memory killer: give the job more memory, fewer loader_workers, or "
            "loader_processes: false")

    def __enter__(self) -> ReaderProcesses:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _receive(conn, proc):
    """What ``proc`` sent on ``conn``, or None when it died first. Polled rather than
    waited on for the end of the pipe: a process forked meanwhile by another thread may
    hold a copy of the pipe's other end."""
    while True:
        if conn.poll(0.05):
            try:
                return conn.recv()
            except EOFError:
                return None
        if not proc.is_alive() and not conn.poll(0):
            return None


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
    # not PR_SET_PDEATHSIG: it follows the thread that forked the worker (one of
    # read_ahead's threads, which end before the pool does), not the job's process
    threading.Thread(target=_exit_with, args=(parent,), daemon=True,
                     name="mmpipe-reader-watchdog").start()
    import torch

    torch.set_num_threads(1)


def _exit_with(parent: int) -> None:
    """End this worker once the job that forked it is gone (its parent changes), as
    DataLoader's workers watch theirs."""
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


def _call_worker_fn(item):
    return _WORKER_FN(item)


def _read_and_send(fn: Callable, item, conn, parent: int) -> None:
    _start_worker(fn, parent)
    try:
        out = (True, fn(item))
    except Exception as err:  # MemoryError included: the job's to raise
        out = (False, err)
    conn.send(out)
    conn.recv()  # wait to be ended: the job holds the result (a tensor's shared memory) then
