"""The ``ixi`` adapter: the IXI brain MRI dataset as downloaded (brain-development.org).

Layout under ``root``, each tar extracted into a folder of its own name:

- ``IXI-T1/``, ``IXI-T2/``, ``IXI-PD/``, ``IXI-MRA/``: one NIfTI per subject and sequence,
  named ``IXI<ID>-<Site>-<n>-<SEQ>.nii.gz`` (``IXI002-Guys-0828-T1.nii.gz``; sites Guys,
  HH, IOP). A modality is named after its sequence: ``t1``, ``t2``, ``pd``, ``mra``, all
  of kind ``volume``. Natural missingness is what exists: a subject without a file in a
  folder has that modality absent.
- ``IXI.xls``: the demographics, sheet ``Table``: ``IXI_ID``, ``SEX_ID (1=m, 2=f)``,
  ``HEIGHT``, ``WEIGHT``, ``ETHNIC_ID``, ``MARITAL_ID``, ``OCCUPATION_ID``,
  ``QUALIFICATION_ID``, ``DOB``, ``DATE_AVAILABLE``, ``STUDY_DATE``, ``AGE`` (years,
  fractional). Its columns can also be fields of a ``table`` modality.

Labels (config ``labels``): ``sex`` (``male`` / ``female`` from ``SEX_ID``) and
``age_group``, the bin of ``AGE`` among the edges ``ixi.age_bins`` (left-closed, e.g.
``[20, 40, 60, 90]`` gives ``20-40``, ``40-60``, ``60-90``; an age outside them has no
group and a QC row says so). The MMARE thesis's age bins are not published with it, so
no bins are assumed: a config that asks for ``age_group`` names its edges.

What the release is known to contain, and what the adapter does with it:

- In the spreadsheet 0 means "not recorded" in the coded columns, height, weight and
  age; it becomes blank.
- Some IDs have two rows, usually a full row and a copy with zeros. Rows that agree on
  every recorded value are merged (a QC row names the subject); rows that disagree on
  a column the config reads blank that value for the subject, with a QC row naming the
  values, rather than picking one.
- Subjects with images and no spreadsheet row are kept with blank labels (the manifest
  keeps them as unlabelled). A row without any image of a configured sequence is a
  subject of the release too: with a ``table`` modality it is kept as a table-only
  subject (a missingness pattern of the cohort), without one the manifest excludes it
  (no modality). ``SEX_ID`` (for ``sex``) and ``AGE`` / ``DOB`` (for ``age_group``)
  cannot be fields.
- A file of a sequence folder whose name does not follow the pattern, or that names
  another sequence, is skipped with a QC row naming it (one that still says whose it is,
  ``IXI013-...-T1 (1).nii.gz`` or ``ixi013-...``, is that subject's rejected file, not a
  missing one); two files of one subject and sequence reject that modality for the
  subject, naming both, instead of choosing; files of one ID that name two sites reject
  that subject's images, naming them.

Skull stripping (the thesis does it) uses brain masks the user made with a stripping tool
(HD-BET, SynthStrip, ...): ``ixi.brain_masks`` names their folder, holding for each
volume ``<its name without .nii.gz>_mask.nii.gz`` (HD-BET 1.x's naming),
``_bet_mask.nii.gz`` (HD-BET 1.x told to write ``_bet.nii.gz``, the stripped volume) or
``_bet.nii.gz`` (HD-BET 2.x with ``--save_bet_mask``), the first found, and each sequence's
mask column (``<seq>_mask_path``, :mod:`mmpipe.preprocess.masks`) points at them; an
encoder's ``transform: {mask_out: true}`` then strips the skull, and a volume without
its mask is rejected by that encoder, never encoded unstripped. Without ``brain_masks``
the volumes are encoded whole (the experiment config says so).
"""

from __future__ import annotations

import datetime as dt
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
    dataset_root,
    flat_folder_qc,
    folder_files,
    layout_modalities,
    modality_specs,
    refuse_label_sources,
)
from mmpipe.cohorts.manifest_files import ALL_SUBJECTS, SUBJECT
from mmpipe.cohorts.numbers import parse_number
from mmpipe.cohorts.source_csv import refuse_columns_named_twice
from mmpipe.errors import ConfigError, InputError
from mmpipe.io.links import is_dangling_link
from mmpipe.preprocess.masks import mask_column

log = logging.getLogger(__name__)

