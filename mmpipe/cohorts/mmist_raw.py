"""The ``mmist_ccrcc_raw`` adapter: MMIST-ccRCC from its raw images, to rebuild the
features the release ships (:mod:`mmpipe.cohorts.mmist` reads those).

Layout under ``root``: the release's tables (``clinical+genomic_split.csv``,
``CT_patientfiles.csv``, ``MRI_patientfiles.csv``, ``WSI_patientfiles.csv``, as in
:mod:`mmpipe.cohorts.mmist`) beside the images as their archives download them:

- CT and MRI (kind ``dicom``): the DICOM series folders of TCIA's NBIA Data Retriever
  (descriptive names), ``Radiology-TCGA/TCGA-KIRC/<case>/<MM-DD-YYYY-...-study>/<n.000000-series>/``
  and ``Radiology-CPTAC/CPTAC-CCRCC/<case>/...``. The series used per patient is the
  thesis's choice, ``chosen_exam`` of ``CT_patientfiles.csv`` / ``MRI_patientfiles.csv``
  (a path below ``root``); the DICOM reader then checks it is one series
  (``preprocess.dicom``).
- WSI (kind ``slide``): the TCGA-KIRC (GDC) and CPTAC-CCRCC (TCIA) slides anywhere under
  ``mmist_ccrcc_raw.slides`` (default ``Pathology/``). ``WSI_patientfiles.csv`` names each
  patient's slide by its feature file, ``<slide>.npz``; the slide is ``<slide>.svs`` (or
  another slide format), or GDC's ``<slide>.<file UUID>.svs``. Two files for one slide
  reject the modality, naming both.

The clinical and genomic tables, the labels and the authors' split (column
``authors_split``) are read as :mod:`mmpipe.cohorts.mmist` reads them. The thesis's
preprocessing is the experiment's (``experiments/mmare_mmist_raw.yaml``): CT window
[-79, 304] HU, a kidney crop from TotalSegmentator masks, MedicalNet's recipe.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import polars as pl

from mmpipe.cohorts.csv_adapter import check_path
from mmpipe.cohorts.manifest import (
    ABSENT,
    REJECTED,
    AdapterOutput,
    QCRecord,
    cohort_labels,
    dataset_root,
    layout_modalities,
    modality_specs,
)
from mmpipe.cohorts.manifest_files import SUBJECT
from mmpipe.cohorts.mmist import (
    AUTHORS_SPLIT,
    CLINICAL_CSV,
    ID_COLUMN,
    clinical_frame,
    labels_outside_their_codes,
    normal_slides_qc,
    patients_not_in_the_table,
    read_chosen,
    spelt_otherwise,
)
from mmpipe.errors import InputError
from mmpipe.io.walk import walk_files

log = logging.getLogger(__name__)

KINDS = {"ct": "dicom", "mri": "dicom", "wsi": "slide"}
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn")


def slide_index(folder: Path) -> dict[str, list[Path]]:
    """Slide files under ``folder`` by the name the release's table gives them: the file
    name without its suffix, and without GDC's ``.<uuid>`` before it."""
    found: dict[str, list[Path]] = {}
    # linked folders too: rglob went past them, and their slides read as missing. A slide
    # not fetched (a link to nothing) is listed, and the manifest rejects it by name
    try:
        files, not_fetched = walk_files(folder)
    except OSError as err:
        raise InputError(f"cannot list a folder of the slides: {err.strerror or err}",
                         path=err.filename or folder) from err
    for path in sorted(files + not_fetched):
        if path.suffix.lower() not in SLIDE_SUFFIXES:
            continue
        stem = path.name[: -len(path.suffix)].split(".")[0]
        found.setdefault(stem, []).append(path)
    return found


