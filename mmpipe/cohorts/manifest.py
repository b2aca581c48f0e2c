"""The manifest contract: one row per subject, one path column per imaging modality,
table fields inline, and a QC table that says why every missing modality is missing.

Adapters only know their raw layout; everything the contract promises (unique
non-empty subject IDs, a QC row for every (subject, modality), exclusion of
subjects with nothing to learn from, atomic files) is enforced here, once, so
every cohort obeys the same rules.

Files under ``results/{cohort}/``: :mod:`mmpipe.cohorts.manifest_files`, which writes and
reads them.

Table fields are cleaned here too (:func:`clean_table_fields`): a blank or
whitespace-only cell, or a missing marker ("NA", "nan": :data:`MISSING_TEXTS`), is null,
and a field whose non-blank values are mostly numbers
(:data:`NUMERIC_SHARE`) is made numeric. Each value of such a field that is not a
number ("45y", "unknown", "inf") becomes null with a QC row of status
``non_numeric`` naming the subject, the field and the value, or, with the
modality's ``non_numeric: error``, stops the build with an error naming them all.

A cohort may bring the fixed split its published results use (config ``split``: a
``column`` of the adapter's table, or ``files`` of subject IDs; :func:`read_user_split`).
The manifest is the one table of the cohort's subjects, so it carries that split too, as
the column ``split`` with one canonical part (train, val, test) per subject: the split
job reads it there (:mod:`mmpipe.bench.prepare`) and no other step reads the user's
files. A subject kept with a label but without a part stops the build (see
:func:`finalize_manifest`).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.cohorts.field_checks import case_variants, label_proxies
from mmpipe.cohorts.manifest_files import (
    ALL_SUBJECTS,
    NON_NUMERIC,
    SPLIT,
    SPLIT_PARTS,
    SUBJECT,
    fixed_parts,
)
from mmpipe.cohorts.numbers import parse_number
from mmpipe.cohorts.source_csv import read_utf8_text
from mmpipe.cohorts.split_groups import SPLIT_GROUP
from mmpipe.errors import ConfigError, InputError
from mmpipe.io.links import DANGLING_LINK, is_dangling_link
from mmpipe.layout import ADAPTER_QC
from mmpipe.preprocess.masks import mask_column
from mmpipe.qc import qc_frame

log = logging.getLogger(__name__)

PATH_KINDS = ("volume", "dicom", "slide", "image", "features")
TABLE_KIND = "table"
KINDS = (*PATH_KINDS, TABLE_KIND)

PRESENT, ABSENT, REJECTED, EXCLUDED = "present", "absent", "rejected", "excluded"
SKIPPED = "skipped"  # a source file, folder or row an adapter did not use (whole-cohort QC)
ALL_MODALITIES = "*"
LABEL_QC = "label"
NO_MODALITY = "no modality available"
LABEL_MISSING = "label missing"
NON_NUMERIC_MODES = ("blank", "error")
COLUMN_QC, UNUSED = "column", "unused"      # a source column the config does not use
SPLIT_QC, FIXED = "split", "fixed"          # which parts the user's split fixes
GROUPS_ACROSS = "groups_across_parts"        # patients the user's split puts in two parts
# a label's words beside numbers, or fractions beside whole numbers: each value a class
MIXED_CLASSES = "mixed_classes"
# a table field's spellings of one value; a field that tells a label's classes apart
CASE_VARIANTS, LABEL_PROXY = "case_variants", "label_proxy"
# QC "modality" values of rows that are not a modality: no modality may be named so
RESERVED_MODALITIES = (ALL_MODALITIES, LABEL_QC, COLUMN_QC, SPLIT_QC)

# the values accepted for each part of the user's split (compared stripped, lower case)
SPLIT_VALUES = {"train": "train", "training": "train",
                "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}
SPLIT_FILE_PARTS = ("train", "val", "test")  # config split.files keys, test required


def path_column(modality: str) -> str:
    """Name of the manifest column holding ``modality``'s path (one name everywhere)."""
    return f"{modality}_path"


@dataclass(frozen=True)
class ModalitySpec:
    """A modality as the manifest sees it: a path column, or table fields."""

    name: str
    kind: str
    fields: tuple[str, ...] = ()
    non_numeric: str = "blank"     # table: a text in a numeric field -> "blank" | "error"
    # table: fields read as categories (a tabular encoder's `categorical`), never as numbers
    categorical: tuple[str, ...] = ()

    @property
    def is_table(self) -> bool:
        return self.kind == TABLE_KIND

    @property
    def column(self) -> str:
        return path_column(self.name)

    def meta(self) -> dict[str, Any]:
        if self.is_table:
            return {"kind": self.kind, "fields": list(self.fields),
                    "non_numeric": self.non_numeric}
        return {"kind": self.kind, "path_column": self.column}


def modality_specs(cohort_cfg: dict) -> dict[str, ModalitySpec]:
    """Read the cohort's ``modalities`` block. A table's ``fields`` are the config's own,
    as the config check requires: no adapter fills them, so the fields a tabular encoder
    or a prompt names are the ones the manifest carries."""
    mods = cohort_cfg.get("modalities") or {}
    if not mods:
        raise ConfigError("cohort config has no 'modalities'")
    specs = {}
    for name, mcfg in mods.items():
        if name in RESERVED_MODALITIES:
            raise ConfigError(f"modality {name!r}: the name is reserved for QC rows that are "
                              f"not a modality ({list(RESERVED_MODALITIES)}); rename it")
        kind = (mcfg or {}).get("kind")
        if kind not in KINDS:
            raise ConfigError(f"modality {name!r}: unknown kind {kind!r} (known: {list(KINDS)})")
        fields: tuple[str, ...] = ()
        non_numeric = mcfg.get("non_numeric") or "blank"
        if kind == TABLE_KIND:
            fields = tuple(mcfg.get("fields") or ())
            if not fields:
                raise ConfigError(f"modality {name!r}: a table modality needs 'fields'")
            if non_numeric not in NON_NUMERIC_MODES:
                raise ConfigError(f"modality {name!r}: non_numeric must be one of "
                                  f"{list(NON_NUMERIC_MODES)}, not {non_numeric!r}")
        specs[name] = ModalitySpec(name=name, kind=kind, fields=fields,
                                   non_numeric=non_numeric,
                                   categorical=tuple(mcfg.get("categorical") or ()))
    return specs


