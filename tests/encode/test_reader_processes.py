"""Reading ahead in worker processes (``loader_processes``), as the volume loops do
(``read_ahead`` over :class:`ReaderProcesses`): results in order, tensors back intact,
``fn`` inherited rather than pickled; a subject whose reader crashes is rejected and the
others are read, a reader killed on a subject alone fails the job naming it; the workers
do not outlive a killed job. The thread path's order and
bound are tested in test_slide_loop.py."""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mmpipe.encode.inputs import SubjectInput
from mmpipe.encode.prefetch import read_ahead
from mmpipe.encode.reader_processes import ReaderDiedError, ReaderProcesses

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reader processes are forked on Linux")


def test_processes_keep_order_return_tensors_and_raise_in_turn():
    scale = torch.arange(4.0)

    def fn(i):  # a closure: it reaches the workers by fork, it could not be pickled
        time.sleep(0.01 * (5 - i % 5))  # later items finish first
        if i == 7:
            raise ValueError("item 7")
        return i, os.getpid(), scale * i

    with ReaderProcesses(fn, 2) as in_a_process:
        out = read_ahead(in_a_process, range(12), workers=2, depth=3)
        got = [next(out) for _ in range(7)]
        assert [g[0] for g in got] == list(range(7))
        assert all(torch.equal(t, scale * i) for i, _, t in got)
        assert os.getpid() not in {g[1] for g in got}  # computed in the workers
        with pytest.raises(ValueError, match="item 7"):
            next(out)


def _dies_on(subject: str, sig: signal.Signals):
    def fn(item):
        if item.subject_id == subject:
            faulthandler.disable()  # pytest's would print the crash's traceback
            os.kill(os.getpid(), sig)
        return item.subject_id, None, ""
    return fn


def _rejected(item, reason):
    return item.subject_id, None, reason


def _items(n: int = 6) -> list[SubjectInput]:
    return [SubjectInput(f"s{i}", "ok", "", f"/data/s{i}.nii.gz") for i in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reader_that_crashes_on_a_file_rejects_that_subject_only(workers):
    with ReaderProcesses(_dies_on("s2", signal.SIGSEGV), workers, on_crash=_rejected) as read:
        got = list(read_ahead(read, _items(), workers=workers))
    assert [g[0] for g in got] == [f"s{i}" for i in range(6)]
    assert [g[2] for g in got if g[0] != "s2"] == [""] * 5  # read again, fine
    assert "its reader crashed on it (signal SIGSEGV), read alone" in got[2][2]


def test_a_reader_killed_reading_a_subject_alone_fails_the_job_naming_it():
    # SIGKILL is how the out-of-memory killer ends a process: the node's fault, maybe,
    # not the file's, so the subject is not rejected
    with ReaderProcesses(_dies_on("s2", signal.SIGKILL), 2, on_crash=_rejected) as read:
        out = read_ahead(read, _items(), workers=2)
        assert [next(out)[0], next(out)[0]] == ["s0", "s1"]
        with pytest.raises(ReaderDiedError, match=r"subject 's2' \(/data/s2.nii.gz\): its "
                           r"reader process died \(signal SIGKILL\)") as err:
            next(out)
    assert "loader_processes: false" in str(err.value)


def test_the_volume_loop_rejects_a_volume_its_reader_crashes_on():
    from mmpipe.encode.volume import load_volumes

    test = os.getpid()

    def transform(source):
        if source.endswith("s3.nii.gz"):
            if os.getpid() == test:  # read here, not in a reader process
                raise RuntimeError("read in the test's own process")
            faulthandler.disable()
            os.abort()  # SIGABRT, as a C library's failed assertion
        return torch.full((1, 2, 2, 2), float(source[-8]))

    got = list(load_volumes(_items(), transform, {"loader_workers": 2,
                                                  "loader_processes": True}))
    assert [g[0] for g in got] == [f"s{i}" for i in range(6)]
    sid, tensor, error = got[3]
    assert tensor is None and error.startswith("cannot read or preprocess /data/s3.nii.gz: "
                                               "its reader crashed on it (signal SIGABRT)")
    for i, (_, t, e) in enumerate(got):
        if i != 3:
            assert e is None and torch.equal(t, torch.full((1, 2, 2, 2), float(i)))


def test_workers_die_with_a_killed_job(tmp_path):
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, time
        from mmpipe.encode.prefetch import read_ahead
        from mmpipe.encode.reader_processes import ReaderProcesses

        def fn(i):
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(60)

        with ReaderProcesses(fn, 2) as in_a_process:
            for _ in read_ahead(in_a_process, range(4), workers=2):
                pass
    """)
    job = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_lines(pids)) < 2:
            time.sleep(0.05)
        workers = {int(p) for p in _lines(pids)}
        assert len(workers) == 2
    finally:
        job.kill()  # as SLURM or a user's kill -9 ends a job: no clean-up runs
        job.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    orphans = [p for p in workers if _alive(p)]
    for pid in orphans:  # so that a failure leaves no process behind
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "reader processes outlived their job"


def _lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


class _TwoArgumentError(Exception):
    """Pickles, but does not unpickle (``__init__`` takes two arguments): the pool that
    sends it back breaks, and the job's side of a lone read fails to receive it."""

    def __init__(self, path, why):
        super().__init__(f"{path}: {why}")


def test_a_result_the_job_cannot_receive_fails_the_job_instead_of_hanging():
    import threading

    def fn(i):
        if i == 2:
            raise _TwoArgumentError("/x", "bad")
        return i

    outcome = []

    def job():
        try:
            with ReaderProcesses(fn, 2) as read:
                outcome.append(list(read_ahead(read, range(5), workers=2)))
        except Exception as err:
            outcome.append(err)

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the job waited for ever on its lone reader"
    assert isinstance(outcome[0], TypeError), outcome


def test_a_request_a_breaking_pool_dropped_is_read_alone_not_waited_on_for_ever():
    """Python 3.11's ``terminate_broken`` clears a broken pool's pending requests without
    the lock ``submit`` takes, so a request submitted as the pool broke may never fail.
    Its caller sees the pool broken within ``WATCH_SECONDS``, reads the item alone and
    replaces the pool for the items after. Here the pool is broken by hand and its submit
    returns a future that no one will ever complete: the race's outcome, made certain."""
    import threading
    from concurrent.futures import Future

    with ReaderProcesses(lambda i: i * 10, 1) as read:
        pool = read._pool
        pool.submit = lambda *args, **kwargs: Future()  # dropped: never done, never failed
        pool._broken = "a reader process terminated abruptly"
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(read(3)), daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "the job waited for ever on a dropped request"
        assert outcome == [30]
        assert read._pool is not pool
        assert read(4) == 40  # the new pool reads
