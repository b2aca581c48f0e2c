"""The ``adni`` adapter: ADNI-style MRI and PET as LONI IDA downloads them, with ADNIMERGE.

Layout under ``root``:

- ``ADNI/<PTID>/<series description>/<YYYY-MM-DD_HH_MM_SS.0>/<image ID>/*.nii(.gz)``:
  one NIfTI per scan (LONI's NIfTI download; ``PTID`` as ``002_S_0295``). A scan belongs
  to the modality whose ``adni.series`` regular expression matches its series
  description folder (default: ``mri`` for MPRAGE, ``pet`` for FDG: a description that
  names FDG or starts with LONI's co-registration stages, ``Co-registered...`` /
  ``Coreg,...``, which amyloid and tau PET prefix with their tracer, ``AV45_Coreg...``,
  so they are not read as FDG); other series are not read.
- ``ADNIMERGE.csv`` (or ``adni.table``): one row per subject and visit, ``PTID``,
  ``VISCODE``, ``EXAMDATE`` (``YYYY-MM-DD``), ``DX`` (``CN``, ``MCI``, ``Dementia``; the
  older coding's ``NL`` and conversions, ``MCI to Dementia``, read as the diagnosis after
  "to", NL as CN) and the rest (``AGE``, ``PTGENDER``, ``MMSE``, ... can be fields of a ``table`` modality).
  ADNI's diagnostic groups are assigned partly by MMSE, CDR and Logical Memory II
  thresholds (Petersen et al., Neurology 2010): ``MMSE``, ``CDRSB`` or ``LDELTOTAL`` as
  inputs beside a ``diagnosis`` or ``ad_vs_cn`` label are near-proxies of it, which a
  method comparison should leave out or report as such.

One visit per subject, by the rule ``adni.visit``: ``baseline`` (the ``bl`` visit, the
default) or ``first_with_all`` (the earliest visit with a diagnosis at which every
configured imaging modality has a scan). A scan belongs to a visit when its date is
within ``adni.max_days`` (default 90) of the visit's ``EXAMDATE`` and no nearer another
of the subject's visits (then it is that visit's); of several, the closest by date.
Scans of one day (ADNI's MPRAGE and the back-to-back MPRAGE_Repeat): the first acquired,
by the time in the date folder. Two equally close scans on different days, or two of the
same time (one scan in two processing stages: narrow ``adni.series`` to one), reject the
modality, naming both. Natural missingness is a modality without a scan at the chosen
visit. The subjects are those with a scan of a configured imaging modality (ADNIMERGE
lists everyone in the study, not what was downloaded); a ``table`` modality's fields
(never ``DX`` or ``DX_bl``, which the labels are) come from the chosen visit's row.
ADNIMERGE's ``AGE`` is the age at baseline on every row (TADPOLE's pipeline adds
``Years_bl``): under ``first_with_all`` the field ``AGE`` is ``AGE + Years_bl``, the age
at the chosen visit, blank where either is not a number, and the table must have
``Years_bl``; a later visit's row gave its subject the baseline age, younger by the
years to the visit (more for those whose scans came later).

Labels: ``diagnosis`` (``DX`` at the chosen visit) and ``ad_vs_cn`` (``AD`` / ``CN``;
blank for MCI, the HyperMM task); a visit without a diagnosis leaves them blank with a
QC row. Rows of one subject and ``VISCODE`` are one visit where they agree on what is
read (``EXAMDATE``, ``DX``, the fields); where they disagree and the rule chooses that
visit, the subject has no label and no scan, with a ``conflict`` QC row naming the
columns. NIfTI files that do not sit at the layout's depth, image folders without one (a
DICOM download) and date folders that are not a date are skipped with a QC row; a scan
folder with several NIfTI files is rejected, naming them, and one holding a file LONI
named for another subject (``ADNI_<PTID>_...``) cannot be read. A dated scan that cannot
be read (an image folder without NIfTI, a NIfTI in the date folder) still counts as a
scan, as does a date folder without an image folder (an extraction cut short): nearer
the visit than every readable one, it rejects the modality, naming it,
where a farther scan was taken in its place or the modality called missing by nature; a
download without a single NIfTI scan is refused.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
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
    modality_specs,
    refuse_label_sources,
)
from mmpipe.cohorts.manifest_files import ALL_SUBJECTS, SUBJECT
from mmpipe.cohorts.source_csv import read_source_csv
from mmpipe.errors import ConfigError, InputError

log = logging.getLogger(__name__)

TABLE = "ADNIMERGE.csv"
DEFAULT_SERIES = {"mri": r"(?i)mp-?rage", "pet": r"(?i)fdg|^co-?reg"}
# the table columns the labels are read from: never inputs
LABEL_SOURCES = {"diagnosis": ("DX", "DX_bl"), "ad_vs_cn": ("DX", "DX_bl")}
LABELS = ("diagnosis", "ad_vs_cn")
DIAGNOSES = ("CN", "MCI", "Dementia")
# ADNIMERGE before 2017 (and TADPOLE) write DX as NL, MCI, Dementia and the conversions
# since the last visit, "NL to MCI", "MCI to Dementia", ...: the diagnosis is the one after
# "to" (ADNI's DXCHANGE codes 4-9), and NL is CN
_OLD_DX = {"NL": "CN"}
CONFLICT = "conflict"
VISITS = ("baseline", "first_with_all")
# ADNIMERGE's age at baseline, and the years from baseline to a row's visit
AGE, YEARS_BL = "AGE", "Years_bl"
_TIE = "two"  # how _match's reason for a tie begins
_UNREADABLE = "the nearest"  # and for a nearest scan that cannot be read
DATE_FOLDER = re.compile(r"^(\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2})(\.\d+)?$")
NIFTI = (".nii", ".nii.gz")
# LONI names each file for its subject: ADNI_002_S_0295_MR_MPRAGE_br_raw_..._I13722.nii
LONI_NAME = re.compile(r"^ADNI_(\d{3}_S_\d{4})_")
_DEPTH = ("a NIfTI file outside an image-ID folder (the layout is "
          "<PTID>/<series>/<date>/<image ID>/*.nii)")
_NO_NIFTI = "no NIfTI file in the image folder (the adapter reads LONI's NIfTI download)"
_NO_IMAGE = "no image folder in the scan-date folder (an extraction cut short, or emptied)"


@dataclass(frozen=True)
class Scan:
    modality: str
    taken: dt.datetime  # the acquisition date and time of its date folder
    files: tuple[Path, ...]
    folder: Path
    # why it cannot be read (a DICOM download, a NIfTI above its image folder): never
    # chosen, but nearer the visit than every readable scan it rejects the modality, where
    # a farther scan had been taken in its place, or the modality called missing by nature
    problem: str = ""

    @property
    def date(self) -> dt.date:
        return self.taken.date()


def _diagnosis(raw: str | None) -> str | None:
    """``DX`` as one of :data:`DIAGNOSES`, read in the current or the older coding; None
    for a blank or another value."""
    dx = (raw or "").strip()
    dx = dx.rsplit(" to ", 1)[-1].strip()
    dx = _OLD_DX.get(dx, dx)
    return dx if dx in DIAGNOSES else None


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(text).strip()[:10])
    except ValueError:
        return None


def scan_images(images: Path, series: dict[str, re.Pattern[str]]
                ) -> tuple[dict[str, list[Scan]], list[QCRecord]]:
    """Every scan of a configured modality, by PTID; QC rows of what is skipped (a subject
    folder none of whose series a pattern matches among them: a T1 named otherwise, as
    ADNI1's standardised ``MPR__GradWarp__B1_Correction__N3__Scaled`` or GE's
    ``IR-FSPGR``, left the subject out of the cohort with nothing said; and the unread
    series of a subject that has no series of some modality, whose T1 so named read as
    missing by nature beside its PET)."""
    scans: dict[str, list[Scan]] = defaultdict(list)
    qc: list[QCRecord] = []
    unmatched: list[str] = []
    for subject in sorted(p for p in images.iterdir() if p.is_dir()):
        descriptions = sorted(p for p in subject.iterdir() if p.is_dir())
        # each series folder's modalities by the patterns, searched once
        matching = {d.name: [m for m, rx in series.items() if rx.search(d.name)]
                    for d in descriptions}
        other = [name for name, found in matching.items() if not found]
        listed = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
        if descriptions and len(other) == len(descriptions):
            unmatched.append(subject.name)
            qc.append(QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED, f"subject folder "
                               f"{subject.name} skipped: none of its series ({listed}) "
                               "matches a pattern of adni.series", str(subject)))
        elif other and (lacking := [m for m in series if not any(
                m in found for found in matching.values())]):
            # a T1 named otherwise beside a matched PET: its MRI read as missing by
            # nature, with nothing said, where the scan was on disk (a subject with a
            # series of every modality has its localizers left unsaid)
            qc.append(QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED, f"{subject.name} has no "
                               f"{' or '.join(lacking)} series that adni.series matches; "
                               f"series not read: {listed}", str(subject)))
        for description in descriptions:
            if not matching[description.name]:
                continue
            modality = matching[description.name][0]
            for date_dir in sorted(p for p in description.iterdir() if p.is_dir()):
                m = DATE_FOLDER.match(date_dir.name)
                try:
                    taken = dt.datetime.strptime(m.group(1), "%Y-%m-%d_%H_%M_%S") if m else None
                except ValueError:  # the right shape, not a date (2006-02-30)
                    taken = None
                if taken is None:
                    qc.append(QCRecord(ALL_SUBJECTS, modality, SKIPPED, "not a "
                                       "YYYY-MM-DD_HH_MM_SS.0 scan-date folder", str(date_dir)))
                    continue

                def unreadable(where: Path, why: str, taken=taken, modality=modality,
                               subject=subject, qc=qc) -> None:
                    """A dated scan that cannot be read, and its QC row: nearer the visit
                    than every readable one, it rejects the modality where a farther
                    scan had been taken in its place with nothing said."""
                    qc.append(QCRecord(ALL_SUBJECTS, modality, SKIPPED, why, str(where)))
                    scans[subject.name].append(Scan(modality, taken, (), where, why))

                inside = sorted(date_dir.iterdir())
                if not any(p.is_dir() or p.name.endswith(NIFTI) for p in inside):
                    unreadable(date_dir, _NO_IMAGE)
                for image_dir in inside:
                    if not image_dir.is_dir():
                        if image_dir.name.endswith(NIFTI):
                            unreadable(image_dir, _DEPTH)
                        continue
                    # not macOS's "._" metadata beside a copied file
                    files = tuple(p for p in folder_files(image_dir)
                                  if p.name.endswith(NIFTI) and not p.name.startswith("."))
                    strays = [(p.name, named[1]) for p in files
                              if (named := LONI_NAME.match(p.name)) and named[1] != subject.name]
                    if strays:  # a scan of another subject moved or copied in here
                        unreadable(image_dir, f"{strays[0][0]} is named for subject "
                                              f"{strays[0][1]}, not {subject.name}")
                    elif files:
                        scans[subject.name].append(Scan(modality, taken, files, image_dir))
                    else:  # a DICOM download: kept as a scan that cannot be read
                        unreadable(image_dir, _NO_NIFTI)
            qc += [QCRecord(ALL_SUBJECTS, modality, SKIPPED, _DEPTH, str(p))
                   for p in sorted(description.iterdir())
                   if p.is_file() and p.name.endswith(NIFTI)]
    if unmatched:
        log.warning("adni: %d downloaded subject folder(s) hold no series that adni.series "
                    "matches, and are not in the cohort: %s", len(unmatched),
                    ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else ""))
    return scans, qc


def _visits(table: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in table.iter_rows(named=True):
        if row["PTID"]:
            by_subject[row["PTID"].strip()].append(row)
    for rows in by_subject.values():
        rows.sort(key=lambda r: (_date(r["EXAMDATE"]) or dt.date.max))
    return by_subject


def _twins_disagree(row: dict[str, Any], rows: list[dict[str, Any]], read: list[str]
                    ) -> str | None:
    """Why the visit of ``row`` cannot be read: other rows of the subject list the same
    ``VISCODE`` with other values of what is ``read``; None when none does (a blank
    VISCODE names no visit to compare)."""
    code = (row["VISCODE"] or "").strip()
    if not code:
        return None
    twins = [r for r in rows if (r["VISCODE"] or "").strip() == code]
    differ = [c for c in read if len({(r[c] or "").strip() for r in twins}) > 1]
    return (f"{len(twins)} ADNIMERGE rows list visit {code} and disagree on "
            f"{', '.join(differ)}") if differ else None


def _match(visit_date: dt.date | None, scans: list[Scan], modality: str, max_days: int,
           others: dict[dt.date, str] | None = None) -> tuple[Scan | None, str]:
    """The scan of ``modality`` closest to the visit within ``max_days``; or why none.
    A scan nearer another of the subject's visits (``others``: their EXAMDATE and
    VISCODE) is that visit's: ADNI-GO/2 scan at screening, m03 and m06, and a baseline
    without its MPRAGE had the month-3 one, 85 days off, as its own, with nothing said
    (Clinica's ADNI conversion likewise gives each image to its nearest visit)."""
    if visit_date is None:
        return None, "the visit has no EXAMDATE"
    near = sorted(((abs((s.date - visit_date).days), s) for s in scans
                   if s.modality == modality and abs((s.date - visit_date).days) <= max_days),
                  key=lambda t: (t[0], t[1].taken))
    # each scan's nearer other visit, or None where none is nearer
    owners = [min(((abs((s.date - d).days), d) for d in others or {}
                   if abs((s.date - d).days) < days), default=None) for days, s in near]
    if near and all(owners):
        (days, s), visit = near[0], owners[0][1]
        return None, (f"no {modality} scan of the visit ({visit_date}): the nearest "
                      f"within {max_days} days, {days} days from it, is nearer visit "
                      f"{others[visit]} ({visit}): {s.folder}")
    near = [t for t, owner in zip(near, owners, strict=True) if owner is None]
    if not near:
        return None, f"no {modality} scan within {max_days} days of the visit ({visit_date})"
    readable = [(days, s) for days, s in near if not s.problem]
    days, nearest = near[0]
    if nearest.problem and (not readable
                            or (readable[0][0], readable[0][1].taken) > (days, nearest.taken)):
        return None, (f"{_UNREADABLE} {modality} scan, {days} days from the visit, cannot be "
                      f"read: {nearest.problem}: {nearest.folder}")
    near = readable  # one that cannot be read, as near as a readable one, is passed over
    closest = [s for days, s in near if days == near[0][0]]
    # one day's scans: the first acquired; two days as close, or two scans of one time
    # (a scan in two processing stages), are not ours to choose between
    if len(closest) > 1 and (len({s.date for s in closest}) > 1
                             or closest[1].taken == closest[0].taken):
        return None, (f"{_TIE} {modality} scans {near[0][0]} days from the visit: "
                      f"{closest[0].folder} and {closest[1].folder}")
    return closest[0], ""


def _other_visits(rows: list[dict[str, Any]], visit_date: dt.date | None
                  ) -> dict[dt.date, str]:
    """The subject's visits on other dates than ``visit_date``: EXAMDATE to VISCODE."""
    others: dict[dt.date, str] = {}
    for r in rows:
        when = _date(r["EXAMDATE"])
        if when is not None and when != visit_date:
            others.setdefault(when, (r["VISCODE"] or "").strip() or "(no VISCODE)")
    return others


def _scanned(visit_date: dt.date | None, scans: list[Scan], modality: str, max_days: int,
             others: dict[dt.date, str]) -> bool:
    """Whether the visit has a scan of ``modality`` (``visit: first_with_all``): one, or
    two as close that are not ours to choose between. Such a visit is the subject's, its
    modality rejected naming both; passed over, the subject was read as scanned at a
    later visit or at none (missing by nature), and the tie was in no record."""
    scan, why = _match(visit_date, scans, modality, max_days, others)
    return scan is not None or why.startswith((_TIE, _UNREADABLE))


def _scanned_in_all(row: dict[str, Any], rows: list[dict[str, Any]], scans: list[Scan],
                    imaging: list[str], max_days: int) -> bool:
    """Whether the visit of ``row`` has a scan of every modality of ``imaging``
    (:func:`_scanned`), among the subject's visits ``rows``."""
    when = _date(row["EXAMDATE"])
    others = _other_visits(rows, when)
    return all(_scanned(when, scans, m, max_days, others) for m in imaging)


def _age_at_visit(row: dict[str, Any]) -> str | None:
    """``AGE + Years_bl`` of an ADNIMERGE row (to two decimals, "74.3" not "74.30"), or
    None where either is not a number."""
    try:
        return f"{round(float(row[AGE]) + float(row[YEARS_BL]), 2):g}"
    except (KeyError, TypeError, ValueError):
        return None


def check_config(cohort_cfg: dict) -> None:
    """What the layout fixes: the labels the adapter derives, volume modalities each with
    the regular expression of its series, the visit rule; a :class:`ConfigError` on the
    first thing wrong."""
    cfg = cohort_cfg.get("adni") or {}
    labels = cohort_labels(cohort_cfg)
    unknown = [lab for lab in labels if lab not in LABELS]
    if unknown:
        raise ConfigError(f"adni labels {unknown}: the adapter derives {list(LABELS)}")
    visit_rule = cfg.get("visit", "baseline")
    if visit_rule not in VISITS:
        raise ConfigError(f"adni.visit is one of {list(VISITS)}, not {visit_rule!r}")
    specs = modality_specs(cohort_cfg)
    refuse_label_sources("adni", specs, labels, LABEL_SOURCES)
    for m, spec in specs.items():
        if not spec.is_table and spec.kind != "volume":
            raise ConfigError(f"adni provides {m!r} as kind 'volume', not {spec.kind!r}")
    _series(cohort_cfg, specs)


def _series(cohort_cfg: dict, specs: dict) -> dict[str, re.Pattern]:
    """Each volume modality's pattern of series descriptions (``adni.series`` over the
    defaults)."""
    patterns = {**DEFAULT_SERIES, **((cohort_cfg.get("adni") or {}).get("series") or {})}
    imaging = [m for m, s in specs.items() if not s.is_table]
    for m in imaging:
        if m not in patterns:
            raise ConfigError(f"adni modality {m!r}: give the regular expression of its series "
                              "descriptions in adni.series")
    try:
        return {m: re.compile(patterns[m]) for m in imaging}
    except re.error as e:
        raise ConfigError(f"adni.series: not a regular expression: {e}") from e


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    root = dataset_root(cohort_cfg, base_dir, "adni", f"ADNI/ and {TABLE}")
    cfg = cohort_cfg.get("adni") or {}
    labels = cohort_labels(cohort_cfg)
    visit_rule = cfg.get("visit", "baseline")
    max_days = int(cfg.get("max_days", 90))
    specs = modality_specs(cohort_cfg)
    imaging = [m for m, s in specs.items() if not s.is_table]
    series = _series(cohort_cfg, specs)

    table_path = config_path(cfg["table"], base_dir) if cfg.get("table") else root / TABLE
    if not table_path.is_file():
        # LONI names its current downloads by date (ADNIMERGE_18Feb2025.csv)
        dated = sorted(p.name for p in root.glob("ADNIMERGE*.csv")) if root.is_dir() else []
        raise InputError("ADNIMERGE table not found" + (
            f"; {root} holds {', '.join(dated)}: name the one to read in adni.table"
            if dated and not cfg.get("table") else ""), path=table_path)
    table = read_source_csv(table_path, all_text=True)
    need = ["PTID", "VISCODE", "EXAMDATE", "DX"]
    fields = list(dict.fromkeys(f for s in specs.values() for f in s.fields))
    absent = [c for c in need if c not in table.columns]
    if absent:
        raise InputError(f"lacks column(s) {absent} (has {table.columns[:20]}...)",
                         path=table_path)
    absent = [f for f in fields if f not in table.columns]
    if absent:
        raise ConfigError(f"{table_path}: column(s) {absent} not in the table")
    age_at_visit = visit_rule != "baseline" and AGE in fields
    if age_at_visit and YEARS_BL not in table.columns:
        raise InputError(f"has no {YEARS_BL} column: its {AGE} is the age at baseline on "
                         f"every row, and under adni.visit: {visit_rule} the field {AGE} is "
                         f"the age at the chosen visit, {AGE} + {YEARS_BL}", path=table_path)
    images = root / "ADNI"
    if not images.is_dir():
        raise InputError("folder ADNI/ (LONI's download) not found", path=images)
    scans, source_qc = scan_images(images, series)
    if imaging and not scans:
        raise InputError(f"no series folder of a subject matches adni.series for {imaging} "
                         f"({', '.join(f'{m}: {rx.pattern}' for m, rx in series.items())})",
                         path=images)
    if imaging and not any(not s.problem for own in scans.values() for s in own):
        raise InputError(f"no scan of {imaging} with a NIfTI file in its image folder "
                         f"({sum(len(own) for own in scans.values())} without one): the "
                         "adapter reads LONI's NIfTI download, not its DICOM one", path=images)
    visits = _visits(table)
    read = ["EXAMDATE", "DX", *fields, *([YEARS_BL] if age_at_visit else [])]

    # ADNIMERGE lists the whole study: the cohort is what was downloaded
    ids = sorted(scans) if imaging else sorted(visits)
    not_downloaded = len(set(visits) - set(ids))
    if not_downloaded:
        log.info("adni: %d ADNIMERGE subject(s) have no scan of %s in %s; not in the cohort",
                 not_downloaded, imaging, images)
    frame: dict[str, list[Any]] = {SUBJECT: ids, "viscode": [], "examdate": []}
    columns: dict[str, list[Any]] = {specs[m].column: [] for m in imaging}
    qc: list[QCRecord] = []
    diagnosis: list[str | None] = []
    chosen_rows: list[dict[str, Any]] = []
    for sid in ids:
        rows, own = visits.get(sid, []), scans.get(sid, [])
        undated = None
        if visit_rule == "baseline":
            row = next((r for r in rows if (r["VISCODE"] or "").strip() == "bl"), None)
        elif undated := next((r for r in rows if _diagnosis(r["DX"])
                              and (r["EXAMDATE"] or "").strip()
                              and _date(r["EXAMDATE"]) is None), None):
            # which visit with a diagnosis came first cannot be told: a later one would be
            # taken in its place (a row without one could never be chosen)
            row = None
        else:
            row = next((r for r in rows if _diagnosis(r["DX"])
                        and _scanned_in_all(r, rows, own, imaging, max_days)), None)
        # rows of the chosen visit that agree are one visit; where they disagree, whichever
        # came first in the table was taken without a word
        conflict = _twins_disagree(row, rows, read) if row is not None else None
        if undated is not None:
            conflict = (f"visit {undated['VISCODE']}'s EXAMDATE {undated['EXAMDATE'].strip()!r} "
                        "is not a YYYY-MM-DD date, so the first visit with a diagnosis and a "
                        "scan of every modality cannot be told")
        if conflict:
            why, row = conflict, None
        chosen_rows.append(row or {})
        frame["viscode"].append((row or {}).get("VISCODE"))
        frame["examdate"].append((row or {}).get("EXAMDATE"))
        if row is None:
            if not conflict:
                why = ("no baseline (bl) row in ADNIMERGE" if visit_rule == "baseline" else
                       "no visit with a diagnosis and a scan of every modality")
            source_qc.append(QCRecord(sid, LABEL_QC, CONFLICT if conflict and undated is None
                                      else ABSENT, why, str(table_path)))
            diagnosis.append(None)
            for m in imaging:
                columns[specs[m].column].append(None)
                qc.append(QCRecord(sid, m, ABSENT if undated is None else REJECTED, why))
            continue
        dx = _diagnosis(row["DX"])
        if dx is None:
            source_qc.append(QCRecord(sid, LABEL_QC, ABSENT, f"DX {row['DX']!r} at visit "
                                      f"{row['VISCODE']}: not one of {list(DIAGNOSES)} (nor "
                                      "NL or a conversion 'A to B' of the older coding)",
                                      str(table_path)))
        diagnosis.append(dx)
        when, written = _date(row["EXAMDATE"]), (row["EXAMDATE"] or "").strip()
        others = _other_visits(rows, when)
        for m in imaging:
            if when is None and written:  # "9/8/2005": a table a spreadsheet saved again
                qc.append(QCRecord(sid, m, REJECTED, f"the visit's EXAMDATE {written!r} is "
                                   "not a YYYY-MM-DD date, so no scan can be matched to it"))
                columns[specs[m].column].append(None)
                continue
            scan, why = _match(when, own, m, max_days, others)
            if scan is not None and len(scan.files) > 1:
                scan, why = None, (f"{len(scan.files)} NIfTI files in {scan.folder}: "
                                   + ", ".join(f.name for f in scan.files))
                qc.append(QCRecord(sid, m, REJECTED, why))
            elif scan is None:
                # scans a visit without a date cannot be matched to are there, not absent
                undated = sum(s.modality == m for s in own) if when is None else 0
                if undated:
                    why = (f"{why}, so none of the subject's {undated} {m} scan(s) can be "
                           "matched to it")
                qc.append(QCRecord(sid, m, REJECTED if undated or why.startswith(
                    (_TIE, _UNREADABLE)) else ABSENT, why))
            columns[specs[m].column].append(str(scan.files[0]) if scan is not None else None)
    frame.update(columns)
    if "diagnosis" in labels:
        frame["diagnosis"] = diagnosis
    if "ad_vs_cn" in labels:
        frame["ad_vs_cn"] = [{"Dementia": "AD", "CN": "CN"}.get(d) if d else None
                             for d in diagnosis]
    for f in fields:
        frame[f] = ([_age_at_visit(r) for r in chosen_rows] if f == AGE and age_at_visit
                    else [r.get(f) for r in chosen_rows])
    return AdapterOutput(
        frame=pl.DataFrame(frame, schema_overrides={c: pl.Utf8 for c in frame if c != SUBJECT}),
        modalities=specs,
        labels=labels,
        qc=qc,
        source=str(table_path),
        root=str(root),
        extra_columns=["viscode", "examdate"],
        unused_columns=[(table_path.name, c) for c in table.columns
                        if c not in {*need, *fields}],
        source_qc=source_qc,
    )
