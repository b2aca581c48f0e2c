"""Bad whole-slide images in a ``csv`` cohort, tiled and encoded by the config's
``clam_resnet50`` (random-init) with two tiles per slide.

The good subjects are two small synthetic pyramidal TIFFs (tissue blobs on glass);
the real shared slides (``../shared/data/slides``) are used where they add something
and skipped cleanly without them. Every test compares the good subjects' store rows
(embedding, bag and tile coordinates) with those of a cohort of the good subjects alone.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")

from mmpipe.io.tiff_writer import write_pyramidal_tiff  # noqa: E402
from mmpipe.layout import SHARD_QC  # noqa: E402
from mmpipe.store import FeatureStore  # noqa: E402
from tests.conftest import require  # noqa: E402
from tests.reliability.conftest import (  # noqa: E402
    build,
    by_subject,
    csv_cohort_config,
    encode,
    with_cohort,
    write_csv,
)

MODALITY = "wsi"
ENCODER = "clam_resnet50"
MODALITIES = {MODALITY: {"kind": "slide", "column": "slide", "encoders": [ENCODER]}}
GOOD = ("s1", "s2")
SIZE = 512  # px per side of the synthetic slides, at MPP
MPP = 0.5
TILING = {"target_mpp": MPP, "tile_size": 128, "max_tiles": 2, "min_tissue_fraction": 0.5,
          "mask_max_size": 512}
NO_MPP = "no microns-per-pixel in the slide's metadata; set preprocess.slide.mpp_when_missing"


def _tissue(seed: int) -> np.ndarray:
    """White glass with a stained rectangle (and a little texture everywhere)."""
    rng = np.random.default_rng(seed)
    rgb = np.full((SIZE, SIZE, 3), 243, np.int16)
    rgb[96 + 16 * seed:400, 64:448] = (200, 90, 170)
    rgb += rng.integers(-6, 7, size=rgb.shape, dtype=np.int16)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _slide(path: Path, rgb: np.ndarray) -> Path:
    return write_pyramidal_tiff(path, rgb, mpp=MPP, tile=128, n_levels=2, compression="deflate")


def _slide_without_mpp(path: Path, rgb: np.ndarray) -> Path:
    """A tiled one-level TIFF whose resolution unit is NONE: no mpp anywhere."""
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(128, 128), compression="zlib",
                     resolution=(1, 1), resolutionunit="NONE", metadata=None)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    for k, sid in enumerate(GOOD):
        _slide(folder / f"{sid}.tiff", _tissue(k))
    return folder


def _good_rows(data_dir: Path) -> list[dict]:
    return [{"id": sid, "y": k % 2, "slide": str(data_dir / f"{sid}.tiff")}
            for k, sid in enumerate(GOOD)]


def _config(base_config: dict, csv_path: Path, mpp_when_missing: float | None) -> dict:
    preprocess = {**base_config["preprocess"],
                  "slide": {**base_config["preprocess"]["slide"], **TILING,
                            "mpp_when_missing": mpp_when_missing}}
    return with_cohort(base_config, csv_cohort_config(csv_path, MODALITIES),
                       preprocess=preprocess)


def _encode(folder: Path, base_config: dict, rows: list[dict],
            mpp_when_missing: float | None = None) -> tuple[dict, FeatureStore, pl.DataFrame]:
    """Store rows by subject, the store, and the tiling QC of every shard."""
    cfg = _config(base_config, write_csv(folder / "cohort.csv", rows), mpp_when_missing)
    layout = build(folder, cfg)
    store = encode(layout, cfg, MODALITY, ENCODER)
    shards = layout.shards(MODALITY, "slide", cfg["shards"]["slide"])
    qc = pl.concat([pl.read_parquet(d / SHARD_QC) for d in shards], how="vertical_relaxed")
    return by_subject(store.path), store, qc


def _snapshot(rows: dict, store: FeatureStore, subjects) -> dict:
    out = {}
    for sid in subjects:
        bag, coords = store.bag(sid)
        out[sid] = {**rows[sid], "bag": bag, "coords": np.asarray(coords)}
    return out


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, base_config, data_dir) -> dict:
    rows, store, _ = _encode(tmp_path_factory.mktemp("baseline"), base_config,
                             _good_rows(data_dir))
    snap = _snapshot(rows, store, GOOD)
    for sid in GOOD:
        assert snap[sid]["status"] == "ok" and len(snap[sid]["bag"]) == TILING["max_tiles"]
    return snap


def _assert_good_unchanged(rows: dict, store: FeatureStore, baseline: dict) -> None:
    now = _snapshot(rows, store, baseline)
    for sid, before in baseline.items():
        assert now[sid]["status"] == before["status"] == "ok"
        assert now[sid]["reason"] == before["reason"]
        for key in ("emb", "bag", "coords"):
            assert np.array_equal(now[sid][key], before[key]), (sid, key)


def _assert_rejected(rows: dict, qc: pl.DataFrame, sid: str, path: Path, *needles: str) -> None:
    assert rows[sid]["status"] == "rejected", rows[sid]
    assert np.isnan(rows[sid]["emb"]).all()
    record = qc.filter(pl.col("subject_id") == sid).to_dicts()
    assert len(record) == 1 and record[0]["status"] == "rejected"
    assert record[0]["path"] == str(path) and record[0]["n_tiles"] == 0
    for needle in needles:
        assert needle in rows[sid]["reason"], (needle, rows[sid]["reason"])
        assert needle in record[0]["reason"]


def _with_bad(data_dir: Path, path: Path) -> list[dict]:
    return [*_good_rows(data_dir), {"id": "bad", "y": 1, "slide": str(path)}]


def test_truncated_tiff_is_rejected(tmp_path, base_config, data_dir, baseline):
    whole = _slide(tmp_path / "whole.tiff", _tissue(5))
    path = tmp_path / "truncated.tiff"
    blob = whole.read_bytes()
    path.write_bytes(blob[: len(blob) // 3])
    rows, store, qc = _encode(tmp_path, base_config, _with_bad(data_dir, path))
    _assert_rejected(rows, qc, "bad", path, "OpenSlide cannot open it",
                     f"(the file is a TIFF, {len(blob) // 3} bytes: truncated")
    _assert_good_unchanged(rows, store, baseline)


def test_real_broken_svs_beside_a_real_slide(tmp_path_factory, base_config, data_dir,
                                             shared_data):
    """The real ``broken.svs`` in a cohort with the real ``cmu-1-small-region.svs``."""
    broken = require(shared_data / "slides" / "broken.svs")
    real = require(shared_data / "slides" / "cmu-1-small-region.svs")
    good = [*_good_rows(data_dir), {"id": "cmu", "y": 0, "slide": str(real)}]
    rows0, store0, _ = _encode(tmp_path_factory.mktemp("real-good"), base_config, good)
    before = _snapshot(rows0, store0, [*GOOD, "cmu"])
    rows, store, qc = _encode(tmp_path_factory.mktemp("real-bad"), base_config,
                              [*good, {"id": "bad", "y": 1, "slide": str(broken)}])
    _assert_rejected(rows, qc, "bad", broken, "OpenSlide cannot open it")
    _assert_good_unchanged(rows, store, before)
    detail = json.loads(qc.filter(pl.col("subject_id") == "cmu")["detail"][0])
    assert detail["mpp_source"] == "openslide.mpp-x" and detail["mpp"] == pytest.approx(0.499)


def test_slide_without_mpp_is_rejected_when_not_configured(tmp_path, base_config, data_dir,
                                                           baseline):
    path = _slide_without_mpp(tmp_path / "nompp.tiff", _tissue(3))
    rows, store, qc = _encode(tmp_path, base_config, _with_bad(data_dir, path),
                              mpp_when_missing=None)
    _assert_rejected(rows, qc, "bad", path, NO_MPP)
    _assert_good_unchanged(rows, store, baseline)


def test_slide_without_mpp_uses_mpp_when_missing_and_says_so(tmp_path, base_config, data_dir,
                                                             baseline):
    path = _slide_without_mpp(tmp_path / "nompp.tiff", _tissue(3))
    rows, store, qc = _encode(tmp_path, base_config, _with_bad(data_dir, path),
                              mpp_when_missing=0.5)
    assert rows["bad"]["status"] == "ok" and np.isfinite(rows["bad"]["emb"]).all()
    record = qc.filter(pl.col("subject_id") == "bad").to_dicts()[0]
    assert record["status"] == "ok" and record["n_tiles"] == TILING["max_tiles"]
    detail = json.loads(record["detail"])
    assert detail["mpp_source"] == "config mpp_when_missing" and detail["mpp"] == 0.5
    good = json.loads(qc.filter(pl.col("subject_id") == GOOD[0])["detail"][0])
    assert good["mpp_source"] == "openslide.mpp-x"  # the others keep their own mpp
    _assert_good_unchanged(rows, store, baseline)


def test_white_slide_has_no_tissue(tmp_path, base_config, data_dir, baseline):
    rng = np.random.default_rng(9)
    white = np.clip(243 + rng.integers(-6, 7, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    path = _slide(tmp_path / "white.tiff", white)
    rows, store, qc = _encode(tmp_path, base_config, _with_bad(data_dir, path))
    _assert_rejected(rows, qc, "bad", path, "no tissue found: 16 tiles checked",
                     "need >= 0.5")
    _assert_good_unchanged(rows, store, baseline)


def test_png_renamed_svs_is_rejected(tmp_path, base_config, data_dir, baseline):
    from PIL import Image

    path = tmp_path / "photo.svs"
    Image.fromarray(_tissue(4)).save(path, format="PNG")
    rows, store, qc = _encode(tmp_path, base_config, _with_bad(data_dir, path))
    _assert_rejected(rows, qc, "bad", path, "OpenSlide cannot open it",
                     "the file is a PNG image, not a whole-slide image")
    _assert_good_unchanged(rows, store, baseline)


def test_shards_tiled_with_other_settings_are_refused(tmp_path, base_config, data_dir):
    """``mmpipe encode`` after a config edit read the shards as they lay: tiles of
    ``max_tiles: 2`` were stored under a preprocessing that said 4."""
    from mmpipe.encode.run import encode_store
    from mmpipe.encoders.registry import execution_settings
    from mmpipe.errors import StoreError
    from mmpipe.params import encoder_params
    from tests.reliability.conftest import COHORT, preprocess

    cfg = _config(base_config, write_csv(tmp_path / "cohort.csv", _good_rows(data_dir)), None)
    layout = build(tmp_path, cfg)
    shards = preprocess(layout, cfg, MODALITY)
    edited = copy.deepcopy(cfg)
    edited["preprocess"]["slide"]["max_tiles"] = 4
    params = encoder_params(edited, COHORT, MODALITY, ENCODER)
    settings = execution_settings(cfg["encoders"][ENCODER])
    with pytest.raises(StoreError, match=r"made with other tiling settings than the config's "
                                         r"\(max_tiles: 2 there, 4 now\)"):
        encode_store(layout.root, MODALITY, params, tmp_path / "s.zarr", device="cpu",
                     settings=settings, shard_dirs=shards)
    # the settings they were made with read them
    encode_store(layout.root, MODALITY, encoder_params(cfg, COHORT, MODALITY, ENCODER),
                 tmp_path / "s.zarr", device="cpu", settings=settings, shard_dirs=shards)


def test_shards_of_another_slide_than_the_manifest_names_are_refused(tmp_path, base_config,
                                                                     data_dir):
    """Tiled, then the manifest pointed s2 at another slide, then encoded by hand without
    tiling again: s2 was stored ok with its old slide's tiles and features."""
    from mmpipe.encode.run import encode_store
    from mmpipe.encoders.registry import execution_settings
    from mmpipe.errors import StoreError
    from mmpipe.params import encoder_params
    from tests.reliability.conftest import COHORT, preprocess

    cfg = _config(base_config, write_csv(tmp_path / "cohort.csv", _good_rows(data_dir)), None)
    layout = build(tmp_path, cfg)
    shards = preprocess(layout, cfg, MODALITY)
    moved = _slide(tmp_path / "other.tiff", _tissue(2))
    rows = [{**r, "slide": str(moved)} if r["id"] == "s2" else r for r in _good_rows(data_dir)]
    write_csv(tmp_path / "cohort.csv", rows)
    build(tmp_path, cfg)
    with pytest.raises(StoreError, match=f"subject 's2': its wsi shard was made from "
                                         f".*s2.tiff, the manifest now names {moved}"):
        encode_store(layout.root, MODALITY, encoder_params(cfg, COHORT, MODALITY, ENCODER),
                     layout.store(MODALITY, ENCODER), device="cpu",
                     settings=execution_settings(cfg["encoders"][ENCODER]), shard_dirs=shards)
    assert not layout.store(MODALITY, ENCODER).exists()


