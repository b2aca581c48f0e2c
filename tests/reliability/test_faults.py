"""Faults inside one job: the disk fills up while a store or a cell is written, and the
same cell trained twice. A full disk leaves the previous output as it was and nothing
half-written; a training cell is a function of its inputs and seed."""

from __future__ import annotations

import errno
import json

import numpy as np
import polars as pl
import pytest

from mmpipe.bench.prepare import make_mask, make_split
from mmpipe.bench.run import run_cell
from mmpipe.store import FeatureStore, FeatureStoreWriter
from tests.reliability.conftest import build, csv_cohort_config, encode, with_cohort, write_csv

N = 40


@pytest.fixture
def cohort(tmp_path, base_config):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N):
        y = i % 2
        for m in ("a", "b"):
            np.save(tmp_path / f"{m}{i}.npy", (rng.normal(size=4) + y).astype(np.float32))
        rows.append({"id": f"s{i:02d}", "y": y, "a": str(tmp_path / f"a{i}.npy"),
                     "b": str(tmp_path / f"b{i}.npy") if i % 3 else None})
    mods = {m: {"kind": "features", "column": m, "encoders": ["precomputed"]} for m in "ab"}
    cfg = with_cohort(base_config, csv_cohort_config(write_csv(tmp_path / "c.csv", rows), mods))
    layout = build(tmp_path, cfg)
    return layout, cfg


def _disk_full_after(monkeypatch, n_rows: int) -> None:
    real = FeatureStoreWriter.write
    written = []

    def write(self, *args, **kwargs):
        if len(written) == n_rows:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(args[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FeatureStoreWriter, "write", write)


def test_disk_full_during_a_store_write_keeps_the_old_store(cohort, monkeypatch):
    layout, cfg = cohort
    old = encode(layout, cfg, "a", "precomputed")
    before = old.to_numpy()
    _disk_full_after(monkeypatch, 5)
    with pytest.raises(OSError, match="No space left"):
        encode(layout, cfg, "a", "precomputed")
    # the previous, complete store is untouched and no temporary remains beside it
    after = FeatureStore(layout.store("a", "precomputed")).to_numpy()
    np.testing.assert_array_equal(after.emb, before.emb)
    assert after.attrs["created"] == before.attrs["created"]
    assert [p.name for p in layout.store("a", "precomputed").parent.iterdir()] == [
        "precomputed.zarr"]


def _train(seeds):
    return {"method": {"type": "concat_zero", "max_epochs": 15}, "label": "y",
            "feature_set": {"a": "precomputed", "b": "precomputed"}, "normalize": "zscore",
            "evaluate_subsets": True, "seeds": seeds}


@pytest.fixture
def stage2(cohort):
    layout, cfg = cohort
    for m in "ab":
        encode(layout, cfg, m, "precomputed")
    for seed in (0, 1):
        make_split(layout.root, "y", seed, (0.6, 0.2, 0.2), layout.split(seed))
        make_mask(layout.root, "mcar", 0.4, seed, layout.mask("mcar", 0.4, seed))
    return layout


def test_disk_full_while_a_cell_is_written_leaves_no_cell(stage2, tmp_path, monkeypatch):
    real = pl.DataFrame.write_parquet
    calls = []

    def write_parquet(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second seed's predictions
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_parquet)
    with pytest.raises(OSError, match="No space left"):
        run_cell(stage2, _train([0, 1]), "mcar", 0.4, tmp_path / "cell", meta={})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("cell")]


def test_a_training_cell_is_deterministic(stage2, tmp_path):
    first = run_cell(stage2, _train([0, 1]), "mcar", 0.4, tmp_path / "one", meta={})
    second = run_cell(stage2, _train([0, 1]), "mcar", 0.4, tmp_path / "two", meta={})
    timing = ("training_seconds", "evaluation_seconds")
    for a, b in zip(first, second, strict=True):
        # as JSON, where NaN (an AUC on one class) equals NaN
        assert json.dumps({k: v for k, v in a.items() if k not in timing}, sort_keys=True,
                          default=float) == json.dumps(
            {k: v for k, v in b.items() if k not in timing}, sort_keys=True, default=float)
    for seed in ("seed0", "seed1"):
        assert pl.read_parquet(tmp_path / "one" / seed / "predictions.parquet").equals(
            pl.read_parquet(tmp_path / "two" / seed / "predictions.parquet"))
        log = [(tmp_path / d / seed / "train.log").read_text() for d in ("one", "two")]
        assert log[0] == log[1]
    saved = json.loads((tmp_path / "one" / "seed0" / "metrics.json").read_text())
    assert saved["test"]["auc"] == first[0]["test"]["auc"]
