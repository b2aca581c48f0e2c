"""A miniature BraTS training download: the real layouts, names and formats, tiny volumes.

What it writes under ``root`` (see :mod:`mmpipe.cohorts.brats`): one folder per case
with gzipped NIfTI-1 ``<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` on one voxel grid, and
the survival CSV of the release (2020: ``survival_info.csv`` with ``Brats20ID``, ``Age``,
``Survival_days``, ``Extent_of_Resection``; 2019: ``survival_data.csv`` with
``BraTS19ID``, ``Age``, ``Survival``, ``ResectionStatus``, the cases under ``HGG/`` and
``LGG/``). Each volume is a head (an ellipsoid) with a tumour: a sphere of label 2
(oedema) around a core of label 1 and 4, centred on an axial slice that varies by case
(so the largest-tumour slice is known: :attr:`BraTSPlan.tumour_slice`); shorter survival
goes with a larger tumour, so survival has a signal to find.

It plants the releases' oddities, returned as :class:`BraTSPlan`: a censored survival
``ALIVE (361 days later)`` and one past the long edge, a survival that is no number,
a case without a survival row and a row without a case, a segmentation named as
2020's case 355 ships it, a sequence given twice (``.nii`` and ``.nii.gz``) and a case
without its T2.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpipe.cohorts.demo.volumes import nifti_bytes

SEQUENCES = ("t1", "t1ce", "t2", "flair")
# tissue intensities per sequence: brain, oedema (label 2), core (labels 1 and 4)
_INTENSITY = {"t1": (600, 450, 350), "t1ce": (600, 500, 1100), "t2": (500, 900, 700),
              "flair": (450, 1000, 600)}


@dataclass
class BraTSPlan:
    """The cases of the miniature and what was planted in it."""

    release: str
    cases: list[str] = field(default_factory=list)
    survival_days: dict[str, str] = field(default_factory=dict)   # as written in the CSV
    tumour_slice: dict[str, int] = field(default_factory=dict)    # axial index, largest area
    censored_unknown: str = ""
    censored_long: str = ""
    not_a_number: str = ""
    no_row: str = ""
    row_without_case: str = ""
    misnamed_seg: str = ""
    two_t1_files: str = ""
    no_t2: str = ""


def case_name(release: str, i: int) -> str:
    return {"2020": f"BraTS20_Training_{i:03d}", "2019": f"BraTS19_TCIA01_{i:03d}_1"}[release]


def _head(shape, centre_z: int, radius: float, rng) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(segmentation, volume per sequence) on a (D, H, W) grid."""
    d, h, w = shape
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    head = ((z - d / 2) / (0.48 * d)) ** 2 + ((y - h / 2) / (0.45 * h)) ** 2 \
        + ((x - w / 2) / (0.4 * w)) ** 2 <= 1
    cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-3, 3)
    r = np.sqrt((z - centre_z) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[(r <= radius) & head] = 2
    seg[(r <= 0.6 * radius) & head] = 1
    seg[(r <= 0.3 * radius) & head] = 4
    volumes = {}
    for seq in SEQUENCES:
        brain, oedema, core = _INTENSITY[seq]
        img = np.where(head, brain, 0).astype(np.float64)
        img[seg == 2] = oedema
        img[(seg == 1) | (seg == 4)] = core
        img = img * rng.uniform(0.9, 1.1) + rng.normal(0, 20, shape) * head
        volumes[seq] = np.clip(np.rint(img), 0, 4000).astype(np.int16)
    return seg, volumes


def write_brats(root: str | Path, n_cases: int = 12, seed: int = 0, release: str = "2020",
                shape: tuple[int, int, int] = (16, 32, 32)) -> BraTSPlan:
    """Write the miniature under ``root``; returns what it planted."""
    if n_cases < 8:
        raise ValueError("the miniature needs 8 cases or more to plant every oddity")
    if release not in ("2019", "2020"):
        raise ValueError("release is '2019' or '2020' (2021 ships no survival CSV)")
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan = BraTSPlan(release=release, cases=[case_name(release, i + 1) for i in range(n_cases)])
    (plan.censored_unknown, plan.censored_long, plan.not_a_number, plan.no_row,
     plan.misnamed_seg, plan.two_t1_files, plan.no_t2) = plan.cases[1:8]
    plan.row_without_case = case_name(release, n_cases + 1)
    rows = []
    for i, case in enumerate(plan.cases):
        grade = "HGG" if release == "2020" or i % 4 else "LGG"
        folder = root / (case if release == "2020" else f"{grade}/{case}")
        folder.mkdir(parents=True, exist_ok=True)
        days = int(rng.integers(60, 900))
        # shorter survival, larger tumour (3-6 voxels), with noise
        radius = float(np.clip(6.0 - 3.0 * days / 900 + rng.normal(0, 0.4), 2.5, 6.5))
        centre = int(rng.integers(4, shape[0] - 4))
        seg, volumes = _head(shape, centre, radius, rng)
        plan.tumour_slice[case] = int(np.argmax((seg > 0).sum(axis=(1, 2))))
        for seq, volume in volumes.items():
            if case == plan.no_t2 and seq == "t2":
                continue
            (folder / f"{case}_{seq}.nii.gz").write_bytes(nifti_bytes(volume, lps=False))
        seg_name = ("W39_1998.09.19_Segm.nii" if case == plan.misnamed_seg
                    else f"{case}_seg.nii.gz")
        data = nifti_bytes(seg, lps=False)
        (folder / seg_name).write_bytes(gzip.decompress(data) if seg_name.endswith(".nii")
                                        else data)
        if case == plan.two_t1_files:  # the same volume once more, uncompressed
            t1 = (folder / f"{case}_t1.nii.gz").read_bytes()
            (folder / f"{case}_t1.nii").write_bytes(gzip.decompress(t1))
        survival = str(days)
        if case == plan.censored_unknown:
            survival = "ALIVE (361 days later)"
        elif case == plan.censored_long:
            survival = "ALIVE (500 days later)"
        elif case == plan.not_a_number:
            survival = "NA"
        plan.survival_days[case] = survival
        if case != plan.no_row and grade == "HGG":
            rows.append((case, f"{rng.uniform(30, 80):.3f}", survival,
                         ("GTR", "STR", "NA")[i % 3]))
    rows.append((plan.row_without_case, "61.000", "300", "GTR"))
    if release == "2020":
        header, name = ("Brats20ID", "Age", "Survival_days", "Extent_of_Resection"), \
            "survival_info.csv"
    else:
        header, name = ("BraTS19ID", "Age", "Survival", "ResectionStatus"), "survival_data.csv"
    lines = [",".join(header)] + [",".join(r) for r in rows]
    (root / name).write_text("\n".join(lines) + "\n")
    return plan
