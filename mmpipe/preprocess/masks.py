"""Segmentation masks beside volumes, and the preprocessing steps that read them.

A volume modality ``m`` may bring one mask per subject: the manifest column
``m_mask_path`` (:func:`mask_column`), filled by the cohort's adapter (BraTS: each
case's ``_seg`` file for every sequence). A mask lies on the voxel grid of its volume
(same shape, same affine, checked on loading); a voxel of 0.5 or more counts, so a label
map (BraTS: 1, 2, 4) is its union, a probability map is taken at one half (above 0
everywhere, it covered the whole volume when any voxel above 0 counted), and a label
map stored scaled (1.992 for 2, a trace above 0 for 0) is its labels. Three keys of an
encoder's ``transform`` use it:

- ``roi_crop: {margin: N}``: crop the volume to the bounding box of the mask plus ``N``
  voxels on each side (clipped to the volume), after orientation and resampling, before
  the intensity steps: an organ crop from masks the user has (the MMARE thesis crops CT
  to the kidneys, from TotalSegmentator masks).
- ``mask_out: true``: voxels outside the mask become the volume's minimum (its
  background): skull stripping with a brain mask (IXI: ``ixi.brain_masks``), before the
  crop and the intensity steps.
- ``slice_select``: keep one axial slice (slice recipe only): ``largest_mask``, the slice
  with the most mask voxels (HAM on BraTS: "the axial slice with the largest tumour
  area", then scaled to [0, 1] as the recipe's intensity step does per image), or an
  integer, that slice index of the oriented volume (no mask needed).

Masks may also come from TotalSegmentator (:mod:`mmpipe.preprocess.segment`, the
``segment`` rule): then :func:`read_masks` gives them instead of the manifest column.

A subject whose recipe needs a mask and that has none, whose mask does not match its
volume, or whose mask is empty is rejected with the reason; the other subjects go on.
Importing this module does not import torch or MONAI (adapters name the column).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmpipe.errors import ConfigError

LARGEST_MASK = "largest_mask"
MASK_LEVEL = 0.5  # a voxel of the mask is one of this value or more (the module says why)
MASK_KEYS = ("roi_crop", "slice_select", "mask_out")
MASKS_TABLE = "masks.parquet"  # a segment job's list of its masks (mmpipe.preprocess.segment)


def mask_column(modality: str) -> str:
    """The manifest column of ``modality``'s mask files."""
    return f"{modality}_mask_path"


@dataclass(frozen=True)
class MaskedVolume:
    """A volume file and its mask file (None: the subject has none)."""

    image: str
    mask: str | None

    def __str__(self) -> str:  # messages about the input name the volume
        return self.image


@dataclass(frozen=True)
class MaskSteps:
    """What a recipe asks of the mask: a crop margin (voxels) and a slice choice."""

    roi_margin: int | None = None
    slice_select: str | int | None = None
    mask_out: bool = False

    @property
    def needs_mask(self) -> bool:
        return self.roi_margin is not None or self.slice_select == LARGEST_MASK or self.mask_out

    @property
    def active(self) -> bool:
        return self.needs_mask or self.slice_select is not None


def mask_steps(recipe: dict[str, Any], what: str, *, slices: bool) -> MaskSteps:
    """The recipe's ``roi_crop`` and ``slice_select``, checked."""
    margin = None
    crop = recipe.get("roi_crop")
    if crop is not None:
        if not isinstance(crop, dict) or set(crop) - {"margin"}:
            raise ConfigError(f"{what} transform: roi_crop is {{margin: N}} (voxels), got {crop!r}")
        margin = crop.get("margin", 0)
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ConfigError(f"{what} transform: roi_crop.margin must be a whole number of "
                              f"voxels >= 0, got {margin!r}")
    choice = recipe.get("slice_select")
    if choice is not None:
        if not slices:
            raise ConfigError(f"{what} transform: slice_select applies to slice encoders "
                              "(vgg11_slices), not to a 3-D volume encoder")
        if choice != LARGEST_MASK and (isinstance(choice, bool) or not isinstance(choice, int)
                                       or choice < 0):
            raise ConfigError(f"{what} transform: slice_select is {LARGEST_MASK!r} or a slice "
                              f"index >= 0, got {choice!r}")
    mask_out = recipe.get("mask_out", False)
    if not isinstance(mask_out, bool):
        raise ConfigError(f"{what} transform: mask_out is true or false, got {mask_out!r}")
    return MaskSteps(margin, choice, mask_out)


def reads_a_mask(encoder_cfg: dict[str, Any]) -> bool:
    """Whether an encoder's transform reads the subject's mask (``roi_crop``,
    ``mask_out``, ``slice_select: largest_mask``). ``slices=True`` accepts every mask key;
    the config check vets the recipe."""
    return mask_steps(encoder_cfg.get("transform") or {}, "", slices=True).needs_mask


def _segmented(modality_cfg: dict[str, Any]) -> bool:
    """Whether a segment job makes the modality's masks (``mask: {from: totalsegmentator}``)."""
    return (modality_cfg.get("mask") or {}).get("from") == "totalsegmentator"


def reads_segmented_masks(encoder_cfg: dict[str, Any], modality_cfg: dict[str, Any]) -> bool:
    """Whether an encoder's transform reads the masks a segment job makes for the
    modality: its inputs and its key hold them then, and only then (an encoder that reads
    none rejected every subject without a mask)."""
    return _segmented(modality_cfg) and reads_a_mask(encoder_cfg)


def reads_adapter_masks(encoder_cfg: dict[str, Any], modality_cfg: dict[str, Any]) -> bool:
    """Whether an encoder's transform reads the masks the adapter gives (the manifest's
    :func:`mask_column`): it reads a mask, and no segment job makes it one."""
    return not _segmented(modality_cfg) and reads_a_mask(encoder_cfg)


def read_masks(masks_dir: str | Path) -> dict[str, tuple[str | None, str]]:
    """``subject -> (mask path or None, why none)`` of a ``segment`` job's output."""
    import polars as pl

    masks_dir = Path(masks_dir)
    table = pl.read_parquet(masks_dir / MASKS_TABLE)
    return {r["subject_id"]: (str(masks_dir / r["mask"]) if r["mask"] else None, r["reason"])
            for r in table.iter_rows(named=True)}
