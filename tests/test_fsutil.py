"""Atomic writes: killed writers leave nothing that looks finished, and their debris goes;
live writers are left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from mmpipe.fsutil import atomic_dir, atomic_file, sweep_debris, tmp_sibling


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_debris_of_a_dead_writer_is_removed_by_the_next(tmp_path):
    out = tmp_path / "store.zarr"
    dead = tmp_path / f"store.zarr.tmp-{socket.gethostname()}-{_dead_pid()}"
    dead.mkdir()
    (dead / "emb").write_text("half")
    # an old-style name (no host) of a pid that is gone: 12345 was live on a busy machine
    old_style = tmp_path / f"store.zarr.tmp-{_dead_pid()}"
    old_style.mkdir()
    tmp = tmp_sibling(out)
    assert not dead.exists() and not old_style.exists()
    assert tmp.name == f"store.zarr.tmp-{socket.gethostname()}-{os.getpid()}"


def test_a_live_writer_on_this_host_is_left_alone(tmp_path):
    """Two commands writing one output: the second must not delete the first one's work."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f"out.tmp-{socket.gethostname()}-{sleeper.pid}"
        live.mkdir()
        tmp_sibling(tmp_path / "out")
        assert live.exists()
        assert sweep_debris(tmp_path) == [] and live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sweep_debris(tmp_path) == [live] and not live.exists()


def test_another_hosts_temporary_is_swept_by_its_outputs_next_writer_only(tmp_path):
    """A cluster job of a concurrent run may be writing it; the next writer of the same
    output knows it is not (Snakemake lets one job at a time write an output)."""
    other = tmp_path / "out.tmp-node042-12345"
    other.mkdir()
    # the old output a replacement on that host had renamed aside when it was killed
    old = tmp_path / "out.old.tmp-node042-12345"
    old.mkdir()
    assert sweep_debris(tmp_path) == [] and other.exists() and old.exists()
    tmp_sibling(tmp_path / "out")
    assert not other.exists() and not old.exists()


def test_sweep_removes_the_outermost_debris_only_and_nothing_else(tmp_path):
    host = socket.gethostname()
    cell = tmp_path / "runs" / "all" / f"mmare.tmp-{host}-{_dead_pid()}"
    (cell / "natural-0.0" / "seed0.tmp-x-1").mkdir(parents=True)
    keep = [tmp_path / "runs" / "all" / "deepsets" / "seed0" / "metrics.json",
            tmp_path / "raw" / "wsi" / ".tmp-DEMO-001.tiff"]  # not a writer's sibling
    for k in keep:
        k.parent.mkdir(parents=True, exist_ok=True)
        k.write_text("x")
    assert sweep_debris(tmp_path) == [cell]
    assert not cell.exists() and all(k.exists() for k in keep)



def test_the_sweep_keeps_names_that_only_look_like_debris(tmp_path):
    """It walks finished outputs: a shard's volume of subject ``B.tmp-99999`` was deleted
    while the shard's QC still named it, a user's ``summary.csv.tmp-20240611`` went, and a
    number past a pid's range stopped every workflow run with an OverflowError."""
    host = socket.gethostname()
    keep = [tmp_path / "shards" / "ct" / "0" / f"B.tmp-{_dead_pid()}.nii.gz",
            tmp_path / "summary.csv.tmp-20240611",
            tmp_path / "export.tmp-20240611093000",
            tmp_path / f"x.tmp-{host}-20240611093000"]
    for k in keep:
        k.parent.mkdir(parents=True, exist_ok=True)
        k.write_text("x")
    dead = tmp_path / f"out.tmp-{host}-{_dead_pid()}"
    dead.mkdir()
    assert sweep_debris(tmp_path) == [dead]
    assert all(k.exists() for k in keep)

def test_the_next_writer_keeps_names_that_only_look_like_debris(tmp_path):
    """The sweep kept them, but the output's next writer removed a user's
    ``summary.csv.tmp-20240611`` and a ``report.tmp-before-rerun`` folder with its notes."""
    keep = [tmp_path / "summary.csv.tmp-20240611", tmp_path / "summary.csv.tmp-2024-06-11",
            tmp_path / "report.tmp-before-rerun"]
    keep[0].write_text("x")
    keep[1].write_text("x")
    keep[2].mkdir()
    (keep[2] / "notes.md").write_text("x")
    tmp_sibling(tmp_path / "summary.csv")
    tmp_sibling(tmp_path / "report")
    assert keep[0].exists() and keep[1].exists() and (keep[2] / "notes.md").exists()