def test_a_shard_that_records_a_slide_ok_without_its_tiles_is_refused(tmp_path, base_config,
                                                                      data_dir):
    """A shard's QC row ok for a slide whose tile rows are gone (a hand-edited or
    mismatched shard) stopped the job with a bare ValueError naming no subject."""
    from mmpipe.encode.inputs import gather_inputs
    from mmpipe.errors import StoreError
    from mmpipe.layout import SHARD_TILES
    from tests.reliability.conftest import preprocess

    cfg = _config(base_config, write_csv(tmp_path / "cohort.csv", _good_rows(data_dir)), None)
    layout = build(tmp_path, cfg)
    shards = preprocess(layout, cfg, MODALITY)
    for shard in shards:
        tiles = pl.read_parquet(shard / SHARD_TILES)
        tiles.filter(pl.col("subject_id") != "s2").write_parquet(shard / SHARD_TILES)
    with pytest.raises(StoreError, match="subject 's2': its wsi shard records it ok but "
                                         "holds none of its tiles"):
        gather_inputs(layout.root, MODALITY, "slide", shard_dirs=shards)


def test_a_dataset_moved_after_tiling_is_read_where_it_lies_now(tmp_path, base_config,
                                                                data_dir):
    """A move reruns no tiling shard (the README's promise), and the encoder opened each
    slide at the path the shard recorded: the old copy's slides while it stood, a store
    of rejections once it was gone."""
    import shutil

    from mmpipe.encode.run import encode_store
    from mmpipe.encoders.registry import execution_settings
    from mmpipe.params import encoder_params
    from tests.reliability.conftest import COHORT, preprocess

    old = tmp_path / "download"
    old.mkdir()
    for sid in GOOD:
        shutil.copy(data_dir / f"{sid}.tiff", old / f"{sid}.tiff")
    rows = [{**r, "slide": f"{r['id']}.tiff"} for r in _good_rows(data_dir)]  # relative
    cfg = _config(base_config, write_csv(old / "cohort.csv", rows), None)
    layout = build(tmp_path, cfg)
    shards = preprocess(layout, cfg, MODALITY)
    new = tmp_path / "moved"
    old.rename(new)
    cfg["cohorts"][COHORT]["csv"] = str(new / "cohort.csv")
    build(tmp_path, cfg)
    out = encode_store(layout.root, MODALITY, encoder_params(cfg, COHORT, MODALITY, ENCODER),
                       layout.store(MODALITY, ENCODER), device="cpu",
                       settings=execution_settings(cfg["encoders"][ENCODER]),
                       shard_dirs=shards)
    rows = by_subject(out)
    assert all(rows[sid]["status"] == "ok" for sid in GOOD), rows


