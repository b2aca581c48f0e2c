"""VGG11 slices over a cohort (HyperMM): a (512, 7, 7) block per volume, the element-wise
max over its slices; optionally the per-slice blocks as the store's bag. ``pooling:
mean`` stores the spatial mean of the block instead, (512,) (and each slice's spatial
mean in the bag, whose max is not that embedding: the mean of a max is not the max of
the means): what a method that flattens
its inputs can afford (HAM's hypernetwork generates every weight of its task network, so
four flattened blocks would be 100 352 inputs and 3.2 M generated weights)."""

from __future__ import annotations

import numpy as np
import torch

from mmpipe.encode.in_flight import InFlight, forward_queued
from mmpipe.encode.job import build_network
from mmpipe.encode.volume import batch_of, load_volumes, reading_for
from mmpipe.errors import ConfigError


def setup(job, items) -> None:
    from mmpipe.preprocess.volume import build_slice_transform

    if job.cfg.get("pooling") not in (None, "mean"):
        raise ConfigError(f"encoder {job.cfg.get('name')!r}: vgg11_slices pooling is 'mean' "
                          f"(the block's spatial mean) or null, not {job.cfg['pooling']!r}")
    build_network(job)
    if job.cfg.get("keep_bag", False):
        job.bag_item_shape, job.bag_coord_dim = job.feature_shape, 1
        job.bag_coords = "slice index after preprocessing"
    job.state = reading_for(job, items, build_slice_transform)


def _write(job, writer, sid: str, per_slice: np.ndarray) -> None:
    # HyperMM: one block per volume, the element-wise max over its slices
    emb = per_slice.max(axis=0)
    if job.cfg.get("pooling") == "mean":
        emb, per_slice = emb.mean(axis=(1, 2)), per_slice.mean(axis=(2, 3))
    if job.bag_item_shape is not None:
        coords = np.arange(len(per_slice), dtype=np.int64)[:, None]
        writer.write(sid, emb, bag=per_slice, coords=coords)
    else:
        writer.write(sid, emb)


def run(job, items, writer, progress=None) -> None:
    """Slices of consecutive volumes share the network's batches (``batch_size`` slices),
    so a recipe of one slice per volume (HAM's) still runs full batches; which volumes
    share a batch does not depend on the loader workers."""
    batch_size = int(job.cfg.get("batch_size", 16))
    pending: list[tuple[str, torch.Tensor]] = []
    in_flight = InFlight()

    def flush():
        if not pending:
            return
        slices = batch_of([t for _, t in pending], stack=False)
        blocks = [forward_queued(job, slices[start:start + batch_size])
                  for start in range(0, len(slices), batch_size)]
        counts = [(sid, len(t)) for sid, t in pending]

        def finish(per_slice):
            at = 0
            for sid, n in counts:
                _write(job, writer, sid, per_slice[at:at + n])
                at += n
        in_flight.submit(lambda: torch.cat([block() for block in blocks]).numpy(), finish)
        pending.clear()

    for sid, slices, error in load_volumes(items, job.state.transform, job.cfg,
                                           job.state.refused):
        if error:
            writer.reject(sid, error)
        else:
            pending.append((sid, slices))
            if sum(len(t) for _, t in pending) >= batch_size:
                flush()
        if progress is not None:
            progress.update(1)
    flush()
    in_flight.drain()
