"""The ``brats`` adapter: the BraTS training data as downloaded (2019, 2020, 2021 layouts).

Layout under ``root``: one folder per case holding ``<case>_<seq>.nii.gz`` (or ``.nii``)
for the sequences ``t1``, ``t1ce``, ``t2``, ``flair`` and the tumour segmentation ``seg``:

- 2020 (``MICCAI_BraTS2020_TrainingData/``) and 2021 (``BraTS2021_Training_Data/``): the
  case folders directly under ``root``;
- 2019 (``MICCAI_BraTS_2019_Data_Training/``): under ``HGG/`` and ``LGG/``; the grade
  folder becomes the manifest column ``grade``.

A modality is named after its sequence (``t1``, ``t1ce``, ``t2``, ``flair``, all of
kind ``volume``); natural missingness is what exists. The segmentation is not a
modality: it becomes every sequence's mask (manifest ``<seq>_mask_path``,
:mod:`mmpipe.preprocess.masks`), which HAM's input needs (``slice_select:
largest_mask``: the axial slice with the largest tumour area).

Survival (HAM's task): the release's CSV, found in ``root`` or named by
``brats.survival_csv``: 2020 ``survival_info.csv`` (``Brats20ID``, ``Age``,
``Survival_days``, ``Extent_of_Resection``), 2019 ``survival_data.csv`` (``BraTS19ID``,
``Age``, ``Survival``, ``ResectionStatus``). 2021 ships none (its task is
segmentation). The label ``survival_class`` is the BraTS survival task's three classes,
short (< 10 months), mid (10-15) and long (> 15): ``short`` below ``brats.survival_days[0]``,
``long`` above ``brats.survival_days[1]``, ``mid`` between (both ends included). The
default ``[300, 450]`` counts 30-day months; set the edges for another convention. The
CSV's other columns (``Age``, the resection status) can be fields of a ``table``
modality.

What the releases are known to contain, and what the adapter does with it:

- A censored survival, ``ALIVE (361 days later)`` (2019 and 2020): alive after N days gives
  ``long`` when N is past the long edge (the class is then certain); otherwise the
  label is blank, with a QC row saying the class is unknown. Any other value that is
  not a number of days: blank, with a QC row naming it.
- A file of a case folder that does not follow ``<case>_<seq>.nii(.gz)`` (2020's case
  355 ships its segmentation as ``W39_1998.09.19_Segm.nii``) is skipped with a QC row
  naming it; that case then has no mask, and a recipe that needs one rejects it.
- Two files of one sequence (``.nii`` and ``.nii.gz``) reject that modality for the
  case, naming both, instead of choosing; two files of the segmentation leave the case
  without a mask, with a QC row.
- Cases without a CSV row are kept with a blank label (about a third of 2020's 369
  cases have no survival); CSV rows without a case folder are skipped with a QC row. A
  CSV none of whose rows names a case folder (2020's table beside 2021's
  ``BraTS2021_<n>`` folders) is refused: every label would be blank.
"""

from __future__ import annotations

import logging
import math
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
    config_path,
    dataset_root,
    folder_files,
    layout_modalities,
    modality_specs,
    refuse_label_sources,
)
from mmpipe.cohorts.manifest_files import ALL_SUBJECTS, SUBJECT
from mmpipe.cohorts.source_csv import read_source_csv
from mmpipe.errors import ConfigError, InputError
from mmpipe.preprocess.masks import mask_column

log = logging.getLogger(__name__)

SEQUENCES = ("t1", "t1ce", "t2", "flair")
SEGMENTATION = "seg"
GRADES = ("HGG", "LGG")
SURVIVAL_FILES = ("survival_info.csv", "survival_data.csv")
ID_COLUMNS = ("Brats20ID", "BraTS19ID", "BraTS18ID", "BraTS21ID", "BraTS_ID")
SURVIVAL_COLUMNS = ("Survival_days", "Survival")
LABEL = "survival_class"
CLASSES = ("short", "mid", "long")
DEFAULT_SURVIVAL_DAYS = (300.0, 450.0)
CENSORED = re.compile(r"^ALIVE\s*\((\d+(?:\.\d+)?)\s*days?\s+later\)$", re.IGNORECASE)
NIFTI = (".nii", ".nii.gz")


