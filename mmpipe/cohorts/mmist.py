"""The ``mmist_ccrcc`` adapter: MMIST-ccRCC's pre-extracted features and clinical table.

Layout (Mota et al., DCAMI @ CVPR 2024, arXiv 2405.01658; the dataset site's
``datasets/ccRCC/Code/``), under ``root``:

- ``clinical+genomic_split.csv``: one row per patient (618), ``case_id``, the
  clinical and genomic fields, label ``vital_status_12`` (1 alive at 12 months, 0 died;
  another value is blanked with a label QC row) and the authors' ``Split``.
  ``-1`` means unknown in every numeric column: it becomes null here.
- CT / MRI: a patient may have several series; ``CT_patientfiles.csv`` /
  ``MRI_patientfiles.csv`` name the one to use (``chosen_exam``). Its feature file
  is ``Features/<CT|MRI> Features/<case_id>-<k>.npz`` where ``k`` is the 1-based
  row of that series among the patient's rows (column ``File``) of
  ``patients_with_labels_CT_final.csv`` / ``patients_with_labels_MR_final.csv``. A file
  of those folders that is no ``<case>-<k>.npz`` of a listed case is named in a skipped
  QC row; a case with more files than rows is rejected, naming the files beyond them.
- WSI: ``WSI_patientfiles.csv`` maps each patient to ``Features/WSI Features/<chosen_exam>``
  (that folder also holds slides of patients outside the cohort: only the mapping counts).
  For 106 of its 429 TCGA patients the mapping names a slide of normal tissue (TCGA
  sample type 11, ``<patient>-11A-...``), though each has a tumour slide (``01A``/``01Z``)
  in the folder. The adapter follows the mapping, as the published figures do, and names
  those patients in a whole-cohort QC row (status ``normal_tissue``) and the log.

Feature modalities are known by name: ``ct``, ``mri``, ``wsi``. A table modality reads
the columns its config ``fields`` name: the release's clinical fields are ``gender``,
``age_diag``, ``grade``, ``cancer_history``, the AJCC codes (``ajcc_path_tumor_pt``,
``ajcc_path_nodes_pn``, ``ajcc_clin_metastasis_cm``, ``ajcc_path_metastasis_pm``,
``ajcc_path_tumor_stage``) and one-hot race columns (``race_Asian``, ...), its genomic
ones ``VHL_mutation``, ``PBMR1_mutation`` and ``TTN_mutation`` (``config.yaml`` lists
them all). The authors' split is kept as the non-modality column ``authors_split``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mmpipe.cohorts.manifest import (
    ABSENT,
    LABEL_QC,
    MISSING_TEXTS,
    REJECTED,
    SKIPPED,
    AdapterOutput,
    QCRecord,
    check_subject_ids,
    cohort_labels,
    dataset_root,
    layout_modalities,
    modality_specs,
)
from mmpipe.cohorts.manifest_files import ALL_SUBJECTS, SUBJECT
from mmpipe.cohorts.numbers import parse_number
from mmpipe.cohorts.source_csv import read_source_csv
from mmpipe.errors import ConfigError, InputError

log = logging.getLogger(__name__)

CLINICAL_CSV = "clinical+genomic_split.csv"
ID_COLUMN = "case_id"
SPLIT_COLUMN = "Split"
AUTHORS_SPLIT = "authors_split"
UNKNOWN = -1
# a TCGA barcode's sample type 10-19 is normal tissue (11: solid tissue normal)
# (a slide's barcode: <patient>-<sample><vial>-...; a CT or MRI file's -10.npz is a series)
_TCGA_NORMAL = re.compile(r"TCGA-\w{2}-\w{4}-1\d[A-Z]-")



@dataclass(frozen=True)
class SeriesSource:
    """Where one feature modality's files come from."""

    chosen: str  # per-patient choice: case_id, chosen_exam
    series: str | None  # per-series list: case_id, File (None: chosen_exam is the file name)
    folder: str


SOURCES: dict[str, SeriesSource] = {
    "ct": SeriesSource("CT_patientfiles.csv", "patients_with_labels_CT_final.csv",
                       "Features/CT Features"),
    "mri": SeriesSource("MRI_patientfiles.csv", "patients_with_labels_MR_final.csv",
                        "Features/MRI Features"),
    "wsi": SeriesSource("WSI_patientfiles.csv", None, "Features/WSI Features"),
}


