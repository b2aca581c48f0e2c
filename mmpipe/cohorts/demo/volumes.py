"""Phantom anatomy and the MRI and CT volumes rendered from it, plus NIfTI bytes and affines.

One :class:`Anatomy` per subject places the lesion, so the subject's MRI and CT
show the same tumour; each modality carries the latent reading through one
property of the lesion:

- mri_t1: the lesion's size (its cross-section, up to a fifth of the body's);
- mri_t2: the lesion's brightness, relative to the rest of the volume;
- ct: the lesion's enhancement in HU.

A frozen random-init encoder keeps what changes its pooled feature map: a property of
a large share of the image, in every slice. So the kidneys and the lesion run the
length of the slab (elliptic cylinders along z): every axial slice shows the lesion's
cross-section, and an encoder of a few slices (VGG11, HyperMM) sees the reading as
well as one of the whole volume (Med3D). The lesion is large and its effects are
strong for the same reason; the scanner gain (MRI, ±10 %) and the noise vary on purpose,
and a per-volume normalisation (z-score, min-max) keeps all three properties because each
is relative to the tissue around it.

The MRI is not at the CT's physical scale: both render the same phantom grid, the CT at
6 mm pixels (a 384 mm abdomen) and the MRI at :data:`MRI_SPACING` (a 64 mm field of view),
so a resampling to a physical ``spacing`` sees a smaller body in the MRI, and
``volume_shape`` sets the body's size in millimetres, not the resolution.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import numpy as np

from mmpipe.cohorts.demo.plan import _ANATOMY, _rng

MRI_SPACING = (1.0, 1.0, 3.0)  # x, y, z in mm (NIfTI zooms)
CT_PIXEL_SPACING = 6.0  # mm: 64 px span a 384 mm abdomen
CT_SLICE_THICKNESS = 5.0


@dataclass(frozen=True)
class Anatomy:
    """Where the lesion sits, shared by the subject's MRI and CT (one patient, one tumour)."""

    side: int  # -1 right kidney, +1 left kidney (array x direction)
    dx: float
    dy: float


def anatomy(seed: int, index: int) -> Anatomy:
    """The lesion is always in the left kidney: a random network's kernels are not mirror
    symmetric, so a side drawn per subject moved the pooled features more than the
    reading did (it was the volume stores' first principal component)."""
    rng = _rng(seed, _ANATOMY, index)
    return Anatomy(side=1, dx=float(rng.uniform(-0.04, 0.04)), dy=float(rng.uniform(-0.05, 0.05)))


# tissue codes of the phantom
AIR, FAT, MUSCLE, BONE, KIDNEY, LESION = range(6)


def phantom(shape: tuple[int, int, int], anat: Anatomy, lesion_radius: float) -> np.ndarray:
    """Tissue codes on a (D, H, W) grid; in-plane unit = half the height. Axes: W =
    patient x, H = y, D = z (slice). Every slice is the same cross-section (module doc)."""
    _, h, w = shape
    unit = h / 2
    y = (np.arange(h) - (h - 1) / 2) / unit
    x = (np.arange(w) - (w - 1) / 2) / unit
    yy, xx = np.meshgrid(y, x, indexing="ij", sparse=True)
    tissue = np.full(shape, AIR, dtype=np.uint8)
    body = (xx / 0.88) ** 2 + (yy / 0.68) ** 2 <= 1
    tissue[np.broadcast_to(body, shape)] = FAT
    inner = (xx / 0.76) ** 2 + (yy / 0.56) ** 2 <= 1
    tissue[np.broadcast_to(inner, shape)] = MUSCLE
    for side in (-1, 1):
        kidney = ((xx - side * 0.42) / 0.14) ** 2 + ((yy - 0.2) / 0.2) ** 2 <= 1
        tissue[np.broadcast_to(kidney, shape)] = KIDNEY
    spine = xx**2 + (yy - 0.38) ** 2 <= 0.1**2
    tissue[np.broadcast_to(spine, shape)] = BONE
    cx, cy = anat.side * 0.42 + anat.dx, 0.2 + anat.dy
    # a large lesion outgrows its kidney (it stays inside the body's inner wall)
    lesion = ((xx - cx) ** 2 + (yy - cy) ** 2 <= lesion_radius**2) & inner
    tissue[np.broadcast_to(lesion, shape)] = LESION
    return tissue


