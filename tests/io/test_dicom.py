"""DICOM series reader: synthetic series written with pydicom, pydicom's shipped
series, and a real GE EPI series checked voxel for voxel against dcm2niix."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from mmpipe.errors import ConfigError, DicomSeriesError
from mmpipe.io.dicom import (
    dicom_to_nifti,
    folder_mix,
    read_dicom_series,
    scan_dicom_folder,
    scan_folder,
    select_series,
)
from tests.conftest import require
from tests.dicom_files import AXIAL, STUDY, write_ct_slice

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run posterior, columns inferior: normal -x
N = 16  # pixels per side


# --------------------------------------------------------------------------- synthetic series


def hu_slice(value: int) -> np.ndarray:
    """HU image of one slice: a per-slice constant plus a row/column ramp (orientation check)."""
    rows, cols = np.mgrid[0:N, 0:N]
    return (value + rows * 2 + cols).astype(np.int16)


write_slice = write_ct_slice


def write_series(folder: Path, n: int = 8, spacing: float = 2.5, *, orientation=AXIAL,
                 series_uid: str | None = None, names=None, skip=(), start=(-10.0, -20.0, 30.0),
                 **kw) -> tuple[str, list[Path]]:
    """``n`` slices along the orientation's normal, slice k holding HU 100*k + ramp."""
    uid = series_uid or generate_uid()
    normal = np.cross(orientation[:3], orientation[3:])
    paths = []
    for k in range(n):
        if k in skip:
            continue
        name = names[k] if names else f"{uid[-6:]}_{k:03d}.dcm"
        pos = np.asarray(start) + k * spacing * normal
        paths.append(write_slice(folder / name, series_uid=uid, position=pos,
                                 hu=hu_slice(100 * k), instance=k + 1,
                                 orientation=orientation, **kw))
    return uid, paths


def hu_of(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# --------------------------------------------------------------------------- ordering, rescale


def test_shuffled_names_are_read_in_slice_order_with_hu(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"IM{v:05d}" for v in rng.permutation(8)]  # no extension, random order
    write_series(tmp_path, names=names)
    image, info = read_dicom_series(tmp_path)
    arr = sitk.GetArrayFromImage(image)  # (z, y, x)
    assert arr.shape == (8, N, N)
    assert info.n_slices == 8 and info.n_duplicates_dropped == 0
    along = info.positions @ info.normal
    assert np.all(np.diff(along) > 0)
    for k in range(8):
        np.testing.assert_array_equal(arr[k], hu_slice(100 * k))  # rescale applied: HU
        np.testing.assert_array_equal(arr[k], hu_of(info.files[k]))
    assert image.GetSpacing() == pytest.approx((0.8, 0.7, 2.5))  # (col, row, measured z)
    assert image.GetOrigin() == pytest.approx((-10.0, -20.0, 30.0))
    assert arr.min() == 0 and arr.max() == 700 + 2 * (N - 1) + (N - 1)


def test_sagittal_series_is_ordered_along_its_normal(tmp_path):
    names = [f"s{v}.dcm" for v in (5, 2, 7, 0, 3, 6, 1, 4)]
    write_series(tmp_path, n=8, spacing=3.0, orientation=SAGITTAL, names=names)
    image, info = read_dicom_series(tmp_path)
    np.testing.assert_allclose(info.normal, [-1.0, 0.0, 0.0])
    # the normal points to -x (patient right), so x decreases along our slice axis
    assert np.all(np.diff(info.positions[:, 0]) == pytest.approx(-3.0))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction, np.column_stack([SAGITTAL[:3], SAGITTAL[3:],
                                                           [-1.0, 0, 0]]))
    arr = sitk.GetArrayFromImage(image)
    for k in range(8):
        assert image.TransformIndexToPhysicalPoint((0, 0, k)) == pytest.approx(info.positions[k])
        np.testing.assert_array_equal(arr[k], hu_of(info.files[k]))
    # a voxel's physical point is where the DICOM pixel (row j, column i) of that file lies
    point = np.asarray(image.TransformIndexToPhysicalPoint((5, 9, 2)))
    expected = info.positions[2] + 5 * 0.8 * np.asarray(SAGITTAL[:3]) + 9 * 0.7 * np.asarray(SAGITTAL[3:])
    np.testing.assert_allclose(point, expected, atol=1e-6)


def test_slices_with_their_own_rescale_keep_their_hu(tmp_path):
    # slice 0 stored as HU with intercept 0, the others as HU + 1024 with intercept -1024:
    # read in slice 0's unsigned pixel type, their negative HU would wrap (-24 -> 65512)
    uid = generate_uid()
    hus = [hu_slice(v) for v in (1000, -24, -500, -1000)]
    paths = [write_slice(tmp_path / f"s{k}.dcm", series_uid=uid, position=(0, 0, 2.0 * k),
                         hu=hu, instance=k + 1) for k, hu in enumerate(hus)]
    ds = pydicom.dcmread(paths[0])
    ds.RescaleIntercept = 0
    ds.PixelData = hus[0].astype(np.uint16).tobytes()
    ds.save_as(paths[0])
    image, info = read_dicom_series(tmp_path)
    assert info.rescales == ((1.0, -1024.0), (1.0, 0.0))
    arr = sitk.GetArrayFromImage(image)
    for k, hu in enumerate(hus):
        np.testing.assert_array_equal(arr[k], hu)
        np.testing.assert_array_equal(arr[k], hu_of(info.files[k]))


def test_slices_with_their_own_pixel_representation_or_bits_stored_keep_their_values(tmp_path):
    # read in the first slice's integer type, a later slice stored otherwise would wrap:
    # a signed -999 in slice 0's uint16 reads 64537, a 16-bit 40000 in 12-bit slices' int16
    uid = generate_uid()
    paths = [write_slice(tmp_path / "sign" / f"s{k}.dcm", series_uid=uid, position=(0, 0, 2.0 * k),
                         hu=hu_slice(0), instance=k + 1) for k in range(4)]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.RescaleIntercept = 0
        if k:
            ds.PixelRepresentation = 1
            ds.PixelData = np.full((N, N), -999 * k, np.int16).tobytes()
        ds.save_as(path)
    image, info = read_dicom_series(tmp_path / "sign")
    assert info.storages == ((0, 16), (1, 16))
    arr = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(arr[0], hu_slice(0) + 1024)
    for k in range(1, 4):
        np.testing.assert_array_equal(arr[k], np.full((N, N), -999 * k))

    uid = generate_uid()
    paths = [write_slice(tmp_path / "bits" / f"s{k}.dcm", series_uid=uid, position=(0, 0, 2.0 * k),
                         hu=hu_slice(100 * k), instance=k + 1) for k in range(4)]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        if k == 2:
            ds.PixelData = np.full((N, N), 40000, np.uint16).tobytes()
        else:
            ds.BitsStored, ds.HighBit = 12, 11
        ds.save_as(path)
    image, info = read_dicom_series(tmp_path / "bits")
    assert info.storages == ((0, 12), (0, 16))
    arr = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(arr[2], np.full((N, N), 40000 - 1024))
    for k in (0, 1, 3):
        np.testing.assert_array_equal(arr[k], hu_slice(100 * k))


def test_deflated_series_converts(tmp_path):
    _, paths = write_series(tmp_path / "dcm", n=6)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert summary["n_slices"] == 6 and summary["skipped"] == [] and summary["note"] == ""
    image, info = read_dicom_series(tmp_path / "dcm")
    arr = sitk.GetArrayFromImage(image)
    for k in range(6):
        np.testing.assert_array_equal(arr[k], hu_slice(100 * k))


# --------------------------------------------------------------------------- duplicates, time points


def test_repeated_positions_keep_one_whole_acquisition_and_say_so(tmp_path):
    """Slice 4 of acquisition 0 used to win over acquisition 1's (lowest AcquisitionNumber
    per position), building one volume out of two acquisitions with an empty note: now
    the acquisitions are volumes, the one with every position is kept whole."""
    uid, paths = write_series(tmp_path / "dcm", n=8)
    ds = pydicom.dcmread(paths[4])
    write_slice(tmp_path / "dcm" / "t0_slice4.dcm", series_uid=uid,
                position=ds.ImagePositionPatient, hu=hu_slice(5000), instance=50, acquisition=0)
    write_slice(tmp_path / "dcm" / "repeat_slice2.dcm", series_uid=uid,
                position=pydicom.dcmread(paths[2]).ImagePositionPatient, hu=hu_slice(-500),
                instance=99, acquisition=2)
    image, info = read_dicom_series(tmp_path / "dcm")
    assert info.n_files_total == 10 and info.n_duplicates_dropped == 2 and info.n_slices == 8
    arr = sitk.GetArrayFromImage(image)
    for k in range(8):
        np.testing.assert_array_equal(arr[k], hu_slice(100 * k))  # acquisition 1, all of it
    assert image.GetSpacing()[2] == pytest.approx(2.5)
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert summary["note"] == (
        "converted; repeated positions: kept AcquisitionNumber 1 of 3 volumes told apart by "
        "AcquisitionNumber (the first with the most positions, 8; 1 before it had fewer); "
        "dropped 2 files")


