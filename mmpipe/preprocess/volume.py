"""MONAI transform chains that turn one volume file into an encoder's input tensor.

Two recipes, both built from the per-encoder ``transform`` block of the config::

    orientation: RAS | null          # monai Orientation (axis codes)
    spacing: null | [sx, sy, sz] | median   # mm, in the axis order after `orientation`
    crop_foreground: bool            # bounding box of the voxels above the background level
    hu_window: null | [lo, hi]       # CT: clip to the window, then scale it to [0, 1]
    normalize: zscore | foreground_zscore_noise | minmax | null   (volume recipe)
    resize: null | [D, H, W]         # D is the slice (z) axis    (volume recipe)
    max_slices: null | int           # slice recipe: evenly spaced subset of slices
    min_foreground: null | float     # slice recipe: skip slices with less foreground
    roi_crop: null | {margin: N}     # crop to the subject's mask + N voxels (masks.py)
    mask_out: bool                   # outside the subject's mask -> background (masks.py)
    slice_select: null | largest_mask | int   # slice recipe: one axial slice (masks.py)

Axis convention. MONAI loads a volume channel-first in the file's voxel order,
``(C, X, Y, Z)``, and Orientation("RAS") makes X run left->right, Y
posterior->anterior and Z inferior->superior. Our outputs put depth first:
``[1, D, H, W] = [1, Z, Y, X]`` (D = slices, H = y, W = x), the layout MedicalNet
was trained on (its data were "transposed from WHD to DHW", datasets/brains18.py)
and the one a 2-D slice encoder expects (one axial slice = one ``(H, W)`` image).
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import ImageReader
from monai.transforms import Transform

from mmpipe.encoders.registry import TRANSFORM_KEYS
from mmpipe.errors import ConfigError, InputError, shared_cause
from mmpipe.io.volume_header import check_declared_size
from mmpipe.preprocess.imagenet_recipe import ImageNetSlices
from mmpipe.preprocess.masks import (
    LARGEST_MASK,
    MASK_LEVEL,
    MaskedVolume,
    MaskSteps,
    mask_steps,
)

log = logging.getLogger(__name__)

# the keys each recipe reads, as the registry declares them (the config check reads them)
_VOLUME_KEYS = set(TRANSFORM_KEYS["med3d"])
_SLICE_KEYS = set(TRANSFORM_KEYS["vgg11_slices"])
_NORMALIZE = ("zscore", "foreground_zscore_noise", "minmax", None)
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
# the fewest voxels along any axis the volume recipe encodes (DICOM conversion's min_slices)
MIN_VOLUME_EXTENT = 3


# --------------------------------------------------------------------------- loading


def _sitk_affine_ras(image) -> np.ndarray:
    """4x4 voxel-to-world affine of a SimpleITK image, in RAS (ITK works in LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


class SimpleITKReader(ImageReader):
    """MONAI image reader backed by SimpleITK, for NRRD/MHA/... volumes.

    MONAI's own ITKReader needs the ``itk`` package; SimpleITK is already a
    dependency (DICOM), so we use it. Returns the array in ``(X, Y, Z)`` order
    with a RAS affine, as MONAI's NibabelReader does.
    """

    suffixes = ("nrrd", "nhdr", "mha", "mhd", "nii", "nii.gz")

    def verify_suffix(self, filename) -> bool:
        from monai.data.utils import is_supported_format

        return is_supported_format(filename, self.suffixes)

    def read(self, data, **kwargs):
        import SimpleITK as sitk

        names = [data] if isinstance(data, (str, Path)) else list(data)
        images = [sitk.ReadImage(str(name)) for name in names]
        return images if len(images) > 1 else images[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        import SimpleITK as sitk

        if isinstance(img, (list, tuple)):
            raise ValueError("SimpleITKReader reads one volume at a time")
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"expected a 3-D grey-level volume, got {img.GetDimension()}-D with "
                             f"{img.GetNumberOfComponentsPerPixel()} components per voxel")
        array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
        affine = _sitk_affine_ras(img)
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": float("nan"),
            "space": "RAS",
        }
        return np.ascontiguousarray(array), meta


