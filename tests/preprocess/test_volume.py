"""Volume and slice transform chains: tiny NIfTI volumes with known geometry and
values, plus nibabel's real ``anatomical.nii``."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import Orientation

from mmpipe.encoders.registry import MEDICALNET_RECIPE, VGG_SLICE_RECIPE
from mmpipe.errors import ConfigError, InputError, out_of_memory
from mmpipe.preprocess.imagenet import IMAGENET_MEAN, IMAGENET_STD
from mmpipe.preprocess.volume import (
    ForegroundZScoreWithNoise,
    LoadVolume,
    build_slice_transform,
    build_volume_transform,
    cohort_median_spacing,
)

SHAPE = (10, 12, 6)  # voxel axes (i, j, k) as stored
SPACING = (2.0, 1.5, 4.0)
MARKER = 7.0
PLAIN = {"orientation": None, "normalize": None}


def lps_affine(spacing=SPACING, origin=(10.0, 20.0, -5.0)) -> np.ndarray:
    """RAS affine of an LPS-stored volume: i runs to patient left, j to posterior."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = origin
    return aff


def blob_volume() -> np.ndarray:
    arr = np.zeros(SHAPE, np.float32)
    rng = np.random.default_rng(1)
    arr[2:6, 3:8, 1:4] = 100 + 20 * rng.random((4, 5, 3))  # textured bright blob
    arr[0, 0, 0] = MARKER  # orientation marker in the first stored voxel
    return arr


@pytest.fixture()
def blob(tmp_path) -> Path:
    path = tmp_path / "blob.nii.gz"
    nib.save(nib.Nifti1Image(blob_volume(), lps_affine()), path)
    assert nib.aff2axcodes(nib.load(path).affine) == ("L", "P", "S")
    return path


@pytest.fixture(scope="module")
def anatomical() -> Path:
    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.exists():
        pytest.skip(f"nibabel's test volume not installed at {path}")
    return path


# --------------------------------------------------------------------------- geometry


def test_depth_first_layout_without_reorientation(blob):
    out = build_volume_transform(PLAIN)(blob)
    assert out.dtype == torch.float32 and out.shape == (1, 6, 12, 10)  # [1, z, y, x]
    np.testing.assert_array_equal(out[0].numpy(), blob_volume().transpose(2, 1, 0))


def test_orientation_ras_moves_the_marker_as_the_affine_says(blob):
    out = build_volume_transform({**PLAIN, "orientation": "RAS"})(blob)
    assert out.shape == (1, 6, 12, 10)
    # stored i=0 is the rightmost column and j=0 the most anterior row: in RAS they
    # become the last x (W) and the last y (H) index; z (D) is unchanged
    (hit,) = torch.nonzero(out[0] == MARKER).tolist()
    assert hit == [0, 11, 9]


def test_spacing_resamples_to_the_expected_size(blob):
    recipe = {**PLAIN, "orientation": "RAS", "spacing": [1.0, 0.75, 2.0]}
    out = build_volume_transform(recipe)(blob)
    # each axis keeps its extent: (n - 1) * old / new + 1 voxels, [D, H, W] = [z, y, x]
    assert out.shape == (1, 5 * 2 + 1, 11 * 2 + 1, 9 * 2 + 1)
    # "median" takes the caller's cohort median
    med = build_volume_transform({**recipe, "spacing": "median"}, median_spacing=(2.0, 1.5, 4.0))
    assert med(blob).shape == (1, 6, 12, 10)
    with pytest.raises(ConfigError, match="median"):
        build_volume_transform({**recipe, "spacing": "median"})


def test_non_nifti_volume_reads_like_the_nifti(blob, tmp_path):
    mha = tmp_path / "blob.mha"
    sitk.WriteImage(sitk.ReadImage(str(blob)), str(mha))
    recipe = {**PLAIN, "orientation": "RAS", "spacing": [1.0, 1.0, 2.0]}
    transform = build_volume_transform(recipe)
    torch.testing.assert_close(transform(mha), transform(blob))