def config_path(value: str | Path, base_dir: Path) -> Path:
    """A path the config gives: ``~`` expanded, a relative one taken from ``base_dir``
    (the workflow root)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def folder_files(folder: Path) -> list[Path]:
    """The files of a download's ``folder``, sorted, with its symbolic links that point
    nowhere: that is how a DataLad or git-annex download lists a file it has not
    fetched. Left out, such a file made its modality read as absent (to the benchmark,
    missing by nature) where the download is unfinished; listed, the manifest rejects it
    by name (:func:`finalize_manifest`)."""
    return sorted(p for p in folder.iterdir() if p.is_file() or is_dangling_link(p))


def flat_folder_qc(folder: Path, modality: str, expected: str, found: bool
                   ) -> list[QCRecord]:
    """For an adapter that reads the files directly in a download's ``folder``: the
    skipped QC rows of the folders inside it. ``found``: whether any of its files is
    ``expected`` (e.g. ``"IXI<ID>-<Site>-<n>-T2.nii.gz"``); when none is, raise
    :class:`InputError` naming the folders inside: an archiver that extracts
    ``IXI-T2.tar`` into ``IXI-T2/IXI-T2/`` had left the modality missing by nature for
    every subject, without a word."""
    inner = sorted(p for p in folder.iterdir() if p.is_dir())
    if not found:
        raise InputError(f"folder {folder.name}/ of modality {modality!r} holds no {expected} "
                         "file" + (f"; it holds the folder(s) {[p.name for p in inner]}: move "
                                   f"their files up into {folder.name}/" if inner else ""),
                         path=folder)
    return [QCRecord(ALL_SUBJECTS, modality, SKIPPED, f"a folder in {folder.name}/ (its files "
                     f"are not read: the adapter reads those in {folder.name}/ itself)", str(p))
            for p in inner]


def dataset_root(cohort_cfg: dict, base_dir: Path, adapter: str, holds: str) -> Path:
    """The ``root`` folder of a dataset adapter, resolved against ``base_dir``; ``holds``
    says what the folder holds, for the errors."""
    if "root" not in cohort_cfg:
        raise ConfigError(f"the {adapter} adapter needs 'root' ({holds})")
    root = config_path(cohort_cfg["root"], base_dir).resolve()
    if not root.is_dir():
        raise InputError(f"{adapter} root folder not found ({holds})", path=root)
    return root


def layout_modalities(specs: dict[str, ModalitySpec], adapter: str, known: Iterable[str],
                      kind: str | Mapping[str, str], tables_from: str) -> list[str]:
    """The path modalities of a dataset adapter whose layout names them: each must be
    one of ``known`` and of ``kind``, or of its own kind when ``kind`` maps each name to
    one (tables come from ``tables_from``)."""
    known = sorted(known)
    kinds = kind if isinstance(kind, Mapping) else dict.fromkeys(known, kind)
    names = []
    for name, spec in specs.items():
        if spec.is_table:
            continue
        if name not in known:
            described = kind if isinstance(kind, str) else dict(sorted(kinds.items()))
            raise ConfigError(f"{adapter} has no modality {name!r} (known: {known} as "
                              f"{described}, tables from {tables_from})")
        if spec.kind != kinds[name]:
            raise ConfigError(f"{adapter} provides {name!r} as kind {kinds[name]!r}, not "
                              f"{spec.kind!r}")
        names.append(name)
    return names


def cohort_labels(cohort_cfg: dict) -> list[str]:
    labels = list(cohort_cfg.get("labels") or [])
    if not labels:
        raise ConfigError("cohort config has no 'labels'")
    return labels


def refuse_label_sources(adapter: str, specs: dict[str, ModalitySpec], labels: list[str],
                         sources: dict[str, Iterable[str]]) -> None:
    """A table field the adapter derives a configured label from (``sources``: label ->
    its columns) would hand the model its answer: a config error, not an input."""
    fields = {f for s in specs.values() for f in s.fields}
    leaking = sorted({(f, lab) for lab in labels for f in sources.get(lab, ()) if f in fields})
    if leaking:
        raise ConfigError(f"{adapter}: " + ", ".join(f"field {f!r} is what label {lab!r} is "
                                                     "derived from" for f, lab in leaking)
                          + ": it cannot be an input")


@dataclass
class QCRecord:
    """Why one (subject, modality) is what it is."""

    subject_id: str
    modality: str
    status: str
    reason: str = ""
    path: str | None = None


@dataclass(frozen=True)
class UserSplit:
    """The split a cohort brings: each subject's canonical part, or None (no value)."""

    parts: dict[str, str | None]
    source: str   # as the split files record it: "column <name>" or "files"
    where: str    # the column and its file, or the files, for messages and the QC row


@dataclass
class AdapterOutput:
    """What an adapter hands over: the raw per-subject frame and the QC it knows.

    ``frame`` holds ``subject_id``, the labels, ``{m}_path`` for path modalities,
    the table fields and ``extra_columns``. ``qc`` needs entries only for path
    modalities whose path is null (absent or rejected, with the reason); every
    other (subject, modality) row is derived by :func:`finalize_manifest`.
    ``split`` is the user's split (:func:`read_user_split`), ``unused_columns`` the
    (file, column) pairs of the source files that the config does not use.
    """

    frame: pl.DataFrame
    modalities: dict[str, ModalitySpec]
    labels: list[str]
    qc: list[QCRecord] = field(default_factory=list)
    source: str = ""
    # the folder the dataset's files lie under (the manifest views name paths relative to
    # it, so a download moved with its times reruns nothing); ``source`` when empty
    root: str = ""
    extra_columns: list[str] = field(default_factory=list)
    split: UserSplit | None = None
    unused_columns: list[tuple[str, str]] = field(default_factory=list)
    # QC rows that are not one subject's modality status: a source file skipped
    # (subject ALL_SUBJECTS), spreadsheet rows merged or in conflict, why a label is
    # blank (modality LABEL_QC); written to the QC table as they are
    source_qc: list[QCRecord] = field(default_factory=list)


@dataclass
class Manifest:
    frame: pl.DataFrame
    qc: pl.DataFrame
    meta: dict[str, Any]


def _check_columns(out: AdapterOutput) -> list[str]:
    """Ordered manifest columns; a name used twice for different things is a config error."""
    owners: dict[str, str] = {SUBJECT: "the subject ID"}
    order = [SUBJECT]

    def claim(col: str, owner: str) -> None:
        if col in owners and owners[col] != owner:
            raise ConfigError(f"column {col!r} would be both {owners[col]} and {owner}; rename one")
        if col not in owners:
            owners[col] = owner
            order.append(col)

    for label in out.labels:
        claim(label, f"label {label!r}")
    for spec in out.modalities.values():
        if not spec.is_table:
            claim(spec.column, f"the path of modality {spec.name!r}")
    for spec in out.modalities.values():
        for f in spec.fields:
            # one field may feed two table modalities: same column, same data
            claim(f, f"table field {f!r}")
    for col in out.extra_columns:
        claim(col, f"extra column {col!r}")
    if out.split is not None and SPLIT in owners:
        # the manifest's split column is added by finalize_manifest, not taken from the frame
        raise ConfigError(f"column {SPLIT!r} would be both {owners[SPLIT]} and the cohort's "
                          "own split (config 'split'); rename one")
    missing = [c for c in order if c not in out.frame.columns]
    if missing:
        raise ConfigError(
            f"{out.source or 'cohort source'}: column(s) {missing} not found "
            f"(available: {sorted(out.frame.columns)})"
        )
    return order


