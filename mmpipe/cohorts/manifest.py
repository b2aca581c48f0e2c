"""The manifest contract: one row per subject, one path column per imaging modality,
table fields inline, and a QC table that says why every missing modality is missing.

Adapters only know their raw layout; everything the contract promises (unique
non-empty subject IDs, a QC row for every (subject, modality), exclusion of
subjects with nothing to learn from, atomic files) is enforced here, once, so
every cohort obeys the same rules.

Files under ``results/{cohort}/``:

- ``manifest.parquet``: ``subject_id``, label column(s), ``{modality}_path`` for
  every non-table modality, every table field under its own name, then the
  adapter's extra (non-modality) columns.
- ``manifest.json``: cohort, adapter, labels, modalities (kind and
  ``path_column`` or ``fields``), ``n_subjects``, ``extra_columns``, plus
  ``n_excluded``, ``n_label_missing``, per-modality status ``counts`` and ``source``.
- ``qc/adapter.parquet``: subject_id, modality, stage ("adapter"), status, reason, path
  (``mmpipe.qc.QC_SCHEMA``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.errors import ConfigError, InputError
from mmpipe.fsutil import atomic_file, write_parquet
from mmpipe.layout import ADAPTER_QC, CohortLayout
from mmpipe.qc import qc_frame

log = logging.getLogger(__name__)

SUBJECT = "subject_id"

PATH_KINDS = ("volume", "dicom", "slide", "features")
TABLE_KIND = "table"
KINDS = (*PATH_KINDS, TABLE_KIND)

PRESENT, ABSENT, REJECTED, EXCLUDED = "present", "absent", "rejected", "excluded"
ALL_MODALITIES = "*"
LABEL_QC = "label"
NO_MODALITY = "no modality available"
LABEL_MISSING = "label missing"



def path_column(modality: str) -> str:
    """Name of the manifest column holding ``modality``'s path (one name everywhere)."""
    return f"{modality}_path"


@dataclass(frozen=True)
class ModalitySpec:
    """A modality as the manifest sees it: a path column, or table fields."""

    name: str
    kind: str
    fields: tuple[str, ...] = ()

    @property
    def is_table(self) -> bool:
        return self.kind == TABLE_KIND

    @property
    def column(self) -> str:
        return path_column(self.name)

    def meta(self) -> dict[str, Any]:
        if self.is_table:
            return {"kind": self.kind, "fields": list(self.fields)}
        return {"kind": self.kind, "path_column": self.column}


def modality_specs(
    cohort_cfg: dict, default_fields: dict[str, tuple[str, ...]] | None = None
) -> dict[str, ModalitySpec]:
    """Read the cohort's ``modalities`` block; ``default_fields`` fills table fields
    the config leaves out (an adapter's documented defaults)."""
    mods = cohort_cfg.get("modalities") or {}
    if not mods:
        raise ConfigError("cohort config has no 'modalities'")
    specs = {}
    for name, mcfg in mods.items():
        kind = (mcfg or {}).get("kind")
        if kind not in KINDS:
            raise ConfigError(f"modality {name!r}: unknown kind {kind!r} (known: {list(KINDS)})")
        fields: tuple[str, ...] = ()
        if kind == TABLE_KIND:
            fields = tuple(mcfg.get("fields") or (default_fields or {}).get(name, ()))
            if not fields:
                raise ConfigError(f"modality {name!r}: a table modality needs 'fields'")
        specs[name] = ModalitySpec(name=name, kind=kind, fields=fields)
    return specs


def cohort_labels(cohort_cfg: dict) -> list[str]:
    labels = list(cohort_cfg.get("labels") or [])
    if not labels:
        raise ConfigError("cohort config has no 'labels'")
    return labels


@dataclass
class QCRecord:
    """Why one (subject, modality) is what it is."""

    subject_id: str
    modality: str
    status: str
    reason: str = ""
    path: str | None = None