def test_crop_foreground_and_resize(blob):
    crop = build_volume_transform({**PLAIN, "crop_foreground": True})(blob)
    # bounding box of voxels above the minimum (0): the blob and the marker at (0, 0, 0)
    assert crop.shape == (1, 4, 8, 6)
    out = build_volume_transform({**PLAIN, "crop_foreground": True, "resize": [3, 5, 7]})(blob)
    assert out.shape == (1, 3, 5, 7)


# --------------------------------------------------------------------------- intensities


def test_foreground_zscore_matches_medicalnet_and_fills_background_with_noise():
    volume = torch.zeros(1, 6, 12, 10)
    volume[0, 1:4, 3:8, 2:6] = torch.linspace(10, 200, 60).reshape(3, 5, 4)
    volume[0, 5, 0, 0] = -30.0  # negative: neither foreground nor background in MedicalNet
    out = ForegroundZScoreWithNoise(seed=3)(volume)
    fg = volume > 0
    v = volume.numpy().astype(np.float64)
    expected = (v - v[v > 0].mean()) / v[v > 0].std()  # MedicalNet, numpy std (ddof=0)
    np.testing.assert_allclose(out[fg].numpy(), expected[fg.numpy()], rtol=1e-5, atol=1e-5)
    assert float(out[fg].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(out[fg].std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert float(out[0, 5, 0, 0]) == pytest.approx(expected[0, 5, 0, 0], rel=1e-5)
    background = out[volume == 0]
    assert background.numel() == 720 - 61 and not torch.any(background == 0)
    assert abs(float(background.mean())) < 0.15 and float(background.std()) == pytest.approx(1, abs=0.1)
    # seeded: reproducible; another seed changes only the background
    torch.testing.assert_close(ForegroundZScoreWithNoise(seed=3)(volume), out)
    other = ForegroundZScoreWithNoise(seed=4)(volume)
    torch.testing.assert_close(other[fg], out[fg])
    assert not torch.equal(other[volume == 0], background)


def test_foreground_zscore_refuses_an_empty_volume(tmp_path):
    with pytest.raises(ValueError, match="no foreground"):
        ForegroundZScoreWithNoise()(torch.full((1, 3, 4, 4), -1000.0))
    path = tmp_path / "air.nii.gz"
    air = np.full((4, 4, 3), -1000, np.int16)
    air[0] = -900  # not one intensity (RejectConstant's), but nothing above 0
    nib.save(nib.Nifti1Image(air, np.eye(4)), path)
    with pytest.raises(InputError, match="no foreground") as err:
        build_volume_transform({**PLAIN, "normalize": "foreground_zscore_noise"})(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize(("shape", "size"), [((1, 120, 20, 24), (56, 9, 24)),
                                            ((1, 7, 30, 5), (16, 11, 12)),
                                            ((2, 5, 4, 3), (1, 4, 6))])
def test_the_nearest_resize_takes_scipys_voxels(shape, size):
    """MedicalNet resizes by ``ndimage.zoom(order=0)``; MONAI's nearest took other voxels
    (of 56 slices from 120, 46 from another slice)."""
    from scipy import ndimage

    from mmpipe.preprocess.volume import ZoomNearest

    volume = torch.arange(np.prod(shape), dtype=torch.float32).reshape(shape) + 1
    out = ZoomNearest(size)(volume)
    assert out.shape == (shape[0], *size)
    for c in range(shape[0]):
        scale = [m / n for m, n in zip(size, shape[1:], strict=True)]
        expected = ndimage.zoom(volume[c].numpy(), scale, order=0)
        np.testing.assert_array_equal(out[c].numpy(), expected)


def test_medicalnet_recipe_end_to_end(blob):
    from mmpipe.preprocess.volume import ZoomNearest

    recipe = {**MEDICALNET_RECIPE, "resize": [4, 8, 8]}
    transform = build_volume_transform(recipe)
    assert any(isinstance(t, ZoomNearest) for t in transform.compose.transforms)
    out = transform(blob)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    # nearest-neighbour resize keeps the background at exactly 0, so it becomes noise
    assert not torch.any(out == 0)


@pytest.fixture()
def ct(tmp_path) -> Path:
    hu = np.full((8, 8, 4), -1024, np.int16)  # outside the field of view
    hu[1:7, 1:7, :] = -1000  # air
    hu[2:6, 2:5, 1:3] = 40  # soft tissue: 4 x 3 voxels, so slices are not square
    hu[3, 3, 1] = 100
    hu[4, 4, 2] = 1500  # bone
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu, lps_affine((0.8, 0.8, 2.5))), path)
    return path


def test_hu_window_clips_and_scales(ct):
    out = build_volume_transform({**PLAIN, "hu_window": [-100, 300]})(ct)[0]  # [z, y, x]
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert float(out[1, 3, 3]) == pytest.approx(0.5)  # 100 HU
    assert float(out[1, 2, 2]) == pytest.approx(0.35)  # 40 HU
    assert float(out[2, 4, 4]) == 1.0  # bone clipped
    assert float(out[0, 1, 1]) == 0.0  # air clipped
    # crop to the voxels above the window's low end: the tissue block only
    cropped = build_volume_transform({**PLAIN, "hu_window": [-100, 300],
                                      "crop_foreground": True})(ct)
    assert cropped.shape == (1, 2, 3, 4)
    # without a window the level is the volume minimum: air stays, the -1024 rim goes
    assert build_volume_transform({**PLAIN, "crop_foreground": True})(ct).shape == (1, 4, 6, 6)


@pytest.mark.parametrize("build", [build_volume_transform, build_slice_transform])
def test_a_volume_not_in_hounsfield_units_under_an_hu_window_is_refused(ct, tmp_path, build):
    """A CT NIfTI stored as HU + 1024 (raw unsigned values): its air fell inside the
    window and its tissue clipped to the top, and the silhouette was stored "ok". A NIfTI
    file does not say its modality; a CT in HU holds air or fat below 0."""
    raw = tmp_path / "raw.nii.gz"
    image = nib.load(ct)
    nib.save(nib.Nifti1Image((np.asarray(image.dataobj) + 1024).astype(np.uint16),
                             image.affine), raw)
    recipe = {**(PLAIN if build is build_volume_transform else VGG_SLICE_RECIPE),
              "hu_window": [-100, 300]}
    with pytest.raises(InputError, match=r"no voxel below 0 \(the lowest is 0\) under "
                                         r"hu_window \[-100, 300\]") as err:
        build(recipe)(raw)
    assert err.value.path == str(raw)
    build(recipe)(ct)  # the same volume in HU
    build({**recipe, "hu_window": None})(raw)  # no window, no claim about its units


def test_zscore_and_minmax(ct):
    z = build_volume_transform({**PLAIN, "normalize": "zscore"})(ct)
    assert float(z.mean()) == pytest.approx(0, abs=1e-5) and float(z.std(unbiased=False)) == pytest.approx(1, abs=1e-4)
    m = build_volume_transform({**PLAIN, "normalize": "minmax"})(ct)
    assert float(m.min()) == 0.0 and float(m.max()) == 1.0


# --------------------------------------------------------------------------- slices (VGG11)


def test_slice_recipe_shapes_and_imagenet_range(blob):
    out = build_slice_transform(VGG_SLICE_RECIPE)(blob)
    assert out.shape == (6, 3, 224, 224) and out.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    grey = out * std + mean  # undo the normalisation: one grey image in [0, 1] per slice
    assert float(grey.min()) >= -1e-5 and float(grey.max()) <= 1 + 1e-5
    torch.testing.assert_close(grey[:, 0], grey[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(grey[:, 0], grey[:, 2], atol=1e-5, rtol=0)
    lo = (0 - mean) / std
    torch.testing.assert_close(out.amin(dim=(0, 2, 3)), lo.flatten(), atol=1e-5, rtol=0)
    # the blob's slices (z 1..3) are the bright ones, the empty ones stay at 0
    assert float(grey[1:4].max()) > 0.8 and float(grey[4:].max()) == pytest.approx(0, abs=1e-6)


def test_slice_selection(blob, caplog):
    fg = build_slice_transform({**VGG_SLICE_RECIPE, "min_foreground": 0.1})(blob)
    assert fg.shape[0] == 3  # only z = 1, 2, 3 hold the blob (20/120 pixels each)
    few = build_slice_transform({**VGG_SLICE_RECIPE, "max_slices": 4})(blob)
    assert few.shape[0] == 4
    full = build_slice_transform(VGG_SLICE_RECIPE)(blob)
    torch.testing.assert_close(few, full[[0, 2, 3, 5]])  # evenly spaced: round(linspace(0, 5, 4))
    none = build_slice_transform({**VGG_SLICE_RECIPE, "min_foreground": 0.9})(blob)
    assert none.shape[0] == 1  # nothing qualifies: the fullest slice is kept
    # and the log says of which file (it named none)
    assert any(r.getMessage().startswith(f"{blob}: no slice has >= 0.9 foreground")
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_slice_recipe_with_a_window_and_non_square_slices(ct):
    out = build_slice_transform({**VGG_SLICE_RECIPE, "hu_window": [-100, 300],
                                 "crop_foreground": True})(ct)
    assert out.shape == (2, 3, 224, 224)


# --------------------------------------------------------------------------- recipes, errors


def test_recipe_errors_are_config_errors(blob):
    with pytest.raises(ConfigError, match="unknown keys"):
        build_volume_transform({"orientaton": "RAS"})
    with pytest.raises(ConfigError, match="normalize"):
        build_volume_transform({"normalize": "l2"})
    with pytest.raises(ConfigError, match="hu_window"):
        build_volume_transform({"hu_window": [300, -100]})
    with pytest.raises(ConfigError, match="resize"):
        build_volume_transform({"resize": [4, 4]})
    with pytest.raises(ConfigError, match="max_slices"):
        build_slice_transform({"max_slices": 0})


def test_unreadable_and_4d_files_are_input_errors(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(InputError) as err:
        build_volume_transform(PLAIN)(bad)
    assert err.value.path == str(bad)
    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), four_d)
    with pytest.raises(InputError, match="4-D or multi-channel"):
        build_volume_transform(PLAIN)(four_d)


@pytest.mark.parametrize("suffix", [".nii", ".mha", ".nrrd"])
def test_a_header_that_declares_more_than_its_file_is_the_subject_s_error(tmp_path, suffix):
    """An .mha or .nrrd whose header declares gigabytes (a damaged DimSize of a 1 KB
    file): SimpleITK's "Failed to allocate memory for image" counted as the machine's
    and failed every subject's encoding job on every retry (NIfTI was checked)."""
    path = tmp_path / f"bad{suffix}"
    if suffix == ".nii":
        img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
        img.header.set_data_shape((4000, 4000, 4000))
        path.write_bytes(img.header.binaryblock + b"\0" * 4 + np.zeros(64, np.float32).tobytes())
    else:
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 10, 16), np.float32)), str(path))
        text = path.read_bytes()
        field = (b"DimSize = 16 10 6", b"DimSize = 4000 4000 4000") if suffix == ".mha" else (
            b"sizes: 16 10 6", b"sizes: 4000 4000 4000")
        assert field[0] in text
        path.write_bytes(text.replace(*field))
    with pytest.raises(InputError, match=r"its header declares \d+ bytes of data") as err:
        build_volume_transform(PLAIN)(path)
    assert err.value.path == str(path)