SPREADSHEET = "IXI.xls"
SHEET = "Table"
ID_COLUMN = "IXI_ID"
SEX_COLUMN = "SEX_ID (1=m, 2=f)"
AGE_COLUMN = "AGE"
SEX_VALUES = {1: "male", 2: "female"}
# columns where 0 means "not recorded" (the release's convention)
ZERO_IS_BLANK = (SEX_COLUMN, "HEIGHT", "WEIGHT", "ETHNIC_ID", "MARITAL_ID", "OCCUPATION_ID",
                 "QUALIFICATION_ID", AGE_COLUMN)
SEQUENCES = {"t1": "T1", "t2": "T2", "pd": "PD", "mra": "MRA"}
DERIVED_LABELS = ("sex", "age_group")
FILE_PATTERN = re.compile(r"^IXI(?P<id>\d+)-(?P<site>[A-Za-z]+)-(?P<n>\d+)-(?P<seq>[A-Z0-9]+)"
                          r"\.nii(\.gz)?$")
# a name that says whose it is without following the pattern ("IXI013-...-T1 (1).nii.gz",
# "ixi013-...": a subject with only such a file was missing by nature)
SUBJECT_PREFIX = re.compile(r"^IXI(?P<id>\d+)-", re.IGNORECASE)
_MISNAMED = "name does not follow IXI<ID>-<Site>-<n>-<SEQ>.nii.gz"
# QC statuses of rows about the source, not about one subject's modality
MERGED, CONFLICT = "merged", "conflict"


def subject_id(number: int | str) -> str:
    """``IXI002``: the ID as the file names spell it (three digits at least)."""
    return f"IXI{int(number):03d}"


def folder_of(sequence: str) -> str:
    return f"IXI-{SEQUENCES[sequence]}"


def _blank(value: Any, column: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if column in ZERO_IS_BLANK and isinstance(value, int | float) and value == 0:
        return None
    return value


def _cell(cell: Any, datemode: int) -> Any:
    """A cell's value: an error cell (#N/A, #VALUE!) holds its error code as its value (42
    read as an age), so None; a date cell its day count since 1900 (IXI.xls writes DOB as
    text, ``1968-02-22``, but as a date cell for IXI219 and IXI662, read as ``23809``),
    so the date as the text ones write it."""
    import xlrd

    if cell.ctype == xlrd.XL_CELL_ERROR:
        return None
    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            when = xlrd.xldate_as_datetime(cell.value, datemode)
            # to the second: a day count's float rounding read as 00:00:00.009
            when = (when + dt.timedelta(microseconds=500_000)).replace(microsecond=0)
        except (ValueError, OverflowError):  # past what a date holds: as it is stored
            return cell.value
        return when.date().isoformat() if when.time() == dt.time() else when.isoformat(" ")
    return cell.value


def read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of sheet ``Table`` as dicts (header row first; numbers as floats, blanks,
    error cells and the release's zeros as None; date cells as ``YYYY-MM-DD``, as the
    sheet's dates written as text are)."""
    if not path.is_file():
        raise InputError("IXI demographics spreadsheet not found", path=path)
    import xlrd  # the .xls (BIFF) reader; only this adapter needs it

    try:
        book = xlrd.open_workbook(str(path), on_demand=True)
        names = book.sheet_names()
        cells = ([[_cell(c, book.datemode) for c in row]
                  for row in book.sheet_by_name(SHEET).get_rows()]
                 if SHEET in names else None)
    except Exception as e:  # a truncated file: xlrd raises IndexError, struct.error, ...
        raise InputError(f"not a readable .xls workbook ({type(e).__name__}: {e}); a "
                         "download cut short?", path=path) from e
    if cells is None:
        raise InputError(f"no sheet {SHEET!r} (sheets: {names})", path=path)
    if not cells:
        raise InputError(f"sheet {SHEET!r} is empty", path=path)
    header = [str(v).strip() for v in cells[0]]
    refuse_columns_named_twice(header, path)
    missing = [c for c in (ID_COLUMN, SEX_COLUMN, AGE_COLUMN) if c not in header]
    if missing:
        raise InputError(f"sheet {SHEET!r} lacks column(s) {missing} (has {header})", path=path)
    rows = []
    for values in cells[1:]:
        rows.append({h: _blank(v, h) for h, v in zip(header, values, strict=False)})
    return rows


def _whole_number(raw: Any) -> int | None:
    """An ``IXI_ID`` cell as its number; None for text, a negative number or a fraction
    (12.5 truncated to 12 would merge the row into another subject's)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def _merge_rows(rows: list[dict[str, Any]], used: list[str], path: Path
                ) -> tuple[dict[str, dict[str, Any]], list[QCRecord]]:
    """One record per subject. Duplicate rows that agree on every recorded value are
    merged; a used column they disagree on becomes blank for that subject."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    qc: list[QCRecord] = []
    for i, row in enumerate(rows, start=2):  # spreadsheet row numbers, header is row 1
        raw = row.get(ID_COLUMN)
        if raw is None:
            if any(v is not None for v in row.values()):  # values no subject can own
                qc.append(QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED,
                                   f"row {i} of {SPREADSHEET} holds values but no {ID_COLUMN}: "
                                   "skipped", str(path)))
            continue  # else an empty line
        number = _whole_number(raw)
        if number is None:  # one odd cell is that row's, not the cohort's to fail on
            qc.append(QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED,
                               f"row {i} of {SPREADSHEET}: {ID_COLUMN} {raw!r} is not a "
                               "whole number: skipped", str(path)))
            continue
        by_id[subject_id(number)].append(row)
    merged: dict[str, dict[str, Any]] = {}
    for sid, group in by_id.items():
        record: dict[str, Any] = {}
        conflicts: dict[str, list[Any]] = {}
        for column in dict.fromkeys(c for row in group for c in row):
            values = list(dict.fromkeys(row.get(column) for row in group
                                        if row.get(column) is not None))
            if len(values) > 1:
                conflicts[column] = values
            record[column] = values[0] if len(values) == 1 else None
        if len(group) > 1:
            read = {c: v for c, v in conflicts.items() if c in used}
            if read:
                what = "; ".join(f"{c}: {' vs '.join(map(_text, v))}" for c, v in read.items())
                qc.append(QCRecord(sid, LABEL_QC, CONFLICT,
                                   f"{len(group)} rows in {SPREADSHEET} disagree ({what}): "
                                   "left blank", str(path)))
            else:
                qc.append(QCRecord(sid, LABEL_QC, MERGED,
                                   f"{len(group)} rows in {SPREADSHEET} merged (they agree "
                                   "on every value the config reads)", str(path)))
        merged[sid] = record
    return merged, qc