def test_a_writer_on_a_host_named_by_digits_leaves_debris_its_next_writer_removes(
        tmp_path, monkeypatch):
    """A container's hostname of digits alone read as a user's date: its dead writers'
    folders were kept for good."""
    monkeypatch.setattr(socket, "gethostname", lambda: "123456789012")
    dead = tmp_path / f"out.tmp-123456789012-{_dead_pid()}"
    dead.mkdir()
    assert sweep_debris(tmp_path) == [dead] and not dead.exists()
    dead.mkdir()
    tmp_sibling(tmp_path / "out")
    assert not dead.exists()


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_failed_write_leaves_the_old_output_and_no_temporary(tmp_path, kind):
    out = tmp_path / "out"
    (out.write_text("old") if kind == "file" else (out.mkdir(), (out / "a").write_text("old")))
    writer = atomic_file if kind == "file" else atomic_dir
    with pytest.raises(OSError, match="No space left"), writer(out) as tmp:
        (tmp if kind == "file" else tmp / "a").write_text("new, half")
        raise OSError(28, "No space left on device")
    assert (out.read_text() if kind == "file" else (out / "a").read_text()) == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_file_that_cannot_take_its_place_leaves_no_temporary(tmp_path):
    """`mmpipe predict --out` naming a folder: the rename failed outside the cleanup and
    left the temporary beside it."""
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IsADirectoryError), atomic_file(out) as tmp:
        tmp.write_text("scores")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_that_cannot_take_its_place_puts_the_old_one_back(tmp_path, monkeypatch):
    import mmpipe.fsutil as fsutil

    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("old")
    real = os.replace

    def failing(src, dst):
        if os.path.basename(src).startswith("out.tmp-"):  # the finished folder onto its place
            raise PermissionError(13, "Permission denied")
        real(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", failing)
    with pytest.raises(PermissionError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("new")
    assert (out / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_temporary_that_keeps_its_suffix_is_debris_once_its_writer_is_gone(tmp_path):
    """dicom_to_nifti's temporary ends in .nii.gz (SimpleITK picks its writer by it): the
    sweep's pattern ended in the pid and never saw it, so a killed conversion left it."""
    from mmpipe.fsutil import tmp_keeping_suffix

    mine = tmp_keeping_suffix(tmp_path / "p1.nii.gz", ".nii.gz")
    assert mine.name.startswith(".p1.tmp-") and mine.name.endswith(".nii.gz")
    host = socket.gethostname()
    dead = tmp_path / f".p2.tmp-{host}-{_dead_pid()}.nii.gz"
    dead.write_text("half")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        live = tmp_path / f".p3.tmp-{host}-{sleeper.pid}.nii"  # a writer still at work
        live.write_text("writing")
        assert sweep_debris(tmp_path) == [dead]
        assert live.exists() and not dead.exists()
    finally:
        sleeper.kill()
    with pytest.raises(ValueError, match="kept suffix"):
        tmp_keeping_suffix(tmp_path / "x.zarr", ".zarr")


def test_a_temporary_removed_while_its_job_wrote_it_is_not_installed(tmp_path):
    """A rerun on another host removes the first run's live temporary as debris (it
    cannot ask that host); the first run's later writes made the folder again, holding
    only what came after, and it was installed as the whole output."""
    from mmpipe.fsutil import TemporaryTakenError

    out = tmp_path / "cell"
    with pytest.raises(TemporaryTakenError, match=r"removed while this job wrote it, by "
                                                  r"another run writing it"):
        with atomic_dir(out) as tmp:
            (tmp / "seed0").mkdir()
            import shutil

            shutil.rmtree(tmp)  # the other host's writer of cell
            (tmp / "seed1").mkdir(parents=True)  # a nested atomic_dir makes its parent
    assert not out.exists() and not any(tmp_path.iterdir())


def test_an_atomic_folder_installs_without_its_writers_mark(tmp_path):
    out = tmp_path / "cell"
    with atomic_dir(out) as tmp:
        (tmp / "seed0").mkdir()
    assert sorted(p.name for p in out.iterdir()) == ["seed0"]


def test_a_temporary_made_again_is_refused_where_the_descriptor_vouches_for_it(tmp_path,
                                                                             monkeypatch):
    """On NFS a client may report a removed folder's cached attributes (or a new folder a
    freed inode's number), so the held descriptor alone let a folder made again pass."""
    import shutil

    from mmpipe import fsutil

    out = tmp_path / "cell"
    with pytest.raises(fsutil.TemporaryTakenError):
        with atomic_dir(out) as tmp:
            shutil.rmtree(tmp)  # another host's writer of cell
            (tmp / "seed1").mkdir(parents=True)
            real = os.fstat

            def cached(fd):  # once: the attributes of the folder at the path now
                monkeypatch.setattr(fsutil.os, "fstat", real)
                return os.stat(tmp)

            monkeypatch.setattr(fsutil.os, "fstat", cached)
    assert not out.exists()