def _file_pattern(case: str) -> re.Pattern[str]:
    # in any case: `_T1.nii.gz` or `.NII.GZ` (which the readers take) had read as no file
    # of the sequence, to the benchmark missing by nature, and a case whose files were
    # all so named vanished as no case
    return re.compile(rf"^{re.escape(case)}_(?P<seq>t1|t1ce|t2|flair|seg)\.nii(\.gz)?$",
                      re.IGNORECASE)


def _is_case(folder: Path) -> bool:
    pattern = _file_pattern(folder.name)
    return folder.is_dir() and any(pattern.match(p.name) for p in folder.iterdir())


def _holds_nifti(folder: Path) -> bool:
    return any(p.name.lower().endswith(NIFTI) for p in folder.iterdir() if p.is_file())


def find_cases(root: Path) -> tuple[list[tuple[str, Path, str | None]], list[Path]]:
    """(case, folder, grade) for every case folder under ``root`` or under its
    ``HGG/`` / ``LGG/`` folders (2019), in folder order (2019: HGG's, then LGG's); and
    the folders there that are not a case (none of their files is named after the
    folder: a case folder renamed ``<case> (1)`` by a second download): every folder
    under ``HGG/`` and ``LGG/``, and a folder under ``root`` that holds NIfTI files or a
    case folder (an archive extracted into ``<case>/<case>/``)."""
    cases, others = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in GRADES:
            for c in sorted(p for p in folder.iterdir() if p.is_dir()):
                (cases.append((c.name, c, folder.name)) if _is_case(c) else others.append(c))
        elif _is_case(folder):
            cases.append((folder.name, folder, None))
        elif _holds_nifti(folder) or any(_is_case(p) for p in folder.iterdir()):
            others.append(folder)
    seen: dict[str, Path] = {}
    for case, folder, _ in cases:
        if case in seen:
            raise InputError(f"case {case!r} has two folders: {seen[case]} and {folder}",
                             path=root)
        seen[case] = folder
    if not cases:
        raise InputError("no BraTS case folder (<case>/<case>_t1.nii.gz, ...) here, nor "
                         "under HGG/ or LGG/ (the 2019-2021 layouts; 2023's "
                         "BraTS-GLI-<id>-t1n.nii.gz naming is not supported)", path=root)
    return cases, others


def scan_case(case: str, folder: Path, sequences: list[str]
              ) -> tuple[dict[str, list[Path]], list[QCRecord]]:
    """A case's files per sequence (and ``seg``), and QC rows of the files skipped (one
    per configured sequence: which one a stray file belonged to is unknown, and a
    segmentation is every sequence's mask). A folder named as a sequence's file is
    listed with its files, for the verdict to reject it by name."""
    pattern = _file_pattern(case)
    files: dict[str, list[Path]] = defaultdict(list)
    qc = []
    named = [p for p in folder.iterdir() if p.is_dir() and pattern.match(p.name)]
    for path in sorted([*folder_files(folder), *named]):
        m = pattern.match(path.name)
        if m is None:
            qc += [QCRecord(case, seq, SKIPPED, f"file {path.name} in the case folder skipped: "
                            f"its name does not follow {case}_<t1|t1ce|t2|flair|seg>.nii(.gz)",
                            str(path)) for seq in sequences]
        else:
            files[m["seq"].lower()].append(path)
    return files, qc


def survival_class(value: Any, edges: tuple[float, float]) -> tuple[str | None, str | None]:
    """(class, why it is blank) of one survival cell."""
    if value is None or not str(value).strip():
        return None, None
    text = str(value).strip()
    try:
        days = float(text)
    except ValueError:
        m = CENSORED.match(text)
        if m is None:
            return None, f"survival {text!r} is not a number of days"
        alive = float(m.group(1))
        if alive > edges[1]:
            return "long", None
        return None, (f"survival {text!r}: censored at {alive:g} days, not past the long "
                      f"edge ({edges[1]:g} days), so its class is unknown")
    if not math.isfinite(days) or days < 0:  # float() reads "inf" and "1e999" too
        return None, f"survival {text!r} is not a number of days"
    if days < edges[0]:
        return "short", None
    return ("long", None) if days > edges[1] else ("mid", None)


def _survival_edges(cfg: dict) -> tuple[float, float]:
    edges = cfg.get("survival_days", DEFAULT_SURVIVAL_DAYS)
    try:
        lo, hi = (float(e) for e in edges)
    except (TypeError, ValueError):
        raise ConfigError(f"brats.survival_days must be two numbers of days, got {edges!r}") from None
    if not 0 < lo < hi:
        raise ConfigError(f"brats.survival_days must be increasing and positive, got {edges!r}")
    return lo, hi


