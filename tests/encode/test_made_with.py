"""A store is compared with what the config asks of it: the training job refuses one made
with other settings, which Snakemake would not rerun when it did not write it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mmpipe.encode.made_with import check_stores, settings_differences
from mmpipe.errors import StoreError
from mmpipe.params import encoder_params, store_params
from mmpipe.store import FeatureStore
from tests.reliability.conftest import (
    COHORT,
    base_config,
    build,
    csv_cohort_config,
    encode,
    with_cohort,
    write_csv,
)

__all__ = ["base_config"]  # the fixture, shared with the reliability tests


@pytest.fixture
def encoded(tmp_path, base_config):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        np.save(tmp_path / f"a{i}.npy", rng.normal(size=4).astype(np.float32))
        rows.append({"id": f"s{i}", "y": i % 2, "a": str(tmp_path / f"a{i}.npy")})
    mods = {"a": {"kind": "features", "column": "a", "encoders": ["precomputed"]}}
    cohort = csv_cohort_config(write_csv(tmp_path / "c.csv", rows), mods)
    cohort["benchmark"] = {"label": "y", "feature_sets": {"only_a": {"a": "precomputed"}},
                           "runs": {"mmare": ["only_a"]}}
    cfg = with_cohort(base_config, cohort)
    layout = build(tmp_path, cfg)
    encode(layout, cfg, "a", "precomputed")
    return layout, cfg


def _stores(layout, cfg) -> dict:
    return {m: (layout.store(m, p["encoder"]), p)
            for m, p in store_params(cfg, COHORT, "only_a").items()}


def test_a_store_made_with_the_configs_settings_passes(encoded):
    layout, cfg = encoded
    check_stores(_stores(layout, cfg))
    # a new version of the code is the workflow's to rerun, not a difference
    params = encoder_params(cfg, COHORT, "a", "precomputed")
    attrs = FeatureStore(layout.store("a", "precomputed")).attrs
    assert settings_differences(attrs, {**params, "code": "another"}) == []


def test_a_store_made_before_the_config_changed_is_refused_naming_it(encoded):
    """`mmpipe encode` by hand, then a setting changed: Snakemake keeps no record of a
    store it did not write, so it reran nothing and the training read the old store."""
    layout, cfg = encoded
    changed = copy.deepcopy(cfg)
    changed["encoders"]["precomputed"]["flatten"] = False
    with pytest.raises(StoreError, match=(
            rf"{layout.store('a', 'precomputed')} \(modality 'a'\) was encoded with other "
            r"encoder settings than the config's.*snakemake --forcerun encode")):
        check_stores(_stores(layout, changed))


def test_a_setting_named_code_inside_a_block_is_compared():
    """Only a block's own code key is a version: a clinical field named `code` has a
    phrase that is a setting."""
    params = {"config": {"type": "text"}, "weights": None,
              "prompt": {"phrases": {"code": "Code {value}."}, "code": "v1"}, "code": "v1"}
    attrs = {"encoder_config": {"type": "text"}, "weights_random_init": False,
             "preprocessing": {"prompt": {"phrases": {"code": "ICD {value}."}, "code": "v0"},
                               "transform": None}}
    assert settings_differences(attrs, params) == ["preprocessing"]
    attrs["preprocessing"]["prompt"]["phrases"]["code"] = "Code {value}."
    assert settings_differences(attrs, params) == []


def test_a_block_the_store_has_and_the_config_no_longer_asks_for_is_a_difference():
    """Only the config's blocks were compared: a store cropped to a TotalSegmentator mask
    passed once the config stopped asking for the mask."""
    params = {"config": {"type": "med3d"}, "weights": "random-init",
              "dicom": {"series_select": "most_slices"}}
    attrs = {"encoder_config": {"type": "med3d"}, "weights_random_init": True,
             "preprocessing": {"dicom": {"series_select": "most_slices"}, "transform": None,
                               "mask": {"from": "totalsegmentator", "organs": ["kidney_left"]}}}
    assert settings_differences(attrs, params) == ["preprocessing"]
    del attrs["preprocessing"]["mask"]
    assert settings_differences(attrs, params) == []