def _case_twins(values: Iterable[str]) -> list[list[str]]:
    """The groups of ``values`` that differ only in case or in the Unicode form of their
    accents, each in the order given. ("José" as macOS names a file, e with a combining
    accent, and as a table typed elsewhere writes it, one character, are two strings.)"""
    by_fold: dict[str, list[str]] = {}
    for v in values:
        by_fold.setdefault(unicodedata.normalize("NFC", v).casefold(), []).append(v)
    return [spellings for spellings in by_fold.values() if len(spellings) > 1]


def check_subject_ids(ids: pl.Series, source: str) -> None:
    """Raise :class:`InputError` naming empty rows or duplicated IDs (never de-duplicate)."""
    values = ids.cast(pl.Utf8).str.strip_chars().to_list()
    # a quote left open runs its field over the next lines: the rows it swallows are
    # gone and the ID (or a field) holds them
    broken = [s for s in values if s is not None and ("\n" in s or "\r" in s)]
    if broken:
        raise InputError(f"subject_id(s) holding a line break: {broken[:5]}; a quote left "
                         "open in the row above runs on over the next rows (close it)",
                         path=source or None)
    empty = [i + 1 for i, s in enumerate(values) if s is None or not s]
    if empty:
        shown = ", ".join(map(str, empty[:20])) + (" ..." if len(empty) > 20 else "")
        raise InputError(
            f"{len(empty)} row(s) without a subject_id: data row(s) {shown} "
            "(1-based, header not counted); every row needs an ID",
            path=source or None,
        )
    dup = {s: n for s, n in Counter(values).items() if n > 1}
    if dup:
        shown = ", ".join(f"{s!r} x{n}" for s, n in sorted(dup.items())[:20])
        raise InputError(
            f"duplicate subject_id(s): {shown}; each subject must appear once "
            "(mmpipe never de-duplicates silently: fix the source)",
            path=source or None,
        )
    # "P1" and "p1" are one patient typed twice far more often than two patients: as two
    # subjects they could sit in the training and the test split at once
    _refuse_case_twins(values, "subject_id(s)", "one subject must have one ID", "IDs",
                       source)


def _refuse_case_twins(values: Iterable[str], what: str, rule: str, plural: str,
                       source: str) -> None:
    """Raise :class:`InputError` naming the ``values`` that differ only in case or accent
    encoding (:func:`_case_twins`)."""
    clash = _case_twins(values)
    if clash:
        shown = "; ".join(" / ".join(map(repr, names)) for names in clash[:20])
        raise InputError(
            f"{what} that differ only in case or in how an accent is encoded (Unicode "
            f"NFC/NFD): {shown}; {rule} (fix the source, or make the {plural} differ in more "
            "than that)",
            path=source or None,
        )


def check_split_groups(frame: pl.DataFrame, source: str) -> None:
    """Raise :class:`InputError` naming ``split_group`` names that differ only in case or
    accent encoding: "P0" and "p0" as two groups put one patient's two visits in the
    training and the test split, the leak the groups are there to prevent."""
    if SPLIT_GROUP not in frame.columns:
        return
    names = frame[SPLIT_GROUP].cast(pl.Utf8).drop_nulls().unique(maintain_order=True)
    _refuse_case_twins(names.to_list(), "split group name(s)",
                       "one patient's group must have one name", "names", source)


# -- the user's split ------------------------------------------------------------------------


def _groups_across_parts(frame: pl.DataFrame, parts: list[str | None]) -> str:
    """Why the cohort's own split leaks, if it does: patients (``split_group``) whose
    subjects it places in two of its parts (train, val, test). Every split keeps a
    drawn group whole; a published one is kept as given, so such a patient's test
    subjects were seen in training."""
    if SPLIT_GROUP not in frame.columns:
        return ""
    placed: dict[str, set[str]] = {}
    for group, part in zip(frame[SPLIT_GROUP].to_list(), parts, strict=True):
        if group is not None and part is not None:
            placed.setdefault(str(group), set()).add(part)
    split = sorted(g for g, ps in placed.items() if len(ps) > 1)
    if not split:
        return ""
    shown = ", ".join(f"{g} ({'/'.join(sorted(placed[g]))})" for g in split[:10])
    return (f"{len(split)} patient group(s) lie in two parts of the cohort's split, kept as "
            f"it gives them: {shown}{' ...' if len(split) > 10 else ''}; a patient's "
            "subjects in one part were seen in another (train and test: its test scores "
            "are optimistic)")


def _split_part(value: object) -> str | None:
    """The canonical part of a split value, ``""`` for one not in :data:`SPLIT_VALUES`,
    None for a blank cell."""
    if value is None or not str(value).strip():
        return None
    return SPLIT_VALUES.get(str(value).strip().lower(), "")


def _shown(items: list[str], n: int = 20) -> str:
    return "; ".join(items[:n]) + (f" ... (+{len(items) - n})" if len(items) > n else "")


def _read_id_file(path: Path) -> list[str]:
    """Subject IDs of a split file: one per line; blank lines and ``#`` comments skipped."""
    if not path.is_file():
        raise InputError("split file not found", path=path)
    # utf-8-sig: Notepad's byte-order mark, as the CSVs take it (it made "\ufeffp1")
    ids = [line.strip() for line in read_utf8_text(path).splitlines()]
    ids = [i for i in ids if i and not i.startswith("#")]
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise InputError(f"subject(s) listed twice: {dup[:20]}", path=path)
    if not ids:
        raise InputError("split file lists no subject", path=path)
    return ids