def _read_csv(path: Path, columns: list[str]) -> pl.DataFrame:
    if not path.is_file():
        raise InputError("MMIST-ccRCC file not found: cohorts.<name>.root must hold the "
                         "release's clinical+genomic_split.csv, patient-file CSVs and Features/ "
                         "(README, MMIST-ccRCC)", path=path)
    df = read_source_csv(path, text_columns=columns)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"column(s) {missing} not found (has {df.columns})", path=path)
    # IDs as the manifest holds them (stripped): a QC row or a file keyed by "B " would
    # match no subject
    return df.with_columns(pl.col(ID_COLUMN).str.strip_chars())


def read_clinical(root: Path) -> pl.DataFrame:
    """The clinical+genomic table with ``-1`` and blanks as null and integral codes as Int64."""
    path = root / CLINICAL_CSV
    df = _read_csv(path, [ID_COLUMN, SPLIT_COLUMN])
    check_subject_ids(df[ID_COLUMN], str(path))
    # a NaN (pandas writes one for a blank) is a blank: it passed the check of integral
    # codes below (NaN equals NaN here) and failed the cast with a polars error
    df = df.with_columns(pl.col(c).fill_nan(None) for c, t in df.schema.items()
                         if t.is_float())
    numeric = [c for c, t in df.schema.items() if t.is_numeric()]
    # a column holding one text cell (an "NA" in a re-saved file) is read as text: its
    # "-1" is the same unknown, which stayed a value (a third class of a label)
    text = [c for c, t in df.schema.items()
            if t == pl.Utf8 and c not in (ID_COLUMN, SPLIT_COLUMN)]
    unknown = {**{c: pl.col(c) == UNKNOWN for c in numeric},
               **{c: pl.col(c).str.strip_chars().cast(pl.Float64, strict=False) == UNKNOWN
                  for c in text}}
    df = df.with_columns(pl.when(is_unknown).then(None).otherwise(pl.col(c)).alias(c)
                         for c, is_unknown in unknown.items())
    # codes such as age_diag are stored as 6.0 because of blanks; they are bins, not reals
    ints = [c for c in numeric if df[c].dtype.is_float()
            and (df[c].drop_nulls() == df[c].drop_nulls().round()).all()]
    return df.with_columns(pl.col(c).cast(pl.Int64) for c in ints)


def read_chosen(root: Path, modality: str) -> pl.DataFrame:
    """The release's choice of one exam per patient (case_id, chosen_exam), checked: the
    thesis's rule, which the raw-image adapter (mmpipe.cohorts.mmist_raw) follows too."""
    chosen_path = root / SOURCES[modality].chosen
    chosen = _read_csv(chosen_path, [ID_COLUMN, "chosen_exam"])
    check_subject_ids(chosen[ID_COLUMN], str(chosen_path))
    return chosen


def patients_not_in_the_table(root: Path, modality: str, listed: list[str],
                              cohort_ids: set[str]) -> list[QCRecord]:
    """A skipped QC row, and a warning, for each patient whose chosen exam the release's
    file lists but the clinical table does not hold: a patient spelt otherwise there
    (c3l-00766) has an exam that counts for nobody, and the patient reads "no exam"."""
    outside = sorted(set(listed) - cohort_ids)
    if outside:
        log.warning("%s: %d patient(s) in %s are not in %s and are ignored: %s", modality,
                    len(outside), SOURCES[modality].chosen, CLINICAL_CSV, outside[:10])
    return [QCRecord(ALL_SUBJECTS, modality, SKIPPED,
                     f"{SOURCES[modality].chosen} lists patient {pid!r}, who is not in "
                     f"{CLINICAL_CSV}: its exam is used for nobody",
                     str(root / SOURCES[modality].chosen)) for pid in outside]


def spelt_otherwise(root: Path, modality: str, exams: dict[str, str | None],
                    cohort_ids: set[str]) -> dict[str, QCRecord]:
    """The rejection of each patient whose chosen exam the release's file lists under
    the ID in another case (``c3l-00610``; ``exams``: listed ID -> chosen exam): its row
    was "no exam", missing by nature, and the exam's one trace a row under every
    subject. The ID is not matched as the patient's: a typo may name another patient as
    well. A row whose exam is blank lists none, and the patient has none. A patient so
    named has no row of its own: :func:`read_chosen` refuses IDs that differ in case."""
    own = {pid.casefold(): pid for pid in cohort_ids}
    rows = {}
    for listed_id in sorted(set(exams) - cohort_ids):
        pid = own.get(listed_id.casefold())
        if pid is not None and (exams[listed_id] or "").strip():
            rows[pid] = QCRecord(pid, modality, REJECTED,
                                 f"{SOURCES[modality].chosen} lists this patient's exam "
                                 f"under {listed_id!r}, not {pid!r}: correct the ID there",
                                 str(root / SOURCES[modality].chosen))
    return rows


