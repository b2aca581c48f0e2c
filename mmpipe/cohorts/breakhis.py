"""The ``breakhis`` adapter: BreakHis (breast cancer histopathology) as downloaded.

Layout under ``root`` (the extracted ``BreaKHis_v1/``; its ``histology_slides/breast/``
is found below it)::

    histology_slides/breast/{benign,malignant}/SOB/<type>/SOB_<B|M>_<T>_<patient>/<mag>X/
        SOB_<B|M>_<T>-<patient>-<mag>-<n>.png        (700 x 460 RGB PNG)

with the tumour types ``adenosis``, ``fibroadenoma``, ``phyllodes_tumor``,
``tubular_adenoma`` (benign) and ``ductal_carcinoma``, ``lobular_carcinoma``,
``mucinous_carcinoma``, ``papillary_carcinoma`` (malignant), and the magnifications
40, 100, 200 and 400. As in HyperMM, the four magnifications are the modalities
(``mag40``, ``mag100``, ``mag200``, ``mag400``, kind ``image``): a subject is a patient,
each modality the folder of the patient's fields at that magnification (a set, pooled by
the encoder), so splits are at the patient level. Natural missingness: a magnification
folder that is absent or holds no image.

Labels (config ``labels``): ``malignant`` (``benign`` / ``malignant``, from the folder)
and ``tumour_type`` (the type folder). What the adapter does with what it finds:

- A patient ID under two type folders (the release's ``14-13412``, under ductal and
  lobular carcinoma) is a subject a folder, ``<patient>_<type code>`` (``14-13412_DC``,
  ``14-13412_LC``), each labelled and imaged by its own folder, as BreakHis counts its
  82 patients; since they are one patient's tissue (their fields may be the same
  pictures), the ID is their ``split_group``, and each gets a ``two_types`` QC row.
- A folder of one magnification holding an image named for another (``-100-`` in
  ``40X/``) rejects that modality for the patient, naming the file, rather than mixing
  magnifications; files that are not images are not read.
- A folder holding an image named for another patient, class or tumour type rejects
  that modality for the patient, naming the file.
- A folder holding an image whose name does not follow the release's
  ``SOB_<B|M>_<T>-<patient>-<mag>-<n>`` (a copy, ``-001 (1).png``) rejects that modality
  for the patient, naming the file: it would be pooled as a field of its own. Hidden
  files (macOS's ``._`` metadata) are not images. So does one field in two files
  (``-001.png`` beside ``-001.tif``).
- A folder under ``{benign,malignant}/SOB/`` that is no tumour type of its class (a copy,
  ``ductal_carcinoma (1)``), and one in a patient folder that is no magnification, are not
  read, each with a QC row.
- A patient folder whose name does not follow ``SOB_<B|M>_<T>_<patient>``, or whose
  class letter or type code disagrees with its benign/malignant or type folder, is
  skipped with a QC row.
- Patient IDs that differ only in letters after the number (``14-22549AB``,
  ``14-22549CD``, ``14-22549G``: a dozen or so of the release's folders share an
  accession number with another) stay separate subjects, as the dataset's 82 patients
  are its folders; each gets a QC row (``shared_accession``) and the build a warning,
  and since they may be one patient's tissue, the accession number is their
  ``split_group`` (:mod:`mmpipe.cohorts.split_groups`): every split keeps them in one
  part.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.cohorts.manifest import (
    ABSENT,
    LABEL_QC,
    REJECTED,
    SKIPPED,
    AdapterOutput,
    QCRecord,
    cohort_labels,
    dataset_root,
    layout_modalities,
    modality_specs,
)
from mmpipe.cohorts.manifest_files import ALL_SUBJECTS, SUBJECT
from mmpipe.cohorts.split_groups import SPLIT_GROUP
from mmpipe.errors import ConfigError, InputError
from mmpipe.io.images import entries_not_read, image_files

log = logging.getLogger(__name__)

TYPES = {"benign": ("adenosis", "fibroadenoma", "phyllodes_tumor", "tubular_adenoma"),
         "malignant": ("ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma",
                       "papillary_carcinoma")}
# the type code in the folder and file names (the release's README)
TYPE_CODES = {"adenosis": "A", "fibroadenoma": "F", "phyllodes_tumor": "PT",
              "tubular_adenoma": "TA", "ductal_carcinoma": "DC", "lobular_carcinoma": "LC",
              "mucinous_carcinoma": "MC", "papillary_carcinoma": "PC"}
MAGNIFICATIONS = {"mag40": 40, "mag100": 100, "mag200": 200, "mag400": 400}
LABELS = ("malignant", "tumour_type")
_MAG_FOLDERS = {f"{v}X" for v in MAGNIFICATIONS.values()}
PATIENT_FOLDER = re.compile(r"^SOB_(?P<cls>[BM])_(?P<type>[A-Z]+)_(?P<patient>.+)$")
IMAGE_NAME = re.compile(r"^SOB_(?P<cls>[BM])_(?P<type>[A-Z]+)-(?P<patient>.+)-(?P<mag>\d+)-"
                        r"(?P<n>\d+)\.[A-Za-z]+$")
# a patient ID's letters after its number (14-22549AB, 14-22549CD, 14-22549G)
ACCESSION = re.compile(r"^(?P<number>.*?\d)[A-Z]*$")
SHARED_ACCESSION, TWO_TYPES = "shared_accession", "two_types"


def breast_folder(root: Path) -> Path:
    """``histology_slides/breast`` under ``root`` (or ``root`` itself)."""
    for candidate in (root / "histology_slides" / "breast", root / "breast", root):
        if (candidate / "benign").is_dir() or (candidate / "malignant").is_dir():
            return candidate
    raise InputError("no histology_slides/breast/{benign,malignant}/ here", path=root)


def find_patients(breast: Path) -> tuple[dict[str, list[tuple[str, str, Path]]], list[QCRecord]]:
    """Patient ID -> [(class, type, folder)] (two entries: the ID is under two types),
    and QC rows of the folders skipped."""
    found: dict[str, list[tuple[str, str, Path]]] = defaultdict(list)
    qc = []
    # the release holds both classes and all eight types: one missing (an extraction cut
    # short, a folder renamed) made a one-class task or lost a type without a word
    missing = [f"{cls}/SOB/{tumour}" for cls, types in TYPES.items() for tumour in types
               if not (breast / cls / "SOB" / tumour).is_dir()]
    if missing:
        present = sorted(f"{p.parent.parent.name}/SOB/{p.name}"
                         for cls in TYPES for p in (breast / cls / "SOB").glob("*")
                         if p.is_dir())
        unknown = [p for p in present if p not in
                   {f"{c}/SOB/{t}" for c, types in TYPES.items() for t in types}]
        raise InputError(f"tumour type folder(s) {missing} missing: BreakHis has "
                         f"{sum(map(len, TYPES.values()))} (an extraction cut short?)"
                         + (f"; folders of no known type: {unknown}" if unknown else ""),
                         path=breast)
    for cls, types in TYPES.items():
        # a copy of a type folder ("ductal_carcinoma (1)") holds patients no label names
        qc += [QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED, f"{cls}/SOB/{p.name} is not one of "
                        f"BreakHis's {cls} tumour types {list(types)}: its patients are not "
                        "read", str(p))
               for p in sorted((breast / cls / "SOB").iterdir())
               if p.is_dir() and p.name not in types]
        for tumour in types:
            folder = breast / cls / "SOB" / tumour
            for patient_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                m = PATIENT_FOLDER.match(patient_dir.name)
                why = ("does not follow SOB_<B|M>_<T>_<patient>" if m is None else
                       f"class letter {m['cls']} in the {cls}/ folder"
                       if m["cls"] != cls[0].upper() else
                       f"type code {m['type']} in the {tumour}/ folder (whose code is "
                       f"{TYPE_CODES[tumour]})" if m["type"] != TYPE_CODES[tumour] else None)
                if why is not None:
                    qc.append(QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED,
                                       f"patient folder {patient_dir.name} skipped: its name {why}",
                                       str(patient_dir)))
                    continue
                found[m["patient"]].append((cls, tumour, patient_dir))
                qc += [QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED, f"a folder in "
                                f"{patient_dir.name}/ that is no magnification of BreakHis "
                                f"({', '.join(f'{v}X' for v in MAGNIFICATIONS.values())}): "
                                "not read", str(extra))
                       for extra in sorted(patient_dir.iterdir())
                       if extra.is_dir() and extra.name.upper() not in _MAG_FOLDERS]
    if not found:
        raise InputError("no patient folder under {benign,malignant}/SOB/<type>/", path=breast)
    return found, qc


def _magnification_set(patient_dir: Path, modality: str) -> tuple[str | None, QCRecord | None]:
    """(the folder of the set, or None with the QC row saying why)."""
    mag = MAGNIFICATIONS[modality]
    folder = patient_dir / f"{mag}X"
    if not folder.is_dir():
        # a 40x/ of a copy that changed the case: counted as missing by nature, it made
        # the magnification absent for every patient, without a word
        other_case = sorted(p.name for p in patient_dir.iterdir()
                            if p.is_dir() and p.name.upper() == f"{mag}X")
        if other_case:
            return None, QCRecord("", modality, REJECTED, f"no {mag}X/ folder, but "
                                  f"{other_case[0]}/: BreakHis names it {mag}X/ (rename it)",
                                  str(patient_dir / other_case[0]))
        return None, QCRecord("", modality, ABSENT, f"no {mag}X/ folder")
    try:
        images = image_files(folder)
    except InputError as err:  # a folder it may not list: this patient's set alone
        return None, QCRecord("", modality, REJECTED, err.reason, str(folder))
    if not images:
        # images a level too deep (100X/100X/, a botched copy) are the set, not missing
        # by nature, which the benchmark measures (a Thumbs.db beside them is no image)
        others = [e for e in entries_not_read(folder) if e.endswith("/")]
        if others:
            return None, QCRecord("", modality, REJECTED, f"{mag}X/ holds no image it "
                                  f"reads, but {', '.join(others[:5])}: BreakHis keeps "
                                  f"the images in {mag}X/ itself", str(folder))
        return None, QCRecord("", modality, ABSENT, f"{mag}X/ holds no image")
    # a copy ("-001 (1).png") or a renamed field would be pooled as another field
    unnamed = [p.name for p in images if IMAGE_NAME.match(p.name) is None]
    if unnamed:
        return None, QCRecord("", modality, REJECTED, f"{mag}X/ holds image(s) not named "
                              "SOB_<B|M>_<T>-<patient>-<mag>-<n>: "
                              f"{', '.join(unnamed[:5])}", str(folder))
    other = [p.name for p in images
             if (m := IMAGE_NAME.match(p.name)) is not None and int(m["mag"]) != mag]
    if other:
        return None, QCRecord("", modality, REJECTED, f"{mag}X/ holds image(s) of another "
                              f"magnification: {', '.join(other[:5])}", str(folder))
    # a field named for another patient, class or tumour type was pooled into this set
    own = PATIENT_FOLDER.match(patient_dir.name)
    foreign = [p.name for p in images if (m := IMAGE_NAME.match(p.name)) is not None
               and (m["patient"], m["cls"], m["type"]) != (own["patient"], own["cls"],
                                                           own["type"])]
    if foreign:
        return None, QCRecord("", modality, REJECTED, f"{mag}X/ holds image(s) named for "
                              f"another patient or tumour type: {', '.join(foreign[:5])}",
                              str(folder))
    # one field in two files (-001.png beside -001.tif) was pooled twice
    by_field: dict[int, list[str]] = defaultdict(list)
    for image in images:
        by_field[int(IMAGE_NAME.match(image.name)["n"])].append(image.name)
    twice = [names for names in by_field.values() if len(names) > 1]
    if twice:
        return None, QCRecord("", modality, REJECTED, f"{mag}X/ holds one field in several "
                              "files: " + "; ".join(", ".join(sorted(n)) for n in twice[:3]),
                              str(folder))
    return str(folder), None


def _a_subject_a_folder(patients: dict[str, list[tuple[str, str, Path]]]
                        ) -> tuple[dict[str, tuple[str, str, Path]], dict[str, str],
                                   list[QCRecord]]:
    """Each patient folder as a subject: ``<patient>`` for an ID under one type folder,
    ``<patient>_<type code>`` for each of an ID's folders under two types (the release's
    14-13412, under ductal and lobular carcinoma: BreakHis counts its 82 patients by the
    folders). Returns the subjects ({subject: (class, type, folder)}), the patient ID of
    those sharing one (they may be one patient's tissue, the same fields even, so every
    split keeps them in one part), and a QC row for each of those."""
    folders: dict[str, tuple[str, str, Path]] = {}
    patient_of: dict[str, str] = {}
    qc: list[QCRecord] = []
    for pid, entries in patients.items():
        if len(entries) == 1:
            folders[pid] = entries[0]
            continue
        named = {f"{pid}_{TYPE_CODES[entry[1]]}": entry for entry in entries}
        folders.update(named)
        for sid, (_, _, folder) in named.items():
            patient_of[sid] = pid
            qc.append(QCRecord(sid, LABEL_QC, TWO_TYPES, f"patient ID {pid} is under "
                               f"{len(entries)} type folders: {folder.name} is subject "
                               f"{sid}, labelled by its folder, kept in one part of every "
                               f"split with {', '.join(n for n in named if n != sid)}",
                               str(folder)))
    if patient_of:
        twice = sorted(set(patient_of.values()))
        log.warning("breakhis: %d patient ID(s) under two type folders (%s): each folder is "
                    "a subject, kept in one part of every split", len(twice), ", ".join(twice))
    return folders, patient_of, qc


def _shared_accessions(subjects_of: dict[str, list[str]]
                       ) -> tuple[dict[str, str], list[QCRecord]]:
    """The split group of each subject (``subjects_of``: patient ID -> its subjects) whose
    patient ID differs from another's only in the letters after the number (14-22549AB,
    14-22549CD: the accession number), and QC rows saying so: each stays its own subject,
    as the dataset counts its 82 patients, but may be one patient's tissue, so every
    split keeps them in one part."""
    by_number: dict[str, list[str]] = defaultdict(list)
    for pid in subjects_of:
        m = ACCESSION.match(pid)
        by_number[m["number"] if m else pid].append(pid)
    shared = {n: sorted(ids) for n, ids in by_number.items() if len(ids) > 1}
    if shared:
        log.warning("breakhis: %d accession number(s) name several patient folders (%s): "
                    "each folder is a subject, as BreakHis counts its patients, kept in "
                    "one part of every split", len(shared),
                    "; ".join(f"{n}: {', '.join(ids)}" for n, ids in sorted(shared.items())))
    groups = {sid: n for n, ids in shared.items() for pid in ids for sid in subjects_of[pid]}
    return groups, [QCRecord(sid, LABEL_QC, SHARED_ACCESSION,
                             f"patient {pid} shares accession number {n} with "
                             f"{', '.join(i for i in ids if i != pid)}: a subject of its own "
                             "(as BreakHis counts patients), possibly the same patient's "
                             f"tissue, kept in one part of every split (split_group {n})")
                    for n, ids in sorted(shared.items()) for pid in ids
                    for sid in subjects_of[pid]]


def check_config(cohort_cfg: dict) -> None:
    """What the layout fixes: the labels the adapter derives, the magnifications as image
    sets, no table; a :class:`ConfigError` on the first thing wrong."""
    labels = cohort_labels(cohort_cfg)
    unknown = [lab for lab in labels if lab not in LABELS]
    if unknown:
        raise ConfigError(f"breakhis labels {unknown}: the adapter derives {list(LABELS)}")
    specs = modality_specs(cohort_cfg)
    layout_modalities(specs, "breakhis", MAGNIFICATIONS, "image", "no table")
    if any(s.is_table for s in specs.values()):
        raise ConfigError("breakhis ships no table: its modalities are the magnifications")


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    root = dataset_root(cohort_cfg, base_dir, "breakhis",
                        "BreaKHis_v1/, holding histology_slides/breast/")
    labels = cohort_labels(cohort_cfg)
    specs = modality_specs(cohort_cfg)
    mags = list(specs)
    patients, source_qc = find_patients(breast_folder(root))
    folders, patient_of, said = _a_subject_a_folder(patients)
    subjects_of: dict[str, list[str]] = defaultdict(list)
    for sid in sorted(folders):
        subjects_of[patient_of.get(sid, sid)].append(sid)
    groups, shared = _shared_accessions(subjects_of)
    source_qc += shared + said
    # one patient's folders: the group of its accession number where it shares one
    groups.update({sid: groups.get(sid, pid) for sid, pid in patient_of.items()})
    ids = sorted(folders)
    frame: dict[str, list[Any]] = {SUBJECT: ids}
    qc: list[QCRecord] = []
    label_values = {"malignant": [folders[sid][0] for sid in ids],
                    "tumour_type": [folders[sid][1] for sid in ids]}
    frame[SPLIT_GROUP] = [groups.get(sid) for sid in ids]
    for mod in mags:
        paths: list[str | None] = []
        for sid in ids:
            path, rec = _magnification_set(folders[sid][2], mod)
            paths.append(path)
            if rec is not None:
                rec.subject_id = sid
                qc.append(rec)
        frame[specs[mod].column] = paths
    for lab in labels:
        frame[lab] = label_values[lab]
    log.info("breakhis: %d patients", len(ids))
    return AdapterOutput(
        frame=pl.DataFrame(frame, schema_overrides={lab: pl.Utf8 for lab in
                                                    [*labels, SPLIT_GROUP]}),
        modalities=specs,
        labels=labels,
        qc=qc,
        source=str(root),
        extra_columns=[SPLIT_GROUP],
        source_qc=source_qc,
    )