def test_2d_image_is_refused_as_not_a_volume(tmp_path):
    flat = tmp_path / "2d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 6), np.float32), np.eye(4)), flat)
    with pytest.raises(InputError, match=r"expected one 3-D volume, got a 2-D image of "
                                         r"shape \(8, 6\)") as err:
        build_volume_transform(PLAIN)(flat)
    assert err.value.path == str(flat)


def test_non_finite_voxels_are_refused_at_load(tmp_path):
    """A NaN slice must not reach the network, nor vanish in a resize that skips it."""
    arr = blob_volume()
    arr[:, :, 2] = np.nan  # one slice: 10 x 12 voxels
    arr[0, 1, 0] = -np.inf
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(arr, lps_affine()), nan)
    # a float64 value beyond float32's range becomes inf in the float32 volume
    big = blob_volume().astype(np.float64)
    big[1, 1, 1] = 1e300
    huge = tmp_path / "huge.nii.gz"
    nib.save(nib.Nifti1Image(big, lps_affine()), huge)
    n = int(np.prod(SHAPE))
    recipes = [build_volume_transform({**MEDICALNET_RECIPE, "resize": [2, 4, 4]}),
               build_slice_transform(VGG_SLICE_RECIPE)]
    for transform in recipes:
        with pytest.raises(InputError) as err:
            transform(nan)
        assert err.value.reason.startswith(f"121 non-finite voxel(s) (NaN/inf) of {n}, shape "
                                           f"{SHAPE}")
        assert err.value.path == str(nan) and str(nan) in str(err.value)
        with pytest.raises(InputError, match=f"1 non-finite voxel\\(s\\) \\(NaN/inf\\) of {n}"):
            transform(huge)


