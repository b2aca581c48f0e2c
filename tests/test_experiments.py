"""The paper experiments of ``experiments/`` run from a dataset's download layout to a
report: each on a miniature copy written with the real file names and formats."""

from __future__ import annotations

import re
import shutil

import polars as pl
import pytest
import yaml

from mmpipe.cohorts.demo.adni import write_adni
from mmpipe.cohorts.demo.bcnb import write_bcnb
from mmpipe.cohorts.demo.brats import write_brats
from mmpipe.cohorts.demo.breakhis import write_breakhis
from mmpipe.cohorts.demo.ixi import write_ixi
from mmpipe.cohorts.demo.mmist_raw import write_mmist_raw
from mmpipe.store import read_features
from tests.conftest import REPO, jobs_of, snakemake_in

pytestmark = pytest.mark.slow


def _swap(node, old: str, new: str):
    """The experiment config with every mention of encoder ``old`` replaced by ``new``."""
    if isinstance(node, dict):
        return {k: _swap(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_swap(v, old, new) for v in node]
    return new if node == old else node


def _experiment(tmp_path, name: str) -> dict:
    """``experiments/<name>`` to lay over a copy of ``config.yaml`` in ``tmp_path``, on
    the CPU."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return {**yaml.safe_load((REPO / "experiments" / name).read_text()), "device": "cpu"}


def _run(tmp_path, exp: dict) -> None:
    """Run the workflow on ``config.yaml`` with ``exp`` laid over it (as users do with
    ``--configfile``); a failure shows the jobs' logs."""
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    run = snakemake_in(tmp_path, "--configfile", str(tmp_path / "experiment.yaml"))
    if run.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}"
                         for p in (tmp_path / "results").rglob("*.log"))
        pytest.fail(f"snakemake failed:\n{run.stderr[-4000:]}\n{logs}")


