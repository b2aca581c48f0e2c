"""The ``csv`` adapter: a user's own cohort described by one CSV, configured, not coded.

Config keys: ``csv`` (path, relative to the workflow root), ``subject_column``,
``labels``, and ``modalities`` where path kinds name the ``column`` that holds the
file (relative paths are resolved against the CSV's folder) and table kinds
name their ``fields`` (no default: a table modality must list its fields); optionally
``split``, the cohort's own split: ``{column: C}`` (a column of the CSV) or
``{files: {test: ..., train: ..., val: ...}}`` (see
:func:`mmpipe.cohorts.manifest.read_user_split`); and ``group_column``, a column naming
each subject's patient where a patient has several subjects (two visits): the manifest's
``split_group``, kept in one part of every split (:mod:`mmpipe.cohorts.split_groups`).

Every CSV column the config does not name is listed in the adapter QC (one
``column``/``unused`` row each), so a column such as a published ``split`` is never
dropped without a word.

The adapter checks that each path exists and has the shape its kind needs; it
does not open the file. A failing path becomes a null path and a QC
``rejected`` row with the reason, so one bad file never stops the cohort.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import polars as pl

from mmpipe.cohorts.manifest import (
    ABSENT,
    REJECTED,
    AdapterOutput,
    QCRecord,
    check_subject_ids,
    cohort_labels,
    config_path,
    modality_specs,
    read_user_split,
)
from mmpipe.cohorts.manifest_files import SUBJECT
from mmpipe.cohorts.source_csv import read_source_csv
from mmpipe.cohorts.split_groups import SPLIT_GROUP
from mmpipe.errors import ConfigError, InputError, MmpipeError
from mmpipe.io.walk import holds_a_file

log = logging.getLogger(__name__)

# what a path of each kind may look like (lower-case name endings)
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "volume": (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"),
    "slide": (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif",
              ".svslide"),
    # .h5: tile features of CLAM, TRIDENT or STAMP (the tile_features encoder)
    "features": (".npy", ".npz", ".pt", ".pth", ".h5"),
}


def check_path(path: Path, kind: str) -> str | None:
    """Why ``path`` cannot be a ``kind`` input, or None when it looks right."""
    if not path.exists():
        return ("a symbolic link to nothing (broken, or a loop)" if path.is_symlink()
                else "file not found")
    if kind == "dicom":
        if not path.is_dir():
            return "not a directory (a dicom modality is a folder of DICOM files)"
        # a PACS or NBIA export nests its series (P1/STUDY/SERIES/IM*.dcm), and the
        # series reader searches the folder's whole tree, linked folders included (a
        # series linked in from another store read as "no file")
        if not holds_a_file(path):
            return "no file in the folder or its subfolders"
        return None
    if kind == "image":  # an image file, or a folder of them (the subject's set)
        from mmpipe.io.images import IMAGE_SUFFIXES, image_files

        if path.is_dir():
            return None if image_files(path) else "no image file in the folder"
        if not path.name.lower().endswith(IMAGE_SUFFIXES):
            return (f"unexpected extension for kind 'image' (expected one of "
                    f"{', '.join(IMAGE_SUFFIXES)}, or a folder of such files)")
        return None
    if path.is_dir():
        return f"is a directory, expected a {kind} file"
    allowed = EXTENSIONS[kind]
    if not path.name.lower().endswith(allowed):
        return f"unexpected extension for kind {kind!r} (expected one of {', '.join(allowed)})"
    return None


def cell_path(raw: str, root: Path) -> Path:
    """The absolute path a CSV cell names (``~`` expanded, relative to ``root``, the CSV's
    folder); a ``RuntimeError`` for ``~user`` of no such user."""
    p = Path(str(raw).strip()).expanduser()
    return Path(os.path.abspath(p if p.is_absolute() else root / p))


def path_columns(cohort_cfg: dict, specs: dict | None = None) -> dict[str, str]:
    """Each path modality's CSV column (modality -> column)."""
    columns = {}
    for name, spec in (specs or modality_specs(cohort_cfg)).items():
        if spec.is_table:
            continue
        column = cohort_cfg["modalities"][name].get("column")
        if not column:
            raise ConfigError(f"modality {name!r}: the csv adapter needs the 'column' "
                              "holding the path")
        columns[name] = column
    return columns


def paths_rejected(cohort_cfg: dict, base_dir: Path) -> list[str]:
    """The path cells of the cohort's CSV that the adapter rejects now, as ``column:
    cell: why`` (none where the CSV cannot be read: the manifest job says why). The
    manifest's inputs are the CSV and its split files: a file it rejected as "file not
    found" and copied in later, or a DICOM or image folder it rejected as empty and
    filled later, changed neither, and the subject stayed rejected
    (:func:`mmpipe.cohorts.download_listing` lists these)."""
    try:
        columns = path_columns(cohort_cfg)
        csv_path = config_path(cohort_cfg["csv"], base_dir)
        frame = read_source_csv(csv_path, all_text=True)
    except (KeyError, OSError, RuntimeError, MmpipeError):  # RuntimeError: "~nosuchuser"
        return []
    rejected = []
    for name, column in columns.items():
        if column not in frame.columns:
            continue
        kind = cohort_cfg["modalities"][name].get("kind")
        for raw in frame[column].to_list():
            if raw is None or not raw.strip():
                continue
            try:
                why = check_path(Path(cell_path(raw, csv_path.parent)), kind)
            except (RuntimeError, OSError, ValueError, MmpipeError):
                continue  # the manifest's own check says why
            if why is not None:
                rejected.append(f"{column}: {raw}: {why}")
    return sorted(rejected)