def test_a_table_moved_beside_slides_that_stayed_keeps_its_shards(tmp_path, base_config,
                                                                  data_dir):
    """The CSV moved, its absolute slide paths did not: the root the paths were read
    under moved, so the shard's path under it (relative) and the manifest's (absolute
    now) differed, and a shard of the same slide was refused naming one path twice."""
    import shutil

    from mmpipe.encode.run import encode_store
    from mmpipe.encoders.registry import execution_settings
    from mmpipe.params import encoder_params
    from tests.reliability.conftest import COHORT, preprocess

    slides = tmp_path / "slides"
    slides.mkdir()
    for sid in GOOD:
        shutil.copy(data_dir / f"{sid}.tiff", slides / f"{sid}.tiff")
    rows = [{**r, "slide": str(slides / f"{r['id']}.tiff")} for r in _good_rows(data_dir)]
    cfg = _config(base_config, write_csv(slides / "cohort.csv", rows), None)
    layout = build(tmp_path, cfg)  # the CSV beside the slides: their root
    shards = preprocess(layout, cfg, MODALITY)
    (slides / "cohort.csv").rename(write_csv(tmp_path / "tables" / "cohort.csv", rows))
    cfg["cohorts"][COHORT]["csv"] = str(tmp_path / "tables" / "cohort.csv")
    build(tmp_path, cfg)
    out = encode_store(layout.root, MODALITY, encoder_params(cfg, COHORT, MODALITY, ENCODER),
                       layout.store(MODALITY, ENCODER), device="cpu",
                       settings=execution_settings(cfg["encoders"][ENCODER]),
                       shard_dirs=shards)
    assert all(row["status"] == "ok" for row in by_subject(out).values())
