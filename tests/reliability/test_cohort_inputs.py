"""Bad cohort descriptions: a missing path, duplicate IDs, a subject with no modality,
missing and single-class labels. The cohort's modality is pre-extracted features
(``precomputed``), so each build takes well under a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mmpipe.bench.data import load_feature_set
from mmpipe.bench.prepare import make_split
from mmpipe.errors import ConfigError, InputError
from tests.reliability.conftest import (
    build,
    by_subject,
    csv_cohort_config,
    encode,
    with_cohort,
    write_csv,
)

MODALITY = "feat"
ENCODER = "precomputed"
FEATURE_SET = {MODALITY: ENCODER}
DIM = 4
GOOD = {"g1": 0, "g2": 1, "g3": 0, "g4": 1}  # subject -> label
MODALITIES = {MODALITY: {"kind": "features", "column": "feat", "encoders": [ENCODER]}}
RATIOS = (0.5, 0.0, 0.5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("features")
    for k, sid in enumerate(GOOD):
        np.save(folder / f"{sid}.npy", np.linspace(k, k + 1, DIM, dtype=np.float32))
    # the features of the subjects added to the good ones (a file two subjects name is
    # neither's: mmpipe.cohorts.csv_adapter)
    np.save(folder / "extra.npy", np.linspace(9, 10, DIM, dtype=np.float32))
    return folder


def _good_rows(data_dir: Path) -> list[dict]:
    return [{"id": sid, "y": y, "feat": str(data_dir / f"{sid}.npy")} for sid, y in GOOD.items()]


def _build(folder: Path, base_config: dict, rows: list[dict], modalities: dict = MODALITIES):
    csv_path = write_csv(folder / "cohort.csv", rows)
    cfg = with_cohort(base_config, csv_cohort_config(csv_path, modalities))
    return build(folder, cfg), cfg


def _encode(folder: Path, base_config: dict, rows: list[dict], modalities: dict = MODALITIES):
    layout, cfg = _build(folder, base_config, rows, modalities)
    store = encode(layout, cfg, MODALITY, ENCODER)
    return layout, by_subject(store.path)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, base_config, data_dir):
    """The good subjects alone: their store rows and their training data."""
    layout, rows = _encode(tmp_path_factory.mktemp("baseline"), base_config,
                           _good_rows(data_dir))
    assert all(rows[s]["status"] == "ok" for s in GOOD)
    data, dropped = load_feature_set(layout.root, FEATURE_SET, "y")
    assert dropped == []
    return rows, data


def _assert_good_unchanged(rows: dict, baseline) -> None:
    base_rows, _ = baseline
    for sid in GOOD:
        assert rows[sid]["status"] == base_rows[sid]["status"] == "ok"
        assert rows[sid]["reason"] == base_rows[sid]["reason"]
        assert np.array_equal(rows[sid]["emb"], base_rows[sid]["emb"]), sid


def _assert_training_unchanged(data, baseline) -> None:
    _, base = baseline
    assert list(data.subject_id) == list(base.subject_id) == list(GOOD)
    assert np.array_equal(data.y, base.y)
    assert np.array_equal(data.x[MODALITY], base.x[MODALITY])
    assert np.array_equal(data.present, base.present)


def _adapter_qc(layout) -> pl.DataFrame:
    return pl.read_parquet(layout.adapter_qc())


def test_missing_path_is_rejected_by_the_adapter(tmp_path, base_config, data_dir, baseline):
    missing = tmp_path / "nowhere" / "lost.npy"
    rows = [{**r, "age": 50 + k} for k, r in enumerate(_good_rows(data_dir))]
    rows.append({"id": "bad", "y": 1, "feat": str(missing), "age": 70})
    # a table modality keeps "bad" in the cohort (with its only modality rejected it
    # would be excluded: see test_subject_without_any_modality_is_excluded)
    modalities = {**MODALITIES, "clinical": {"kind": "table", "fields": ["age"],
                                             "encoders": ["tabular"]}}
    layout, store_rows = _encode(tmp_path, base_config, rows, modalities)
    qc = _adapter_qc(layout).filter((pl.col("subject_id") == "bad")
                                    & (pl.col("modality") == MODALITY))
    assert qc.select("status", "reason", "path").rows() == [("rejected", "file not found",
                                                             str(missing))]
    assert store_rows["bad"]["status"] == "rejected"
    assert store_rows["bad"]["reason"] == "file not found"
    _assert_good_unchanged(store_rows, baseline)
    data, dropped = load_feature_set(layout.root, FEATURE_SET, "y")
    # "bad" stays without input (scored with the training prior at test), the others as
    # they were
    assert dropped == [] and data.subject_id[~data.present.any(axis=1)].tolist() == ["bad"]
    _assert_training_unchanged(data.subset(np.flatnonzero(data.present.any(axis=1))), baseline)


def test_subject_whose_only_path_is_missing_is_excluded(tmp_path, base_config, data_dir,
                                                        baseline):
    rows = [*_good_rows(data_dir), {"id": "bad", "y": 1, "feat": str(tmp_path / "lost.npy")}]
    layout, store_rows = _encode(tmp_path, base_config, rows)
    qc = _adapter_qc(layout).filter(pl.col("subject_id") == "bad")
    assert set(qc.select("modality", "status", "reason").rows()) == {
        (MODALITY, "rejected", "file not found"), ("*", "excluded", "no modality available")}
    assert list(store_rows) == list(GOOD)
    _assert_good_unchanged(store_rows, baseline)


def test_duplicate_subject_ids_stop_the_manifest(tmp_path, base_config, data_dir):
    rows = _good_rows(data_dir)
    rows += [dict(rows[1]), {**rows[3], "y": 0}]  # g2 twice, g4 twice with another label
    with pytest.raises(InputError) as info:
        _build(tmp_path, base_config, rows)
    message = str(info.value)
    assert "duplicate subject_id(s): 'g2' x2, 'g4' x2" in message
    assert str(tmp_path / "cohort.csv") in message
    assert not list(tmp_path.glob("results/*/manifest.parquet"))


def test_subject_without_any_modality_is_excluded(tmp_path, base_config, data_dir, baseline):
    rows = [*_good_rows(data_dir), {"id": "empty", "y": 0, "feat": None}]
    layout, store_rows = _encode(tmp_path, base_config, rows)
    qc = _adapter_qc(layout).filter(pl.col("subject_id") == "empty")
    assert ("*", "excluded", "no modality available") in qc.select(
        "modality", "status", "reason").rows()
    assert "empty" not in store_rows  # excluded from the manifest, so from every store
    assert list(store_rows) == list(GOOD)
    _assert_good_unchanged(store_rows, baseline)


def test_blank_label_is_kept_out_of_split_and_training(tmp_path, base_config, data_dir,
                                                       baseline):
    rows = [*_good_rows(data_dir), {"id": "nolabel", "y": None, "feat": str(data_dir / "extra.npy")}]
    layout, store_rows = _encode(tmp_path, base_config, rows)
    qc = _adapter_qc(layout).filter(pl.col("subject_id") == "nolabel")
    assert ("label", "absent", "label missing") in qc.select("modality", "status",
                                                             "reason").rows()
    assert store_rows["nolabel"]["status"] == "ok"  # its features are fine
    _assert_good_unchanged(store_rows, baseline)
    data, dropped = load_feature_set(layout.root, FEATURE_SET, "y")
    assert dropped == [{"subject_id": "nolabel", "reason": "label missing (y)"}]
    _assert_training_unchanged(data, baseline)
    split = make_split(layout.root, "y", 0, RATIOS, tmp_path / "split.parquet")
    assert sorted(split["subject_id"]) == sorted(GOOD)


def test_nan_label_is_kept_out_of_training(tmp_path, base_config, data_dir, baseline):
    rows = [*_good_rows(data_dir), {"id": "nanlabel", "y": "NaN",
                                    "feat": str(data_dir / "extra.npy")}]
    layout, store_rows = _encode(tmp_path, base_config, rows)
    _assert_good_unchanged(store_rows, baseline)
    data, dropped = load_feature_set(layout.root, FEATURE_SET, "y")
    assert dropped == [{"subject_id": "nanlabel", "reason": "label missing (y)"}]
    _assert_training_unchanged(data, baseline)


def test_nan_label_is_kept_out_of_the_split(tmp_path, base_config, data_dir):
    rows = [*_good_rows(data_dir), {"id": "nanlabel", "y": "NaN",
                                    "feat": str(data_dir / "extra.npy")}]
    layout, _ = _build(tmp_path, base_config, rows)
    qc = _adapter_qc(layout).filter(pl.col("subject_id") == "nanlabel")
    split = make_split(layout.root, "y", 0, RATIOS, tmp_path / "split.parquet")
    assert "nanlabel" not in split["subject_id"].to_list()
    assert ("label", "absent", "label missing") in qc.select("modality", "status",
                                                             "reason").rows()


def test_single_class_label_is_a_config_error(tmp_path, base_config, data_dir):
    rows = [{**r, "y": 1} for r in _good_rows(data_dir)]
    rows.append({"id": "nolabel", "y": None, "feat": str(data_dir / "extra.npy")})
    layout, _ = _encode(tmp_path, base_config, rows)
    with pytest.raises(ConfigError) as info:
        load_feature_set(layout.root, FEATURE_SET, "y")
    assert "label 'y'" in str(info.value)
    assert "has 1 distinct value(s) [1] among usable subjects; need at least 2" in str(info.value)
