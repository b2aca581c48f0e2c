"""A miniature ADNI download: LONI's NIfTI folder layout and an ADNIMERGE-like table.

What it writes under ``root`` (see :mod:`mmpipe.cohorts.adni`):
``ADNI/<PTID>/<series>/<YYYY-MM-DD_HH_MM_SS.0>/I<id>/ADNI_<PTID>_<MR|PT>_..._I<id>.nii``
with series ``MPRAGE`` (MRI) and ``Coreg,_Avg,_Standardized_Image_and_Voxel_Size`` (FDG
PET), tiny volumes (a head whose "atrophy" grows with the diagnosis), and
``ADNIMERGE.csv`` with ``RID``, ``PTID``, ``VISCODE``, ``EXAMDATE``, ``DX``, ``AGE``
(at baseline on every row, as ADNIMERGE's), ``Years_bl``, ``PTGENDER``, ``MMSE`` for a
baseline and a 12-month visit per subject.

It plants, returned as :class:`ADNIPlan`: a subject whose PET was acquired only at its
12-month visit (with a follow-up MRI; no PET at baseline), a baseline scan 200 days off (outside the window),
two MRI scans equally close to a visit, a baseline without a diagnosis, and a
localizer series that is not read.
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpipe.cohorts.demo.volumes import nifti_bytes

MRI_SERIES = "MPRAGE"
PET_SERIES = "Coreg,_Avg,_Standardized_Image_and_Voxel_Size"
DIAGNOSES = ("CN", "MCI", "Dementia")


@dataclass
class ADNIPlan:
    subjects: list[str] = field(default_factory=list)
    diagnosis_bl: dict[str, str | None] = field(default_factory=dict)
    pet_only_at_m12: str = ""
    mri_out_of_window: str = ""
    two_close_mri: str = ""
    no_baseline_dx: str = ""


def _volume(rng, dx: str, shape=(12, 24, 24), pet=False) -> np.ndarray:
    d, h, w = shape
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    r = np.sqrt(((z - d / 2) / (0.45 * d)) ** 2 + ((y - h / 2) / (0.45 * h)) ** 2
                + ((x - w / 2) / (0.4 * w)) ** 2)
    atrophy = {"CN": 0.0, "MCI": 0.12, "Dementia": 0.25}[dx] + rng.normal(0, 0.04)
    img = np.where(r <= 1, 800.0, 0.0)
    img[r <= 0.35 + atrophy] = 200.0 if not pet else 300.0 - 600 * atrophy  # ventricles
    img += rng.normal(0, 15, shape) * (r <= 1)
    return np.clip(np.rint(img), 0, 4000).astype(np.int16)


def _write_scan(root: Path, ptid: str, series: str, when: dt.datetime, image_id: int,
                volume: np.ndarray) -> Path:
    kind = "PT" if series == PET_SERIES else "MR"
    folder = (root / "ADNI" / ptid / series / when.strftime("%Y-%m-%d_%H_%M_%S.0")
              / f"I{image_id}")
    folder.mkdir(parents=True, exist_ok=True)
    name = (f"ADNI_{ptid}_{kind}_{series}_br_raw_{when.strftime('%Y%m%d%H%M%S')}000_1_"
            f"S{image_id - 1000}_I{image_id}.nii")
    path = folder / name
    path.write_bytes(gzip.decompress(nifti_bytes(volume, lps=False)))
    return path


def write_adni(root: str | Path, n_subjects: int = 12, seed: int = 0) -> ADNIPlan:
    """Write the miniature under ``root``; returns what it planted."""
    if n_subjects < 8:
        raise ValueError("the miniature needs 8 subjects or more to plant every oddity")
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan = ADNIPlan()
    rows = ["RID,PTID,VISCODE,EXAMDATE,DX,AGE,Years_bl,PTGENDER,MMSE"]
    image_id = 10000
    for i in range(n_subjects):
        rid = 100 + 7 * i
        ptid = f"{(i % 3) * 30 + 2:03d}_S_{rid:04d}"
        plan.subjects.append(ptid)
        dx = DIAGNOSES[i % 3]
        bl = dt.datetime(2010, 1, 4) + dt.timedelta(days=int(rng.integers(0, 900)), hours=9)
        m12 = bl + dt.timedelta(days=365)
        plan.diagnosis_bl[ptid] = dx
        if i == 1:
            plan.pet_only_at_m12 = ptid
        elif i == 2:
            plan.mri_out_of_window = ptid
        elif i == 3:
            plan.two_close_mri = ptid
        elif i == 4:
            plan.no_baseline_dx, plan.diagnosis_bl[ptid] = ptid, None
        mri_date = bl + dt.timedelta(days=200 if ptid == plan.mri_out_of_window else 3)
        image_id += 1
        _write_scan(root, ptid, MRI_SERIES, mri_date, image_id, _volume(rng, dx))
        if ptid == plan.two_close_mri:  # a rescan the same number of days from the visit
            image_id += 1
            _write_scan(root, ptid, MRI_SERIES, bl - dt.timedelta(days=3), image_id,
                        _volume(rng, dx))
        if ptid == plan.pet_only_at_m12:  # its follow-up MRI, beside the follow-up PET
            image_id += 1
            _write_scan(root, ptid, MRI_SERIES, m12 + dt.timedelta(days=5), image_id,
                        _volume(rng, dx))
        image_id += 1
        pet_date = m12 if ptid == plan.pet_only_at_m12 else bl + dt.timedelta(days=10)
        _write_scan(root, ptid, PET_SERIES, pet_date, image_id, _volume(rng, dx, pet=True))
        image_id += 1  # a localizer: a series of no configured modality
        _write_scan(root, ptid, "Localizer", bl, image_id, _volume(rng, "CN", (4, 24, 24)))
        age, sex, mmse = 60 + int(rng.integers(0, 25)), ("Male", "Female")[i % 2], 30 - 3 * (i % 3)
        dx_bl = "" if ptid == plan.no_baseline_dx else dx
        years = round((m12 - bl).days / 365.25, 6)  # as ADNIMERGE writes it
        rows.append(f"{rid},{ptid},bl,{bl.date()},{dx_bl},{age},0,{sex},{mmse}")
        rows.append(f"{rid},{ptid},m12,{m12.date()},{dx},{age},{years},{sex},{mmse - 1}")
    (root / "ADNIMERGE.csv").write_text("\n".join(rows) + "\n")
    return plan
