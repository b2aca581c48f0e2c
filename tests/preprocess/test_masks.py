"""Masks beside volumes: the ROI crop and the largest-mask slice (HAM on BraTS), and the
subjects they reject (no mask, an unreadable mask, a mask on another grid, an empty
mask)."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mmpipe.cohorts.demo.brats import write_brats
from mmpipe.errors import ConfigError, InputError
from mmpipe.preprocess.masks import MaskedVolume, mask_steps
from mmpipe.preprocess.volume import build_slice_transform, build_volume_transform


def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([1.0, 1.0, 1.0, 1.0])
                             if affine is None else affine), str(path))
    return str(path)


@pytest.fixture
def pair(tmp_path):
    """A (x, y, z) = (20, 24, 10) volume of random intensities and a box mask at
    x 5..8, y 10..15, z 3..6 whose largest axial area is at z = 4."""
    volume = np.random.default_rng(0).uniform(0, 1000, (20, 24, 10)).astype(np.float32)
    mask = np.zeros((20, 24, 10), dtype=np.uint8)
    mask[5:9, 10:16, 3:7] = 2
    mask[4:10, 9:17, 4] = 4   # a wider slice: the largest area
    return (_nifti(tmp_path / "v.nii.gz", volume), _nifti(tmp_path / "m.nii.gz", mask),
            volume)


def test_roi_crop_keeps_the_mask_box_plus_margin_clipped_to_the_volume(pair):
    image, mask, volume = pair
    out = build_volume_transform({"orientation": None, "roi_crop": {"margin": 2},
                                  "normalize": None})(MaskedVolume(image, mask))
    # the box is x 4..9, y 9..16, z 3..6; plus 2 voxels: x 2..11, y 7..18, z 1..8
    np.testing.assert_array_equal(out[0].numpy(),
                                  volume[2:12, 7:19, 1:9].transpose(2, 1, 0))
    wide = build_volume_transform({"orientation": None, "roi_crop": {"margin": 50},
                                   "normalize": None})(MaskedVolume(image, mask))
    assert tuple(wide.shape) == (1, 10, 24, 20)   # clipped: the whole volume


def test_largest_mask_slice_is_the_axial_slice_scaled_to_unit_range(pair):
    image, mask, volume = pair
    recipe = {"orientation": None, "slice_select": "largest_mask"}
    out = build_slice_transform(recipe)(MaskedVolume(image, mask))
    assert tuple(out.shape) == (1, 3, 224, 224)
    # the same slice through the plain recipe: slice index 4 of the whole volume, alone
    plain = build_slice_transform({"orientation": None, "slice_select": 4})(image)
    torch.testing.assert_close(out, plain)
    other = build_slice_transform({"orientation": None, "slice_select": 3})(image)
    assert not torch.allclose(out, other)


def test_brats_miniature_largest_tumour_slice(tmp_path):
    plan = write_brats(tmp_path, n_cases=8, seed=4)
    case = plan.cases[0]
    folder = tmp_path / case
    source = MaskedVolume(str(folder / f"{case}_flair.nii.gz"), str(folder / f"{case}_seg.nii.gz"))
    chosen = build_slice_transform({"slice_select": "largest_mask"})(source)
    expected = build_slice_transform({"slice_select": plan.tumour_slice[case]})(source.image)
    torch.testing.assert_close(chosen, expected)


@pytest.mark.parametrize("bad", ["no mask", "other grid", "other affine", "empty",
                                 "truncated", "gone"])
def test_a_subject_without_a_usable_mask_is_rejected_with_the_reason(pair, tmp_path, bad):
    image, mask, _ = pair
    expected_path = None
    if bad == "truncated":  # the reader's own error named the volume's file
        cut = tmp_path / "cut.nii.gz"
        whole = Path(mask).read_bytes()
        cut.write_bytes(whole[:len(whole) // 2])
        source, match, expected_path = MaskedVolume(image, str(cut)), "cannot read the mask", cut
    elif bad == "no mask":
        source, match = MaskedVolume(image, None), "has no mask file"
    elif bad == "other grid":
        source = MaskedVolume(image, _nifti(tmp_path / "small.nii.gz", np.ones((20, 24, 9))))
        match = "not the same voxel grid"
    elif bad == "other affine":
        shifted = np.diag([1.0, 1.0, 1.0, 1.0])
        shifted[0, 3] = 5.0
        source = MaskedVolume(image, _nifti(tmp_path / "moved.nii.gz", np.ones((20, 24, 10)),
                                            shifted))
        match = "affine differs"
    elif bad == "gone":  # named "volume file not found", at the mask's path
        expected_path = tmp_path / "gone.nii.gz"
        source, match = MaskedVolume(image, str(expected_path)), ": mask file not found"
    else:  # the empty mask's file, not the volume's, is named
        expected_path = _nifti(tmp_path / "zero.nii.gz", np.zeros((20, 24, 10)))
        source, match = MaskedVolume(image, expected_path), "mask is empty"
    transform = build_slice_transform({"orientation": None, "slice_select": "largest_mask"})
    with pytest.raises(InputError, match=match) as err:
        transform(source)
    if expected_path is not None:
        assert err.value.path == str(expected_path)
    if bad == "no mask":  # a plain path is a subject without a mask too
        with pytest.raises(InputError, match="has no mask file"):
            transform(image)


def test_a_fixed_slice_outside_the_volume_is_an_input_error(pair):
    image, _, _ = pair
    with pytest.raises(InputError, match="outside the volume's 10 axial slices"):
        build_slice_transform({"orientation": None, "slice_select": 10})(image)


def test_recipe_errors_are_config_errors():
    with pytest.raises(ConfigError, match="slice encoders"):
        build_volume_transform({"slice_select": "largest_mask"})
    for bad in ({"roi_crop": {"margin": -1}}, {"roi_crop": {"pad": 3}},
                {"slice_select": "biggest"}, {"slice_select": -2}):
        with pytest.raises(ConfigError):
            mask_steps(bad, "slice", slices=True)


def test_mask_transforms_pickle(pair):
    image, mask, _ = pair
    transform = build_slice_transform({"orientation": None, "roi_crop": {"margin": 1},
                                       "slice_select": "largest_mask"})
    again = pickle.loads(pickle.dumps(transform))
    torch.testing.assert_close(again(MaskedVolume(image, mask)),
                               transform(MaskedVolume(image, mask)))


def test_mask_out_strips_what_lies_outside_the_mask(pair):
    """Skull stripping with a brain mask: outside it, the volume's minimum."""
    image, mask, volume = pair
    out = build_volume_transform({"orientation": None, "mask_out": True, "normalize": None}
                                 )(MaskedVolume(image, mask))[0].numpy().transpose(2, 1, 0)
    inside = np.zeros(volume.shape, bool)
    inside[5:9, 10:16, 3:7] = True
    inside[4:10, 9:17, 4] = True
    np.testing.assert_array_equal(out[inside], volume[inside])
    assert (out[~inside] == volume.min()).all()
    with pytest.raises(InputError, match="has no mask file"):
        build_volume_transform({"orientation": None, "mask_out": True})(image)


