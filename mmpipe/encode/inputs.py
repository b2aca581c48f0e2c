"""What each subject brings to an encoder: its input, or why it has none.

The encoding job sees every manifest subject. The status a subject arrives with
comes from the adapter QC (absent, file not found) and from preprocessing
(rejected series, slides without tissue); the encoder may reject more (an
unreadable volume). All of it ends in the store's ``status``/``reason`` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.cohorts.manifest_files import path_under_root, read_manifest
from mmpipe.errors import StoreError
from mmpipe.layout import SHARD_QC, SHARD_TILES, CohortLayout
from mmpipe.preprocess.masks import MaskedVolume, mask_column, read_masks
from mmpipe.shards import check_shard_settings


@dataclass
class SubjectInput:
    subject_id: str
    status: str          # "ok" when ``source`` holds an input, else "absent" | "rejected"
    reason: str = ""     # why not ok; for an ok input, a note from preprocessing (or "")
    source: Any = None   # path, MaskedVolume, (slide path, tiles frame), prompt or table row
    # rejected by the adapter, for its path (not found, not a folder): a wrong folder in
    # the config rejects every subject so, where a preprocessing stage rejects each
    # subject for a defect of its own
    path_rejected: bool = False


def input_file(item: SubjectInput, kind: str) -> str | None:
    """The file or folder an ``ok`` input is read from: a volume (not its mask), a
    shard's NIfTI, a slide, an image folder, a feature file; None for a table's row or
    prompt, read from the manifest."""
    if kind == "table" or item.source is None:
        return None
    source = item.source
    if isinstance(source, MaskedVolume):
        return source.image
    return str(source[0] if isinstance(source, tuple) else source)


def _adapter_status(cohort_dir: Path, modality: str) -> dict[str, tuple[str, str]]:
    qc_path = CohortLayout(cohort_dir).adapter_qc()
    if not qc_path.exists():
        return {}
    qc = pl.read_parquet(qc_path).filter(pl.col("modality") == modality)
    return {r["subject_id"]: (r["status"], r["reason"] or "") for r in qc.iter_rows(named=True)}


def _base_inputs(manifest: pl.DataFrame, cohort_dir: Path, modality: str,
                 path_column: str | None) -> list[SubjectInput]:
    """One input per subject from the manifest path column, with adapter reasons."""
    adapter = _adapter_status(cohort_dir, modality)
    out = []
    paths = manifest[path_column] if path_column else [None] * len(manifest)
    for sid, path in zip(manifest["subject_id"], paths, strict=True):
        status, reason = adapter.get(sid, ("present", ""))
        if path_column and path is None:
            if status == "rejected":
                out.append(SubjectInput(sid, "rejected", reason or "rejected by the adapter",
                                        path_rejected=True))
            else:
                out.append(SubjectInput(sid, "absent", reason or f"no {modality} for this subject"))
        else:
            out.append(SubjectInput(sid, "ok", "", path))
    return out


def _merge_shard_qc(inputs: list[SubjectInput], shard_dirs: list[Path], modality: str,
                    meta: dict) -> dict[str, dict]:
    """Apply the preprocessing verdicts of every shard; returns the ok rows by subject."""
    frames = [pl.read_parquet(Path(d) / SHARD_QC) for d in shard_dirs]
    # diagonal: a shard made before a column was recorded beside one made after
    qc = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    rows = {r["subject_id"]: {**r, "_dir": None} for r in qc.iter_rows(named=True)} if len(qc) else {}
    for d, frame in zip(shard_dirs, frames, strict=True):
        for sid in frame["subject_id"]:
            rows[sid]["_dir"] = Path(d)
    for item in inputs:
        if item.status != "ok":
            continue
        row = rows.get(item.subject_id)
        if row is None:
            raise StoreError(f"subject {item.subject_id!r} has a {modality} input but no "
                             f"preprocessing record in {len(shard_dirs)} shard(s): "
                             "the shards do not match the manifest; rerun preprocessing")
        # a shard of another file than the manifest names now (a hand-run encode after
        # the manifest changed) holds that file's tiles or volume; the same file in a
        # dataset moved since (which reruns no shard) is the same path under the root
        under = row.get("path_under_root")  # None in a shard made before it was recorded
        made, now = ((under, path_under_root(meta, str(item.source))) if under is not None
                     else (row.get("path"), str(item.source)))
        # (as written then or now: a CSV moved beside files that stayed is the same file)
        if made is not None and made != now and row.get("path") != str(item.source):
            raise StoreError(f"subject {item.subject_id!r}: its {modality} shard was made "
                             f"from {row['path']}, the manifest now names {item.source}: "
                             "the shards do not match the manifest; rerun preprocessing")
        if row["status"] != "ok":
            item.status, item.reason, item.source = "rejected", row["reason"], None
        else:  # a note on a usable input (files skipped in its folder) rides along
            item.reason = row["reason"] or ""
    return {sid: r for sid, r in rows.items() if r["status"] == "ok"}


def gather_inputs(cohort_dir: str | Path, modality: str, kind: str, *,
                  shard_dirs: list[str | Path] | None = None,
                  shard_settings: dict | None = None,
                  prompts: str | Path | None = None,
                  fields: list[str] | None = None,
                  masks: str | Path | None = None) -> list[SubjectInput]:
    """Inputs of one modality for every manifest subject, in manifest order. ``masks``:
    a ``segment`` job's output, the subjects' masks instead of the manifest's column.
    ``shard_settings``: the DICOM or tiling settings the store records, which every
    shard must have been made with."""
    cohort_dir = Path(cohort_dir)
    manifest, meta = read_manifest(cohort_dir)
    if kind == "table":
        return _table_inputs(manifest, cohort_dir, modality, prompts, fields or [])
    inputs = _base_inputs(manifest, cohort_dir, modality, f"{modality}_path")
    if kind == "volume" and masks is None and mask_column(modality) in manifest.columns:
        # the subject's mask rides with its volume (mmpipe.preprocess.masks)
        masks_of = dict(zip(manifest["subject_id"], manifest[mask_column(modality)],
                            strict=True))
        for item in inputs:
            if item.status == "ok":
                item.source = MaskedVolume(str(item.source), masks_of[item.subject_id])
    if kind in ("dicom", "slide") and shard_settings is not None:
        check_shard_settings([Path(d) for d in shard_dirs or []], shard_settings,
                             "DICOM" if kind == "dicom" else "tiling")
    if kind == "dicom":
        ok = _merge_shard_qc(inputs, [Path(d) for d in shard_dirs or []], modality, meta)
        for item in inputs:
            if item.status == "ok":
                row = ok[item.subject_id]
                item.source = str(row["_dir"] / row["volume"])
    if kind in ("volume", "dicom") and masks is not None:
        # a segment job's masks, on the grid of the volume the encoder reads
        made = read_masks(masks)
        for item in inputs:
            if item.status == "ok":
                mask, why = made.get(item.subject_id, (None, "no segmentation record"))
                if mask is None:
                    item.status, item.reason, item.source = "rejected", why, None
                else:  # a note on the mask (an organ found nowhere) rides along
                    item.source = MaskedVolume(str(item.source), mask)
                    item.reason = "; ".join(r for r in (item.reason, why) if r)
    if kind == "slide":
        shard_dirs = [Path(d) for d in shard_dirs or []]
        _merge_shard_qc(inputs, shard_dirs, modality, meta)
        tiles = [pl.read_parquet(d / SHARD_TILES) for d in shard_dirs]
        tiles = pl.concat([t for t in tiles if len(t)], how="vertical_relaxed") if any(
            len(t) for t in tiles) else None
        for item in inputs:
            if item.status == "ok":
                grid = (tiles.filter(pl.col("subject_id") == item.subject_id)
                        if tiles is not None else None)
                if grid is None or not len(grid):  # tiling rejects a slide without tissue
                    raise StoreError(f"subject {item.subject_id!r}: its {modality} shard "
                                     "records it ok but holds none of its tiles: the shards "
                                     "do not match the manifest; rerun preprocessing")
                # the manifest's path: the shard's is where the dataset lay when tiled
                item.source = (str(item.source), grid)
    return inputs


def _table_inputs(manifest: pl.DataFrame, cohort_dir: Path, modality: str,
                  prompts: str | Path | None, fields: list[str]) -> list[SubjectInput]:
    if prompts is not None:
        table = pl.read_parquet(prompts)
        text = dict(zip(table["subject_id"], table["prompt"], strict=True))
        return [SubjectInput(sid, "ok", "", text[sid]) if text.get(sid) is not None
                else SubjectInput(sid, "absent", f"no {modality} field recorded")
                for sid in manifest["subject_id"]]
    rows = manifest.select(["subject_id", *fields]).iter_rows(named=True)
    out = []
    for row in rows:
        values = {f: row[f] for f in fields}
        if all(v is None for v in values.values()):
            out.append(SubjectInput(row["subject_id"], "absent", f"no {modality} field recorded"))
        else:
            out.append(SubjectInput(row["subject_id"], "ok", "", values))
    return out