def read_survival(path: Path) -> tuple[pl.DataFrame, str, str, list[int]]:
    """The survival CSV as text columns, with its ID and survival column names, and the
    numbers of the data rows (1-based, the header not counted) without a case ID that
    hold values (left out: no case owns them). A row blank in every column (Excel's
    trailing ``,,,``) is left out silently: kept, two of them had stopped the build as
    "case(s) listed twice: [None]"."""
    if not path.is_file():
        raise InputError("BraTS survival CSV not found", path=path)
    table = read_source_csv(path, all_text=True)
    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    surv_col = next((c for c in SURVIVAL_COLUMNS if c in table.columns), None)
    if id_col is None or surv_col is None:
        raise InputError(f"needs a case ID column (one of {list(ID_COLUMNS)}) and a survival "
                         f"column (one of {list(SURVIVAL_COLUMNS)}); has {table.columns}",
                         path=path)
    table = table.with_columns(pl.col(id_col).str.strip_chars())
    nameless = table[id_col].fill_null("") == ""
    held = table.select(pl.any_horizontal(pl.all().str.strip_chars().fill_null("") != ""))
    unowned = [i + 1 for i in (nameless & held.to_series()).arg_true().to_list()]
    table = table.filter(~nameless)
    dup = table.filter(pl.col(id_col).is_duplicated())[id_col].unique().sort().to_list()
    if dup:
        raise InputError(f"case(s) listed twice: {dup[:20]}", path=path)
    return table, id_col, surv_col, unowned


def _survival_path(root: Path, cfg: dict, base_dir: Path) -> Path | None:
    if cfg.get("survival_csv"):
        return config_path(cfg["survival_csv"], base_dir)
    found = [root / name for name in SURVIVAL_FILES if (root / name).is_file()]
    return found[0] if found else None


