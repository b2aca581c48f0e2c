"""What the stage-2 jobs (splits, masks, training, the report) read of the manifest, as a
digest: planning carries it as a parameter, and the training job and the report compute
it again after the manifest, to record and compare what their runs were trained on. Kept
apart from the stage-1 views (:mod:`mmpipe.cohorts.manifest_views`), so that the training
jobs' code key does not move with how a stage-1 job's view is stamped."""

from __future__ import annotations

import functools
from pathlib import Path

from mmpipe.cohorts.manifest_digest import NOT_BUILT, UNREADABLE, digest_of, planned_digest
from mmpipe.cohorts.manifest_files import SPLIT, SUBJECT, modality_presence, read_manifest
from mmpipe.cohorts.split_groups import SPLIT_GROUP
from mmpipe.errors import InputError
from mmpipe.layout import CohortLayout

NO_LABEL = "label not in the manifest"


def benchmark_view_digest(out_dir: str | Path, label: str) -> str:
    """SHA-256 of what the stage-2 jobs (splits, masks, training) read through the
    manifest files: every subject in order, the benchmark's ``label``, the cohort's own
    split (its column and source) and which modalities each subject has (its modality
    names in name order, as :mod:`mmpipe.bench.prepare` reads them), and the subjects'
    ``split_group`` where the adapter writes one. Carried as a
    parameter like :func:`modality_view_digest`: a manifest rebuilt for a clinical field
    or a regenerated image under the same name redraws no split and no mask, and reruns
    only the training jobs whose stores changed."""
    return planned_digest(out_dir, _benchmark_view, label)


def built_benchmark_view(out_dir: str | Path, label: str) -> str:
    """:func:`benchmark_view_digest` for a job that runs after the manifest (training,
    the report): where planning defers (no manifest, an unreadable one, a label it lacks)
    this raises :class:`InputError` naming the manifest, instead of a placeholder that
    would compare unequal to every run's."""
    digest = benchmark_view_digest(out_dir, label)
    if digest in (NOT_BUILT, UNREADABLE, NO_LABEL):
        raise InputError(f"{digest} ({label!r} is the benchmark's label): rebuild the "
                         "manifest (the manifest rule)",
                         path=CohortLayout(Path(out_dir)).manifest())
    return digest


@functools.cache
def _benchmark_view(root: str, label: str, stamp: tuple) -> str:
    df, meta = read_manifest(root)
    if label not in df.columns:
        return NO_LABEL  # the job says so, with the manifest's labels
    modalities = sorted(meta["modalities"])
    columns = [SUBJECT, label, *([SPLIT] if SPLIT in df.columns else []),
               *([SPLIT_GROUP] if SPLIT_GROUP in df.columns else [])]
    # of the split's record, what a split file holds: not ``where`` (the CSV's path)
    source = (meta.get("split") or {}).get("source")
    return digest_of({"columns": columns, "rows": df.select(columns).rows(),
                    "split_source": source, "modalities": modalities,
                    "presence": modality_presence(df, meta).select(modalities).rows()})