def _case_and_number(name: str) -> tuple[str, str]:
    """(case, number) of a series feature file ``<case>-<k>.npz``; number "" otherwise."""
    case, _, number = name.removesuffix(".npz").rpartition("-")
    return (case, number) if name.endswith(".npz") and number.isdigit() else (name, "")


def _case_files(folder: Path) -> dict[str, list[str]]:
    """Each case's series feature files in ``folder``, by name, sorted."""
    files: dict[str, list[str]] = {}
    for name in sorted(os.listdir(folder) if folder.is_dir() else []):
        case, number = _case_and_number(name)
        if number:
            files.setdefault(case, []).append(name)
    return files


def stray_series_files(root: Path, modality: str) -> list[QCRecord]:
    """A whole-cohort QC row for each file of a CT or MRI feature folder that is no
    ``<case>-<k>.npz`` of a case its series table lists (``.DS_Store``, a note, a case
    spelt otherwise): left there without a word, where the IXI and BraTS adapters name
    theirs."""
    src = SOURCES[modality]
    folder = root / src.folder
    cases = set(_read_csv(root / src.series, [ID_COLUMN, "File"])[ID_COLUMN])
    named = [(name, *_case_and_number(name))
             for name in sorted(os.listdir(folder) if folder.is_dir() else [])]
    return [QCRecord(ALL_SUBJECTS, modality, SKIPPED,
                     f"not a feature file <case>-<k>.npz of a case {src.series} lists",
                     str(folder / name))
            for name, case, number in named if case not in cases or not number]


def chosen_files(root: Path, modality: str) -> pl.DataFrame:
    """case_id, chosen_exam, file (the mapped feature path, str) or reason (why none)."""
    src = SOURCES[modality]
    chosen = read_chosen(root, modality)
    folder = root / src.folder
    if src.series is None:
        # a file name in the folder: a path in it ("/tmp/x.npz", "../x.npz") named a file
        # outside the download, which was read as the patient's features
        def file_of(row: dict) -> dict[str, str | None]:
            if row["chosen_exam"] is None:
                return {"file": None, "reason": None}
            name, pid = row["chosen_exam"].strip(), row[ID_COLUMN]
            if Path(name).name != name or name in ("", ".", ".."):
                return {"file": None, "reason": f"chosen_exam {name!r} is not a file name "
                                                f"in {src.folder}"}
            # the release names each patient's files for it (C3L-00004-26.npz): one of
            # another patient's was read as this one's, with nothing said
            if Path(name).stem != pid and not name.startswith(f"{pid}-"):
                return {"file": None, "reason": f"chosen_exam {name!r} is not this "
                                                f"patient's: its name does not start with {pid}"}
            return {"file": str(folder / name), "reason": None}

        return chosen.with_columns(
            pl.struct(ID_COLUMN, "chosen_exam").map_elements(
                file_of, return_dtype=pl.Struct({"file": pl.Utf8, "reason": pl.Utf8}))
            .alias("_mapped")).unnest("_mapped")
    series_path = root / src.series
    series = _read_csv(series_path, [ID_COLUMN, "File"])
    series = series.with_columns(
        (pl.int_range(pl.len()).over(ID_COLUMN) + 1).alias("k")
    )
    exact = chosen.join(series, left_on=[ID_COLUMN, "chosen_exam"],
                        right_on=[ID_COLUMN, "File"], how="left")
    if exact.height != chosen.height:
        twice = (exact.group_by([ID_COLUMN, "chosen_exam"]).len().filter(pl.col("len") > 1)
                 .sort(ID_COLUMN).head(5).iter_rows())
        raise InputError("a patient lists the same series twice in File: "
                         + ", ".join(f"{p} {f}" for p, f, _ in twice), path=series_path)
    unmatched = exact.filter(pl.col("k").is_null())[ID_COLUMN].to_list()
    if unmatched:
        # the release spells both columns identically; whitespace drift is the one
        # difference worth forgiving, loudly
        stripped = chosen.with_columns(pl.col("chosen_exam").str.strip_chars().alias("_key")).join(
            series.with_columns(pl.col("File").str.strip_chars().alias("_key")),
            on=[ID_COLUMN, "_key"], how="left")
        if stripped.height != chosen.height:
            twice = (stripped.group_by([ID_COLUMN, "_key"]).len().filter(pl.col("len") > 1)
                     .sort(ID_COLUMN).head(5).iter_rows())
            raise InputError("a patient's chosen series matches two File rows once "
                             "whitespace is stripped: "
                             + ", ".join(f"{p} {f!r}" for p, f, _ in twice), path=series_path)
        exact = exact.drop("k").join(stripped.select(ID_COLUMN, "k"), on=ID_COLUMN, how="left")
        if recovered := len(unmatched) - exact["k"].null_count():
            log.warning("%s: %d chosen_exam value(s) matched File only after stripping "
                        "whitespace", modality, recovered)
    # <case>-<k>.npz is the k-th row of the case in the series table: a folder holding
    # more of the case's files than it has rows (another release's features) maps the
    # chosen series to another's file. Fewer pass: a folder kept to the chosen series'
    # files holds the right one. (A table re-sorted within a case maps it to another's
    # too, and cannot be told from the files: keep the release's row order.)
    rows = dict(series.group_by(ID_COLUMN).len().iter_rows())
    files = _case_files(folder)

    def too_many(case: str) -> str | None:
        named, n_rows = files.get(case, []), rows.get(case, 0)
        if len(named) <= n_rows:
            return None
        beyond = [n for n in named if int(_case_and_number(n)[1]) > n_rows] or named
        return (f"{src.folder} holds {len(named)} feature file(s) of this patient and "
                f"{src.series} {n_rows} row(s) (beyond them: {', '.join(beyond)}): the "
                "file of its chosen series, named for its row, cannot be told")

    exact = exact.with_columns(pl.col(ID_COLUMN).map_elements(
        too_many, return_dtype=pl.Utf8).alias("_count"))
    return exact.with_columns(
        pl.when(pl.col("k").is_null() | pl.col("_count").is_not_null()).then(None)
        .otherwise(pl.lit(str(folder) + "/") + pl.col(ID_COLUMN) + "-"
                   + pl.col("k").cast(pl.Utf8) + ".npz")
        .alias("file"),
        pl.when(pl.col("k").is_null())
        .then(pl.lit(f"chosen_exam not listed in {src.series}"))
        .otherwise(pl.col("_count")).alias("reason"),
    ).select(ID_COLUMN, "chosen_exam", "file", "reason")


