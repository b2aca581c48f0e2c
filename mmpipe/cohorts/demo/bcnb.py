"""A miniature BCNB download: the real layout, names and formats, small slides.

What it writes under ``root`` (see :mod:`mmpipe.cohorts.bcnb`): ``WSIs/<id>.jpg`` (plain
JPEG slides, here a few hundred pixels: a pink core of tissue on white glass, with more
and darker nuclei where the lymph nodes are positive) with their ``<id>.json``
annotations, ``patient-clinical-data.xlsx`` with the release's columns, and
``dataset-splitting/{train,val,test}_id.txt``.

It plants, returned as :class:`BCNBPlan`: a truncated JPEG (its slide is rejected at
tiling), a row without a slide, a slide without a row, an ``ALN status`` that is not one
of the three values, and a stray file in ``WSIs/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpipe.cohorts.bcnb import ALN_VALUES, SPLIT_FILES, SPLIT_FOLDER, SPREADSHEET

HEADER = ("Patient ID", "Age(years)", "Tumour Size(cm)", "Tumour Type", "ER", "PR", "HER2",
          "HER2 Expression", "Histological grading", "Surgical", "Ki67", "Molecular subtype",
          "Number of lymph node metastases", "ALN status")


@dataclass
class BCNBPlan:
    patients: list[str] = field(default_factory=list)   # IDs with a row or a slide
    aln: dict[str, str | None] = field(default_factory=dict)
    split: dict[str, str] = field(default_factory=dict)
    truncated_slide: str = ""
    no_slide: str = ""
    no_row: str = ""
    bad_aln: str = ""
    stray_file: str = ""
    # Ki67 as the release writes it: a fraction as text ("0.3"), for some a range or a
    # bound ("30-40%", "＜5%", full-width): {patient: the range's text}
    ki67_ranges: dict[str, str] = field(default_factory=dict)


def _slide(rng, positive: bool, size=(384, 512)) -> np.ndarray:
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w, 3), 242.0)
    core = ((yy - h / 2) / (0.32 * h)) ** 2 + ((xx - w / 2) / (0.42 * w)) ** 2 <= 1
    img[core] = (225, 165, 195)
    n = int(rng.integers(260, 340) if positive else rng.integers(110, 170))
    for _ in range(n):
        cy, cx = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.1 * w, 0.9 * w)
        r = rng.uniform(2.0, 4.0)
        spot = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & core
        img[spot] = (70, 40, 120) if positive else (115, 85, 160)
    img += rng.normal(0, 5, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_bcnb(root: str | Path, n_patients: int = 20, seed: int = 0) -> BCNBPlan:
    """Write the miniature under ``root``; returns what it planted."""
    import openpyxl
    from PIL import Image

    if n_patients < 10:
        raise ValueError("the miniature needs 10 patients or more to plant every oddity")
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "WSIs").mkdir(parents=True, exist_ok=True)
    (root / SPLIT_FOLDER).mkdir(exist_ok=True)
    ids = [str(i) for i in range(1, n_patients + 1)]
    plan = BCNBPlan(patients=ids)
    plan.truncated_slide, plan.no_slide, plan.no_row, plan.bad_aln = ids[1], ids[2], ids[3], ids[4]
    plan.ki67_ranges = {ids[5]: "30-40%", ids[6]: "＜5%"}
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    sheet.append(list(HEADER))
    for i, sid in enumerate(ids):
        aln = ALN_VALUES[i % 3]
        plan.aln[sid] = None if sid in (plan.bad_aln, plan.no_row) else aln
        if sid != plan.no_slide:
            path = root / "WSIs" / f"{sid}.jpg"
            Image.fromarray(_slide(rng, aln != "N0")).save(path, quality=90)
            (root / "WSIs" / f"{sid}.json").write_text(json.dumps(
                {"positive": [{"name": "Annotation 0", "vertices": [[10, 10], [20, 20]]}]}))
            if sid == plan.truncated_slide:
                path.write_bytes(path.read_bytes()[:200])
        if sid == plan.no_row:
            continue
        nodes = 0 if aln == "N0" else (1 if aln == "N+(1-2)" else 4)
        sheet.append([int(sid), int(rng.integers(30, 75)), round(float(rng.uniform(1, 5)), 1),
                      "Invasive ductal carcinoma", "Positive", "Positive", "Negative", "1+",
                      int(rng.integers(1, 4)),
                      ("Sentinel lymph node biopsy", "Axillary lymph node dissection")[nodes > 0],
                      plan.ki67_ranges.get(sid, str(round(float(rng.uniform(0.05, 0.6)), 2))),
                      "Luminal B", nodes,
                      "N1" if sid == plan.bad_aln else aln])
    book.save(root / SPREADSHEET)
    stray = root / "WSIs" / "Thumbs.db"
    stray.write_bytes(b"\x00" * 8)
    plan.stray_file = str(stray)
    # the release's split: every labelled patient in one part (60/20/20)
    order = rng.permutation(ids).tolist()
    cut = [round(0.6 * len(ids)), round(0.8 * len(ids))]
    for part, chunk in zip(("train", "val", "test"),
                           (order[:cut[0]], order[cut[0]:cut[1]], order[cut[1]:]), strict=True):
        (root / SPLIT_FOLDER / SPLIT_FILES[part]).write_text("\n".join(chunk) + "\n")
        plan.split.update(dict.fromkeys(chunk, part))
    return plan
