"""A small synthetic multimodal cohort that exercises every path of the pipeline.

Real file formats (NIfTI with real affines, CT DICOM series, pyramidal TIFF
slides, CSV tables), natural missingness, planted defects (a CT series with a
missing slice, corrupt slides, a second "scout" series, blank labels and
fields) and a label that no single modality predicts well but that fusion can:

    z ~ N(0, 1)                    latent risk
    label = 1[z + N(0, 0.25) > t]  t = the cohort's 63rd percentile: 37 % positives
    each modality sees z + N(0, sigma_m) through its own image property:
      mri_t1: lesion size         mri_t2: lesion brightness
      ct:     lesion enhancement  wsi:    nuclei density and haematoxylin tint
      clinical: age and stage (two independent noisy readings)

The demo's image encoders run with random weights (nothing can be downloaded), so each
property is one a frozen random network's pooled features keep: it changes a large
share of every image (a lesion running the slab's length, so each axial slice shows
it; a tint and a nuclei density over all of a slide's tissue), and it is relative to the
tissue around it, so a per-volume normalisation does not erase it.
``benchmarks/demo_signal.py`` measures the signal at each step, from the latent readings
to the trained methods; ``measure`` reads each property back from the pixels.

Every random draw comes from ``numpy.random.default_rng([seed, purpose, ...])``,
so the same arguments give byte-identical files; a rerun also removes the demo
files the new plan does not contain, so the folder never mixes two cohorts.

The parts: ``plan`` (the latent model, who has what, the clinical rows),
``volumes`` (phantom anatomy, MRI and CT, NIfTI), ``dicom`` (the CT series
writer), ``slides`` (H&E-like slides); this module writes the files.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmpipe.cohorts.demo.dicom import ct_series_files
from mmpipe.cohorts.demo.plan import (
    _MODALITY_CODE,
    _RENDER,
    CHANNEL_NOISE,
    CLINICAL_FIELDS,
    IMAGING,
    LABEL_NOISE,
    POSITIVE_SHARE,
    _rng,
    clinical_rows,
    latent_model,
    plan_cohort,
)
from mmpipe.cohorts.demo.slides import _slide_compression, corrupt_slide_bytes, render_slide
from mmpipe.cohorts.demo.volumes import (
    CT_PIXEL_SPACING,
    CT_SLICE_THICKNESS,
    LESION,
    MRI_SPACING,
    Anatomy,
    anatomy,
    nifti_bytes,
    phantom,
    render_ct,
    render_mri,
)
from mmpipe.layout import DEMO_GENERATING as GENERATING
from mmpipe.layout import DEMO_SUMMARY as SUMMARY_JSON
from mmpipe.layout import rebuild_command

# what outside code (the adapter, the CLI, the workflow, tests, benchmarks) takes from here
__all__ = [
    # the generator and its files
    "generate_demo_cohort", "LABELS_CSV", "CLINICAL_CSV", "README", "SUMMARY_JSON", "GENERATING",
    "DEFAULT_MISSING",
    # plan.py
    "IMAGING", "CLINICAL_FIELDS", "CHANNEL_NOISE", "POSITIVE_SHARE", "latent_model",
    "plan_cohort",
    # volumes.py
    "MRI_SPACING", "CT_PIXEL_SPACING", "CT_SLICE_THICKNESS", "LESION", "Anatomy", "phantom",
    "render_mri", "render_ct", "nifti_bytes",
    # slides.py
    "render_slide",
]

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"
CLINICAL_CSV = "clinical.csv"
README = "README.txt"
DEFAULT_MISSING = {"mri_t1": 0.25, "mri_t2": 0.3, "ct": 0.35, "wsi": 0.2}


def _csv_bytes(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    lines = [",".join(columns)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else str(r[c]) for c in columns))
    return ("\n".join(lines) + "\n").encode()


def _write_if_changed(path: Path, data: bytes) -> None:
    from mmpipe.fsutil import atomic_write_bytes

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
        "Each modality sees z + N(0, sigma) through one image property:",
        f"  mri_t1    lesion size (bright T1 lesion of the kidney)    sigma {sig['mri_t1']}",
        f"  mri_t2    lesion brightness, relative to the kidney's     sigma {sig['mri_t2']}",
        f"  ct        lesion enhancement (HU)                         sigma {sig['ct']}",
        f"  wsi       nuclei density and haematoxylin tint            sigma {sig['wsi']}",
        f"  clinical  age and stage (two independent readings)        sigma {sig['age']}",
        "The kidneys and the lesion run the length of the volume, so every axial slice",
        "shows the lesion; each property changes a large share of the image and is relative",
        "to the tissue around it: a frozen random-init encoder's pooled features keep it,",
        "and a per-volume z-score or min-max does not erase it (scanner gain varies).",
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


def demo_settings(n_subjects: int = 60, seed: int = 7,
                  volume_shape: tuple[int, int, int] = (16, 64, 64),
                  slide_size: tuple[int, int] = (512, 768), slide_mpp: float = 0.5,
                  missing: dict[str, float] | None = None, second_series_share: float = 0.2,
                  n_corrupt_ct: int = 1, n_corrupt_slides: int = 1) -> dict[str, Any]:
    """The settings a generation with these options records in its ``summary.json``
    (``params``), the defaults filled in; a ValueError for options it refuses."""
    rates = dict(DEFAULT_MISSING)
    unknown = set(missing or {}) - set(rates)
    if unknown:
        raise ValueError(f"missing: unknown modality {sorted(unknown)} (known: {list(IMAGING)})")
    rates.update(missing or {})
    if not all(0.0 <= r <= 1.0 for r in rates.values()):
        raise ValueError(f"missing rates must lie in [0, 1], got {rates}")
    if n_subjects < 1:
        raise ValueError("n_subjects must be >= 1")
    # a negative count sliced the plan's permutation from its end: -3 corrupted all but 3
    if not 0.0 <= second_series_share <= 1.0 or min(n_corrupt_ct, n_corrupt_slides) < 0:
        raise ValueError(f"second_series_share must lie in [0, 1] and the corrupt counts be "
                         f">= 0, got {second_series_share}, {n_corrupt_ct}, {n_corrupt_slides}")
    volume_shape = tuple(int(v) for v in volume_shape)
    slide_size = tuple(int(v) for v in slide_size)
    if len(volume_shape) != 3 or len(slide_size) != 2:
        raise ValueError("volume_shape is (D, H, W) and slide_size is (H, W)")
    return {"n_subjects": n_subjects, "seed": seed, "volume_shape": list(volume_shape),
            "slide_size": list(slide_size), "slide_mpp": slide_mpp, "missing": rates,
            "second_series_share": second_series_share, "n_corrupt_ct": n_corrupt_ct,
            "n_corrupt_slides": n_corrupt_slides}


def settings_differ(raw_dir: str | Path, options: dict[str, Any]) -> str:
    """How the settings a generated cohort's ``summary.json`` records differ from those
    ``options`` (a config's demo block) give, or ``""`` (also where no finished demo is)."""
    try:
        made = json.loads((Path(raw_dir) / SUMMARY_JSON).read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    wanted = json.loads(json.dumps(demo_settings(**options)))
    return "; ".join(f"{k} {made.get(k)!r} there, {wanted.get(k)!r} in the config"
                     for k in sorted(set(made) | set(wanted)) if made.get(k) != wanted.get(k))


def check_made_with(raw_dir: str | Path, options: dict[str, Any]) -> None:
    """Refuse a generated cohort whose ``summary.json`` records other settings than
    ``options`` (a config's demo block) give: the workflow regenerates it when the block
    changes, but not where Snakemake has no record of the job (a demo made by an older
    version) or under ``--rerun-triggers mtime``, and the manifest read the old files."""
    from mmpipe.errors import InputError

    if differ := settings_differ(raw_dir, options):
        raise InputError("the demo cohort here was generated with other settings than the "
                         f"config's demo block: {differ}: regenerate it "
                         f"({rebuild_command(Path(raw_dir) / SUMMARY_JSON)}, or mmpipe demo "
                         "--force)",
                         path=Path(raw_dir) / SUMMARY_JSON)


def generate_demo_cohort(
    out_dir: Path,
    n_subjects: int = 60,
    seed: int = 7,
    volume_shape: tuple[int, int, int] = (16, 64, 64),
    slide_size: tuple[int, int] = (512, 768),
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
    params = demo_settings(n_subjects=n_subjects, seed=seed, volume_shape=volume_shape,
                           slide_size=slide_size, slide_mpp=slide_mpp, missing=missing,
                           second_series_share=second_series_share,
                           n_corrupt_ct=n_corrupt_ct, n_corrupt_slides=n_corrupt_slides)
    rates = params["missing"]
    volume_shape, slide_size = tuple(params["volume_shape"]), tuple(params["slide_size"])

    plan = plan_cohort(n_subjects, seed, rates, second_series_share, n_corrupt_ct,
                       n_corrupt_slides)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the mark says the folder is the demo's while it is not whole: a killed run (the
    # workflow's job or `mmpipe demo`) leaves it, and `mmpipe demo` finishes such a folder
    (out_dir / GENERATING).touch()
    # summary.json says the folder is whole: gone while files of another generation may
    # lie beside the old ones (a killed run), written back last
    (out_dir / SUMMARY_JSON).unlink(missing_ok=True)
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
    _write_if_changed(out_dir / README, _readme(summary).encode())
    _write_if_changed(out_dir / SUMMARY_JSON, (json.dumps(summary, indent=1) + "\n").encode())
    (out_dir / GENERATING).unlink(missing_ok=True)  # summary.json claims the folder now

    files = [p for p in out_dir.rglob("*") if p.is_file()]
    summary["out_dir"] = str(out_dir)
    summary["n_files"] = len(files)
    summary["bytes"] = sum(p.stat().st_size for p in files)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info("demo cohort: %d subjects, %d files, %.1f MB in %.1f s under %s", n_subjects,
             len(files), summary["bytes"] / 1e6, summary["seconds"], out_dir)
    return summary