def clinical_frame(root: Path, labels: list[str], specs: dict) -> pl.DataFrame:
    """The release's clinical table, checked to hold the labels and every table field the
    config asks for, its columns named as the manifest names them (subject, the
    authors' split)."""
    clinical = read_clinical(root)
    wanted = [*labels, *(f for s in specs.values() for f in s.fields)]
    missing = [c for c in dict.fromkeys(wanted) if c not in clinical.columns]
    if missing:
        raise ConfigError(f"{root / CLINICAL_CSV}: column(s) {missing} not found "
                          f"(it has: {clinical.columns})")
    return clinical.rename({ID_COLUMN: SUBJECT, SPLIT_COLUMN: AUTHORS_SPLIT})


# the release's own label and its codes (its README: -1 unknown, blanked on reading)
LABEL_CODES = {"vital_status_12": {0: "died", 1: "alive"}}


def labels_outside_their_codes(frame: pl.DataFrame, labels: list[str]
                               ) -> tuple[pl.DataFrame, list[QCRecord]]:
    """``frame`` with a value of a known label outside its codes blanked, and a label
    QC row naming each: a 2 in the binary ``vital_status_12`` made the task three
    classes, with no QC row (a 2 beside 0 and 1 reads as a class of its own)."""
    qc: list[QCRecord] = []
    for label in labels:
        codes = LABEL_CODES.get(label)
        if codes is None:
            continue
        values = frame[label].to_list()
        # a text column (one "NA" cell in a re-saved file) holds its codes as "1", and
        # its markers of no value, which the manifest blanks
        known = [v is None or str(v).strip().lower() in MISSING_TEXTS
                 or parse_number(str(v)) in codes for v in values]
        said = ", ".join(f"{c} ({w})" for c, w in codes.items())
        qc += [QCRecord(sid, LABEL_QC, ABSENT, f"{label} value {v} is not one of the "
                        f"release's codes {said} or -1 (unknown): set to blank")
               for sid, v, ok in zip(frame[SUBJECT], values, known, strict=True) if not ok]
        frame = frame.with_columns(pl.Series(label, [v if ok else None for v, ok in
                                                     zip(values, known, strict=True)],
                                             dtype=frame.schema[label]))
    return frame, qc