def test_a_few_repeated_positions_keep_one_file_each_and_say_so(tmp_path):
    """A step-and-shoot CT (one AcquisitionNumber per rotation of 4 slices, neighbouring
    rotations sharing a boundary slice) was split into 4-slice "volumes" and cut to one
    of them; a slice re-sent once rejected the whole series. A minority of repeated
    positions keeps one file at each, the first acquired, and the note says so."""
    uid = generate_uid()
    for rotation in range(4):
        for k in range(4):
            z = 3 * rotation + k  # positions 0..12; 3, 6 and 9 twice
            write_slice(tmp_path / "shots" / f"R{rotation}_{k}.dcm", series_uid=uid,
                        position=(0, 0, 2.0 * z), hu=hu_slice(100 * z + rotation),
                        instance=4 * rotation + k + 1, acquisition=rotation + 1)
    image, info = read_dicom_series(tmp_path / "shots")
    assert info.n_slices == 13 and info.n_duplicates_dropped == 3
    arr = sitk.GetArrayFromImage(image)
    for z in (3, 6, 9):  # the boundary slice of the earlier rotation
        np.testing.assert_array_equal(arr[z], hu_slice(100 * z + z // 3 - 1))
    assert info.repeats == ("3 of 13 positions repeated where 4 pieces told apart by "
                            "AcquisitionNumber meet (two share at most 1): kept the lowest "
                            "AcquisitionNumber, then a readable file, then the lowest "
                            "InstanceNumber, at each; dropped 3 files")
    _, paths = write_series(tmp_path / "resent", n=10)
    write_slice(tmp_path / "resent" / "again.dcm", series_uid=pydicom.dcmread(paths[0])
                .SeriesInstanceUID, position=pydicom.dcmread(paths[4]).ImagePositionPatient,
                hu=hu_slice(-1), instance=11)
    image, info = read_dicom_series(tmp_path / "resent")
    assert info.n_slices == 10 and info.repeats.startswith("1 of 10 positions repeated")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[4], hu_slice(400))


def test_two_acquisitions_that_overlap_are_not_stitched_into_one_volume(tmp_path):
    """Acquisition 1 over z 0-150 mm, acquisition 2 over 100-250 mm (21 positions shared):
    stitched as "nothing telling volumes apart", the volume changed contrast at slice 61,
    status ok."""
    uid = generate_uid()
    for acquisition, first in ((1, 0), (2, 40)):
        for k in range(61):
            z = first + k
            write_slice(tmp_path / f"A{acquisition}_{k:03d}.dcm", series_uid=uid,
                        position=(0, 0, 2.5 * z), hu=hu_slice(200 * (acquisition - 1)),
                        instance=100 * acquisition + k, acquisition=acquisition)
    with pytest.raises(DicomSeriesError, match="2 pieces told apart by AcquisitionNumber "
                       "overlap at 21 of 101 positions"):
        read_dicom_series(tmp_path)


def test_rotations_that_overlap_by_a_few_slices_are_one_stack(tmp_path):
    """A step-and-shoot CT whose 64-slice rotations overlap by 5 slices (a 3 mm table
    overlap at 0.625 mm) is one stack, stitched with a note naming the tag; refusing
    every overlap above two slices rejected it."""
    uid = generate_uid()
    for rotation in range(4):
        for k in range(64):
            z = 59 * rotation + k
            write_slice(tmp_path / f"R{rotation}_{k:02d}.dcm", series_uid=uid,
                        position=(0, 0, 0.625 * z), hu=hu_slice(z), acquisition=rotation + 1,
                        instance=64 * rotation + k + 1)
    image, info = read_dicom_series(tmp_path)
    assert info.n_slices == 59 * 3 + 64 and info.n_duplicates_dropped == 15
    assert "where 4 pieces told apart by AcquisitionNumber meet (two share at most 5)" in \
        info.repeats


def test_a_regular_series_keeps_its_written_spacing(tmp_path):
    """Positions a micron off a 5 mm grid (as a real EPI writes them) gave a fitted
    spacing of 5.00000055, where the median, 5.0, is the series' own: the written NIfTI
    changed for nothing."""
    zs = [5.0 * k + (1e-6 if k % 3 == 0 else 0.0) for k in range(30)]
    _series_at(tmp_path, zs)
    image, info = read_dicom_series(tmp_path)
    assert info.slice_spacing == float(np.median(np.diff(zs)))


def echo_series(folder: Path, echoes=(1, 2), n: int = 6, times=(None,)) -> str:
    """Every position once per echo (and time point), echo e at time t holding HU
    1000*e + 100*t + 10*k."""
    uid = generate_uid()
    instance = 0
    for t in times:
        for e in echoes:
            for k in range(n):
                instance += 1
                path = write_slice(folder / f"IM{instance:03d}.dcm", series_uid=uid,
                                   position=(0, 0, 2.0 * k), instance=instance,
                                   hu=np.full((N, N), 1000 * e + 100 * (t or 0) + 10 * k))
                ds = pydicom.dcmread(path)
                ds.EchoNumbers, ds.EchoTime = e, 10.0 * e
                if t is not None:
                    ds.TemporalPositionIdentifier = t
                ds.save_as(path)
    return uid


def test_multi_echo_and_dynamic_series_keep_the_first_echo_and_time_point(tmp_path):
    # one file per position by InstanceNumber/AcquisitionNumber took echo 1 at some
    # positions and echo 2 at others, with an empty note
    echo_series(tmp_path / "echo", echoes=(2, 1))  # echo 2 written (and numbered) first
    summary = dicom_to_nifti(tmp_path / "echo", tmp_path / "echo.nii.gz")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "echo.nii.gz")))
    np.testing.assert_array_equal(arr[:, 0, 0], 1000 + 10 * np.arange(6))
    assert summary["n_duplicates_dropped"] == 6
    assert summary["note"] == ("converted; repeated positions: kept EchoNumbers 1 of 2 volumes "
                               "told apart by EchoNumbers (the first); dropped 6 files")
    # echoes x time points: the first echo of the first time point
    echo_series(tmp_path / "dyn", echoes=(1, 2), times=(3, 1, 2))
    summary = dicom_to_nifti(tmp_path / "dyn", tmp_path / "dyn.nii.gz")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "dyn.nii.gz")))
    np.testing.assert_array_equal(arr[:, 0, 0], 1000 + 100 + 10 * np.arange(6))
    assert summary["note"] == (
        "converted; repeated positions: kept EchoNumbers 1, TemporalPositionIdentifier 1 of 6 "
        "volumes told apart by EchoNumbers, TemporalPositionIdentifier (the first); "
        "dropped 30 files")


def _mr_components(folder: Path, first: str, tag: str = "image_type") -> None:
    """An MR series of 6 positions, each once as a magnitude image (HU 500 + 10 k) and once
    as a phase image (HU -300 + 10 k), ``first``'s block numbered first; the component
    said by ImageType (Siemens' ORIGINAL\\PRIMARY\\M\\ND), or by GE's (0043,102F)."""
    uid = generate_uid()
    order = ("M", "P") if first == "M" else ("P", "M")
    instance = 0
    for component in order:
        for k in range(6):
            instance += 1
            path = write_slice(folder / f"IM{instance:03d}.dcm", series_uid=uid,
                               position=(0, 0, 2.0 * k), instance=instance,
                               hu=np.full((N, N), (500 if component == "M" else -300) + 10 * k))
            ds = pydicom.dcmread(path)
            ds.Modality = "MR"
            if tag == "image_type":
                ds.ImageType = ["ORIGINAL", "PRIMARY", component, "ND"]
            else:
                ds.add_new((0x0043, 0x0010), "LO", "GEMS_PARM_01")
                ds.add_new((0x0043, 0x102F), "SS", 0 if component == "M" else 1)
            ds.save_as(path)


@pytest.mark.parametrize("tag", ["image_type", "ge_private"])
@pytest.mark.parametrize("first", ["M", "P"])
def test_magnitude_and_phase_images_of_one_series_keep_the_magnitude(tmp_path, first, tag):
    # told apart by InstanceNumber blocks alone, the first block was kept: the phase map
    # where it was numbered first, with a note that read like time points
    _mr_components(tmp_path / "mr", first, tag)
    summary = dicom_to_nifti(tmp_path / "mr", tmp_path / "mr.nii.gz")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mr.nii.gz")))
    np.testing.assert_array_equal(arr[:, 0, 0], 500 + 10 * np.arange(6))
    assert summary["note"] == "converted; kept the magnitude images of 6 magnitude, 6 phase"


def test_a_series_of_phase_images_only_is_refused(tmp_path):
    _mr_components(tmp_path / "mr", "P")
    for path in sorted((tmp_path / "mr").iterdir())[6:]:  # the magnitude block
        path.unlink()
    with pytest.raises(DicomSeriesError, match=r"no magnitude or real image \(6 phase "
                                               r"images\)"):
        read_dicom_series(tmp_path / "mr")


def test_magnitude_images_beside_images_of_no_stated_component_are_all_read(tmp_path):
    uid, paths = write_series(tmp_path, n=12)
    _image_type(tmp_path, uid, ["ORIGINAL", "PRIMARY", "M", "ND"], modality="MR")
    for path in paths[:3]:
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.save_as(path)
    image, info = read_dicom_series(tmp_path)
    assert info.n_slices == 12 and not info.repeats


def test_a_series_of_real_images_is_read(tmp_path):
    # a phase-sensitive inversion recovery's real image (Philips R_IR\R\IR) shows the
    # anatomy: refused as "no magnitude image"
    uid, _ = write_series(tmp_path, n=8)
    _image_type(tmp_path, uid, ["ORIGINAL", "PRIMARY", "R_IR", "R", "IR"], modality="MR")
    image, info = read_dicom_series(tmp_path)
    assert info.n_slices == 8


def test_repeated_positions_that_nothing_tells_apart_reject(tmp_path):
    # two files at each of positions 0-5, same tags, numbered in turn (1, 2 at the first
    # position, 3, 4 at the next): no block of InstanceNumbers is one volume, so which
    # file goes with which is a guess
    uid = generate_uid()
    for k in range(6):
        for copy in range(2):
            write_slice(tmp_path / f"IM{k}_{copy}.dcm", series_uid=uid, position=(0, 0, 2.0 * k),
                        hu=hu_slice(100 * k + copy), instance=2 * k + copy + 1)
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(tmp_path)
    assert ("12 files at 6 of 6 positions repeated (e.g. IM0_0.dcm, IM0_1.dcm), which neither "
            "EchoNumbers, EchoTime, TemporalPositionIdentifier, TriggerTime, AcquisitionNumber, "
            "DiffusionBValue nor InstanceNumber order tells apart into volumes") in err.value.reason
    # an AcquisitionNumber of its own per file splits the files into one-slice "volumes":
    # no grouping (it kept a volume of one slice, refused as too short)
    shutil.rmtree(tmp_path)
    uid = generate_uid()
    for k in range(6):
        for copy in range(2):
            write_slice(tmp_path / f"IM{k}_{copy}.dcm", series_uid=uid, position=(0, 0, 2.0 * k),
                        hu=hu_slice(100 * k + copy), instance=2 * k + copy + 1,
                        acquisition=2 * k + copy + 1)
    with pytest.raises(DicomSeriesError, match="tells apart into volumes"):
        read_dicom_series(tmp_path)
    # a copy of one image (same SOPInstanceUID) is no second volume: dropped, and said
    shutil.rmtree(tmp_path)
    _, paths = write_series(tmp_path, n=6)
    shutil.copy(paths[3], tmp_path / "copy.dcm")
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "copy.nii.gz")
    assert summary["n_slices"] == 6 and summary["n_duplicates_dropped"] == 1
    assert summary["note"] == ("converted; dropped 1 copied file(s) (same SOPInstanceUID at "
                               "one position)")


def test_files_of_one_uid_but_two_echoes_are_no_copies(tmp_path):
    """A de-identification that reused each position's SOPInstanceUID for both echoes
    made echo 2 a "copy" of echo 1 wherever its file sorted first: the volume alternated
    between the echoes slice by slice, and the note called them copies."""
    echo_series(tmp_path, echoes=(1, 2))
    by_position: dict[float, str] = {}
    for path in sorted(tmp_path.iterdir()):
        ds = pydicom.dcmread(path)
        z = float(ds.ImagePositionPatient[2])
        ds.SOPInstanceUID = by_position.setdefault(z, ds.SOPInstanceUID)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path)
        if int(ds.EchoNumbers) == 2 and int(z / 2) % 2 == 0:  # sorts before its echo 1
            path.rename(path.with_name(f"A{path.name}"))
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "uid.nii.gz")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path.parent / "uid.nii.gz")))
    np.testing.assert_array_equal(arr[:, 0, 0], 1000 + 10 * np.arange(6))
    assert "copied" not in summary["note"]


# --------------------------------------------------------------------------- corrupt files, gaps