class LoadVolume(Transform):
    """Path -> channel-first MetaTensor ``(1, X, Y, Z)`` float32 with its RAS affine.

    NIfTI goes through MONAI's NibabelReader, anything else through SimpleITK.
    This is LoadImage's work (read, get_data, MetaTensor, EnsureChannelFirst)
    without its fallback: when the chosen reader fails, LoadImage tries every
    other reader it knows and reports only that none fits, hiding the real cause
    (a truncated file, a bad header) that the QC record should carry.
    A 2-D image and a 4-D file (time series, several channels) are refused: one
    volume per subject. So is a volume holding NaN or inf voxels (counted after the
    float32 conversion, so values too large for float32 count too): one NaN slice
    would otherwise reach the network, or vanish silently in a resize or a crop.
    ``min_extent``: the fewest voxels each axis must hold. The volume recipe asks for
    :data:`MIN_VOLUME_EXTENT`, as DICOM conversion's ``min_slices``: a one-slice file
    resized to Med3D's 56 slices was 56 copies of that slice, stored ``ok``. The slice
    recipe takes one slice (a 2-D image saved as a volume).
    """

    def __init__(self, with_mask: bool = False, min_extent: int = 1):
        self.with_mask = with_mask
        self.min_extent = int(min_extent)

    def __call__(self, source: str | Path | MaskedVolume):
        """With ``with_mask``, the subject's mask (its voxels of 0.5 or more) becomes a second
        channel ``(2, X, Y, Z)``, so the spatial steps move it with the volume."""
        image_path = source.image if isinstance(source, MaskedVolume) else source
        image = self._load(image_path)
        if not self.with_mask:
            return image
        mask_path = source.mask if isinstance(source, MaskedVolume) else None
        if mask_path is None:
            raise InputError("the transform reads a mask (roi_crop, mask_out or slice_select: "
                             "largest_mask) and this subject has no mask file", path=image_path)
        try:
            mask = self._load(mask_path, "mask")
        except Exception as err:  # the reader's own error: the mask's file, not the volume's
            if isinstance(err, InputError) or shared_cause(err):
                raise
            raise InputError(f"cannot read the mask: {type(err).__name__}: {err}",
                             path=mask_path) from err
        if tuple(mask.shape) != tuple(image.shape):
            raise InputError(f"mask of shape {tuple(mask.shape[1:])} on a volume of shape "
                             f"{tuple(image.shape[1:])} ({image_path}): not the same voxel grid",
                             path=mask_path)
        if not np.allclose(np.asarray(mask.affine), np.asarray(image.affine), atol=1e-3):
            raise InputError(f"mask affine differs from that of its volume {image_path}: not "
                             "the same voxel grid", path=mask_path)
        from monai.data import MetaTensor

        # a voxel of the mask is one of 0.5 or more: a label map's labels, a probability
        # map at one half (above 0 everywhere, "> 0" covered the whole volume and the
        # crop, the mask-out and the largest slice did nothing, stored ok), and a label
        # map stored scaled (1.0039 for 1, 1.5e-05 for 0), whose background "> 0" counted
        inside = mask.as_tensor() >= MASK_LEVEL
        if not bool(inside.any()):  # named here: later only the volume is
            raise InputError(f"the mask is empty (no voxel of {MASK_LEVEL} or more)",
                             path=mask_path)
        both = torch.cat([image.as_tensor(), inside.to(image.dtype)])
        return MetaTensor(both, meta=image.meta)  # the volume's affine and metadata

    def _load(self, path: str | Path, what: str = "volume"):
        from monai.data import MetaTensor, NibabelReader
        from monai.transforms import EnsureChannelFirst

        name = str(path)
        if not Path(name).is_file():
            raise InputError(f"{what} file not found", path=path)
        nifti = name.lower().endswith(_NIFTI_SUFFIXES)  # IMAGE.NII.GZ is NIfTI too
        # before any voxel is read: an .mha's damaged DimSize made SimpleITK's memory
        # error, counted as the machine's, and failed every subject's job
        check_declared_size(Path(name), what)
        reader = NibabelReader() if nifti else SimpleITKReader()
        array, meta = reader.get_data(reader.read(name))
        with np.errstate(over="ignore"):  # values beyond float32 become inf: counted below
            array = np.asarray(array, dtype=np.float32)
        if array.ndim < 3:
            raise InputError(f"expected one 3-D volume, got a {array.ndim}-D image of shape "
                             f"{tuple(array.shape)}", path=path)
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(f"{bad} non-finite voxel(s) (NaN/inf) of "
                             f"{array.size}, shape {tuple(array.shape)}; fix or mask them "
                             "in the file", path=path)
        meta["filename_or_obj"] = name
        image = MetaTensor.ensure_torch_and_prune_meta(array, meta)
        image = EnsureChannelFirst()(image)
        if image.ndim != 4 or image.shape[0] != 1:
            raise InputError(f"expected one 3-D volume, got array shape {tuple(image.shape)} "
                             "(channel first): a 4-D or multi-channel file", path=path)
        if min(image.shape[1:]) < self.min_extent:
            raise InputError(f"a {what} of {tuple(image.shape[1:])} voxels: fewer than "
                             f"{self.min_extent} along an axis, a slice or a line where a 3-D "
                             "encoder reads a volume (resizing would repeat it)", path=path)
        return image