def check_config(cohort_cfg: dict) -> None:
    """What the layout fixes: the release's modalities, each of its kind; a
    :class:`ConfigError` on the first thing wrong. The labels are the clinical table's
    columns, checked against it by :func:`adapt`."""
    cohort_labels(cohort_cfg)
    layout_modalities(modality_specs(cohort_cfg), "mmist_ccrcc_raw", KINDS, KINDS,
                      CLINICAL_CSV)


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    root = dataset_root(cohort_cfg, base_dir, "mmist_ccrcc_raw",
                        "the MMIST-ccRCC tables beside Radiology-TCGA/, Radiology-CPTAC/, "
                        "Pathology/")
    cfg = cohort_cfg.get("mmist_ccrcc_raw") or {}
    labels = cohort_labels(cohort_cfg)
    specs = modality_specs(cohort_cfg)
    frame, label_qc = labels_outside_their_codes(clinical_frame(root, labels, specs), labels)
    ids = frame[SUBJECT].to_list()
    slides = None
    if "wsi" in specs:
        folder = root / cfg.get("slides", "Pathology")
        if not folder.is_dir():
            raise InputError("slide folder not found (mmist_ccrcc_raw.slides)", path=folder)
        slides = slide_index(folder)

    qc: list[QCRecord] = []
    source_qc: list[QCRecord] = label_qc
    cohort_ids = set(ids)
    for name, spec in specs.items():
        if spec.is_table:
            continue
        chosen = read_chosen(root, name)
        # a patient spelt otherwise there read "no exam", as missing by nature, silently
        source_qc += patients_not_in_the_table(root, name, chosen[ID_COLUMN].to_list(),
                                               cohort_ids)
        exam = dict(zip(chosen[ID_COLUMN], chosen["chosen_exam"], strict=True))
        misspelt = spelt_otherwise(root, name, exam, cohort_ids)
        paths: list[str | None] = []
        for sid in ids:
            if sid in misspelt:
                paths.append(None)
                qc.append(misspelt[sid])
                continue
            path, status, why = _resolve(name, exam.get(sid), root, slides, sid)
            paths.append(path)
            if path is None:
                qc.append(QCRecord(sid, name, status, why, _where(name, exam.get(sid), root)))
        if name == "wsi":  # encoded from the raw slides, as silently as the features were
            source_qc += normal_slides_qc(root, name, ids, paths)
        frame = frame.with_columns(pl.Series(spec.column, paths, dtype=pl.Utf8))
    return AdapterOutput(frame=frame, modalities=specs, labels=labels, qc=qc,
                         source=str(root / CLINICAL_CSV), root=str(root),
                         extra_columns=[AUTHORS_SPLIT], source_qc=source_qc)


def _where(modality: str, exam: str | None, root: Path) -> str | None:
    """The QC row's path of a chosen exam: its folder under the download (the table's
    ``/Radiology-...`` read as a path was one at the filesystem's root), or the slide's
    name as the table gives it."""
    if exam is None or not exam.strip() or modality == "wsi":
        return exam
    return str(root / exam.strip().lstrip("/"))


def _resolve(modality: str, exam: str | None, root: Path,
             slides: dict[str, list[Path]] | None, sid: str) -> tuple[str | None, str, str]:
    """(path, QC status, reason) of patient ``sid``'s chosen exam. An exam of another
    patient (a slide named for another, a series under another's folder: an edited or
    mistyped table) is rejected: it was read as this patient's, with nothing said."""
    if exam is None or not exam.strip():
        return None, ABSENT, f"no {modality} exam for this patient"
    exam = exam.strip()
    if modality == "wsi":
        stem = exam.removesuffix(".npz")
        if stem != sid and not stem.startswith(f"{sid}-"):
            return None, REJECTED, (f"the chosen slide {exam!r} is not this patient's: its "
                                    f"name does not start with {sid}")
        found = (slides or {}).get(stem, [])
        if not found:
            return None, REJECTED, f"no slide file {stem}.* under the slide folder"
        if len(found) > 1:
            return None, REJECTED, "two files of the slide: " + ", ".join(str(p) for p in found)
        return str(found[0]), "", ""
    folder = Path(_where(modality, exam, root))
    # by the path as written ('..' steps): a Radiology-* folder linked in from another
    # disk is the download's own
    if not Path(os.path.normpath(folder)).is_relative_to(os.path.normpath(root)):
        return None, REJECTED, f"the chosen series {exam!r} leads outside the download"
    if sid not in Path(exam).parts:
        return None, REJECTED, (f"the chosen series {exam!r} is not this patient's: it lies "
                                f"in no folder named {sid}")
    try:
        if not folder.is_dir():
            return None, REJECTED, "the chosen series folder is not in the download"
        # an empty folder counts as no series, as the csv adapter's dicom check says
        why = check_path(folder, "dicom")
    except OSError as e:  # a name too long: this patient's, not the cohort's
        why = f"cannot be read: {e.strerror or e}"
    if why is not None:
        return None, REJECTED, f"the chosen series folder: {why}"
    return str(folder), "", ""
