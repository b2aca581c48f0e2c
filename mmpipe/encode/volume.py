"""What the volume loops share (Med3D, VGG11 slices): volumes read and transformed by
``loader_workers`` reader threads (:func:`mmpipe.encode.prefetch.read_ahead`), or
processes with ``loader_processes: true`` (:mod:`mmpipe.encode.reader_processes`), while
the network runs, and the cohort's median spacing. A volume that fails to load or transform
is rejected with the reason and the others go on, and so is a DICOM series that is not CT
under a recipe's ``hu_window`` (:func:`not_in_hounsfield_units`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl
import torch

from mmpipe.encode.prefetch import read_ahead
from mmpipe.encode.reader_processes import ReaderProcesses
from mmpipe.errors import InputError, shared_noted
from mmpipe.layout import SHARD_QC

log = logging.getLogger(__name__)

# The DICOM Modality values (PS3.3 C.7.3.1.1.1) an HU window reads: CT, whose values are
# Hounsfield units, and a series that does not say (no Modality, other OT, a secondary
# capture SC), as in the segment rule. Any other (MR in the scanner's arbitrary units,
# PET and SPECT in counts or SUV, ultrasound, radiographs) a CT window clips to a band of
# nonsense, and the store looked like any other.
MAY_BE_HOUNSFIELD = frozenset({"CT", "", "OT", "SC"})


def _load(item, transform) -> tuple[str, torch.Tensor | None, str | None]:
    try:
        return item.subject_id, transform(item.source), None
    except InputError as err:  # its message names the file already
        return item.subject_id, None, f"cannot read or preprocess: {err}"
    except Exception as err:  # any reader/transform failure rejects this subject only
        if shared_noted(err, item.subject_id, item.source):  # the machine's: the job fails
            raise
        return item.subject_id, None, (f"cannot read or preprocess {item.source}: "
                                       f"{type(err).__name__}: {err}")


def _crashed(item, reason: str) -> tuple[str, None, str]:
    return item.subject_id, None, f"cannot read or preprocess {item.source}: {reason}"


def not_in_hounsfield_units(job, items) -> dict[str, str]:
    """Why each subject's DICOM series cannot take the recipe's ``hu_window``: its DICOM
    Modality, as the series' shard recorded it, says it is not CT
    (:data:`MAY_BE_HOUNSFIELD`). Empty without a window, and for a ``volume`` modality,
    whose NIfTI files do not say."""
    window = (job.cfg.get("transform") or {}).get("hu_window")
    if window is None or job.params.get("kind") != "dicom":
        return {}
    said: dict[Path, dict[str, str]] = {}
    out = {}
    for item in items:
        volume = Path(getattr(item.source, "image", item.source))  # a MaskedVolume's image
        if volume.parent not in said:  # a dicom volume lies in its shard, beside its QC
            qc = pl.read_parquet(volume.parent / SHARD_QC,
                                 columns=["subject_id", "detail", "path"])
            said[volume.parent] = {
                sid: (str(json.loads(detail or "{}").get("modality") or ""), folder)
                for sid, detail, folder in qc.iter_rows()}
        series, folder = said[volume.parent].get(item.subject_id, ("", None))
        if series.strip().upper() not in MAY_BE_HOUNSFIELD:
            out[item.subject_id] = (
                f"the series of {folder or volume}: "  # the DICOM folder, as a shard names it
                f"its DICOM Modality is {series!r}, not CT: its values are not "
                f"Hounsfield units, and the encoder's transform sets hu_window "
                f"{list(window)}: set hu_window: null for a modality that is not CT")
    return out


@dataclass(frozen=True)
class VolumeReading:
    """What a volume loop's setup prepares for its run: the transform, and the subjects
    refused before any is read, with why."""

    transform: Callable | None  # None where every subject is refused
    refused: dict[str, str]


def reading_for(job, items, build: Callable) -> VolumeReading:
    """The volume loops' reading: ``build(recipe, median_spacing=...)`` (the Med3D or the
    slice transform) over the subjects :func:`not_in_hounsfield_units` leaves."""
    recipe = job.cfg.get("transform", {})
    refused = not_in_hounsfield_units(job, items)
    kept = [i for i in items if i.subject_id not in refused]
    if not kept and recipe.get("spacing") == "median":
        return VolumeReading(None, refused)  # every subject refused: none to median over
    return VolumeReading(build(recipe, median_spacing=median_spacing_for(job, recipe, kept)),
                         refused)


def load_volumes(items, transform, cfg, refused: dict[str, str] | None = None
                 ) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
    """(subject, tensor or None, error or None) per item, in order; the encoder ``cfg``'s
    ``loader_workers`` threads, or processes with ``loader_processes``, read ahead (0:
    each volume read when the loop asks for it). A subject in ``refused`` is not read,
    and comes with its reason there."""
    refused = refused or {}
    load = partial(_load, transform=transform)
    workers = int(cfg.get("loader_workers", 0))
    read = [i for i in items if i.subject_id not in refused]
    if workers > 0 and cfg.get("loader_processes", False):
        with ReaderProcesses(load, workers, on_crash=_crashed) as in_a_process:
            yield from _in_order(items, refused, read_ahead(in_a_process, read, workers))
    else:
        yield from _in_order(items, refused, read_ahead(load, read, workers))


def _in_order(items, refused: dict[str, str], loaded: Iterator
              ) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
    try:
        for item in items:
            if item.subject_id in refused:
                yield item.subject_id, None, refused[item.subject_id]
            else:
                yield next(loaded)
    finally:
        loaded.close()  # the readers stop here, before their processes do


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
    """The median spacing of ``items`` (the subjects read) under ``spacing: median``,
    recorded in the job's store attributes (its preprocessing): the recipe says only
    "median", so two cohorts resampled to different grids read as made alike, and
    `mmpipe predict` said nothing."""
    if recipe.get("spacing") != "median":
        return None
    from mmpipe.preprocess.volume import cohort_median_spacing

    # the median over the cohort's volumes (stage 1 sees no split): nnU-Net's rule
    spacing = cohort_median_spacing([i.source for i in items],
                                    orientation=recipe.get("orientation"))
    log.info("median spacing of %d volumes: %s", len(items), spacing)
    job.preprocessing["median_spacing"] = [float(s) for s in spacing]
    return spacing

