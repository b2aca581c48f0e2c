"""A miniature IXI download: the real layout, file names and formats, tiny volumes.

What it writes under ``root`` (see :mod:`mmpipe.cohorts.ixi` for the layout):
``IXI-T1/``, ``IXI-T2/``, ``IXI-PD/``, ``IXI-MRA/`` with gzipped NIfTI-1 volumes named
``IXI<ID>-<Site>-<n>-<SEQ>.nii.gz``, and ``IXI.xls`` (Excel 97 BIFF, as released) with
the sheet ``Table`` and the code sheets. The volumes are the demo's phantom (a body
slab, not a head): the fixture exercises the reading, not the anatomy.

It plants the release's known oddities, returned as :class:`IXIPlan` so tests can
check each one is handled: a subject with a full row and a zeroed copy, one whose two
rows disagree on sex, one with images and no row, one with a row and no image, one
without an age, a file that is no IXI volume, a T2 file in the T1 folder, and a subject
with two T1 files.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpipe.cohorts.demo.volumes import anatomy, nifti_bytes, render_mri
from mmpipe.cohorts.ixi import ID_COLUMN, SEX_COLUMN, SHEET, SPREADSHEET, folder_of, subject_id

SITES = ("Guys", "HH", "IOP")
HEADER = (ID_COLUMN, SEX_COLUMN, "HEIGHT", "WEIGHT", "ETHNIC_ID", "MARITAL_ID",
          "OCCUPATION_ID", "QUALIFICATION_ID", "DOB", "DATE_AVAILABLE", "STUDY_DATE", "AGE")
# the code sheets of the release (ID -> caption); ethnicity has no code 2, as released
CODE_SHEETS = {
    "Ethnicity": ("ETHNIC", {1: "White", 3: "Asian or Asian British", 4: "Black or BlackBritish",
                             5: "Chinese", 6: "Other"}),
    "Marital Status": ("MARITAL", {1: "Single", 2: "Married", 3: "Cohabiting",
                                   4: "Divorced or Separated", 5: "Widowed"}),
    "Occupation": ("OCCUPATION", {1: "Go out to full time employment", 5: "Retired",
                                  8: "Other"}),
    "Qualification": ("QUALIFICATION", {1: "No qualifications",
                                        5: "University or Polytechnic degree"}),
}


@dataclass
class IXIPlan:
    """The subjects of the miniature and the oddities planted in it."""

    subjects: list[str] = field(default_factory=list)   # every ID with a row or a file
    sex: dict[str, str | None] = field(default_factory=dict)
    age: dict[str, float | None] = field(default_factory=dict)
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # sequence -> id -> name
    merged_rows: str = ""
    conflicting_rows: str = ""
    no_row: str = ""
    no_image: str = ""
    no_age: str = ""
    two_t1_files: str = ""
    stray_files: list[str] = field(default_factory=list)


def write_ixi(root: str | Path, n_subjects: int = 12, seed: int = 0,
              shape: tuple[int, int, int] = (12, 32, 32)) -> IXIPlan:
    """Write the miniature under ``root``; returns what it planted."""
    import xlwt  # writes .xls (BIFF8), the format IXI.xls is released in

    if n_subjects < 8:
        raise ValueError("the miniature needs 8 subjects or more to plant every oddity")
    root = Path(root)
    rng = np.random.default_rng(seed)
    numbers = sorted(rng.choice(np.arange(2, 700), size=n_subjects, replace=False).tolist())
    ids = [subject_id(n) for n in numbers]
    plan = IXIPlan(subjects=ids)
    plan.merged_rows, plan.conflicting_rows, plan.no_row, plan.no_image = ids[1:5]
    plan.no_age, plan.two_t1_files = ids[5], ids[6]
    for seq in ("t1", "t2", "pd", "mra"):
        (root / folder_of(seq)).mkdir(parents=True, exist_ok=True)
        plan.files[seq] = {}

    for i, sid in enumerate(ids):
        sex = "male" if rng.random() < 0.5 else "female"
        age = None if sid == plan.no_age else round(float(rng.uniform(20, 86)), 2)
        plan.sex[sid] = None if sid == plan.conflicting_rows else sex
        plan.age[sid] = age
        if sid == plan.no_image:
            continue
        site, n = SITES[i % len(SITES)], int(rng.integers(100, 3000))
        anat = anatomy(seed, i)
        for seq in ("t1", "t2", "pd", "mra"):
            # MRA and PD were not acquired for every subject (natural missingness)
            if (seq == "mra" and i % 3 == 0) or (seq == "pd" and i % 4 == 1):
                continue
            name = f"{sid}-{site}-{n:04d}-{seq.upper()}.nii.gz"
            volume = render_mri("mri_t1" if seq != "t2" else "mri_t2", shape,
                                float(rng.normal()), anat, rng)
            (root / folder_of(seq) / name).write_bytes(nifti_bytes(volume, lps=False))
            plan.files[seq][sid] = name
        if sid == plan.two_t1_files:
            again = f"{sid}-{site}-{n + 1:04d}-T1.nii.gz"
            (root / folder_of("t1") / again).write_bytes(
                (root / folder_of("t1") / plan.files["t1"][sid]).read_bytes())
    # a file that is no IXI volume, and a T2 volume extracted into the T1 folder
    stray = root / folder_of("t1") / "IXI-T1.tar.md5"
    stray.write_text("34901a0593b41dd19c1a1f746eac2d58  IXI-T1.tar\n")
    t2_sid = next(s for s in ids if s in plan.files["t2"])
    misplaced = root / folder_of("t1") / plan.files["t2"][t2_sid]
    misplaced.write_bytes((root / folder_of("t2") / plan.files["t2"][t2_sid]).read_bytes())
    plan.stray_files = [str(stray), str(misplaced)]

    book = xlwt.Workbook()
    table = book.add_sheet(SHEET)
    date = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for c, name in enumerate(HEADER):
        table.write(0, c, name)
    r = 1
    for sid in ids:
        if sid == plan.no_row:
            continue
        number = int(sid[3:])
        sex_code = 1 if rng.random() < 0.5 else 2
        if plan.sex[sid] is not None:
            sex_code = 1 if plan.sex[sid] == "male" else 2
        study = dt.date(2005, 6, 1) + dt.timedelta(days=int(rng.integers(0, 700)))
        age = plan.age[sid]
        dob = study - dt.timedelta(days=int(age * 365.25)) if age is not None else None
        row = [number, sex_code, int(rng.integers(150, 195)), int(rng.integers(50, 100)),
               int(rng.choice([1, 3, 4, 5, 6])), int(rng.integers(1, 6)), 1, 5,
               dob, 1, study, age if age is not None else ""]
        copies = [row]
        if sid == plan.merged_rows:  # the release's zeroed twin of a full row
            copies.append([number] + [0] * (len(HEADER) - 2) + [""])
        if sid == plan.conflicting_rows:
            copies.append([number, 3 - sex_code, *row[2:]])
        for values in copies:
            for c, v in enumerate(values):
                if isinstance(v, dt.date):
                    table.write(r, c, dt.datetime(v.year, v.month, v.day), date)
                elif v is not None:
                    table.write(r, c, v)
            r += 1
    for sheet_name, (column, codes) in CODE_SHEETS.items():
        sheet = book.add_sheet(sheet_name)
        sheet.write(0, 0, "ID")
        sheet.write(0, 1, column)
        for k, (code, caption) in enumerate(codes.items(), start=1):
            sheet.write(k, 0, code)
            sheet.write(k, 1, caption)
    book.save(str(root / SPREADSHEET))
    return plan
