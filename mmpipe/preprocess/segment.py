"""Organ masks from TotalSegmentator, cached per subject, for the ROI crop.

A volume modality may ask for masks made here instead of masks an adapter reads
(``cohorts.<c>.modalities.<m>.mask: {from: totalsegmentator, roi_subset: [...]}``): the
``segment`` rule runs TotalSegmentator (Wasserthal et al., 2023; its Python API
``totalsegmentator.python_api.totalsegmentator``, ``roi_subset`` to predict only the
organs asked for, ``fast`` for its 3 mm model on a CPU, ``task`` its CT model ``total``
or its MR model ``total_mr``) on each subject's volume and
keeps the union of the organs as one mask on the volume's voxel grid
(``preprocess/<m>/masks/<subject>.nii.gz``, the subject's ID made a safe file name as
for the DICOM shards, listed in ``masks.parquet``). The encoders
then read it as the subject's mask (:mod:`mmpipe.preprocess.masks`): ``roi_crop``
crops to it (the MMARE thesis crops CT to the kidneys so).

TotalSegmentator's weights are never downloaded here: ``preprocess.totalsegmentator.weights``
names the folder holding them (what TotalSegmentator calls ``TOTALSEG_WEIGHTS_PATH``:
the ``Dataset...`` folders its ``totalseg_download_weights`` writes, by default under
``~/.totalsegmentator/nnunet/results``); without them the job stops at once, naming the
folder. A subject whose segmentation fails, or finds none of the organs, gets no mask
and the reason; the others go on. When no subject gets a mask, or the machine fails
(memory, a full disk), the job fails instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmpipe.errors import ConfigError, InputError, note_subject, shared_cause
from mmpipe.io.volume_header import check_declared_size
from mmpipe.preprocess.masks import MASKS_TABLE
from mmpipe.shards import safe_name

log = logging.getLogger(__name__)

# TotalSegmentator's tasks a mask may ask for, and the DICOM Modality each segments: its
# models are trained on CT ('total', TotalSegmentator's default) or on MR ('total_mr',
# TotalSegmentator MRI, D'Antonoli et al., 2025); the CT model on an MR volume gives masks
# that look like masks and are not the organs
TASKS = {"total": "CT", "total_mr": "MR"}
DEFAULT_TASK = "total"
# The nnU-Net datasets TotalSegmentator's Python API loads for a task with roi_subset
# (wasserth/TotalSegmentator, totalsegmentator/python_api.py and map_tasks_config.py):
# for 'total', the 3 mm model (297) or the full-resolution model's five parts (291-295:
# organs, vertebrae, cardiac, muscles, ribs; every part is fetched whatever the organs),
# and either way the 6 mm model (298) that crops the volume to the organs asked for
# first; for 'total_mr', the 3 mm model (852) or the full model's two parts (850, 851),
# and the 3 mm model again to crop when organs are named, as mmpipe always names them
# (its 6 mm model, 853, is not read then, but the download that fetches 852 fetches it,
# and it is asked for too). These are the datasets of TotalSegmentator 2.5 and later;
# 2.2 to 2.4 ran other MR models (730-733), which this table does not check, so use 2.5
# or later for 'total_mr'. A dataset not in the folder is downloaded by TotalSegmentator
# when it runs, which mmpipe never lets it do.
CROP_MODEL = {"total": 298, "total_mr": 852}
MODELS = {("total", True): (297, 298), ("total", False): (291, 292, 293, 294, 295, 298),
          ("total_mr", True): (852, 853), ("total_mr", False): (850, 851, 852, 853)}
# what downloads them (totalseg_download_weights -t ...; bin/totalseg_download_weights.py)
DOWNLOAD_TASKS = {("total", True): ("total_fast",), ("total", False): ("total",),
                  ("total_mr", True): ("total_fast_mr",),
                  ("total_mr", False): ("total_mr", "total_fast_mr")}
# the names totalseg_download_weights gives them: Dataset297_TotalSegmentator_total_3mm_...
WEIGHT_FOLDERS = ("Dataset297_TotalSegmentator_total_3mm_1559subj",
                  "Dataset291_TotalSegmentator_part1_organs_1559subj",
                  "Dataset298_TotalSegmentator_total_6mm_1559subj",
                  "Dataset852_TotalSegMRI_total_3mm_1088subj",
                  "Dataset853_TotalSegMRI_total_6mm_1088subj")

Segmenter = Callable[[Path, Path], list[Path]]


def _dataset(folder: Path, model: int) -> Path | None:
    found = sorted(p for p in folder.glob(f"Dataset{model}_*") if p.is_dir())
    return found[0] if found else None


def model_folders(folder: Path, fast: bool, task: str = DEFAULT_TASK) -> list[Path]:
    """The ``Dataset...`` folders of ``folder`` TotalSegmentator reads for these masks
    (:data:`MODELS`), those that are there."""
    return [p for m in MODELS[task, fast] if (p := _dataset(folder, m)) is not None]


def check_weights(folder: str | Path | None, fast: bool, task: str = DEFAULT_TASK) -> Path:
    """The weights folder, or a :class:`ConfigError` naming the folder, the models it
    lacks and how to fill it."""
    if not folder:
        raise ConfigError("TotalSegmentator masks need preprocess.totalsegmentator.weights: "
                          "the folder of its weights (TOTALSEG_WEIGHTS_PATH); they are never "
                          "downloaded by mmpipe")
    folder = Path(folder).expanduser()
    missing = [f"Dataset{m}_*" for m in MODELS[task, fast] if _dataset(folder, m) is None]
    if missing:
        raise ConfigError(
            f"TotalSegmentator weights not found: {folder} has no {', '.join(missing)}/ "
            f"(the {'fast' if fast else 'full-resolution'} model of the {task!r} task and "
            f"Dataset{CROP_MODEL[task]}, which crops to the organs first). On a machine "
            "with internet run "
            + " and ".join(f"`totalseg_download_weights -t {t}`"
                           for t in DOWNLOAD_TASKS[task, fast])
            + f" and copy its nnunet/results folder to {folder}")
    return folder


def totalsegmentator_segmenter(settings: dict[str, Any], roi_subset: list[str],
                               threads: int = 1, task: str = DEFAULT_TASK) -> Segmenter:
    """The segmenter calling TotalSegmentator's Python API with ``settings``
    (``weights``, ``fast``, ``device``) and the modality's ``task``; checked before any
    subject is read (the weights, and the organs against the task's classes). ``threads``
    (the job's CPUs) resample the volume; nnU-Net's own forward on ``cpu`` takes a thread
    per CPU of the node whatever it is given (TotalSegmentator's nnunet.py), so a
    cluster job on ``cpu`` should hold the node's CPUs or share them knowingly."""
    fast = bool(settings.get("fast", True))
    weights = check_weights(settings.get("weights"), fast, task)
    os.environ["TOTALSEG_WEIGHTS_PATH"] = str(weights)  # read by TotalSegmentator's config
    try:
        from totalsegmentator.map_to_binary import class_map
        from totalsegmentator.python_api import totalsegmentator
    except ImportError as err:
        raise ConfigError("TotalSegmentator masks need the TotalSegmentator package "
                          f"(`pip install TotalSegmentator`): {err}") from err
    # an organ the task does not segment failed every subject on a KeyError deep in
    # TotalSegmentator's crop (the MR task names some organs otherwise than the CT one)
    if task not in class_map:
        raise ConfigError(f"the installed TotalSegmentator has no task {task!r} "
                          "(mask.task): install a version that has it")
    classes = set(class_map[task].values())
    if unknown := sorted(set(roi_subset) - classes):
        raise ConfigError(f"TotalSegmentator's {task!r} task has no class {unknown} "
                          "(mask.roi_subset); its classes are listed in "
                          f"totalsegmentator.map_to_binary.class_map[{task!r}]")

    def segment(volume: Path, out_dir: Path) -> list[Path]:
        totalsegmentator(str(volume), str(out_dir), roi_subset=list(roi_subset), fast=fast,
                         task=task, device=str(settings.get("device", "cpu")), quiet=True,
                         nr_thr_resamp=int(threads))
        return [out_dir / f"{organ}.nii.gz" for organ in roi_subset]

    return segment


def _as_nifti(volume: Path, tmp: Path) -> Path:
    """``volume`` itself when TotalSegmentator reads its name as NIfTI; else a NIfTI copy
    in ``tmp``: the same bytes under such a name (``.NII.GZ``, or ``sub.01.nii.gz``,
    whose extra dot TotalSegmentator's rule, ``suffix == ".nii" or suffixes == [".nii",
    ".gz"]``, reads as a DICOM folder: a subject ID with a dot lost its mask), or the same
    voxels and geometry through SimpleITK (``.nrrd``, ``.mha``). The union below reads the
    volume's grid with nibabel. A header that declares more data than its file holds is
    the subject's error, not a MemoryError that fails every subject's job."""
    check_declared_size(volume)
    if volume.suffix == ".nii" or volume.suffixes == [".nii", ".gz"]:
        return volume
    (tmp / "input").mkdir()
    if volume.name.lower().endswith((".nii", ".nii.gz")):
        # the same bytes under the name TotalSegmentator reads as NIfTI (SimpleITK
        # rewriting it would keep the qform where nibabel reads the sform)
        copy = tmp / "input" / ("volume.nii.gz" if volume.name.lower().endswith(".gz")
                                else "volume.nii")
        shutil.copyfile(volume, copy)
        return copy
    import SimpleITK as sitk

    from mmpipe.io.written import check_nifti_written

    copy = tmp / "input" / "volume.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(volume)), str(copy))
    check_nifti_written(copy)  # the writer returns as usual from a short write
    return copy


def organ_name(path: Path) -> str:
    """The organ a segmenter's mask file is of (``kidney_left.nii.gz``: ``kidney_left``)."""
    return path.name.removesuffix(".gz").removesuffix(".nii")


def union_mask(organ_files: list[Path], volume: Path, out: Path) -> dict[str, int]:
    """Write the union of the organ masks on the volume's grid; returns each organ's voxel
    count (the union hides an organ found nowhere, which narrows the crop's box)."""
    import nibabel as nib

    ref = nib.load(str(volume))
    union = np.zeros(ref.shape[:3], dtype=np.uint8)
    voxels: dict[str, int] = {}
    for path in organ_files:
        if not path.is_file():
            raise InputError("the segmenter wrote no mask of this organ", path=path)
        organ = nib.load(str(path))
        if organ.shape[:3] != union.shape or not np.allclose(organ.affine, ref.affine,
                                                             atol=1e-3):
            raise InputError(f"mask on another grid than the volume {volume}", path=path)
        inside = np.asanyarray(organ.dataobj) > 0
        voxels[organ_name(path)] = int(inside.sum())
        union |= inside.astype(np.uint8)
    # the volume's own header (its qform and sform, with their codes): a reader that
    # reconciles the two (MONAI's, where the sform's scale disagrees with pixdim) then
    # reads the mask on the volume's grid; written with one affine as both, the mask of
    # such a volume was refused at encode time as "on another voxel grid"
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    header.extensions.clear()  # the volume's metadata (a dcm2niix sidecar: patient fields)
    img = type(ref)(union, None, header)
    nib.save(img, str(out))
    return voxels


def segment_cohort(cohort_dir: str | Path, modality: str, kind: str, settings: dict[str, Any],
                   roi_subset: list[str], out_dir: str | Path,
                   shard_dirs: list[str | Path] | None = None,
                   threads: int = 1, metadata: dict[str, str] | None = None,
                   task: str = DEFAULT_TASK) -> pl.DataFrame:
    """The ``segment`` rule: TotalSegmentator masks of ``modality``'s volumes (a
    ``dicom`` modality's volumes are its shards' NIfTI conversions, on whose grid the
    encoders read them). A dicom series of the other Modality than the task's (an MR
    series under ``total``, TotalSegmentator's CT model) is that subject's rejection; a
    series that says neither, and a NIfTI volume, which does not say, are segmented with
    the ``task`` the config gives."""
    from mmpipe.encode.inputs import gather_inputs

    segmenter = totalsegmentator_segmenter(settings, roi_subset, threads, task)  # fails early
    inputs = gather_inputs(cohort_dir, modality, kind, shard_dirs=shard_dirs)
    volumes: dict[str, str | InputError | None] = {
        i.subject_id: str(i.source) if i.status == "ok" else None for i in inputs}
    if kind == "dicom":
        for sid, series in _series_modalities(shard_dirs or []).items():
            if volumes.get(sid) is not None and (why := _other_modality(series, task)):
                volumes[sid] = InputError(why)
    return segment_modality(volumes, out_dir, segmenter, metadata)


def _other_modality(series: str, task: str) -> str:
    """Why a series of DICOM Modality ``series`` is not for ``task``'s model: a CT series
    under the MR task, an MR one under the CT task, and one of neither (PET, SPECT,
    ultrasound: no TotalSegmentator model, and either one's masks of it look like masks and
    are not the organs); ``""`` for the task's own and where the series does not say which
    (no Modality, ``OT``, a secondary capture ``SC`` of either)."""
    said = {"MRI": "MR"}.get(series.strip().upper(), series.strip().upper())
    if said in ("", "OT", "SC") or said == TASKS[task]:
        return ""
    if said not in TASKS.values():
        return (f"its series is {said} (DICOM Modality {series!r}), and TotalSegmentator's "
                f"models are for {' and '.join(sorted(TASKS.values()))}")
    other = next(t for t, m in TASKS.items() if m == said)
    return (f"its series is {said} (DICOM Modality {series!r}), and the mask's task "
            f"{task!r} is TotalSegmentator's {TASKS[task]} model: set mask.task to {other!r}")


def _series_modalities(shard_dirs: list[str | Path]) -> dict[str, str]:
    """The DICOM Modality of each subject's converted series, as its shard recorded it
    (``""`` where the series has none)."""
    import json

    from mmpipe.layout import SHARD_QC

    found = {}
    for d in shard_dirs:
        qc = pl.read_parquet(Path(d) / SHARD_QC)
        for row in qc.filter(pl.col("status") == "ok").iter_rows(named=True):
            found[row["subject_id"]] = str(json.loads(row["detail"]).get("modality") or "")
    return found


# what nnU-Net (TotalSegmentator's engine) and CUDA say when the machine fails under a
# subject: a worker process the OS killed for memory, a device fault. Read as the
# subject's, the subjects after it were rejected one by one in a table that looked finished
_MACHINE_FAILURES = ("background workers died", "background workers are no longer alive",
                     "cuda error", "cublas_status", "cudnn_status")


def _machine_failure(err: BaseException) -> bool:
    """A ``RuntimeError`` (what torch and nnU-Net raise), or one it was raised from, that
    says so: not a reader's error, whose text may be a path ("cuda error runs/s2.nii")."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, RuntimeError) and any(m in str(seen).lower()
                                                  for m in _MACHINE_FAILURES):
            return True
        seen = seen.__cause__
    return False


def segment_modality(volumes: dict[str, str | InputError | None], out_dir: str | Path,
                     segmenter: Segmenter, metadata: dict[str, str] | None = None
                     ) -> pl.DataFrame:
    """A mask per subject with a volume (``subject -> path``; None: no volume; an
    :class:`InputError`: a volume not to segment, and why) into ``out_dir``, written
    atomically, and ``masks.parquet`` saying for each subject its mask or why none."""
    from mmpipe.fsutil import atomic_dir

    with atomic_dir(out_dir) as tmp:
        return _segment_into(volumes, Path(tmp), segmenter, metadata)


def _segment_into(volumes: dict[str, str | InputError | None], out_dir: Path,
                  segmenter: Segmenter, metadata: dict[str, str] | None = None
                  ) -> pl.DataFrame:
    rows, failed = [], 0
    for sid, path in volumes.items():
        if path is None:
            rows.append({"subject_id": sid, "mask": None, "status": "absent",
                         "reason": "no volume"})
            continue
        if isinstance(path, InputError):  # a volume the task's model is not for
            failed += 1
            log.warning("no mask for subject %r: %s", sid, path.reason)
            rows.append({"subject_id": sid, "mask": None, "status": "rejected",
                         "reason": f"not segmented: {path.reason}"})
            continue
        # an ID is not a file name: "site2/P7" named a folder that does not exist (the
        # subject lost its mask under a misleading reason) and "../x" one outside out_dir
        target = out_dir / f"{safe_name(sid)}.nii.gz"
        try:
            with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                volume = _as_nifti(Path(path), Path(tmp))
                organs = segmenter(volume, Path(tmp))
                voxels = union_mask(organs, volume, target)
        except Exception as err:  # one subject's failure is its own, whatever raised it
            if shared_cause(err) or _machine_failure(err):  # the machine's (TotalSegmentator
                note_subject(err, sid, path)  # on a small GPU, a full disk) or the
                raise                         # install's, not this subject's
            failed += 1
            reason = err.reason if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
            log.warning("no mask for subject %r: %s", sid, reason)
            target.unlink(missing_ok=True)
            rows.append({"subject_id": sid, "mask": None, "status": "rejected",
                         "reason": f"segmentation failed: {reason}"})
            continue
        found = json.dumps(voxels)
        missed = [organ for organ, n in voxels.items() if n == 0]
        if len(missed) == len(voxels):
            target.unlink()
            rows.append({"subject_id": sid, "mask": None, "status": "rejected",
                         "reason": "segmentation found none of the organs asked for",
                         "organ_voxels": found})
        else:
            # an organ found nowhere (a nephrectomy; a failed segmentation) narrows the
            # crop to the others', which the subject's features then carry: said, not
            # refused, as the store's note on the subject
            note = (f"segmentation found no {', '.join(missed)}: the mask is the other "
                    "organs'" if missed else "")
            if note:
                log.warning("subject %r: %s", sid, note)
            rows.append({"subject_id": sid, "mask": target.name, "status": "ok",
                         "reason": note, "organ_voxels": found})
    table = pl.DataFrame(rows, schema={"subject_id": pl.Utf8, "mask": pl.Utf8,
                                       "status": pl.Utf8, "reason": pl.Utf8,
                                       "organ_voxels": pl.Utf8})
    n_volumes = sum(p is not None for p in volumes.values())
    if n_volumes and not any(r["status"] == "ok" for r in rows):
        # every subject raised, or found none of the organs: a cause they share (no CUDA
        # device, a missing model, the organs of another body part or modality), not each
        # one's; masks of rejections only would look finished to every masked store
        shown = "; ".join(f"{r['subject_id']}: {r['reason']}" for r in rows
                          if r["status"] == "rejected")[:600]
        raise InputError(f"segmentation gave no mask for any of the {n_volumes} subjects "
                         f"with a volume ({failed} failed), so no masks are written ({shown})")
    # what the masks were made with (mmpipe.made_with): a hand-run encode checks it
    table.write_parquet(out_dir / MASKS_TABLE, **({"metadata": metadata} if metadata else {}))
    return table
