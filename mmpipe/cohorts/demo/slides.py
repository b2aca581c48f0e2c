"""H&E-like slide rendering, and the truncated bytes of a corrupt slide.

A slide carries the reading through its nuclei density and the haematoxylin tint of all
its tissue: properties of every tissue tile, so the few tiles the tiler keeps all show
them, and colour and texture statistics are what a frozen random-init CNN's pooled
features keep best. The demo's slides are small (512 x 768 px: one to five tissue tiles
of the config's tiling, mostly two to four),
because the random-init CLAM encoder costs the most per subject on a CPU and more tiles
of the same tissue add no signal.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def render_slide(size: tuple[int, int], channel: float, rng: np.random.Generator) -> np.ndarray:
    """An H&E-like (H, W, 3) uint8 slide: pink tissue blobs with dark purple nuclei on white.

    The channel raises the nuclei density and the haematoxylin tint of the tissue.
    Tissue shape and colour are drawn at 1/4 resolution and repeated (a 2 um step at
    0.5 um/px, invisible at tile scale); nuclei are drawn at full resolution.
    """
    from scipy.ndimage import gaussian_filter, zoom

    h, w = size
    q = 4
    qh, qw = -(-h // q), -(-w // q)
    lh, lw = max(8, qh // 4), max(8, qw // 4)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    field = np.zeros((lh, lw), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(0.25, 0.75) * lh, rng.uniform(0.2, 0.8) * lw
        sy, sx = rng.uniform(0.16, 0.26) * lh, rng.uniform(0.14, 0.22) * lw
        field += np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2) / 2)
    field += 0.35 * gaussian_filter(rng.standard_normal((lh, lw)).astype(np.float32), 2.0)
    shade = gaussian_filter(rng.standard_normal((lh, lw)).astype(np.float32), 3.0)
    field = zoom(field, (qh / lh, qw / lw), order=1)[:qh, :qw]
    shade = zoom(shade, (qh / lh, qw / lw), order=1)[:qh, :qw]
    tissue_q = field > 0.5

    eosin = np.array([234, 150, 192], np.float32)
    haem = np.array([120, 70, 165], np.float32)
    tint = float(np.clip(0.2 + 0.08 * channel, 0.02, 0.5))
    mix = np.clip(tint + 0.5 * shade, 0, 0.8)[..., None]
    small = np.where(tissue_q[..., None], (1 - mix) * eosin + mix * haem, 243.0)
    small = np.rint(small).astype(np.uint8)
    img = np.repeat(np.repeat(small, q, axis=0), q, axis=1)[:h, :w]
    tissue = np.repeat(np.repeat(tissue_q, q, axis=0), q, axis=1)[:h, :w]

    # nuclei: Poisson count over the slide, kept where there is tissue
    density = np.exp(0.5 * channel) / 900.0  # per tissue pixel
    n = int(rng.poisson(density * h * w))
    ys = rng.integers(0, h, n)
    xs = rng.integers(0, w, n)
    keep = tissue[ys, xs]
    ys, xs = ys[keep], xs[keep]
    radii = rng.integers(3, 6, ys.size)
    nuc = np.zeros((h, w), bool)
    for r in (3, 4, 5):
        yk, xk = np.mgrid[-r:r + 1, -r:r + 1]
        disk = yk**2 + xk**2 <= r * r
        for y, x in zip(ys[radii == r].tolist(), xs[radii == r].tolist(), strict=True):
            y0, x0 = y - r, x - r
            if y0 < 0 or x0 < 0 or y0 + 2 * r + 1 > h or x0 + 2 * r + 1 > w:
                continue
            nuc[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1] |= disk
    img[nuc] = (72, 38, 110)
    return np.ascontiguousarray(img)


def _slide_compression() -> str:
    import importlib.util

    if importlib.util.find_spec("imagecodecs") is not None:
        return "jpeg"
    log.warning("demo slides: 'imagecodecs' is not installed, so tifffile cannot encode JPEG; "
                "FALLING BACK to deflate (lossless, larger files)")
    return "deflate"


def corrupt_slide_bytes(valid: bytes) -> bytes:
    """A slide cut short: the TIFF header points at directories past the end of the file."""
    return valid[: max(64, len(valid) // 5)]
