"""Convert one shard of a cohort's DICOM folders to NIfTI volumes.

Output folder (written atomically)::

    {out_dir}/{safe subject id}.nii.gz   one volume per converted subject
    {out_dir}/qc.parquet                 one row per subject of the shard with a folder

A folder that holds no usable series (or series of several patients or studies, or
a chosen series with an unreadable slice) is *rejected* with the reader's reason; it
is never skipped silently and never stops the other subjects.

A converted subject's row is ``ok``; its ``reason`` is empty, or a short note when
something was left out on the way (skipped files, a mixed folder converted by an
explicit ``uid:`` rule), which downstream carries into the feature store. ``detail``
is the reader's JSON summary: the chosen series, the other series and why they were
not used, and every skipped file with its reason (for a rejection: what is known of
the skipped files and the series found).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from mmpipe.cohorts.manifest_files import path_under_root, read_manifest
from mmpipe.fsutil import atomic_dir
from mmpipe.job_failures import JobFailures
from mmpipe.layout import SHARD_QC
from mmpipe.qc import qc_frame
from mmpipe.shards import in_shard, safe_name, write_shard_settings

log = logging.getLogger(__name__)


def convert_dicom_shard(cohort_dir: str | Path, modality: str, shard: int, n_shards: int,
                        params: dict, out_dir: str | Path) -> pl.DataFrame:
    from mmpipe.io.dicom import dicom_to_nifti

    manifest, meta = read_manifest(cohort_dir)
    col = f"{modality}_path"
    have = manifest.filter(pl.col(col).is_not_null())
    folders = dict(zip(have["subject_id"], have[col], strict=True))
    subjects = in_shard(folders, shard, n_shards)
    judged = JobFailures({sid: folders[sid] for sid in subjects}, "convert")
    rows = []
    with atomic_dir(out_dir) as tmp:
        for sid in subjects:
            folder = folders[sid]
            out = tmp / f"{safe_name(sid)}.nii.gz"
            try:
                judged.check_there(sid)
                summary = dicom_to_nifti(folder, out, rule=params.get("series_select", "most_slices"),
                                         min_slices=params.get("min_slices", 3),
                                         max_gap_factor=params.get("max_gap_factor", 1.5))
            except Exception as raised:
                # one folder's failure, named or not (a reader's bare error on a damaged
                # file), is its subject's rejection; a cause they share fails the job
                if judged.shared(sid, raised):
                    raise
                err = judged.rejection(sid, raised)
                log.warning("rejected %s", err)
                detail = getattr(err, "detail", None)
                rows.append({"subject_id": sid, "modality": modality, "stage": "preprocess",
                             "status": "rejected", "reason": err.reason, "path": str(folder),
                             "path_under_root": path_under_root(meta, str(folder)),
                             "volume": None,
                             "detail": json.dumps(detail, default=str) if detail else None})
                continue
            if summary["note"]:
                log.warning("subject %r, file %s: %s", sid, folder, summary["note"])
            rows.append({"subject_id": sid, "modality": modality, "stage": "preprocess",
                         "status": "ok", "reason": summary["note"], "path": str(folder),
                         "path_under_root": path_under_root(meta, str(folder)),
                         "volume": out.name, "detail": json.dumps(summary, default=str)})
        judged.finish()
        qc = qc_frame(rows, extra={"path_under_root": pl.String, "volume": pl.String,
                                   "detail": pl.String})
        qc.write_parquet(tmp / SHARD_QC)
        write_shard_settings(tmp, params)
    n_bad = (qc["status"] == "rejected").sum()
    log.info("DICOM shard %d/%d of %s: %d converted, %d rejected", shard, n_shards, modality,
             len(qc) - n_bad, n_bad)
    return qc