def test_transforms_pickle(blob):
    transform = build_volume_transform({**MEDICALNET_RECIPE, "resize": [4, 8, 8]})
    clone = pickle.loads(pickle.dumps(transform))
    torch.testing.assert_close(clone(blob), transform(blob))
    pickle.dumps(build_slice_transform({**VGG_SLICE_RECIPE, "crop_foreground": True}))


# --------------------------------------------------------------------------- cohort median spacing


def test_cohort_median_spacing_in_ras_axis_order(tmp_path, blob):
    paths = [blob]
    for n, spacing in enumerate([(1.0, 1.0, 3.0), (3.0, 1.0, 5.0)]):
        path = tmp_path / f"v{n}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), lps_affine(spacing)), path)
        paths.append(path)
    # a volume stored with its voxel axes as (z, x, y): spacing (5, 2, 1.5) per voxel axis
    perm = np.zeros((4, 4))
    perm[2, 0], perm[0, 1], perm[1, 2], perm[3, 3] = 5.0, 2.0, 1.5, 1.0
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), perm),
             tmp_path / "zxy.nii.gz")
    paths.append(tmp_path / "zxy.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"junk")
    paths.append(tmp_path / "broken.nii.gz")
    # RAS order: x = {2, 1, 3, 2}, y = {1.5, 1, 1, 1.5}, z = {4, 3, 5, 5}
    assert cohort_median_spacing(paths) == pytest.approx((2.0, 1.25, 4.5))
    # voxel-axis order: the permuted file contributes (5, 2, 1.5)
    assert cohort_median_spacing(paths, orientation=None) == pytest.approx((2.5, 1.25, 3.5))
    # what Spacing sees after Orientation("RAS") for the permuted file
    out = build_volume_transform({**PLAIN, "orientation": "RAS"})(tmp_path / "zxy.nii.gz")
    assert out.shape == (1, 3, 5, 4)  # [z, y, x] = stored (axis 0, axis 2, axis 1)
    with pytest.raises(InputError):
        cohort_median_spacing([tmp_path / "broken.nii.gz"])


def test_median_spacing_reads_the_affine_the_volume_is_loaded_with(tmp_path):
    """A qform and a permuted sform of code 2 (aligned to another scan) with the voxel
    sizes of both: SimpleITK read the qform, MONAI's loader the sform, and ``spacing:
    median`` resampled along the wrong axes. Where the voxel sizes match the qform alone,
    the loader corrects the header to it, and so does the median. An upper-case name is
    NIfTI too."""
    sform = np.zeros((4, 4))
    sform[2, 0], sform[0, 1], sform[1, 2], sform[3, 3] = 5.0, 2.0, 1.5, 1.0
    cases = {"both.nii.gz": (5.0, 2.0, 1.5), "QFORM.NII.GZ": (2.0, 3.0, 4.0)}
    for name, qform_zooms in cases.items():
        image = nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), None)
        image.set_qform(np.diag([*qform_zooms, 1.0]), code=1)
        image.set_sform(sform, code=2)
        nib.save(image, tmp_path / name)
        loaded = Orientation(axcodes="RAS")(LoadVolume()(tmp_path / name))
        seen = np.linalg.norm(np.asarray(loaded.affine)[:3, :3], axis=0)
        assert cohort_median_spacing([tmp_path / name]) == pytest.approx(seen), name
    assert seen == pytest.approx((2.0, 3.0, 4.0))  # the qform, as the loader corrected it
    assert cohort_median_spacing([tmp_path / "both.nii.gz"]) == pytest.approx((2.0, 1.5, 5.0))


