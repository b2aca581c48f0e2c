"""A small synthetic multimodal cohort that exercises every path of the pipeline.

Real file formats (NIfTI with real affines, CT DICOM series, pyramidal TIFF
slides, CSV tables), natural missingness, planted defects (a CT series with a
missing slice, corrupt slides, a second "scout" series, blank labels and
fields) and a label that no single modality predicts well but that fusion can:

    z ~ N(0, 1)                    latent risk
    label = 1[z + N(0, 0.35) > t]  t = the cohort's 63rd percentile: 37 % positives
    each modality sees z + N(0, sigma_m) through its own image feature:
      mri_t1: lesion size         mri_t2: lesion brightness
      ct:     lesion HU contrast  wsi:    nuclei density and haematoxylin tint
      clinical: age and stage (two independent noisy readings)

Every random draw comes from ``numpy.random.default_rng([seed, purpose, ...])``,
so the same arguments give byte-identical files; a rerun also removes the demo
files the new plan does not contain, so the folder never mixes two cohorts.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"
CLINICAL_CSV = "clinical.csv"
README = "README.txt"
SUMMARY_JSON = "summary.json"
IMAGING = ("mri_t1", "mri_t2", "ct", "wsi")
CLINICAL_FIELDS = ("age", "sex", "smoking", "stage", "site")
DEFAULT_MISSING = {"mri_t1": 0.25, "mri_t2": 0.3, "ct": 0.35, "wsi": 0.2}

# latent model: each channel's noise is chosen so that one modality alone gives an
# AUC around 0.75-0.8 while all of them together reach about 0.9
LABEL_NOISE = 0.35
# the threshold is the cohort's own quantile, so every seed gets the same class balance
POSITIVE_SHARE = 0.37
CHANNEL_NOISE = {"mri_t1": 1.2, "mri_t2": 1.3, "ct": 1.1, "wsi": 1.2, "age": 1.5, "stage": 1.5}
STAGE_CUTS = (-0.7, 0.5, 1.6)  # on the stage channel -> I | II | III | IV
CLINICAL_BLANK_RATE = 0.08

MRI_SPACING = (1.0, 1.0, 3.0)  # x, y, z in mm (NIfTI zooms)
CT_PIXEL_SPACING = 6.0  # mm: 64 px span a 384 mm abdomen
CT_SLICE_THICKNESS = 5.0
CT_INTERCEPT = -1024

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


def _csv_bytes(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    lines = [",".join(columns)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else str(r[c]) for c in columns))
    return ("\n".join(lines) + "\n").encode()


# -- anatomy and volumes --------------------------------------------------------------------


@dataclass(frozen=True)
class Anatomy:
    """Where the lesion sits, shared by the subject's MRI and CT (one patient, one tumour)."""

    side: int  # -1 right kidney, +1 left kidney (array x direction)
    dx: float
    dy: float
    dz: float  # fraction of the kidney's half-length


def anatomy(seed: int, index: int) -> Anatomy:
    rng = _rng(seed, _ANATOMY, index)
    return Anatomy(side=int(rng.choice([-1, 1])), dx=float(rng.uniform(-0.04, 0.04)),
                   dy=float(rng.uniform(-0.05, 0.05)), dz=float(rng.uniform(-0.3, 0.3)))


# tissue codes of the phantom
AIR, FAT, MUSCLE, BONE, KIDNEY, LESION = range(6)