def test_corrupt_and_foreign_files_are_skipped_with_a_warning_and_listed(tmp_path, caplog):
    uid, paths = write_series(tmp_path / "dcm", n=8)
    folder = tmp_path / "dcm"
    truncated = folder / "truncated_copy.dcm"
    data = paths[7].read_bytes()
    truncated.write_bytes(data[:-100])  # a copy of slice 7 with its pixel data cut short
    (folder / "notes.txt").write_text("not a dicom file\n")
    (folder / "viewer.idx").write_bytes(b"\x07" * 300)  # a foreign file of no DICOM name
    (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored without a word
    with caplog.at_level(logging.WARNING, logger="mmpipe.io.dicom"):
        image, info = read_dicom_series(folder)
    # the truncated copy is a second file at slice 7's position; the readable one is kept
    assert info.n_files_total == 9 and info.n_duplicates_dropped == 1
    assert image.GetSize() == (N, N, 8) and truncated not in info.files
    warned = caplog.text
    for name in ("truncated_copy.dcm", "notes.txt", "viewer.idx"):
        assert name in warned
    assert "truncated pixel data" in warned and ".DS_Store" not in warned

    summary = dicom_to_nifti(folder, tmp_path / "out.nii.gz")
    skipped = {f["file"]: f["reason"] for f in summary["skipped"]}
    assert skipped == {"notes.txt": "not a DICOM file", "viewer.idx": "not a DICOM file",
                       "truncated_copy.dcm": "truncated pixel data"}
    assert summary["n_files_in_folder"] == 11
    assert summary["note"].startswith("converted; skipped 3 of 11 files: notes.txt (")
    assert ".DS_Store" not in summary["note"]
    assert "512 expected" in next(f["detail"] for f in summary["skipped"]
                                  if f["file"] == "truncated_copy.dcm")


def test_a_clean_series_has_an_empty_note(tmp_path):
    write_series(tmp_path / "dcm", n=6)
    (tmp_path / "dcm" / ".hidden").write_text("ignored")
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert summary["note"] == "" and summary["skipped"] == [] and summary["other_series"] == []
    assert summary["patient_id"] == "synthetic" and summary["study_uid"] == STUDY
    assert summary["folder_mix"] is None and summary["n_files_in_folder"] == 6


@pytest.mark.parametrize("damage", ["random_bytes", "empty", "header_cut_before_uid",
                                    "magic_only", "read_error"])
def test_a_damaged_file_of_no_known_series_rejects_the_folder(tmp_path, damage, monkeypatch):
    """A last slice of random bytes, empty, or cut before its SeriesInstanceUID (an
    interrupted download) was skipped as "not a DICOM file/image", and the series was
    stored "ok" one end slice short; a read error the same. Nothing tells of which series
    it was, so any could be short: the folder is rejected naming it, as a link not
    fetched is."""
    _, paths = write_series(tmp_path / "dcm", n=8, names=[f"IM{k}.dcm" for k in range(8)])
    data = paths[7].read_bytes()
    if damage == "random_bytes":
        paths[7].write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif damage == "empty":
        paths[7].write_bytes(b"")
    elif damage == "header_cut_before_uid":
        paths[7].write_bytes(data[:200])
    elif damage == "magic_only":
        paths[7].write_bytes(data[:132])
    else:
        import builtins

        real = builtins.open

        def failing(file, *args, **kwargs):
            if str(file) == str(paths[7]):
                raise OSError(5, "Input/output error")
            return real(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", failing)
    with pytest.raises(DicomSeriesError) as err:
        dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert err.value.reason.startswith("1 of the folder's files are damaged DICOM files whose "
                                       "series cannot be read, so any series could be missing "
                                       "slices: IM7.dcm (a damaged DICOM file"), err.value.reason
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("cut", [140, 160, 190])
def test_a_slice_cut_inside_its_file_meta_rejects_the_folder(tmp_path, cut):
    """Cut after its DICM magic, inside its file meta group: an empty dataset was "not a
    DICOM image", skipped, and the series stored ok one end slice short, whatever the
    file's name."""
    _, paths = write_series(tmp_path / "dcm", n=8, names=[f"IM{k}.dcm" for k in range(8)])
    paths[7].write_bytes(paths[7].read_bytes()[:cut])
    with pytest.raises(DicomSeriesError, match=r"1 of the folder's files are damaged DICOM "
                                               r"files .*IM7.dcm"):
        dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")


@pytest.mark.parametrize("cut", [0, 100])
def test_a_slice_cut_to_nothing_under_a_cds_names_rejects_the_folder(tmp_path, cut):
    """A CD's slices carry no suffix (IM00000, IM00001, ...): the last one, empty or cut
    before the DICOM magic, was called "not a DICOM file", and the series was stored ok
    one end slice short. A foreign file beside them keeps its own name's shape."""
    _, paths = write_series(tmp_path / "dcm", n=8, names=[f"IM{k:05d}" for k in range(8)])
    paths[7].write_bytes(paths[7].read_bytes()[:cut])
    (tmp_path / "dcm" / "VERSION").write_text("1.0\n")
    with pytest.raises(DicomSeriesError, match=r"1 of the folder's files are damaged DICOM "
                                               r"files .*IM00007 \(named as the folder's "
                                               r"DICOM images are"):
        dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    paths[7].unlink()  # gone, not cut: the seven left convert, the foreign file skipped
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert summary["n_slices"] == 7
    assert summary["note"] == "converted; skipped 1 of 8 files: VERSION (not a DICOM file)"


def test_a_report_written_without_the_preamble_under_the_slices_names_is_foreign(tmp_path):
    """A structured report without the 128-byte preamble, named as the slices are: whole,
    and no image, it is skipped, not taken for a slice cut short."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    write_series(tmp_path / "dcm", n=8, names=[f"IM{k:05d}" for k in range(8)])
    sr = Dataset()
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.SOPInstanceUID, sr.SeriesInstanceUID = generate_uid(), generate_uid()
    sr.Modality, sr.PatientID = "SR", "P1"
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.save_as(tmp_path / "dcm" / "IM00008", enforce_file_format=False)
    assert (tmp_path / "dcm" / "IM00008").read_bytes()[128:132] != b"DICM"
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert summary["n_slices"] == 8 and "IM00008 (not a DICOM file)" in summary["note"]


def test_a_damaged_file_named_otherwise_without_the_dicom_magic_is_foreign(tmp_path):
    """Random bytes under a name no DICOM file takes: a foreign file, skipped and named."""
    _, paths = write_series(tmp_path / "dcm", n=8, names=[f"IM{k}.dcm" for k in range(8)])
    (tmp_path / "dcm" / "IM8").write_bytes(np.random.default_rng(0).bytes(600))
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert summary["n_slices"] == 8
    assert summary["note"] == "converted; skipped 1 of 9 files: IM8 (not a DICOM file)"


def test_truncated_interior_slice_rejects_naming_the_file(tmp_path, caplog):
    uid, paths = write_series(tmp_path, n=8)
    paths[4].write_bytes(paths[4].read_bytes()[:-300])
    with caplog.at_level(logging.WARNING, logger="mmpipe.io.dicom"):
        with pytest.raises(DicomSeriesError) as err:
            read_dicom_series(tmp_path)
    assert "is incomplete: 1 of its slices cannot be read" in err.value.reason
    assert f"{paths[4].name}: truncated pixel data (212 bytes left, 512 expected))" in err.value.reason
    assert "gap" not in err.value.reason  # the slice is named, not inferred from a gap
    assert err.value.path == str(tmp_path)
    assert paths[4].name in caplog.text
    assert [f["file"] for f in err.value.detail["skipped"]] == [paths[4].name]


def test_truncated_last_slice_rejects_instead_of_losing_it(tmp_path):
    # dropped, the last slice would leave no gap: the volume would lose it unnoticed
    _, paths = write_series(tmp_path, n=8)
    paths[7].write_bytes(paths[7].read_bytes()[:-1])
    with pytest.raises(DicomSeriesError, match=f"incomplete.*{paths[7].name}: truncated pixel"):
        dicom_to_nifti(tmp_path, tmp_path.parent / f"{tmp_path.name}.nii.gz")
    assert not (tmp_path.parent / f"{tmp_path.name}.nii.gz").exists()



def test_a_truncated_slice_sent_again_whole_keeps_the_whole_copy(tmp_path):
    """A slice cut short in transfer and sent again under a new SOPInstanceUID and a
    higher InstanceNumber: the truncated first copy was kept (the lower InstanceNumber)
    and rejected the subject. Within one acquisition a readable copy comes first."""
    uid, paths = write_series(tmp_path / "dcm", n=8)
    ds = pydicom.dcmread(paths[4])
    paths[4].write_bytes(paths[4].read_bytes()[:-300])
    write_slice(tmp_path / "dcm" / "IM4_resent.dcm", series_uid=uid,
                position=ds.ImagePositionPatient, hu=hu_slice(400), instance=50,
                acquisition=ds.get("AcquisitionNumber"))
    image, info = read_dicom_series(tmp_path / "dcm")
    assert info.n_slices == 8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[4], hu_slice(400))
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert "then a readable file" in summary["note"]


def test_a_slice_not_fetched_rejects_the_folder_naming_it(tmp_path):
    """A DataLad or git-annex slice not fetched is a symbolic link to nothing, which the
    listing (is_file) lost: the volume came out one end slice short, "ok", its note
    empty."""
    _, paths = write_series(tmp_path / "dcm", n=8)
    paths[7].unlink()
    paths[7].symlink_to("/nonexistent/.git/annex/objects/key")
    with pytest.raises(DicomSeriesError, match=r"1 of the folder's files are a symbolic link "
                                               rf"to nothing .*: {paths[7].name}"):
        dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()


def _split_with_a_linked_half(tmp_path: Path) -> Path:
    """One 8-slice series over ``DICOM/0001`` and ``DICOM/0002``, the second half a link to
    a folder kept elsewhere, as cohorts assembled from another store are."""
    uid, paths = write_series(tmp_path / "whole", n=8)
    for half, part in (("0001", paths[:4]), ("0002", paths[4:])):
        (tmp_path / "store" / half).mkdir(parents=True)
        for p in part:
            p.rename(tmp_path / "store" / half / p.name)
    (tmp_path / "subject" / "DICOM").mkdir(parents=True)
    shutil.move(tmp_path / "store" / "0001", tmp_path / "subject" / "DICOM" / "0001")
    (tmp_path / "subject" / "DICOM" / "0002").symlink_to(tmp_path / "store" / "0002",
                                                         target_is_directory=True)
    return tmp_path / "subject"


def test_a_linked_subfolder_of_the_series_is_read(tmp_path):
    """Path.rglob does not go into a linked folder: the volume came out 4 of its 8 slices,
    one end cut off with no gap to show, "ok" and its note empty."""
    subject = _split_with_a_linked_half(tmp_path)
    image, info = read_dicom_series(subject)
    assert info.n_slices == 8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[7], hu_slice(700))
    # a link back up the tree is walked once, not forever
    (subject / "DICOM" / "0001" / "up").symlink_to(subject, target_is_directory=True)
    assert read_dicom_series(subject)[1].n_slices == 8


def test_a_subfolder_that_cannot_be_listed_rejects_the_folder_naming_it(tmp_path,
                                                                        monkeypatch):
    """rglob went past a folder it could not read without a word, and with it half the
    series. (As root no mode stops a listing, so the refusal is the listing's own.)"""
    import os

    subject = _split_with_a_linked_half(tmp_path)
    scandir = os.scandir

    def refusing(path="."):
        if Path(path).name == "0002":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(DicomSeriesError, match=r"cannot list DICOM/0002: Permission denied"):
        dicom_to_nifti(subject, tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("syntax,stored", [("explicit", (2 * N, 2 * N)),
                                           ("implicit", (2 * N, 2 * N)),
                                           ("explicit", (N, N + N // 2))])
def test_pixel_data_of_other_dimensions_than_its_header_rejects_naming_the_file(tmp_path,
                                                                               syntax,
                                                                               stored):
    """A header announcing N x N over other stored pixels: only a file too short was
    caught, and this one read as the first N x N values, an image that is none of the
    slice, "ok" (1.5 times the pixels passed the first fix, which took a frame more for
    padding). Trailing elements after the pixels stay legal."""
    from pydicom.uid import ImplicitVRLittleEndian

    _, paths = write_series(tmp_path / "dcm", n=6)
    ds = pydicom.dcmread(paths[3])
    ds.PixelData = np.zeros(stored, np.uint16).tobytes()
    if syntax == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(paths[3], implicit_vr=syntax == "implicit", little_endian=True)
    with pytest.raises(DicomSeriesError, match=rf"{paths[3].name}: pixel data of "
                                               rf"{2 * stored[0] * stored[1]} bytes, where "
                                               "its header's"):
        read_dicom_series(tmp_path / "dcm")
    # whole, with a trailing element after the pixels: read as before
    uid, paths = write_series(tmp_path / "ok", n=6)
    ds = pydicom.dcmread(paths[3])
    ds.add_new(0xFFFCFFFC, "OB", b"\0\0")  # Data Set Trailing Padding
    ds.save_as(paths[3])
    assert read_dicom_series(tmp_path / "ok")[1].n_slices == 6


def test_padded_or_odd_length_pixel_data_is_read(tmp_path):
    """Less than a frame more than the header's pixels is padding (pydicom trims it as
    excess), and an odd length without its pad byte is the pixels themselves: both read
    by pydicom and SimpleITK, and refused by the first form of the length check."""
    import struct

    _, paths = write_series(tmp_path / "padded", n=6)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PixelData = ds.PixelData + b"\0\0"
        ds.save_as(path)
    assert read_dicom_series(tmp_path / "padded")[1].n_slices == 6
    _, paths = write_series(tmp_path / "odd", n=6)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = 5
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = bytes(range(25))
        ds.save_as(path)
        raw = bytearray(path.read_bytes())
        at = raw.rfind(b"\xe0\x7f\x10\x00")
        raw[at + 8:at + 12] = struct.pack("<I", 25)  # the length as 25, the pad byte gone
        path.write_bytes(bytes(raw[:-1]))
    assert read_dicom_series(tmp_path / "odd")[1].n_slices == 6

@pytest.mark.parametrize("damage", ["cut inside the header", "cut inside its series UID",
                                    "an element's VR damaged"])
def test_a_slice_whose_header_cannot_be_read_rejects_its_series(tmp_path, damage):
    """A file cut between SeriesInstanceUID and Rows was skipped as "not a DICOM image" and
    the volume converted one slice short, "ok"; a damaged element (pydicom converts it on
    first read) raised out of the reader and took the whole shard of subjects with it."""
    _, paths = write_series(tmp_path, n=6)
    raw = paths[5].read_bytes()
    if damage == "cut inside the header":
        paths[5].write_bytes(raw[:raw.find(b"\x28\x00\x10\x00")])   # before (0028,0010) Rows
    elif damage == "cut inside its series UID":   # 12 bytes into (0020,000E)'s value
        paths[5].write_bytes(raw[:raw.find(b"\x20\x00\x0e\x00") + 8 + 12])
    else:
        at = raw.find(b"\x10\x00\x20\x00LO")                        # (0010,0020) PatientID
        paths[5].write_bytes(raw[:at + 4] + b"Lv" + raw[at + 6:])
    out = tmp_path.parent / f"{tmp_path.name}.nii.gz"
    with pytest.raises(DicomSeriesError,
                       match=f"incomplete.*{paths[5].name}: unreadable image header"):
        dicom_to_nifti(tmp_path, out)
    assert not out.exists()


def test_a_broken_file_of_a_series_whose_uid_begins_anothers_is_not_that_series(tmp_path):
    """A file of series …777.1, whole UID read but cut before Rows, joined series
    …777.12 as an unreadable slice of it (its UID begins that one) and rejected a good
    subject; only a file cut inside its UID is read as the start of another's."""
    root = "1.2.826.0.1.3680043.8.498.777"
    write_series(tmp_path, n=6, series_uid=root + ".12")
    _, (stray,) = write_series(tmp_path, n=1, series_uid=root + ".1", names=["dose.dcm"])
    raw = stray.read_bytes()
    stray.write_bytes(raw[:raw.find(b"\x28\x00\x10\x00")])   # cut before (0028,0010) Rows
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "out.nii.gz")
    assert summary["n_slices"] == 6
    assert "dose.dcm (unreadable image header)" in summary["note"]


def _series_at(folder: Path, zs) -> None:
    uid = generate_uid()
    for k, z in enumerate(zs):
        write_slice(folder / f"s{k:03d}.dcm", series_uid=uid, position=(-10.0, -20.0, z),
                    hu=hu_slice(10 * k), instance=k + 1)


def test_steps_each_near_the_median_that_add_up_off_the_grid_reject_the_series(tmp_path):
    """Two slice groups in one series, 2.5 mm then 2.62 mm steps: each step within 5 % of
    the median, the volume on one 2.5 mm grid put the last slice 3.5 mm from its place,
    status ok and no note."""
    zs = [2.5 * k for k in range(31)] + [75.0 + 2.62 * k for k in range(1, 30)]
    _series_at(tmp_path, zs)
    with pytest.raises(DicomSeriesError, match="slices drift off one spacing: the slice at "
                       r"\S+ mm along the normal lies \S+ mm from its place on a grid"):
        read_dicom_series(tmp_path)


def test_positions_written_to_two_decimals_lie_on_their_fitted_grid(tmp_path):
    """0.625 mm slices whose positions are written to two decimals step 0.62 and 0.63 mm:
    the median step (0.62 or 0.63) put the far slices millimetres off; the fitted
    spacing is 0.625."""
    zs = [round(0.625 * k, 2) for k in range(200)]
    _series_at(tmp_path, zs)
    image, info = read_dicom_series(tmp_path)
    assert abs(image.GetSpacing()[2] - 0.625) < 1e-4
    last = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))
    assert abs(abs(last[2] - image.GetOrigin()[2]) - 0.625 * 199) < 0.01


def test_a_report_in_the_series_folder_is_still_only_skipped(tmp_path):
    """A structured report shares the study's series UIDs but is no image: skipped."""
    _, paths = write_series(tmp_path, n=6)
    ds = pydicom.dcmread(paths[0])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"   # Basic Text SR Storage
    for keyword in ("Rows", "Columns", "PixelData"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "report.dcm")
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "out.nii.gz")
    assert summary["n_slices"] == 6 and "report.dcm (not a DICOM image)" in summary["note"]


def test_a_single_slice_without_thickness_says_its_z_spacing_is_assumed(tmp_path):
    """The 1 mm went to the log only; the subject's note said nothing."""
    _, paths = write_series(tmp_path, n=1)
    ds = pydicom.dcmread(paths[0])
    del ds.SliceThickness
    ds.save_as(paths[0])
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "one.nii.gz", min_slices=1)
    assert "z spacing of 1 mm is assumed" in summary["note"]


def test_unreadable_slice_of_another_series_is_only_noted(tmp_path):
    write_series(tmp_path / "dcm", n=8, series_number=3)
    _, thin = write_series(tmp_path / "dcm", n=3, series_number=9, description="scout",
                           start=(0, 0, 300))
    thin[1].write_bytes(thin[1].read_bytes()[:-10])
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz")
    assert summary["series_number"] == 3 and summary["n_slices"] == 8
    assert summary["note"] == (f"converted; skipped 1 of 11 files: {thin[1].name} "
                               "(truncated pixel data)")
    (other,) = summary["other_series"]
    assert other["series_number"] == 9 and other["problem"] is None


def test_gap_rejection_names_the_unreadable_file_behind_it(tmp_path):
    _, paths = write_series(tmp_path, n=8, names=[f"IM{k}" for k in range(8)])
    # under a name that neither says DICOM nor is the slices' (IM4 would be a damaged one)
    paths[4].rename(tmp_path / "IM4.txt")
    (tmp_path / "IM4.txt").write_bytes(b"garbage" * 50)
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(tmp_path)
    assert "gap of 5 mm" in err.value.reason
    assert err.value.reason.endswith("skipped 1 of 8 files: IM4.txt (not a DICOM file)")
    assert err.value.detail["series"][0]["n_slices"] == 7


def test_gap_threshold_is_configurable_and_a_tolerated_gap_is_interpolated(tmp_path):
    """A gap that ``max_gap_factor`` lets through was read as 7 slices at one 2.5 mm
    spacing, which put every slice after the gap 2.5 mm too low: the missing slice is
    now interpolated on the true grid, and the note says so."""
    write_series(tmp_path / "dcm", n=8, skip=(3,))
    (info,) = scan_dicom_folder(tmp_path / "dcm")
    assert "gap" in info.problem
    image, info = read_dicom_series(tmp_path / "dcm", max_gap_factor=2.5)
    assert image.GetSize()[2] == 8 and info.slice_spacing == pytest.approx(2.5)
    assert info.n_slices == 7 and info.interpolated == pytest.approx((37.5,))
    arr = sitk.GetArrayFromImage(image)
    for k in range(8):  # every slice at its true z, the missing one between its neighbours
        assert image.TransformIndexToPhysicalPoint((0, 0, k))[2] == pytest.approx(30 + 2.5 * k)
        np.testing.assert_array_equal(arr[k], hu_slice(100 * k))
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "out.nii.gz", max_gap_factor=2.5)
    assert summary["note"] == ("converted; 1 slice(s) missing at 37.5 mm along the normal; "
                               "interpolated from the neighbours")
    assert summary["size"] == [N, N, 8] and summary["interpolated_slices"] == [37.5]
    # two missing slices in a row: each its share of the two neighbours
    write_series(tmp_path / "two", n=8, skip=(3, 4))
    image, info = read_dicom_series(tmp_path / "two", max_gap_factor=3.5)
    arr = sitk.GetArrayFromImage(image)
    assert image.GetSize()[2] == 8 and info.interpolated == pytest.approx((37.5, 40.0))
    np.testing.assert_array_equal(arr[3], np.rint((2 * hu_slice(200) + hu_slice(500)) / 3))
    np.testing.assert_array_equal(arr[7], hu_slice(700))


def write_at(folder: Path, z: list[float]) -> Path:
    """An axial series with slices at these positions along the normal (mm)."""
    uid = generate_uid()
    for k, zk in enumerate(z):
        write_slice(folder / f"IM{k}.dcm", series_uid=uid, position=(-10.0, -20.0, zk),
                    hu=hu_slice(100 * k), instance=k + 1)
    return folder


def test_uneven_slice_steps_are_rejected_and_jitter_is_not(tmp_path):
    # 2 mm steps, then two 1 mm steps: no gap, but one 2 mm spacing would put the last
    # slice at 24 mm instead of 22 mm
    folder = write_at(tmp_path / "uneven", [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 21, 22])
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(folder)
    assert err.value.path == str(folder)
    assert ("uneven slice steps: 2 of 12 steps along the normal are off the median spacing "
            "2 mm by more than 5% (1 mm after 20 mm, 1 mm after 21 mm)") in err.value.reason
    assert "gap" not in err.value.reason
    # a step 30 % long is no missing slice either: uneven, under the gap threshold
    (info,) = scan_dicom_folder(write_at(tmp_path / "long", [0, 2, 4, 6.6, 8.6, 10.6]))
    assert info.problem.startswith("uneven slice steps: 1 of 5") and "2.6 mm after 4 mm" in info.problem
    # position jitter of real scanners (~1e-3 mm) is one spacing
    z = 2.5 * np.arange(10) + np.random.default_rng(0).uniform(-1e-3, 1e-3, 10)
    image, _ = read_dicom_series(write_at(tmp_path / "jitter", list(z)))
    assert image.GetSize()[2] == 10 and image.GetSpacing()[2] == pytest.approx(2.5, abs=2e-3)


def test_non_positive_spacing_is_a_series_defect_naming_the_folder(tmp_path):
    uid = generate_uid()
    for k in range(6):
        write_slice(tmp_path / "zero" / f"IM{k}.dcm", series_uid=uid, position=(0, 0, 2.0 * k),
                    hu=hu_slice(0), instance=k + 1, spacing=(0, 0))
    with pytest.raises(DicomSeriesError) as err:
        dicom_to_nifti(tmp_path / "zero", tmp_path / "zero.nii.gz")
    assert err.value.path == str(tmp_path / "zero")
    assert "PixelSpacing 0\\0 is not a positive distance" in err.value.reason
    # a single slice takes its z spacing from SliceThickness: SimpleITK refuses a negative
    # one, and the refusal is the folder's rejection, not a RuntimeError naming nothing
    write_slice(tmp_path / "one" / "IM0.dcm", series_uid=generate_uid(), position=(0, 0, 0),
                hu=hu_slice(0), instance=1, thickness=-2.0)
    with pytest.raises(DicomSeriesError, match="SimpleITK refuses the geometry") as err:
        read_dicom_series(tmp_path / "one", min_slices=1)
    assert err.value.path == str(tmp_path / "one")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # nan, inf: the point
def test_non_finite_geometry_is_a_defect_naming_the_file(tmp_path):
    # a NaN position made the spacing NaN, and the reader silently took SliceThickness
    _, paths = write_series(tmp_path / "ipp", n=6, names=[f"IM{k}.dcm" for k in range(6)])
    ds = pydicom.dcmread(paths[2])
    ds.ImagePositionPatient = ["-10", "-20", "nan"]
    ds.save_as(paths[2])
    with pytest.raises(DicomSeriesError) as err:
        dicom_to_nifti(tmp_path / "ipp", tmp_path / "ipp.nii.gz")
    assert "ImagePositionPatient is not finite in 1 of 6 files (IM2.dcm: -10\\-20\\nan)" in err.value.reason
    # an infinite one was a "gap of inf mm", a NaN cosine "mixed orientations"
    _, paths = write_series(tmp_path / "iop", n=6, names=[f"IM{k}.dcm" for k in range(6)])
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "inf"]
        ds.save_as(path)
    (info,) = scan_dicom_folder(tmp_path / "iop")
    assert info.problem == ("ImageOrientationPatient is not finite in 6 of 6 files (IM0.dcm: "
                            "1\\0\\0\\0\\1\\inf, IM1.dcm: 1\\0\\0\\0\\1\\inf, IM2.dcm: "
                            "1\\0\\0\\0\\1\\inf, and 3 more)")


def test_direction_cosines_must_be_orthogonal_unit_vectors(tmp_path):
    # they were judged as a stack drifting off its normal: "gantry tilt or a sheared series"
    for name, orientation, shown in (
            ("long", (1.1, 0, 0, 0, 1, 0), "row length 1.1, column length 1, row . column 0"),
            ("skew", (1, 0, 0, 0.02, 0.9998, 0), "row length 1, column length 1, row . column 0.02")):
        write_series(tmp_path / name, n=6, orientation=orientation)
        (info,) = scan_dicom_folder(tmp_path / name)
        assert info.problem.startswith("ImageOrientationPatient ")
        assert f"is not two orthogonal unit vectors ({shown}; tolerance 0.001)" in info.problem
        assert "tilt" not in info.problem
    # within the tolerance (cosines written with few digits) the series reads, and the
    # normal is a unit vector: positions along it are mm
    c = 0.7071
    write_series(tmp_path / "oblique", n=6, spacing=2.0, orientation=(1, 0, 0, 0, c, -c))
    image, info = read_dicom_series(tmp_path / "oblique")
    assert np.linalg.norm(info.normal) == pytest.approx(1.0, abs=1e-12)
    assert image.GetSpacing()[2] == pytest.approx(2.0 * np.sqrt(2) * c, abs=1e-9)


def test_mixed_orientation_and_too_few_slices_are_reported(tmp_path):
    uid, _ = write_series(tmp_path / "a", n=6)
    write_slice(tmp_path / "a" / "tilted.dcm", series_uid=uid, position=(0, 0, 100),
                hu=hu_slice(0), instance=40, orientation=(1.0, 0.0, 0.0, 0.0, 0.8, -0.6))
    (info,) = scan_dicom_folder(tmp_path / "a")
    # the odd file is named, and its files are not counted as positions (the defect
    # stopped their ordering): "7 positions from 7 files" was said of 6 positions
    assert info.problem == ("mixed orientations (2 distinct ImageOrientationPatient in one "
                            "series; 1 of 7 files off the most common 1\\0\\0\\0\\1\\0: "
                            "tilted.dcm: 1\\0\\0\\0\\0.8\\-0.6)")
    assert info.label().endswith(", 7 files)") and info.to_json()["n_slices"] is None
    write_series(tmp_path / "b", n=2)
    (info,) = scan_dicom_folder(tmp_path / "b")
    assert "too few slices: 2" in info.problem
    with pytest.raises(DicomSeriesError, match="too few slices"):
        read_dicom_series(tmp_path / "b")
    image, _ = read_dicom_series(tmp_path / "b", min_slices=2)
    assert image.GetSize() == (N, N, 2)


def test_folder_without_dicom_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DicomSeriesError, match="no DICOM series found"):
        scan_dicom_folder(tmp_path)
    with pytest.raises(DicomSeriesError, match="not a folder"):
        scan_dicom_folder(tmp_path / "missing")