class ApplyMask(Transform):
    """``(2, X, Y, Z)`` volume and mask (or ``(1, X, Y, Z)`` for a fixed slice) -> the
    volume ``(1, X', Y', Z')`` with the outside of the mask set to its minimum, cropped to
    the mask's bounding box plus the margin, and/or reduced to one axial (Z) slice; the
    mask channel is dropped. The mask is resampled nearest (:class:`ResampleVolume`), so
    it holds 0 and 1; an integer ``slice_select`` indexes the oriented volume's slices,
    the box of ``roi_crop`` or not."""

    def __init__(self, steps: MaskSteps, min_extent: tuple[int, int, int] = (1, 1, 1)):
        self.steps = steps
        # the fewest voxels per axis the roi_crop box must hold: as LoadVolume's for a file,
        # a box one slice deep was resized to 56 copies of that slice, stored ok
        self.min_extent = min_extent

    def __call__(self, img):
        data = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        image = data[:1]
        mask = None
        if self.steps.needs_mask:
            mask = data[1] >= MASK_LEVEL
            if not bool(mask.any()):
                raise ValueError(f"the mask is empty (no voxel of {MASK_LEVEL} or more after "
                                 "orientation and resampling)")
        if self.steps.mask_out:  # skull stripping: outside the mask is background
            image = torch.where(mask[None], image, image.min())
        choice = self.steps.slice_select
        if choice is not None and choice != LARGEST_MASK:
            # the oriented volume's slice (masks.py), chosen before roi_crop's box, which
            # made it an index into the box and refused one outside it
            if not 0 <= choice < image.shape[-1]:
                raise ValueError(f"slice_select {choice} is outside the volume's "
                                 f"{image.shape[-1]} axial slices")
            image = image[..., choice:choice + 1]
            mask = None if mask is None else mask[..., choice:choice + 1]
            if mask is not None and not bool(mask.any()):
                raise ValueError(f"the mask is empty on slice_select's slice {choice}")
        if self.steps.roi_margin is not None:
            where = torch.nonzero(mask)
            shape = torch.tensor(mask.shape)
            lo = (where.min(dim=0).values - self.steps.roi_margin).clamp_min(0)
            hi = torch.minimum(where.max(dim=0).values + 1 + self.steps.roi_margin, shape)
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            image, mask = image[(slice(None), *box)], mask[box]
            if any(n < least for n, least in zip(mask.shape, self.min_extent, strict=True)):
                raise ValueError(f"roi_crop's box is {tuple(mask.shape)} voxels, fewer than "
                                 f"{self.min_extent} (x, y, z): a mask this small, with this "
                                 "margin, leaves a slice or a line where the encoder reads "
                                 "more (resizing would repeat it); widen roi_crop's margin")
        if choice == LARGEST_MASK:
            z = int(mask.sum(dim=(0, 1)).argmax())  # the first of equal areas
            image = image[..., z:z + 1]
        return image.contiguous()


class ToDepthFirst(Transform):
    """``(C, X, Y, Z)`` -> ``(C, Z, Y, X)``, dropping MONAI metadata.

    After this the affine no longer describes the axes, so the spatial transforms
    that need it (Orientation, Spacing) must come before.
    """

    def __call__(self, img):
        data = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        return data.permute(0, 3, 2, 1).contiguous()


class ZoomNearest(Transform):
    """``(C, D, H, W)`` -> ``(C, *size)``, each output voxel the input voxel nearest its
    place on ``scipy.ndimage.zoom(order=0)``'s grid, as MedicalNet resizes
    (``__resize_data__`` in datasets/brains18.py): output index ``o`` of ``m`` reads
    input index ``round(o * (n - 1) / (m - 1))`` of ``n``. torch's nearest (MONAI's
    ``Resize``) reads ``floor(o * n / m)``: of 56 slices from 120, 46 came from another
    slice. Computed here rather than by scipy, whose ``ndimage`` the encode jobs keep out
    of their imports; at some sizes scipy's last plane lands a float rounding past the
    input and is filled with 0, which is not reproduced (it takes the last voxel)."""

    def __init__(self, size: Sequence[int]):
        self.size = tuple(int(v) for v in size)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for axis, m in enumerate(self.size, start=1):
            n = img.shape[axis]
            step = (n - 1) / (m - 1) if m > 1 else 0.0
            index = np.minimum(np.floor(np.arange(m) * step + 0.5).astype(np.int64), n - 1)
            img = img.index_select(axis, torch.from_numpy(index))
        return img.contiguous()


