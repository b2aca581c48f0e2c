"""The latent risk model and the cohort plan: who has which modality, label and defect.

The label is built so that no single modality predicts it well but fusion can:

    z ~ N(0, 1)                    latent risk
    label = 1[z + N(0, 0.25) > t]  t = the cohort's 63rd percentile: 37 % positives
    each modality sees z + N(0, sigma_m) through its own image property:
      mri_t1: lesion size         mri_t2: lesion brightness
      ct:     lesion enhancement  wsi:    nuclei density and haematoxylin tint
      clinical: age and stage (two independent noisy readings)

Everything here is decided before a file is written, so the renderers only turn
one subject's readings into pixels. The rng purposes (the second seed word of
:func:`_rng`) of the whole generator are listed here, in one place, so that no
purpose is ever reused for two things.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# each imaging modality the generator writes, and as what (the demo adapter finds it so)
IMAGING_KINDS = {"mri_t1": "volume", "mri_t2": "volume", "ct": "dicom", "wsi": "slide"}
IMAGING = tuple(IMAGING_KINDS)
CLINICAL_FIELDS = ("age", "sex", "smoking", "stage", "site")

# latent model: each channel's noise is chosen so that one reading alone gives an AUC of
# 0.81-0.85 while all of them together reach 0.94 (0.93 under the demo's natural
# missingness): a model learning from a few hundred subjects' random-init features loses
# some of both (benchmarks/demo_signal.py), and the clinical record's text encoding most
LABEL_NOISE = 0.25
# the threshold is the cohort's own quantile, so every seed gets the same class balance
POSITIVE_SHARE = 0.37
CHANNEL_NOISE = {"mri_t1": 1.0, "mri_t2": 1.0, "ct": 0.9, "wsi": 1.0, "age": 1.1, "stage": 1.1}
STAGE_CUTS = (-0.7, 0.5, 1.6)  # on the stage channel -> I | II | III | IV
CLINICAL_BLANK_RATE = 0.08

# rng purposes (the second seed word): never reuse one for two things
_LATENT, _PLAN, _CLINICAL, _ANATOMY, _RENDER = range(5)
_MODALITY_CODE = {"mri_t1": 1, "mri_t2": 2, "ct": 3, "wsi": 4}


def _rng(seed: int, *words: int) -> np.random.Generator:
    return np.random.default_rng([seed, *words])


# -- the latent model -----------------------------------------------------------------------


def latent_model(n: int, seed: int) -> dict[str, np.ndarray]:
    """z, the binary label and one noisy reading of z per channel, for ``n`` subjects."""
    rng = _rng(seed, _LATENT)
    z = rng.standard_normal(n)
    risk = z + LABEL_NOISE * rng.standard_normal(n)
    label = np.zeros(n, np.int64)
    label[np.argsort(-risk, kind="stable")[: round(POSITIVE_SHARE * n)]] = 1
    out = {"z": z, "label": label}
    for name, sigma in CHANNEL_NOISE.items():
        out[name] = z + sigma * rng.standard_normal(n)
    return out


@dataclass
class SubjectPlan:
    subject_id: str
    index: int
    label: int | None
    channels: dict[str, float]
    present: dict[str, bool]
    corrupt_ct: bool = False
    second_series: bool = False
    corrupt_slide: bool = False


@dataclass
class CohortPlan:
    subjects: list[SubjectPlan] = field(default_factory=list)

    def ids(self, predicate) -> list[str]:
        return [s.subject_id for s in self.subjects if predicate(s)]


def _pick(rng: np.random.Generator, preferred: list[int], fallback: list[int], k: int) -> list[int]:
    """``k`` indices, from ``preferred`` first; sorted, so the plan reads in order."""
    chosen = list(rng.permutation(preferred)[:k]) if preferred else []
    rest = [i for i in fallback if i not in chosen]
    if len(chosen) < k and rest:
        chosen += list(rng.permutation(rest)[: k - len(chosen)])
    return sorted(int(i) for i in chosen)


def plan_cohort(n_subjects: int, seed: int, missing: dict[str, float],
                second_series_share: float, n_corrupt_ct: int,
                n_corrupt_slides: int) -> CohortPlan:
    """Who has what, who is corrupt: everything decided before a file is written."""
    lat = latent_model(n_subjects, seed)
    rng = _rng(seed, _PLAN)
    width = max(3, len(str(n_subjects)))
    present = {m: rng.random(n_subjects) >= missing[m] for m in IMAGING}
    # never leave a subject without imaging: restore one modality at random, among those
    # the caller did not switch off entirely (rate 1)
    restorable = [m for m in IMAGING if missing[m] < 1] or list(IMAGING)
    for i in range(n_subjects):
        if not any(present[m][i] for m in IMAGING):
            present[restorable[int(rng.integers(len(restorable)))]][i] = True
    n_blank = 0 if n_subjects < 4 else max(1, round(n_subjects / 30))
    blank_labels = set(rng.permutation(n_subjects)[:n_blank].tolist())

    def others(i: int, m: str) -> bool:
        return any(present[o][i] for o in IMAGING if o != m)

    # planted defects go preferably to subjects with another imaging modality, so a
    # rejected file does not also remove the subject's only image
    with_ct = [i for i in range(n_subjects) if present["ct"][i]]
    corrupt_ct = _pick(rng, [i for i in with_ct if others(i, "ct")], with_ct, n_corrupt_ct)
    clean_ct = [i for i in with_ct if i not in corrupt_ct]
    second = _pick(rng, clean_ct, clean_ct, round(second_series_share * len(clean_ct)))
    with_wsi = [i for i in range(n_subjects) if present["wsi"][i]]
    corrupt_wsi = _pick(rng, [i for i in with_wsi if others(i, "wsi")], with_wsi,
                        n_corrupt_slides)
    for what, got, want in (("CT", corrupt_ct, n_corrupt_ct),
                            ("slide", corrupt_wsi, n_corrupt_slides)):
        if len(got) < want:
            log.warning("demo cohort: only %d subject(s) can get a corrupt %s (asked %d)",
                        len(got), what, want)

    plan = CohortPlan()
    for i in range(n_subjects):
        plan.subjects.append(SubjectPlan(
            subject_id=f"DEMO-{i + 1:0{width}d}",
            index=i,
            label=None if i in blank_labels else int(lat["label"][i]),
            channels={k: float(lat[k][i]) for k in CHANNEL_NOISE},
            present={m: bool(present[m][i]) for m in IMAGING},
            corrupt_ct=i in corrupt_ct,
            second_series=i in second,
            corrupt_slide=i in corrupt_wsi,
        ))
    return plan



# -- tables ---------------------------------------------------------------------------------


def _stage(value: float) -> str:
    return ("I", "II", "III", "IV")[int(np.searchsorted(STAGE_CUTS, value))]


def clinical_rows(plan: CohortPlan, seed: int) -> list[dict[str, Any]]:
    rows = []
    for s in plan.subjects:
        rng = _rng(seed, _CLINICAL, s.index)
        # smoking leans slightly towards "current" with age: a weak correlate of the
        # age reading, not a separate view of the risk
        p = np.array([0.45, 0.35, 0.20]) * np.exp([0.0, 0.0, 0.15 * s.channels["age"]])
        row = {
            "age": int(np.clip(round(62 + 8 * s.channels["age"]), 25, 90)),
            "sex": ("F", "M")[int(rng.integers(2))],
            "smoking": ("never", "former", "current")[int(rng.choice(3, p=p / p.sum()))],
            "stage": _stage(s.channels["stage"]),
            "site": ("A", "B", "C")[int(rng.integers(3))],
        }
        blank = rng.random(len(CLINICAL_FIELDS)) < CLINICAL_BLANK_RATE
        if blank.all():  # the clinical table stays present for everyone
            blank[int(rng.integers(len(blank)))] = False
        for f, b in zip(CLINICAL_FIELDS, blank, strict=True):
            if b:
                row[f] = None
        rows.append({"subject_id": s.subject_id, **row})
    return rows