@dataclass
class AdapterOutput:
    """What an adapter hands over: the raw per-subject frame and the QC it knows.

    ``frame`` holds ``subject_id``, the labels, ``{m}_path`` for path modalities,
    the table fields and ``extra_columns``. ``qc`` needs entries only for path
    modalities whose path is null (absent or rejected, with the reason); every
    other (subject, modality) row is derived by :func:`finalize_manifest`.
    """

    frame: pl.DataFrame
    modalities: dict[str, ModalitySpec]
    labels: list[str]
    qc: list[QCRecord] = field(default_factory=list)
    source: str = ""
    extra_columns: list[str] = field(default_factory=list)


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
    missing = [c for c in order if c not in out.frame.columns]
    if missing:
        raise ConfigError(
            f"{out.source or 'cohort source'}: column(s) {missing} not found "
            f"(available: {sorted(out.frame.columns)})"
        )
    return order


def check_subject_ids(ids: pl.Series, source: str) -> None:
    """Raise :class:`InputError` naming empty rows or duplicated IDs (never de-duplicate)."""
    ids = ids.cast(pl.Utf8).str.strip_chars()
    empty = [i + 1 for i, s in enumerate(ids.to_list()) if s is None or not s]
    if empty:
        shown = ", ".join(map(str, empty[:20])) + (" ..." if len(empty) > 20 else "")
        raise InputError(
            f"{len(empty)} row(s) without a subject_id: data row(s) {shown} "
            "(1-based, header not counted); every row needs an ID",
            path=source or None,
        )
    dup = {s: n for s, n in Counter(ids.to_list()).items() if n > 1}
    if dup:
        shown = ", ".join(f"{s!r} x{n}" for s, n in sorted(dup.items())[:20])
        raise InputError(
            f"duplicate subject_id(s): {shown}; each subject must appear once "
            "(mmpipe never de-duplicates silently: fix the source)",
            path=source or None,
        )


def _warn_list(what: str, ids: list[str]) -> None:
    shown = ", ".join(ids[:10]) + (f" ... (+{len(ids) - 10})" if len(ids) > 10 else "")
    log.warning("%d subject(s) %s: %s", len(ids), what, shown)


def finalize_manifest(cohort: str, adapter: str, out: AdapterOutput) -> Manifest:
    """Enforce the contract on an adapter's output and derive the full QC table."""
    columns = _check_columns(out)
    frame = out.frame.select(columns).with_columns(
        pl.col(SUBJECT).cast(pl.Utf8).str.strip_chars()
    )
    check_subject_ids(frame[SUBJECT], out.source)

    path_specs = [s for s in out.modalities.values() if not s.is_table]
    if path_specs:
        frame = frame.with_columns(
            pl.when(pl.col(s.column).cast(pl.Utf8).str.strip_chars() == "")
            .then(None)
            .otherwise(pl.col(s.column).cast(pl.Utf8))
            .alias(s.column)
            for s in path_specs
        )

    given: dict[tuple[str, str], QCRecord] = {}
    subjects = set(frame[SUBJECT].to_list())
    for rec in out.qc:
        key = (rec.subject_id, rec.modality)
        if rec.subject_id not in subjects or rec.modality not in out.modalities:
            raise ValueError(f"adapter QC record for unknown subject/modality {key}")
        if key in given:
            raise ValueError(f"adapter gave two QC records for {key}")
        given[key] = rec

    rows = frame.to_dicts()
    qc: list[QCRecord] = []
    keep: list[bool] = []
    excluded: list[str] = []
    label_missing: list[str] = []
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
        keep.append(any_present)
        if not any_present:
            excluded.append(sid)
            qc.append(QCRecord(sid, ALL_MODALITIES, EXCLUDED, NO_MODALITY))
            continue
        missing = [lab for lab in out.labels if row[lab] is None]
        if missing:
            label_missing.append(sid)
            reason = LABEL_MISSING if len(out.labels) == 1 else f"{LABEL_MISSING}: {', '.join(missing)}"
            qc.append(QCRecord(sid, LABEL_QC, ABSENT, reason))

    if excluded:
        _warn_list(f"excluded from the manifest of {cohort!r} ({NO_MODALITY})", excluded)
    if label_missing:
        _warn_list(f"of {cohort!r} kept with a missing label", label_missing)
    frame = frame.filter(pl.Series(keep, dtype=pl.Boolean))

    qc_df = qc_frame({SUBJECT: r.subject_id, "modality": r.modality, "stage": "adapter",
                      "status": r.status, "reason": r.reason, "path": r.path} for r in qc)
    counts = {}
    kept_qc = qc_df.filter(pl.col(SUBJECT).is_in(frame[SUBJECT].implode()))
    for spec in out.modalities.values():
        sub = kept_qc.filter(pl.col("modality") == spec.name)["status"].to_list()
        counts[spec.name] = {s: sub.count(s) for s in (PRESENT, ABSENT, REJECTED)}
        if counts[spec.name][REJECTED]:
            log.warning("cohort %r: %d subject(s) with %s rejected (see %s)",
                        cohort, counts[spec.name][REJECTED], spec.name, ADAPTER_QC)
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
        "source": out.source,
    }
    return Manifest(frame=frame, qc=qc_df, meta=meta)