def age_group(age: float | None, edges: list[float]) -> str | None:
    """The ``lo-hi`` bin (left-closed) of ``age`` among ``edges``; None outside them."""
    if age is None:
        return None
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if lo <= age < hi:
            return f"{lo:g}-{hi:g}"
    return None


def scan_images(root: Path, sequences: list[str]
                ) -> tuple[dict[str, dict[str, list[Path]]], dict[str, dict[str, list[Path]]],
                           list[QCRecord], dict[str, dict[str, list[Path]]]]:
    """Per sequence, each subject's files; each subject's sites, with the files naming
    each; QC rows of skipped files; per sequence, each subject's files whose name says
    whose they are but does not follow the pattern (a subject with only such a file was
    missing by nature, where its file was renamed)."""
    found: dict[str, dict[str, list[Path]]] = {s: defaultdict(list) for s in sequences}
    misnamed: dict[str, dict[str, list[Path]]] = {s: defaultdict(list) for s in sequences}
    sites: dict[str, dict[str, list[Path]]] = {}
    qc: list[QCRecord] = []
    for seq in sequences:
        folder = root / folder_of(seq)
        if not folder.is_dir():
            raise InputError(f"folder {folder.name}/ of modality {seq!r} not found (extract "
                             f"{folder.name}.tar into it)", path=folder)
        files = folder_files(folder)
        qc += flat_folder_qc(folder, seq, f"IXI<ID>-<Site>-<n>-{SEQUENCES[seq]}.nii.gz",
                             any(FILE_PATTERN.match(path.name) for path in files))
        for path in files:
            m = FILE_PATTERN.match(path.name)
            if m is None:
                qc.append(QCRecord(ALL_SUBJECTS, seq, SKIPPED, _MISNAMED, str(path)))
                if whose := SUBJECT_PREFIX.match(path.name):
                    misnamed[seq][subject_id(whose["id"])].append(path)
                continue
            if m["seq"] != SEQUENCES[seq]:
                qc.append(QCRecord(ALL_SUBJECTS, seq, SKIPPED,
                                   f"a {m['seq']} file in {folder.name}/", str(path)))
                continue
            sid = subject_id(m["id"])
            found[seq][sid].append(path)
            sites.setdefault(sid, {}).setdefault(m["site"], []).append(path)
    return found, sites, qc, misnamed