def read_user_split(cohort_cfg: dict, frame: pl.DataFrame, *, source: str,
                    base_dir: Path) -> UserSplit | None:
    """The split the cohort's config names (``split``), for every subject of ``frame``
    (``subject_id`` stripped), or None when it names none.

    ``split: {column: C}``: column C of ``frame`` (read from ``source``) holds each
    subject's part: a value of :data:`SPLIT_VALUES` in any case (``Train``, ``VALID``,
    ``testing``), or blank for none; any other value is an :class:`InputError` naming
    every such subject and value. ``split: {files: {test: F, train: F, val: F}}``: text
    files (relative to ``base_dir``, the workflow root) of subject IDs, one per line;
    ``test`` is required; without ``train``, every subject in no file is in the
    training part. An ID not in the cohort, or in two files, is an :class:`InputError`.
    """
    spec = cohort_cfg.get("split")
    if not spec:
        return None
    ids = frame[SUBJECT].to_list()
    if ("column" in spec) == ("files" in spec):
        raise ConfigError("split: give either 'column' (a column of the cohort table) or "
                          f"'files' (subject ID lists), not {sorted(spec) or 'neither'}")
    if "column" in spec:
        column = spec["column"]
        if column not in frame.columns:
            raise ConfigError(f"split.column {column!r} is not a column of {source} "
                              f"(it has: {frame.columns})")
        values = frame[column].cast(pl.Utf8).to_list()
        parts = {sid: _split_part(v) for sid, v in zip(ids, values, strict=True)}
        bad = [f"subject {sid!r}: {v!r}" for sid, v in zip(ids, values, strict=True)
               if parts[sid] == ""]
        if bad:
            raise InputError(
                f"{len(bad)} value(s) of split column {column!r} are not a split part: "
                f"{_shown(bad)}. Accepted, in any case: {', '.join(SPLIT_VALUES)}; or blank "
                "for a subject in no part", path=source or None)
        return UserSplit(parts, f"column {column}", f"column {column!r} of {source}")
    files = spec["files"]
    unknown_keys = sorted(set(files) - set(SPLIT_FILE_PARTS))
    if unknown_keys or "test" not in files:
        raise ConfigError(f"split.files: parts are {list(SPLIT_FILE_PARTS)} with 'test' "
                          f"required, got {sorted(files)}")
    cohort_ids = set(ids)
    parts: dict[str, str | None] = dict.fromkeys(ids, None if "train" in files else "train")
    listed: dict[str, str] = {}
    for part in SPLIT_FILE_PARTS:
        if part not in files:
            continue
        path = config_path(files[part], base_dir)
        part_ids = _read_id_file(path)
        unknown = [i for i in part_ids if i not in cohort_ids]
        if unknown:
            raise InputError(f"{len(unknown)} subject(s) of the {part} split file are not "
                             f"in {source}: {unknown[:20]}", path=path)
        twice = [f"subject {i!r}: {listed[i]} and {path}" for i in part_ids if i in listed]
        if twice:
            raise InputError(f"subject(s) in two split files: {_shown(twice)}", path=path)
        for i in part_ids:
            listed[i] = str(path)
            parts[i] = part
    where = ", ".join(f"{k}: {files[k]}" for k in SPLIT_FILE_PARTS if k in files)
    return UserSplit(parts, "files", f"split files ({where})")


# -- table values ---------------------------------------------------------------------------

# a text field is numeric when at least this share of its non-blank values are numbers
NUMERIC_SHARE = 0.75


@dataclass(frozen=True)
class NonNumericValue:
    """A value of a numeric table field that is not a number."""

    subject_id: str
    field: str
    value: str

    @property
    def reason(self) -> str:
        bound = ("; a bound, as a lab writes a value past its range: write the number you "
                 "choose for it" if _BOUND.fullmatch(self.value) else "")
        return (f"field {self.field!r}: value {self.value!r} is not a number (the field is "
                f"numeric); set to blank{bound}")


# a number as another locale's spreadsheet or a unit writes it (1,5; 52%; 52 %), or a
# bound as a lab report writes a value past its range (<0.1, >90, >= 60), which
# parse_number does not read
_BOUND = re.compile(r"(<|>|<=|>=|≤|≥)\s*[+-]?(\d+(\.\d*)?|\.\d+)")
_WRITTEN_NUMBER = re.compile(r"[+-]?(\d+(,\d+)?|\d*\.\d+)\s*%|[+-]?\d+,\d+|"
                             + _BOUND.pattern)
NUMBERS_AS_TEXT = "numbers_as_text"


@dataclass(frozen=True)
class NumbersAsText:
    """A table field kept as text whose values are mostly numbers: written with a comma
    or a percent sign, or bounds (``<0.1``) (``written``); or plain numbers beside too
    many texts ("not done", "pending") to be read as a numeric field. Each value became a
    category of its own, with nothing said but a log line."""

    field: str
    n: int
    of: int
    examples: tuple[str, ...]
    written: bool = True

    @property
    def reason(self) -> str:
        shown = ", ".join(map(repr, self.examples))
        if not self.written:
            return (f"field {self.field!r}: {self.n} of {self.of} values are numbers, under "
                    f"the {round(100 * NUMERIC_SHARE)}% that makes a field numeric, beside "
                    f"texts ({shown}): kept as text, one category per value; blank those "
                    "texts in the source (or write NA) for the field to be read as numbers, "
                    "or list it in the tabular encoder's categorical if its values are "
                    "categories (a grade 1, 2, G3)")
        return (f"field {self.field!r}: {self.n} of {self.of} values are numbers written "
                f"with a comma or a percent sign, or bounds ({shown}): kept as text, one "
                "category per value; write them as plain numbers (1.5, 52; a bound as the "
                "number you choose for it) for the field to be read as numbers")


# texts that mean "no value" in a label or a table field (the spreadsheet and R/pandas
# missing markers: R's write.csv writes NA), in lower case; not "none" or "-", which can
# be classes (a grade "none", a status "-"); and "missing", which the prompts and the
# tabular encoding read as blank (mmpipe.encoders.categories.MISSING): in a numeric field
# it was a value that is not a number, and stopped the build under non_numeric: error
MISSING_TEXTS = ("", "nan", "na", "n/a", "#n/a", "null", "<na>", "missing")


def _without_markers(col: pl.Series) -> list[str | None]:
    """A text column's cells, a missing marker or whitespace as None."""
    return [None if v is None or v.strip().lower() in MISSING_TEXTS else v
            for v in col.cast(pl.Utf8).to_list()]


def _clean_text_field(name: str, ids: list[str], col: pl.Series
                      ) -> tuple[pl.Series, list[NonNumericValue], NumbersAsText | None]:
    # a missing marker is a blank cell: counted as a text, "NA" kept a field that is
    # mostly missing as text, its numbers read as categories and "NA" as one of them
    text = _without_markers(col)
    nonblank = [v for v in text if v is not None]
    parsed = [None if v is None else parse_number(v) for v in text]
    n_numbers = sum(p is not None for p in parsed)
    if not nonblank or n_numbers < NUMERIC_SHARE * len(nonblank):
        written = [v.strip() for v in nonblank if _WRITTEN_NUMBER.fullmatch(v.strip())]
        as_text = (NumbersAsText(name, len(written), len(nonblank), tuple(written[:3]))
                   if written and n_numbers + len(written) >= NUMERIC_SHARE * len(nonblank)
                   else None)
        if as_text is None and n_numbers and 2 * n_numbers >= len(nonblank):
            # mostly numbers: a lab value beside "not done" became a category per value,
            # every test subject's value one no training subject has
            texts = sorted({v.strip() for v, p in zip(text, parsed, strict=True)
                            if v is not None and p is None})
            as_text = NumbersAsText(name, n_numbers, len(nonblank), tuple(texts[:3]),
                                    written=False)
        if as_text is None and n_numbers:  # a row's reason is logged where the row is made
            log.warning("table field %r: %d of %d non-blank values are numbers (under %d%%): "
                        "kept as text (categories)", name, n_numbers, len(nonblank),
                        round(100 * NUMERIC_SHARE))
        return pl.Series(name, text, dtype=pl.Utf8), [], as_text
    bad = [NonNumericValue(sid, name, v.strip())
           for sid, v, p in zip(ids, text, parsed, strict=True) if v is not None and p is None]
    if all(isinstance(p, int) for p in parsed if p is not None):
        return pl.Series(name, parsed, dtype=pl.Int64), bad, None
    return pl.Series(name, [None if p is None else float(p) for p in parsed],
                     dtype=pl.Float64), bad, None