def resolve_paths(
    frame: pl.DataFrame, modality: str, kind: str, column: str, root: Path
) -> tuple[list[str | None], list[QCRecord]]:
    """Absolute, checked paths of one modality, plus QC records for the null ones."""
    paths: list[str | None] = []
    qc: list[QCRecord] = []
    for sid, raw in zip(frame[SUBJECT].to_list(), frame[column].to_list(), strict=True):
        if raw is None or not str(raw).strip():
            paths.append(None)
            qc.append(QCRecord(sid, modality, ABSENT, f"no path in column {column!r}"))
            continue
        p = Path(str(raw).strip())
        try:
            p = cell_path(raw, root)  # "~nosuchuser/..." raised past every subject
            reason = check_path(p, kind)
        except RuntimeError as e:
            reason = f"cannot be read: {e}"
        except OSError as e:  # a name too long, a folder it may not list: this subject's
            reason = f"cannot be read: {e.strerror or e}"
        except InputError as e:  # the image reader's word for a folder it may not list
            reason = e.reason
        if reason is None:
            paths.append(str(p))
        else:
            paths.append(None)
            qc.append(QCRecord(sid, modality, REJECTED, reason, str(p)))
    rejected = sum(r.status == REJECTED for r in qc)
    if rejected:
        log.warning("%s: %d %s path(s) rejected (missing or wrong kind)", modality, rejected, kind)
    return paths, qc


def check_config(cohort_cfg: dict) -> None:
    """What the adapter needs of the config: the CSV, its subject column, a path column
    for each path modality, a split column of its own; a :class:`ConfigError` on the
    first thing wrong."""
    if "csv" not in cohort_cfg or "subject_column" not in cohort_cfg:
        raise ConfigError("the csv adapter needs 'csv' and 'subject_column'")
    split_col = (cohort_cfg.get("split") or {}).get("column")
    if split_col in _named_columns(cohort_cfg):
        raise ConfigError(f"split.column {split_col!r} is also the subject ID, a label, a "
                          "path column or a table field; the split needs its own column")
    # a label as the groups put each class in one part (train all one class, test the
    # other); the ID as a label made a class a subject, as a field an input
    subject, labels = cohort_cfg["subject_column"], cohort_labels(cohort_cfg)
    group_col = cohort_cfg.get("group_column")
    if group_col is not None and group_col in labels:
        raise ConfigError(f"group_column {group_col!r} is a label: the split keeps a group in "
                          "one part, so each class would fall in one part; name the column "
                          "of the patient a subject's rows belong to")
    fields = {f for spec in modality_specs(cohort_cfg).values() for f in spec.fields}
    for what, names in (("a label", labels), ("a table field", fields)):
        if subject in names:
            raise ConfigError(f"subject_column {subject!r} is also {what}: a subject's ID is "
                              "neither what is predicted nor an input")


def _named_columns(cohort_cfg: dict) -> list[str]:
    """The CSV's columns the config names, but the split's and the groups'."""
    specs = modality_specs(cohort_cfg)
    return [cohort_cfg["subject_column"], *cohort_labels(cohort_cfg),
            *path_columns(cohort_cfg, specs).values(),
            *(f for s in specs.values() for f in s.fields)]


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    csv_path = config_path(cohort_cfg["csv"], base_dir)
    if not csv_path.is_file():
        raise InputError("cohort CSV not found", path=csv_path)
    subject_col = cohort_cfg["subject_column"]
    labels = cohort_labels(cohort_cfg)
    specs = modality_specs(cohort_cfg)
    path_cols = path_columns(cohort_cfg, specs)
    named = _named_columns(cohort_cfg)
    split_col = (cohort_cfg.get("split") or {}).get("column")

    # subjects that are one patient's rows (two visits), kept in one part of every split
    group_col = cohort_cfg.get("group_column")
    # IDs, paths, split and group values are text whatever they look like ("007" stays),
    # and so are the fields read as categories: a code column of 007, 7 and 250.00, read
    # as numbers, reached the prompts as "7" and "250"
    text_cols = {subject_col, *path_cols.values(), *([split_col] if split_col else []),
                 *([group_col] if group_col else []),
                 *(f for spec in specs.values() for f in spec.categorical)}
    frame = read_source_csv(csv_path, text_columns=text_cols)
    wanted = [*named, *([split_col] if split_col else []), *([group_col] if group_col else [])]
    missing = [c for c in dict.fromkeys(wanted) if c not in frame.columns]
    if missing:
        raise ConfigError(f"{csv_path}: column(s) {missing} named in the config are not in "
                          f"the CSV (it has: {frame.columns})")
    unused = [(str(csv_path), c) for c in frame.columns if c not in wanted]
    check_subject_ids(frame[subject_col], str(csv_path))
    frame = frame.with_columns(pl.col(subject_col).str.strip_chars().alias(SUBJECT))
    split = read_user_split(cohort_cfg, frame, source=str(csv_path), base_dir=base_dir)

    qc: list[QCRecord] = []
    new_cols = []
    for name, column in path_cols.items():
        paths, recs = resolve_paths(frame, name, specs[name].kind, column, csv_path.parent)
        qc.extend(recs)
        new_cols.append(pl.Series(specs[name].column, paths, dtype=pl.Utf8))
    frame = frame.with_columns(new_cols)
    if group_col:
        frame = frame.with_columns(pl.col(group_col).str.strip_chars().alias(SPLIT_GROUP))
    return AdapterOutput(frame=frame, modalities=specs, labels=labels, qc=qc,
                         source=str(csv_path), root=str(csv_path.parent), split=split,
                         extra_columns=[SPLIT_GROUP] if group_col else [],
                         unused_columns=unused)
