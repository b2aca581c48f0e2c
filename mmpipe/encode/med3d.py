"""Med3D over a cohort: one vector per volume (MedicalNet's global average pool)."""

from __future__ import annotations

import torch

from mmpipe.encode.in_flight import InFlight, forward_queued
from mmpipe.encode.job import build_network
from mmpipe.encode.volume import batch_of, load_volumes, reading_for


def setup(job, items) -> None:
    from mmpipe.preprocess.volume import build_volume_transform

    build_network(job)
    job.state = reading_for(job, items, build_volume_transform)


def run(job, items, writer, progress=None) -> None:
    batch_size = int(job.cfg.get("batch_size", 1))
    pending: list[tuple[str, torch.Tensor]] = []
    in_flight = InFlight()

    def flush():
        if not pending:
            return
        subjects = [sid for sid, _ in pending]

        def finish(out):
            for sid, emb in zip(subjects, out.numpy(), strict=True):
                writer.write(sid, emb)
        in_flight.submit(forward_queued(job, batch_of([t for _, t in pending])), finish)
        pending.clear()

    for sid, tensor, error in load_volumes(items, job.state.transform, job.cfg,
                                           job.state.refused):
        if error:
            writer.reject(sid, error)
        else:
            # a batch holds volumes of one shape: without a resize (`resize: null`) sizes
            # differ, and stacking them failed the whole job, not one subject
            if pending and pending[0][1].shape != tensor.shape:
                flush()
            pending.append((sid, tensor))
            if len(pending) == batch_size:
                flush()
        if progress is not None:
            progress.update(1)
    flush()
    in_flight.drain()
