"""Write an RGB image as a pyramidal TIFF that OpenSlide opens as a multi-level slide.

Used by the synthetic demo cohort, so that its "whole-slide images" go through
exactly the same reader and tiler as real scans.

What OpenSlide's generic-TIFF driver needs (checked with openslide-bin 4.0.1):

- every level is a *tiled* TIFF directory (stripped ones are ignored), written as
  separate top-level pages (not SubIFDs); levels are sorted by size, and the pages
  after the first are marked reduced-resolution (``NewSubfileType = 1``) as the
  TIFF spec asks for overviews;
- ``openslide.mpp-x``/``-y`` are derived from XResolution/YResolution when
  ResolutionUnit is centimetre or inch (OpenSlide 4; not millimetre or micrometre),
  so the resolution is written in pixels per cm;
- the compression must be one its libtiff decodes: JPEG and deflate (zlib) are;
  tifffile encodes JPEG only through ``imagecodecs``, so without it we fall back
  to deflate, which tifffile encodes with the standard library.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mmpipe.fsutil import atomic_file

log = logging.getLogger(__name__)

# Name accepted here -> tifffile COMPRESSION member.
_COMPRESSIONS = {
    "jpeg": "JPEG",
    "deflate": "ADOBE_DEFLATE",
    "zlib": "ADOBE_DEFLATE",
    "adobe_deflate": "ADOBE_DEFLATE",
    "lzw": "LZW",
    "none": "NONE",
}
_FALLBACK = "deflate"

# Classic TIFF offsets are 32-bit; stay well clear of 4 GiB (compressed size is unknown).
_BIGTIFF_ABOVE_BYTES = 2**31


def _codec_available(name: str) -> bool:
    import tifffile

    member = getattr(tifffile.COMPRESSION, _COMPRESSIONS[name])
    if member == tifffile.COMPRESSION.NONE:
        return True
    try:
        tifffile.TIFF.COMPRESSORS[member]
    except KeyError:  # tifffile: "<COMPRESSION.X> requires the 'imagecodecs' package"
        return False
    return True


def _resolve_compression(compression: str) -> str:
    name = compression.lower()
    if name not in _COMPRESSIONS:
        raise ValueError(f"unknown TIFF compression {compression!r}; one of {sorted(_COMPRESSIONS)}")
    if _codec_available(name):
        return name
    log.warning("TIFF compression %r is not available (tifffile needs the 'imagecodecs' "
                "package to encode it); FALLING BACK to lossless %r", name, _FALLBACK)
    return _FALLBACK


def _halve(rgb: np.ndarray) -> np.ndarray:
    """2x box downsample (the last odd row/column averages what it has)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).reduce(2))


def write_pyramidal_tiff(path: str | Path, rgb: np.ndarray, mpp: float, tile: int = 256,
                         n_levels: int = 3, compression: str = "jpeg",
                         quality: int = 90) -> Path:
    """Write ``rgb`` (H, W, 3) uint8 with ``n_levels`` levels, each half the previous one.

    ``mpp`` is the level-0 resolution in µm/px; each level carries its own resolution
    tags (its per-axis downsample is width0 / width, as OpenSlide computes it).
    ``quality`` applies to JPEG only. The file is written to a temporary sibling and
    renamed into place, so a killed job never leaves a truncated slide.
    """
    import tifffile

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
    if not (np.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    if tile <= 0 or tile % 16:
        raise ValueError(f"TIFF tile size must be a positive multiple of 16, got {tile}")
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    name = _resolve_compression(compression)
    member = getattr(tifffile.COMPRESSION, _COMPRESSIONS[name])
    codec = None if member == tifffile.COMPRESSION.NONE else member
    codec_args = {"level": int(quality)} if name == "jpeg" else None

    height0, width0 = rgb.shape[:2]
    levels = [np.ascontiguousarray(rgb)]
    while len(levels) < n_levels:
        levels.append(_halve(levels[-1]))  # ceil(size / 2): never empty

    path = Path(path)
    bigtiff = sum(level.nbytes for level in levels) > _BIGTIFF_ABOVE_BYTES
    with atomic_file(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        for index, level in enumerate(levels):
            # Per-axis downsample of this level, so its resolution tag is exact for it.
            ds_x = width0 / level.shape[1]
            ds_y = height0 / level.shape[0]
            px_per_cm = (1e4 / (mpp * ds_x), 1e4 / (mpp * ds_y))
            tif.write(
                level,
                photometric="rgb",
                planarconfig="contig",
                tile=(tile, tile),
                compression=codec,
                compressionargs=codec_args,
                resolution=px_per_cm,
                resolutionunit="CENTIMETER",
                subfiletype=0 if index == 0 else 1,  # 1 = reduced-resolution image
                metadata=None,  # no tifffile JSON description: a plain generic TIFF
            )
    log.info("wrote %s: %d levels from %dx%d at %.4g um/px, %s compression",
             path, len(levels), width0, height0, mpp, name)
    return path
