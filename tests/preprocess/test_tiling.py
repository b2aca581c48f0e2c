"""Tissue detection and tiling: tiles land on tissue, at the right level and size."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("openslide")

from mmpipe.errors import ConfigError, SlideError  # noqa: E402
from mmpipe.io.slide import open_slide  # noqa: E402
from mmpipe.io.tiff_writer import write_pyramidal_tiff  # noqa: E402
from mmpipe.preprocess.tiling import (  # noqa: E402
    TileGrid,
    TilingParams,
    iter_tile_batches,
    read_tiles,
    spread_subset,
    tile_grid,
    tissue_mask,
)

PINK = (225, 140, 195)
PURPLE = (135, 75, 165)
MPP = 0.25  # level 0 of the synthetic slides; levels 1, 2 at 0.5, 1.0


def require(path):
    if not path.exists():
        pytest.skip(f"real data file not found: {path}")
    return path


def _blob_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1536x1024 white glass with a pink disc and a purple rectangle (+ stain texture)."""
    rng = np.random.default_rng(seed)
    height, width = 1024, 1536
    yy, xx = np.mgrid[:height, :width]
    disc = (xx - 400) ** 2 + (yy - 350) ** 2 <= 220**2
    rect = (xx >= 900) & (xx < 1400) & (yy >= 500) & (yy < 950)
    rgb = np.full((height, width, 3), 245, np.int16)
    rgb[disc] = PINK
    rgb[rect] = PURPLE
    rgb += rng.integers(-8, 9, size=rgb.shape, dtype=np.int16)
    return np.clip(rgb, 0, 255).astype(np.uint8), disc | rect


@pytest.fixture(scope="module")
def blob_slide(tmp_path_factory):
    rgb, truth = _blob_image()
    path = write_pyramidal_tiff(tmp_path_factory.mktemp("blobs") / "blobs.tiff", rgb, mpp=MPP,
                                tile=256, n_levels=3, compression="deflate")
    return path, truth


def fast(**kwargs) -> TilingParams:
    """Params for the synthetic slides, with the mask from level 1 (768 px) to keep tests quick."""
    return TilingParams(**{"mask_max_size": 768, **kwargs})


def _truth_fraction(truth: np.ndarray, grid: TileGrid) -> np.ndarray:
    step = round(grid.tile_size * grid.target_mpp / grid.mpp)
    return np.array([truth[y:y + step, x:x + step].sum() / step**2 for x, y in grid.coords])


# -- synthetic slides ------------------------------------------------------------------------

def test_tiles_land_on_the_blobs(blob_slide):
    path, truth = blob_slide
    params = fast(target_mpp=0.5, tile_size=64, max_tiles=1000)
    with open_slide(path) as slide:
        grid = tile_grid(slide, params)
        tiles = read_tiles(slide, grid)
    assert grid.level == 1 and grid.level_mpp == pytest.approx(0.5)
    assert grid.read_size == 64
    true_fraction = _truth_fraction(truth, grid)
    # Every kept tile really lies (mostly) on a blob, and its fraction is about right.
    assert true_fraction.min() >= 0.4
    assert np.abs(true_fraction - grid.tissue_fraction).max() < 0.1
    assert (grid.tissue_fraction >= params.min_tissue_fraction).all()
    # Recall: all 12x8 grid tiles well inside a blob are kept.
    step = 128
    all_xy = [(x, y) for y in range(0, 1024, step) for x in range(0, 1536, step)]
    inside = {(x, y) for x, y in all_xy if truth[y:y + step, x:x + step].mean() >= 0.7}
    kept = {tuple(c) for c in grid.coords.tolist()}
    assert inside and inside <= kept
    # And the pixels read are stained, not glass.
    assert tiles.shape == (len(grid), 64, 64, 3) and tiles.dtype == np.uint8
    assert (tiles.reshape(len(grid), -1).mean(axis=1) < 215).all()