def clean_table_fields(frame: pl.DataFrame, specs: list[ModalitySpec], source: str = ""
                       ) -> tuple[pl.DataFrame, list[NonNumericValue], list[NumbersAsText]]:
    """Table fields as the encoders need them, the same for every adapter.

    A blank or whitespace-only text cell, or a missing marker (:data:`MISSING_TEXTS`),
    becomes null. A text field where at least
    :data:`NUMERIC_SHARE` of the non-blank values are numbers (:func:`parse_number`), and
    that no tabular encoder reads as categories (``categorical``),
    becomes numeric (Int64 when every number is an integer, else Float64), and a float
    field keeps only finite values; each value that is not a number becomes null and is
    returned, unless a modality listing the field says ``non_numeric: error``: then an
    :class:`InputError` names every such value. A field kept as text whose values are
    mostly numbers (written with a comma or a percent sign, bounds, or plain numbers
    beside too many texts) is returned too (:class:`NumbersAsText`), for a QC row and a
    warning.
    """
    modes: dict[str, str] = {}
    categories = {f for spec in specs for f in spec.categorical}
    for spec in specs:
        for f in spec.fields if spec.is_table else ():
            modes[f] = "error" if "error" in (modes.get(f), spec.non_numeric) else "blank"
    ids = frame[SUBJECT].to_list()
    found: list[NonNumericValue] = []
    as_texts: list[NumbersAsText] = []
    columns = []
    for name in modes:
        col = frame.get_column(name)
        if name in categories:  # a code such as stage "X" is a category, not a bad number
            if col.dtype in (pl.Utf8, pl.Categorical, pl.Enum):
                # but "NA" is no category: it made a row of markers a present table
                columns.append(pl.Series(name, _without_markers(col), dtype=pl.Utf8))
            elif col.dtype.is_float():  # nor a NaN (a pandas-written 1.0,NaN,2.0)
                columns.append(col.fill_nan(None))
            continue
        if col.dtype in (pl.Utf8, pl.Categorical, pl.Enum):
            col, bad, as_text = _clean_text_field(name, ids, col)
            if as_text is not None:
                as_texts.append(as_text)
        elif col.dtype.is_float():
            values = col.to_list()
            # a NaN is the reader's "NaN" or "nan", a missing marker as "NA" is (it stopped
            # a build under non_numeric: error where "NA" did not); an infinity is no value
            bad = [NonNumericValue(sid, name, str(v)) for sid, v in zip(ids, values, strict=True)
                   if v is not None and math.isinf(v)]
            if not bad and not col.is_nan().any():
                continue
            col = pl.Series(name, [v if v is None or math.isfinite(v) else None
                                   for v in values], dtype=col.dtype)
        else:
            continue
        found += bad
        columns.append(col)
    if columns:
        frame = frame.with_columns(columns)
    fatal = [v for v in found if modes[v.field] == "error"]
    if fatal:
        shown = "; ".join(f"subject {v.subject_id!r}: {v.field} = {v.value!r}"
                          for v in fatal[:20]) + (" ..." if len(fatal) > 20 else "")
        named = sorted({v.field for v in fatal})
        raise InputError(
            f"{len(fatal)} value(s) that are not numbers in numeric table field(s) {named}: "
            f"{shown}. Fix them in the source, or set 'non_numeric: blank' on the table "
            "modality to record them as blank (QC status "
            f"{NON_NUMERIC!r})", path=source or None)
    for name in dict.fromkeys(v.field for v in found):
        values = [v for v in found if v.field == name]
        log.warning("table field %r is numeric: %d value(s) that are not numbers set to blank "
                    "(%s); see %s", name, len(values),
                    ", ".join(f"{v.subject_id}: {v.value!r}" for v in values[:5])
                    + (" ..." if len(values) > 5 else ""), ADAPTER_QC)
    return frame, found, as_texts


def _warn_list(what: str, ids: list[str]) -> None:
    shown = ", ".join(ids[:10]) + (f" ... (+{len(ids) - 10})" if len(ids) > 10 else "")
    log.warning("%d subject(s) %s: %s", len(ids), what, shown)


