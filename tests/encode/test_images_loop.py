"""The 2-D image set loop: a set max-pooled over its images, each image's bag coordinate
its index among all the subject's files in name order (also under ``max_images``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmpipe.encode import images as images_loop
from mmpipe.encode.inputs import SubjectInput
from mmpipe.encode.job import EncodeJob
from mmpipe.errors import InputError


class _ByName:
    """A stand-in image transform: image ``k.png`` becomes a constant [3, 8, 8] of ``k``;
    a file named ``broken`` cannot be read."""

    def __call__(self, path):
        if "broken" in path.name:
            raise InputError("cannot read it", path=path)
        return torch.full((3, 8, 8), float(path.stem.split("_")[0]))


class _Writer:
    def __init__(self):
        self.rows, self.rejected = {}, {}

    def write(self, sid, emb, bag=None, coords=None, note=""):
        self.rows[sid] = (np.asarray(emb), bag, coords, note)

    def reject(self, sid, reason):
        self.rejected[sid] = reason


def _run(source, max_images):
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    job = EncodeJob(cfg={"batch_size": 2, "max_images": max_images}, params={},
                    modality="histology", device=torch.device("cpu"), net=net,
                    state=_ByName())
    job.bag_item_shape = (3,)
    writer = _Writer()
    images_loop.run(job, [SubjectInput("p1", "ok", "", source)], writer)
    return writer


def test_bag_coordinates_index_the_subject_s_files_not_the_images_kept(tmp_path):
    """Under max_images the coordinates counted the kept images (0, 1, 2), though the
    store declares them the index of the image in the subject's set."""
    names = [f"{k}.png" for k in range(10)]
    names[9] = "9_broken.png"
    for name in names:
        (tmp_path / name).write_bytes(b"")
    emb, bag, coords, note = _run(tmp_path, max_images=3).rows["p1"]
    # files 0, 4 and 9 are picked (evenly spaced in name order); 9 cannot be read
    assert coords[:, 0].tolist() == [0, 4]
    assert bag[:, 0].tolist() == [0.0, 4.0] and emb.tolist() == [4.0] * 3
    assert note.startswith("1 of 3 image(s) left out: 9_broken.png")
    emb, bag, coords, _ = _run(tmp_path, max_images=None).rows["p1"]
    assert coords[:, 0].tolist() == list(range(9)) and emb.tolist() == [8.0] * 3


def test_a_folder_that_cannot_be_listed_rejects_its_subject_alone(tmp_path, monkeypatch):
    """A folder the job could not list (permissions, a network share's I/O error) raised
    a bare OSError that failed the job and lost the subjects encoded before it."""
    from tests.conftest import deny_listing

    for subject in ("s0", "s1", "s2"):
        (tmp_path / subject).mkdir()
        (tmp_path / subject / "1.png").write_bytes(b"")
    deny_listing(monkeypatch, lambda folder: folder.name == "s1")
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    job = EncodeJob(cfg={"batch_size": 2}, params={}, modality="histology",
                    device=torch.device("cpu"), net=net, state=_ByName())
    job.bag_item_shape = (3,)
    writer = _Writer()
    images_loop.run(job, [SubjectInput(s, "ok", "", str(tmp_path / s))
                          for s in ("s0", "s1", "s2")], writer)
    assert sorted(writer.rows) == ["s0", "s2"]
    assert "cannot list the folder: Permission denied" in writer.rejected["s1"]


def test_a_folder_on_a_mount_that_times_out_fails_the_job(tmp_path, monkeypatch):
    """A network mount's error listing one folder (an NFS soft mount's timeout) rejected
    that subject alone, in a store that looked finished, where the volume and slide
    loops fail the job on it."""
    import errno

    listed = Path.iterdir

    def iterdir(self):
        if self.name == "s1":
            raise OSError(errno.ETIMEDOUT, "Connection timed out", str(self))
        return listed(self)

    for subject in ("s0", "s1"):
        (tmp_path / subject).mkdir()
        (tmp_path / subject / "1.png").write_bytes(b"")
    monkeypatch.setattr(Path, "iterdir", iterdir)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    job = EncodeJob(cfg={"batch_size": 2}, params={}, modality="histology",
                    device=torch.device("cpu"), net=net, state=_ByName())
    job.bag_item_shape = (3,)
    with pytest.raises(OSError, match="Connection timed out"):
        images_loop.run(job, [SubjectInput(s, "ok", "", str(tmp_path / s))
                              for s in ("s0", "s1")], _Writer())


def test_every_image_left_out_and_every_entry_not_read_is_named(tmp_path):
    """The note named the first five images left out (the rest were in no record), and a
    folder's .webp files and subfolders were left out without a word."""
    for k in range(10):
        (tmp_path / (f"{k}_broken.png" if 2 <= k <= 9 else f"{k}.png")).write_bytes(b"")
    (tmp_path / "b.webp").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "._0.png").write_bytes(b"")   # macOS metadata: no image, not named
    note = _run(tmp_path, max_images=None).rows["p1"][3]
    assert note.startswith("8 of 10 image(s) left out: 2_broken.png: cannot read it")
    assert "also 7_broken.png, 8_broken.png, 9_broken.png" in note
    assert note.endswith("2 entries of the folder not read (not a .png/.jpg/.jpeg/.bmp/"
                         ".tif/.tiff file): b.webp, sub/")
    for name in ("0.png", "1.png"):
        (tmp_path / name).unlink()
    for k in range(2, 10):
        (tmp_path / f"{k}_broken.png").unlink()
    assert _run(tmp_path, max_images=None).rejected["p1"] == (
        "no image file in the subject's folder (2 entries of the folder not read (not a "
        ".png/.jpg/.jpeg/.bmp/.tif/.tiff file): b.webp, sub/)")
