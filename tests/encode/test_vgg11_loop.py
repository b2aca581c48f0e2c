"""The VGG11 slice loop batches the slices of consecutive volumes together: a volume's
block must not depend on which volumes share its batch, nor on the loader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmpipe.encode import vgg11 as vgg11_loop
from mmpipe.encode.inputs import SubjectInput
from mmpipe.encode.job import EncodeJob
from mmpipe.encode.volume import VolumeReading
from mmpipe.errors import InputError


class _Slices:
    """A stand-in slice transform: ``n`` seeded slices [n, 3, 32, 32]; seed -1 is a file
    that cannot be read."""

    def __call__(self, source):
        seed, n = source
        if seed < 0:
            raise InputError("cannot read it", path=f"vol{seed}.nii.gz")
        return torch.from_numpy(np.random.default_rng(seed).random((n, 3, 32, 32),
                                                                    dtype=np.float32))


class _Writer:
    def __init__(self):
        self.rows, self.rejected = {}, {}

    def write(self, sid, emb, bag=None, coords=None):
        self.rows[sid] = (np.asarray(emb), None if bag is None else np.asarray(bag))

    def reject(self, sid, reason):
        self.rejected[sid] = reason


def _encode(batch_size, workers=0, keep_bag=True, processes=False):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveMaxPool2d(7)).eval()
    job = EncodeJob(cfg={"batch_size": batch_size, "loader_workers": workers,
                         "loader_processes": processes}, params={},
                    modality="mri", device=torch.device("cpu"), net=net,
                    state=VolumeReading(_Slices(), {}))
    if keep_bag:
        job.bag_item_shape = (8, 7, 7)
    items = [SubjectInput(f"v{k}", "ok", "", (seed, n))
             for k, (seed, n) in enumerate([(1, 1), (2, 3), (-1, 2), (4, 1), (5, 6), (6, 1)])]
    writer = _Writer()
    vgg11_loop.run(job, items, writer)
    return writer


@pytest.mark.parametrize("batch_size, workers, processes",
                         [(4, 0, False), (16, 2, False), (16, 2, True)])
def test_blocks_do_not_depend_on_the_batches_volumes_share(batch_size, workers, processes,
                                                          monkeypatch):
    import mmpipe.encode.volume as volume

    started = []

    class Spy(volume.ReaderProcesses):
        def __init__(self, *args, **kwargs):
            started.append(args[1])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(volume, "ReaderProcesses", Spy)
    alone, shared = _encode(1), _encode(batch_size, workers, processes=processes)
    assert started == ([workers] if processes else [])  # processes only when asked for
    assert list(shared.rows) == ["v0", "v1", "v3", "v4", "v5"]
    assert list(shared.rejected) == ["v2"] and "vol-1.nii.gz" in shared.rejected["v2"]
    for sid, (emb, bag) in alone.rows.items():
        assert bag.shape[0] == {"v0": 1, "v1": 3, "v3": 1, "v4": 6, "v5": 1}[sid]
        np.testing.assert_allclose(shared.rows[sid][1], bag, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(emb, bag.max(axis=0))  # HyperMM's max over slices
        np.testing.assert_allclose(shared.rows[sid][0], emb, rtol=1e-5, atol=1e-6)


def test_a_batch_is_written_once_the_next_batchs_forward_is_queued():
    """As the Med3D loop: a batch's blocks are written after the next batch's forwards
    are queued (on CUDA the host works while the device computes), every batch in the
    end, and a volume that cannot be read is rejected when it is read."""
    events = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            events.append(("forward", len(x)))
            return x[:, :1, :7, :7].expand(-1, 8, -1, -1)

    class Writer(_Writer):
        def write(self, sid, emb, bag=None, coords=None):
            events.append(("write", sid))

        def reject(self, sid, reason):
            events.append(("reject", sid))

    job = EncodeJob(cfg={"batch_size": 4, "loader_workers": 0}, params={}, modality="mri",
                    device=torch.device("cpu"), net=Spy(), state=VolumeReading(_Slices(), {}))
    items = [SubjectInput(f"v{k}", "ok", "", (seed, n))
             for k, (seed, n) in enumerate([(1, 3), (2, 1), (-1, 2), (4, 5), (5, 1)])]
    vgg11_loop.run(job, items, Writer())
    # slices: v0 v1 (4) | v3 (5: batches of 4 and 1) | v4
    assert events == [("forward", 4), ("reject", "v2"), ("forward", 4), ("forward", 1),
                      ("write", "v0"), ("write", "v1"), ("forward", 1), ("write", "v3"),
                      ("write", "v4")]