def test_tissue_mask_on_blobs(blob_slide):
    path, truth = blob_slide
    with open_slide(path) as slide:
        mask, ds = tissue_mask(slide, TilingParams(mask_max_size=512))
        full, ds_full = tissue_mask(slide, TilingParams(mask_max_size=4096))
    # 512: coarsest level with a side >= 512 is level 1 (768 px), halved to 384.
    assert ds == pytest.approx(4.0) and mask.shape == (256, 384)
    # No level reaches 4096: level 0 as it is.
    assert ds_full == pytest.approx(1.0) and full.shape == truth.shape
    agreement = (full == truth).mean()
    assert agreement > 0.98
    small_truth = truth[::4, ::4]
    assert (mask == small_truth).mean() > 0.97


def test_read_level_and_read_size_follow_target_mpp(blob_slide):
    path, _ = blob_slide
    with open_slide(path) as slide:
        coarse = tile_grid(slide, fast(target_mpp=1.0, tile_size=32))
        fine = tile_grid(slide, fast(target_mpp=0.3, tile_size=64, max_tiles=4))
        almost = tile_grid(slide, fast(target_mpp=0.998, tile_size=32, max_tiles=4))
        # at 256 px the 1 % tolerance rounds the read to 255 px (256 * 0.995 / 1.0)
        clamped = tile_grid(slide, fast(target_mpp=0.995, tile_size=256, max_tiles=1,
                                        min_tissue_fraction=0.1))
        tiles = read_tiles(slide, fine)
        with pytest.raises(SlideError, match="coarser than target_mpp 0.2.*raise "
                                             "target_mpp to 0.25 or more"):
            tile_grid(slide, fast(target_mpp=0.2))   # it said "lower target_mpp"
    assert (coarse.level, coarse.read_size) == (2, 32)
    # 0.3 um/px lies between levels 0 (0.25) and 1 (0.5): read level 0, shrink 77 -> 64.
    assert (fine.level, fine.read_size) == (0, 77)
    assert tiles.shape == (4, 64, 64, 3)
    # Within the 1 % tolerance the coarser level is used, never enlarged below tile_size.
    assert (almost.level, almost.read_size) == (2, 32)
    assert (clamped.level, clamped.read_size) == (2, 256)


def test_tiles_read_above_level_0_start_on_that_levels_pixels(tmp_path):
    """A 40x scan at 0.2265 um/px tiled at 0.5 reads its level 1: corners at round(col *
    141.3) put half of them between level-1 pixels, which OpenSlide renders blurred by the
    fraction (gradients 12-28 % lower than the aligned read's)."""
    rgb, _ = _blob_image()
    path = write_pyramidal_tiff(tmp_path / "40x.tiff", rgb, mpp=0.2265, tile=256, n_levels=2,
                                compression="deflate")
    with open_slide(path) as slide:
        grid = tile_grid(slide, fast(target_mpp=0.5, tile_size=64, max_tiles=None))
        assert grid.level == 1 and slide.level_downsamples[1] == 2.0
    assert len(grid.coords) > 10
    assert (grid.coords % 2 == 0).all(), grid.coords[(grid.coords % 2 != 0).any(axis=1)]
    # half a level-1 pixel at most from the grid's own step (141.3 level-0 pixels)
    step = 64 * 0.5 / 0.2265
    col, row = np.round(grid.coords / step).T
    assert np.abs(grid.coords - np.stack([col, row], axis=1) * step).max() <= 1.0


def test_white_slide_has_no_tissue(tmp_path):
    rng = np.random.default_rng(1)
    rgb = np.clip(243 + rng.integers(-6, 7, size=(512, 768, 3)), 0, 255).astype(np.uint8)
    path = write_pyramidal_tiff(tmp_path / "white.tiff", rgb, mpp=MPP, compression="deflate")
    with open_slide(path) as slide, pytest.raises(SlideError, match="no tissue found") as info:
        tile_grid(slide, fast(tile_size=64))
    assert info.value.path == str(path)
    assert "tiles checked" in info.value.reason


