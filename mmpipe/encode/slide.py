"""CLAM slide encoding: ResNet50-trunc features of every kept tile (the bag, with
level-0 coordinates) and their mean as the slide embedding (CLAM's
``extract_features_fp.py`` keeps the bag; MMIST averages it).

Batches of ``batch_size`` tiles span slide boundaries, so slides of a few tiles still
fill the network's batch. ``loader_workers`` threads read and normalise them
(:func:`mmpipe.encode.prefetch.read_ahead`), each batch cut into one piece per reader,
while the network encodes the batches before them. The batches do not depend on the
number of readers, so neither do the features.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from mmpipe.encode.in_flight import InFlight, forward_queued
from mmpipe.encode.job import build_network
from mmpipe.encode.prefetch import read_ahead
from mmpipe.errors import InputError, SlideError, shared_noted


def setup(job, items) -> None:
    build_network(job)
    if job.cfg.get("keep_bag", True):
        job.bag_item_shape, job.bag_coord_dim = job.feature_shape, 2
        job.bag_coords = "level-0 (x, y) of each tile"


@dataclass
class _Segment:
    """Tiles ``start:stop`` of one slide, within a batch."""
    subject: int                    # index into the items
    grid: object                    # the slide's TileGrid
    start: int
    stop: int

    @property
    def last(self) -> bool:
        return self.stop == len(self.grid)


class _OpenSlides:
    """Each slide opened once, by whichever reader thread gets to it first, and closed
    when its last batch was encoded (OpenSlide handles are safe to share between
    threads). Different slides open in parallel: a read of small slides opens several,
    and opening (the TIFF's directories, the properties) would otherwise queue every
    reader behind one."""

    def __init__(self, mpp_when_missing):
        self.mpp_when_missing = mpp_when_missing
        self.handles: dict[int, object] = {}
        self.opening: dict[int, threading.Lock] = {}  # one per slide being opened
        self.lock = threading.Lock()                   # guards the two dicts

    def get(self, k: int, path):
        from mmpipe.io.slide import open_slide

        with self.lock:
            if k in self.handles:
                return self.handles[k]
            opening = self.opening.setdefault(k, threading.Lock())
        with opening:
            with self.lock:
                if k in self.handles:  # another reader opened it while this one waited
                    return self.handles[k]
            handle = open_slide(path, mpp_when_missing=self.mpp_when_missing)
            with self.lock:
                self.handles[k] = handle
                self.opening.pop(k, None)
            return handle

    def close(self, k: int) -> None:
        with self.lock:
            handle = self.handles.pop(k, None)
        if handle is not None:
            handle.close()

    def close_all(self) -> None:
        for k in list(self.handles):
            self.close(k)


def _fill(segments, size: int):
    """Groups of at most ``size`` tiles, in order, from a stream of segments: a segment
    longer than the room left is split across groups."""
    group, room = [], size
    for seg in segments:
        start = seg.start
        while start < seg.stop:
            stop = min(start + room, seg.stop)
            group.append(_Segment(seg.subject, seg.grid, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                yield group
                group, room = [], size
    if group:
        yield group


def _batches(items, batch_size: int):
    """Batches of ``batch_size`` tiles (the last one may be short), filled across slide
    boundaries: a slide of three tiles does not make the network run a batch of three."""
    from mmpipe.preprocess.tiling import TileGrid

    def whole_slides():
        for k, item in enumerate(items):
            grid = TileGrid.from_frame(item.source[1])
            yield _Segment(k, grid, 0, len(grid))

    yield from _fill(whole_slides(), batch_size)


def _pieces(batches, chunk: int):
    """Each batch cut into reads of at most ``chunk`` tiles, as (segments, closes the
    batch). A read may span slides, so a batch is at most ``ceil(batch_size / chunk)``
    reads (no more than the readers) however few tiles its slides have, and a read-ahead
    of ``2 × readers`` reads holds at least two batches."""
    for batch in batches:
        pieces = list(_fill(batch, chunk))
        for i, piece in enumerate(pieces):
            yield piece, i == len(pieces) - 1


def run(job, items, writer, progress=None) -> None:
    from mmpipe.encoders.clam import imagenet_tensor
    from mmpipe.io.slide import _openslide
    from mmpipe.preprocess.tiling import read_tiles

    batch_size = int(job.cfg.get("batch_size", 32))
    workers = int(job.cfg.get("loader_workers", 0))
    chunk = -(-batch_size // workers) if workers else batch_size  # a batch over the readers
    slides = _OpenSlides(job.params.get("tiling", {}).get("mpp_when_missing"))
    openslide_error = _openslide().OpenSlideError
    # why a slide's first failed read failed: OpenSlide leaves the handle in error for
    # every later call (its level count too), so its later reads are not tried
    broken: dict[int, str] = {}

    def read_segment(seg):
        """(the segment, its tiles normalised or None, why not or None)."""
        if seg.subject in broken:
            return seg, None, broken[seg.subject]
        item = items[seg.subject]
        try:
            slide = slides.get(seg.subject, item.source[0])
            tiles = read_tiles(slide, seg.grid, np.arange(seg.start, seg.stop))
            return seg, imagenet_tensor(tiles), None
        except Exception as err:
            # a slide decoded whole (a plain image) can exhaust the memory: the machine's
            # failure, not the slide's, fails the job (as the volume loop's), where a
            # rejection would have stood in a store that looks finished; it names the
            # slide, as the tiles' arrays' own MemoryError did not
            if shared_noted(err, item.subject_id, item.source[0]):
                raise
            if isinstance(err, openslide_error):
                # a reader thread's read after another's failed one, before it was noted
                err = SlideError(reason=f"OpenSlide: {err}", path=item.source[0])
            elif not isinstance(err, InputError):
                raise
            broken.setdefault(seg.subject, str(err))
            return seg, None, str(err)

    def read(piece):
        segments, closes = piece
        return [read_segment(seg) for seg in segments], closes

    feats: dict[int, list[np.ndarray]] = {}
    failed: set[int] = set()
    batch: list = []
    in_flight = InFlight()

    def encode_batch():
        ready = [x for _, x, _ in batch if x is not None]
        result = forward_queued(job, torch.cat(ready)) if ready else lambda: None
        this_batch = list(batch)
        in_flight.submit(result, lambda out: finish(this_batch, out))
        batch.clear()

    def finish(read_out, out):
        """The batch's tiles to their slides; a slide whose last tiles these are is
        written (or rejected) and closed."""
        out = None if out is None else out.numpy()
        at = 0
        for seg, x, error in read_out:
            k = seg.subject
            if error is None:
                feats.setdefault(k, []).append(out[at:at + len(x)])
                at += len(x)
            elif k not in failed:
                failed.add(k)
                writer.reject(items[k].subject_id, error)
            if seg.last:
                slides.close(k)
                parts = feats.pop(k, [])
                if k not in failed:
                    bag = np.concatenate(parts)
                    writer.write(items[k].subject_id, bag.mean(axis=0), bag=bag,
                                 coords=seg.grid.coords)
                if progress is not None:
                    progress.update(1)

    try:
        pieces = _pieces(_batches(items, batch_size), chunk)
        for read_out, closes in read_ahead(read, pieces, workers):  # two batches ahead
            batch.extend(read_out)
            if closes:
                encode_batch()
        in_flight.drain()
    finally:
        slides.close_all()