def test_a_header_without_a_spacing_or_orientation_is_skipped_not_the_cohort(tmp_path):
    """A NaN sform failed the median in the encode job's setup (SVD did not converge), so
    every subject of the job failed; a singular .mha direction cast a NaN to an index;
    with ``orientation: null`` a NaN voxel size made the median NaN, and resampling kept
    every volume's own spacing on that axis. Each such header is skipped, named."""
    good = []
    for n, z in enumerate([1.0, 2.0, 5.0, 5.0]):
        good.append(tmp_path / f"s{n}.nii.gz")
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.diag([1, 1, z, 1.0])),
                 good[-1])

    def broken(name: str, z: float) -> Path:  # an sform nibabel would refuse to write
        header = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)).header
        header.set_sform(np.diag([1, 1, 2, 1.0]), code=1)
        header.set_qform(None, code=0)
        header["srow_z"] = [0, 0, z, 0]
        header["pixdim"][3] = z
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None, header),
                 tmp_path / name)
        return tmp_path / name

    nan_sform, zero_column = broken("nan_sform.nii.gz", np.nan), broken("zero.nii.gz", 0.0)
    singular = tmp_path / "singular.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 4, 4), np.float32)), singular)
    text = singular.read_bytes().replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                         b"TransformMatrix = 1 0 0 0 1 0 0 0 0")
    assert text != singular.read_bytes()
    singular.write_bytes(text)
    # a 4-D file and a vector image: refused when read, so no vote (the fMRI's 9 mm slices
    # moved the median)
    series = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.diag([1, 1, 9.0, 1])),
             series)
    vector = tmp_path / "vector.mha"
    image = sitk.GetImageFromArray(np.ones((4, 4, 4, 3), np.float32), isVector=True)
    image.SetSpacing((1.0, 1.0, 9.0))
    sitk.WriteImage(image, vector)
    cohort = [*good, nan_sform, zero_column, singular, series, vector, series]
    assert cohort_median_spacing(cohort) == pytest.approx((1.0, 1.0, 3.5))
    assert cohort_median_spacing(cohort, orientation=None) == pytest.approx((1.0, 1.0, 3.5))
    with pytest.raises(InputError, match="none of 5 volumes"):
        cohort_median_spacing([nan_sform, zero_column, singular, series, vector])


