"""The synthetic demo cohort: real formats, planted defects, determinism, signal."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl
import pytest

from mmpipe.cohorts import demo

SMALL = dict(n_subjects=12, seed=3, volume_shape=(12, 32, 32), slide_size=(512, 768),
             second_series_share=0.3, n_corrupt_ct=1, n_corrupt_slides=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_raw")
    summary = demo.generate_demo_cohort(out, **SMALL)
    return out, summary


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _auc(score, y):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, score)


def test_layout_tables_and_summary(cohort):
    out, s = cohort
    labels = pl.read_csv(out / "labels.csv", schema_overrides={"subject_id": pl.Utf8})
    clinical = pl.read_csv(out / "clinical.csv", schema_overrides={"subject_id": pl.Utf8})
    assert labels.columns == ["subject_id", "label"]
    assert clinical.columns == ["subject_id", *demo.CLINICAL_FIELDS]
    assert labels.height == clinical.height == 12
    assert labels["subject_id"].to_list() == [f"DEMO-{i:03d}" for i in range(1, 13)]
    assert labels["label"].null_count() == 1 == len(s["label_missing"])
    assert set(labels["label"].drop_nulls().to_list()) == {0, 1}
    assert set(clinical["stage"].drop_nulls().to_list()) <= {"I", "II", "III", "IV"}
    assert set(clinical["smoking"].drop_nulls().to_list()) <= {"never", "former", "current"}
    # the clinical record exists for everyone: never all fields blank
    blank = clinical.select(pl.all_horizontal(pl.exclude("subject_id").is_null()))
    assert not blank.to_series().any()
    for m in demo.IMAGING:
        files = {p.name.split(".")[0] for p in (out / m).iterdir()}
        planned = {x["subject_id"] for x in s["subjects"] if x["present"][m]}
        assert files == planned, m
    # every subject keeps at least one imaging modality
    assert all(any(x["present"].values()) for x in s["subjects"])
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["corrupt_ct"] == s["corrupt_ct"] and len(s["corrupt_ct"]) == 1
    readme = (out / "README.txt").read_text()
    assert f"seed: {SMALL['seed']}" in readme and s["corrupt_slides"][0] in readme


def test_nifti_geometry(cohort):
    nib = pytest.importorskip("nibabel")
    out, s = cohort
    both = next(x["subject_id"] for x in s["subjects"]
                if x["present"]["mri_t1"] and x["present"]["mri_t2"])
    t1 = nib.load(out / "mri_t1" / f"{both}.nii.gz")
    t2 = nib.load(out / "mri_t2" / f"{both}.nii.gz")
    assert t1.shape == t2.shape == (32, 32, 12)
    assert nib.aff2axcodes(t1.affine) == ("R", "A", "S")
    assert nib.aff2axcodes(t2.affine) == ("L", "P", "S")
    assert np.allclose(t1.header.get_zooms(), demo.MRI_SPACING)
    assert int(t1.header["sform_code"]) == 1 and int(t1.header["qform_code"]) == 1
    assert not np.allclose(t1.affine[:3, 3], 0)
    # same patient, same place: once both are in RAS the body outlines coincide
    a1 = nib.as_closest_canonical(t1).get_fdata() > 150
    a2 = nib.as_closest_canonical(t2).get_fdata() > 150
    raw2 = t2.get_fdata() > 150
    assert (a1 == a2).mean() > 0.95
    assert np.allclose(nib.as_closest_canonical(t1).affine, nib.as_closest_canonical(t2).affine)
    assert (a1 == raw2).mean() < (a1 == a2).mean()


def test_ct_series_headers(cohort):
    pydicom = pytest.importorskip("pydicom")
    out, s = cohort
    scout_sid = s["second_series"][0]
    files = sorted((out / "ct" / scout_sid).glob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    by_series = {}
    for f, ds in zip(files, dss, strict=True):
        by_series.setdefault(ds.SeriesInstanceUID, []).append((f.name, ds))
    assert len(by_series) == 2
    main = max(by_series.values(), key=len)
    scout = min(by_series.values(), key=len)
    assert len(main) == 12 and 1 < len(scout) < 12
    assert {ds.SeriesNumber for _, ds in scout} != {ds.SeriesNumber for _, ds in main}
    assert "LOCALIZER" in scout[0][1].ImageType
    assert len({ds.StudyInstanceUID for ds in dss}) == 1
    assert len({ds.FrameOfReferenceUID for ds in dss}) == 1
    ds = main[0][1]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert ds.pixel_array.dtype == np.int16 and ds.PixelRepresentation == 1
    assert [float(v) for v in ds.PixelSpacing] == [demo.CT_PIXEL_SPACING] * 2
    # file names are not in slice order, positions are evenly spaced
    main.sort(key=lambda t: t[0])
    z = [float(d.ImagePositionPatient[2]) for _, d in main]
    assert z != sorted(z) and z != sorted(z, reverse=True)
    assert np.allclose(np.diff(sorted(z)), demo.CT_SLICE_THICKNESS)
    hu = ds.pixel_array.astype(int) + int(ds.RescaleIntercept)
    assert hu.min() >= -1024 and hu.max() > 100
    # the CT Image IOD's type 2 attributes are in every real file, empty or not
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName",
                    "PositionReferenceIndicator", "PatientPosition", "AcquisitionNumber"):
        assert keyword in ds, keyword

    bad = s["corrupt_ct"][0]
    z_bad = sorted(float(pydicom.dcmread(f).ImagePositionPatient[2])
                   for f in (out / "ct" / bad).glob("*.dcm"))
    gaps = np.diff(z_bad)
    assert len(z_bad) == 11 and gaps.max() == pytest.approx(2 * demo.CT_SLICE_THICKNESS)
    # the lost file leaves its number out, as it would from a real series
    numbers = sorted(int(pydicom.dcmread(f).InstanceNumber) for f in (out / "ct" / bad).glob(
        "*.dcm"))
    assert len(numbers) == 11 and set(range(1, 13)) - set(numbers) == {12 - 12 // 2}


def test_project_readers_accept_the_good_and_reject_the_planted(cohort):
    dicom = pytest.importorskip("mmpipe.io.dicom")
    slide = pytest.importorskip("mmpipe.io.slide")
    from mmpipe.errors import DicomSeriesError, SlideError

    out, s = cohort
    image, info = dicom.read_dicom_series(out / "ct" / s["second_series"][0], min_slices=8)
    assert image.GetSize() == (32, 32, 12)
    with pytest.raises(DicomSeriesError, match="gap"):
        dicom.read_dicom_series(out / "ct" / s["corrupt_ct"][0], min_slices=8)
    good = next(x["subject_id"] for x in s["subjects"]
                if x["present"]["wsi"] and not x["corrupt_slide"])
    sl = slide.open_slide(out / "wsi" / f"{good}.tiff")
    assert sl.mpp == pytest.approx(0.5)
    assert len(sl.level_dimensions) == 3 and sl.level_dimensions[0] == (768, 512)
    with pytest.raises(SlideError):
        slide.open_slide(out / "wsi" / f"{s['corrupt_slides'][0]}.tiff")


def test_same_seed_same_bytes_and_stale_files_removed(cohort, tmp_path):
    out, _ = cohort
    first = _hashes(out)
    again = tmp_path / "again"
    demo.generate_demo_cohort(again, **SMALL)
    assert _hashes(again) == first
    # a different plan in the same folder leaves no file of the old one behind
    (again / "mri_t1" / "DEMO-999.nii.gz").write_bytes(b"stale")
    (again / "ct" / "DEMO-001").mkdir(exist_ok=True)
    (again / "ct" / "DEMO-001" / "old.dcm").write_bytes(b"stale")
    s2 = demo.generate_demo_cohort(again, **{**SMALL, "n_subjects": 6, "seed": 4})
    assert not (again / "mri_t1" / "DEMO-999.nii.gz").exists()
    assert not (again / "ct" / "DEMO-001" / "old.dcm").exists()
    for m in demo.IMAGING:
        assert len(list((again / m).iterdir())) == s2["present"][m]
    assert not list(again.rglob("*.tmp-*"))
    other = _hashes(again)
    assert other["labels.csv"] != first["labels.csv"]


def test_options_are_validated(tmp_path):
    with pytest.raises(ValueError, match="unknown modality"):
        demo.generate_demo_cohort(tmp_path, n_subjects=2, missing={"pet": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        demo.generate_demo_cohort(tmp_path, n_subjects=2, missing={"ct": 1.5})
    # a negative count or share planted "all but k" (a negative slice of the plan)
    for bad in ({"second_series_share": -0.2}, {"second_series_share": 1.5},
                {"n_corrupt_ct": -3}, {"n_corrupt_slides": -1}):
        with pytest.raises(ValueError, match="second_series_share must lie in"):
            demo.generate_demo_cohort(tmp_path, n_subjects=2, **bad)


def test_missingness_never_removes_all_imaging():
    plan = demo.plan_cohort(200, 1, {m: 0.9 for m in demo.IMAGING}, 0.2, 2, 2)
    assert all(any(s.present.values()) for s in plan.subjects)
    plan = demo.plan_cohort(2000, 1, demo.DEFAULT_MISSING, 0.2, 1, 1)
    for m, rate in demo.DEFAULT_MISSING.items():
        share = np.mean([not s.present[m] for s in plan.subjects])
        assert abs(share - rate) < 0.05, m
    corrupt = [s for s in plan.subjects if s.corrupt_ct]
    assert len(corrupt) == 1 and corrupt[0].present["ct"] and not corrupt[0].second_series


def test_latent_model_balance_and_partial_signal():
    lat = demo.latent_model(4000, 0)
    y = lat["label"]
    assert y.mean() == pytest.approx(demo.POSITIVE_SHARE, abs=0.01)
    aucs = {k: _auc(lat[k], y) for k in demo.CHANNEL_NOISE}
    assert all(0.75 < a < 0.87 for a in aucs.values()), aucs
    fused = sum(lat[k] / demo.CHANNEL_NOISE[k] ** 2 for k in demo.CHANNEL_NOISE)
    assert _auc(fused, y) > max(aucs.values()) + 0.07


def test_each_image_channel_is_visible_in_the_pixels():
    from mmpipe.cohorts.demo import measure

    anat = demo.Anatomy(side=1, dx=0.0, dy=0.0)
    shape = (16, 48, 48)

    def t1(c):
        return measure.mri_property("mri_t1", demo.render_mri("mri_t1", shape, c, anat,
                                                               np.random.default_rng(0)))

    def t2(c):
        return measure.mri_property("mri_t2", demo.render_mri("mri_t2", shape, c, anat,
                                                               np.random.default_rng(0)))

    def ct(c):
        return measure.ct_property(demo.render_ct(shape, c, anat, np.random.default_rng(0)))

    def wsi(c):
        return measure.slide_property(demo.render_slide((512, 768), c,
                                                        np.random.default_rng(0)))

    for f in (t1, t2, ct, wsi):
        assert f(-1.5) < f(0.0) < f(1.5), f.__name__


def test_every_slice_carries_the_reading():
    """A slice encoder keeps a few slices: each must show the same lesion, and the
    planted reading must move a large share of the image, not a few voxels."""
    anat = demo.Anatomy(side=-1, dx=0.0, dy=0.0)
    shape = (16, 48, 48)
    tissue = demo.phantom(shape, anat, 0.2)
    area = (tissue == demo.LESION).sum(axis=(1, 2))
    assert area.min() == area.max() > 0
    small, large = (demo.render_mri("mri_t1", shape, c, anat, np.random.default_rng(0))
                    for c in (-1.0, 1.0))
    assert (np.abs(large.astype(int) - small.astype(int)) > 200).mean() > 0.03


def test_mri_anatomy_is_where_the_affine_says():
    """The lesion sits in the left kidney (posterior): low i and low j once in RAS."""
    import gzip

    nib = pytest.importorskip("nibabel")
    anat = demo.Anatomy(side=1, dx=0.0, dy=0.0)  # +1: patient left, as in DICOM
    vol = demo.render_mri("mri_t1", (12, 32, 32), 2.0, anat, np.random.default_rng(0))
    for lps in (False, True):
        img = nib.Nifti1Image.from_bytes(gzip.decompress(demo.nifti_bytes(vol, lps=lps)))
        ras = nib.as_closest_canonical(img).get_fdata()
        i, j, _ = np.argwhere(ras > 1000).mean(axis=0)
        assert i < 15.5 and j < 15.5, (lps, i, j)


def test_a_generation_killed_midway_leaves_the_folder_the_demos_to_finish(tmp_path,
                                                                           monkeypatch):
    """The workflow's demo job writes into results/<cohort>/raw: killed midway it left
    files and no summary.json (Snakemake removes only that, its output), and `mmpipe demo`
    refused the folder as the user's. The generator marks the folder while it runs."""
    from mmpipe import cli

    out = tmp_path / "raw"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "render_slide", killed)
    with pytest.raises(KeyboardInterrupt):
        demo.generate_demo_cohort(out, n_subjects=4)
    assert (out / demo.GENERATING).is_file() and not (out / demo.SUMMARY_JSON).exists()
    assert any((out / "mri_t1").iterdir()) or any((out / "ct").iterdir())
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)  # no config.yaml here: the generator's defaults
    assert cli.main(["demo", str(out), "--n-subjects", "4"]) == 0
    assert (out / demo.SUMMARY_JSON).is_file() and not (out / demo.GENERATING).exists()


def test_a_demo_made_with_other_settings_than_the_configs_is_refused(tmp_path):
    """The workflow regenerates the demo when its config block changes, by Snakemake's
    record of the job: a demo made before that record (an older version's output) or
    under `--rerun-triggers mtime` was read as if made with the new settings."""
    from mmpipe.errors import InputError

    out = tmp_path / "raw"
    demo.generate_demo_cohort(out, n_subjects=4, slide_size=(256, 384))
    demo.check_made_with(out, {"n_subjects": 4, "slide_size": [256, 384]})
    with pytest.raises(InputError, match=r"other settings than the config's demo block: "
                                         r"slide_size \[256, 384\] there, \[512, 640\] in "
                                         r"the config: regenerate it"):
        demo.check_made_with(out, {"n_subjects": 4, "slide_size": [512, 640]})
    with pytest.raises(InputError, match="n_subjects 4 there, 60 in the config"):
        demo.check_made_with(out, {"slide_size": [256, 384]})
    demo.check_made_with(tmp_path / "nothing", {})  # no demo there: the adapter says so