class _Above:
    """Foreground selector for CropForeground; a class, not a lambda, so that a transform
    pickles (a user's DataLoader worker process receives it pickled)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, x):
        return x > self.threshold


class CropForegroundAbove(Transform):
    """Crop to the bounding box of voxels above a background level.

    The level is ``threshold`` when given (after an HU window: 0, the window's
    low end), else the volume's minimum, so air around a head or the padding
    outside a CT field of view is cut away. An all-background volume is an error.
    """

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold

    def __call__(self, img):
        from monai.transforms import CropForeground

        level = float(img.min()) if self.threshold is None else float(self.threshold)
        if not bool((img > level).any()):
            raise ValueError(f"no foreground to crop to: no voxel above {level:g}")
        return CropForeground(select_fn=_Above(level), margin=0, allow_smaller=True)(img)


class RejectConstant(Transform):
    """A volume of one intensity everywhere (a blank series, a failed export) holds no
    image: an error naming the file. Scaled to [0, 1] it was all zeros, which an encoder
    stored as an "ok" row, while the MedicalNet recipe's crop refused the same file.
    ``after`` names the step it follows when that step made it so, and ``why`` how: an
    HU window whose range no voxel falls inside (a padding value and one other value
    beyond it), or a foreground crop that leaves one intensity (the window's two ends,
    a uniform block on a zero background), which z-scores and min-max scaling made zeros
    as well."""

    def __init__(self, after: str | None = None, why: str = ""):
        self.after, self.why = after, why

    def __call__(self, img):
        flat = img.reshape(-1)
        if flat.numel() and bool((flat == flat[0]).all()):
            if self.after:
                raise ValueError(f"one intensity everywhere after {self.after}"
                                 f"{': ' + self.why if self.why else ''}: no image")
            raise ValueError(f"one intensity ({float(flat[0]):g}) everywhere: no image")
        return img


class RequireHounsfield(Transform):
    """A volume an HU window reads must be in Hounsfield units: a CT holds air (-1000)
    or fat (-100) in its field of view. A volume with no voxel below 0 is stored
    without its rescale (raw values, HU + 1024, as some conversions write unsigned) or
    is no CT; under the window its air fell inside it and its tissue clipped to the top,
    a silhouette stored as features. Checked on the whole volume as loaded, before any
    crop (a crop to an organ may hold no fat); a NIfTI file does not say its modality,
    as a DICOM series does (``encode.volume.not_in_hounsfield_units``)."""

    def __init__(self, window: Sequence[float]):
        self.window = [float(v) for v in window]

    def __call__(self, img):
        lowest = float(img[0].min())  # channel 0: the volume (1: its mask)
        if lowest >= 0:
            raise ValueError(
                f"no voxel below 0 (the lowest is {lowest:g}) under hu_window "
                f"[{self.window[0]:g}, {self.window[1]:g}]: a CT in Hounsfield units holds "
                "air (-1000) or fat (-100), so these are not HU (raw stored values such "
                "as HU + 1024, or another modality): convert the volume to HU, or encode "
                "it without the window")
        return img


class ForegroundZScoreWithNoise(Transform):
    """MedicalNet's intensity normalisation (``__itensity_normalize_one_volume__``).

    Mean and standard deviation over the foreground (voxels > 0), z-score the
    whole volume with them, then replace the background (voxels == 0) by N(0, 1)
    noise. Exactly as in MedicalNet (datasets/brains18.py): negative voxels are
    neither foreground nor replaced, they are z-scored too. For CT in HU, air and
    fat (< 0) therefore become large negative values; put an ``hu_window`` before
    this transform to make everything below the window exactly 0 (background).

    MedicalNet draws the noise from the global NumPy state; we use a generator
    seeded with ``seed`` on every call, so a volume gets the same input whatever
    the worker or the order it is processed in. ``seed=None`` draws fresh noise.
    """

    def __init__(self, seed: int | None = 0):
        self.seed = seed

    def __call__(self, img):
        data = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        data = data.to(torch.float32)
        foreground = data[data > 0]
        if foreground.numel() == 0:
            raise ValueError("no foreground voxel (> 0) to normalise on: the volume is empty "
                             "or entirely <= 0 (CT in HU without an hu_window?)")
        mean = foreground.mean()
        std = foreground.std(unbiased=False)  # numpy's std, as MedicalNet
        if not torch.isfinite(std) or std <= 0:
            raise ValueError(f"the foreground is constant ({float(mean):g}): cannot z-score it")
        out = (data - mean) / std
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(self.seed))
        noise = torch.randn(data.shape, generator=generator, dtype=torch.float32)
        background = data == 0
        out[background] = noise[background]
        return out


# the file a VolumeTransform is reading, which its steps' warnings name (a step sees a
# tensor that no longer says); per thread and process, as the volume readers run
_READING: contextvars.ContextVar[str] = contextvars.ContextVar("reading", default="a volume")


class VolumeToSlices(Transform):
    """``[1, D, H, W]`` in [0, 1] -> axial slices ``[S, 1, H, W]``.

    ``min_foreground``: keep only slices whose share of pixels above 0 (above the
    volume's minimum or the window's low end) is at least this; when none
    qualifies, the slice with the most foreground is kept (and a warning logged).
    ``max_slices``: then keep at most this many, evenly spaced from first to last.
    """

    def __init__(self, min_foreground: float | None = None, max_slices: int | None = None):
        self.min_foreground = min_foreground
        self.max_slices = max_slices

    def __call__(self, img):
        data = torch.as_tensor(img)
        slices = data[0].unsqueeze(1)  # (D, 1, H, W)
        keep = torch.arange(len(slices))
        if self.min_foreground:
            share = (slices > 0).flatten(1).float().mean(dim=1)
            ok = torch.nonzero(share >= self.min_foreground).flatten()
            if len(ok) == 0:
                log.warning("%s: no slice has >= %.3g foreground; keeping the fullest one "
                            "(%.3g)", _READING.get(), self.min_foreground, float(share.max()))
                ok = share.argmax().reshape(1)
            keep = ok
        if self.max_slices and len(keep) > self.max_slices:
            pick = np.unique(np.round(np.linspace(0, len(keep) - 1, self.max_slices)).astype(int))
            keep = keep[torch.as_tensor(pick)]
        return slices[keep]


# --------------------------------------------------------------------------- recipes


def _check_recipe(recipe: dict, allowed: set[str], ignored: set[str], what: str) -> dict:
    if not isinstance(recipe, dict):
        raise ConfigError(f"{what} transform: expected a mapping, got {type(recipe).__name__}")
    unknown = set(recipe) - allowed - ignored
    if unknown:
        raise ConfigError(f"{what} transform: unknown keys {sorted(unknown)} "
                          f"(known: {sorted(allowed)})")
    for key in sorted(ignored & set(recipe)):
        if recipe[key] is not None:
            log.warning("%s transform: %r=%r does not apply to this recipe and is ignored",
                        what, key, recipe[key])
    window = recipe.get("hu_window")
    if window is not None and (len(window) != 2 or not float(window[0]) < float(window[1])):
        raise ConfigError(f"{what} transform: hu_window must be [low, high] with low < high, "
                          f"got {window!r}")
    return recipe


# voxels a resampled volume may have (4 GB at float32): a header whose voxel sizes are
# in the wrong unit asked the resampling for tens of GB, which failed as the machine
# running out of memory and so failed the job, and every rerun, for every subject
MAX_RESAMPLED_VOXELS = 10**9


class ResampleVolume(Transform):
    """MONAI's ``Spacing`` to ``pixdim``: the volume (channel 0) bilinear, and a mask
    (channel 1, with ``roi_crop`` or ``slice_select``) nearest, as a label is resampled;
    resampled with the volume, a one-voxel structure fell to 0.34 and left the mask.
    A volume the resampling would make larger than :data:`MAX_RESAMPLED_VOXELS` is the
    subject's error, said before anything is allocated."""

    def __init__(self, pixdim: Sequence[float]):
        from monai.transforms import Spacing

        self.pixdim = [float(v) for v in pixdim]
        self.image = Spacing(pixdim=self.pixdim, mode="bilinear", dtype=np.float32)
        self.mask = Spacing(pixdim=self.pixdim, mode="nearest", dtype=np.float32)

    def __call__(self, img):
        from monai.data import MetaTensor
        from monai.data.utils import compute_shape_offset, to_affine_nd, zoom_affine

        # the output shape as Spacing computes it (from the grid's corners: a sheared
        # affine makes it larger than the voxel sizes alone say)
        affine = to_affine_nd(3, np.asarray(img.affine, dtype=np.float64))
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        shape, _ = compute_shape_offset(img.shape[1:], affine, zoom_affine(
            affine, self.pixdim, diagonal=self.image.diagonal), self.image.scale_extent)
        voxels = float(np.prod(np.asarray(shape, dtype=np.float64)))
        if voxels > MAX_RESAMPLED_VOXELS:
            raise InputError(f"resampled to {self.pixdim} mm its {tuple(img.shape[1:])} "
                             f"voxels of {tuple(round(float(v), 4) for v in spacing)} mm "
                             f"would be {voxels:.3g} voxels (at most "
                             f"{MAX_RESAMPLED_VOXELS:.0e}): check the header's voxel sizes",
                             path=img.meta.get("filename_or_obj"))
        if img.shape[0] == 1:
            return self.image(img)
        image, mask = self.image(img[:1]), self.mask(img[1:])
        return MetaTensor(torch.cat([image.as_tensor(), mask.as_tensor()]), meta=image.meta)