def _blank_labels(frame: pl.DataFrame, labels: list[str], source: str = ""
                  ) -> tuple[pl.DataFrame, list[str]]:
    """A label that is NaN, inf, blank or a missing marker (:data:`MISSING_TEXTS`)
    is a missing label (null), so every later step (the QC row below, the split,
    training) sees it as missing: a CSV reader turns the text "NaN" into a float NaN,
    which is not null, and left "NA" as text, which became a class of its own. A text
    label of numbers only (once markers are blanked, or cells stripped of padding) is the
    column of numbers; one number written two ways beside words ("1" and "1.0") and text
    labels that differ only in case ("Yes", "yes") are an :class:`InputError`; words
    beside numbers, and fractions beside whole numbers (a 1.5 among 0 and 1), stay
    classes of their own (a BI-RADS 4A beside 3 is one) and are said in the list
    returned beside the frame, for a QC row and a warning, naming both; so is a value of
    a few subjects far outside the other classes (:func:`_code_like_classes`)."""
    exprs = []
    for label in labels:
        col, dtype = pl.col(label), frame.schema[label]
        if dtype.is_float():
            exprs.append(pl.when(col.is_finite()).then(col).otherwise(None).alias(label))
        elif dtype == pl.Utf8:
            text = col.str.strip_chars()
            blank = text.str.to_lowercase().is_in(list(MISSING_TEXTS))
            exprs.append(pl.when(blank).then(None).otherwise(text).alias(label))
    before = frame
    frame = frame.with_columns(exprs) if exprs else frame
    said: list[str] = []
    for label in labels:
        if frame.schema[label] != pl.Utf8:
            continue
        values = sorted(frame[label].drop_nulls().unique().to_list())
        twins = _case_twins(values)
        if twins:  # "Yes" and "yes" were two classes, as IDs differing in case were two subjects
            raise InputError(f"label {label!r}: values that differ only in case (or in "
                             "how an accent is encoded) would be "
                             f"classes of their own: {twins[:10]}; write each class one way "
                             "in the source", path=source or None)
        numbers = {v: parse_number(v) for v in values}
        texts = sorted(v for v, n in numbers.items() if n is None)
        spelt: dict[float, list[str]] = {}
        for v, n in numbers.items():
            if n is not None:
                spelt.setdefault(float(n), []).append(v)
        twins = [sorted(vs) for vs in spelt.values() if len(vs) > 1]
        if not texts and (frame[label].null_count() > before[label].null_count() or twins) \
                and all(str(n) == v for v, n in numbers.items()):
            # numbers once "NA" is blanked, or a padded cell stripped: the column the
            # reader would have given (not "007" or "01", whose text is the class's name)
            kind = (pl.Int64 if all(isinstance(n, int) for n in numbers.values())
                    else pl.Float64)
            frame = frame.with_columns(pl.col(label).cast(kind))
            continue
        if twins:
            # "1" and "1.0" in a column of text (one stray word made it so) were two
            # classes of one value: the benchmark became a task of four classes
            raise InputError(f"label {label!r}: one number written two ways would be classes "
                             f"of their own: {sorted(twins)[:10]}; write each class one way "
                             "in the source", path=source or None)
        if texts and len(texts) < len(values):
            # words beside numbers ("yes", "1", "no", "0"): each its own class, said in the
            # cohort's QC (a log line alone was lost)
            said.append(f"label {label!r}: values {texts[:10]} are classes of their own "
                        f"beside the numbers {sorted(v for v in values if v not in texts)[:10]}"
                        "; blank them if they mean 'unknown', or write each class one way")
    for label in labels:
        if fractions := _fractions_beside_whole(frame[label]):
            # each value is a class: a typed 1.5 among 0 and 1 was a third one
            said.append(f"label {label!r}: values {fractions[0][:10]} are classes of their "
                        f"own beside the whole numbers {fractions[1][:10]}; write each class "
                        "as the number it is, or blank a value that is not one")
        if codes := _code_like_classes(frame[label]):
            # 999 beside 0 and 1 was a third class of its own, said nowhere
            said.append(f"label {label!r}: values {codes[0][:10]} are classes of their own, "
                        f"held by {codes[1]} subject(s) and far outside the other classes "
                        f"{codes[2][:10]}: a code for 'unknown'? Blank it in the source, "
                        "or keep it if it is a class")
    return frame, said


def _code_like_classes(column: pl.Series) -> tuple[list, int, list] | None:
    """(the values, the subjects holding them, the other classes) of a numeric label's
    classes that look like a code for a missing value: rare (under 5 subjects and 5 % of
    the labelled ones) and farther from the other classes than those span (999 or -9
    beside 0 and 1; not 2 beside them, nor -1 beside 1, a class of its own as often)."""
    numbers = _label_numbers(column)
    if numbers is None:
        return None
    # a number as it is (999), a text of one as its number (999.0: "999" kept as text
    # by a word elsewhere, or by no blank)
    counts: dict[Any, int] = {}
    for v, c in column.drop_nulls().value_counts().iter_rows():
        if v in numbers:
            key = v if column.dtype.is_numeric() else numbers[v]
            counts[key] = counts.get(key, 0) + c
    n = sum(counts.values())
    rare = {v for v, c in counts.items() if c < 5 and c < 0.05 * n}
    common = sorted(v for v in counts if v not in rare)
    # classes are a few values: days or scores of a regression target are no classes
    if not rare or len(common) < 2 or len(counts) > 20:
        return None
    span = common[-1] - common[0]
    far = sorted(v for v in rare if min(abs(v - common[0]), abs(v - common[-1])) > span
                 and not common[0] < v < common[-1])
    return (far, sum(counts[v] for v in far), common) if far else None


def _label_numbers(column: pl.Series) -> dict[Any, float] | None:
    """Each distinct value of a label column that is a number, as it is written (a
    number, or the text of one: a column kept as text by a word beside them), with its
    value, in order; None for a column neither of numbers nor of text."""
    if column.dtype.is_numeric():
        return {v: float(v) for v in column.drop_nulls().unique().sort().to_list()}
    if column.dtype == pl.Utf8:
        return {v: float(n) for v in sorted(column.drop_nulls().unique().to_list())
                if (n := parse_number(v)) is not None}
    return None


def _fractions_beside_whole(column: pl.Series) -> tuple[list, list] | None:
    """(the fractions, the whole numbers) of a label column holding both, as numbers or
    as the texts of numbers (a column kept as text by a word beside them); else None."""
    numbers = _label_numbers(column)
    if numbers is None:
        return None
    fractions = [v for v, n in numbers.items() if not n.is_integer()]
    whole = [v for v, n in numbers.items() if n.is_integer()]
    return (fractions, whole) if fractions and whole else None


def _unfetched(frame: pl.DataFrame, column: str
               ) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    """``frame`` with the paths of ``column`` that are symbolic links to nothing (files a
    DataLad or git-annex download has not fetched) set to None, and the (subject, path)
    of each."""
    paths = frame[column].to_list()
    hits = [(frame[SUBJECT][i], p) for i, p in enumerate(paths)
            if p is not None and is_dangling_link(p)]
    if hits:
        gone = {p for _, p in hits}
        frame = frame.with_columns(pl.Series(column, [None if p in gone else p for p in paths],
                                             dtype=pl.Utf8))
    return frame, hits


def _reject_unfetched(frame: pl.DataFrame, specs: list[ModalitySpec]
                      ) -> tuple[pl.DataFrame, list[QCRecord], list[QCRecord]]:
    """Subjects whose modality's path is a symbolic link to nothing lose it (rejected,
    :data:`DANGLING_LINK`); a mask that is one (BraTS's segmentation, IXI's brain mask) is
    no mask, with a skipped QC row: listed, it had failed the subject at encode time as
    "volume file not found", naming the mask as if it were the volume. Returns the frame,
    the modalities' rejections and the masks' rows."""
    rejected: list[QCRecord] = []
    masks: list[QCRecord] = []
    for spec in specs:
        frame, hits = _unfetched(frame, spec.column)
        rejected += [QCRecord(sid, spec.name, REJECTED, DANGLING_LINK, p) for sid, p in hits]
        if mask_column(spec.name) in frame.columns:
            frame, hits = _unfetched(frame, mask_column(spec.name))
            masks += [QCRecord(sid, spec.name, SKIPPED, f"its mask, {DANGLING_LINK}: no mask",
                               p) for sid, p in hits]
    return frame, rejected, masks


