"""Tissue detection and tiling of whole-slide images, after CLAM.

CLAM (Lu et al., Nat. Biomed. Eng. 2021; github.com/mahmoodlab/CLAM,
``wsi_core/WholeSlideImage.py::segmentTissue`` and ``create_patches_fp.py``)
finds tissue on a low-resolution image by thresholding the median-blurred HSV
saturation, then lays a grid of non-overlapping 256-px patches over the slide at
20x (about 0.5 um/px) and keeps the patches on tissue. Only coordinates are
kept; pixels are read again from the slide when the encoder runs.

Differences from CLAM, and why:

- the grid is laid at a *physical* resolution (``target_mpp``), not a level
  index, so scans at 20x and 40x give tiles of the same size in microns; the
  read level is the coarsest one that is at least as fine as the target, and
  reads are shrunk (never enlarged) to ``tile_size``;
- tissue is a per-tile *fraction* of mask pixels instead of CLAM's contour
  tests, which is simpler, vectorised and gives a QC number per tile; stricter at the
  edges of tissue, looser on small pieces. CLAM closes the mask (4 px), fills each
  contour but its large holes, drops small pieces (``a_t``), starts a grid at each
  contour's box and keeps a tile when any of four points at its centre ± a quarter tile
  lies inside (``four_pt``). Re-implemented on this grid *without* its area filter, that
  rule kept 54 and 171 tiles of OpenSlide's CMU-1 small region and a TCGA-KIRC slide
  where the fraction rule at 0.5 keeps 36 and 154, every one of ours among them: the
  thin edges of tissue (epidermis on CMU-1) and strips narrower than a tile that
  straddle the grid are left out, 16 % and 4 % of the mask's tissue pixels (7 % and 1 %
  at ``min_tissue_fraction: 0.25``). CLAM's area filter at its default (``a_t: 100``
  reference patches of 512 px, about 6.5 mm² at 0.5 um/px) keeps no tissue of either
  image, both smaller than that; here any piece that covers half a tile is tiled, so a
  biopsy's small fragments, floaters and debris that CLAM drops are kept (raise
  ``min_tissue_fraction`` or clean the slide's debris before);
- near-white (glass) and near-black (scanner borders, pen) pixels are removed
  from the mask. The saturation threshold is CLAM's fixed default (8) unless the config
  asks for Otsu's (``saturation_threshold: null``), which is raised to 8 when below, so
  that JPEG noise on an almost empty slide is not called tissue. Otsu is not the
  default: on a slide with much tissue it splits the tissue itself, dense haematoxylin
  from pale eosin stroma, and the stroma is lost (the CMU-1 small region OpenSlide
  publishes: a threshold of 54, 8 % of its tissue pixels and 8 of its 36 tiles at 0.5
  um/px dropped);
- green marker (hue 90-180 degrees, a colour no H&E stain takes; ``exclude_green_marker:
  false`` for a stain that colours tissue green) is not tissue, and Otsu
  chooses its threshold without near-black and marker pixels: with them, a marker's
  strong saturation (or a noisy black border's) raised the threshold above pale tissue,
  which was lost while the marker was tiled. Blue marker is not told apart: its hue
  overlaps haematoxylin's (about 1 % of the tissue pixels of a real H&E slide fall in
  200-235 degrees);
- at most ``max_tiles`` tiles are kept, spread evenly over the tissue (see
  :func:`spread_subset`), to bound the encoder's cost per slide; ``max_tiles: null``
  keeps every tile on tissue, as CLAM does. The QC's ``detail`` gives the count on
  tissue beside the count kept, the grid's size, and the share of the slide the mask
  calls tissue (``tissue_area``); a slide read as nearly all tissue gets a note
  (:data:`TISSUE_AREA_NOTE`), as tinted glass or pen ink would be;
- pixels past the slide's edge or not scanned (transparent in OpenSlide) are read as
  white, glass, where CLAM's ``convert('RGB')`` makes them black: an edge tile's
  features differ from CLAM's there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from mmpipe.errors import ConfigError, SlideError
from mmpipe.io.slide import Slide

log = logging.getLogger(__name__)

# CLAM's default fixed saturation threshold (create_patches_fp.py: sthresh=8), ours too;
# a floor under Otsu, whose threshold on a slide that is nearly all glass sits in noise.
MIN_OTSU_SATURATION = 8
# Pixels whose darkest channel is at least this bright are glass, whatever their hue.
NEAR_WHITE_MIN_CHANNEL = 220
# Pixels whose brightest channel is at most this dark are borders/pen, not stained tissue
# (their saturation is meaningless: a tiny colour difference on black reads as saturated).
NEAR_BLACK_MAX_CHANNEL = 35
# Green marker ink: a hue in this range (degrees) with at least this much chroma (max -
# min channel); H&E takes no green, so tissue loses about 0.2 % of its pixels to it
GREEN_PEN_HUE = (90.0, 180.0)
PEN_MIN_CHROMA = 30
# A level counts as "no coarser than the target" within this relative tolerance, so that
# a 0.499 or 0.5025 um/px scan's own level is read for a 0.5 um/px target, not a level
# beyond it. Its pixels are then resized to the target where the level is finer (0.499:
# 257 px read and resized to 256, where CLAM reads 256 px as they are) and read as they
# are where it is coarser (0.5025: 256 px, a field 0.5 % wider), by read_size below.
MPP_TOLERANCE = 0.01
# A slide whose mask calls at least this share of it tissue gets a QC note: tinted glass,
# a dark or grey background and most pen ink (blue, red, dark marker) pass the saturation
# threshold as CLAM's does, and a slide so read is tiled edge to edge (OpenSlide's CMU-1
# small region, a crop, reads 34 %; a TCGA frozen section 61 %)
TISSUE_AREA_NOTE = 0.9
# OpenSlide's digest of a slide's header and lowest-resolution level
QUICKHASH = "openslide.quickhash-1"
# Rows of the mask level read at once: bounds memory on large slides (~64 MiB RGBA).
_STRIP_BYTES = 64 * 2**20


@dataclass(frozen=True)
class TilingParams:
    """Settings of tissue detection and tiling (config ``preprocess.slide``).

    ``mask_max_size`` is the longest side, in pixels, of the image the tissue mask is
    computed on: the coarsest pyramid level whose longest side is still at least this
    is read (in strips) and box-reduced by the smallest integer factor that brings it
    to at most ``mask_max_size``; a slide smaller than that uses level 0 as it is.
    ``saturation_threshold``: CLAM's fixed 8 by default; None means Otsu's (floored at
    :data:`MIN_OTSU_SATURATION`).
    ``seed`` drives the choice among tiles when there are more than ``max_tiles`` (None:
    every tile on tissue is kept).
    ``exclude_green_marker``: green pixels (:data:`GREEN_PEN_HUE`) are marker ink, never
    tissue; set it False for a stain that colours tissue green (a green IHC chromogen,
    trichrome's light green).
    """

    target_mpp: float = 0.5
    tile_size: int = 256
    max_tiles: int | None = 1000
    min_tissue_fraction: float = 0.5
    mask_max_size: int = 2048
    saturation_threshold: float | None = 8.0
    median_blur: int = 7
    seed: int = 0
    mpp_when_missing: float | None = None
    exclude_green_marker: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not self.target_mpp > 0:
            problems.append(f"target_mpp must be > 0, got {self.target_mpp}")
        if self.tile_size < 1:
            problems.append(f"tile_size must be >= 1, got {self.tile_size}")
        if self.max_tiles is not None and self.max_tiles < 1:
            problems.append(f"max_tiles must be >= 1, got {self.max_tiles}")
        if not 0 <= self.min_tissue_fraction <= 1:
            problems.append(f"min_tissue_fraction must be in [0, 1], got {self.min_tissue_fraction}")
        if self.mask_max_size < 16:
            problems.append(f"mask_max_size must be >= 16, got {self.mask_max_size}")
        if self.saturation_threshold is not None and not 0 <= self.saturation_threshold < 255:
            problems.append(f"saturation_threshold must be in [0, 255), got {self.saturation_threshold}")
        if self.median_blur < 0 or (self.median_blur > 1 and self.median_blur % 2 == 0):
            problems.append(f"median_blur must be 0, 1 or odd (CLAM's mthresh), got {self.median_blur}")
        if self.mpp_when_missing is not None and not self.mpp_when_missing > 0:
            problems.append(f"mpp_when_missing must be > 0 or null, got {self.mpp_when_missing}")
        if problems:
            raise ConfigError("preprocess.slide: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Plain dict for provenance (feature-store attributes, QC detail)."""
        return asdict(self)


@dataclass
class TileGrid:
    """Kept tiles of one slide: level-0 (x, y) corners and how to read them.

    A tile covers ``read_size`` x ``read_size`` pixels of ``level`` starting at the
    level-0 corner, and is resized to ``tile_size`` x ``tile_size`` pixels at
    ``target_mpp``. ``mask_downsample`` maps level-0 pixels to tissue-mask pixels.
    """

    coords: np.ndarray  # int64 [n, 2]: level-0 x, y
    tissue_fraction: np.ndarray  # float32 [n]
    level: int
    read_size: int
    tile_size: int
    level_mpp: float
    mpp: float
    target_mpp: float
    mask_downsample: float
    # the slide the grid was laid on: its level-0 (width, height) and OpenSlide's
    # quickhash-1 (None for a plain image, or a grid from before they were recorded)
    slide_size: tuple[int, int] | None = None
    slide_quickhash: str | None = None
    # the tiles on tissue before max_tiles chose among them, the tiles of the whole grid,
    # and the share of the slide's tissue mask called tissue (None: not recorded)
    n_on_tissue: int | None = None
    n_grid: int | None = None
    tissue_area: float | None = None

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.int64).reshape(-1, 2)
        self.tissue_fraction = np.asarray(self.tissue_fraction, dtype=np.float32).reshape(-1)
        if len(self.coords) != len(self.tissue_fraction):
            raise ValueError(f"{len(self.coords)} coords but {len(self.tissue_fraction)} "
                             "tissue fractions")

    def __len__(self) -> int:
        return len(self.coords)

    def to_frame(self, subject_id: str) -> pl.DataFrame:
        """One row per tile; the per-slide values are repeated so the frame stands alone."""
        n = len(self)
        return pl.DataFrame({
            "subject_id": pl.Series([subject_id] * n, dtype=pl.String),
            "x": pl.Series(self.coords[:, 0], dtype=pl.Int64),
            "y": pl.Series(self.coords[:, 1], dtype=pl.Int64),
            "tissue_fraction": pl.Series(self.tissue_fraction, dtype=pl.Float32),
            "level": pl.Series([self.level] * n, dtype=pl.Int64),
            "read_size": pl.Series([self.read_size] * n, dtype=pl.Int64),
            "tile_size": pl.Series([self.tile_size] * n, dtype=pl.Int64),
            "level_mpp": pl.Series([self.level_mpp] * n, dtype=pl.Float64),
            "mpp": pl.Series([self.mpp] * n, dtype=pl.Float64),
            "target_mpp": pl.Series([self.target_mpp] * n, dtype=pl.Float64),
            "mask_downsample": pl.Series([self.mask_downsample] * n, dtype=pl.Float64),
            "slide_width": pl.Series([self.slide_size and self.slide_size[0]] * n,
                                     dtype=pl.Int64),
            "slide_height": pl.Series([self.slide_size and self.slide_size[1]] * n,
                                      dtype=pl.Int64),
            "slide_quickhash": pl.Series([self.slide_quickhash] * n, dtype=pl.String),
        })

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> TileGrid:
        """Rebuild the grid of ONE subject from :meth:`to_frame` rows (row order kept)."""
        if df.height == 0:
            raise ValueError("cannot rebuild a tile grid from an empty frame")
        if "subject_id" in df.columns and df["subject_id"].n_unique() > 1:
            raise ValueError(f"frame holds {df['subject_id'].n_unique()} subjects; "
                             "filter it to one first")
        per_slide = ["level", "read_size", "tile_size", "level_mpp", "mpp", "target_mpp"]
        for col in per_slide:
            if df[col].n_unique() != 1:
                raise ValueError(f"column {col!r} is not constant over the subject's tiles")
        mask_ds = float(df["mask_downsample"][0]) if "mask_downsample" in df.columns else math.nan
        size = ((int(df["slide_width"][0]), int(df["slide_height"][0]))
                if "slide_width" in df.columns and df["slide_width"][0] is not None else None)
        quickhash = df["slide_quickhash"][0] if "slide_quickhash" in df.columns else None
        return cls(
            coords=np.stack([df["x"].to_numpy(), df["y"].to_numpy()], axis=1),
            tissue_fraction=df["tissue_fraction"].to_numpy(),
            level=int(df["level"][0]),
            read_size=int(df["read_size"][0]),
            tile_size=int(df["tile_size"][0]),
            level_mpp=float(df["level_mpp"][0]),
            mpp=float(df["mpp"][0]),
            target_mpp=float(df["target_mpp"][0]),
            mask_downsample=mask_ds,
            slide_size=size,
            slide_quickhash=quickhash,
        )


