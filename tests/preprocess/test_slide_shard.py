"""A shard of slides: a slide that fails in any way is one rejected QC row, the others
are tiled."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openslide")

from mmpipe.io.tiff_writer import write_pyramidal_tiff  # noqa: E402
from mmpipe.preprocess.slide_shard import tile_slide_shard  # noqa: E402
from tests.preprocess.conftest import one_modality_cohort  # noqa: E402


def test_an_unexpected_error_rejects_its_slide_only(tmp_path, monkeypatch):
    """OpenSlide's bare KeyError on a property name (before the reader caught it) took the
    whole shard down: no output, every slide lost."""
    from mmpipe.io import slide

    rgb = np.full((1024, 1024, 3), 255, np.uint8)
    rgb[:768, :768] = (200, 90, 170)   # tissue in 9 of 16 tiles
    for name in ("good", "odd"):
        write_pyramidal_tiff(tmp_path / f"{name}.tiff", rgb, mpp=0.5, n_levels=2)
    one_modality_cohort(tmp_path, "slide", {"good": "good.tiff", "odd": "odd.tiff"})
    open_slide = slide.open_slide

    def fails_on_odd(path, *args, **kwargs):
        if "odd" in str(path):
            raise KeyError("ScanScope ID")
        return open_slide(path, *args, **kwargs)

    monkeypatch.setattr(slide, "open_slide", fails_on_odd)
    qc = tile_slide_shard(tmp_path / "results" / "toy", "wsi", 0, 1, {}, tmp_path / "out")
    rows = {r["subject_id"]: r for r in qc.to_dicts()}
    assert rows["good"]["status"] == "ok" and rows["good"]["n_tiles"] > 0
    # how many tiles the tissue had beside how many were kept (a cap was invisible)
    assert json.loads(rows["good"]["detail"])["n_on_tissue"] >= rows["good"]["n_tiles"]
    assert rows["odd"]["status"] == "rejected"
    assert "cannot tile: KeyError: 'ScanScope ID'" in rows["odd"]["reason"]
    # every slide failing so is a cause they share: the job fails, writing nothing
    monkeypatch.setattr(slide, "open_slide", lambda *a, **k: fails_on_odd(tmp_path / "odd"))
    with pytest.raises(RuntimeError, match="every one of the job's 2 subjects failed"):
        tile_slide_shard(tmp_path / "results" / "toy", "wsi", 0, 1, {}, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_a_resolution_the_config_assumed_is_the_slides_note(tmp_path):
    """The assumed microns-per-pixel was only in the shard's detail, which nothing reads."""
    import tifffile

    rgb = np.full((1024, 1024, 3), 255, np.uint8)
    rgb[:768, :768] = (200, 90, 170)
    tifffile.imwrite(tmp_path / "nompp.tiff", rgb, photometric="rgb", tile=(256, 256),
                     compression="zlib", metadata=None)
    one_modality_cohort(tmp_path, "slide", {"s": "nompp.tiff"})
    qc = tile_slide_shard(tmp_path / "results" / "toy", "wsi", 0, 1,
                          {"mpp_when_missing": 0.5}, tmp_path / "out")
    (row,) = qc.to_dicts()
    assert row["status"] == "ok"
    assert row["reason"] == ("tiled at an assumed 0.5 um/px (preprocess.slide.mpp_when_missing): "
                             "none in the slide's metadata")
    # a screen's 96 dpi in its TIFF tags is ignored, and said: "none" sent a reader to
    # metadata that holds one
    tifffile.imwrite(tmp_path / "dpi.tiff", rgb, photometric="rgb", tile=(256, 256),
                     compression="zlib", metadata=None, resolution=(96, 96),
                     resolutionunit="INCH")
    one_modality_cohort(tmp_path, "slide", {"s": "dpi.tiff"})
    qc = tile_slide_shard(tmp_path / "results" / "toy", "wsi", 0, 1,
                          {"mpp_when_missing": 0.5}, tmp_path / "out2")
    (row,) = qc.to_dicts()
    assert row["reason"].startswith("tiled at an assumed 0.5 um/px (preprocess.slide."
                                    "mpp_when_missing): its metadata says 264.6 um/px (96 dpi")


