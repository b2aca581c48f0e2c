"""The planted image properties, measured back from the pixels.

What ``benchmarks/demo_signal.py`` reads to tell whether a reading reached the image,
and what the generator's tests check the renderers with. Each measure undoes only what
the generator varies on purpose besides the reading (scanner gain, voxel order), so it
needs no knowledge of the subject's anatomy.
"""

from __future__ import annotations

import numpy as np


def _foreground(vol: np.ndarray) -> np.ndarray:
    return vol[vol > 0.05 * float(vol.max())]


def mri_property(modality: str, vol: np.ndarray) -> float:
    """T1: the share of the body brighter than fat (the lesion); T2: the lesion's
    brightness over the kidney's. Both relative to the volume's own median tissue, so
    the scanner gain cancels."""
    tissue = _foreground(vol)
    ref = float(np.median(tissue))
    if modality == "mri_t1":
        return float(np.mean(tissue > 1.3 * ref))
    return float(np.percentile(tissue, 99.5) / ref)


def ct_property(vol_hu: np.ndarray) -> float:
    """Mean HU of the enhancing soft tissue (above the kidney's, below bone)."""
    soft = vol_hu[(vol_hu > 150) & (vol_hu < 700)]
    return float(soft.mean()) if soft.size else 0.0


def slide_property(rgb: np.ndarray) -> float:
    """Haematoxylin over eosin: the blue-to-red ratio of the tissue pixels (nuclei and
    tint both raise it)."""
    px = rgb.reshape(-1, 3).astype(np.float32)
    tissue = px[px.sum(1) < 700]
    if not tissue.size:
        return 0.0
    return float((tissue[:, 2] - tissue[:, 0]).mean() / 255 + (tissue.sum(1) < 300).mean())
