"""A miniature of MMIST-ccRCC's raw images beside the release's tables.

What it writes under ``root`` (see :mod:`mmpipe.cohorts.mmist_raw`): the four tables of
the release (``clinical+genomic_split.csv`` with the real columns, ``CT_patientfiles.csv``,
``MRI_patientfiles.csv``, ``WSI_patientfiles.csv``), DICOM series in NBIA Data
Retriever's descriptive folders (``Radiology-TCGA/TCGA-KIRC/<case>/<study>/<series>/``,
``Radiology-CPTAC/CPTAC-CCRCC/...``; CT from the demo's phantom, MRI the same series
relabelled MR) and pyramidal TIFF slides under ``Pathology/`` (a GDC-style
``<slide>.<uuid>.tiff`` for TCGA cases).

It plants, returned as :class:`MMISTRawPlan`: a chosen CT series missing from the
download, a slide present twice, and a patient with CT and MRI.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpipe.cohorts.demo.dicom import ct_series_files
from mmpipe.cohorts.demo.volumes import anatomy, render_ct

CLINICAL_HEADER = ("case_id", "gender", "age_diag", "grade", "cancer_history",
                   "ajcc_path_tumor_pt", "ajcc_path_nodes_pn", "ajcc_clin_metastasis_cm",
                   "ajcc_path_metastasis_pm", "ajcc_path_tumor_stage", "race_Asian",
                   "race_Black or African American", "race_Hispanic or Latino", "race_White",
                   "race_other", "VHL_mutation", "PBMR1_mutation", "TTN_mutation",
                   "vital_status_12", "Split")


@dataclass
class MMISTRawPlan:
    cases: list[str] = field(default_factory=list)
    ct: dict[str, str] = field(default_factory=dict)     # case -> chosen_exam
    mri: dict[str, str] = field(default_factory=dict)
    missing_ct_series: str = ""
    slide_twice: str = ""


def _as_mr(data: bytes) -> bytes:
    """A CT slice relabelled as MR, with UIDs of its own: a case's MR series must not share
    its CT twin's study, series and instance UIDs, which DICOM requires unique (a reader
    that groups a whole case folder by series merged the two), nor CT's own tags."""
    import pydicom
    from pydicom.uid import MRImageStorage, generate_uid

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Modality = "MR"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    for tag in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, tag, generate_uid(entropy_srcs=["MR", str(getattr(ds, tag))]))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for tag in ("RescaleType", "KVP"):
        if tag in ds:
            delattr(ds, tag)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _series(root: Path, case: str, seed: int, rng, kind: str, alive: bool) -> str:
    collection = ("Radiology-TCGA/TCGA-KIRC" if case.startswith("TCGA")
                  else "Radiology-CPTAC/CPTAC-CCRCC")
    study = f"11-09-2008-NA-CT ABDOMEN AND PELVIS-{int(rng.integers(10000, 99999))}"
    series = f"3.000000-5S AXIAL SOFT-{int(rng.integers(10000, 99999))}"
    exam = f"/{collection}/{case}/{study}/{series}"
    folder = root / exam.lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    volume = render_ct((8, 24, 24), 0.8 if alive else -0.8, anatomy(seed, len(case)), rng)
    for name, data in ct_series_files(volume, case, seed, rng, False, False).items():
        (folder / name).write_bytes(data if kind == "ct" else _as_mr(data))
    return exam


def write_mmist_raw(root: str | Path, n_cases: int = 12, seed: int = 0) -> MMISTRawPlan:
    """Write the miniature under ``root``; returns what it planted."""
    from mmpipe.io.tiff_writer import write_pyramidal_tiff

    if n_cases < 6:
        raise ValueError("the miniature needs 6 cases or more to plant every oddity")
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan = MMISTRawPlan()
    rows, wsi_rows, ct_rows, mri_rows = [], ["case_id,chosen_exam"], [], []
    for i in range(n_cases):
        case = f"TCGA-B0-{4690 + i}" if i % 2 else f"C3L-{610 + i:05d}"
        plan.cases.append(case)
        alive = i % 3 != 0
        if i % 2 == 0 or i == 1:
            plan.ct[case] = _series(root, case, seed, rng, "ct", alive)
        if i in (1, 4):
            plan.mri[case] = _series(root, case, seed, rng, "mri", alive)
        slide = (f"{case}-01Z-00-DX1" if case.startswith("TCGA") else f"{case}-2{i}")
        rgb = np.full((512, 512, 3), 240, np.uint8)
        rgb[96:416, 96:416] = (200 if alive else 150, 90, 170)
        name = (f"{slide}.{rng.integers(10**8):08x}-aaaa-bbbb.tiff" if case.startswith("TCGA")
                else f"{slide}.tiff")
        (root / "Pathology").mkdir(parents=True, exist_ok=True)
        write_pyramidal_tiff(root / "Pathology" / name, rgb, mpp=0.5, tile=128, n_levels=2)
        if i == 3:
            plan.slide_twice = case
            write_pyramidal_tiff(root / "Pathology" / f"{slide}.second-copy.tiff", rgb,
                                 mpp=0.5, tile=128, n_levels=2)
        wsi_rows.append(f"{case},{slide}.npz")
        rows.append([case, i % 2, 5 + i % 3, 2 + i % 2, -1, 1 + i % 3, 0, 0, 0, 1 + i % 4,
                     0, 0, 0, 1, 0, -1 if i % 4 == 0 else 1, 0, 0, int(alive),
                     "test" if i % 5 == 0 else "train"])
    # the thesis's choice names a CT series the download does not hold
    plan.missing_ct_series = plan.cases[2]
    gone = root / plan.ct[plan.missing_ct_series].lstrip("/")
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    ct_rows = ["case_id,chosen_exam"] + [f"{c},{e}" for c, e in plan.ct.items()]
    mri_rows = ["case_id,chosen_exam"] + [f"{c},{e}" for c, e in plan.mri.items()]
    (root / "CT_patientfiles.csv").write_text("\n".join(ct_rows) + "\n")
    (root / "MRI_patientfiles.csv").write_text("\n".join(mri_rows) + "\n")
    (root / "WSI_patientfiles.csv").write_text("\n".join(wsi_rows) + "\n")
    lines = [",".join(CLINICAL_HEADER)] + [",".join(str(v) for v in r) for r in rows]
    (root / "clinical+genomic_split.csv").write_text("\n".join(lines) + "\n")
    return plan