def _verdicts_last(qc: list[QCRecord]) -> list[QCRecord]:
    """``qc`` with a subject's absent or rejected verdict on a modality moved after the
    notes on it (``skipped``: a stray file in its case folder, a mask link to nothing),
    every other row where it was. The encoders read the last row of a subject's modality
    as the adapter's word on it when it has no file (``mmpipe.encode.inputs``): a BraTS
    case with a stray file read as "absent, file notes.txt skipped" where the adapter had
    rejected its two T1 files, and the rejection was lost from every QC record. A present
    verdict is not read so (the file is), and stays where it was: a cohort without such a
    pair keeps its QC table as it was, and reruns nothing."""
    verdicts = (ABSENT, REJECTED)
    last_note = {(r.subject_id, r.modality): i for i, r in enumerate(qc)
                 if r.status == SKIPPED}
    moved: dict[int, list[QCRecord]] = {}
    out = []
    for i, rec in enumerate(qc):
        after = last_note.get((rec.subject_id, rec.modality), -1)
        if rec.status in verdicts and after > i:
            moved.setdefault(after, []).append(rec)
        else:
            out.append(rec)
        out += moved.pop(i, [])
    return out


def _reject_shared_files(frame: pl.DataFrame, specs: list[ModalitySpec]
                         ) -> tuple[pl.DataFrame, list[QCRecord]]:
    """Subjects whose modality is one file or folder (a copy-paste error in a table, two
    links to one file, a release's list naming one exam for two patients), or lies inside
    another subject's folder (a series folder under another patient's: the DICOM reader
    walks a folder's whole tree), lose it, each with a QC row naming the others: the same
    image under two subjects can land in both training and test, under two labels. Across
    modalities too (one file as one subject's CT and another's MRI)."""
    ids = frame[SUBJECT].to_list()
    columns = {spec.name: frame[spec.column].to_list() for spec in specs}
    # (real path, subject row, modality) of every path
    entries = sorted((os.path.realpath(p), i, spec.name) for spec in specs
                     for i, p in enumerate(columns[spec.name]) if p is not None)
    reals = [e[0] for e in entries]
    clash: dict[tuple[int, str], tuple[str, set[str]]] = {}  # (row, modality) -> why, whom
    for real, i, name in entries:
        # the same path, and the paths under it when it is a folder (sorted: a range)
        near = entries[bisect.bisect_left(reals, real):bisect.bisect_right(reals, real)]
        if os.path.isdir(real):
            near += entries[bisect.bisect_left(reals, real + os.sep):
                            bisect.bisect_left(reals, real + chr(ord(os.sep) + 1))]
        for other, j, other_name in near:
            if ids[j] == ids[i]:
                continue
            inside = other != real
            for row, mod, why in ((i, name, "a folder holding the file(s) of" if inside
                                   else "the same file as"),
                                  (j, other_name, "inside the folder of" if inside
                                   else "the same file as")):
                partner = ids[j] if row == i else ids[i]
                clash.setdefault((row, mod), (why, set()))[1].add(partner)
    qc: list[QCRecord] = []
    for (row, mod), (why, others) in sorted(clash.items()):
        qc.append(QCRecord(ids[row], mod, REJECTED, f"{why} subject(s) {sorted(others)}",
                           columns[mod][row]))
        columns[mod][row] = None
    if clash:
        frame = frame.with_columns([pl.Series(spec.column, columns[spec.name], dtype=pl.Utf8)
                                    for spec in specs])
    return frame, qc


