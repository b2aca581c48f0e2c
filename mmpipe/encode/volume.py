"""What the volume loops share (Med3D, VGG11 slices): volumes read and transformed by
``loader_workers`` reader threads (:func:`mmpipe.encode.prefetch.read_ahead`), or
processes with ``loader_processes: true`` (:mod:`mmpipe.encode.reader_processes`), while
the network runs, and the cohort's median spacing. A volume that fails to load or transform
is rejected with the reason and the others go on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial

import torch

from mmpipe.encode.prefetch import read_ahead
from mmpipe.encode.reader_processes import ReaderProcesses
from mmpipe.errors import InputError, out_of_memory

log = logging.getLogger(__name__)


def _load(item, transform) -> tuple[str, torch.Tensor | None, str | None]:
    try:
        return item.subject_id, transform(item.source), None
    except InputError as err:  # its message names the file already
        return item.subject_id, None, f"cannot read or preprocess: {err}"
    except Exception as err:  # any reader/transform failure rejects this subject only
        if out_of_memory(err):  # the machine's, not the subject's: the job fails, reruns
            raise
        return item.subject_id, None, (f"cannot read or preprocess {item.source}: "
                                       f"{type(err).__name__}: {err}")


def _crashed(item, reason: str) -> tuple[str, None, str]:
    return item.subject_id, None, f"cannot read or preprocess {item.source}: {reason}"


def load_volumes(items, transform, cfg
                 ) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
    """(subject, tensor or None, error or None) per item, in order; the encoder ``cfg``'s
    ``loader_workers`` threads, or processes with ``loader_processes``, read ahead (0:
    each volume read when the loop asks for it)."""
    load = partial(_load, transform=transform)
    workers = int(cfg.get("loader_workers", 0))
    if workers > 0 and cfg.get("loader_processes", False):
        with ReaderProcesses(load, workers, on_crash=_crashed) as in_a_process:
            yield from read_ahead(in_a_process, items, workers)
    else:
        yield from read_ahead(load, items, workers)


def batch_of(tensors: list[torch.Tensor], stack: bool = True) -> torch.Tensor:
    """The network's batch of ``tensors``: stacked, one item each, or (``stack=False``)
    joined along their first axis, the VGG11 loop's slices. A lone tensor makes the batch
    without a copy (a view, or the tensor itself): at MedicalNet's input (a 56×448×448
    volume of 45 MB, batch size 1) the copy ``torch.stack`` made cost the job's process
    27 ms of its 47 ms a volume on a CPU core (reader processes reading), and on CUDA
    :func:`~mmpipe.encode.job.forward` copies the batch once more into page-locked
    memory."""
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0) if stack else tensors[0]
    return torch.stack(tensors) if stack else torch.cat(tensors)


def median_spacing_for(job, recipe: dict, items):
    """The cohort's median spacing under ``spacing: median``, recorded in the job's store
    attributes (its preprocessing): the recipe says only "median", so two cohorts
    resampled to different grids read as made alike, and `mmpipe predict` said nothing."""
    if recipe.get("spacing") != "median":
        return None
    from mmpipe.preprocess.volume import cohort_median_spacing

    # the median over the cohort's volumes (stage 1 sees no split): nnU-Net's rule
    spacing = cohort_median_spacing([i.source for i in items],
                                    orientation=recipe.get("orientation"))
    log.info("median spacing of %d volumes: %s", len(items), spacing)
    job.preprocessing["median_spacing"] = [float(s) for s in spacing]
    return spacing