def test_the_volume_recipe_refuses_a_slice_the_slice_recipe_takes(tmp_path):
    """A one-slice NIfTI went through Med3D's recipe as 56 copies of that slice, stored
    ok; a 2-D image saved as a volume is still a slice recipe's input."""
    rng = np.random.default_rng(0)
    array = np.zeros((32, 32, 1), np.float32)
    array[4:28, 6:26, 0] = rng.random((24, 20)) * 500 + 100
    path = tmp_path / "one_slice.nii.gz"
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 5.0, 1.0])), path)
    with pytest.raises(InputError, match=r"fewer than 3 along an axis") as err:
        build_volume_transform({**MEDICALNET_RECIPE, "resize": [8, 16, 16]})(path)
    assert "one_slice.nii.gz" in str(err.value)
    slices = build_slice_transform({**VGG_SLICE_RECIPE, "spacing": None})(path)
    assert slices.shape[0] == 1


# --------------------------------------------------------------------------- real volume


def test_anatomical_volume_through_both_recipes(anatomical):
    assert cohort_median_spacing([anatomical]) == pytest.approx((2.0, 2.0, 2.0))
    vol = build_volume_transform({**MEDICALNET_RECIPE, "resize": [8, 16, 16]})(anatomical)
    assert vol.shape == (1, 8, 16, 16) and torch.isfinite(vol).all()
    assert abs(float(vol.mean())) < 0.5 and 0.5 < float(vol.std()) < 1.5
    resampled = build_volume_transform({"orientation": "RAS", "spacing": [4.0, 4.0, 4.0],
                                        "normalize": None})(anatomical)
    # 33 x 41 x 25 voxels of 2 mm -> extent / 4 mm + 1 voxels, [D, H, W] = [z, y, x]
    assert resampled.shape == (1, 13, 21, 17)
    slices = build_slice_transform({**VGG_SLICE_RECIPE, "max_slices": 4,
                                    "min_foreground": 0.2})(anatomical)
    assert slices.shape == (4, 3, 224, 224)
    assert float(slices.min()) >= (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD) - 1e-4
    assert float(slices.max()) <= (1 - min(IMAGENET_MEAN)) / min(IMAGENET_STD) + 1e-4