def check_config(cohort_cfg: dict) -> None:
    """What the layout fixes: the one label the adapter derives, the sequences as
    volumes, the survival bins; a :class:`ConfigError` on the first thing wrong."""
    labels = cohort_labels(cohort_cfg)
    if labels != [LABEL]:
        raise ConfigError(f"brats labels {labels}: the adapter derives [{LABEL!r}] "
                          "(from the survival CSV)")
    _survival_edges(cohort_cfg.get("brats") or {})
    specs = modality_specs(cohort_cfg)
    layout_modalities(specs, "brats", SEQUENCES, "volume", "the survival CSV")
    refuse_label_sources("brats", specs, labels, {LABEL: SURVIVAL_COLUMNS})


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    root = dataset_root(cohort_cfg, base_dir, "brats", "the case folders (<case>/<case>_t1.nii.gz"
                        ", ...) and the survival CSV")
    cfg = cohort_cfg.get("brats") or {}
    labels = cohort_labels(cohort_cfg)
    edges = _survival_edges(cfg)
    specs = modality_specs(cohort_cfg)
    sequences = [name for name, spec in specs.items() if not spec.is_table]

    # the layout first: a 2023 download has no survival CSV either, and was told of the
    # CSV where its naming is what mmpipe does not read
    cases, others = find_cases(root)
    survival_path = _survival_path(root, cfg, base_dir)
    if survival_path is None:
        raise InputError(f"no survival CSV ({' or '.join(SURVIVAL_FILES)}) in the root, and "
                         "brats.survival_csv names none: the survival label needs it (BraTS "
                         "2021 ships no survival data)", path=root)
    table, id_col, surv_col, unowned = read_survival(survival_path)
    fields = list(dict.fromkeys(f for s in specs.values() for f in s.fields))
    unknown = [f for f in fields if f not in table.columns]
    if unknown:
        raise ConfigError(f"{survival_path}: column(s) {unknown} not in the survival CSV "
                          f"(has {table.columns})")
    rows = {r[id_col]: r for r in table.iter_rows(named=True)}
    ids = [case for case, _, _ in cases]
    if rows and not set(rows) & set(ids):
        # a release's table beside another release's folders (2020's Brats20ID against
        # 2021's BraTS2021_<n> folders): every label would be blank and the split empty
        raise InputError(f"no survival row names a case folder: the CSV's {id_col} "
                         f"(e.g. {sorted(rows)[0]!r}) against {len(ids)} case folder(s) "
                         f"(e.g. {ids[0]!r}); the CSV belongs to another release, or its "
                         "IDs need mapping to these folders", path=survival_path)
    frame: dict[str, list[Any]] = {SUBJECT: ids, "grade": [g for _, _, g in cases]}
    qc: list[QCRecord] = []
    # a folder that is not a case vanished without a word (its survival row, if any, was
    # "no case folder"); one row per configured sequence, as a stray file's
    source_qc: list[QCRecord] = [
        QCRecord(ALL_SUBJECTS, seq, SKIPPED, f"folder {folder.name!r} skipped: not a case "
                 f"(no file {folder.name}_<t1|t1ce|t2|flair|seg>.nii(.gz) in it)", str(folder))
        for folder in others for seq in sequences]
    source_qc += [QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED,
                           f"data row {row} of {survival_path.name} (the header not counted) "
                           "holds values but no case ID: skipped", str(survival_path))
                  for row in unowned]
    per_case = {}
    for case, folder, _ in cases:
        files, skipped = scan_case(case, folder, sequences)
        per_case[case] = files
        source_qc += skipped
    masks: list[str | None] = []
    for case in ids:
        segs = per_case[case].get(SEGMENTATION, [])
        # a link to nothing (a DataLad mask not fetched) stays, for the manifest to say so
        masks.append(str(segs[0]) if len(segs) == 1 and not segs[0].is_dir() else None)
        if len(segs) > 1:
            source_qc += [QCRecord(case, seq, SKIPPED, f"{len(segs)} segmentation files, so "
                                   "no mask: " + ", ".join(p.name for p in segs))
                          for seq in sequences]
        elif segs and segs[0].is_dir():
            source_qc += [QCRecord(case, seq, SKIPPED, f"{segs[0].name} is a folder, not a "
                                   "NIfTI file, so no mask", str(segs[0])) for seq in sequences]
    for seq in sequences:
        paths: list[str | None] = []
        for case in ids:
            found = per_case[case].get(seq, [])
            folders = [p for p in found if p.is_dir()]
            paths.append(str(found[0]) if len(found) == 1 and not folders else None)
            if not found:
                qc.append(QCRecord(case, seq, ABSENT, f"no {case}_{seq}.nii(.gz)"))
            elif folders:
                qc.append(QCRecord(case, seq, REJECTED, f"{folders[0].name} is a folder, not "
                                   "a NIfTI file (an archive extracted into it?)",
                                   str(folders[0])))
            elif len(found) > 1:
                qc.append(QCRecord(case, seq, REJECTED, f"{len(found)} files of {seq}: "
                                   + ", ".join(p.name for p in found),
                                   str(found[0].parent)))
        frame[specs[seq].column] = paths
        frame[mask_column(seq)] = masks
    classes = []
    for case in ids:
        value = rows.get(case, {}).get(surv_col)
        label, why = survival_class(value, edges)
        # a case without a row or a value (about a third of 2020's 369) was "label
        # missing", no cause given, where each other blank label says why
        if case not in rows:
            why = f"no row in {survival_path.name}"
        elif label is None and why is None:
            why = f"{surv_col} blank in {survival_path.name}"
        if why:
            source_qc.append(QCRecord(case, LABEL_QC, ABSENT, why, str(survival_path)))
        classes.append(label)
    frame[LABEL] = classes
    for f in fields:
        frame[f] = [rows.get(case, {}).get(f) for case in ids]
    known = set(ids)
    for case in rows:
        if case not in known:
            source_qc.append(QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED, f"survival row of {case}"
                                      " skipped: no case folder", str(survival_path)))
    no_row = [case for case in ids if case not in rows]
    if no_row:
        log.info("brats: %d of %d case(s) have no survival row (label blank)", len(no_row),
                 len(ids))
    read_columns = {id_col, surv_col, *fields}
    return AdapterOutput(
        frame=pl.DataFrame(frame, schema_overrides={"grade": pl.Utf8, LABEL: pl.Utf8}),
        modalities=specs,
        labels=labels,
        qc=qc,
        source=str(survival_path),
        root=str(root),
        extra_columns=["grade", *(mask_column(s) for s in sequences)],
        unused_columns=[(survival_path.name, c) for c in table.columns if c not in read_columns],
        source_qc=source_qc,
    )
