"""Splits and masks are properties of the cohort, not of how its config is written."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mmpipe.bench.missingness import read_mask
from mmpipe.bench.prepare import make_mask, make_split
from mmpipe.config import validate_config
from tests.conftest import REPO
from tests.reliability.conftest import build, csv_cohort_config, with_cohort, write_csv


@pytest.fixture(scope="module")
def base():
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))


def _layouts(tmp_path, base):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        row = {"id": f"s{i:02d}", "y": int(rng.random() < 0.4)}
        for m in ("ct", "mri", "wsi"):
            if rng.random() < 0.7 or m == "wsi":
                np.save(tmp_path / f"{m}{i}.npy", np.ones(3, np.float32))
                row[m] = str(tmp_path / f"{m}{i}.npy")
        rows.append(row)
    csv = write_csv(tmp_path / "c.csv", rows)
    mods = {m: {"kind": "features", "column": m, "encoders": ["precomputed"]}
            for m in ("ct", "mri", "wsi")}
    forward = build(tmp_path / "a", with_cohort(base, csv_cohort_config(csv, mods)))
    backward = build(tmp_path / "b", with_cohort(base, csv_cohort_config(
        csv, dict(reversed(list(mods.items()))))))
    return forward, backward


def test_splits_and_masks_do_not_depend_on_the_config_order_of_modalities(tmp_path, base):
    layouts = _layouts(tmp_path, base)
    splits = [make_split(lay.root, "y", 3, (0.6, 0.2, 0.2), lay.split(3)) for lay in layouts]
    assert splits[0].equals(splits[1])
    for scenario, rate, options in (("mcar", 0.4, {}),
                                    ("completeness", 0.5, {"modalities": ["wsi", "ct"]})):
        masks = []
        for lay in layouts:
            make_mask(lay.root, scenario, rate, 3, lay.mask(scenario, rate, 3), options=options,
                      split_path=lay.split(3))
            ids, mask, modalities = read_mask(lay.mask(scenario, rate, 3))
            masks.append({m: mask[:, j] for j, m in enumerate(modalities)})
        assert masks[0].keys() == masks[1].keys()
        for m in masks[0]:
            np.testing.assert_array_equal(masks[0][m], masks[1][m], err_msg=f"{scenario} {m}")


def _published(tmp_path, base, val: bool):
    """A 60-subject cohort whose CSV carries the published split in column ``Split``."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        np.save(tmp_path / f"f{i}.npy", np.ones(3, np.float32))
        part = "Test" if i % 4 == 0 else ("Validation" if val and i % 4 == 1 else "Train")
        rows.append({"id": f"s{i:02d}", "y": int(rng.random() < 0.4), "Split": part,
                     "f": str(tmp_path / f"f{i}.npy")})
    csv = write_csv(tmp_path / "c.csv", rows)
    cohort = csv_cohort_config(csv, {"f": {"kind": "features", "column": "f",
                                           "encoders": ["precomputed"]}})
    cohort["split"] = {"column": "Split"}
    return build(tmp_path, with_cohort(base, cohort)), rows


def test_the_split_job_keeps_the_cohorts_test_set_for_every_seed(tmp_path, base):
    from mmpipe.bench.splits import read_split_source

    layout, rows = _published(tmp_path, base, val=False)
    test = {r["id"] for r in rows if r["Split"] == "Test"}
    splits = [make_split(layout.root, "y", s, (0.6, 0.1, 0.3), layout.split(s)) for s in (0, 1)]
    for seed, df in enumerate(splits):
        parts = dict(zip(df["subject_id"], df["split"], strict=True))
        assert {s for s, p in parts.items() if p == "test"} == test
        assert sum(p == "val" for p in parts.values()) == 6       # 45 training subjects, 6:1
        assert read_split_source(layout.split(seed)) == {"source": "column Split",
                                                         "fixed": ["test"]}
    assert not splits[0].equals(splits[1])                        # train/val drawn per seed


def test_the_split_job_keeps_all_three_parts_when_the_cohort_names_val(tmp_path, base):
    from mmpipe.bench.splits import read_split_source

    layout, rows = _published(tmp_path, base, val=True)
    expected = {r["id"]: {"Test": "test", "Validation": "val", "Train": "train"}[r["Split"]]
                for r in rows}
    for seed in (0, 1):
        df = make_split(layout.root, "y", seed, (0.6, 0.1, 0.3), layout.split(seed))
        assert dict(zip(df["subject_id"], df["split"], strict=True)) == expected
        assert read_split_source(layout.split(seed))["fixed"] == ["train", "val", "test"]


def test_a_masks_rate_is_met_on_the_subjects_with_the_label(tmp_path, base):
    """The mask rule passes the benchmark's label: the 20 subjects with a blank one, each
    with a slide only (which MCAR never takes), moved the share removed from the others
    off the rate."""
    rows = []
    for i in range(60):
        row = {"id": f"s{i:02d}", "y": None if i >= 40 else i % 2}
        for m in ("ct", "wsi") if i < 40 else ("wsi",):
            np.save(tmp_path / f"{m}{i}.npy", np.ones(3, np.float32))
            row[m] = str(tmp_path / f"{m}{i}.npy")
        rows.append(row)
    mods = {m: {"kind": "features", "column": m, "encoders": ["precomputed"]}
            for m in ("ct", "wsi")}
    lay = build(tmp_path / "c", with_cohort(base, csv_cohort_config(
        write_csv(tmp_path / "c.csv", rows), mods)))
    for label, expected in (("y", 0.4 * 80), (None, 0.4 * 100)):
        out = tmp_path / f"mask-{label}.parquet"
        make_mask(lay.root, "mcar", 0.4, 0, out, label=label)
        _, mask, _ = read_mask(out)
        assert abs((80 - mask[:40].sum()) - expected) <= 1, label


def test_masks_do_not_depend_on_the_order_of_the_source_rows(tmp_path, base):
    """MCAR and completeness drew one value per manifest row: the same cohort from a CSV
    sorted otherwise gave its subjects other masks."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(60):
        row = {"id": f"s{i:02d}", "y": i % 2}
        for m in ("ct", "mri", "wsi"):
            if rng.random() < 0.75 or m == "wsi":
                np.save(tmp_path / f"{m}{i}.npy", np.ones(3, np.float32))
                row[m] = str(tmp_path / f"{m}{i}.npy")
        rows.append(row)
    mods = {m: {"kind": "features", "column": m, "encoders": ["precomputed"]}
            for m in ("ct", "mri", "wsi")}
    lays = [build(tmp_path / name, with_cohort(base, csv_cohort_config(
        write_csv(tmp_path / f"{name}.csv", order), mods)))
        for name, order in (("asc", rows), ("desc", rows[::-1]))]
    for lay in lays:
        make_split(lay.root, "y", 3, (0.6, 0.2, 0.2), lay.split(3))
    for scenario, rate in (("mcar", 0.4), ("completeness", 0.5)):
        by_subject = []
        for lay in lays:
            make_mask(lay.root, scenario, rate, 3, lay.mask(scenario, rate, 3), label="y",
                      split_path=lay.split(3))
            ids, mask, _ = read_mask(lay.mask(scenario, rate, 3))
            by_subject.append(dict(zip(ids, map(tuple, mask), strict=True)))
        assert by_subject[0] == by_subject[1], scenario