def finalize_manifest(cohort: str, adapter: str, out: AdapterOutput) -> Manifest:
    """Enforce the contract on an adapter's output and derive the full QC table."""
    columns = _check_columns(out)
    frame = out.frame.select(columns).with_columns(
        pl.col(SUBJECT).cast(pl.Utf8).str.strip_chars()
    )
    check_subject_ids(frame[SUBJECT], out.source)
    check_split_groups(frame, out.source)
    frame, mixed_labels = _blank_labels(frame, out.labels, out.source)
    frame, non_numeric, as_text = clean_table_fields(frame, list(out.modalities.values()),
                                                     out.source)
    blanked: dict[str, list[NonNumericValue]] = {}
    for v in non_numeric:
        blanked.setdefault(v.subject_id, []).append(v)

    path_specs = [s for s in out.modalities.values() if not s.is_table]
    if path_specs:
        frame = frame.with_columns(
            pl.when(pl.col(s.column).cast(pl.Utf8).str.strip_chars() == "")
            .then(None)
            .otherwise(pl.col(s.column).cast(pl.Utf8))
            .alias(s.column)
            for s in path_specs
        )
    frame, dangling, unfetched_masks = _reject_unfetched(frame, path_specs)
    frame, shared = _reject_shared_files(frame, path_specs)

    given: dict[tuple[str, str], QCRecord] = {}
    subjects = set(frame[SUBJECT].to_list())
    for rec in out.qc:
        key = (rec.subject_id, rec.modality)
        if rec.subject_id not in subjects or rec.modality not in out.modalities:
            raise ValueError(f"adapter QC record for unknown subject/modality {key}")
        if key in given:
            raise ValueError(f"adapter gave two QC records for {key}")
        given[key] = rec
    given.update({(rec.subject_id, rec.modality): rec for rec in (*dangling, *shared)})

    rows = frame.to_dicts()
    qc: list[QCRecord] = []
    keep: list[bool] = []
    excluded: list[str] = []
    label_missing: list[str] = []
    no_part: list[str] = []   # kept, labelled, and in no part of the user's split
    for row in rows:
        sid = row[SUBJECT]
        any_present = False
        for spec in out.modalities.values():
            if spec.is_table:
                present = any(row[f] is not None for f in spec.fields)
                rec = (QCRecord(sid, spec.name, PRESENT) if present
                       else QCRecord(sid, spec.name, ABSENT, "all fields missing"))
            else:
                path = row[spec.column]
                rec = given.get((sid, spec.name))
                if path is not None:
                    if rec is not None and rec.status != PRESENT:
                        raise ValueError(f"adapter marked {sid}/{spec.name} {rec.status} "
                                         f"but gave a path {path}")
                    rec = QCRecord(sid, spec.name, PRESENT, "", path)
                elif rec is None:
                    rec = QCRecord(sid, spec.name, ABSENT, "not available")
                elif rec.status not in (ABSENT, REJECTED):
                    raise ValueError(f"adapter marked {sid}/{spec.name} {rec.status} "
                                     "without a path")
            any_present |= rec.status == PRESENT
            qc.append(rec)
            if spec.is_table:
                qc += [QCRecord(sid, spec.name, NON_NUMERIC, v.reason)
                       for v in blanked.get(sid, []) if v.field in spec.fields]
        keep.append(any_present)
        if not any_present:
            excluded.append(sid)
            qc.append(QCRecord(sid, ALL_MODALITIES, EXCLUDED, NO_MODALITY))
            continue
        missing = [lab for lab in out.labels if row[lab] is None]
        if out.split is not None and len(missing) < len(out.labels) \
                and out.split.parts.get(sid) is None:
            no_part.append(sid)
        if missing:
            label_missing.append(sid)
            reason = LABEL_MISSING if len(out.labels) == 1 else f"{LABEL_MISSING}: {', '.join(missing)}"
            qc.append(QCRecord(sid, LABEL_QC, ABSENT, reason))

    if no_part:
        # An error, not a QC row: the user's split is the protocol published results are
        # compared on; putting such a subject in training, or leaving it out, would
        # silently change that protocol. The user says which part it belongs to, or
        # blanks its label.
        assert out.split is not None
        raise InputError(
            f"{len(no_part)} subject(s) with a label have no part in the cohort's split "
            f"({out.split.where}): {_shown([repr(s) for s in no_part])}. Give each a part "
            f"({', '.join(SPLIT_PARTS)}), or blank its label to leave it out",
            path=out.source or None)
    if excluded:
        _warn_list(f"excluded from the manifest of {cohort!r} ({NO_MODALITY})", excluded)
    if label_missing:
        _warn_list(f"of {cohort!r} kept with a missing label", label_missing)
    frame = frame.filter(pl.Series(keep, dtype=pl.Boolean))
    split_meta = None
    if out.split is not None:
        parts = [out.split.parts.get(sid) for sid in frame[SUBJECT].to_list()]
        frame = frame.with_columns(pl.Series(SPLIT, parts, dtype=pl.Utf8))
        fixed = fixed_parts(parts)
        counts = {p: parts.count(p) for p in SPLIT_PARTS} | {"none": parts.count(None)}
        split_meta = {"source": out.split.source, "where": out.split.where,
                      "fixed": list(fixed), "counts": counts}
        drawn = ("" if fixed == SPLIT_PARTS else
                 "; train and val are drawn inside its training part for each seed")
        qc.append(QCRecord(ALL_SUBJECTS, SPLIT_QC, FIXED,
                           f"{', '.join(fixed)} fixed by the cohort's split "
                           f"({out.split.where}) for every seed{drawn}"))
        log.info("cohort %r: %s", cohort, qc[-1].reason)
        if across := _groups_across_parts(frame, parts):
            # kept as the published split gives them: said where a reader of the cohort's
            # QC looks, not only in a split job's log
            qc.append(QCRecord(ALL_SUBJECTS, SPLIT_QC, GROUPS_ACROSS, across))
            log.warning("cohort %r: %s", cohort, across)
    for rec in out.source_qc:
        if rec.subject_id != ALL_SUBJECTS and rec.subject_id not in subjects:
            raise ValueError(f"adapter source QC record for unknown subject {rec.subject_id}")
        if rec.modality not in out.modalities and rec.modality != LABEL_QC:
            raise ValueError(f"adapter source QC record for unknown modality {rec.modality}")
    qc += out.source_qc + unfetched_masks
    for reason in mixed_labels:
        qc.append(QCRecord(ALL_SUBJECTS, LABEL_QC, MIXED_CLASSES, reason, out.source))
        log.warning("cohort %r: %s", cohort, reason)
    for field_as_text in as_text:
        qc.append(QCRecord(ALL_SUBJECTS, COLUMN_QC, NUMBERS_AS_TEXT, field_as_text.reason,
                           out.source))
        log.warning("cohort %r: %s", cohort, field_as_text.reason)
    fields = list(dict.fromkeys(f for s in out.modalities.values() if s.is_table
                                for f in s.fields))
    for status, reasons in ((CASE_VARIANTS, case_variants(frame, fields)),
                            (LABEL_PROXY, label_proxies(frame, fields, out.labels))):
        for reason in reasons:
            qc.append(QCRecord(ALL_SUBJECTS, COLUMN_QC, status, reason, out.source))
            log.warning("cohort %r: %s", cohort, reason)
    for file, column in out.unused_columns:
        # the file's name in the words, its path in the record's path: a project copied
        # elsewhere keeps the same verdicts (the stage-1 summary compares them)
        qc.append(QCRecord(ALL_SUBJECTS, COLUMN_QC, UNUSED,
                           f"column {column!r} of {Path(file).name} is not used by the "
                           "config", file))
    if out.unused_columns:
        log.warning("cohort %r: %d column(s) of the source not used by the config: %s "
                    "(see %s)", cohort, len(out.unused_columns),
                    ", ".join(c for _, c in out.unused_columns), ADAPTER_QC)

    qc = _verdicts_last(qc)
    qc_df = qc_frame({SUBJECT: r.subject_id, "modality": r.modality, "stage": "adapter",
                      "status": r.status, "reason": r.reason, "path": r.path} for r in qc)
    counts = {}
    kept_qc = qc_df.filter(pl.col(SUBJECT).is_in(frame[SUBJECT].implode()))
    # a subject excluded for want of any modality may have had one rejected (a renamed
    # file, an unreadable folder): counted apart, where the kept subjects' counts lost it
    dropped_qc = qc_df.filter(pl.col(SUBJECT).is_in(excluded))
    for spec in out.modalities.values():
        sub = kept_qc.filter(pl.col("modality") == spec.name)["status"].to_list()
        counts[spec.name] = {s: sub.count(s) for s in (PRESENT, ABSENT, REJECTED)}
        of_excluded = dropped_qc.filter((pl.col("modality") == spec.name)
                                        & (pl.col("status") == REJECTED)).height
        if of_excluded:
            counts[spec.name]["rejected_of_excluded"] = of_excluded
        if counts[spec.name][REJECTED] or of_excluded:
            log.warning("cohort %r: %d subject(s) with %s rejected%s (see %s)", cohort,
                        counts[spec.name][REJECTED] + of_excluded, spec.name,
                        f", {of_excluded} of them excluded for want of any other modality"
                        if of_excluded else "", ADAPTER_QC)
    meta = {
        "cohort": cohort,
        "adapter": adapter,
        "labels": list(out.labels),
        "modalities": {name: spec.meta() for name, spec in out.modalities.items()},
        "n_subjects": frame.height,
        "extra_columns": list(out.extra_columns),
        "n_excluded": len(excluded),
        "n_label_missing": len(label_missing),
        "counts": counts,
        "non_numeric_blanked": dict(Counter(v.field for v in non_numeric)),
        "source": out.source,
        "root": out.root or out.source,
        "split": split_meta,
        "unused_columns": [{"file": f, "column": c} for f, c in out.unused_columns],
    }
    return Manifest(frame=frame, qc=qc_df, meta=meta)