def test_a_mask_is_resampled_as_a_label_and_keeps_a_one_voxel_structure(tmp_path):
    """Resampled with its volume (bilinear), a one-voxel mask fell to 0.34 at 0.7 mm and
    the subject was rejected as having an empty mask; a thin line vanished from the crop."""
    volume = np.random.default_rng(0).uniform(0, 1000, (12, 12, 12)).astype(np.float32)
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[6, 6, 6] = 1
    image, m = _nifti(tmp_path / "v.nii.gz", volume), _nifti(tmp_path / "m.nii.gz", mask)
    recipe = {"orientation": None, "spacing": [0.7, 0.7, 0.7], "roi_crop": {"margin": 1},
              "normalize": None}
    out = build_volume_transform(recipe)(MaskedVolume(image, m))
    # nearest: the voxel's 1 mm becomes one or two 0.7 mm voxels a side, never none (with
    # the margin's voxel on each side: 3 or 4)
    assert 3 <= min(out.shape[1:]) and max(out.shape[1:]) <= 4, out.shape


def test_a_fixed_slice_is_the_oriented_volumes_whatever_the_crop(pair):
    """With roi_crop, slice_select: 0 gave the crop box's first slice (z = 3 here), and
    an index past the box was "outside the volume"."""
    image, mask, volume = pair
    recipe = {"orientation": None, "roi_crop": {"margin": 0}, "slice_select": 4}
    out = build_slice_transform(recipe)(MaskedVolume(image, mask))
    # slice z = 4 of the volume, cropped to the mask's box on that slice (x 4..9, y 9..16)
    crop = build_slice_transform({"orientation": None, "slice_select": 0})(
        _nifti(image.replace("v.nii", "crop.nii"), volume[4:10, 9:17, 4:5]))
    torch.testing.assert_close(out, crop)
    with pytest.raises(InputError, match="the mask is empty on slice_select's slice 0"):
        build_slice_transform({**recipe, "slice_select": 0})(MaskedVolume(image, mask))


