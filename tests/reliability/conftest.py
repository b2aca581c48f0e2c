"""Bad inputs and faults thrown at small ``csv`` cohorts, as a new user would.

Each test builds a cohort of a few good subjects and one bad one, runs the stage-1
steps through the library (the same calls the rules make), and asserts two things:
the bad subject ends with a named error or an explicit QC record, and every other
subject's output is exactly what it is without the bad one.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmpipe.cohorts import build_manifest
from mmpipe.config import validate_config
from mmpipe.layout import CohortLayout
from mmpipe.params import encoder_params, prompt_params
from mmpipe.store import FeatureStore, read_features
from tests.conftest import REPO

COHORT = "toy"


@pytest.fixture(scope="session")
def base_config() -> dict:
    """The repository's config.yaml (encoders, methods), validated."""
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A cohort CSV; ``None`` values are written as empty cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    return path


def csv_cohort_config(csv_path: Path, modalities: dict[str, dict], labels=("y",),
                      subject_column: str = "id") -> dict:
    """A ``csv`` cohort block; modalities as in config (kind, column/fields, encoders)."""
    return {"adapter": "csv", "csv": str(csv_path), "subject_column": subject_column,
            "labels": list(labels), "modalities": copy.deepcopy(modalities)}


def with_cohort(base: dict, cohort_cfg: dict, **overrides) -> dict:
    """``base`` with ``cohort_cfg`` as the only cohort (and top-level ``overrides``)."""
    cfg = copy.deepcopy(base)
    cfg["cohorts"] = {COHORT: copy.deepcopy(cohort_cfg)}
    cfg["run_cohorts"] = [COHORT]
    cfg.update(copy.deepcopy(overrides))
    return validate_config(cfg)


def build(tmp_path: Path, cfg: dict) -> CohortLayout:
    """The manifest of the config's cohort under ``tmp_path/results``."""
    layout = CohortLayout.of(tmp_path / "results", COHORT)
    build_manifest(COHORT, cfg["cohorts"][COHORT], layout.root, base_dir=tmp_path)
    return layout


def preprocess(layout: CohortLayout, cfg: dict, modality: str) -> list[Path]:
    """The preprocessing a modality's kind needs (DICOM conversion, tiling, prompts), as
    the rules run it; returns the shard folders."""
    from mmpipe.params import dicom_params, tiling_params

    kind = cfg["cohorts"][COHORT]["modalities"][modality]["kind"]
    shards = layout.shards(modality, kind, cfg["shards"].get(kind, 1))
    for k, out in enumerate(shards):
        if kind == "dicom":
            from mmpipe.preprocess.dicom_shard import convert_dicom_shard

            convert_dicom_shard(layout.root, modality, k, len(shards), dicom_params(cfg), out)
        else:
            from mmpipe.preprocess.slide_shard import tile_slide_shard

            tile_slide_shard(layout.root, modality, k, len(shards), tiling_params(cfg), out)
    return shards


def encode(layout: CohortLayout, cfg: dict, modality: str, encoder: str) -> FeatureStore:
    """Preprocess and encode one modality into its store; returns the store."""
    from mmpipe.cohorts.manifest_files import read_manifest
    from mmpipe.encode.run import encode_store
    from mmpipe.encoders.registry import execution_settings
    from mmpipe.fsutil import write_parquet
    from mmpipe.preprocess.prompts import build_prompts

    shards = preprocess(layout, cfg, modality)
    prompts = None
    if cfg["encoders"][encoder]["type"] == "text":
        manifest, meta = read_manifest(layout.root)
        p = prompt_params(cfg, COHORT, modality)
        prompts = write_parquet(build_prompts(manifest, p["fields"], meta["labels"],
                                              p["prompt"]), layout.prompts(modality))
    params = encoder_params(cfg, COHORT, modality, encoder)
    out = encode_store(layout.root, modality, params, layout.store(modality, encoder),
                       device="cpu", settings=execution_settings(cfg["encoders"][encoder]),
                       shard_dirs=shards or None, prompts=prompts)
    return FeatureStore(out)


def by_subject(path: Path) -> dict[str, dict[str, Any]]:
    """A store's rows by subject: status, reason and embedding."""
    f = read_features(path)
    return {s: {"status": st, "reason": r, "emb": e}
            for s, st, r, e in zip(f.subject_id, f.status, f.reason, f.emb, strict=True)}
