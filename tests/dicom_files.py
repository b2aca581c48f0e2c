"""Real DICOM files for the tests, written with pydicom: one CT slice (or several frames
at one position) with the tags a reader checks. Pixels are HU; stored as HU + 1024."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
STUDY = "1.2.826.0.1.3680043.8.498.1"


def write_ct_slice(path: Path, *, series_uid: str, position, hu: np.ndarray, instance: int,
                   series_number: int = 3, description: str = "AX CT", orientation=AXIAL,
                   acquisition: int = 1, spacing=(0.7, 0.8), thickness: float = 1.0,
                   patient_id: str | None = "synthetic", study_uid: str = STUDY,
                   sop_uid: str | None = None, frames: int = 1) -> Path:
    """One CT slice of ``hu`` (rows x columns); ``patient_id=None`` leaves PatientID out;
    ``frames > 1`` makes a multi-frame file of ``hu`` ``[frames, rows, columns]`` (or of
    one ``hu`` repeated)."""
    sop = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.Modality = "CT"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance
    ds.AcquisitionNumber = acquisition
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = thickness
    ds.Rows, ds.Columns = hu.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    if frames > 1:
        ds.NumberOfFrames = frames
        hu = np.broadcast_to(hu, (frames, *hu.shape[-2:])) if hu.ndim == 2 else hu
    ds.PixelData = (hu.astype(np.int32) + 1024).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