# --------------------------------------------------------------------------- one patient, one study


def test_two_patients_in_one_folder_are_rejected(tmp_path):
    a, _ = write_series(tmp_path, n=8, series_number=3, patient_id="A")
    b, _ = write_series(tmp_path, n=5, series_number=4, patient_id="B", start=(0, 0, 300))
    series = scan_dicom_folder(tmp_path)
    assert all(s.problem is None for s in series)  # each series alone is fine
    assert folder_mix(series) == {"PatientID": {"'A'": ["3"], "'B'": ["4"]}}
    for rule in ("most_slices", "first", "description:ax"):
        with pytest.raises(DicomSeriesError) as err:
            read_dicom_series(tmp_path, rule=rule)
        assert err.value.reason.startswith(
            "the folder mixes 2 patients (PatientID 'A' (series 3), 'B' (series 4))")
        assert "StudyInstanceUID" not in err.value.reason
        assert {s["series_uid"]: s["patient_ids"] for s in err.value.detail["series"]} == {
            a: ["A"], b: ["B"]}


def test_two_studies_in_one_folder_are_rejected(tmp_path):
    write_series(tmp_path, n=8, series_number=3, study_uid="1.2.3.1")
    write_series(tmp_path, n=8, series_number=3, study_uid="1.2.3.2", start=(0, 0, 300))
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(tmp_path)
    assert err.value.reason.startswith("the folder mixes 2 studies (StudyInstanceUID "
                                       "'1.2.3.1' (series 3), '1.2.3.2' (series 3))")