NORMAL_TISSUE = "normal_tissue"  # the whole-cohort QC status of the slides below


def normal_slides_qc(root: Path, modality: str, ids: list[str], paths: list[str | None]
                     ) -> list[QCRecord]:
    """A whole-cohort QC row naming the patients whose chosen slide is of normal tissue:
    the release maps about a quarter of its TCGA patients to one (sample type 11), which
    a reader of the results would otherwise take for the tumour's (a log line alone, as
    it was, reached no QC table and no summary). The row's path is the file that chose
    them."""
    normal = [sid for sid, p in zip(ids, paths, strict=True)
              if p and _TCGA_NORMAL.match(Path(p).name)]
    if not normal:
        return []
    reason = (f"{len(normal)} chosen slide(s) are of normal tissue (TCGA sample type "
              f"10-19), as the release maps them; they are encoded as these patients' "
              f"slides: {', '.join(normal)}")
    log.warning("%s: %s", modality, reason)
    return [QCRecord(ALL_SUBJECTS, modality, NORMAL_TISSUE, reason,
                     str(root / SOURCES[modality].chosen))]


def _not_a_file(path: Path) -> str | None:
    """Why a mapped feature file cannot be read, or None."""
    try:
        return None if path.is_file() else "mapped feature file not found"
    except OSError as e:  # a name too long: this patient's, not the cohort's
        return f"mapped feature file cannot be read: {e.strerror or e}"


def check_config(cohort_cfg: dict) -> None:
    """What the layout fixes: the release's feature modalities, as features; a
    :class:`ConfigError` on the first thing wrong. The labels are the clinical table's
    columns, checked against it by :func:`adapt`."""
    cohort_labels(cohort_cfg)
    layout_modalities(modality_specs(cohort_cfg), "mmist_ccrcc", SOURCES, "features",
                      CLINICAL_CSV)


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    root = dataset_root(cohort_cfg, base_dir, "mmist_ccrcc",
                        "the MMIST-ccRCC release (Multi-Modal-IST datasets/ccRCC; README, "
                        "MMIST-ccRCC)")
    labels = cohort_labels(cohort_cfg)
    specs = modality_specs(cohort_cfg)

    frame, source_qc = labels_outside_their_codes(clinical_frame(root, labels, specs), labels)
    ids = frame[SUBJECT].to_list()
    cohort_ids = set(ids)

    qc: list[QCRecord] = []
    for name, spec in specs.items():
        if spec.is_table:
            continue
        mapped = chosen_files(root, name)
        source_qc += patients_not_in_the_table(root, name, mapped[ID_COLUMN].to_list(),
                                               cohort_ids)
        if SOURCES[name].series is not None:  # the slides' folder holds others' too
            source_qc += stray_series_files(root, name)
        by_id = {r[ID_COLUMN]: r for r in mapped.iter_rows(named=True)}
        misspelt = spelt_otherwise(root, name, {k: r["chosen_exam"] for k, r in by_id.items()},
                                   cohort_ids)
        paths: list[str | None] = []
        for sid in ids:
            row = by_id.get(sid)
            if sid in misspelt:
                paths.append(None)
                qc.append(misspelt[sid])
            # a patient listed with a blank chosen_exam has no exam either (as in
            # mmist_raw): it was rejected with no reason, or as "not listed"
            elif row is None or not (row["chosen_exam"] or "").strip():
                paths.append(None)
                qc.append(QCRecord(sid, name, ABSENT, f"no {name} exam for this patient"))
            elif row["file"] is None:
                paths.append(None)
                qc.append(QCRecord(sid, name, REJECTED, row["reason"]))
            elif (why := _not_a_file(Path(row["file"]))) is not None:
                paths.append(None)
                qc.append(QCRecord(sid, name, REJECTED, why, row["file"]))
            else:
                paths.append(row["file"])
        if name == "wsi":
            source_qc += normal_slides_qc(root, name, ids, paths)
        rejected = sum(1 for r in qc if r.modality == name and r.status == REJECTED)
        if rejected:
            log.warning("%s: %d patient(s) rejected (mapped feature file missing or exam "
                        "not listed); see the adapter QC", name, rejected)
        frame = frame.with_columns(pl.Series(spec.column, paths, dtype=pl.Utf8))
    return AdapterOutput(frame=frame, modalities=specs, labels=labels, qc=qc,
                         source=str(root / CLINICAL_CSV), root=str(root),
                         extra_columns=[AUTHORS_SPLIT], source_qc=source_qc)