def check_config(cohort_cfg: dict) -> None:
    """What the layout fixes: the labels the adapter derives, the sequences as volumes,
    the age bins; a :class:`ConfigError` on the first thing wrong."""
    labels = cohort_labels(cohort_cfg)
    unknown = [lab for lab in labels if lab not in DERIVED_LABELS]
    if unknown:
        raise ConfigError(f"ixi labels {unknown}: the adapter derives {list(DERIVED_LABELS)}")
    edges = _age_bins(cohort_cfg)
    if "age_group" in labels and (len(edges) < 2 or edges != sorted(set(edges))):
        raise ConfigError("ixi label 'age_group' needs ixi.age_bins: two or more increasing "
                          "ages (years), the left-closed bin edges")
    specs = modality_specs(cohort_cfg)
    layout_modalities(specs, "ixi", SEQUENCES, "volume", SPREADSHEET)
    # AGE is computed from DOB and STUDY_DATE: the date of birth gives the age away too
    refuse_label_sources("ixi", specs, labels, {"sex": (SEX_COLUMN,),
                                                "age_group": (AGE_COLUMN, "DOB")})


def _age_bins(cohort_cfg: dict) -> list[float]:
    return [float(e) for e in (cohort_cfg.get("ixi") or {}).get("age_bins") or []]


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    root = dataset_root(cohort_cfg, base_dir, "ixi", "IXI-T1/, IXI-T2/, ... and IXI.xls")
    labels = cohort_labels(cohort_cfg)
    edges = _age_bins(cohort_cfg)
    specs = modality_specs(cohort_cfg)
    sequences = [name for name, spec in specs.items() if not spec.is_table]

    brain_masks = (cohort_cfg.get("ixi") or {}).get("brain_masks")
    mask_dir = None
    if brain_masks:
        mask_dir = Path(brain_masks).expanduser()
        mask_dir = mask_dir if mask_dir.is_absolute() else root / mask_dir
        if not mask_dir.is_dir():
            raise InputError("ixi.brain_masks: folder not found", path=mask_dir)
    sheet_path = root / SPREADSHEET
    rows = read_table(sheet_path)
    fields = list(dict.fromkeys(f for s in specs.values() for f in s.fields))
    absent_fields = [f for f in fields if rows and f not in rows[0]]
    if absent_fields:
        raise ConfigError(f"{sheet_path}: column(s) {absent_fields} not in sheet {SHEET!r}")
    used = [SEX_COLUMN, AGE_COLUMN, *fields]
    table, sheet_qc = _merge_rows(rows, used, sheet_path)
    found, sites, file_qc, misnamed = scan_images(root, sequences)

    ids = sorted(set(table) | {sid for seq in (*found.values(), *misnamed.values())
                               for sid in seq})
    # an ID one site scanned: files of it under two sites are another subject's too, and
    # which are this one's is unknown (the first site found was kept, the rest joined it)
    two_sites = {sid: "files of this ID name sites " + "; ".join(
        f"{site} ({', '.join(f.name for f in files)})" for site, files in sorted(named.items()))
        for sid, named in sites.items() if len(named) > 1}
    frame: dict[str, list[Any]] = {
        SUBJECT: ids, "site": [None if s in two_sites or s not in sites else next(iter(sites[s]))
                               for s in ids]}
    qc: list[QCRecord] = []
    label_qc: list[QCRecord] = []
    for seq in sequences:
        paths: list[str | None] = []
        for sid in ids:
            files = found[seq].get(sid, [])
            if files and sid in two_sites:
                paths.append(None)
                qc.append(QCRecord(sid, seq, REJECTED, two_sites[sid]))
                continue
            if len(files) == 1:
                paths.append(str(files[0]))
                continue
            paths.append(None)
            if not files and (renamed := misnamed[seq].get(sid)):
                qc.append(QCRecord(sid, seq, REJECTED, f"only {', '.join(f.name for f in renamed)}"
                                   f" in {folder_of(seq)}/: {_MISNAMED}"))
            elif not files:
                qc.append(QCRecord(sid, seq, ABSENT, f"no file in {folder_of(seq)}/"))
            else:
                qc.append(QCRecord(sid, seq, REJECTED,
                                   f"{len(files)} files in {folder_of(seq)}/: "
                                   + ", ".join(f.name for f in files)))
        frame[specs[seq].column] = paths
        if mask_dir is not None:
            masks = [_brain_mask(mask_dir, p) for p in paths]
            frame[mask_column(seq)] = masks
            if any(paths) and not any(masks):  # a naming the adapter does not know: every
                # subject was rejected at encode time as "no mask file", nothing said here
                log.warning("ixi: no brain mask in %s for any of the %d %s volumes (looked "
                            "for <volume name>%s)", mask_dir, sum(map(bool, paths)), seq,
                            " or ".join(MASK_SUFFIXES))
    no_row = [sid for sid in ids if sid not in table]
    if no_row:
        log.warning("ixi: %d subject(s) with images have no row in %s (labels blank): %s",
                    len(no_row), SPREADSHEET, no_row[:10])
    if "sex" in labels:
        frame["sex"] = []
        for sid in ids:
            code = table.get(sid, {}).get(SEX_COLUMN)
            if code is not None and _code(code) not in SEX_VALUES:
                label_qc.append(QCRecord(sid, LABEL_QC, ABSENT,
                                         f"{SEX_COLUMN} value {code!r} is not 1 or 2"))
            frame["sex"].append(SEX_VALUES.get(_code(code)))
    if "age_group" in labels:
        frame["age_group"] = []
        for sid in ids:
            age = table.get(sid, {}).get(AGE_COLUMN)
            # a cell typed as text ('45.2', ' 61 '), as a SEX_ID may be
            if isinstance(age, str) and (number := parse_number(age)) is not None:
                age = number
            group = age_group(float(age), edges) if isinstance(age, int | float) else None
            if age is not None and group is None:
                why = (f"{AGE_COLUMN} value {age!r} is not a number"
                       if not isinstance(age, int | float)
                       else f"age {_text(age)} is outside ixi.age_bins {edges}")
                label_qc.append(QCRecord(sid, LABEL_QC, ABSENT, why))
            frame["age_group"].append(group)
    for f in fields:
        frame[f] = _field_column([table.get(s, {}).get(f) for s in ids])
    read_columns = {ID_COLUMN, *used}
    header = list(rows[0]) if rows else []
    return AdapterOutput(
        frame=pl.DataFrame(frame),
        modalities=specs,
        labels=labels,
        qc=qc,
        source=str(sheet_path),
        root=str(root),
        extra_columns=["site", *((mask_column(s) for s in sequences) if mask_dir else ())],
        unused_columns=[(SPREADSHEET, c) for c in header if c not in read_columns],
        source_qc=[*sheet_qc, *label_qc, *file_qc],
    )