def test_explicit_uid_converts_one_series_of_a_mixed_folder_and_says_so(tmp_path):
    a, _ = write_series(tmp_path / "dcm", n=8, series_number=3, patient_id="A")
    b, _ = write_series(tmp_path / "dcm", n=5, series_number=4, patient_id="B",
                        study_uid="1.2.3.9", start=(0, 0, 300))
    summary = dicom_to_nifti(tmp_path / "dcm", tmp_path / "b.nii.gz", rule=f"uid:{b}")
    assert summary["series_uid"] == b and summary["n_slices"] == 5
    assert summary["patient_id"] == "B" and summary["study_uid"] == "1.2.3.9"
    assert summary["note"] == (
        "converted; series chosen by uid from a folder that mixes 2 patients (PatientID "
        f"'A' (series 3), 'B' (series 4)) and 2 studies (StudyInstanceUID '1.2.3.9' "
        f"(series 4), '{STUDY}' (series 3))")
    assert summary["folder_mix"]["PatientID"] == {"'A'": ["3"], "'B'": ["4"]}
    assert [s["series_uid"] for s in summary["other_series"]] == [a]


def test_absent_patient_id_is_one_more_value(tmp_path):
    # all absent (anonymised): one patient
    write_series(tmp_path / "anon", n=6, series_number=3, patient_id=None)
    write_series(tmp_path / "anon", n=4, series_number=4, patient_id=None, start=(0, 0, 300))
    summary = dicom_to_nifti(tmp_path / "anon", tmp_path / "anon.nii.gz")
    assert summary["patient_id"] is None and summary["note"] == ""
    # absent beside present: nothing shows the series belong to the same patient
    write_series(tmp_path / "half", n=6, series_number=3, patient_id="A")
    write_series(tmp_path / "half", n=4, series_number=4, patient_id="", start=(0, 0, 300))
    with pytest.raises(DicomSeriesError, match=r"mixes 2 patients \(PatientID 'A' \(series 3\), "
                       r"absent \(series 4\)\)"):
        read_dicom_series(tmp_path / "half")


def test_a_series_whose_files_disagree_on_the_patient_is_unusable(tmp_path):
    uid, paths = write_series(tmp_path, n=6, patient_id="A")
    write_slice(tmp_path / "intruder.dcm", series_uid=uid, position=(-10.0, -20.0, 45.0),
                hu=hu_slice(0), instance=7, patient_id="B")
    (info,) = scan_dicom_folder(tmp_path)
    assert "its files belong to 2 patients (PatientID 'A', 'B')" in info.problem
    # even an explicit choice does not convert it
    with pytest.raises(DicomSeriesError, match="its files belong to 2 patients"):
        read_dicom_series(tmp_path, rule=f"uid:{uid}")


def test_scan_folder_returns_the_skipped_files(tmp_path):
    write_series(tmp_path, n=4)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("hello")
    scan = scan_folder(tmp_path)
    assert scan.n_files == 5 and len(scan.series) == 1
    assert [(f.path.name, f.reason) for f in scan.skipped] == [("readme.txt", "not a DICOM file")]
    assert scan.skipped[0].to_json(tmp_path)["file"] == "sub/readme.txt"


# --------------------------------------------------------------------------- selection rules


@pytest.fixture()
def two_series(tmp_path) -> tuple[Path, str, str]:
    big, _ = write_series(tmp_path, n=8, series_number=5, description="AX CT 2.5mm")
    small, _ = write_series(tmp_path, n=5, series_number=2, description="Thin recon",
                            spacing=1.0, start=(0.0, 0.0, 0.0))
    return tmp_path, big, small


def test_selection_rules(two_series):
    folder, big, small = two_series
    series = scan_dicom_folder(folder)
    assert [s.series_number for s in series] == [2, 5]
    assert select_series(series, "most_slices").series_uid == big
    assert select_series(series, "first").series_uid == small
    assert select_series(series, "description:^thin").series_uid == small
    assert select_series(series, "description:ax ct").series_uid == big
    assert select_series(series, f"uid:{small}").series_uid == small
    _, info = read_dicom_series(folder, rule="first")
    assert info.series_uid == small and info.slice_spacing == pytest.approx(1.0)


def test_selection_failures_say_why(two_series):
    folder, big, small = two_series
    series = scan_dicom_folder(folder)
    with pytest.raises(DicomSeriesError) as err:
        select_series(series, "description:pet")
    assert err.value.reason.count("does not match") == 2
    with pytest.raises(DicomSeriesError, match="no series has UID 1.2.3"):
        select_series(series, "uid:1.2.3")
    # the big series is the only one with 6+ slices; with min 9 neither qualifies
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(folder, min_slices=9)
    assert err.value.reason.count("too few slices") == 2 and big in err.value.reason
    for bad in ("largest", "description:(", "uid:"):
        with pytest.raises(ConfigError):
            select_series(series, bad)
    with pytest.raises(ConfigError):  # a config error is reported before any scanning
        read_dicom_series(folder / "does-not-exist", rule="newest")


def test_most_slices_ties_go_to_the_lowest_series_number(tmp_path):
    write_series(tmp_path, n=6, series_number=9, description="nine")
    write_series(tmp_path, n=6, series_number=4, description="four", start=(0, 0, 200))
    assert select_series(scan_dicom_folder(tmp_path)).description == "four"


# --------------------------------------------------------------------------- NIfTI output


def test_dicom_to_nifti_is_atomic_and_summarised(tmp_path):
    import nibabel as nib

    write_series(tmp_path / "dcm", n=8, orientation=SAGITTAL)
    out = tmp_path / "out" / "subject.nii.gz"
    summary = dicom_to_nifti(tmp_path / "dcm", out, rule="most_slices")
    assert out.exists() and sorted(p.name for p in out.parent.iterdir()) == ["subject.nii.gz"]
    assert json.loads(json.dumps(summary)) == summary
    assert summary["n_slices"] == 8 and summary["size"] == [N, N, 8]
    assert summary["spacing"] == pytest.approx([0.8, 0.7, 2.5]) and summary["rule"] == "most_slices"
    image, _ = read_dicom_series(tmp_path / "dcm")
    nii = nib.load(out)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    np.testing.assert_allclose(nii.affine, ras_affine(image), atol=1e-4)
    # a failing conversion leaves nothing behind
    with pytest.raises(DicomSeriesError):
        dicom_to_nifti(tmp_path / "dcm", tmp_path / "out" / "other.nii.gz", min_slices=20)
    assert sorted(p.name for p in out.parent.iterdir()) == ["subject.nii.gz"]


