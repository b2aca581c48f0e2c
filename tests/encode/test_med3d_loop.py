"""The Med3D loop batches consecutive volumes: volumes of different sizes (no resize in
the recipe) must each be encoded, whatever the batch size."""

from __future__ import annotations

import numpy as np
import torch

from mmpipe.encode import med3d
from mmpipe.encode.inputs import SubjectInput
from mmpipe.encode.job import EncodeJob
from mmpipe.encode.volume import VolumeReading

# native sizes, as `resize: null` leaves them; two runs of equal sizes and a lone one
SHAPES = {"s0": (8, 16, 16), "s1": (8, 16, 16), "s2": (9, 16, 16), "s3": (9, 16, 16),
          "s4": (8, 16, 16)}


class _Writer:
    def __init__(self):
        self.rows, self.rejected = {}, {}

    def write(self, sid, emb, bag=None, coords=None):
        self.rows[sid] = np.asarray(emb)

    def reject(self, sid, reason):
        self.rejected[sid] = reason


def _volume(sid: str) -> torch.Tensor:
    seed = int(sid[1:])
    return torch.from_numpy(np.random.default_rng(seed).random((1, *SHAPES[sid]),
                                                                dtype=np.float32))


def _encode(batch_size: int) -> _Writer:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten()).eval()
    job = EncodeJob(cfg={"batch_size": batch_size, "loader_workers": 0}, params={},
                    modality="ct", device=torch.device("cpu"), net=net,
                    state=VolumeReading(_volume, {}))
    writer = _Writer()
    med3d.run(job, [SubjectInput(sid, "ok", "", sid) for sid in SHAPES], writer)
    return writer


def test_volumes_of_different_sizes_are_each_encoded_in_any_batch_size():
    alone, batched = _encode(1), _encode(8)
    assert not batched.rejected and list(batched.rows) == list(SHAPES)
    for sid, emb in alone.rows.items():
        assert emb.shape == (4,)
        np.testing.assert_allclose(batched.rows[sid], emb, rtol=1e-5, atol=1e-6)


def test_at_batch_size_one_the_network_gets_the_readers_volume_without_a_copy():
    """MedicalNet's recipe runs one volume a batch: the tensor the reader made is the
    network's input (stacking it copied 45 MB a volume, half the job process's time)."""
    volumes = {sid: _volume(sid) for sid in SHAPES}
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.data_ptr())
            return x.mean(dim=(1, 2, 3, 4))[:, None].expand(-1, 4)

    job = EncodeJob(cfg={"batch_size": 1, "loader_workers": 0}, params={}, modality="ct",
                    device=torch.device("cpu"), net=Spy(),
                    state=VolumeReading(volumes.__getitem__, {}))
    writer = _Writer()
    med3d.run(job, [SubjectInput(sid, "ok", "", sid) for sid in SHAPES], writer)
    assert list(writer.rows) == list(SHAPES)
    assert seen == [volumes[sid].data_ptr() for sid in SHAPES]


def test_a_batch_is_written_once_the_next_batchs_forward_is_queued():
    """On CUDA the host reads and writes while the device computes: the loop queues a
    batch's forward before it writes the batch before it (waiting for each forward added
    the forward's time to the host's), and writes every batch, the last one included."""
    events = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            events.append(("forward", len(x)))
            return x.mean(dim=(1, 2, 3, 4))[:, None].expand(-1, 4)

    class Writer(_Writer):
        def write(self, sid, emb, bag=None, coords=None):
            events.append(("write", sid))
            super().write(sid, emb)

    job = EncodeJob(cfg={"batch_size": 2, "loader_workers": 0}, params={}, modality="ct",
                    device=torch.device("cpu"), net=Spy(), state=VolumeReading(_volume, {}))
    med3d.run(job, [SubjectInput(sid, "ok", "", sid) for sid in SHAPES], Writer())
    # batches: s0 s1 | s2 s3 (another size) | s4
    assert events == [("forward", 2), ("forward", 2), ("write", "s0"), ("write", "s1"),
                      ("forward", 1), ("write", "s2"), ("write", "s3"), ("write", "s4")]