def test_a_roi_crop_box_too_thin_for_the_encoder_is_refused(pair, tmp_path):
    """A mask on one slice with no margin: the box was one slice deep, and Med3D's resize
    made 56 copies of it, stored ok, where the same slice as a file is refused."""
    image, _, _ = pair
    one_slice = np.zeros((20, 24, 10), np.uint8)
    one_slice[5:9, 10:16, 7] = 1
    mask = _nifti(tmp_path / "thin.nii.gz", one_slice)
    volume = build_volume_transform({"orientation": None, "roi_crop": {},
                                     "normalize": None})
    with pytest.raises(InputError, match=r"roi_crop's box is \(4, 6, 1\) voxels"):
        volume(MaskedVolume(image, mask))
    # a margin that widens it to three slices is read
    wide = build_volume_transform({"orientation": None, "roi_crop": {"margin": 1},
                                   "normalize": None})(MaskedVolume(image, mask))
    assert tuple(wide.shape) == (1, 3, 8, 6)
    # one slice deep is what the slice recipe reads
    slices = build_slice_transform({"orientation": None, "roi_crop": {}})(
        MaskedVolume(image, mask))
    assert tuple(slices.shape) == (1, 3, 224, 224)


def test_a_probability_map_or_a_scaled_label_map_is_the_voxels_of_one_half_or_more(
        pair, tmp_path):
    """A probability map (0.001 outside, 0.9 inside) is above 0 everywhere: "> 0" cropped
    to the whole volume and took slice 0 as the largest (every slice tied), stored ok. A
    label map stored scaled reads 1.0039 for 1 and 1.5e-05 for 0: "> 0" counted its
    background."""
    image, mask, volume = pair
    labels = np.asanyarray(nib.load(mask).dataobj)
    soft = np.where(labels > 0, 0.9, 0.001).astype(np.float32)
    scaled = nib.Nifti1Image(labels.astype(np.float32), np.eye(4))
    scaled.set_data_dtype(np.uint8)  # nibabel scales floats into the type's range
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    stored = np.asanyarray(nib.load(tmp_path / "scaled.nii.gz").dataobj)
    assert not np.array_equal(stored, stored.round())  # 1.992 for 2
    # a background a resampler left a trace in
    noisy = _nifti(tmp_path / "noisy.nii.gz", labels.astype(np.float32) + 1.5e-5)
    crop = {"orientation": None, "roi_crop": {"margin": 2}, "normalize": None}
    largest = {"orientation": None, "slice_select": "largest_mask"}
    for other in (_nifti(tmp_path / "soft.nii.gz", soft), str(tmp_path / "scaled.nii.gz"),
                  noisy):
        torch.testing.assert_close(build_volume_transform(crop)(MaskedVolume(image, other)),
                                   build_volume_transform(crop)(MaskedVolume(image, mask)))
        torch.testing.assert_close(build_slice_transform(largest)(MaskedVolume(image, other)),
                                   build_slice_transform(largest)(MaskedVolume(image, mask)))
    faint = _nifti(tmp_path / "faint.nii.gz", np.where(labels > 0, 0.3, 0).astype(np.float32))
    with pytest.raises(InputError, match="the mask is empty"):
        build_volume_transform(crop)(MaskedVolume(image, faint))