@pytest.mark.parametrize("how", ["raises", "short"])
def test_a_write_that_fails_leaves_nothing_and_fails_as_the_disks(tmp_path, monkeypatch, how):
    """SimpleITK's NIfTI writer reports a full disk on stderr ("NWAD: wrote only 0 of ...
    bytes") and returns: the truncated file was renamed into place and recorded "ok" (it
    reads back through SimpleITK, its lost voxels zero). A writer that raises after
    starting the file leaves nothing either (the earlier check failed before writing)."""
    import errno

    write_series(tmp_path / "dcm", n=8)
    real = sitk.WriteImage

    def writer(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:len(data) // 2])  # what a disk filling up leaves
        if how == "raises":
            raise RuntimeError("Exception thrown in SimpleITK WriteImage")

    monkeypatch.setattr(sitk, "WriteImage", writer)
    out = tmp_path / "out" / "subject.nii.gz"
    with pytest.raises(RuntimeError if how == "raises" else OSError) as err:
        dicom_to_nifti(tmp_path / "dcm", out)
    if how == "short":
        assert err.value.errno == errno.ENOSPC and "was not written whole" in str(err.value)
    assert list(out.parent.iterdir()) == []


def ras_affine(image: sitk.Image) -> np.ndarray:
    """NIfTI-style (RAS) affine of a SimpleITK (LPS) image, for the array transposed to x,y,z."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


# --------------------------------------------------------------------------- pydicom's shipped series


@pytest.fixture(scope="module")
def pydicom_dirs() -> Path:
    import pydicom.data

    root = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"
    if not root.is_dir():
        pytest.skip(f"pydicom's dicomdirtests not installed at {root}")
    return root


def _pydicom_folder(root: Path, sub: str) -> Path:
    folder = root / sub
    if not folder.is_dir():
        pytest.skip(f"{sub} is not in this pydicom version's test files")
    return folder


def test_pydicom_ct5n_reads_as_five_contiguous_slices(pydicom_dirs):
    folder = _pydicom_folder(pydicom_dirs, "98892001/CT5N")
    image, info = read_dicom_series(folder)
    assert image.GetSize() == (16, 16, 5)
    assert image.GetSpacing() == pytest.approx((0.488281, 0.488281, 2.5))
    assert image.GetOrigin() == pytest.approx((-72.199997, -143.0, -1.2375))
    arr = sitk.GetArrayFromImage(image)
    for k, path in enumerate(info.files):
        np.testing.assert_array_equal(arr[k], hu_of(path))
    assert [pydicom.dcmread(f).InstanceNumber for f in info.files] == [10, 9, 8, 7, 6]


def test_pydicom_ct2_with_a_gap_is_rejected(pydicom_dirs):
    folder = _pydicom_folder(pydicom_dirs, "77654033/CT2")
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(folder)
    assert "gap of 202 mm" in err.value.reason and "median spacing 1.25 mm" in err.value.reason


def test_pydicom_mr_folder_with_many_series(pydicom_dirs, caplog):
    folder = _pydicom_folder(pydicom_dirs, "98892003")
    with caplog.at_level(logging.WARNING, logger="mmpipe.io.dicom"):
        series = scan_dicom_folder(folder)
    by_number = {}
    for s in series:
        by_number.setdefault(s.series_number, []).append(s)
    # MR700: 7 radial projections (one series, 7 orientations); the tri-plane pilots: 3 each
    assert by_number[700][0].problem.startswith("mixed orientations (7 distinct")
    pilots = [s for s in series if "PILOT" in s.description]
    assert len(pilots) == 2 and all(s.problem.startswith("mixed orientations") for s in pilots)
    localizers = [s for s in series if "LOCALIZER" in s.description]
    assert localizers and all("too few slices: 1" in s.problem for s in localizers)
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(folder)
    # the patient's folder holds three studies: rejected as such, whatever its series
    assert err.value.reason.startswith("the folder mixes 3 studies (StudyInstanceUID ")
    assert "patients" not in err.value.reason
    mix = folder_mix(series)
    assert list(mix) == ["StudyInstanceUID"] and len(mix["StudyInstanceUID"]) == 3
    # within one study the rules judge its series as usual
    study = next(s.study_uids[0] for s in series if s.series_number == 700)
    one_study = [s for s in series if s.study_uids == (study,)]
    with pytest.raises(DicomSeriesError) as err:
        select_series(one_study)
    assert err.value.reason.count("mixed orientations") == 2
    assert err.value.reason.count("too few slices") == 1
    # single-slice localizers become usable with min_slices=1: the rules choose among them
    first = select_series(one_study, "first", min_slices=1)
    assert first.series_number == 1 and "LOCALIZER" in first.description
    with pytest.raises(DicomSeriesError, match="mixed orientations"):
        select_series(one_study, "description:pilot", min_slices=1)
    # naming a series converts it out of the mixed folder
    chosen = next(s for s in localizers if s.files[0].parent.name == "MR1")
    assert select_series(series, f"uid:{chosen.series_uid}", min_slices=1).series_uid == chosen.series_uid
    image, info = read_dicom_series(folder / "MR1", rule=f"uid:{chosen.series_uid}", min_slices=1)
    assert image.GetSize() == (16, 16, 1) and image.GetSpacing()[2] == pytest.approx(10.0)


# --------------------------------------------------------------------------- real GE EPI vs dcm2niix


def test_ge_epi_first_time_point_matches_dcm2niix(shared_data):
    import nibabel as nib
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    folder = require(shared_data / "dicom" / "ge_mr_epi")
    reference = nib.load(require(shared_data / "dicom" / "ge_mr_epi_reference_dcm2niix.nii"))
    assert reference.shape == (64, 64, 15, 10)
    image, info = read_dicom_series(folder)
    assert info.n_files_total == 150 and info.n_duplicates_dropped == 135
    assert image.GetSize() == (64, 64, 15)
    # z spacing is the measured 5 mm (SpacingBetweenSlices), not SliceThickness (3 mm)
    assert image.GetSpacing() == pytest.approx((3.75, 3.75, 5.0))
    # the first time point is InstanceNumber 1..15 (TemporalPositionIdentifier does not tell)
    assert sorted(int(pydicom.dcmread(f).InstanceNumber) for f in info.files) == list(range(1, 16))

    ours = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (x, y, z) as NIfTI stores it
    ours_affine = ras_affine(image)
    # bring our array into the reference's voxel frame, flips derived from the two affines
    to_ref = ornt_transform(io_orientation(ours_affine), io_orientation(reference.affine))
    aligned = apply_orientation(ours, to_ref)
    aligned_affine = ours_affine @ nib.orientations.inv_ornt_aff(to_ref, ours.shape)
    np.testing.assert_allclose(aligned_affine, reference.affine, atol=1e-3)
    ref = np.asarray(reference.dataobj)
    matches = [t for t in range(ref.shape[3]) if np.array_equal(aligned, ref[..., t])]
    assert matches == [0]  # dcm2niix's first volume is our first time point, and only it


def test_ge_epi_nifti_matches_dcm2niix_in_world_space(shared_data, tmp_path):
    import nibabel as nib

    folder = require(shared_data / "dicom" / "ge_mr_epi")
    reference = nib.load(require(shared_data / "dicom" / "ge_mr_epi_reference_dcm2niix.nii"))
    summary = dicom_to_nifti(folder, tmp_path / "epi.nii.gz")
    assert summary["n_duplicates_dropped"] == 135 and summary["n_slices"] == 15
    ours = nib.as_closest_canonical(nib.load(tmp_path / "epi.nii.gz"))
    ref0 = nib.as_closest_canonical(reference.slicer[..., 0])
    np.testing.assert_allclose(ours.affine, ref0.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(ref0.dataobj))


def test_positions_missing_at_the_first_time_point_reject(shared_data, tmp_path):
    """This once filled the three positions missing at time point 0 from time point 1:
    a volume of two time points with an empty note, and EPI's first time points are not
    at steady state (brighter), so the seam shows. Only InstanceNumber relates these files
    to time points; with 2 files at some positions and 3 at others, which file of a
    position belongs to which time point is a guess: the folder is rejected."""
    folder = require(shared_data / "dicom" / "ge_mr_epi")
    files = sorted(folder.glob("*.dcm"))[:45]  # three time points
    for f in files[3:]:  # time point 0 lacks its first three slices
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(DicomSeriesError, match="42 files at 15 of 15 positions repeated .* nor "
                       "InstanceNumber order tells apart into volumes"):
        read_dicom_series(tmp_path)
    # whole time points are told apart by InstanceNumber blocks: the first one is kept
    for f in files[:3]:
        shutil.copy(f, tmp_path / f.name)
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "epi3.nii.gz")
    assert summary["n_slices"] == 15 and summary["n_duplicates_dropped"] == 30
    assert summary["note"] == ("converted; repeated positions: kept InstanceNumber block 1 of 3 "
                               "volumes told apart by InstanceNumber blocks (the first); "
                               "dropped 30 files")


def test_a_scan_stopped_in_its_last_time_point_keeps_the_first(shared_data, tmp_path):
    """A dynamic scan stopped before its last time point ended (5 of 15 files missing
    there) was rejected: InstanceNumber blocks needed as many files at every position.
    Files missing from a middle time point still reject: which file belongs to which
    time point is then a guess."""
    folder = require(shared_data / "dicom" / "ge_mr_epi")
    files = sorted(folder.glob("*.dcm"), key=lambda f: int(pydicom.dcmread(
        f, stop_before_pixels=True).InstanceNumber))[:45]  # three time points
    for f in files[:40]:
        shutil.copy(f, tmp_path / f.name)
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "stopped.nii.gz")
    assert summary["n_slices"] == 15 and summary["n_duplicates_dropped"] == 25
    assert "kept InstanceNumber block 1 of 3 volumes" in summary["note"]
    _, info = read_dicom_series(tmp_path)
    assert sorted(int(pydicom.dcmread(f).InstanceNumber) for f in info.files) == list(range(1, 16))
    (tmp_path / files[20].name).unlink()   # and one of the middle time point
    with pytest.raises(DicomSeriesError, match="InstanceNumber order tells apart"):
        read_dicom_series(tmp_path)


def test_a_block_pieced_from_two_time_points_is_no_volume(tmp_path):
    """10 positions, 3 time points numbered in turn (InstanceNumber 10·t + p + 1), the scan
    stopped after 6 slices of the third: its first block is kept. With instances 7-16 lost
    as well, the first "block" was time point 1 at positions 0-5 and time point 2 at 6-9,
    in one direction and not overlapping the next: it was kept as a volume. So was it when
    the run lost was exactly one time point long (instances 6-15 of three whole time
    points), which leaves every position two files deep."""
    uid = generate_uid()

    def write(folder, lost=(), last=6):
        for t in range(3):
            for p in range(10 if t < 2 else last):
                instance = 10 * t + p + 1
                if instance not in lost:
                    write_slice(folder / f"IM{instance:03d}.dcm", series_uid=uid,
                                position=(0, 0, 2.0 * p), hu=hu_slice(100 * t + p),
                                instance=instance)
    write(tmp_path / "stopped")
    image, info = read_dicom_series(tmp_path / "stopped")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[:, 0, 0],
                                  hu_slice(0)[0, 0] + np.arange(10))   # time point 0 whole
    assert info.repeats.startswith("repeated positions: kept InstanceNumber block 1 of 3")
    write(tmp_path / "pieced", lost=range(7, 17))
    with pytest.raises(DicomSeriesError, match="InstanceNumber order tells apart"):
        read_dicom_series(tmp_path / "pieced")
    write(tmp_path / "one_lost", lost=range(6, 16), last=10)
    with pytest.raises(DicomSeriesError, match="InstanceNumber order tells apart"):
        read_dicom_series(tmp_path / "one_lost")
    # a scanner that numbers every other instance (gaps in every block) is not that
    for t in range(3):
        for p in range(10):
            write_slice(tmp_path / "odd" / f"IM{t}_{p}.dcm", series_uid=uid,
                        position=(0, 0, 2.0 * p), hu=hu_slice(100 * t + p),
                        instance=2 * (10 * t + p) + 1)
    image, info = read_dicom_series(tmp_path / "odd")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[:, 0, 0],
                                  hu_slice(0)[0, 0] + np.arange(10))
    assert info.repeats.startswith("repeated positions: kept InstanceNumber block 1 of 3")


@pytest.mark.parametrize(("slope", "intercept"), [("0", "-1024"), ("nan", "0"), ("1", "inf")])
def test_a_rescale_that_gives_no_values_is_a_defect_naming_the_file(tmp_path, slope, intercept):
    """A RescaleSlope of 0 converted to a volume of one value (the intercept), a NaN one
    to a NaN volume, with status ok and an empty note."""
    _, paths = write_series(tmp_path / "dcm", n=6, names=[f"IM{k}.dcm" for k in range(6)])
    ds = pydicom.dcmread(paths[3])
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(paths[3])
    (info,) = scan_dicom_folder(tmp_path / "dcm")
    assert info.problem == (f"RescaleSlope/RescaleIntercept give no values in 1 of 6 files "
                            f"(IM3.dcm: slope {float(slope):g}, intercept {float(intercept):g})")



def test_a_slice_without_the_rescale_its_series_gives_or_with_a_modality_lut(tmp_path):
    """A CT slice without RescaleIntercept was read with intercept 0, 1024 HU off the
    others, and a Modality LUT Sequence was ignored: both converted ok with no note."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    _, paths = write_series(tmp_path / "dcm", n=6, names=[f"IM{k}.dcm" for k in range(6)])
    ds = pydicom.dcmread(paths[2])
    del ds.RescaleIntercept, ds.RescaleSlope
    ds.save_as(paths[2])
    (info,) = scan_dicom_folder(tmp_path / "dcm")
    assert info.problem == ("RescaleSlope/RescaleIntercept given in some files and not "
                            "others: 1 of 6 files differ (IM2.dcm: neither), whose values "
                            "would be read in other units")
    # the tags left out where they say what their defaults say: the same values
    _, paths = write_series(tmp_path / "same", n=6, names=[f"IM{k}.dcm" for k in range(6)])
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        if k == 2:
            del ds.RescaleIntercept, ds.RescaleSlope
        else:
            ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.save_as(path)
    (info,) = scan_dicom_folder(tmp_path / "same")
    assert info.problem is None
    _, paths = write_series(tmp_path / "lut", n=6, names=[f"IM{k}.dcm" for k in range(6)])
    for path in paths:
        ds = pydicom.dcmread(path)
        item = Dataset()
        item.add_new(0x00283002, "US", [4, 0, 16])   # LUTDescriptor
        item.add_new(0x00283006, "US", [0, 2, 4, 6])  # LUTData
        item.ModalityLUTType = "HU"
        ds.ModalityLUTSequence = Sequence([item])
        ds.save_as(path)
    (info,) = scan_dicom_folder(tmp_path / "lut")
    assert info.problem.startswith("a Modality LUT Sequence, which the reader does not "
                                   "apply, in 6 of 6 files (IM0.dcm: (0028,3000)")

def test_a_compressed_slice_that_cannot_be_decoded_is_named_with_its_syntax(tmp_path):
    """A compressed slice cut short failed the series read with SimpleITK's last line
    ("Cannot read requested file"), naming neither the file nor the transfer syntax (the
    truncation check counts native pixel bytes only)."""
    from pydicom.uid import RLELossless

    _, paths = write_series(tmp_path / "dcm", n=6, names=[f"IM{k}.dcm" for k in range(6)])
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:len(data) - 300])
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_series(tmp_path / "dcm")
    assert (f"; first failing file: IM2.dcm (RLE Lossless, {RLELossless}): "
            in err.value.reason), err.value.reason