def _render(tissue: np.ndarray, values: dict[int, float], noise: float,
            rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    lut = np.array([values[k] for k in range(LESION + 1)], dtype=np.float32)
    img = gaussian_filter(lut[tissue], sigma=0.6)  # partial-volume edges
    return img + noise * rng.standard_normal(tissue.shape).astype(np.float32)


# the lesions whose size does not carry the reading (T2, CT); radii in the phantom's unit
# (half the image height): 0.24 is a tenth of the body's cross-section
T2_LESION_RADIUS = 0.24
CT_LESION_RADIUS = 0.24


def t1_lesion_radius(channel: float) -> float:
    """T1 carries the reading through the lesion's size: from 0.2 % to a fifth of the
    body's cross-section over the readings' range."""
    return float(np.clip(0.2 + 0.065 * channel, 0.04, 0.4))


def t2_lesion_intensity(channel: float) -> float:
    """T2 carries it through the lesion's brightness (relative to the kidney's 700)."""
    return float(700 * np.clip(1.4 + 0.35 * channel, 0.6, 2.8))


def ct_lesion_hu(channel: float) -> float:
    """CT carries it through the lesion's enhancement (HU, above the kidney's 130 and
    below bone's 900, so the volume's extremes, and a min-max scaling, stay put)."""
    return float(np.clip(260 + 90 * channel, 140, 640))


def render_mri(modality: str, shape: tuple[int, int, int], channel: float, anat: Anatomy,
               rng: np.random.Generator) -> np.ndarray:
    """A (D, H, W) int16 MR volume of ``modality`` (mri_t1 | mri_t2)."""
    gain = rng.uniform(0.9, 1.1)  # scanner gain varies: absolute intensity is not the signal
    if modality == "mri_t1":
        tissue = phantom(shape, anat, t1_lesion_radius(channel))
        values = {AIR: 0, FAT: 800, MUSCLE: 350, BONE: 250, KIDNEY: 500, LESION: 1200}
    else:
        tissue = phantom(shape, anat, T2_LESION_RADIUS * rng.uniform(0.95, 1.05))
        values = {AIR: 0, FAT: 500, MUSCLE: 300, BONE: 150, KIDNEY: 700,
                  LESION: t2_lesion_intensity(channel)}
    img = _render(tissue, values, 25.0, rng) * gain
    return np.clip(np.rint(img), 0, 4000).astype(np.int16)


def render_ct(shape: tuple[int, int, int], channel: float, anat: Anatomy,
              rng: np.random.Generator) -> np.ndarray:
    """A (D, H, W) int16 CT volume in HU."""
    tissue = phantom(shape, anat, CT_LESION_RADIUS * rng.uniform(0.95, 1.05))
    values = {AIR: -1000, FAT: -100, MUSCLE: 45, BONE: 900, KIDNEY: 130,
              LESION: ct_lesion_hu(channel)}
    return np.clip(np.rint(_render(tissue, values, 15.0, rng)), -1024, 3000).astype(np.int16)


def mri_affine(shape: tuple[int, int, int], lps: bool) -> np.ndarray:
    """Voxel-to-world (RAS mm) affine of the NIfTI array (x=W, y=H, z=D) with a real origin.

    The RAS and the LPS-like versions place the same anatomy at the same world
    coordinates; only the voxel order differs, so a reader that ignores the affine
    gets a mirrored image and one that honours it gets T1 and T2 aligned.
    """
    d, h, w = shape
    sx, sy, sz = MRI_SPACING
    origin = np.array([-(w - 1) / 2 * sx, -(h - 1) / 2 * sy - 20.0, -(d - 1) / 2 * sz + 40.0])
    aff = np.eye(4)
    aff[:3, :3] = np.diag([sx, sy, sz])
    aff[:3, 3] = origin
    if lps:
        aff[0, 0], aff[1, 1] = -sx, -sy
        aff[0, 3] = origin[0] + sx * (w - 1)
        aff[1, 3] = origin[1] + sy * (h - 1)
    return aff


def nifti_bytes(volume_dhw: np.ndarray, lps: bool) -> bytes:
    """A .nii.gz as bytes; gzip with mtime 0 so the same volume gives the same file."""
    import nibabel as nib

    # the phantom's voxel order is DICOM's (column -> patient left, row -> posterior):
    # stored as is under an LPS-like affine, or flipped in x and y under an RAS one
    data = volume_dhw.transpose(2, 1, 0)  # (D,H,W) -> (x,y,z)
    if not lps:
        data = data[::-1, ::-1, :]
    data = np.ascontiguousarray(data)
    aff = mri_affine(volume_dhw.shape, lps)
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)