def _spatial_steps(recipe: dict, median_spacing, what: str) -> list:
    """Orientation and resampling (they need the affine, so they come first)."""
    from monai.transforms import Orientation

    steps: list = []
    if recipe.get("orientation"):
        # explicit RAS labels: our affines are RAS (NIfTI, and SimpleITKReader converts)
        steps.append(Orientation(axcodes=str(recipe["orientation"]),
                                 labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    spacing = recipe.get("spacing")
    if spacing == "median":
        if median_spacing is None:
            raise ConfigError(f"{what} transform: spacing 'median' needs the cohort's median "
                              "spacing (cohort_median_spacing) from the caller")
        spacing = median_spacing
    if spacing is not None:
        pixdim = [float(v) for v in spacing]
        if len(pixdim) != 3 or min(pixdim) <= 0:
            raise ConfigError(f"{what} transform: spacing must be 3 positive numbers (mm), "
                              f"got {spacing!r}")
        steps.append(ResampleVolume(pixdim))
    return steps


def _hounsfield_check(recipe: dict) -> list:
    window = recipe.get("hu_window")
    return [] if window is None else [RequireHounsfield(window)]


def _intensity_window(recipe: dict) -> list:
    from monai.transforms import ScaleIntensityRange

    window = recipe.get("hu_window")
    if window is None:
        return []
    lo, hi = float(window[0]), float(window[1])
    return [ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
            RejectConstant(after=f"the HU window [{lo:g}, {hi:g}]", why="no voxel inside it")]


def _root_cause(err: BaseException) -> BaseException:
    # MONAI's Compose wraps each failure as RuntimeError("applying transform ...")
    while err.__cause__ is not None and str(err).startswith("applying transform"):
        err = err.__cause__
    return err


class VolumeTransform:
    """Path -> tensor through a MONAI Compose; failures become an InputError naming the file."""

    def __init__(self, transforms: Sequence[Callable], recipe: dict):
        from monai.transforms import Compose

        self.recipe = dict(recipe)
        self.compose = Compose(list(transforms), log_stats=False)

    def __call__(self, path: str | Path | MaskedVolume) -> torch.Tensor:
        reading = _READING.set(path.image if isinstance(path, MaskedVolume) else str(path))
        try:
            out = self.compose(path if isinstance(path, MaskedVolume) else str(path))
        except Exception as err:
            cause = _root_cause(err)
            # memory, a mount, a library: the machine's or the install's, the job's to fail
            if isinstance(cause, InputError) or shared_cause(cause):
                raise cause from None
            raise InputError(f"{type(cause).__name__}: {cause}", path=path) from err
        finally:
            _READING.reset(reading)
        out = out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)
        return out.to(torch.float32).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.recipe!r})"