def test_the_search_for_a_failing_file_is_bounded(tmp_path, monkeypatch):
    """Reading a failed series' files one by one decodes each (40 ms an RLE slice): the
    search stops after CULPRIT_SECONDS and says how far it got."""
    from mmpipe.io import dicom

    monkeypatch.setattr(dicom, "CULPRIT_SECONDS", 0.0)
    _, paths = write_series(tmp_path, n=4)
    assert dicom._culprit(paths) == "; no single file failed among the first 1 read alone"


def test_a_gap_of_no_whole_number_of_spacings_is_uneven(tmp_path):
    """The tolerance grew with the gap (5 % of each whole spacing): a step of 5.24
    spacings passed as 5, and the four interpolated slices put every later slice 0.6 mm
    off its position, with no message."""
    uid = generate_uid()
    for k, z in enumerate([0.0, 2.5, 5.0, 7.5, 7.5 + 5.24 * 2.5, 7.5 + 6.24 * 2.5,
                           7.5 + 7.24 * 2.5, 7.5 + 8.24 * 2.5]):
        write_slice(tmp_path / f"IM{k}.dcm", series_uid=uid, position=(0, 0, z),
                    hu=hu_slice(100 * k), instance=k + 1)
    (info,) = scan_dicom_folder(tmp_path, max_gap_factor=6)
    assert "off the median spacing" in info.problem


def test_a_rescale_of_a_volume_that_is_not_kept_does_not_matter(tmp_path):
    """A RescaleSlope of 0 in a file of echo 2 rejected the series whose echo 1 is read
    (and echo 2's own intercept made it float32)."""
    echo_series(tmp_path, echoes=(1, 2))
    for path in sorted(tmp_path.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if int(ds.EchoNumbers) == 2:
            ds.RescaleSlope, ds.RescaleIntercept = ("0" if ds.InstanceNumber == 9 else "1",
                                                    "-500")
            ds.save_as(path)
    image, info = read_dicom_series(tmp_path)
    assert info.problem is None and len(info.rescales) == 1
    assert image.GetPixelID() != sitk.sitkFloat32


def test_direction_cosines_within_tolerance_give_a_rotation(tmp_path):
    """Cosines accepted within 1e-3 went into the image direction as written: the image
    was scaled by 1.0009 and the NIfTI writer coerced the matrix."""
    write_series(tmp_path, n=6, orientation=(1.0009, 0, 0, 0.0009, 1, 0))
    image, _ = read_dicom_series(tmp_path)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)


def _edited(folder: Path, n: int = 6, **kw) -> list[Path]:
    _, paths = write_series(folder, n=n, names=[f"IM{k}.dcm" for k in range(n)], **kw)
    return paths