def test_black_border_is_not_tissue(tmp_path):
    rng = np.random.default_rng(2)
    rgb = np.full((512, 768, 3), 245, np.uint8)
    # A scanner's black frame: dark noise has a meaningless, high HSV saturation.
    rgb[:, :256] = rng.integers(0, 25, size=(512, 256, 3), dtype=np.uint8)
    path = write_pyramidal_tiff(tmp_path / "frame.tiff", rgb, mpp=MPP, compression="deflate")
    with open_slide(path) as slide, pytest.raises(SlideError, match="no tissue found"):
        tile_grid(slide, fast(tile_size=64))


def test_max_tiles_is_deterministic_and_spread(blob_slide):
    path, _ = blob_slide
    with open_slide(path) as slide:
        every = tile_grid(slide, fast(tile_size=64))
        a = tile_grid(slide, fast(tile_size=64, max_tiles=10, seed=3))
        b = tile_grid(slide, fast(tile_size=64, max_tiles=10, seed=3))
    assert len(every) > 15 and len(a) == 10
    assert np.array_equal(a.coords, b.coords)
    kept = {tuple(c) for c in every.coords.tolist()}
    assert {tuple(c) for c in a.coords.tolist()} <= kept
    # Both blobs (disc on the left, rectangle on the right) are sampled.
    assert (a.coords[:, 0] < 700).sum() >= 3 and (a.coords[:, 0] >= 850).sum() >= 3


def test_max_tiles_null_keeps_every_tile_on_tissue_and_the_grid_counts_them(blob_slide):
    """CLAM averages every tissue tile; max_tiles could only cap, and a capped grid did
    not say how many tiles the tissue had (the QC showed the kept count alone)."""
    path, _ = blob_slide
    with open_slide(path) as slide:
        every = tile_grid(slide, fast(tile_size=64, max_tiles=None))
        capped = tile_grid(slide, fast(tile_size=64, max_tiles=10))
    assert len(every) > 15 and every.n_on_tissue == len(every)
    assert len(capped) == 10 and capped.n_on_tissue == len(every)


def test_a_mask_with_tissue_no_tile_covers_enough_is_not_no_tissue(tmp_path):
    """A strip of tissue a quarter of a tile wide: the mask found it, no tile reaches the
    fraction, and the error said "no tissue found"."""
    rgb = np.full((512, 768, 3), 245, np.uint8)
    rgb[:, 48:80] = (150, 60, 140)   # 32 level-0 px of a 128-px tile
    path = write_pyramidal_tiff(tmp_path / "strip.tiff", rgb, mpp=MPP, compression="deflate")
    with open_slide(path) as slide, pytest.raises(SlideError) as info:
        tile_grid(slide, fast(tile_size=64, median_blur=0))
    assert info.value.reason.startswith("no tile has enough tissue (the mask holds ")
    assert "need >= 0.5 (min_tissue_fraction)" in info.value.reason


def test_spread_subset_covers_the_grid():
    row, col = np.divmod(np.arange(25 * 40), 40)
    picks = spread_subset(col, row, 25, seed=0)
    assert len(picks) == 25 and len(set(picks.tolist())) == 25
    assert np.array_equal(picks, np.sort(picks))
    quadrant = (col[picks] >= 20).astype(int) + 2 * (row[picks] >= 12).astype(int)
    assert np.bincount(quadrant, minlength=4).min() >= 4
    assert np.array_equal(spread_subset(col, row, 5000, seed=0), np.arange(1000))