@pytest.mark.parametrize("transform_cls", ["volume", "image"])
def test_a_transform_out_of_memory_is_the_machines_not_the_files(transform_cls, tmp_path):
    """MONAI wraps a transform's failure; torch's CPU allocator raises RuntimeError, which
    became an InputError naming the file, and so the subject's rejection."""
    from mmpipe.preprocess.images import ImageTransform
    from mmpipe.preprocess.volume import VolumeTransform

    def allocate(_):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                           "allocate 46116860184273879040 bytes")

    if transform_cls == "volume":
        transform = VolumeTransform([allocate], {})
    else:
        transform = ImageTransform()
        transform.compose.transforms = (allocate,)
    with pytest.raises(RuntimeError) as err:  # the allocator's, or MONAI's wrapping it
        transform(tmp_path / "x.nii.gz")
    assert out_of_memory(err.value) and not isinstance(err.value, InputError)


@pytest.mark.parametrize("transform_cls", ["volume", "image"])
def test_a_transform_on_a_dropped_mount_fails_the_job_not_the_file(transform_cls, tmp_path):
    """A stale NFS handle inside a reader became an InputError naming the file: the
    subject's rejection, in a store that looked finished."""
    from mmpipe.errors import shared_cause
    from mmpipe.preprocess.images import ImageTransform
    from mmpipe.preprocess.volume import VolumeTransform

    def stale(_):
        raise OSError(116, "Stale file handle")

    if transform_cls == "volume":
        transform = VolumeTransform([stale], {})
    else:
        transform = ImageTransform()
        transform.compose.transforms = (stale,)
    with pytest.raises(Exception) as err:
        transform(tmp_path / "x.nii.gz")
    assert shared_cause(err.value) and not isinstance(err.value, InputError)


@pytest.mark.parametrize("build", ["volume", "slices"])
def test_a_volume_of_one_intensity_is_rejected_by_every_recipe(build, tmp_path):
    """A blank series scaled to [0, 1] was zeros, encoded by VGG11 and stored "ok", while
    the MedicalNet recipe's crop rejected the same file."""
    path = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 6), np.float32), np.eye(4)), str(path))
    transform = (build_volume_transform(MEDICALNET_RECIPE) if build == "volume"
                 else build_slice_transform(VGG_SLICE_RECIPE))
    with pytest.raises(InputError, match="one intensity"):
        transform(path)


@pytest.mark.parametrize("build", ["volume", "slices"])
def test_a_volume_the_hu_window_leaves_blank_is_rejected(build, tmp_path):
    """Padding at -3024 HU and a block at -2048: two values, both below the window, so
    the check before it passed, and the windowed volume was all zeros, stored "ok"."""
    hu = np.full((12, 10, 6), -3024, np.int16)
    hu[3:8, 3:7, 2:4] = -2048
    path = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(path))
    window = {"hu_window": [-1000, 400]}
    transform = (build_volume_transform({**PLAIN, **window, "normalize": "zscore"})
                 if build == "volume" else build_slice_transform({**PLAIN, **window}))
    with pytest.raises(InputError, match=r"after the HU window \[-1000, 400\]"):
        transform(path)


