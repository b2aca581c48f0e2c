"""The ``demo`` adapter: the layout :func:`mmpipe.cohorts.demo.generate_demo_cohort` writes.

``raw_dir`` (set by the workflow and the CLI, not a config key: ``results/{cohort}/raw``,
i.e. ``out_dir / "raw"``) holds ``labels.csv``,
``clinical.csv`` and one folder per imaging modality. Each modality is found
by kind under the folder of its own name:

- volume   -> ``{name}/{subject}.nii.gz`` (or ``.nii``)
- dicom    -> ``{name}/{subject}/`` (a folder holding files)
- slide    -> ``{name}/{subject}.tiff``
- table    -> the ``fields`` of ``clinical.csv`` (the config names them)

The names and kinds are the generator's (``mri_t1``, ``mri_t2``, ``ct``, ``wsi``;
:func:`check_config`).

Only existence is checked: opening the images, and rejecting the corrupt ones
the generator plants, is preprocessing's job (it records its own QC).
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from mmpipe.cohorts.demo import CLINICAL_CSV, LABELS_CSV, SUMMARY_JSON
from mmpipe.cohorts.demo.plan import CLINICAL_FIELDS, IMAGING_KINDS
from mmpipe.cohorts.manifest import (
    ABSENT,
    REJECTED,
    AdapterOutput,
    QCRecord,
    check_subject_ids,
    cohort_labels,
    config_path,
    layout_modalities,
    modality_specs,
)
from mmpipe.cohorts.manifest_files import SUBJECT
from mmpipe.cohorts.source_csv import read_source_csv
from mmpipe.errors import ConfigError, InputError
from mmpipe.layout import CohortLayout

log = logging.getLogger(__name__)

SUFFIXES: dict[str, tuple[str, ...]] = {
    "volume": (".nii.gz", ".nii"),
    "slide": (".tiff",),
}
# what the generator writes (mmpipe.cohorts.demo): a folder per imaging modality
# (IMAGING_KINDS), and the label and clinical fields in its two tables
TABLE_COLUMNS = ("label", *CLINICAL_FIELDS)


def raw_dir(cohort_cfg: dict, out_dir: Path, base_dir: Path) -> Path:
    """Where the demo cohort's raw files live (``raw_dir`` or the layout's ``raw``)."""
    given = cohort_cfg.get("raw_dir")
    if not given:
        return CohortLayout(Path(out_dir)).raw()
    return config_path(given, base_dir)


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise InputError("demo cohort not generated here (run `mmpipe demo` or the demo rule "
                         "first)", path=path)
    df = read_source_csv(path, text_columns=[SUBJECT])
    if SUBJECT not in df.columns:
        raise InputError(f"no {SUBJECT!r} column (has {df.columns})", path=path)
    check_subject_ids(df[SUBJECT], str(path))
    return df


def _find(folder: Path, sid: str, kind: str) -> tuple[str | None, QCRecord | None]:
    if kind == "dicom":
        sub = folder / sid
        if not sub.is_dir():
            return None, QCRecord(sid, folder.name, ABSENT, f"no folder {folder.name}/{sid}/")
        if not any(p.is_file() for p in sub.iterdir()):
            return None, QCRecord(sid, folder.name, REJECTED, "empty folder", str(sub))
        return str(sub.absolute()), None
    for suffix in SUFFIXES[kind]:
        p = folder / f"{sid}{suffix}"
        if p.is_file():
            return str(p.absolute()), None
    return None, QCRecord(sid, folder.name, ABSENT,
                          f"no file {folder.name}/{sid}{SUFFIXES[kind][0]}")


def check_config(cohort_cfg: dict) -> None:
    """What the generator writes: its imaging modalities, each of its kind, and the
    columns of its two tables; a :class:`ConfigError` on the first thing wrong. A name it
    does not write was every subject's absent modality, or a missing column, only once
    the manifest job ran."""
    labels = cohort_labels(cohort_cfg)
    specs = modality_specs(cohort_cfg)
    layout_modalities(specs, "demo", IMAGING_KINDS, IMAGING_KINDS,
                      f"{CLINICAL_CSV} and {LABELS_CSV}")
    unknown = [c for c in dict.fromkeys([*labels, *(f for s in specs.values() for f in s.fields)])
               if c not in TABLE_COLUMNS]
    if unknown:
        raise ConfigError(f"demo column(s) {unknown}: the generator writes {list(TABLE_COLUMNS)}"
                          f" ({LABELS_CSV} and {CLINICAL_CSV})")


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    root = raw_dir(cohort_cfg, out_dir, base_dir)
    if (root / LABELS_CSV).is_file() and not (root / SUMMARY_JSON).is_file():
        raise InputError(f"the demo cohort here is incomplete: its generation was interrupted "
                         f"before {SUMMARY_JSON} (files of two generations may lie side by "
                         "side); generate it again", path=root)
    labels = cohort_labels(cohort_cfg)
    labels_df = _read_table(root / LABELS_CSV)
    clinical = _read_table(root / CLINICAL_CSV)
    specs = modality_specs(cohort_cfg)
    overlap = (set(labels_df.columns) & set(clinical.columns)) - {SUBJECT}
    if overlap:
        raise InputError(f"columns {sorted(overlap)} are in both {LABELS_CSV} and "
                         f"{CLINICAL_CSV}", path=root)
    # the cohort is everyone in either table; a subject only in one gets nulls for the other
    frame = labels_df.join(clinical, on=SUBJECT, how="full", coalesce=True, maintain_order="left")
    frame = frame.sort(SUBJECT)
    wanted = [*labels, *(f for s in specs.values() for f in s.fields)]
    missing = [c for c in dict.fromkeys(wanted) if c not in frame.columns]
    if missing:
        raise ConfigError(f"{root}: column(s) {missing} not in {LABELS_CSV} or {CLINICAL_CSV} "
                          f"(they have: {[c for c in frame.columns if c != SUBJECT]})")

    ids = frame[SUBJECT].to_list()
    known = set(ids)
    qc: list[QCRecord] = []
    for name, spec in specs.items():
        if spec.is_table:
            continue
        folder = root / name
        if not folder.is_dir():
            log.warning("demo cohort %s has no folder %s/: every subject lacks %s",
                        root, name, name)
        paths = []
        for sid in ids:
            path, rec = _find(folder, sid, spec.kind)
            paths.append(path)
            if rec is not None:
                qc.append(rec)
        stray = sorted(p.name for p in folder.glob("*") if not p.name.startswith(".")
                       and p.name.split(".")[0] not in known) if folder.is_dir() else []
        if stray:
            log.warning("%s: %d file(s) of subjects not in %s are ignored: %s", folder,
                        len(stray), LABELS_CSV, stray[:10])
        frame = frame.with_columns(pl.Series(spec.column, paths, dtype=pl.Utf8))
    return AdapterOutput(frame=frame, modalities=specs, labels=labels, qc=qc,
                         source=str(root))