def test_frame_round_trip_and_batches(blob_slide):
    path, _ = blob_slide
    with open_slide(path) as slide:
        grid = tile_grid(slide, fast(tile_size=64, max_tiles=7))
        frame = grid.to_frame("S1")
        assert frame.columns[:10] == ["subject_id", "x", "y", "tissue_fraction", "level",
                                      "read_size", "tile_size", "level_mpp", "mpp", "target_mpp"]
        assert frame.height == 7 and frame["subject_id"].unique().to_list() == ["S1"]
        back = TileGrid.from_frame(frame)
        assert np.array_equal(back.coords, grid.coords) and back.coords.dtype == np.int64
        assert np.array_equal(back.tissue_fraction, grid.tissue_fraction)
        for field in ("level", "read_size", "tile_size", "level_mpp", "mpp", "target_mpp",
                      "mask_downsample"):
            assert getattr(back, field) == getattr(grid, field)
        whole = read_tiles(slide, grid)
        batches = list(iter_tile_batches(slide, back, batch_size=3))
    assert [len(idx) for idx, _ in batches] == [3, 3, 1]
    assert np.array_equal(np.concatenate([idx for idx, _ in batches]), np.arange(7))
    assert np.array_equal(np.concatenate([px for _, px in batches]), whole)
    with pytest.raises(ValueError, match="subjects"):
        TileGrid.from_frame(frame.vstack(grid.to_frame("S2")))


def test_grid_from_another_mpp_is_refused(blob_slide):
    path, _ = blob_slide
    with open_slide(path) as slide:
        grid = tile_grid(slide, fast(tile_size=64, max_tiles=2))
        grid.mpp = 0.3
        with pytest.raises(SlideError, match="um/px"):
            read_tiles(slide, grid)


def test_a_grid_laid_on_another_slide_at_the_path_is_refused(blob_slide, tmp_path):
    """Only the level count and mpp were compared: a slide replaced in place by a re-scan
    at the scanner's mpp and levels was read at the old slide's coordinates (white
    tiles where they fell outside it). The grid records the slide's level-0 size and
    OpenSlide's quickhash, kept through tiles.parquet; a grid written before has neither
    and is read as it was."""
    path, _ = blob_slide
    with open_slide(path) as slide:
        grid = tile_grid(slide, fast(tile_size=64, max_tiles=2))
        assert grid.slide_size == slide.dimensions
        assert grid.slide_quickhash == slide.properties["openslide.quickhash-1"]
        frame = grid.to_frame("s0")
        again = TileGrid.from_frame(frame)
        assert (again.slide_size, again.slide_quickhash) == (grid.slide_size,
                                                             grid.slide_quickhash)
        read_tiles(slide, again)
        wider = TileGrid.from_frame(frame.with_columns(slide_width=pl.col("slide_width") + 1))
        with pytest.raises(SlideError, match="another level-0 size"):
            read_tiles(slide, wider)
        rescan = TileGrid.from_frame(frame.with_columns(slide_quickhash=pl.lit("0" * 64)))
        with pytest.raises(SlideError, match="another OpenSlide quickhash"):
            read_tiles(slide, rescan)
        older = TileGrid.from_frame(frame.drop("slide_width", "slide_height",
                                               "slide_quickhash"))
        assert older.slide_size is None and len(read_tiles(slide, older)) == 2


def test_params_validation_and_provenance():
    params = TilingParams(max_tiles=64, mpp_when_missing=0.25)
    assert params.to_dict()["max_tiles"] == 64
    assert set(params.to_dict()) >= {"target_mpp", "tile_size", "min_tissue_fraction",
                                     "mask_max_size", "saturation_threshold", "median_blur",
                                     "seed", "mpp_when_missing"}
    for bad in ({"target_mpp": 0}, {"max_tiles": 0}, {"min_tissue_fraction": 1.5},
                {"median_blur": 4}, {"mpp_when_missing": -1.0}):
        with pytest.raises(ConfigError):
            TilingParams(**bad)


# -- real slides -----------------------------------------------------------------------------

def test_cmu_small_region(shared_data):
    path = require(shared_data / "slides" / "cmu-1-small-region.svs")
    params = TilingParams(target_mpp=0.5, tile_size=256, max_tiles=1000, min_tissue_fraction=0.5)
    with open_slide(path) as slide:
        grid = tile_grid(slide, params)
        few = tile_grid(slide, TilingParams(max_tiles=6))
        tiles = read_tiles(slide, few)
    assert grid.level == 0 and grid.level_mpp == pytest.approx(0.499)
    assert grid.read_size == round(256 * 0.5 / 0.499) == 257
    assert 10 <= len(grid) <= params.max_tiles
    assert (grid.tissue_fraction >= 0.5).all()
    assert tiles.shape == (6, 256, 256, 3)
    assert (tiles.reshape(6, -1).mean(axis=1) < 225).all()  # stained tissue, not glass
    # Spread over the tissue: the picks span most of its height, not one corner.
    y_all, y_few = grid.coords[:, 1], few.coords[:, 1]
    assert len(few) == 6
    assert np.ptp(y_few) >= 0.5 * np.ptp(y_all)
    assert len(np.unique(y_few)) >= 4


