"""A miniature BreakHis download: the real layout, file names and format, tiny images.

What it writes under ``root`` (see :mod:`mmpipe.cohorts.breakhis`):
``histology_slides/breast/{benign,malignant}/SOB/<type>/SOB_<B|M>_<T>_<patient>/<mag>X/``
with RGB PNG fields named ``SOB_<B|M>_<T>-<patient>-<mag>-<n>.png`` (70 x 46 px instead
of 700 x 460). Malignant fields carry more and darker nuclei, so the class has a signal.

It plants, returned as :class:`BreakHisPlan`: a patient without 400X, a patient whose
200X folder holds no image, a 100X field in a patient's 40X folder, a truncated PNG (the
encoder leaves it out of the set and says so), a file that is no image, a patient under
two type folders, and a patient folder that does not follow the naming.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpipe.cohorts.breakhis import MAGNIFICATIONS, TYPE_CODES, TYPES


@dataclass
class BreakHisPlan:
    patients: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (class, type)
    no_400x: str = ""
    empty_200x: str = ""
    misplaced_100x: str = ""
    truncated_png: str = ""           # the patient, at 40X
    two_types: str = ""
    bad_folder: str = ""


def _field(rng, malignant: bool, shape=(46, 70)) -> np.ndarray:
    h, w = shape
    img = np.empty((h, w, 3), dtype=np.float64)
    img[:] = (235, 200, 215)  # eosin-pink background
    n = int(rng.integers(14, 22) if malignant else rng.integers(5, 10))
    yy, xx = np.mgrid[:h, :w]
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2.0, 4.0)
        tint = (70, 40, 120) if malignant else (120, 90, 160)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = tint
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_breakhis(root: str | Path, patients_per_type: int = 2, seed: int = 0,
                   images_per_set: int = 3) -> BreakHisPlan:
    """Write the miniature under ``root`` (the ``BreaKHis_v1/`` folder); returns the plan."""
    if patients_per_type < 2 or images_per_set < 2:
        raise ValueError("the miniature needs 2 patients a type and 2 images a set or more "
                         "to plant every oddity")
    root = Path(root)
    rng = np.random.default_rng(seed)
    breast = root / "histology_slides" / "breast"
    plan = BreakHisPlan()
    folders = {}
    k = 0
    for cls, types in TYPES.items():
        for tumour in types:
            for _ in range(patients_per_type):
                k += 1
                pid = f"{14 + k % 3}-{1000 + 37 * k}"
                plan.patients[pid] = (cls, tumour)
                code = TYPE_CODES[tumour]
                folder = breast / cls / "SOB" / tumour / f"SOB_{cls[0].upper()}_{code}_{pid}"
                folders[pid] = (folder, cls, code)
    ids = list(plan.patients)
    (plan.no_400x, plan.empty_200x, plan.misplaced_100x, plan.truncated_png) = (
        ids[0], ids[1], ids[2], ids[9])
    # a malignant patient, as the release's is: with three patients a type, ids[10] was
    # a benign one, listed again under a malignant type, which the release never does
    plan.two_types = next(p for p in ids[10:] if plan.patients[p][0] == "malignant")
    for pid, (folder, cls, code) in folders.items():
        for mag in MAGNIFICATIONS.values():
            if pid == plan.no_400x and mag == 400:
                continue
            mag_dir = folder / f"{mag}X"
            mag_dir.mkdir(parents=True, exist_ok=True)
            if pid == plan.empty_200x and mag == 200:
                (mag_dir / "Thumbs.db").write_bytes(b"\x00" * 16)  # no image in it
                continue
            for n in range(1, images_per_set + 1):
                name = f"SOB_{cls[0].upper()}_{code}-{pid}-{mag}-{n:03d}.png"
                _png(mag_dir / name, _field(rng, cls == "malignant"))
        if pid == plan.misplaced_100x:
            src = folder / "100X" / f"SOB_{cls[0].upper()}_{code}-{pid}-100-001.png"
            (folder / "40X" / src.name).write_bytes(src.read_bytes())
        if pid == plan.truncated_png:
            f = folder / "40X" / f"SOB_{cls[0].upper()}_{code}-{pid}-40-002.png"
            f.write_bytes(f.read_bytes()[:60])
    # the same patient ID once more, a whole folder, under another malignant type (the
    # release's 14-13412, under both ductal and lobular carcinoma)
    cls, tumour = plan.patients[plan.two_types]
    other = "lobular_carcinoma" if tumour != "lobular_carcinoma" else "ductal_carcinoma"
    dup = breast / "malignant" / "SOB" / other / f"SOB_M_{TYPE_CODES[other]}_{plan.two_types}"
    for mag in MAGNIFICATIONS.values():
        for n in range(1, images_per_set + 1):
            name = f"SOB_M_{TYPE_CODES[other]}-{plan.two_types}-{mag}-{n:03d}.png"
            _png(dup / f"{mag}X" / name, _field(rng, True))
    # a patient folder that does not follow the naming
    bad = breast / "benign" / "SOB" / "adenosis" / "patient 7"
    _png(bad / "40X" / "field.png", _field(rng, False))
    plan.bad_folder = str(bad)
    return plan
