"""The slide loop reads tiles ahead of the network in threads: the features must not
depend on the number of readers, and a slide that breaks after tiling is rejected alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("openslide")

from mmpipe.encode import slide as slide_loop  # noqa: E402
from mmpipe.encode.inputs import SubjectInput  # noqa: E402
from mmpipe.encode.job import EncodeJob  # noqa: E402
from mmpipe.encode.prefetch import read_ahead  # noqa: E402
from mmpipe.io.slide import open_slide  # noqa: E402
from mmpipe.io.tiff_writer import write_pyramidal_tiff  # noqa: E402
from mmpipe.preprocess.tiling import TilingParams, tile_grid  # noqa: E402


class _Writer:
    def __init__(self):
        self.rows, self.rejected = {}, {}

    def write(self, sid, emb, bag=None, coords=None):
        self.rows[sid] = (np.asarray(emb), np.asarray(bag), np.asarray(coords))

    def reject(self, sid, reason):
        self.rejected[sid] = reason


def _slide(path, seed):
    rng = np.random.default_rng(seed)
    rgb = np.full((384, 384, 3), 243, np.uint8)
    rgb[64:352, 48:336] = rng.integers(80, 200, size=(288, 288, 3), dtype=np.uint8)
    return write_pyramidal_tiff(path, rgb, mpp=0.5, tile=128, n_levels=2,
                                compression="deflate")


@pytest.fixture
def slides(tmp_path):
    params = TilingParams(target_mpp=0.5, tile_size=64, max_tiles=5, min_tissue_fraction=0.5,
                          mask_max_size=384, mpp_when_missing=None, seed=0)
    items = []
    for k in range(4):
        path = _slide(tmp_path / f"s{k}.tiff", k)
        with open_slide(path) as s:
            grid = tile_grid(s, params)
        items.append(SubjectInput(f"s{k}", "ok", "", (path, grid.to_frame(f"s{k}"))))
    return items


def _encode(items, workers, batch_size=2):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 7, stride=4), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten()).eval()
    job = EncodeJob(cfg={"batch_size": batch_size, "loader_workers": workers}, params={},
                    modality="wsi", device=torch.device("cpu"), net=net)
    writer = _Writer()
    slide_loop.run(job, items, writer)
    return writer


# batches of 4 tiles over 2 readers: reads of 2 tiles, some spanning two slides
@pytest.mark.parametrize("batch_size, workers", [(2, 3), (4, 2)])
def test_features_do_not_depend_on_the_number_of_readers(slides, batch_size, workers):
    one, three = _encode(slides, 0), _encode(slides, workers, batch_size)
    assert sorted(one.rows) == [f"s{k}" for k in range(4)] and not one.rejected
    for sid, (emb, bag, coords) in one.rows.items():
        assert len(bag) == 5 and np.array_equal(coords, three.rows[sid][2])
        np.testing.assert_array_equal(bag, three.rows[sid][1])
        np.testing.assert_array_equal(emb, three.rows[sid][0])


@pytest.mark.parametrize("batch_size, workers", [(2, 0), (2, 2), (4, 2)])
def test_a_slide_broken_after_tiling_is_rejected_and_the_others_written(slides, batch_size,
                                                                        workers):
    # (4, 2): s0's last tile and the broken s1's first share one read
    path = slides[1].source[0]
    path.write_bytes(path.read_bytes()[:200])
    out = _encode(slides, workers, batch_size)
    assert sorted(out.rows) == ["s0", "s2", "s3"]
    assert list(out.rejected) == ["s1"] and str(path) in out.rejected["s1"]


def _tiff_tile(path, grid_tile) -> tuple[int, int]:
    """(index, file offset) of the level-0 TIFF tile holding ``grid_tile``'s (x, y)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        x, y = (int(v) for v in grid_tile)
        k = (y // page.tilelength) * -(-page.imagewidth // page.tilewidth) + x // page.tilewidth
        return k, page.dataoffsets[k]


@pytest.mark.parametrize("batch_size, workers", [(2, 0), (2, 2), (4, 2)])
def test_a_slide_with_a_bad_tile_mid_slide_is_rejected_and_the_others_written(
        slides, batch_size, workers):
    # OpenSlide leaves a handle that failed a read in error for every later call: the
    # slide's next read (its level count) raised OpenSlide's own error, which failed the
    # job naming no slide, unless the bad tile was in the slide's last read
    from mmpipe.preprocess.tiling import TileGrid

    path, frame = slides[1].source
    coords = TileGrid.from_frame(frame).coords
    (first, _), (second, offset) = _tiff_tile(path, coords[0]), _tiff_tile(path, coords[1])
    assert first != second  # the slide's first tile reads well, its second does not
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(16))
    out = _encode(slides, workers, batch_size)
    assert sorted(out.rows) == ["s0", "s2", "s3"]
    assert list(out.rejected) == ["s1"] and str(path) in out.rejected["s1"]


