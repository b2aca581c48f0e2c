"""The demo adapter: the generated layout becomes the manifest (existence checks only)."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, modality_presence, read_manifest, read_qc
from mmpipe.cohorts.demo import generate_demo_cohort
from mmpipe.errors import ConfigError, InputError

FIELDS = ["age", "sex", "smoking", "stage", "site"]


def _cfg(**extra):
    cfg = {
        "adapter": "demo",
        "labels": ["label"],
        "modalities": {
            "mri_t1": {"kind": "volume", "encoders": ["e"]},
            "mri_t2": {"kind": "volume", "encoders": ["e"]},
            "ct": {"kind": "dicom", "encoders": ["e"]},
            "wsi": {"kind": "slide", "encoders": ["e"]},
            "clinical": {"kind": "table", "encoders": ["e"], "fields": FIELDS},
        },
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "demo"
    summary = generate_demo_cohort(out / "raw", n_subjects=10, seed=5, volume_shape=(8, 16, 16),
                                   slide_size=(256, 384))
    return out, summary


def test_manifest_of_the_generated_cohort(generated):
    out, s = generated
    df = build_manifest("demo", _cfg(), out)
    assert df.columns == ["subject_id", "label", "mri_t1_path", "mri_t2_path", "ct_path",
                          "wsi_path", *FIELDS]
    assert df.height == 10 and df["subject_id"].is_sorted()
    df, meta = read_manifest(out)
    pres = modality_presence(df, meta)
    for m in ("mri_t1", "mri_t2", "ct", "wsi"):
        assert pres[m].sum() == s["present"][m], m
    assert pres["clinical"].all()
    # planted corrupt files are present here: opening them is preprocessing's job
    bad_ct = df.filter(pl.col("subject_id") == s["corrupt_ct"][0])["ct_path"].item()
    assert bad_ct == str(out / "raw" / "ct" / s["corrupt_ct"][0])
    bad_wsi = df.filter(pl.col("subject_id") == s["corrupt_slides"][0])["wsi_path"].item()
    assert bad_wsi.endswith(".tiff")

    qc = read_qc(out)
    assert qc.filter(pl.col("modality").is_in(list(meta["modalities"]))).height == 10 * 5
    absent = qc.filter((pl.col("modality") == "mri_t1") & (pl.col("status") == "absent"))
    assert absent.height == 10 - s["present"]["mri_t1"]
    assert absent["reason"][0].startswith("no file mri_t1/DEMO-")
    missing_label = qc.filter(pl.col("modality") == "label")
    assert missing_label["subject_id"].to_list() == s["label_missing"]
    assert meta["n_label_missing"] == len(s["label_missing"])
    assert json.loads((out / "manifest.json").read_text())["adapter"] == "demo"


def test_raw_dir_option(generated, tmp_path):
    out, _ = generated
    cfg = _cfg(raw_dir="elsewhere/raw")
    shutil.copytree(out / "raw", tmp_path / "elsewhere" / "raw")
    df = build_manifest("demo", cfg, tmp_path / "res", base_dir=tmp_path)
    assert df["mri_t1_path"].drop_nulls()[0].startswith(str(tmp_path / "elsewhere" / "raw"))
    _, meta = read_manifest(tmp_path / "res")
    assert meta["modalities"]["clinical"]["fields"] == FIELDS


def test_a_table_without_fields_is_refused_as_the_config_check_refuses_it(generated):
    """The adapter filled every clinical.csv column where the config check refuses a table
    without ``fields``: the manifest carried fields no tabular encoder or prompt the check
    saw had named. The config alone names a table's fields."""
    out, _ = generated
    cfg = _cfg()
    del cfg["modalities"]["clinical"]["fields"]
    with pytest.raises(ConfigError, match="'clinical': a table modality needs 'fields'"):
        build_manifest("demo", cfg, out)


def test_empty_dicom_folder_is_rejected_and_files_must_exist(generated, tmp_path):
    out, s = generated
    raw = tmp_path / "raw"
    shutil.copytree(out / "raw", raw)
    with_ct = next(x["subject_id"] for x in s["subjects"] if x["present"]["ct"])
    for f in (raw / "ct" / with_ct).iterdir():
        f.unlink()
    build_manifest("demo", _cfg(), tmp_path)
    qc = read_qc(tmp_path).filter((pl.col("subject_id") == with_ct) & (pl.col("modality") == "ct"))
    assert qc.row(0, named=True)["status"] == "rejected"
    assert qc.row(0, named=True)["reason"] == "empty folder"


def test_errors_say_what_to_do(generated, tmp_path):
    with pytest.raises(InputError, match="run `mmpipe demo`"):
        build_manifest("demo", _cfg(), tmp_path / "not-generated")
    out, _ = generated
    bad = _cfg()
    bad["modalities"]["clinical"]["fields"] = ["age", "weight"]
    with pytest.raises(ConfigError, match="weight"):
        build_manifest("demo", bad, out)


def test_a_generation_killed_midway_is_refused_not_read(tmp_path, monkeypatch):
    """Regenerating with another seed and killing it part-way left new images beside the
    old labels.csv and summary.json, and the manifest read the mix."""
    from mmpipe.cohorts import demo as demo_module

    raw = tmp_path / "demo" / "raw"
    generate_demo_cohort(raw, n_subjects=8, seed=5, volume_shape=(8, 16, 16),
                         slide_size=(256, 384))
    build_manifest("demo", _cfg(), raw.parent)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "render_ct", killed)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_cohort(raw, n_subjects=8, seed=6, volume_shape=(8, 16, 16),
                             slide_size=(256, 384))
    with pytest.raises(InputError, match="incomplete: its generation was interrupted"):
        build_manifest("demo", _cfg(), raw.parent)


def test_the_names_the_config_check_allows_are_what_the_generator_writes(generated):
    """The config check refuses a demo modality, kind or column by these tables
    (``check_config``): they must be the generator's own."""
    from mmpipe.cohorts.demo.plan import IMAGING_KINDS as KINDS
    from mmpipe.cohorts.demo_adapter import SUFFIXES, TABLE_COLUMNS

    root = generated[0] / "raw"
    assert {p.name for p in root.iterdir() if p.is_dir()} == set(KINDS)
    # each modality as its kind is found (SUFFIXES; a dicom modality a folder a subject)
    assert all(p.is_dir() for p in (root / "ct").iterdir())
    for name in ("mri_t1", "mri_t2", "wsi"):
        assert {p.name.split(".", 1)[1] for p in (root / name).iterdir()} == {
            SUFFIXES[KINDS[name]][0].lstrip(".")}, name
    columns = [c for name in ("labels.csv", "clinical.csv")
               for c in pl.read_csv(root / name, n_rows=0).columns if c != "subject_id"]
    assert sorted(columns) == sorted(TABLE_COLUMNS)


def test_the_adapter_refuses_what_the_config_check_refuses(generated):
    """Called without the config check (the library's API), a modality the generator does
    not write was every subject's absence, and a features kind a KeyError."""
    out, _ = generated
    cfg = _cfg()
    cfg["modalities"]["mri_flair"] = {"kind": "volume", "encoders": ["e"]}
    with pytest.raises(ConfigError, match="demo has no modality 'mri_flair'"):
        build_manifest("demo", cfg, out)
