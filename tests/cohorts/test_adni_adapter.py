"""The adni adapter on a miniature LONI download (NIfTI per scan in LONI's folders, an
ADNIMERGE-like table) with oddities planted by :func:`mmpipe.cohorts.demo.adni.write_adni`."""

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.demo.adni import write_adni
from mmpipe.errors import ConfigError


def _cfg(root, **over):
    cfg = {"adapter": "adni", "root": str(root), "labels": ["diagnosis", "ad_vs_cn"],
           "modalities": {"mri": {"kind": "volume", "encoders": ["med3d_demo"]},
                          "pet": {"kind": "volume", "encoders": ["med3d_demo"]},
                          "clinical": {"kind": "table", "encoders": ["tabular"],
                                       "fields": ["AGE", "MMSE"]}}}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def adni(tmp_path_factory):
    root = tmp_path_factory.mktemp("adni")
    plan = write_adni(root, n_subjects=9, seed=1)
    manifest = build_manifest("adni", _cfg(root), root / "out", base_dir=root)
    return root, plan, manifest, read_qc(root / "out")


def _row(manifest, sid):
    return manifest.filter(pl.col("subject_id") == sid).row(0, named=True)


def _reason(qc, sid, modality):
    return qc.filter((pl.col("subject_id") == sid) & (pl.col("modality") == modality)
                     )["reason"].item()


def test_baseline_visit_scans_and_labels(adni):
    _, plan, manifest, _ = adni
    ok = plan.subjects[0]
    row = _row(manifest, ok)
    assert row["viscode"] == "bl" and row["diagnosis"] == plan.diagnosis_bl[ok]
    assert "_MR_MPRAGE_" in row["mri_path"] and "_PT_Coreg" in row["pet_path"]
    assert {_row(manifest, s)["ad_vs_cn"] for s in plan.subjects
            if plan.diagnosis_bl[s] == "MCI"} == {None}
    assert "Localizer" not in "".join(manifest["mri_path"].drop_nulls().to_list())


def test_scans_outside_the_window_or_tied_are_not_chosen(adni):
    _, plan, manifest, qc = adni
    assert _row(manifest, plan.pet_only_at_m12)["pet_path"] is None
    assert "no pet scan within 90 days" in _reason(qc, plan.pet_only_at_m12, "pet")
    assert _row(manifest, plan.mri_out_of_window)["mri_path"] is None
    assert _row(manifest, plan.two_close_mri)["mri_path"] is None
    assert "two mri scans 3 days from the visit" in _reason(qc, plan.two_close_mri, "mri")
    nodx = _row(manifest, plan.no_baseline_dx)
    assert nodx["diagnosis"] is None and nodx["mri_path"] is not None


def test_the_visit_rule_first_with_all(adni):
    root, plan, _, _ = adni
    manifest = build_manifest("adni", _cfg(root, adni={"visit": "first_with_all"}),
                              root / "o2", base_dir=root)
    row = _row(manifest, plan.pet_only_at_m12)
    assert row["viscode"] == "m12" and row["pet_path"] is not None
    assert "_MR_" in row["mri_path"] and row["mri_path"] != _row(manifest, plan.subjects[0])["mri_path"]
    # without a diagnosis at baseline and no MRI near its 12-month visit: no visit at all
    assert plan.no_baseline_dx not in manifest["subject_id"].to_list()
    qc = read_qc(root / "o2")
    why = qc.filter((pl.col("subject_id") == plan.no_baseline_dx) & (pl.col("modality") == "label"))
    assert "no visit with a diagnosis and a scan of every modality" in why["reason"].item()


def test_config_errors(adni):
    root, _, _, _ = adni
    with pytest.raises(ConfigError, match="derives"):
        build_manifest("adni", _cfg(root, labels=["amyloid"]), root / "o3", base_dir=root)
    with pytest.raises(ConfigError, match="adni.visit"):
        build_manifest("adni", _cfg(root, adni={"visit": "latest"}), root / "o4", base_dir=root)
    cfg = _cfg(root)
    cfg["modalities"]["tau"] = {"kind": "volume", "encoders": ["med3d_demo"]}
    with pytest.raises(ConfigError, match="adni.series"):
        build_manifest("adni", cfg, root / "o5", base_dir=root)