# a brain mask's name after its volume's: HD-BET 1.x (and SynthStrip's usual -m name),
# HD-BET 1.x told to write <name>_bet.nii.gz (the stripped volume; the mask beside it),
# then HD-BET 2.x (``--save_bet_mask``; its <name>.nii.gz is the stripped volume)
MASK_SUFFIXES = ("_mask.nii.gz", "_bet_mask.nii.gz", "_bet.nii.gz")


def _brain_mask(mask_dir: Path, volume: str | None) -> str | None:
    """The brain mask of one volume (the first found of :data:`MASK_SUFFIXES` after its
    name), None without one."""
    if volume is None:
        return None
    name = Path(volume).name.removesuffix(".gz").removesuffix(".nii")
    for suffix in MASK_SUFFIXES:
        mask = mask_dir / f"{name}{suffix}"
        # a link to nothing (a mask not fetched) is listed: the manifest says it is no mask
        if mask.is_file() or is_dangling_link(mask):
            return str(mask)
    return None


def _field_column(values: list[Any]) -> list[Any]:
    """A table field as one type: numbers when every value is one, else text (so the
    manifest's check of texts in numeric fields sees each one instead of a silent cast)."""
    if all(v is None or isinstance(v, int | float) for v in values):
        return [None if v is None else float(v) for v in values]
    return [None if v is None else _text(v) for v in values]


def _text(value: Any) -> str:
    """A spreadsheet value as text: xlrd reads every number as a float, so a whole one is
    written as an integer (2.0 as "2") and any other with every digit it has (``:g`` kept
    six: 45.123456789 read back as 45.1235, 1234567 as 1234570)."""
    if not isinstance(value, float):
        return str(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _code(value: Any) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None