def test_tcga_without_mpp_picks_level_one(shared_data):
    path = require(shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs")
    with pytest.raises(SlideError, match="mpp"):
        open_slide(path)
    with open_slide(path, mpp_when_missing=0.25) as slide:
        grid = tile_grid(slide, TilingParams(target_mpp=0.5, max_tiles=4))
        tiles = read_tiles(slide, grid, indices=[0, 3])
    # Level 1 is 0.25 * 4443 / 2221 = 0.50011 um/px: within 1 % of 0.5, so it is read.
    assert grid.level == 1
    assert grid.level_mpp == pytest.approx(0.25 * 4443 / 2221, rel=1e-3)
    assert grid.read_size == 256
    assert len(grid) == 4 and tiles.shape == (2, 256, 256, 3)
    assert (grid.tissue_fraction >= 0.5).all()


def test_broken_slide(shared_data):
    path = require(shared_data / "slides" / "broken.svs")
    with pytest.raises(SlideError) as info:
        open_slide(path)
    assert info.value.path == str(path) and info.value.reason


# (max, min, OpenCV's S) for 8-bit RGB: cv2.cvtColor(..., COLOR_RGB2HSV)[..., 1], read from
# opencv-python 4 for pixels where a truncated 255 * (max - min) / max is one level lower
OPENCV_SATURATION = [(100, 91, 23), (234, 183, 56), (98, 52, 120), (71, 53, 65),
                     (188, 110, 106), (155, 55, 165), (147, 85, 108), (83, 75, 25),
                     (206, 59, 182)]


def test_the_saturation_is_opencvs_as_clam_thresholds_it():
    """CLAM thresholds OpenCV's HSV saturation; a cast truncated it, so a pixel one level
    above the threshold by OpenCV's rounding was background here."""
    from mmpipe.preprocess.tiling import saturation_mask

    for hi, lo, s in OPENCV_SATURATION:
        rgb = np.array([[[hi, lo, (hi + lo) // 2]]], np.uint8)
        at = TilingParams(saturation_threshold=s - 1, median_blur=1)
        above = TilingParams(saturation_threshold=s, median_blur=1)
        assert saturation_mask(rgb, at)[0].all(), (hi, lo, s)
        assert not saturation_mask(rgb, above)[0].any(), (hi, lo, s)


def test_the_mask_drops_near_white_near_black_and_lone_pixels_and_floors_otsu():
    """Each of the mask's rules on its own (a change to any one passed every test):
    saturated but near-white glare and near-black pen or dust are not tissue; the median
    blur removes a lone saturated pixel; Otsu on a pale, nearly grey field is floored at
    MIN_OTSU_SATURATION instead of splitting its noise into tissue."""
    from mmpipe.preprocess.tiling import MIN_OTSU_SATURATION, saturation_mask

    fixed = TilingParams(saturation_threshold=8, median_blur=1)
    rgb = np.array([[[255, 225, 225], [30, 0, 0], [200, 60, 120]]], np.uint8)
    assert saturation_mask(rgb, fixed)[0].tolist() == [[False, False, True]]

    field = np.full((9, 9, 3), 240, np.uint8)
    field[4, 4] = (200, 60, 120)
    assert saturation_mask(field, fixed)[0].sum() == 1
    assert saturation_mask(field, TilingParams(saturation_threshold=8, median_blur=3))[0].sum() == 0

    rng = np.random.default_rng(0)
    pale = np.full((32, 32, 3), 200, np.uint8)
    pale[..., 0] += rng.integers(0, 5, (32, 32), dtype=np.uint8)  # S of 0-6
    mask, threshold = saturation_mask(pale, TilingParams(median_blur=1,
                                                         saturation_threshold=None))
    assert threshold == MIN_OTSU_SATURATION and not mask.any()


def test_pale_stroma_beside_dense_nuclei_is_tissue_by_default():
    """Otsu, the former default, splits a slide with much tissue inside the tissue: it
    set its threshold between dense haematoxylin and pale eosin stroma, and dropped the
    stroma (a fifth of the tiles of OpenSlide's CMU-1 small region). CLAM's fixed 8 is
    the default; Otsu is there when asked for."""
    from mmpipe.preprocess.tiling import saturation_mask

    rng = np.random.default_rng(0)
    rgb = np.full((64, 96, 3), 243, np.int16)
    rgb[8:56, 8:56] = (110, 60, 160)       # dense nuclei, saturation about 160
    rgb[8:56, 56:88] = (230, 205, 220)     # pale stroma, saturation about 28
    rgb = np.clip(rgb + rng.integers(-3, 4, size=rgb.shape), 0, 255).astype(np.uint8)
    default, threshold = saturation_mask(rgb, TilingParams(median_blur=1))
    assert threshold == 8 and default[8:56, 8:88].all() and not default[:, 90:].any()
    otsu, chosen = saturation_mask(rgb, TilingParams(median_blur=1, saturation_threshold=None))
    assert chosen > 28 and not otsu[8:56, 56:88].any()   # what the former default did


@pytest.mark.parametrize("threshold", [8, None])
@pytest.mark.parametrize("frame", ["green marker", "noisy black border"])
def test_pale_tissue_is_kept_beside_marker_or_a_black_border(tmp_path, frame, threshold):
    """Otsu chose its threshold over every pixel: a green marker's strong saturation, or
    a black border's meaningless one, raised it above pale tissue, which was lost while
    the marker was tiled as tissue. Marker and border are not tissue, and the pale
    tissue stays."""
    rng = np.random.default_rng(3)
    rgb = np.full((512, 768, 3), 243, np.int16)
    tissue = np.zeros((512, 768), bool)
    tissue[96:416, 64:448] = True
    rgb[tissue] = (228, 196, 214)                      # pale eosin
    if frame == "green marker":
        rgb[:, 560:640] = (40, 150, 60)
    else:
        rgb[:, 576:] = rng.integers(0, 26, size=(512, 192, 3))
    rgb = np.clip(rgb + rng.integers(-4, 5, size=rgb.shape), 0, 255).astype(np.uint8)
    path = write_pyramidal_tiff(tmp_path / "slide.tiff", rgb, mpp=MPP, n_levels=2,
                                compression="deflate")
    with open_slide(path) as slide:
        grid = tile_grid(slide, TilingParams(mask_max_size=1536, tile_size=64,
                                             max_tiles=1000, saturation_threshold=threshold))
    step = round(grid.tile_size * grid.target_mpp / grid.mpp)
    on_tissue = [tissue[y:y + step, x:x + step].mean() >= 0.5 for x, y in grid.coords]
    assert all(on_tissue), "a tile off the tissue (marker or border)"
    assert len(grid) >= 0.8 * tissue.sum() / step**2   # the pale tissue is found


def test_green_stained_tissue_is_kept_when_the_marker_exclusion_is_off():
    """A green IHC chromogen or trichrome's light green is tissue: the marker exclusion,
    on by default, is a setting."""
    from mmpipe.preprocess.tiling import saturation_mask

    rgb = np.full((16, 16, 3), 243, np.uint8)
    rgb[4:12, 4:12] = (70, 160, 90)
    on = saturation_mask(rgb, TilingParams(median_blur=1, saturation_threshold=8))[0]
    off = saturation_mask(rgb, TilingParams(median_blur=1, saturation_threshold=8,
                                            exclude_green_marker=False))[0]
    assert not on.any() and off[4:12, 4:12].all() and off.sum() == 64