# -- tissue mask ---------------------------------------------------------------------

def _mask_level(slide: Slide, mask_max_size: int) -> int:
    """Coarsest level whose longest side is >= mask_max_size; level 0 if none is."""
    longest = [max(w, h) for w, h in slide.level_dimensions]
    big_enough = [lvl for lvl, side in enumerate(longest) if side >= mask_max_size]
    return max(big_enough, key=lambda lvl: slide.level_downsamples[lvl]) if big_enough else 0


def _reduced_level_image(slide: Slide, level: int, factor: int) -> np.ndarray:
    """Whole ``level`` box-reduced by an integer ``factor``, read in strips of rows.

    Strips are whole multiples of ``factor`` rows, so PIL's box reduction of each strip
    (partial last block included) concatenates to exactly the reduction of the level.
    """
    from PIL import Image

    width, height = slide.level_dimensions[level]
    downsample = slide.level_downsamples[level]
    rows = max(factor, (_STRIP_BYTES // (4 * width)) // factor * factor)
    parts = []
    for top in range(0, height, rows):
        n = min(rows, height - top)
        strip = slide.read_region((0, round(top * downsample)), level, (width, n))
        parts.append(np.asarray(Image.fromarray(strip).reduce(factor)) if factor > 1 else strip)
    return np.concatenate(parts, axis=0)


# OpenCV's RGB2HSV for 8 bits (imgproc/src/color_hsv.simd.hpp): S = (diff * sdiv[max] +
# 2^11) >> 12, sdiv[v] = round(255 * 2^12 / v) (cvRound: half to even, as np.round)
_OPENCV_SATURATION_DIVISORS = np.concatenate(
    [[0], np.round((255 << 12) / np.arange(1, 256))]).astype(np.int64)


def saturation_mask(rgb: np.ndarray, params: TilingParams) -> tuple[np.ndarray, float]:
    """Tissue pixels of an RGB image and the saturation threshold used.

    CLAM segmentTissue: HSV saturation (OpenCV scale 0-255), median blur of size
    ``mthresh``, binary threshold (Otsu or fixed); here also minus near-white,
    near-black and green-marker pixels, and Otsu over the pixels that can be tissue or
    glass (not the near-black or marker ones).
    """
    from skimage.filters import rank, threshold_otsu

    rgb = np.asarray(rgb, dtype=np.uint8)
    hi = rgb.max(axis=2)
    lo = rgb.min(axis=2)
    # OpenCV's S = 255 * (max - min) / max, 0 on black, in its own fixed point
    # (_OPENCV_SATURATION_DIVISORS): a plain cast truncated, (100, 91, 95) gave 22 where
    # OpenCV gives 23, and 15,778 of the 32,895 (max, min) pairs differed
    diff = hi.astype(np.int64) - lo
    sat = ((diff * _OPENCV_SATURATION_DIVISORS[hi] + (1 << 11)) >> 12).astype(np.uint8)
    if params.median_blur > 1:
        sat = rank.median(sat, footprint=np.ones((params.median_blur,) * 2, dtype=bool))
    candidate = hi > NEAR_BLACK_MAX_CHANNEL
    if params.exclude_green_marker:
        candidate &= ~_green_pen(rgb, diff)
    if params.saturation_threshold is not None:
        threshold = float(params.saturation_threshold)
    else:
        values = sat[candidate]
        threshold = (float(max(threshold_otsu(values), MIN_OTSU_SATURATION))
                     if values.size and values.max() > values.min()
                     else float(MIN_OTSU_SATURATION))
    mask = sat > threshold
    mask &= lo < NEAR_WHITE_MIN_CHANNEL
    mask &= candidate
    return mask, threshold


def _green_pen(rgb: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Pixels of green marker ink: a hue angle (atan2 of the opponent colours, in degrees)
    in :data:`GREEN_PEN_HUE` and a chroma of at
    least :data:`PEN_MIN_CHROMA`."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    hue = np.degrees(np.arctan2(np.sqrt(np.float32(3)) * (g - b), 2 * r - g - b)) % 360
    return (hue >= GREEN_PEN_HUE[0]) & (hue < GREEN_PEN_HUE[1]) & (chroma >= PEN_MIN_CHROMA)


def tissue_mask(slide: Slide, params: TilingParams) -> tuple[np.ndarray, float]:
    """Boolean tissue mask of the whole slide and its downsample from level 0.

    Mask pixel (i, j) covers level-0 pixels around (j * downsample, i * downsample).
    """
    level = _mask_level(slide, params.mask_max_size)
    width, height = slide.level_dimensions[level]
    factor = max(1, math.ceil(max(width, height) / params.mask_max_size))
    rgb = _reduced_level_image(slide, level, factor)
    mask, threshold = saturation_mask(rgb, params)
    downsample = slide.level_downsamples[level] * factor
    log.info("%s: tissue mask from level %d reduced %dx (%dx%d px, %.3g level-0 px each); "
             "saturation threshold %.1f (%s); tissue %.1f %%", slide.path, level, factor,
             mask.shape[1], mask.shape[0], downsample, threshold,
             "fixed" if params.saturation_threshold is not None else "Otsu", 100 * mask.mean())
    return mask, float(downsample)


# -- grid ----------------------------------------------------------------------------

def read_level(slide: Slide, target_mpp: float) -> int:
    """Coarsest level at least as fine as ``target_mpp`` (within 1 %): never upsample."""
    if slide.mpp > target_mpp * (1 + MPP_TOLERANCE):
        raise SlideError(reason=f"slide resolution {slide.mpp:.4g} um/px is coarser than "
                                f"target_mpp {target_mpp:.4g}, and tiles are never upsampled: "
                                f"raise target_mpp to {slide.mpp:.4g} or more to tile it",
                          path=slide.path)
    fine_enough = [lvl for lvl in range(slide.level_count)
                   if slide.level_mpp(lvl) <= target_mpp * (1 + MPP_TOLERANCE)]
    return max(fine_enough, key=slide.level_mpp)


def _box_fractions(mask: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
                   y1: np.ndarray) -> np.ndarray:
    """Mean of ``mask`` over boxes [y0, y1) x [x0, x1); area outside the mask counts as 0."""
    height, width = mask.shape
    area = (x1 - x0) * (y1 - y0)
    sat = np.zeros((height + 1, width + 1), dtype=np.int64)  # summed-area table
    sat[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    cx0, cx1 = np.clip(x0, 0, width), np.clip(x1, 0, width)
    cy0, cy1 = np.clip(y0, 0, height), np.clip(y1, 0, height)
    inside = sat[cy1, cx1] - sat[cy0, cx1] - sat[cy1, cx0] + sat[cy0, cx0]
    return inside / np.maximum(area, 1)


def _morton_key(col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Z-order index of grid cells: nearby cells get nearby keys."""
    def spread(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.uint64) & np.uint64(0xFFFFFFFF)
        for shift, magic in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
                             (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333),
                             (1, 0x5555555555555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(magic)
        return v
    return spread(col) | (spread(row) << np.uint64(1))


def spread_subset(col: np.ndarray, row: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of ``k`` of the cells (col, row), spread over them, deterministic per seed.

    Stratified sampling along a Z-order curve: the cells are ordered by Morton key,
    cut into ``k`` runs of (almost) equal length, and one cell is drawn from each run
    with ``seed``. Every run is a compact patch of tissue, so the choice covers the
    whole tissue area evenly, unlike a plain random draw (clumps) or evenly spaced
    indices in raster order (which can fall on one column when the stride matches the
    row length). Returned sorted.
    """
    n = len(col)
    if k >= n:
        return np.arange(n)
    order = np.argsort(_morton_key(col, row), kind="stable")
    edges = np.linspace(0, n, k + 1).astype(np.int64)  # k >= 1 and n > k: every run non-empty
    picks = np.random.default_rng(seed).integers(edges[:-1], edges[1:])
    return np.sort(order[picks])


def tile_grid(slide: Slide, params: TilingParams) -> TileGrid:
    """Lay the tile grid over the slide and keep the tiles on tissue.

    The grid step is ``tile_size`` pixels at ``target_mpp`` expressed in level-0
    pixels; tiles along the right/bottom edge may hang past the slide (that part
    counts as background and reads as white), so the grid covers the whole slide.
    A tile is kept when its tissue fraction is >= ``min_tissue_fraction`` and > 0.
    """
    level = read_level(slide, params.target_mpp)
    level_mpp = slide.level_mpp(level)
    # At most 1 % smaller than tile_size by the tolerance above; clamped so a read is
    # never enlarged (the field of view then grows by < 1 %).
    read_size = max(params.tile_size, round(params.tile_size * params.target_mpp / level_mpp))
    step = params.tile_size * params.target_mpp / slide.mpp

    width0, height0 = slide.dimensions
    n_cols, n_rows = math.ceil(width0 / step), math.ceil(height0 / step)
    row, col = np.divmod(np.arange(n_cols * n_rows, dtype=np.int64), n_cols)
    # corners on the read level's pixel grid: OpenSlide renders a region whose level-0
    # corner falls between that level's pixels at the fraction, a bilinear blur, so a
    # 40x scan at 0.2265 um/px read on its level 1 had sharp tiles beside tiles 20-28 %
    # less sharp, by where each sat on the grid (a corner moves by half a level pixel at
    # most). Exact for a whole downsample; for one that is not (Aperio's 2.0005) the
    # level-0 integers leave corners within half a level-0 pixel of it, where up to half
    # a pixel of the read level was left
    ds = slide.level_downsamples[level]
    x = np.round(np.round(col * step / ds) * ds).astype(np.int64)
    y = np.round(np.round(row * step / ds) * ds).astype(np.int64)

    mask, mask_ds = tissue_mask(slide, params)
    x0 = np.round(x / mask_ds).astype(np.int64)
    y0 = np.round(y / mask_ds).astype(np.int64)
    x1 = np.maximum(x0 + 1, np.round((x + step) / mask_ds).astype(np.int64))
    y1 = np.maximum(y0 + 1, np.round((y + step) / mask_ds).astype(np.int64))
    fraction = _box_fractions(mask, x0, y0, x1, y1)

    keep = np.flatnonzero((fraction >= params.min_tissue_fraction) & (fraction > 0))
    if keep.size == 0:
        # the mask may hold tissue that no tile covers enough of (a strip narrower than
        # a tile, across a grid line): "no tissue found" said the mask found none
        found = ("no tissue found" if not mask.any() else
                 f"no tile has enough tissue (the mask holds {int(mask.sum())} tissue pixels)")
        raise SlideError(reason=f"{found}: {fraction.size} tiles checked, max tissue "
                                f"fraction {fraction.max(initial=0):.3f}, need "
                                f">= {params.min_tissue_fraction} (min_tissue_fraction)",
                         path=slide.path)
    n_tissue = keep.size
    if params.max_tiles is not None and n_tissue > params.max_tiles:
        keep = keep[spread_subset(col[keep], row[keep], params.max_tiles, params.seed)]
    log.info("%s: %d of %d grid tiles on tissue, kept %d; read %d px at level %d (%.4g um/px) "
             "-> %d px at %.4g um/px", slide.path, n_tissue, fraction.size, keep.size,
             read_size, level, level_mpp, params.tile_size, params.target_mpp)
    return TileGrid(
        coords=np.stack([x[keep], y[keep]], axis=1),
        tissue_fraction=fraction[keep].astype(np.float32),
        level=level,
        read_size=int(read_size),
        tile_size=params.tile_size,
        level_mpp=float(level_mpp),
        mpp=float(slide.mpp),
        target_mpp=float(params.target_mpp),
        mask_downsample=float(mask_ds),
        slide_size=slide.dimensions,
        slide_quickhash=slide.properties.get(QUICKHASH),
        n_on_tissue=int(n_tissue),
        n_grid=int(fraction.size),
        tissue_area=float(mask.mean()),
    )


# -- pixels --------------------------------------------------------------------------

def _check_grid_matches(slide: Slide, grid: TileGrid) -> None:
    """A grid made for another slide or another assumed mpp would read wrong pixels."""
    if grid.level >= slide.level_count:
        raise SlideError(reason=f"tile grid reads level {grid.level} but the slide has "
                                f"{slide.level_count}", path=slide.path)
    # another slide at the same path (a re-scan with the scanner's mpp and levels): its
    # tiles would be read at the old slide's coordinates, white where they fall outside
    size = tuple(grid.slide_size) if grid.slide_size is not None else None
    for what, made, now in (("level-0 size", size, slide.dimensions),
                            ("OpenSlide quickhash", grid.slide_quickhash,
                             slide.properties.get(QUICKHASH))):
        if made is not None and made != now:
            raise SlideError(reason=f"tile grid was laid on a slide of another {what} "
                                    f"({made} against {now}): the file changed since it "
                                    "was tiled; tile it again", path=slide.path)
    if not math.isclose(slide.mpp, grid.mpp, rel_tol=1e-6):
        raise SlideError(reason=f"tile grid was made at {grid.mpp:.6g} um/px but the slide "
                                f"opened at {slide.mpp:.6g} um/px ({slide.mpp_source})",
                         path=slide.path)


def read_tiles(slide: Slide, grid: TileGrid, indices: np.ndarray | list[int] | None = None
               ) -> np.ndarray:
    """Pixels of the grid's tiles as uint8 [n, tile_size, tile_size, 3], on white.

    Reads are shrunk to ``tile_size`` with Lanczos (anti-aliased) when ``read_size``
    differs from it.
    """
    from PIL import Image

    _check_grid_matches(slide, grid)
    idx = np.arange(len(grid)) if indices is None else np.asarray(indices, dtype=np.int64)
    out = np.empty((idx.size, grid.tile_size, grid.tile_size, 3), dtype=np.uint8)
    size = (grid.read_size, grid.read_size)
    for k, i in enumerate(idx):
        x, y = grid.coords[i]
        tile = slide.read_region((int(x), int(y)), grid.level, size)
        if grid.read_size != grid.tile_size:
            tile = np.asarray(Image.fromarray(tile).resize(
                (grid.tile_size, grid.tile_size), Image.Resampling.LANCZOS))
        out[k] = tile
    return out


def iter_tile_batches(slide: Slide, grid: TileGrid, batch_size: int
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (tile indices, uint8 [b, tile_size, tile_size, 3]) so no caller holds all tiles."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(grid), batch_size):
        idx = np.arange(start, min(start + batch_size, len(grid)), dtype=np.int64)
        yield idx, read_tiles(slide, grid, idx)
