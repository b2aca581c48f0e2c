"""The tile_features loop: CLAM, TRIDENT and STAMP files into stores with bags and
coordinates, mixed extractions refused, and stage 2 trained on such stores."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from mmpipe.bench.prepare import make_mask, make_split
from mmpipe.bench.run import run_cell
from mmpipe.cohorts import build_manifest
from mmpipe.config import load_config
from mmpipe.encode.inputs import SubjectInput
from mmpipe.encode.job import EncodeJob
from mmpipe.encode.run import encode_store
from mmpipe.encoders.tile_features import LEVEL0_PIXELS, MICROMETRES
from mmpipe.errors import MixedTileFeaturesError
from mmpipe.layout import CohortLayout
from mmpipe.params import encoder_params
from mmpipe.store import FeatureStore
from tests.conftest import REPO
from tests.tile_feature_files import grid, write_clam, write_stamp, write_trident

N = 40
DIMS = {"clam": 8, "trident": 6, "stamp": 5}
ENCODERS = {"clam": "clam_uni", "trident": "tile_features", "stamp": "tile_features"}


def _bag(rng, dim, y):
    return (rng.normal(size=(int(rng.integers(2, 6)), dim)) + 1.5 * y).astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """40 subjects, one slide-feature modality per tool (CLAM: .h5 and .pt), some absent,
    one bad file in each; every store encoded through the real stage-1 path."""
    root = tmp_path_factory.mktemp("tiles")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, N)
    rows, bags = ["id,y,clam,trident,stamp"], {m: {} for m in DIMS}
    for i in range(N):
        sid, cells = f"s{i:02d}", []
        bag = bags["clam"][sid] = _bag(rng, DIMS["clam"], y[i])
        h5, pt = write_clam(root / "clam", sid, bag, patch_attrs=True)
        cells.append(str((pt if i % 2 else h5).relative_to(root)))
        for m, write in (("trident", write_trident), ("stamp", write_stamp)):
            if i % 5 == 4:  # natural missingness
                cells.append("")
                continue
            bag = bags[m][sid] = _bag(rng, DIMS[m], y[i])
            cells.append(str(write(root / m, sid, bag).relative_to(root)))
        rows.append(f"{sid},{y[i]}," + ",".join(cells))
    # one bad file per tool: NaN features, an empty TRIDENT slide, a file that is not HDF5
    bad = {"clam": "s00", "trident": "s01", "stamp": "s02"}
    nan = bags["clam"]["s00"].copy()
    nan[0, 0] = np.nan
    write_clam(root / "clam", "s00", nan)
    write_trident(root / "trident", "s01", np.empty((0, DIMS["trident"]), np.float32))
    (next((root / "stamp").glob("*/s02.h5"))).write_bytes(b"not hdf5")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    cohort_cfg = {"adapter": "csv", "csv": str(root / "cohort.csv"), "subject_column": "id",
                  "labels": ["y"], "modalities": {m: {"kind": "features", "column": m,
                                                      "encoders": [ENCODERS[m]]}
                                                  for m in DIMS}}
    cfg = load_config(REPO / "config.yaml")
    cfg["encoders"]["clam_uni"] = {"type": "tile_features", "feature_encoder": "uni_v1"}
    cfg["cohorts"] = {"toy": cohort_cfg}
    cohort_dir = root / "results" / "toy"
    build_manifest("toy", cohort_cfg, cohort_dir)
    layout = CohortLayout(cohort_dir)
    for m, enc in ENCODERS.items():
        encode_store(cohort_dir, m, encoder_params(cfg, "toy", m, enc), layout.store(m, enc),
                     device="cpu")
    return layout, bags, bad


def test_stores_hold_each_tools_bag_coordinates_and_mean(cohort):
    layout, bags, bad = cohort
    for m, enc in ENCODERS.items():
        store = FeatureStore(layout.store(m, enc))
        f = store.to_numpy()
        assert store.feature_shape == (DIMS[m],) and store.has_bag
        for sid, present, emb in zip(f.subject_id, f.present, f.emb, strict=True):
            if sid == bad[m] or sid not in bags[m]:
                assert not present
                continue
            feats, coords = store.bag(sid)
            np.testing.assert_allclose(feats, bags[m][sid], atol=2e-3)  # STAMP: float16
            np.testing.assert_allclose(emb, feats.mean(axis=0), rtol=1e-5)
            assert len(coords) == len(feats)
            if m == "clam":  # .pt subjects (odd) too: their coordinates are the h5's
                with h5py.File(layout.root.parents[1] / "clam" / "h5_files" / f"{sid}.h5") as h5:
                    np.testing.assert_array_equal(coords, h5["coords"][()])
    reasons = {m: dict(zip(*(lambda f: (f.subject_id, f.reason))(
        FeatureStore(layout.store(m, e)).to_numpy()), strict=True)) for m, e in ENCODERS.items()}
    assert "h5_files/s00.h5: features hold 1 non-finite value" in reasons["clam"]["s00"]
    assert "features_uni_v1/s01.h5: the file holds zero tiles" in reasons["trident"]["s01"]
    assert "s02.h5: not an HDF5 file" in reasons["stamp"]["s02"]


def test_stores_record_where_the_features_came_from(cohort):
    layout, bags, _ = cohort
    clam, trident, stamp = (FeatureStore(layout.store(m, e)).attrs for m, e in ENCODERS.items())
    assert clam["tile_features"] == {
        "layout": "clam", "feature_encoder": "uni_v1", "feature_dim": 8, "patch_size": 256,
        "patch_level": 0, "magnification": None, "overlap": None, "patch_size_um": None,
        "mpp": None, "coords_unit": LEVEL0_PIXELS}
    assert clam["tile_features_sources"]["feature_encoder"] == {"config": 40}  # s00: NaN found when read
    assert clam["bag"]["coords"].endswith("in level-0 pixels (clam files)")
    assert clam["encoder_type"] == "tile_features"
    assert (trident["tile_features"]["feature_encoder"], trident["tile_features"]["magnification"],
            trident["tile_features_sources"]["feature_encoder"]) == ("uni_v1", 20, {"file": 31})
    assert stamp["tile_features"]["coords_unit"] == MICROMETRES
    f = FeatureStore(layout.store("stamp", "tile_features"))
    assert f.bag("s03")[1].tolist() == (grid(len(bags["stamp"]["s03"]), 1) * 256).tolist()


def test_stage_2_trains_and_evaluates_a_fusion_method_on_tile_feature_stores(cohort, tmp_path):
    layout, _, _ = cohort
    root = layout.root
    make_split(root, "y", 0, (0.6, 0.1, 0.3), layout.split(0))
    make_mask(root, "mcar", 0.3, 0, layout.mask("mcar", 0.3, 0), split_path=layout.split(0))
    train = {"method": {"type": "concat_zero", "max_epochs": 30}, "feature_set": ENCODERS,
             "label": "y", "normalize": "zscore", "evaluate_subsets": True, "seeds": [0],
             "tuning": {"trials": 1}}
    out = tmp_path / "cell"
    [result] = run_cell(layout, train, "mcar", 0.3, out,
                        meta={"cohort": "toy", "feature_set": "tiles", "method": "concat_zero"})
    saved = json.loads((out / "seed0" / "metrics.json").read_text())
    assert result["trained"] and saved["test"]["n"] > 0
    assert saved["test"]["auc"] > 0.7  # the tiles carry the label: a run that learns nothing fails
    assert len(saved["subsets"]) == 7


# -- the loop on its own -------------------------------------------------------------------


class _Writer:
    def __init__(self, feature_shape):
        self.feature_shape = tuple(feature_shape)
        self.written, self.rejected = {}, {}

    def write(self, sid, emb, bag=None, coords=None):
        self.written[sid] = (emb, bag, coords)
        return True

    def reject(self, sid, reason):
        self.rejected[sid] = reason


def _run(paths: dict, cfg: dict | None = None):
    from mmpipe.encode import tile_features

    items = [SubjectInput(sid, "ok", "", str(p)) for sid, p in paths.items()]
    job = EncodeJob(cfg={"type": "tile_features", "name": "tiles", **(cfg or {})}, params={},
                    modality="wsi", device="cpu")
    tile_features.setup(job, items)
    writer = _Writer(job.feature_shape)
    tile_features.run(job, items, writer)
    return job, writer


def test_a_modality_nobody_has_a_file_of_stops_the_job():
    """No subject with a file: a store of features 0 wide was written, finished, and no
    reader could open it."""
    from mmpipe.errors import InputError

    with pytest.raises(InputError, match=r"wsi: no subject of the cohort has a tile feature "
                                         r"file"):
        _run({})


def _feats(n=3, dim=4):
    return np.ones((n, dim), np.float32)


@pytest.mark.parametrize(("odd", "message"), [
    (lambda root: write_trident(root / "b", "d", _feats(), encoder="conch_v15"),
     r"feature_encoder: 'uni_v1' in 3 file\(s\), e.g. subject a \(.*a.h5\); subject b .*, "
     r"'conch_v15' in 1 file\(s\), e.g. subject d \(.*features_conch_v15/d.h5\)"),
    (lambda root: write_trident(root / "b", "d", _feats(dim=5)),
     r"feature_dim: 4 in 3 file\(s\).*, 5 in 1 file\(s\), e.g. subject d"),
    (lambda root: write_trident(root / "b", "d", _feats(), patch_size=512),
     r"patch_size: 256 in 3 file\(s\).*, 512 in 1 file\(s\), e.g. subject d"),
    (lambda root: write_trident(root / "b", "d", _feats(), magnification=40),
     r"magnification: 20 in 3 file\(s\).*, 40 in 1 file\(s\), e.g. subject d"),
    (lambda root: write_stamp(root / "b", "d", _feats(), extractor="uni_v1"),
     r"layout: 'trident' in 3 file\(s\).*, 'stamp' in 1 file\(s\), e.g. subject d"),
])
def test_a_modality_mixing_extractions_is_refused(tmp_path, odd, message):
    paths = {s: write_trident(tmp_path, s, _feats()) for s in "abc"}
    paths["d"] = odd(tmp_path)
    with pytest.raises(MixedTileFeaturesError, match=message) as err:
        _run(paths)
    assert "the wsi tile feature files were made differently" in str(err.value)


def test_the_config_names_the_encoder_of_files_that_do_not(tmp_path):
    paths = {s: write_clam(tmp_path, s, _feats(n, 4))[0] for s, n in (("a", 2), ("b", 5))}
    job, writer = _run(paths)
    assert job.attrs["tile_features"]["feature_encoder"] is None
    assert job.attrs["tile_features_sources"]["feature_encoder"] == {"not recorded": 2}
    job, writer = _run(paths, {"feature_encoder": "resnet50_trunc"})
    assert job.attrs["tile_features"]["feature_encoder"] == "resnet50_trunc"
    assert job.attrs["tile_features_sources"]["feature_encoder"] == {"config": 2}
    emb, bag, coords = writer.written["b"]
    assert bag.shape == (5, 4) and coords.shape == (5, 2) and emb.shape == (4,)


def test_pt_files_without_coordinates(tmp_path):
    """A .pt without its h5: rejected beside files with coordinates; alone, a bag without."""
    paths = {s: write_clam(tmp_path, s, _feats())[1] for s in "abc"}
    paths["d"] = write_clam(tmp_path / "no_h5", "d", _feats(), h5=False)[1]
    job, writer = _run(paths)
    assert job.bag_coord_dim == 2 and sorted(writer.written) == ["a", "b", "c"]
    assert writer.rejected["d"].endswith("no tile coordinates: no CLAM h5_files/<slide>.h5 "
                                         "beside this .pt file, and the modality's other "
                                         "files have coordinates")
    job, writer = _run({"d": paths["d"]})
    assert job.bag_coord_dim == 0 and job.bag_coords.startswith("none")
    assert writer.written["d"][2] is None


def test_malformed_files_reject_their_subject_and_not_the_job(tmp_path):
    """h5py's and numpy's own errors on a malformed file (a non-numeric STAMP tile size, a
    2x2 attribute, a link to a missing file) reject that subject; the others are written."""
    paths = {s: write_trident(tmp_path, s, _feats()) for s in "abcd"}
    paths["e"] = write_stamp(tmp_path, "e", _feats())
    with h5py.File(paths["e"], "a") as f:
        f.attrs["tile_size_um"] = "256um"
    paths["f"] = write_trident(tmp_path / "f", "f", _feats())
    with h5py.File(paths["f"], "a") as f:
        f["coords"].attrs["patch_size"] = np.full((2, 2), 256)
    paths["g"] = tmp_path / "g.h5"
    with h5py.File(paths["g"], "w") as f:
        f["features"] = h5py.ExternalLink("missing.h5", "/features")
        f["coords"] = grid(3, 1)
    job, writer = _run(paths)
    assert sorted(writer.written) == ["a", "b", "c", "d"]
    assert job.attrs["tile_features"]["patch_size"] == 256
    assert "'tile_size_um' is '256um'" in writer.rejected["e"]
    assert "'patch_size' is an array of shape (2, 2)" in writer.rejected["f"]
    assert f"{paths['g']}: 'features' is an external link" in writer.rejected["g"]


def test_most_files_rejected_stops_the_job(tmp_path):
    from mmpipe.encode.features import FeatureCohortError

    paths = {"a": write_trident(tmp_path, "a", _feats()),
             "b": write_trident(tmp_path / "z", "b", np.empty((0, 4), np.float32))}
    paths["c"] = tmp_path / "c.h5"
    paths["c"].write_bytes(b"junk")
    with pytest.raises(FeatureCohortError, match=r"2 of 3 subjects with a wsi feature file "
                                                 r"were rejected .*1 zero tiles, 1 not HDF5") as err:
        _run(paths)
    assert "encoders.tiles" in str(err.value) and "feature_encoder" in str(err.value)


def test_a_model_trained_on_one_feature_encoder_refuses_another(tmp_path):
    from mmpipe.bench.predict import check_encoding
    from mmpipe.errors import StoreError
    from mmpipe.store import encoding_signature

    attrs = {"encoder_type": "tile_features", "feature_shape": [4],
             "tile_features": {"layout": "trident", "feature_encoder": "uni_v1"}}
    trained = encoding_signature(attrs)
    assert check_encoding("wsi", "x.zarr", attrs, trained) == ""
    other = {**attrs, "tile_features": {"layout": "trident", "feature_encoder": "conch_v15"}}
    with pytest.raises(StoreError, match="tile_features: trained on .*uni_v1"):
        check_encoding("wsi", "x.zarr", other, trained)