def test_each_series_defect_is_named(tmp_path):
    """The defects _analyse rejects a series for, each with its reason (they had none of
    their own tests)."""
    def problem(name: str, edit) -> str:
        paths = _edited(tmp_path / name)
        ds = pydicom.dcmread(paths[2])
        edit(ds)
        ds.save_as(paths[2])
        (info,) = scan_dicom_folder(tmp_path / name)
        return info.problem or ""

    def resize(ds):
        ds.Rows, ds.Columns = N // 2, N // 2
        ds.PixelData = np.zeros((N // 2, N // 2), np.uint16).tobytes()

    # the odd file is named: one of six slices of another size rejected the subject
    assert problem("size", resize) == "mixed image sizes [(8, 8), (16, 16)] (IM2.dcm: 8x8)"
    assert problem("nospacing", lambda ds: delattr(ds, "PixelSpacing")) == "no PixelSpacing"
    assert problem("spacing", lambda ds: setattr(ds, "PixelSpacing", [0.5, 0.5])) == (
        "mixed pixel spacing")
    assert problem("zero", lambda ds: setattr(ds, "PixelSpacing", [0, 0.8])).startswith(
        "PixelSpacing 0\\0.8 is not a positive distance")
    assert problem("noipp", lambda ds: delattr(ds, "ImagePositionPatient")).startswith(
        "1 of 6 files lack ImagePositionPatient/ImageOrientationPatient (not a "
        "cross-sectional image; IM2.dcm: no position)")


def test_an_inverted_grey_scale_is_refused_naming_its_files(tmp_path):
    """MONOCHROME1 says how to display the stored values; the rescale applies to them as
    stored. SimpleITK's GDCM reader inverted them first: a stored 5 with intercept -1024
    read as 64506 HU, and one such slice among MONOCHROME2 ones passed unnoticed."""
    paths = _edited(tmp_path)
    ds = pydicom.dcmread(paths[3])
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(paths[3])
    (info,) = scan_dicom_folder(tmp_path)
    assert info.problem.startswith("MONOCHROME1 (inverted grey scale) pixel data in 1 of 6 "
                                   "files (IM3.dcm: MONOCHROME1)")


def test_a_small_tilt_over_many_slices_is_rejected(tmp_path):
    """A 0.5 degree tilt drifts 0.009 mm a slice of 1 mm, under the per-slice test, but its
    last of 120 slices lies 1.04 mm (1.5 pixels) off the axis every slice is put on."""
    uid = generate_uid()
    shift = np.tan(np.radians(0.5))
    for k in range(120):
        write_slice(tmp_path / f"IM{k:03d}.dcm", series_uid=uid, position=(0, k * shift, k),
                    hu=hu_slice(0), instance=k + 1)
    (info,) = scan_dicom_folder(tmp_path)
    assert info.problem.startswith("slices are not stacked along their normal (IM119.dcm lies "
                                   "1.04 mm in-plane from the first slice's axis, more than "
                                   "0.5 pixel")


def test_a_slice_moved_in_plane_between_aligned_ones_is_rejected(tmp_path):
    """First and last slices aligned, the middle one 20 mm aside: no drift end to end."""
    paths = _edited(tmp_path)
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 20,
                               *map(float, ds.ImagePositionPatient[1:])]
    ds.save_as(paths[3])
    (info,) = scan_dicom_folder(tmp_path)
    assert info.problem.startswith("slices are not stacked along their normal (IM3.dcm lies "
                                   "20 mm in-plane")


def test_a_tilted_stack_is_rejected_as_such(tmp_path):
    """Slices that drift in-plane along the stack (a gantry tilt of 15 degrees) cannot be
    one volume on a grid along the normal."""
    uid = generate_uid()
    shift = np.tan(np.radians(15)) * 2.5
    for k in range(6):
        write_slice(tmp_path / f"IM{k}.dcm", series_uid=uid, position=(0, k * shift, 2.5 * k),
                    hu=hu_slice(100 * k), instance=k + 1)
    (info,) = scan_dicom_folder(tmp_path)
    assert info.problem.startswith("slices are not stacked along their normal (0.67 mm "
                                   "in-plane shift per slice: gantry tilt")


def test_an_acquired_series_before_a_derived_one_and_what_was_passed_over_is_said(tmp_path):
    """``most_slices`` counted slices alone: a coronal reformat of more slices beside the
    axial CT it was made from, or the PET of a PET/CT (more, thinner slices), was chosen,
    and the QC note said nothing of the series passed over."""
    import pydicom

    axial, _ = write_series(tmp_path / "mpr", n=6, series_number=2)
    reformat, _ = write_series(tmp_path / "mpr", n=9, series_number=601, start=(0, 0, 300))
    for path in (tmp_path / "mpr").iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageType = (["DERIVED", "SECONDARY", "MPR"]
                        if ds.SeriesInstanceUID == reformat else ["ORIGINAL", "PRIMARY", "AXIAL"])
        ds.save_as(path)
    summary = dicom_to_nifti(tmp_path / "mpr", tmp_path / "mpr.nii.gz")
    assert summary["series_uid"] == axial and summary["n_slices"] == 6
    assert ("2 'AX CT' (CT, 6 slices) chosen by 'most_slices' over 1 other usable series: "
            "601 'AX CT' (CT, derived, 9 slices)") in summary["note"]
    # a PET beside the CT, no ImageType: chosen by its slices, and said
    write_series(tmp_path / "petct", n=6, series_number=2)
    pet, _ = write_series(tmp_path / "petct", n=9, series_number=3, start=(0, 0, 300))
    for path in (tmp_path / "petct").iterdir():
        ds = pydicom.dcmread(path)
        if ds.SeriesInstanceUID == pet:
            ds.Modality = "PT"
            ds.save_as(path)
    summary = dicom_to_nifti(tmp_path / "petct", tmp_path / "petct.nii.gz")
    assert summary["series_uid"] == pet
    assert "3 'AX CT' (PT, 9 slices) chosen by 'most_slices' over 1 other usable series: " \
           "2 'AX CT' (CT, 6 slices)" in summary["note"]
    # a name both series match chose between them by most_slices, and said nothing
    summary = dicom_to_nifti(tmp_path / "petct", tmp_path / "named.nii.gz",
                             rule="description:AX")
    assert "3 'AX CT' (PT, 9 slices) chosen by 'description:AX' over 1 other usable " \
           "series: 2 'AX CT' (CT, 6 slices)" in summary["note"]
    # one the name alone picks: nothing passed over to say
    summary = dicom_to_nifti(tmp_path / "petct", tmp_path / "uid.nii.gz", rule=f"uid:{pet}")
    assert "usable series" not in summary["note"]


def _image_type(folder: Path, series_uid: str, image_type: list[str], modality: str = "CT"):
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        if ds.SeriesInstanceUID == series_uid:
            ds.ImageType, ds.Modality = image_type, modality
            ds.save_as(path)


def test_a_series_ranked_first_that_cannot_be_read_is_not_replaced_silently(tmp_path):
    """With one file of the axial CT never downloaded, ``most_slices`` chose the next
    usable series, a scout, a coronal reformat or the PET of a PET/CT, and stored it as the
    subject's CT, ``ok`` with an empty reason. Another acquired series of the modality is
    still converted, the note saying which series it replaces."""
    axial = ["ORIGINAL", "PRIMARY", "AXIAL"]
    # a scout (an acquired localizer) beside the gapped CT: rejected
    ct, _ = write_series(tmp_path / "scout", n=12, series_number=2, skip=(6,))
    scout, _ = write_series(tmp_path / "scout", n=4, spacing=20, series_number=1,
                            start=(0, 0, 400), description="SCOUT")
    _image_type(tmp_path / "scout", ct, axial)
    _image_type(tmp_path / "scout", scout, ["ORIGINAL", "PRIMARY", "LOCALIZER"])
    with pytest.raises(DicomSeriesError, match=r"is the series 'most_slices' ranks first, and "
                                               r"it is refused: gap of .*; 1 'SCOUT' "
                                               r"\(CT, localizer, 4 slices\) is not converted "
                                               r"in its place"):
        dicom_to_nifti(tmp_path / "scout", tmp_path / "scout.nii.gz")
    # a coronal reformat: rejected
    ct, _ = write_series(tmp_path / "mpr", n=12, series_number=2, skip=(6,))
    mpr, _ = write_series(tmp_path / "mpr", n=9, series_number=601, start=(0, 0, 300))
    _image_type(tmp_path / "mpr", ct, axial)
    _image_type(tmp_path / "mpr", mpr, ["DERIVED", "SECONDARY", "MPR"])
    with pytest.raises(DicomSeriesError, match=r"\(CT, derived, 9 slices\) is not converted in "
                                               r"its place"):
        dicom_to_nifti(tmp_path / "mpr", tmp_path / "mpr.nii.gz")
    # the other series of a PET/CT, either way: converted, and said (the guessing rules
    # cannot know which the modality is; the CT chosen where the PET is refused may be it)
    pet, _ = write_series(tmp_path / "petct", n=20, spacing=1.25, series_number=3,
                          start=(0, 0, 300), skip=(10,))
    ct, _ = write_series(tmp_path / "petct", n=10, series_number=2)
    _image_type(tmp_path / "petct", pet, axial, modality="PT")
    summary = dicom_to_nifti(tmp_path / "petct", tmp_path / "petct.nii.gz")
    assert summary["series_uid"] == ct
    assert "converted in place of 3 'AX CT' (PT, 19 slices), which 'most_slices' ranks " \
           "first and is refused: gap" in summary["note"]
    # a thinner acquired CT with a gap beside a thicker one: converted, and said
    thin, _ = write_series(tmp_path / "two", n=12, spacing=1.25, series_number=2, skip=(6,))
    thick, _ = write_series(tmp_path / "two", n=6, series_number=3, start=(0, 0, 300))
    summary = dicom_to_nifti(tmp_path / "two", tmp_path / "two.nii.gz")
    assert summary["series_uid"] == thick
    assert "converted in place of 2 'AX CT' (CT, 11 slices), which 'most_slices' ranks " \
           "first and is refused: gap of 2.5 mm" in summary["note"]
    # a scout of fewer slices than min_slices is no candidate: nothing to say
    write_series(tmp_path / "small", n=6, series_number=3)
    write_series(tmp_path / "small", n=2, spacing=20, series_number=1, start=(0, 0, 400))
    summary = dicom_to_nifti(tmp_path / "small", tmp_path / "small.nii.gz", rule="first")
    assert "in place of" not in summary["note"]


def test_a_name_several_series_match_is_held_to_what_it_ranks_first(tmp_path):
    """description: ranks the series it matches as most_slices does, but converted a
    reformat in place of the refused acquired series it ranks first, with no note."""
    ct, _ = write_series(tmp_path / "ct", n=12, series_number=2, skip=(6,),
                         description="AX T1")
    mpr, _ = write_series(tmp_path / "ct", n=9, series_number=601, start=(0, 0, 300),
                          description="AX T1 MPR")
    _image_type(tmp_path / "ct", ct, ["ORIGINAL", "PRIMARY", "AXIAL"])
    _image_type(tmp_path / "ct", mpr, ["DERIVED", "SECONDARY", "MPR"])
    with pytest.raises(DicomSeriesError, match=r"is the series 'description:AX T1' ranks "
                                               r"first, and it is refused: gap .*\(CT, "
                                               r"derived, 9 slices\) is not converted"):
        dicom_to_nifti(tmp_path / "ct", tmp_path / "ct.nii.gz", rule="description:AX T1")


def test_a_refused_localizer_ranked_first_is_no_series_meant(tmp_path):
    """Under ``first``, a refused localizer (series 1 of nearly every MR study) noted the
    acquired volume converted as "in place of" it; and it hid an acquired volume refused
    after it, so a reformat was converted in that one's place, said as a stand-in for the
    scout."""
    axial = ["ORIGINAL", "PRIMARY", "AXIAL"]
    loc = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout, _ = write_series(tmp_path / "mr", n=4, series_number=1, start=(0, 0, 400),
                            skip=(2,), spacing=20, description="3-plane loc")
    mr, _ = write_series(tmp_path / "mr", n=8, series_number=2)
    _image_type(tmp_path / "mr", scout, loc)
    _image_type(tmp_path / "mr", mr, axial)
    summary = dicom_to_nifti(tmp_path / "mr", tmp_path / "mr.nii.gz", rule="first")
    assert summary["series_uid"] == mr and "in place of" not in summary["note"]
    # the scout, then an acquired CT with a gap, then its reformat: the reformat refused
    scout, _ = write_series(tmp_path / "ct", n=4, series_number=1, start=(0, 0, 400),
                            skip=(2,), spacing=20, description="SCOUT")
    ct, _ = write_series(tmp_path / "ct", n=12, series_number=2, skip=(6,))
    mpr, _ = write_series(tmp_path / "ct", n=9, series_number=601, start=(0, 0, 600))
    _image_type(tmp_path / "ct", scout, loc)
    _image_type(tmp_path / "ct", ct, axial)
    _image_type(tmp_path / "ct", mpr, ["DERIVED", "SECONDARY", "MPR"])
    with pytest.raises(DicomSeriesError, match=r"2 .*is the series 'first' ranks first, and "
                                               r"it is refused: gap .*\(CT, derived, 9 "
                                               r"slices\) is not converted in its place"):
        dicom_to_nifti(tmp_path / "ct", tmp_path / "ct.nii.gz", rule="first")


def _enhanced(folder: Path, frames: int = 60, positions: int | None = None,
              modality: str = "CT") -> str:
    """One multi-frame file of ``frames`` frames; with ``positions``, per-frame groups
    placing them at that many positions in turn (a 4-D series' time points)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.dicom_files import write_ct_slice

    uid = generate_uid()
    path = write_ct_slice(folder / "enhanced.dcm", series_uid=uid, position=(0, 0, 0),
                          hu=np.zeros((N, N)), instance=1, series_number=2, frames=frames,
                          description="AX 0.6mm")
    if positions:
        ds = pydicom.dcmread(path)
        groups = []
        for k in range(frames):
            plane = Dataset()
            plane.ImagePositionPatient = [0.0, 0.0, 2.0 * (k % positions)]
            group = Dataset()
            group.PlanePositionSequence = Sequence([plane])
            groups.append(group)
        ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
        ds.save_as(path)
    _image_type(folder, uid, ["ORIGINAL", "PRIMARY", "AXIAL"], modality=modality)
    return uid


def test_a_refused_multi_frame_series_ranks_by_its_positions(tmp_path):
    """A 60-frame enhanced CT (refused) counted one slice: a 9-slice coronal reformat
    beside it was converted as the subject's CT, as was the PET of a PET/CT, each with an
    empty note. A 4-D MR's time points count once."""
    mpr = tmp_path / "mpr"
    _enhanced(mpr)
    uid, _ = write_series(mpr, n=9, series_number=601, start=(0, 0, 300))
    _image_type(mpr, uid, ["DERIVED", "SECONDARY", "MPR"])
    with pytest.raises(DicomSeriesError, match=r"'AX 0.6mm' .*is the series 'most_slices' "
                                               r"ranks first, and it is refused: multi-frame"):
        dicom_to_nifti(mpr, tmp_path / "mpr.nii.gz")
    petct = tmp_path / "petct"
    _enhanced(petct)
    pet, _ = write_series(petct, n=20, series_number=601, start=(0, 0, 300))
    _image_type(petct, pet, ["ORIGINAL", "PRIMARY"], modality="PT")
    summary = dicom_to_nifti(petct, tmp_path / "pet.nii.gz")
    assert summary["series_uid"] == pet
    assert ("converted in place of 2 'AX 0.6mm' (CT, 60 positions of multi-frame files)"
            in summary["note"])
    # 10 positions x 6 time points: below a 20-slice T1, which converts with no word of it
    fmri = tmp_path / "fmri"
    _enhanced(fmri, frames=60, positions=10, modality="MR")
    t1, _ = write_series(fmri, n=20, series_number=3, start=(0, 0, 300))
    _image_type(fmri, t1, ["ORIGINAL", "PRIMARY", "M", "ND"], modality="MR")
    summary = dicom_to_nifti(fmri, tmp_path / "t1.nii.gz")
    assert summary["series_uid"] == t1 and "in place of" not in summary["note"]


def test_a_refused_mosaic_is_no_series_a_volume_stands_in_for(tmp_path):
    # refused, a BOLD mosaic of 20 files ranked above a 12-slice T1 by its file count:
    # the T1 was noted as its stand-in, or refused where it was derived
    t1, _ = write_series(tmp_path, n=12, series_number=2)
    _image_type(tmp_path, t1, ["DERIVED", "PRIMARY", "MPR", "ND"], modality="MR")
    bold, _ = write_series(tmp_path, n=20, series_number=5, spacing=0.0, start=(0, 0, 500))
    _image_type(tmp_path, bold, ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"], modality="MR")
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "t1.nii.gz")
    assert summary["series_uid"] == t1 and "in place of" not in summary["note"]


def test_a_localizer_ranks_after_an_acquired_volume_and_with_the_derived(tmp_path):
    """A scout, ORIGINAL\\PRIMARY\\LOCALIZER, counted as acquired, so it was chosen over a
    derived reconstruction of ten times its slices."""
    recon, _ = write_series(tmp_path, n=10, spacing=1.25, series_number=4)
    scout, _ = write_series(tmp_path, n=4, spacing=10, series_number=1, start=(0, 0, 300))
    _image_type(tmp_path, recon, ["DERIVED", "PRIMARY", "AXIAL"])
    _image_type(tmp_path, scout, ["ORIGINAL", "PRIMARY", "LOCALIZER"])
    summary = dicom_to_nifti(tmp_path, tmp_path.parent / "recon.nii.gz")
    assert summary["series_uid"] == recon


@pytest.mark.parametrize("min_slices", [1, 3])
def test_a_siemens_mosaic_is_named_as_one(tmp_path, min_slices):
    # refused as "too few slices: 1 distinct positions", or at min_slices 1 converted as
    # one slice of tiles
    uid, paths = write_series(tmp_path, n=1)
    _image_type(tmp_path, uid, ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"], modality="MR")
    with pytest.raises(DicomSeriesError, match="Siemens mosaic images"):
        read_dicom_series(tmp_path, min_slices=min_slices)


def test_an_enhanced_series_of_one_frame_a_file_is_named_as_enhanced(tmp_path):
    """Enhanced DICOM written one frame a file keeps its geometry in the functional groups:
    it was refused as "lacks ImagePositionPatient/ImageOrientationPatient (not a
    cross-sectional image)", which said nothing of what to do."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    _, paths = write_series(tmp_path, n=6, names=[f"IM{k}.dcm" for k in range(6)])
    for path in paths:
        ds = pydicom.dcmread(path)
        plane = Dataset()
        plane.ImagePositionPatient = ds.ImagePositionPatient
        frame = Dataset()
        frame.PlanePositionSequence = Sequence([plane])
        ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
        ds.NumberOfFrames = 1
        del ds.ImagePositionPatient
        ds.save_as(path)
    (info,) = scan_dicom_folder(tmp_path)
    assert info.problem.startswith("multi-frame (enhanced) DICOM files are not supported; "
                                   "convert them with dcm2niix first")
    # a classic slice that carries a functional group beside its own geometry is read
    _, paths = write_series(tmp_path / "classic", n=6)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])
        ds.save_as(path)
    (info,) = scan_dicom_folder(tmp_path / "classic")
    assert info.problem is None
