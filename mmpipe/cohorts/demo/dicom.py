"""The CT DICOM series writer: one CT Image Storage file per slice, with planted defects.

UIDs are derived from the seed and the subject, so the same arguments give the
same files.
"""

from __future__ import annotations

import io

import numpy as np

from mmpipe.cohorts.demo.volumes import CT_PIXEL_SPACING, CT_SLICE_THICKNESS

CT_INTERCEPT = -1024


def _uid(seed: int, sid: str, *what: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["mmpipe-demo", str(seed), sid, *what]))


def ct_series_files(volume_hu: np.ndarray, sid: str, seed: int, rng: np.random.Generator,
                    corrupt: bool, scout: bool) -> dict[str, bytes]:
    """One file per slice (CT Image Storage), names not in slice order.

    The main series covers the volume; ``corrupt`` drops its middle slice (a gap a
    reader must reject); ``scout`` adds a shorter localizer series to the folder.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    d, h, w = volume_hu.shape
    study, frame = _uid(seed, sid, "study"), _uid(seed, sid, "frame")
    x0 = -(w - 1) / 2 * CT_PIXEL_SPACING
    y0 = -(h - 1) / 2 * CT_PIXEL_SPACING - 30.0
    z0 = -450.0 + float(rng.uniform(-20, 20))
    series = [("main", 2, "AXIAL 5MM SOFT TISSUE", ["ORIGINAL", "PRIMARY", "AXIAL"],
               [k for k in range(d) if not (corrupt and k == d // 2)], CT_SLICE_THICKNESS)]
    if scout:
        series.append(("scout", 1, "SCOUT LOCALIZER", ["ORIGINAL", "PRIMARY", "LOCALIZER"],
                       list(range(0, d, 4)), CT_SLICE_THICKNESS * 2))
    slices = [(s, k) for s in series for k in s[4]]
    names = rng.permutation(len(slices))
    files = {}
    for (s, k), name in zip(slices, names, strict=True):
        tag, number, description, image_type, ks, thickness = s
        instance = _uid(seed, sid, tag, str(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = instance
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = instance
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = _uid(seed, sid, tag, "series")
        ds.FrameOfReferenceUID = frame
        ds.PatientID = sid
        ds.PatientName = f"Demo^{sid}"
        # type 2 attributes of the CT Image IOD: present in every real file, empty or not
        ds.PatientBirthDate = ds.PatientSex = ds.ReferringPhysicianName = ""
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.AcquisitionNumber = 1
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "mmpipe synthetic demo"
        ds.BodyPartExamined = "ABDOMEN"
        ds.ImageType = image_type
        ds.SeriesNumber = number
        ds.SeriesDescription = description
        # acquired head to feet: InstanceNumber grows as z falls, so sorting must use
        # the position, not the number; a file lost from the series leaves its number out
        ds.InstanceNumber = (d - k) if tag == "main" else len(ks) - ks.index(k)
        ds.ImagePositionPatient = [round(x0, 3), round(y0, 3),
                                   round(z0 + k * CT_SLICE_THICKNESS, 3)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = round(z0 + k * CT_SLICE_THICKNESS, 3)
        ds.PixelSpacing = [CT_PIXEL_SPACING, CT_PIXEL_SPACING]
        ds.SliceThickness = thickness
        ds.KVP = 120
        ds.Rows, ds.Columns = h, w
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = CT_INTERCEPT
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = (volume_hu[k].astype(np.int32) - CT_INTERCEPT).astype("<i2").tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[f"IM{int(name):04d}.dcm"] = buf.getvalue()
    return files