# -- atomic files ---------------------------------------------------------------------------


# The temporary sibling of mmpipe.fsutil is renamed into place only on success: a killed
# job leaves at most a ``*.tmp-<pid>`` file, never a half-written output a later step trusts.


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_manifest(manifest: Manifest, out_dir: str | Path) -> None:
    """Write QC, JSON, then the parquet last: a manifest.parquet on disk implies the rest."""
    layout = CohortLayout(Path(out_dir))
    write_parquet(manifest.qc, layout.adapter_qc())
    atomic_write_json(manifest.meta, layout.manifest_meta())
    write_parquet(manifest.frame, layout.manifest())


# -- reading --------------------------------------------------------------------------------


def manifest_columns(meta: dict) -> list[str]:
    """Every column the manifest must hold according to its JSON."""
    cols = [SUBJECT, *meta["labels"]]
    for spec in meta["modalities"].values():
        if "path_column" in spec:
            cols.append(spec["path_column"])
    for spec in meta["modalities"].values():
        cols.extend(f for f in spec.get("fields", []) if f not in cols)
    cols.extend(meta.get("extra_columns", []))
    return cols


def read_manifest(out_dir: str | Path) -> tuple[pl.DataFrame, dict]:
    """Read ``out_dir/manifest.parquet`` and its JSON, checking that they agree."""
    layout = CohortLayout(Path(out_dir))
    pq, js = layout.manifest(), layout.manifest_meta()
    for p in (pq, js):
        if not p.exists():
            raise InputError("manifest not found; build it first (mmpipe manifest / the "
                             "manifest rule)", path=p)
    df = pl.read_parquet(pq)
    meta = json.loads(js.read_text())
    missing = [c for c in manifest_columns(meta) if c not in df.columns]
    if missing:
        raise InputError(f"manifest lacks column(s) {missing} that {js.name} declares",
                         path=pq)
    if df[SUBJECT].null_count() or df[SUBJECT].n_unique() != df.height:
        raise InputError("subject_id must be unique and non-null", path=pq)
    if meta.get("n_subjects") != df.height:
        raise InputError(f"{js.name} says {meta.get('n_subjects')} subjects, the parquet "
                         f"holds {df.height}: files from two different builds", path=pq)
    return df, meta


def modality_presence(df: pl.DataFrame, meta: dict) -> pl.DataFrame:
    """subject_id and one bool column per modality (path non-null, or any field non-null)."""
    exprs = []
    for name, spec in meta["modalities"].items():
        if "path_column" in spec:
            exprs.append(pl.col(spec["path_column"]).is_not_null().alias(name))
        else:
            exprs.append(pl.any_horizontal([pl.col(f).is_not_null() for f in spec["fields"]])
                         .alias(name))
    return df.select(pl.col(SUBJECT), *exprs)


def read_qc(out_dir: str | Path) -> pl.DataFrame:
    path = CohortLayout(Path(out_dir)).adapter_qc()
    if not path.exists():
        raise InputError("adapter QC not found; build the manifest first", path=path)
    return pl.read_parquet(path)