def build_volume_transform(recipe: dict, median_spacing: Sequence[float] | None = None,
                           seed: int | None = 0) -> VolumeTransform:
    """Volume recipe -> callable ``path -> float32 [1, D, H, W]`` (depth = z first).

    Order: load (under an HU window, checked to be in HU) -> orientation -> spacing ->
    ``roi_crop`` -> HU window -> crop foreground ->
    depth-first -> resize -> normalise (MedicalNet trains on crop, resize, normalise and
    infers on resize, normalise).
    With ``foreground_zscore_noise`` the resize is MedicalNet's
    ``ndimage.zoom(order=0)`` (:class:`ZoomNearest`, on scipy's sampling grid):
    interpolation would smear the exact-zero background the noise fill relies on;
    otherwise trilinear. ``seed`` seeds that noise (the config schema
    has no key for it).
    """
    from monai.transforms import NormalizeIntensity, Resize, ScaleIntensity

    what = "volume"
    recipe = _check_recipe(recipe, _VOLUME_KEYS, _SLICE_KEYS - _VOLUME_KEYS, what)
    normalize = recipe.get("normalize")
    if normalize not in _NORMALIZE:
        raise ConfigError(f"volume transform: normalize must be one of {list(_NORMALIZE)}, "
                          f"got {normalize!r}")
    masks = mask_steps(recipe, what, slices=False)
    steps: list = [LoadVolume(with_mask=masks.needs_mask, min_extent=MIN_VOLUME_EXTENT),
                   *_hounsfield_check(recipe),
                   *_spatial_steps(recipe, median_spacing, what)]
    if masks.active:
        steps.append(ApplyMask(masks, min_extent=(MIN_VOLUME_EXTENT,) * 3))
    steps.append(RejectConstant())
    steps += _intensity_window(recipe)
    if recipe.get("crop_foreground"):
        steps += [CropForegroundAbove(0.0 if recipe.get("hu_window") else None),
                  RejectConstant(after="the foreground crop")]
    steps.append(ToDepthFirst())
    size = recipe.get("resize")
    if size is not None:
        size = [int(v) for v in size]
        if len(size) != 3 or min(size) < 1:
            raise ConfigError(f"volume transform: resize must be [D, H, W], got {size!r}")
        steps.append(ZoomNearest(size) if normalize == "foreground_zscore_noise"
                     else Resize(spatial_size=size, mode="trilinear"))
    if normalize == "zscore":
        steps.append(NormalizeIntensity())
    elif normalize == "minmax":
        steps.append(ScaleIntensity(minv=0.0, maxv=1.0))
    elif normalize == "foreground_zscore_noise":
        steps.append(ForegroundZScoreWithNoise(seed=seed))
    return VolumeTransform(steps, recipe)


