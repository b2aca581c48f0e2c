"""The cohort QC table and the stage-1 summary.

``qc.parquet`` has one row per (subject, modality, encoder store) with the store's
final status and reason, plus the adapter's rows that no store carries (subjects
excluded from the manifest, missing labels, and table values that were not numbers in
a numeric field and were set to blank, status ``non_numeric``, one row per value,
encoder null); ``path`` is the input the adapter found for the subject's modality (the
file or folder a rejection is about; null for a table's fields). The summary says, per
store, how many subjects are present, absent and rejected, in plain words which stores
were computed with random weights, lists every rejected input with its file, the notes
on inputs that were used (a DICOM file skipped, a slice interpolated, an image of a set
left out), the subjects no store could use any input of, and the clinical values set to
blank. ``qc.parquet`` records the digest of the adapter's QC table it was built from
(:data:`ADAPTER_QC_KEY`), so that a manifest rebuilt with other records by a run that
stopped short of the summary marks it (``report.stale``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mmpipe.cohorts.manifest import ABSENT, PRESENT, REJECTED
from mmpipe.cohorts.manifest_files import NON_NUMERIC
from mmpipe.fsutil import atomic_file, write_parquet
from mmpipe.hashing import params_hash
from mmpipe.report.tables import md_escape
from mmpipe.store import FeatureStore

QC_COLUMNS = ["subject_id", "modality", "encoder", "status", "reason", "path"]
# rows of one store's notes shown in the summary (the rest are in qc.parquet)
NOTES_SHOWN = 20
SUBJECTS_SHOWN = 50
# qc.parquet's metadata: the digest of the adapter QC table the summary was built from
ADAPTER_QC_KEY = "mmpipe.adapter_qc_digest"


def store_qc(store: FeatureStore) -> pl.DataFrame:
    """The store's subjects with their status and reason (its embeddings left unread: a
    store of 3,000 VGG11 blocks took 475 MB for these columns)."""
    ids = store.subject_ids
    n = len(ids)

    def column(name: str) -> list[str]:
        return [str(v) for v in store.group[name][:].tolist()]

    return pl.DataFrame({
        "subject_id": ids.tolist(),
        "modality": [store.attrs.get("modality")] * n,
        "encoder": [store.attrs.get("encoder")] * n,
        "status": column("status"),
        "reason": column("reason"),
    }, schema={"subject_id": pl.String, "modality": pl.String, "encoder": pl.String,
               "status": pl.String, "reason": pl.String})


def _summary_rows(stores: list[FeatureStore]) -> list[dict]:
    rows = []
    for s in stores:
        counts = s.attrs.get("status_counts", {})
        rows.append({
            "modality": s.attrs.get("modality"),
            "encoder": s.attrs.get("encoder"),
            "shape": "×".join(str(d) for d in s.attrs.get("feature_shape", [])),
            "subjects": s.attrs.get("n_subjects"),
            "present": counts.get("ok", 0),
            "absent": counts.get("absent", 0),
            "rejected": counts.get("rejected", 0),
            "weights": ("RANDOM-INIT (not pretrained)" if s.attrs.get("weights_random_init")
                        else s.attrs.get("weights_source")),
            "path": str(s.path),
        })
    return rows


def _cell(value) -> str:
    """A value as one Markdown table cell: a ``|`` (BraTS's ``<t1|t1ce|...>``, a series rule
    ``T1|MPRAGE``) split the row into more cells than the table has, a newline (a reader's
    multi-line error) cut it short, and ``<...>`` read as an HTML tag went unshown."""
    text = md_escape(None if value is None else " ".join(str(value).split()))
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _markdown(rows: list[dict], qc: pl.DataFrame, adapter_extra: pl.DataFrame,
              blanked: pl.DataFrame | None = None) -> str:
    cols = ["modality", "encoder", "shape", "subjects", "present", "absent", "rejected", "weights"]
    lines = ["# Stage 1 summary", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in rows]
    random = [r for r in rows if str(r["weights"]).startswith("RANDOM")]
    if random:
        lines += ["", "**Random weights:** " + ", ".join(f"{r['modality']}/{r['encoder']}"
                                                         for r in random)
                  + " were computed with randomly initialised encoders (`allow_random_init`). "
                  "Their features are not pretrained; point `encoders.<name>.weights` at the "
                  "official files for real features."]
    # per encoder: two encoders of one modality can reject a subject for their own reasons
    rejected = (qc.filter(pl.col("status") == "rejected")
                .unique(["subject_id", "modality", "encoder", "reason"])
                .sort(["modality", "subject_id", "encoder"], nulls_last=True))
    lines += _shared_rejections(rejected, rows)
    if len(rejected):
        lines += ["", "## Rejected inputs", "",
                  "| subject | modality | encoder | reason | file |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(r['subject_id'])} | {_cell(r['modality'])} | {_cell(r['encoder'])} | "
                  f"{_cell(r['reason'])} | {_cell(r.get('path'))} |"
                  for r in rejected.iter_rows(named=True)]
    # the stores' own rows (the adapter's carry no encoder)
    stored = (qc.filter(pl.col("encoder").is_not_null()) if "encoder" in qc.columns
              else qc.clear())
    lines += _notes_section(stored) + _unusable_section(stored)
    if blanked is not None and len(blanked):
        n_subjects = blanked["subject_id"].n_unique()
        # a field two table modalities share has a row in each: one line per value, which
        # names every modality that holds it
        blanked = (blanked.group_by(["subject_id", "reason"], maintain_order=True)
                   .agg(pl.col("modality").unique(maintain_order=True).str.join(", ")))
        n_values = blanked.height
        lines += ["", "## Clinical values set to blank", "",
                  f"{n_values} value(s) of {n_subjects} subject(s) were not numbers in a "
                  "numeric table field and were set to blank (the subject keeps its other "
                  "fields; status `non_numeric` in `qc.parquet`). Set `non_numeric: error` on "
                  "the table modality to stop at the manifest instead.", "",
                  "| subject | modality | reason |", "|---|---|---|"]
        lines += [f"| {_cell(r['subject_id'])} | {_cell(r['modality'])} | {_cell(r['reason'])} |"
                  for r in blanked.iter_rows(named=True)]
    # a rejection no store holds (its subject left the manifest) is under Rejected inputs
    adapter_extra = adapter_extra.filter(pl.col("status") != REJECTED)
    if len(adapter_extra):
        lines += ["", "## Other records", "", "| subject | what | status | reason |",
                  "|---|---|---|---|"]
        lines += [f"| {_cell(r['subject_id'])} | {_cell(r['modality'])} | {_cell(r['status'])} | "
                  f"{_cell(r['reason'])} |" for r in adapter_extra.iter_rows(named=True)]
    return "\n".join(lines) + "\n"


def _shared_rejections(rejected: pl.DataFrame, rows: list[dict]) -> list[str]:
    """A line per store whose rejections share one reason on many subjects (3 or more,
    a tenth or more of those with an input): one cause, not each subject's own, which the
    summary listed among the others, each as its own defect. (A shard job whose data
    mount was missing, or dropped, rejected every subject "not a folder"; it now fails,
    :mod:`mmpipe.job_failures`, but a setting or a folder wrong for many
    subjects is still each one's rejection.)"""
    # of the subjects with an input: most of a store's subjects may lack the modality
    size = {(r["modality"], r["encoder"]): r["present"] + r["rejected"] for r in rows}
    stored = rejected.filter(pl.col("encoder").is_not_null())  # the adapter's: no store
    if not len(stored):
        return []
    shared = (stored.group_by(["modality", "encoder", "reason"], maintain_order=True)
              .agg(pl.len().alias("n")).sort(["modality", "encoder", "n"],
                                             descending=[False, False, True]))
    found = [r for r in shared.iter_rows(named=True)
             if r["n"] >= 3 and r["n"] >= 0.1 * size.get((r["modality"], r["encoder"]), 0)]
    if not found:
        return []
    return ["", "**One reason, many subjects:** "
            + "; ".join(f"{r['modality']}/{r['encoder']}: {r['n']} subjects rejected for "
                        f"\"{r['reason']}\"" for r in found)
            + ". A cause shared by many subjects (a data folder or mount missing where the "
            "job ran, a setting) rather than each one's own input: where it is one, fix it "
            "and rerun the jobs that read those inputs, which nothing reruns by itself for "
            "a DICOM series or a slide (`snakemake --forcerun dicom_to_nifti` or "
            "`--forcerun tile_slides`; a path the adapter rejected is checked again at "
            "the next run)."]


def _with_paths(qc: pl.DataFrame, adapter: pl.DataFrame) -> pl.DataFrame:
    """A store's ``qc`` rows with each one's ``path``: the input the adapter's verdict on
    the subject's modality names (a rejection's reason said "file not found" without
    the file)."""
    if not qc.width:
        return qc
    paths = (adapter.filter(pl.col("status").is_in([PRESENT, REJECTED])
                            & (pl.col("path").fill_null("") != ""))
             .group_by(["subject_id", "modality"], maintain_order=True)
             .agg(pl.col("path").last()))
    return qc.join(paths, on=["subject_id", "modality"], how="left", maintain_order="left")


def _notes_section(stored: pl.DataFrame) -> list[str]:
    """The notes on inputs a store used (status ok with a reason), up to
    :data:`NOTES_SHOWN` a store: they were in ``qc.parquet`` only, where a subject whose
    embedding came from 1 of 50 fields read as any present subject."""
    if not len(stored):
        return []
    noted = (stored.filter((pl.col("status") == "ok") & (pl.col("reason").fill_null("") != ""))
             .sort(["modality", "encoder", "subject_id"]))
    if not len(noted):
        return []
    lines = ["", "## Notes on inputs used", "",
             "The subject's input was used, with this note.", "",
             "| subject | modality | encoder | note |", "|---|---|---|---|"]
    more = []
    for (modality, encoder), part in noted.group_by(["modality", "encoder"],
                                                    maintain_order=True):
        lines += [f"| {_cell(r['subject_id'])} | {_cell(modality)} | {_cell(encoder)} | "
                  f"{_cell(r['reason'])} |" for r in part.head(NOTES_SHOWN).iter_rows(named=True)]
        if len(part) > NOTES_SHOWN:
            more.append(f"{len(part) - NOTES_SHOWN} more of {modality}/{encoder}")
    if more:
        lines += ["", f"And {', '.join(more)} in `qc.parquet`."]
    return lines


def _unusable_section(stored: pl.DataFrame) -> list[str]:
    """Subjects that some store lists and none holds as usable: each store's rows said
    so one modality at a time, and a subject the adapter kept read as any other."""
    if not len(stored):
        return []
    none = (stored.group_by("subject_id").agg((pl.col("status") == "ok").any().alias("used"))
            .filter(~pl.col("used")).sort("subject_id")["subject_id"].to_list())
    if not none:
        return []
    shown = ", ".join(none[:SUBJECTS_SHOWN]) + (
        f" and {len(none) - SUBJECTS_SHOWN} more" if len(none) > SUBJECTS_SHOWN else "")
    return ["", "## Subjects without a usable input", "",
            f"{len(none)} subject(s) have no input any store could use (every modality "
            f"absent or rejected): {_cell(shown)}. Stage 2 trains on none of them, and "
            "scores a test subject among them with the training prior."]


def adapter_qc_digest(adapter_qc: str | Path | pl.DataFrame) -> str:
    """The adapter QC table's verdicts (its file, or the table read), digested: its
    content, not its bytes (which another parquet writer's version changes), less the
    files' paths (which a project copied elsewhere and its manifest rebuilt changes, every
    verdict the same)."""
    table = (adapter_qc if isinstance(adapter_qc, pl.DataFrame)
             else pl.read_parquet(adapter_qc))
    table = table.select(sorted(c for c in table.columns if c != "path"))
    return params_hash([table.columns, table.sort(table.columns, nulls_last=True).rows()])


def recorded_adapter_qc(qc: str | Path) -> str | None:
    """The digest of the adapter QC table a cohort QC table was built from; None where
    it records none (built before it did) or cannot be read."""
    try:
        return pl.read_parquet_metadata(qc).get(ADAPTER_QC_KEY)
    except (pl.exceptions.PolarsError, OSError):
        return None


def write_cohort_qc(adapter_qc: str | Path, store_paths: list[str | Path], qc_out: str | Path,
                    summary_out: str | Path) -> pl.DataFrame:
    stores = [FeatureStore(p) for p in store_paths]
    frames = [store_qc(s) for s in stores]
    qc = pl.concat(frames) if frames else pl.DataFrame()
    adapter = pl.read_parquet(adapter_qc)
    cols = ["subject_id", "modality", "status", "reason"]
    non_numeric = pl.col("status") == NON_NUMERIC
    # a store's ok, absent and rejected rows say what the adapter's present, absent and
    # rejected rows of its subjects say (a rejected path is the store's rejection, same
    # reason: kept too, it was counted once more than the stores); every other adapter
    # row (a file skipped, a whole-cohort record, a subject the store does not list) is
    # the adapter's alone: dropping every row of an encoded modality lost them
    # An absent or rejected row is said only where the store holds that verdict (its own
    # words: a table's "all fields missing" is the store's "no clinical field recorded"; a
    # store that read a stray file's note as the adapter's word had lost the rejection
    # from every record); a present row, where the store lists the subject at all
    carried = (qc.select("subject_id", "modality", pl.col("status").alias("held")).unique()
               if qc.width else
               pl.DataFrame(schema={"subject_id": pl.String, "modality": pl.String,
                                    "held": pl.String}))
    said = adapter.join(carried, on=["subject_id", "modality"], how="inner").filter(
        (pl.col("status") == PRESENT)
        | (pl.col("status").is_in([ABSENT, REJECTED]) & (pl.col("status") == pl.col("held")))
    ).select(adapter.columns).unique()
    # the adapter's own rows keep their own file (a file skipped in a case folder)
    extra = (adapter.filter(~non_numeric)
             .join(said.select(cols), on=cols, how="anti", nulls_equal=True)
             .select(*cols, "path"))
    blanked = adapter.filter(non_numeric).select(*cols, "path")
    added = pl.concat([extra, blanked])
    qc = _with_paths(qc, adapter)
    if len(added):
        added = added.with_columns(pl.lit(None, dtype=pl.String).alias("encoder"))
        qc = (pl.concat([qc, added.select(qc.columns)], how="vertical_relaxed") if qc.width
              else added.select(QC_COLUMNS))
    write_parquet(qc, qc_out, metadata={ADAPTER_QC_KEY: adapter_qc_digest(adapter)})
    with atomic_file(summary_out) as tmp:
        tmp.write_text(_markdown(_summary_rows(stores), qc, extra, blanked))
    return qc
