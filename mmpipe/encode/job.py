"""What an encoding loop works with: the job's settings, and a store it cannot corrupt.

Each encoder type's loop (``mmpipe.encode.<loop>``, named by the registry) has two
functions: ``setup(job, items)`` builds the network (or fits the encoding) and fills
``job.feature_shape`` and what the store should record; ``run(job, items, writer,
progress)`` encodes the subjects whose input is ready. A loop writes through a
:class:`SubjectWriter`, which rejects one subject whose embedding cannot be stored
(wrong shape, NaN or inf) with the reason and lets the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class EncodeJob:
    cfg: dict[str, Any]            # the encoder's config, with its ``name``
    params: dict[str, Any]         # mmpipe.params.encoder_params of this job
    modality: str
    device: Any                    # torch.device
    net: Any = None
    weights: Any = None            # mmpipe.encoders.weights.WeightsInfo, for a network
    feature_shape: tuple[int, ...] | None = None
    bag_item_shape: tuple[int, ...] | None = None   # per-item features kept (tiles, slices)
    bag_coord_dim: int = 0
    bag_coords: str = ""           # what a bag coordinate means, for the store attributes
    attrs: dict[str, Any] = field(default_factory=dict)   # extra store attributes
    # what setup derived from the cohort that the embeddings depend on (spacing: median's
    # spacing), added to the store's preprocessing and its hash
    preprocessing: dict[str, Any] = field(default_factory=dict)
    state: Any = None              # what setup prepared for run (a transform, fitted values)
    # subjects whose path the adapter rejected (a file not found), with why: they count
    # among the rejected, since a wrong folder rejects every one of them so; a subject a
    # preprocessing stage rejected (a DICOM series too short) was rejected for its own
    # defect, and does not
    rejected_paths: dict[str, str] = field(default_factory=dict)


def _non_finite(arr: np.ndarray) -> int:
    return int(arr.size - np.isfinite(arr).sum())


class SubjectWriter:
    """A :class:`~mmpipe.store.FeatureStoreWriter` as the loops see it.

    ``write`` checks one subject's embedding (and bag) before storing it: a wrong shape
    or a non-finite value rejects that subject with the reason, and the job goes on.
    ``notes`` (subject -> text) from earlier stages (files skipped while reading a DICOM
    folder) become the store's ``reason`` of subjects that are stored.
    """

    def __init__(self, writer, notes: dict[str, str] | None = None):
        self.writer = writer
        self.notes = notes or {}
        self.written = 0
        self.rejected: dict[str, str] = {}  # subject -> why, for the job's own summary
        self.absent = 0  # subjects the loop found without a value (a table of codes)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.writer.feature_shape

    def reject(self, subject_id: str, reason: str) -> None:
        log.warning("rejected subject %r: %s", subject_id, reason)
        self.rejected[subject_id] = reason
        self.writer.mark(subject_id, "rejected", reason)

    def mark(self, subject_id: str, status: str, reason: str) -> None:
        self.writer.mark(subject_id, status, reason)
        self.absent += status == "absent"

    def write(self, subject_id: str, emb, bag=None, coords=None, note: str = "") -> bool:
        """Store one subject; returns False when it was rejected instead. ``note`` (inputs
        the loop left out) joins the earlier stages' note in the store's ``reason``."""
        emb = np.asarray(emb, dtype=np.float32)
        problem = None
        if emb.shape != self.feature_shape:
            problem = (f"embedding of shape {emb.shape}, the store holds "
                       f"{self.feature_shape}")
        elif bad := _non_finite(emb):
            problem = (f"the encoder produced {bad} non-finite value(s) (NaN/inf) of "
                       f"{emb.size}: the input holds NaN/inf or values the network "
                       "cannot take")
        elif bag is not None and (bad := _non_finite(np.asarray(bag, dtype=np.float32))):
            problem = f"{bad} non-finite value(s) (NaN/inf) in the per-item features"
        if problem:
            self.reject(subject_id, problem)
            return False
        self.writer.write(subject_id, emb, bag=bag, coords=coords)
        self.written += 1
        text = "; ".join(t for t in (self.notes.get(subject_id), note) if t)
        if text:
            self.writer.note(subject_id, text)
        return True


def build_network(job: EncodeJob) -> None:
    """The registry's network for ``job`` on the job's device (the builders return it
    frozen, in eval mode), and the feature shape the registry gives for its config.
    A ``precision`` other than float32 is recorded in the store's attributes (and so in
    its encoding signature: its features are not float32 features)."""
    from mmpipe.encoders.registry import get_encoder_type

    etype = get_encoder_type(job.cfg["type"])
    exact_float32(job.device, job.cfg.get("precision", "float32"))
    job.net, job.weights = etype.build(job.cfg, job.device)
    job.feature_shape = etype.feature_shape(job.cfg)
    if job.cfg.get("precision", "float32") != "float32":
        job.attrs["precision"] = job.cfg["precision"]


def exact_float32(device, precision: str) -> None:
    """A float32 encoder on CUDA computes in float32: torch lets cuDNN convolutions (and,
    where set, matmuls) run in TF32 by default on Ampere and later, a ~1e-3 relative
    error that the store would not record and that a CPU run of the same store does not
    have. The encode job's process runs one store, so the flags are set for it."""
    if device.type != "cuda" or precision != "float32":
        return
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def autocast(job: EncodeJob):
    """The context the job's forward passes run in: inference mode, and autocast to the
    encoder's ``precision`` when it is not float32 (on CUDA, and on the CPU where torch
    supports it)."""
    import contextlib

    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    precision = job.cfg.get("precision", "float32")
    if precision != "float32":
        stack.enter_context(torch.autocast(job.device.type, dtype=getattr(torch, precision)))
    return stack


def forward(job: EncodeJob, x):
    """The network on one batch ``x`` (on the CPU), run under :func:`autocast`, returned
    as float32 on the CPU. On CUDA the batch is staged in page-locked memory (torch's
    caching host allocator) and copied without blocking, so the host queues the forward's
    kernels behind the copy instead of waiting for it."""
    if job.device.type == "cuda":
        x = x.pin_memory().to(job.device, non_blocking=True)
    else:
        x = x.to(job.device)
    with autocast(job):
        return job.net(x).float().cpu()