def build_slice_transform(recipe: dict,
                          median_spacing: Sequence[float] | None = None) -> VolumeTransform:
    """Slice recipe (VGG11, HyperMM) -> callable ``path -> float32 [S, 3, 224, 224]``.

    load -> orientation -> spacing -> mask steps (``roi_crop``, ``slice_select``) ->
    [0, 1] per volume, or per selected slice (the HU window when given, else min-max) ->
    crop foreground -> axial slices (``min_foreground``,
    ``max_slices``) -> grey to 3 channels, resize 256, centre crop 224, ImageNet
    mean/std.
    """
    from monai.transforms import ScaleIntensity

    what = "slice"
    recipe = _check_recipe(recipe, _SLICE_KEYS, _VOLUME_KEYS - _SLICE_KEYS, what)
    max_slices = recipe.get("max_slices")
    min_foreground = recipe.get("min_foreground")
    if max_slices is not None and int(max_slices) < 1:
        raise ConfigError(f"slice transform: max_slices must be >= 1, got {max_slices!r}")
    if min_foreground is not None and not 0 <= float(min_foreground) <= 1:
        raise ConfigError(f"slice transform: min_foreground is a share in [0, 1], "
                          f"got {min_foreground!r}")
    masks = mask_steps(recipe, what, slices=True)
    steps: list = [LoadVolume(with_mask=masks.needs_mask), *_hounsfield_check(recipe),
                   *_spatial_steps(recipe, median_spacing, what)]
    if masks.active:  # one slice deep is the slice recipe's input, not one line
        steps.append(ApplyMask(masks, min_extent=(MIN_VOLUME_EXTENT, MIN_VOLUME_EXTENT, 1)))
    steps.append(RejectConstant())
    window = _intensity_window(recipe)
    steps.extend(window or [ScaleIntensity(minv=0.0, maxv=1.0)])
    if recipe.get("crop_foreground"):
        steps += [CropForegroundAbove(0.0), RejectConstant(after="the foreground crop")]
    steps += [ToDepthFirst(),
              VolumeToSlices(min_foreground=None if min_foreground is None else float(min_foreground),
                             max_slices=None if max_slices is None else int(max_slices)),
              ImageNetSlices()]
    return VolumeTransform(steps, recipe)


# --------------------------------------------------------------------------- cohort statistics


_AXIS_OF_CODE = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}