def test_slides_tiled_in_a_way_worth_a_look_are_noted(tmp_path):
    """Tinted glass passes the saturation threshold, as CLAM's does, and its slide was
    tiled edge to edge with a QC row that read ok: neither the grid's size nor the share
    of the slide called tissue was recorded. A slide whose mpp-x and mpp-y differ by a few
    percent is tiled at their mean, its tiles stretched: that was only in the log."""
    import tifffile

    rgb = np.full((1024, 1024, 3), 255, np.uint8)
    rgb[:768, :768] = (200, 90, 170)   # tissue in 9 of 16 tiles
    write_pyramidal_tiff(tmp_path / "stained.tiff", rgb, mpp=0.5, n_levels=2)
    tinted = rgb.copy()
    tinted[rgb.min(axis=-1) == 255] = (190, 200, 215)   # bluish glass, no longer white
    write_pyramidal_tiff(tmp_path / "tinted.tiff", tinted, mpp=0.5, n_levels=2)
    tifffile.imwrite(tmp_path / "stretched.tiff", rgb, photometric="rgb", tile=(256, 256),
                     resolution=(20000, 20400), resolutionunit="CENTIMETER", metadata=None)
    one_modality_cohort(tmp_path, "slide", {"stained": "stained.tiff", "tinted": "tinted.tiff",
                                            "stretched": "stretched.tiff"})
    qc = tile_slide_shard(tmp_path / "results" / "toy", "wsi", 0, 1, {}, tmp_path / "out")
    rows = {r["subject_id"]: r for r in qc.to_dicts()}
    stained, tinted = (json.loads(rows[s]["detail"]) for s in ("stained", "tinted"))
    assert stained["n_grid"] == tinted["n_grid"] == 16
    assert stained["tissue_area"] == pytest.approx(9 / 16, abs=0.01) and not rows["stained"]["reason"]
    assert stained["mpp_xy"] == [0.5, 0.5] and stained["anisotropy"] == 0
    assert rows["stretched"]["status"] == "ok" and rows["stretched"]["reason"] == (
        "its mpp-x 0.5 and mpp-y 0.4902 differ by 2.0 %: tiled at their mean, each tile "
        "stretched by as much")
    assert tinted["tissue_area"] == pytest.approx(1.0) and rows["tinted"]["n_tiles"] == 16
    assert rows["tinted"]["status"] == "ok"
    assert rows["tinted"]["reason"].startswith("the tissue mask covers 100 % of the slide: "
                                               "tinted glass")


def test_slides_gone_where_the_job_runs_fail_it_and_one_deleted_is_its_own(tmp_path):
    """A node without the data's mount rejected every slide and wrote a finished shard,
    which nothing reran once the mount was back."""
    from mmpipe.job_failures import SharedCauseError

    rgb = np.full((512, 512, 3), 255, np.uint8)
    rgb[:384, :384] = (200, 90, 170)
    (tmp_path / "wsi").mkdir()
    for name in ("a", "b"):
        write_pyramidal_tiff(tmp_path / "wsi" / f"{name}.tiff", rgb, mpp=0.5, n_levels=2)
    cohort = one_modality_cohort(tmp_path, "slide", {"a": "wsi/a.tiff", "b": "wsi/b.tiff"})
    (tmp_path / "wsi" / "b.tiff").unlink()
    qc = tile_slide_shard(cohort, "wsi", 0, 1, {}, tmp_path / "out")
    rows = {r["subject_id"]: r for r in qc.to_dicts()}
    assert rows["a"]["status"] == "ok" and rows["a"]["n_tiles"] > 0
    assert rows["b"]["status"] == "rejected"
    assert rows["b"]["reason"].startswith("not found: there when the manifest was built")

    (tmp_path / "wsi").rename(tmp_path / "unmounted")
    with pytest.raises(SharedCauseError, match="none of the job's 2 inputs"):
        tile_slide_shard(cohort, "wsi", 0, 1, {}, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
