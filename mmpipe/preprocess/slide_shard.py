"""Tile one shard of a cohort's whole-slide images.

Output folder (written atomically)::

    {out_dir}/tiles.parquet   one row per kept tile (subject_id, level-0 x, y, read level...)
    {out_dir}/qc.parquet      one row per subject of the shard with a slide

Only tile coordinates are stored (as CLAM does): the encoder reads the pixels from the
slide, so a tiling change costs a cheap rerun and no pixel copy is kept on disk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from mmpipe.cohorts.manifest_files import path_under_root, read_manifest
from mmpipe.errors import SlideError
from mmpipe.fsutil import atomic_dir
from mmpipe.job_failures import JobFailures
from mmpipe.layout import SHARD_QC, SHARD_TILES
from mmpipe.qc import qc_frame
from mmpipe.shards import in_shard, write_shard_settings

log = logging.getLogger(__name__)


def tiling_params_from(params: dict):
    from mmpipe.preprocess.tiling import TilingParams

    fields = TilingParams.__dataclass_fields__
    return TilingParams(**{k: v for k, v in params.items() if k in fields})


def _tiling_note(detail: dict) -> str:
    """What a tiled slide's QC row says for a reader to look at, as a DICOM note does."""
    from mmpipe.io.slide import MPP_SOURCE_CONFIG, MPP_XY_TOLERANCE
    from mmpipe.preprocess.tiling import TISSUE_AREA_NOTE

    notes = []
    if detail["mpp_source"] == MPP_SOURCE_CONFIG:
        # a value its metadata had and that was ignored (a placeholder's 96 dpi, a unit
        # slipped) is said as such: "none" sent a reader to metadata that holds one
        notes.append(f"tiled at an assumed {detail['mpp']:.4g} um/px "
                     "(preprocess.slide.mpp_when_missing): "
                     + (detail.get("mpp_ignored") or "none in the slide's metadata"))
    if detail["anisotropy"] > MPP_XY_TOLERANCE:
        mpp_x, mpp_y = detail["mpp_xy"]
        notes.append(f"its mpp-x {mpp_x:.5g} and mpp-y {mpp_y:.5g} differ by "
                     f"{100 * detail['anisotropy']:.1f} %: tiled at their mean, each tile "
                     "stretched by as much")
    if detail["tissue_area"] >= TISSUE_AREA_NOTE:
        notes.append(f"the tissue mask covers {100 * detail['tissue_area']:.0f} % of the "
                     "slide: tinted glass, a dark background or pen ink may be tiled as "
                     "tissue; look at its thumbnail")
    return "; ".join(notes)


def tile_slide_shard(cohort_dir: str | Path, modality: str, shard: int, n_shards: int,
                     params: dict, out_dir: str | Path) -> pl.DataFrame:
    from mmpipe.io.slide import open_slide
    from mmpipe.preprocess.tiling import tile_grid

    tiling = tiling_params_from(params)
    manifest, meta = read_manifest(cohort_dir)
    col = f"{modality}_path"
    have = manifest.filter(pl.col(col).is_not_null())
    paths = dict(zip(have["subject_id"], have[col], strict=True))
    subjects = in_shard(paths, shard, n_shards)
    judged = JobFailures({sid: paths[sid] for sid in subjects}, "tile")
    rows, frames = [], []
    for sid in subjects:
        path = paths[sid]
        try:
            judged.check_there(sid, SlideError)
            with open_slide(path, mpp_when_missing=tiling.mpp_when_missing) as slide:
                grid = tile_grid(slide, tiling)
                detail = {"n_tiles": len(grid.coords), "n_on_tissue": grid.n_on_tissue,
                          "n_grid": grid.n_grid, "tissue_area": round(grid.tissue_area, 4),
                          "level": grid.level, "mpp": slide.mpp,
                          "mpp_source": slide.mpp_source, "mpp_xy": slide.mpp_xy,
                          "anisotropy": slide.anisotropy,
                          "mpp_ignored": slide.mpp_ignored,
                          "read_size": grid.read_size}
        except Exception as raised:
            # a slide's failure, named or not (OpenSlide's or Pillow's bare error on a damaged
            # file), is its subject's rejection; a cause they share fails the job
            if judged.shared(sid, raised):
                raise
            err = judged.rejection(sid, raised)
            log.warning("rejected %s", err)
            rows.append({"subject_id": sid, "modality": modality, "stage": "preprocess",
                         "status": "rejected", "reason": err.reason, "path": str(path),
                         "path_under_root": path_under_root(meta, str(path)),
                         "n_tiles": 0, "detail": None})
            continue
        frames.append(grid.to_frame(sid))
        rows.append({"subject_id": sid, "modality": modality, "stage": "preprocess",
                     "status": "ok", "reason": _tiling_note(detail), "path": str(path),
                     "path_under_root": path_under_root(meta, str(path)),
                     "n_tiles": detail["n_tiles"], "detail": json.dumps(detail, default=str)})
    judged.finish()
    qc = qc_frame(rows, extra={"path_under_root": pl.String, "n_tiles": pl.Int64,
                               "detail": pl.String})
    with atomic_dir(out_dir) as tmp:
        tiles = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
        tiles.write_parquet(tmp / SHARD_TILES)
        qc.write_parquet(tmp / SHARD_QC)
        write_shard_settings(tmp, params)
    log.info("slide shard %d/%d of %s: %d tiled, %d rejected, %d tiles", shard, n_shards,
             modality, len(frames), len(rows) - len(frames), sum(len(f) for f in frames))
    return qc