def _nifti_affine(path: str | Path) -> np.ndarray | None:
    """The voxel-to-world affine MONAI's NibabelReader gives the volume (its header
    corrected as that reader corrects it), or None, with a warning, when unreadable."""
    import nibabel as nib
    from monai.data.utils import correct_nifti_header_if_necessary

    try:
        image = correct_nifti_header_if_necessary(nib.load(str(path)))
        affine = np.asarray(image.affine, dtype=float)
    except Exception as err:  # nibabel raises many types for a broken header
        log.warning("median spacing: skipping unreadable %s (%s: %s)", path,
                    type(err).__name__, err)
        return None
    if len(image.shape) < 3 or math.prod(image.shape[3:]) > 1:
        # refused when it is read (one 3-D volume a subject): it does not vote either
        log.warning("median spacing: skipping %s (shape %s, not one 3-D volume)", path,
                    tuple(image.shape))
        return None
    return affine


def _world_axes(affine: np.ndarray) -> np.ndarray | None:
    """The world axis each voxel axis runs along (as nibabel and MONAI's Orientation decide
    it), or None where the header gives none: a NaN or infinite matrix, a zero column."""
    from nibabel.orientations import io_orientation

    try:
        ornt = io_orientation(affine)
    except (np.linalg.LinAlgError, ValueError):
        return None
    return None if np.isnan(ornt).any() else ornt[:, 0].astype(int)


def _header_spacing(path: str | Path, codes: str | None) -> np.ndarray | None:
    """One volume's voxel spacing (mm) from its header, in the order
    :func:`cohort_median_spacing` returns; None, with a warning naming the file, when the
    header is unreadable or gives no finite positive spacing and orientation."""
    import SimpleITK as sitk

    if str(path).lower().endswith(_NIFTI_SUFFIXES):
        # as the volume is loaded (NibabelReader): nibabel's affine, the sform when its
        # code is set, where SimpleITK takes the qform under sform code 2; a header
        # whose two disagree had its median taken over the wrong axes
        affine = _nifti_affine(path)
        if affine is None:
            return None
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
    else:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as err:
            log.warning("median spacing: skipping unreadable %s (%s)", path,
                        str(err).strip().splitlines()[-1] if str(err).strip() else err)
            return None
        spacing = np.asarray(reader.GetSpacing(), dtype=float)[:3]
        size = reader.GetSize()
        if (len(spacing) < 3 or math.prod(size[3:]) > 1
                or reader.GetNumberOfComponents() > 1):
            log.warning("median spacing: skipping %s (size %s of %d component(s), not one "
                        "3-D volume)", path, tuple(size), reader.GetNumberOfComponents())
            return None
        direction = np.asarray(reader.GetDirection(), dtype=float).reshape(
            reader.GetDimension(), reader.GetDimension())[:3, :3]
        affine = np.vstack([np.hstack([direction, np.zeros((3, 1))]), [0, 0, 0, 1]])
    # one header's NaN spacing made the median NaN, and resampling then kept every
    # volume's own spacing on that axis; a NaN matrix failed the whole job's setup
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        log.warning("median spacing: skipping %s (voxel spacing %s is not finite and "
                    "positive)", path, spacing.tolist())
        return None
    # a direction without an orientation is refused when the volume is read: it does not
    # vote, whatever the axis order asked for
    world_of_voxel = _world_axes(affine)
    if world_of_voxel is None:
        log.warning("median spacing: skipping %s (its direction matrix gives no orientation)",
                    path)
        return None
    if codes is None:
        return spacing
    world = np.empty(3)
    world[world_of_voxel] = spacing
    return np.array([world[_AXIS_OF_CODE[c]] for c in codes])


def cohort_median_spacing(paths: Sequence[str | Path],
                          orientation: str | None = "RAS") -> tuple[float, float, float]:
    """Median voxel spacing (mm) over volumes, reading headers only.

    Returned in the axis order MONAI's Spacing sees, i.e. after
    ``Orientation(orientation)``: for "RAS", (x, y, z) world axes whatever the
    acquisition plane; with ``orientation=None``, the files' own voxel-axis order.
    Unreadable files, and headers without a finite positive spacing or an orientation,
    are skipped with a warning: such a subject is refused when its own volume is read,
    and must not take the cohort's median, or every subject's job, with it.
    """
    codes = None
    if orientation is not None:
        codes = str(orientation).upper()
        if len(codes) != 3 or sorted(_AXIS_OF_CODE[c] for c in codes if c in _AXIS_OF_CODE) != [0, 1, 2]:
            raise ConfigError(f"orientation {orientation!r} is not three axis codes like 'RAS'")
    spacings = [sp for path in paths if (sp := _header_spacing(path, codes)) is not None]
    if not spacings:
        raise InputError(f"cannot compute a median spacing: none of {len(paths)} volumes "
                         "has a readable header")
    median = np.median(np.stack(spacings), axis=0)
    return (float(median[0]), float(median[1]), float(median[2]))