def test_ixi_experiment_runs_from_the_download_layout(tmp_path):
    plan = write_ixi(tmp_path / "IXI", n_subjects=24, seed=1)
    exp = _experiment(tmp_path, "ixi_mmare.yaml")
    # MedicalNet weights cannot be downloaded here: the demo's random-init Med3D stands in
    exp = _swap(exp, "med3d_resnet18", "med3d_demo")
    ixi = exp["cohorts"]["ixi"]
    ixi["root"] = str(tmp_path / "IXI")
    ixi["benchmark"].update(seeds=[0], default_scenarios=["natural"], tuning={"trials": 1},
                            runs={"mmare": ["mri"], "logreg": ["mri"]})
    _run(tmp_path, exp)
    results = tmp_path / "results" / "ixi"
    manifest = pl.read_parquet(results / "manifest.parquet")
    # an IXI.xls row without an image is no subject of the MRI task (with the
    # experiment's former demographics table it was a table-only one, in the splits of
    # runs that cannot read it)
    assert set(manifest["subject_id"]) == set(plan.subjects) - {plan.no_image}
    report = (results / "report" / "results.md").read_text()
    assert "mmare" in report and "logreg" in report
    qc = pl.read_parquet(results / "qc" / "adapter.parquet")
    assert {"skipped", "merged", "conflict"} <= set(qc["status"])
    # a file added to the download rebuilds the manifest (before, only --forcerun did);
    # one the adapter skips reruns no store, no run and no report, only the stage-1
    # summary that lists it (the report reran when it was planned before the checkpoint)
    (tmp_path / "IXI" / "IXI-T1" / "notes.txt").write_text("scanner notes")
    stray = snakemake_in(tmp_path, "--configfile", str(tmp_path / "experiment.yaml"))
    assert stray.returncode == 0, stray.stderr[-3000:]
    ran = set(re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):$",
                         stray.stdout + stray.stderr, flags=re.M))
    assert "manifest" in ran and ran <= {"manifest", "cohort_qc", "all"}, ran
    # the spreadsheet is the manifest's input: another version of it (labels fixed, rows
    # added) rebuilds the manifest, where it used to rerun nothing and leave the runs on
    # the old labels (Snakemake compares contents, so a touch alone reruns nothing)
    write_ixi(tmp_path / "IXI-next", n_subjects=24, seed=2)
    shutil.copyfile(tmp_path / "IXI-next" / "IXI.xls", tmp_path / "IXI" / "IXI.xls")
    again = snakemake_in(tmp_path, "-n", "--configfile", str(tmp_path / "experiment.yaml"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "manifest" in jobs_of(again.stdout), again.stdout[-3000:]


def test_ham_brats_experiment_runs_from_the_download_layout(tmp_path):
    plan = write_brats(tmp_path / "BraTS", n_cases=36, seed=5)
    exp = _experiment(tmp_path, "ham_brats.yaml")
    # the VGG11 ImageNet weights cannot be downloaded here: random-init stands in
    exp["encoders"]["vgg11_tumour_slice"]["allow_random_init"] = True
    brats = exp["cohorts"]["brats"]
    brats["root"] = str(tmp_path / "BraTS")
    # two of the four sequences keep the test short (each is one encoding job)
    for seq in ("t1", "t2"):
        del brats["modalities"][seq], brats["benchmark"]["feature_sets"]["mri"][seq]
    brats["benchmark"].update(seeds=[0], ratios=[0.6, 0.2, 0.2], tuning={"trials": 1},
                              scenarios={"natural": [0.0]}, default_scenarios=["natural"],
                              runs={"ham": ["mri"], "logreg": ["mri"]})
    _run(tmp_path, exp)
    results = tmp_path / "results" / "brats"
    store = read_features(results / "features" / "flair" / "vgg11_tumour_slice.zarr")
    assert store.emb.shape[1:] == (512,)   # pooling: mean
    status = dict(zip(store.subject_id, store.status, strict=True))
    # the case whose segmentation is misnamed has no mask: rejected, the others encoded
    assert status[plan.misnamed_seg] == "rejected"
    reason = dict(zip(store.subject_id, store.reason, strict=True))[plan.misnamed_seg]
    assert "no mask file" in reason
    assert sum(s == "ok" for s in status.values()) >= len(plan.cases) - 2
    report = (results / "report" / "results.md").read_text()
    assert "ham" in report and "logreg" in report


def test_hypermm_breakhis_experiment_runs_from_the_download_layout(tmp_path):
    plan = write_breakhis(tmp_path / "BreaKHis_v1", patients_per_type=3, seed=2,
                          images_per_set=2)
    exp = _experiment(tmp_path, "hypermm_breakhis.yaml")
    exp["encoders"]["vgg11_fields"]["allow_random_init"] = True  # no weights here
    cohort = exp["cohorts"]["breakhis"]
    cohort["root"] = str(tmp_path / "BreaKHis_v1")
    # two of the four magnifications keep the test short (each is one encoding job)
    for mag in ("mag100", "mag400"):
        del cohort["modalities"][mag], cohort["benchmark"]["feature_sets"]["magnifications"][mag]
    cohort["benchmark"].update(seeds=[0], tuning={"trials": 1}, scenarios={"natural": [0.0]},
                               default_scenarios=["natural"],
                               runs={"hypermm": ["magnifications"], "logreg": ["magnifications"]})
    _run(tmp_path, exp)
    results = tmp_path / "results" / "breakhis"
    store = read_features(results / "features" / "mag40" / "vgg11_fields.zarr")
    assert store.emb.shape[1:] == (512, 7, 7)
    reason = dict(zip(store.subject_id, store.reason, strict=True))
    status = dict(zip(store.subject_id, store.status, strict=True))
    # the truncated field is left out of its set, named; the set is still encoded
    assert status[plan.truncated_png] == "ok"
    assert "1 of 2 image(s) left out" in reason[plan.truncated_png]
    assert status[plan.misplaced_100x] == "rejected"
    report = (results / "report" / "results.md").read_text()
    assert "hypermm" in report and "logreg" in report


def test_bd_bcnb_experiment_runs_from_the_download_layout(tmp_path):
    plan = write_bcnb(tmp_path / "BCNB", n_patients=30, seed=4)
    exp = _experiment(tmp_path, "bd_bcnb.yaml")
    exp["encoders"] = {"clam_resnet50": {"allow_random_init": True}}  # no weights here
    cohort = exp["cohorts"]["bcnb"]
    cohort["root"] = str(tmp_path / "BCNB")
    cohort["benchmark"].update(seeds=[0], tuning={"trials": 1},
                               scenarios={"natural": [0.0],
                                          "testmiss": {"rates": [1.0], "modality": "clinical"}},
                               runs={"bd": ["slide_clinical"], "logreg": {
                                   "feature_sets": ["slide_clinical"], "scenarios": ["natural"]}})
    _run(tmp_path, exp)
    results = tmp_path / "results" / "bcnb"
    store = read_features(results / "features" / "wsi" / "clam_resnet50.zarr")
    status = dict(zip(store.subject_id, store.status, strict=True))
    reason = dict(zip(store.subject_id, store.reason, strict=True))
    # the truncated JPEG is rejected with the reason; the plain JPEGs are tiled and encoded
    assert status[plan.truncated_slide] == "rejected"
    assert "plain image" in reason[plan.truncated_slide]
    assert sum(s == "ok" for s in status.values()) == len(plan.patients) - 2
    report = (results / "report" / "results.md").read_text()
    assert "bd" in report and "logreg" in report


def test_hypermm_adni_experiment_runs_from_the_download_layout(tmp_path):
    plan = write_adni(tmp_path / "ADNI_download", n_subjects=27, seed=6)
    exp = _experiment(tmp_path, "hypermm_adni.yaml")
    enc = exp["encoders"]["vgg11_volume_slices"]
    enc["allow_random_init"] = True  # no weights here
    enc["transform"]["max_slices"] = 2  # a short test
    cohort = exp["cohorts"]["adni"]
    cohort["root"] = str(tmp_path / "ADNI_download")
    cohort["benchmark"].update(seeds=[0], tuning={"trials": 1}, scenarios={"natural": [0.0]},
                               default_scenarios=["natural"],
                               runs={"hypermm": ["mri_pet"], "logreg": ["mri_pet"]})
    _run(tmp_path, exp)
    results = tmp_path / "results" / "adni"
    manifest = pl.read_parquet(results / "manifest.parquet")
    assert plan.pet_only_at_m12 in manifest["subject_id"].to_list()
    assert read_features(results / "features" / "pet" / "vgg11_volume_slices.zarr"
                         ).emb.shape[1:] == (512, 7, 7)
    report = (results / "report" / "results.md").read_text()
    assert "hypermm" in report and "logreg" in report


def test_mmare_mmist_raw_experiment_runs_from_the_download_layout(tmp_path):
    """From DICOM series and slides to a report. TotalSegmentator and MedicalNet's weights
    cannot be installed here: the CT is encoded whole by the demo's random-init Med3D."""
    plan = write_mmist_raw(tmp_path / "MMIST", n_cases=24, seed=3)
    exp = _experiment(tmp_path, "mmare_mmist_raw.yaml")
    exp = _swap(_swap(exp, "med3d_kidney_ct", "med3d_demo"), "med3d_resnet18", "med3d_demo")
    del exp["encoders"]
    exp["preprocess"] = {"slide": {"tile_size": 128, "max_tiles": 4}}
    cohort = exp["cohorts"]["mmist_raw"]
    cohort["root"] = str(tmp_path / "MMIST")
    del cohort["modalities"]["ct"]["mask"]
    cohort["benchmark"].update(seeds=[0], tuning={"trials": 1}, ratios=[0.6, 0.2, 0.2],
                               normalize="zscore",
                               runs={"mmare": ["with_clinical"], "logreg": ["with_clinical"]})
    _run(tmp_path, exp)
    results = tmp_path / "results" / "mmist_raw"
    ct = read_features(results / "features" / "ct" / "med3d_demo.zarr")
    status = dict(zip(ct.subject_id, ct.status, strict=True))
    assert status[plan.missing_ct_series] == "rejected"
    assert sum(s == "ok" for s in status.values()) == len(plan.ct) - 1
    report = (results / "report" / "results.md").read_text()
    assert "mmare" in report and "logreg" in report