@pytest.mark.parametrize("build", ["volume", "slices"])
@pytest.mark.parametrize("window", [None, [-100, 200]])
def test_a_volume_the_foreground_crop_leaves_uniform_is_rejected(build, window, tmp_path):
    """Air and dense tissue only, through a window that maps them to its two ends, or a
    uniform block on a zero background: the crop kept one intensity, which z-scores and
    min-max scaling made zeros (a blank slice for VGG11), stored "ok"."""
    volume = np.full((32, 32, 32), -1000 if window else 0, np.int16)
    volume[8:20, 10:22, 5:25] = 700 if window else 100
    path = tmp_path / "uniform.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    recipe = {**PLAIN, "crop_foreground": True, **({"hu_window": window} if window else {})}
    transform = (build_volume_transform({**recipe, "normalize": "zscore"})
                 if build == "volume" else build_slice_transform(recipe))
    with pytest.raises(InputError, match="one intensity everywhere after the foreground "
                                         "crop: no image"):
        transform(path)


def test_a_header_whose_resampling_would_not_fit_is_the_subjects_error(tmp_path):
    """Voxel sizes in the wrong unit (40 mm) asked the resampling for 30 GB: the
    allocation failed as the machine's, which failed the job for every subject."""
    path = tmp_path / "cm.nii.gz"
    data = np.random.default_rng(0).uniform(0, 1, (32, 32, 32)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([40.0, 40.0, 40.0, 1.0])), str(path))
    with pytest.raises(InputError, match=r"would be 1\.91e\+09 voxels") as err:
        build_volume_transform({**PLAIN, "spacing": [1, 1, 1]})(path)
    assert not out_of_memory(err.value) and str(path) in str(err.value)


def test_the_resampling_bound_counts_the_voxels_spacing_makes_of_a_sheared_grid(tmp_path,
                                                                               monkeypatch):
    """Voxel sizes alone put this sheared grid at 20,592 voxels at 1 mm; Spacing makes
    23,800 of it, so a volume near the bound slipped past it."""
    import mmpipe.preprocess.volume as volume

    affine = np.diag([1.3, 0.9, 2.0, 1.0])
    affine[0, 1] = 0.4
    path = tmp_path / "sheared.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(0, 1, (20, 22, 18))
                             .astype(np.float32), affine), str(path))
    recipe = {"orientation": "LPS", "spacing": [1, 1, 1], "normalize": None}
    monkeypatch.setattr(volume, "MAX_RESAMPLED_VOXELS", 23800)
    assert np.prod(build_volume_transform(recipe)(path).shape) == 23800
    monkeypatch.setattr(volume, "MAX_RESAMPLED_VOXELS", 23799)
    with pytest.raises(InputError, match="would be 2.38e\\+04 voxels"):
        build_volume_transform(recipe)(path)


def test_a_volume_one_voxel_thick_is_rejected_by_the_slice_recipe(tmp_path):
    """Resize(256) of a slice's short side blew a 1-voxel-thick volume (a localizer) up to
    slices of 256 x 24,576: gigabytes, and the memory the machine lacked took down the
    whole job rather than this subject."""
    from mmpipe.preprocess.imagenet_recipe import MAX_ASPECT, ImageNetSlices

    path = tmp_path / "localizer.nii.gz"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((96, 1, 96)).astype(np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"an image of 1 x 96 px: its sides' ratio is beyond "
                                         r"the 16:1"):
        build_slice_transform({**VGG_SLICE_RECIPE, "max_slices": 2})(path)
    ok = ImageNetSlices()(torch.rand(1, 1, 10, 10 * MAX_ASPECT))  # the limit itself passes
    assert ok.shape == (1, 3, 224, 224)