def _tiles(segments):
    return [(seg.subject, i) for seg in segments for i in range(seg.start, seg.stop)]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_batch_of_small_slides_is_one_read_per_reader(workers):
    # slides of one to three tiles (small biopsies, strict tissue filters): a read per
    # slide made a batch many reads, and the read-ahead depth (counted in reads) then
    # held less than the next batch, so the network waited on the reads
    lengths = [1, 3, 1, 2, 1, 1, 2, 3, 1, 1, 1, 2]
    segments = [slide_loop._Segment(k, list(range(n)), 0, n) for k, n in enumerate(lengths)]
    batch_size = 8
    chunk = -(-batch_size // workers)
    batches = list(slide_loop._fill(segments, batch_size))
    pieces = list(slide_loop._pieces(batches, chunk))
    assert _tiles(p for piece, _ in pieces for p in piece) == _tiles(segments)
    closes = [i for i, (_, last) in enumerate(pieces) if last]
    assert len(closes) == len(batches)
    starts = [0] + [i + 1 for i in closes[:-1]]
    for batch, start, stop in zip(batches, starts, closes, strict=True):
        reads = [piece for piece, _ in pieces[start:stop + 1]]
        assert len(reads) <= workers
        assert all(len(_tiles(r)) <= chunk for r in reads)
        assert _tiles(seg for r in reads for seg in r) == _tiles(batch)


def test_readers_open_different_slides_at_once_and_one_slide_once(monkeypatch):
    import mmpipe.io.slide

    both_opening = threading.Barrier(2, timeout=5)
    opened, lock = [], threading.Lock()

    def open_slide(path, mpp_when_missing=None):
        with lock:
            opened.append(path)
        if path != "same":
            both_opening.wait()  # breaks (an error) unless the other slide opens meanwhile
        time.sleep(0.05)
        return object()

    monkeypatch.setattr(mmpipe.io.slide, "open_slide", open_slide)
    slides = slide_loop._OpenSlides(None)
    got = {}

    def get(key, k, path):
        got[key] = slides.get(k, path)

    threads = [threading.Thread(target=get, args=(key, k, path))
               for key, k, path in [("a", 0, "a.svs"), ("b", 1, "b.svs"),
                                    ("same1", 2, "same"), ("same2", 2, "same")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == ["a", "b", "same1", "same2"] and not both_opening.broken
    assert opened.count("same") == 1 and got["same1"] is got["same2"]


def test_read_ahead_keeps_order_bounds_the_queue_and_raises_in_turn():
    started, lock = [], threading.Lock()

    def slow(i):
        with lock:
            started.append(i)
        time.sleep(0.01 * (5 - i % 5))  # later items finish first
        if i == 7:
            raise ValueError("item 7")
        return i * i

    out = read_ahead(slow, range(20), workers=3, depth=4)
    got = [next(out) for _ in range(7)]
    assert got == [i * i for i in range(7)]
    assert max(started) <= 7 + 4  # never more than `depth` results ahead of the caller
    with pytest.raises(ValueError, match="item 7"):
        next(out)
    assert list(read_ahead(lambda i: -i, range(5), workers=0)) == [0, -1, -2, -3, -4]


def test_a_batch_is_finished_once_the_next_batchs_forward_is_queued(slides):
    """As the volume loops: a batch's tiles reach their slides (and a slide whose last
    tiles they are is written) after the next batch's forward is queued, so on CUDA the
    host works while the device computes; the last batch is finished too."""
    events = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            events.append(("forward", len(x)))
            return x.mean(dim=(2, 3))

    class Writer(_Writer):
        def write(self, sid, emb, bag=None, coords=None):
            events.append(("write", sid, len(bag)))

    job = EncodeJob(cfg={"batch_size": 4, "loader_workers": 0}, params={}, modality="wsi",
                    device=torch.device("cpu"), net=Spy())
    slide_loop.run(job, slides, Writer())
    tiles = [len(item.source[1]) for item in slides]
    batches = [min(4, sum(tiles) - at) for at in range(0, sum(tiles), 4)]
    forwards = [e for e in events if e[0] == "forward"]
    assert forwards == [("forward", n) for n in batches]
    assert [e[1:] for e in events if e[0] == "write"] == list(
        zip([i.subject_id for i in slides], tiles, strict=True))
    # a slide is written after the forward of the batch after the one with its last tile
    for k, end in enumerate(np.cumsum(tiles)):
        last_batch = (end - 1) // 4
        written = events.index(("write", f"s{k}", tiles[k]))
        queued = sum(e[0] == "forward" for e in events[:written])
        assert queued == min(last_batch + 2, len(batches))


@pytest.mark.parametrize("workers", [0, 2])
def test_running_out_of_memory_reading_a_slide_fails_the_job(slides, monkeypatch, workers):
    """A plain-image slide decoded whole hit a MemoryError, which open_slide reports as a
    SlideError: the subject was rejected for good in a store that looked finished."""
    import mmpipe.preprocess.tiling as tiling
    from mmpipe.errors import SlideError

    real = tiling.read_tiles

    def read_tiles(slide, grid, index):
        if slide.path.name == "s1.tiff":
            try:
                raise MemoryError("simulated")
            except MemoryError as err:
                raise SlideError(reason=f"cannot be decoded ({err})", path=slide.path) from err
        return real(slide, grid, index)

    monkeypatch.setattr(tiling, "read_tiles", read_tiles)
    with pytest.raises(SlideError, match="simulated") as raised:
        _encode(slides, workers)
    assert [n.split(" (")[0] for n in raised.value.__notes__] == ["raised on subject 's1'"]

    # the tiles' own arrays short of memory (no SlideError around it): named too
    def tiles_too_large(slide, grid, index):
        if slide.path.name == "s1.tiff":
            raise MemoryError("Unable to allocate 3.00 GiB for an array")
        return real(slide, grid, index)

    monkeypatch.setattr(tiling, "read_tiles", tiles_too_large)
    with pytest.raises(MemoryError) as raised:
        _encode(slides, workers)
    assert [n.split(" (")[0] for n in raised.value.__notes__] == ["raised on subject 's1'"]