def phantom(shape: tuple[int, int, int], aniso: float, anat: Anatomy,
            lesion_radius: float) -> np.ndarray:
    """Tissue codes on a (D, H, W) grid; in-plane unit = half the height, ``aniso`` =
    slice spacing / pixel spacing. Axes: W = patient x, H = y, D = z (slice)."""
    d, h, w = shape
    unit = h / 2
    z = (np.arange(d) - (d - 1) / 2) * aniso / unit
    y = (np.arange(h) - (h - 1) / 2) / unit
    x = (np.arange(w) - (w - 1) / 2) / unit
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij", sparse=True)
    tissue = np.full(shape, AIR, dtype=np.uint8)
    body = (xx / 0.88) ** 2 + (yy / 0.68) ** 2 <= 1
    tissue[np.broadcast_to(body, shape)] = FAT
    inner = (xx / 0.76) ** 2 + (yy / 0.56) ** 2 <= 1
    tissue[np.broadcast_to(inner, shape)] = MUSCLE
    kz = 0.55
    for side in (-1, 1):
        kidney = ((xx - side * 0.42) / 0.14) ** 2 + ((yy - 0.2) / 0.2) ** 2 + (zz / kz) ** 2 <= 1
        tissue[np.broadcast_to(kidney, shape)] = KIDNEY
    spine = xx**2 + (yy - 0.38) ** 2 <= 0.1**2
    tissue[np.broadcast_to(spine, shape)] = BONE
    cx, cy, cz = anat.side * 0.42 + anat.dx, 0.2 + anat.dy, anat.dz * kz
    lesion = ((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2) <= lesion_radius**2
    tissue[np.broadcast_to(lesion, shape)] = LESION
    return tissue


def _render(tissue: np.ndarray, values: dict[int, float], noise: float,
            rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    lut = np.array([values[k] for k in range(LESION + 1)], dtype=np.float32)
    img = gaussian_filter(lut[tissue], sigma=0.6)  # partial-volume edges
    return img + noise * rng.standard_normal(tissue.shape).astype(np.float32)


def t1_lesion_radius(channel: float) -> float:
    """T1 carries the signal through the lesion's size."""
    return float(np.clip(0.16 + 0.055 * channel, 0.05, 0.34))


def t2_lesion_intensity(channel: float) -> float:
    """T2 carries it through the lesion's brightness (relative to the kidney's 700)."""
    return float(700 * np.clip(1.35 + 0.3 * channel, 0.75, 2.6))


def ct_lesion_hu(channel: float) -> float:
    """CT carries it through the lesion's enhancement (HU, above the kidney's 130)."""
    return float(np.clip(250 + 60 * channel, 140, 480))


def render_mri(modality: str, shape: tuple[int, int, int], channel: float, anat: Anatomy,
               rng: np.random.Generator) -> np.ndarray:
    """A (D, H, W) int16 MR volume of ``modality`` (mri_t1 | mri_t2)."""
    aniso = MRI_SPACING[2] / MRI_SPACING[0]
    gain = rng.uniform(0.9, 1.1)  # scanner gain varies: absolute intensity is not the signal
    if modality == "mri_t1":
        tissue = phantom(shape, aniso, anat, t1_lesion_radius(channel))
        values = {AIR: 0, FAT: 800, MUSCLE: 350, BONE: 250, KIDNEY: 500, LESION: 1200}
    else:
        tissue = phantom(shape, aniso, anat, 0.16 * rng.uniform(0.9, 1.1))
        values = {AIR: 0, FAT: 500, MUSCLE: 300, BONE: 150, KIDNEY: 700,
                  LESION: t2_lesion_intensity(channel)}
    img = _render(tissue, values, 25.0, rng) * gain
    return np.clip(np.rint(img), 0, 4000).astype(np.int16)


def render_ct(shape: tuple[int, int, int], channel: float, anat: Anatomy,
              rng: np.random.Generator) -> np.ndarray:
    """A (D, H, W) int16 CT volume in HU."""
    tissue = phantom(shape, CT_SLICE_THICKNESS / CT_PIXEL_SPACING, anat,
                     0.2 * rng.uniform(0.9, 1.1))
    values = {AIR: -1000, FAT: -100, MUSCLE: 45, BONE: 900, KIDNEY: 130,
              LESION: ct_lesion_hu(channel)}
    return np.clip(np.rint(_render(tissue, values, 15.0, rng)), -1024, 3000).astype(np.int16)


def mri_affine(shape: tuple[int, int, int], lps: bool) -> np.ndarray:
    """Voxel-to-world (RAS mm) affine of the NIfTI array (x=W, y=H, z=D) with a real origin.

    The RAS and the LPS-like versions place the same anatomy at the same world
    coordinates; only the voxel order differs, so a reader that ignores the affine
    gets a mirrored image and one that honours it gets T1 and T2 aligned.
    """
    d, h, w = shape
    sx, sy, sz = MRI_SPACING
    origin = np.array([-(w - 1) / 2 * sx, -(h - 1) / 2 * sy - 20.0, -(d - 1) / 2 * sz + 40.0])
    aff = np.eye(4)
    aff[:3, :3] = np.diag([sx, sy, sz])
    aff[:3, 3] = origin
    if lps:
        aff[0, 0], aff[1, 1] = -sx, -sy
        aff[0, 3] = origin[0] + sx * (w - 1)
        aff[1, 3] = origin[1] + sy * (h - 1)
    return aff


def nifti_bytes(volume_dhw: np.ndarray, lps: bool) -> bytes:
    """A .nii.gz as bytes; gzip with mtime 0 so the same volume gives the same file."""
    import nibabel as nib

    # the phantom's voxel order is DICOM's (column -> patient left, row -> posterior):
    # stored as is under an LPS-like affine, or flipped in x and y under an RAS one
    data = volume_dhw.transpose(2, 1, 0)  # (D,H,W) -> (x,y,z)
    if not lps:
        data = data[::-1, ::-1, :]
    data = np.ascontiguousarray(data)
    aff = mri_affine(volume_dhw.shape, lps)
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


# -- DICOM ----------------------------------------------------------------------------------


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
        # the position, not the number
        ds.InstanceNumber = len(ks) - ks.index(k)
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


# -- slides ---------------------------------------------------------------------------------


def render_slide(size: tuple[int, int], channel: float, rng: np.random.Generator) -> np.ndarray:
    """An H&E-like (H, W, 3) uint8 slide: pink tissue blobs with dark purple nuclei on white.

    The channel raises the nuclei density and the haematoxylin tint of the tissue.
    Tissue shape and colour are drawn at 1/4 resolution and repeated (a 2 um step at
    0.5 um/px, invisible at tile scale); nuclei are drawn at full resolution.
    """
    from scipy.ndimage import gaussian_filter, zoom

    h, w = size
    q = 4
    qh, qw = -(-h // q), -(-w // q)
    lh, lw = max(8, qh // 4), max(8, qw // 4)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    field = np.zeros((lh, lw), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(0.25, 0.75) * lh, rng.uniform(0.2, 0.8) * lw
        sy, sx = rng.uniform(0.1, 0.2) * lh, rng.uniform(0.08, 0.16) * lw
        field += np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2) / 2)
    field += 0.35 * gaussian_filter(rng.standard_normal((lh, lw)).astype(np.float32), 2.0)
    shade = gaussian_filter(rng.standard_normal((lh, lw)).astype(np.float32), 3.0)
    field = zoom(field, (qh / lh, qw / lw), order=1)[:qh, :qw]
    shade = zoom(shade, (qh / lh, qw / lw), order=1)[:qh, :qw]
    tissue_q = field > 0.5

    eosin = np.array([234, 150, 192], np.float32)
    haem = np.array([120, 70, 165], np.float32)
    tint = float(np.clip(0.2 + 0.08 * channel, 0.02, 0.5))
    mix = np.clip(tint + 0.5 * shade, 0, 0.8)[..., None]
    small = np.where(tissue_q[..., None], (1 - mix) * eosin + mix * haem, 243.0)
    small = np.rint(small).astype(np.uint8)
    img = np.repeat(np.repeat(small, q, axis=0), q, axis=1)[:h, :w]
    tissue = np.repeat(np.repeat(tissue_q, q, axis=0), q, axis=1)[:h, :w]

    # nuclei: Poisson count over the slide, kept where there is tissue
    density = np.exp(0.5 * channel) / 900.0  # per tissue pixel
    n = int(rng.poisson(density * h * w))
    ys = rng.integers(0, h, n)
    xs = rng.integers(0, w, n)
    keep = tissue[ys, xs]
    ys, xs = ys[keep], xs[keep]
    radii = rng.integers(3, 6, ys.size)
    nuc = np.zeros((h, w), bool)
    for r in (3, 4, 5):
        yk, xk = np.mgrid[-r:r + 1, -r:r + 1]
        disk = yk**2 + xk**2 <= r * r
        for y, x in zip(ys[radii == r].tolist(), xs[radii == r].tolist(), strict=True):
            y0, x0 = y - r, x - r
            if y0 < 0 or x0 < 0 or y0 + 2 * r + 1 > h or x0 + 2 * r + 1 > w:
                continue
            nuc[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1] |= disk
    img[nuc] = (72, 38, 110)
    return np.ascontiguousarray(img)


def _slide_compression() -> str:
    import importlib.util

    if importlib.util.find_spec("imagecodecs") is not None:
        return "jpeg"
    log.warning("demo slides: 'imagecodecs' is not installed, so tifffile cannot encode JPEG; "
                "FALLING BACK to deflate (lossless, larger files)")
    return "deflate"


def corrupt_slide_bytes(valid: bytes) -> bytes:
    """A slide cut short: the TIFF header points at directories past the end of the file."""
    return valid[: max(64, len(valid) // 5)]


# -- the generator --------------------------------------------------------------------------


def _write_if_changed(path: Path, data: bytes) -> None:
    from mmpipe.cohorts.manifest import atomic_write_bytes

    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return  # identical: keep the file (and its mtime, so nothing downstream reruns)
    atomic_write_bytes(path, data)


def _remove_stale(folder: Path, keep: set[str]) -> list[str]:
    """Delete demo files of ``folder`` not in ``keep`` (only names the demo writes)."""
    import shutil

    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        ours = p.name.startswith("DEMO-") or p.name.startswith(".tmp-") or ".tmp-" in p.name
        if ours and p.name not in keep:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p.name)
    return removed


def _readme(summary: dict[str, Any]) -> str:
    p = summary["params"]
    sig = CHANNEL_NOISE
    sx, sy, sz = MRI_SPACING

    def ids(key: str) -> str:
        return ", ".join(summary[key]) or "-"

    return "\n".join([
        "mmpipe synthetic demo cohort",
        "============================",
        "",
        "Synthetic data made by mmpipe.cohorts.demo.generate_demo_cohort; no real patient.",
        f"seed: {p['seed']}    subjects: {p['n_subjects']}",
        "",
        f"Label: latent risk z ~ N(0,1); label = 1 for the {POSITIVE_SHARE:.0%} of subjects "
        f"with the highest z + N(0, {LABEL_NOISE}).",
        "Each modality sees z + N(0, sigma) through one image feature:",
        f"  mri_t1    lesion size (bright T1 lesion in a kidney)   sigma {sig['mri_t1']}",
        f"  mri_t2    lesion brightness                            sigma {sig['mri_t2']}",
        f"  ct        lesion enhancement (HU)                      sigma {sig['ct']}",
        f"  wsi       nuclei density and haematoxylin tint         sigma {sig['wsi']}",
        f"  clinical  age and stage (two independent readings)     sigma {sig['age']}",
        "",
        "Layout:",
        "  labels.csv          subject_id,label (blank = label missing)",
        f"  clinical.csv        subject_id,{','.join(CLINICAL_FIELDS)} (blank = unknown)",
        f"  mri_t1/<id>.nii.gz  RAS affine, {sx:g}x{sy:g}x{sz:g} mm",
        "  mri_t2/<id>.nii.gz  LPS-like affine (voxel order as DICOM), same spacing and anatomy",
        f"  ct/<id>/IM*.dcm     CT Image Storage, one file per slice, names shuffled, "
        f"{CT_PIXEL_SPACING:g} mm pixels, {CT_SLICE_THICKNESS:g} mm slices",
        f"  wsi/<id>.tiff       pyramidal tiled TIFF, {p['slide_mpp']:g} um/px, 3 levels",
        "  summary.json        all of this, machine-readable (with the latent readings)",
        "",
        f"Labels: {summary['labels']}",
        f"Imaging present: {summary['present']}",
        "",
        "Planted defects (preprocessing must reject or handle them):",
        f"  CT series with a missing middle slice:    {ids('corrupt_ct')}",
        f"  truncated slide files:                    {ids('corrupt_slides')}",
        f"  CT folders with a second (scout) series:  {ids('second_series')}",
        f"  blank labels:                             {ids('label_missing')}",
        "",
    ])


def generate_demo_cohort(
    out_dir: Path,
    n_subjects: int = 60,
    seed: int = 7,
    volume_shape: tuple[int, int, int] = (24, 64, 64),
    slide_size: tuple[int, int] = (2048, 3072),
    slide_mpp: float = 0.5,
    missing: dict[str, float] | None = None,
    second_series_share: float = 0.2,
    n_corrupt_ct: int = 1,
    n_corrupt_slides: int = 1,
) -> dict[str, Any]:
    """Write the demo cohort under ``out_dir`` and return its summary (see the module doc).

    ``missing`` overrides the per-modality absence rates of :data:`DEFAULT_MISSING`
    key by key. Same arguments, same bytes: rerunning rewrites nothing that is
    already identical and removes demo files the new plan does not contain.
    """
    from mmpipe.io.tiff_writer import write_pyramidal_tiff

    started = time.perf_counter()
    out_dir = Path(out_dir)
    rates = dict(DEFAULT_MISSING)
    unknown = set(missing or {}) - set(rates)
    if unknown:
        raise ValueError(f"missing: unknown modality {sorted(unknown)} (known: {list(IMAGING)})")
    rates.update(missing or {})
    if not all(0.0 <= r <= 1.0 for r in rates.values()):
        raise ValueError(f"missing rates must lie in [0, 1], got {rates}")
    if n_subjects < 1:
        raise ValueError("n_subjects must be >= 1")
    volume_shape = tuple(int(v) for v in volume_shape)
    slide_size = tuple(int(v) for v in slide_size)
    if len(volume_shape) != 3 or len(slide_size) != 2:
        raise ValueError("volume_shape is (D, H, W) and slide_size is (H, W)")
    params = {"n_subjects": n_subjects, "seed": seed, "volume_shape": list(volume_shape),
              "slide_size": list(slide_size), "slide_mpp": slide_mpp, "missing": rates,
              "second_series_share": second_series_share, "n_corrupt_ct": n_corrupt_ct,
              "n_corrupt_slides": n_corrupt_slides}

    plan = plan_cohort(n_subjects, seed, rates, second_series_share, n_corrupt_ct,
                       n_corrupt_slides)
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in IMAGING:
        (out_dir / m).mkdir(exist_ok=True)
    compression = _slide_compression() if any(s.present["wsi"] for s in plan.subjects) else ""

    keep: dict[str, set[str]] = {m: set() for m in IMAGING}
    for s in plan.subjects:
        sid = s.subject_id
        anat = anatomy(seed, s.index)
        for m in ("mri_t1", "mri_t2"):
            if s.present[m]:
                rng = _rng(seed, _RENDER, s.index, _MODALITY_CODE[m])
                vol = render_mri(m, volume_shape, s.channels[m], anat, rng)
                name = f"{sid}.nii.gz"
                _write_if_changed(out_dir / m / name, nifti_bytes(vol, lps=m == "mri_t2"))
                keep[m].add(name)
        if s.present["ct"]:
            rng = _rng(seed, _RENDER, s.index, _MODALITY_CODE["ct"])
            vol = render_ct(volume_shape, s.channels["ct"], anat, rng)
            files = ct_series_files(vol, sid, seed, rng, s.corrupt_ct, s.second_series)
            folder = out_dir / "ct" / sid
            folder.mkdir(exist_ok=True)
            for name, data in files.items():
                _write_if_changed(folder / name, data)
            for p in folder.iterdir():
                if p.name not in files:
                    p.unlink()
            keep["ct"].add(sid)
        if s.present["wsi"]:
            rng = _rng(seed, _RENDER, s.index, _MODALITY_CODE["wsi"])
            rgb = render_slide(slide_size, s.channels["wsi"], rng)
            name = f"{sid}.tiff"
            target = out_dir / "wsi" / name
            scratch = out_dir / "wsi" / f".tmp-{sid}.tiff"
            write_pyramidal_tiff(scratch, rgb, slide_mpp, tile=256, n_levels=3,
                                 compression=compression)
            data = scratch.read_bytes()
            scratch.unlink()
            _write_if_changed(target, corrupt_slide_bytes(data) if s.corrupt_slide else data)
            keep["wsi"].add(name)
    removed = {m: _remove_stale(out_dir / m, keep[m]) for m in IMAGING}
    for name in (LABELS_CSV, CLINICAL_CSV, README, SUMMARY_JSON):  # leftovers of a killed run
        for tmp in out_dir.glob(f"{name}.tmp-*"):
            tmp.unlink()
    if any(removed.values()):
        log.info("demo cohort: removed stale files %s", {m: r for m, r in removed.items() if r})

    labels_rows = [{"subject_id": s.subject_id, "label": s.label} for s in plan.subjects]
    _write_if_changed(out_dir / LABELS_CSV, _csv_bytes(labels_rows, ["subject_id", "label"]))
    _write_if_changed(out_dir / CLINICAL_CSV,
                      _csv_bytes(clinical_rows(plan, seed), ["subject_id", *CLINICAL_FIELDS]))

    labels = [s.label for s in plan.subjects]
    summary: dict[str, Any] = {
        "params": params,
        "labels": {"positive": labels.count(1), "negative": labels.count(0),
                   "missing": labels.count(None)},
        "present": {m: sum(s.present[m] for s in plan.subjects) for m in IMAGING},
        "corrupt_ct": plan.ids(lambda s: s.corrupt_ct),
        "corrupt_slides": plan.ids(lambda s: s.corrupt_slide),
        "second_series": plan.ids(lambda s: s.second_series),
        "label_missing": plan.ids(lambda s: s.label is None),
        "subjects": [asdict(s) for s in plan.subjects],
        "slide_compression": compression,
    }
    _write_if_changed(out_dir / SUMMARY_JSON, (json.dumps(summary, indent=1) + "\n").encode())
    _write_if_changed(out_dir / README, _readme(summary).encode())

    files = [p for p in out_dir.rglob("*") if p.is_file()]
    summary["out_dir"] = str(out_dir)
    summary["n_files"] = len(files)
    summary["bytes"] = sum(p.stat().st_size for p in files)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info("demo cohort: %d subjects, %d files, %.1f MB in %.1f s under %s", n_subjects,
             len(files), summary["bytes"] / 1e6, summary["seconds"], out_dir)
    return summary

