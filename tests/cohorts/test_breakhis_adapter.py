"""The breakhis adapter on a miniature BreakHis download (the real folder and file names,
RGB PNG fields) with oddities planted by :func:`mmpipe.cohorts.demo.breakhis.write_breakhis`."""

import shutil

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.demo.breakhis import write_breakhis
from mmpipe.errors import ConfigError, InputError

MAGS = ("mag40", "mag100", "mag200", "mag400")


def _cfg(root, **over):
    cfg = {"adapter": "breakhis", "root": str(root), "labels": ["malignant", "tumour_type"],
           "modalities": {m: {"kind": "image", "encoders": ["vgg11_images"]} for m in MAGS}}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def breakhis(tmp_path_factory):
    root = tmp_path_factory.mktemp("BreaKHis_v1")
    plan = write_breakhis(root, patients_per_type=2, seed=1, images_per_set=2)
    manifest = build_manifest("breakhis", _cfg(root), root / "out", base_dir=root)
    return plan, manifest, read_qc(root / "out")


def _row(manifest, sid):
    return manifest.filter(pl.col("subject_id") == sid).row(0, named=True)


def _qc(qc, sid, modality):
    return qc.filter((pl.col("subject_id") == sid) & (pl.col("modality") == modality))


def test_patients_are_subjects_with_a_set_per_magnification(breakhis):
    plan, manifest, _ = breakhis
    # the patient under two type folders is a subject a folder
    twice = {f"{plan.two_types}_DC", f"{plan.two_types}_LC"}
    assert set(manifest["subject_id"]) == set(plan.patients) - {plan.two_types} | twice
    ok = next(p for p in plan.patients if p not in (plan.no_400x, plan.empty_200x,
                                                    plan.misplaced_100x, plan.two_types))
    row = _row(manifest, ok)
    cls, tumour = plan.patients[ok]
    assert (row["malignant"], row["tumour_type"]) == (cls, tumour)
    for mag in MAGS:
        assert row[f"{mag}_path"].endswith(f"{mag[3:]}X")


def test_natural_missingness_and_the_planted_oddities(breakhis):
    plan, manifest, qc = breakhis
    assert _row(manifest, plan.no_400x)["mag400_path"] is None
    assert "no 400X/ folder" in _qc(qc, plan.no_400x, "mag400")["reason"].item()
    assert _row(manifest, plan.empty_200x)["mag200_path"] is None
    assert "holds no image" in _qc(qc, plan.empty_200x, "mag200")["reason"].item()
    # a 100X field in the 40X folder: the set is rejected, not mixed
    misplaced = _qc(qc, plan.misplaced_100x, "mag40")
    assert misplaced["status"].item() == "rejected"
    assert "-100-001.png" in misplaced["reason"].item()
    assert _row(manifest, plan.misplaced_100x)["mag100_path"] is not None


def test_a_patient_under_two_types_is_a_subject_a_folder_in_one_split_group(breakhis):
    """The release's 14-13412 is under ductal and lobular carcinoma, with every
    magnification in both: it was rejected whole, and its `malignant` label, which the
    folders agree on, lost with it (the cohort kept 80 of BreakHis's 82 patient folders)."""
    plan, manifest, qc = breakhis
    pid = plan.two_types
    rows = {t: _row(manifest, f"{pid}_{t}") for t in ("DC", "LC")}
    assert {t: (r["malignant"], r["tumour_type"]) for t, r in rows.items()} == {
        "DC": ("malignant", "ductal_carcinoma"), "LC": ("malignant", "lobular_carcinoma")}
    for t, row in rows.items():
        assert row["split_group"] == pid
        for mag in MAGS:  # each its own folder's fields
            assert f"SOB_M_{t}_{pid}/" in row[f"{mag}_path"] + "/"
    said = qc.filter(pl.col("status") == "two_types")
    assert sorted(said["subject_id"].to_list()) == [f"{pid}_DC", f"{pid}_LC"]
    assert all(f"patient ID {pid} is under 2 type folders" in r for r in said["reason"])
    assert qc.filter(pl.col("status") == "rejected")["subject_id"].str.starts_with(pid).sum() == 0


def test_a_folder_off_the_naming_is_skipped_with_a_qc_row(breakhis):
    plan, _, qc = breakhis
    skipped = qc.filter(pl.col("status") == "skipped")
    assert skipped["path"].to_list() == [plan.bad_folder]


def test_config_errors(tmp_path):
    write_breakhis(tmp_path / "b", patients_per_type=2, seed=0, images_per_set=2)
    with pytest.raises(ConfigError, match="derives"):
        build_manifest("b", _cfg(tmp_path / "b", labels=["grade"]), tmp_path / "o",
                       base_dir=tmp_path)
    with pytest.raises(ConfigError, match="kind 'image'"):
        build_manifest("b", _cfg(tmp_path / "b", modalities={
            "mag40": {"kind": "slide", "encoders": ["clam_resnet50"]}}), tmp_path / "o2",
            base_dir=tmp_path)


def test_folders_of_one_accession_number_are_said_and_a_foreign_field_rejects(tmp_path,
                                                                               caplog):
    """BreakHis's 14-22549AB, 14-22549CD and 14-22549G (one accession number, three
    folders) were three subjects with nothing said, though they may be one patient's
    tissue on both sides of a split; and a field named for another patient was pooled
    into the set of the folder it lay in."""
    import logging
    import shutil

    root = tmp_path / "BreaKHis_v1"
    plan = write_breakhis(root, patients_per_type=2, seed=1, images_per_set=2)
    ok = [p for p in plan.patients if p not in (plan.no_400x, plan.empty_200x,
                                                plan.misplaced_100x, plan.two_types,
                                                plan.truncated_png)]
    base, other = ok[0], ok[1]
    cls, tumour = plan.patients[base]
    folder = next((root / "histology_slides" / "breast" / cls / "SOB" / tumour).glob(
        f"*_{base}"))
    for letters in ("AB", "CD"):  # its fields named as BreakHis names them: -14-22549AB-
        copy = folder.with_name(folder.name + letters)
        shutil.copytree(folder, copy)
        for png in copy.glob("*/*.png"):
            png.rename(png.with_name(png.name.replace(f"-{base}-", f"-{base}{letters}-")))
    other_cls, other_tumour = plan.patients[other]
    stray = next((root / "histology_slides" / "breast" / other_cls / "SOB" / other_tumour
                  ).glob(f"*_{other}/200X/*.png"))
    shutil.copy(stray, folder / "200X" / stray.name)
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest("breakhis", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    shared = qc.filter(pl.col("status") == "shared_accession")
    assert sorted(shared["subject_id"]) == sorted([base, base + "AB", base + "CD"])
    assert f"shares accession number {base} with {base}AB, {base}CD" in _qc(
        qc, base, "label").filter(pl.col("status") == "shared_accession")["reason"].item()
    assert "1 accession number(s) name several patient folders" in caplog.text
    assert {base, base + "AB", base + "CD"} <= set(manifest["subject_id"])
    # one split group: every split keeps them in one part (they were split like strangers)
    groups = dict(manifest.select("subject_id", "split_group").iter_rows())
    assert {groups[s] for s in (base, base + "AB", base + "CD")} == {base}
    # and the two folders of the patient under two types (test above)
    assert sum(g is not None for g in groups.values()) == 3 + 2
    from mmpipe.bench.prepare import make_split

    for seed in range(4):
        split = dict(make_split(root / "out", "malignant", seed, (0.6, 0.1, 0.3),
                                tmp_path / f"split{seed}.parquet")
                     .select("subject_id", "split").iter_rows())
        assert len({split[s] for s in (base, base + "AB", base + "CD")}) == 1
    foreign = _qc(qc, base, "mag200")
    assert foreign["status"].item() == "rejected"
    assert f"named for another patient or tumour type: {stray.name}" in foreign["reason"].item()
    assert _row(manifest, base)["mag200_path"] is None
    assert _row(manifest, base + "AB")["mag200_path"] is not None


@pytest.mark.parametrize("remove, rename, says", [
    ("malignant", None, r"missing: BreakHis has 8"),
    (None, ("benign/SOB/phyllodes_tumor", "benign/SOB/phyllodes_tumour"),
     r"\['benign/SOB/phyllodes_tumor'\] missing.*folders of no known type: "
     r"\['benign/SOB/phyllodes_tumour'\]"),
])
def test_a_class_or_type_folder_missing_is_an_error(tmp_path, remove, rename, says):
    """Without malignant/ the task had one class, and a type folder misspelt lost that type,
    both without a QC row or a warning."""
    write_breakhis(tmp_path, patients_per_type=2, seed=1, images_per_set=2)
    breast = tmp_path / "histology_slides" / "breast"
    if remove:
        shutil.rmtree(breast / remove)
    if rename:
        (breast / rename[0]).rename(breast / rename[1])
    with pytest.raises(InputError, match=says):
        build_manifest("breakhis", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)


def _plain_download(tmp_path):
    """A miniature download, its breast/ folder and the patients without a planted
    oddity."""
    root = tmp_path / "BreaKHis_v1"
    plan = write_breakhis(root, patients_per_type=2, seed=1, images_per_set=2)
    ok = [p for p in plan.patients if p not in (plan.no_400x, plan.empty_200x,
                                                plan.misplaced_100x, plan.two_types,
                                                plan.truncated_png)]
    return root, plan, root / "histology_slides" / "breast", ok


def test_a_type_code_off_its_folder_a_copy_and_macos_metadata(tmp_path):
    """A ductal carcinoma patient's folder moved under lobular_carcinoma/ was labelled
    lobular with nothing said; a copy "-001 (1).png" was pooled as a field of its own; a
    macOS "._" file was an image, so an empty magnification folder holding one was
    recorded as present."""
    root, plan, breast, ok = _plain_download(tmp_path)
    ductal = next(p for p in ok if plan.patients[p] == ("malignant", "ductal_carcinoma"))
    moved = next((breast / "malignant" / "SOB" / "ductal_carcinoma").glob(f"*_{ductal}"))
    moved.rename(breast / "malignant" / "SOB" / "lobular_carcinoma" / moved.name)
    copied = next(p for p in ok if p != ductal)
    cls, tumour = plan.patients[copied]
    field = sorted((breast / cls / "SOB" / tumour).glob(f"*_{copied}/40X/*.png"))[0]
    shutil.copy(field, field.with_name(field.stem + " (1).png"))
    empty = next((breast / plan.patients[plan.empty_200x][0] / "SOB"
                  / plan.patients[plan.empty_200x][1]).glob(f"*_{plan.empty_200x}/200X"))
    (empty / f"._{field.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    manifest = build_manifest("breakhis", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    assert ductal not in manifest["subject_id"].to_list()
    skipped = qc.filter(pl.col("status") == "skipped")
    assert any("type code DC in the lobular_carcinoma/ folder" in r
               for r in skipped["reason"])
    copy = _qc(qc, copied, "mag40")
    assert copy["status"].item() == "rejected"
    assert f"not named SOB_<B|M>_<T>-<patient>-<mag>-<n>: {field.stem} (1).png" in \
        copy["reason"].item()
    assert _row(manifest, copied)["mag40_path"] is None
    assert _row(manifest, plan.empty_200x)["mag200_path"] is None
    assert _qc(qc, plan.empty_200x, "mag200")["reason"].item() == "200X/ holds no image"


def test_a_magnification_folder_that_cannot_be_listed_rejects_that_set(tmp_path,
                                                                       monkeypatch):
    """A folder the build may not list (permissions, a network share's I/O error)
    stopped the whole manifest."""
    from tests.conftest import deny_listing

    root = tmp_path / "BreaKHis_v1"
    plan = write_breakhis(root, patients_per_type=2, seed=1, images_per_set=2)
    ok = next(p for p in plan.patients if p not in (plan.no_400x, plan.empty_200x,
                                                    plan.misplaced_100x, plan.two_types,
                                                    plan.truncated_png))
    deny_listing(monkeypatch, lambda folder: folder.name == "40X"
                 and folder.parent.name.endswith(f"_{ok}"))
    manifest = build_manifest("breakhis", _cfg(root), root / "out", base_dir=root)
    qc = _qc(read_qc(root / "out"), ok, "mag40")
    assert qc["status"].item() == "rejected"
    assert qc["reason"].item() == "cannot list the folder: Permission denied"
    assert _row(manifest, ok)["mag100_path"] is not None


def test_a_magnification_folder_of_another_case_is_rejected_not_missing(tmp_path):
    """A 40x/ (a copy that changed the case) was recorded as "no 40X/ folder": missing by
    nature, which the benchmark measures, for every patient so copied."""
    root = tmp_path / "BreaKHis_v1"
    plan = write_breakhis(root, patients_per_type=2, seed=1, images_per_set=2)
    ok = next(p for p in plan.patients if p not in (plan.no_400x, plan.empty_200x,
                                                    plan.misplaced_100x, plan.two_types,
                                                    plan.truncated_png))
    folder = next(root.rglob(f"SOB_*_{ok}/40X"))
    folder.rename(folder.with_name("40x"))
    manifest = build_manifest("breakhis", _cfg(root), root / "out", base_dir=root)
    qc = _qc(read_qc(root / "out"), ok, "mag40")
    assert qc["status"].item() == "rejected"
    assert qc["reason"].item() == "no 40X/ folder, but 40x/: BreakHis names it 40X/ (rename it)"
    assert qc["path"].item().endswith("40x")
    assert _row(manifest, ok)["mag100_path"] is not None


def test_images_a_level_too_deep_are_rejected_not_missing(tmp_path):
    """100X/100X/ (a botched copy) was recorded as "100X/ holds no image": missing by
    nature, which the benchmark measures."""
    root = tmp_path / "BreaKHis_v1"
    plan = write_breakhis(root, patients_per_type=2, seed=1, images_per_set=2)
    ok = next(p for p in plan.patients if p not in (plan.no_400x, plan.empty_200x,
                                                    plan.misplaced_100x, plan.two_types,
                                                    plan.truncated_png))
    folder = next(root.rglob(f"SOB_*_{ok}/100X"))
    (folder / "100X").mkdir()
    for image in [p for p in folder.iterdir() if p.is_file()]:
        image.rename(folder / "100X" / image.name)
    manifest = build_manifest("breakhis", _cfg(root), root / "out", base_dir=root)
    qc = _qc(read_qc(root / "out"), ok, "mag100")
    assert qc["status"].item() == "rejected"
    assert qc["reason"].item() == ("100X/ holds no image it reads, but 100X/: BreakHis "
                                   "keeps the images in 100X/ itself")
    assert _row(manifest, ok)["mag100_path"] is None


def test_a_patient_under_two_types_that_shares_an_accession_number(tmp_path):
    """Its folders are subjects of their own names, and the accession's QC rows and split
    group went to the bare ID, no subject: the build stopped on a QC row of no subject."""
    root = tmp_path / "BreaKHis_v1"
    plan = write_breakhis(root, patients_per_type=2, seed=1, images_per_set=2)
    pid = plan.two_types
    cls, tumour = plan.patients[pid]
    folder = next((root / "histology_slides" / "breast" / cls / "SOB" / tumour).glob(f"*_{pid}"))
    sibling = folder.with_name(folder.name + "AB")
    shutil.copytree(folder, sibling)
    for png in sibling.glob("*/*.png"):
        png.rename(png.with_name(png.name.replace(f"-{pid}-", f"-{pid}AB-")))
    manifest = build_manifest("breakhis", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    groups = dict(manifest.select("subject_id", "split_group").iter_rows())
    assert {groups[s] for s in (f"{pid}_DC", f"{pid}_LC", f"{pid}AB")} == {pid}
    shared = qc.filter(pl.col("status") == "shared_accession")
    assert sorted(shared["subject_id"]) == sorted([f"{pid}_DC", f"{pid}_LC", f"{pid}AB"])


def test_one_field_in_two_files_and_folders_breakhis_lacks_are_said(tmp_path):
    """A field saved as .png and .tif was pooled twice; a copy of a type folder ("ductal_
    carcinoma (1)", 38 patients) and a folder beside the magnifications went unread without
    a word."""
    from PIL import Image

    root, plan, breast, ok = _plain_download(tmp_path)
    twice = ok[0]
    cls, tumour = plan.patients[twice]
    field = sorted((breast / cls / "SOB" / tumour).glob(f"*_{twice}/40X/*.png"))[0]
    Image.open(field).save(field.with_suffix(".tif"))
    copy = breast / "malignant" / "SOB" / "ductal_carcinoma (1)"
    shutil.copytree(breast / "malignant" / "SOB" / "ductal_carcinoma", copy)
    extra = field.parent.parent / "40X_extra"
    extra.mkdir()
    manifest = build_manifest("breakhis", _cfg(root), root / "out", base_dir=root)
    qc = read_qc(root / "out")
    rec = _qc(qc, twice, "mag40")
    assert rec["status"].item() == "rejected"
    assert rec["reason"].item() == (f"40X/ holds one field in several files: {field.name}, "
                                    f"{field.with_suffix('.tif').name}")
    assert _row(manifest, twice)["mag40_path"] is None
    skipped = {r["path"]: r["reason"] for r in qc.filter(
        pl.col("status") == "skipped").iter_rows(named=True)}
    assert skipped[str(copy)].startswith("malignant/SOB/ductal_carcinoma (1) is not one of "
                                         "BreakHis's malignant tumour types")
    assert skipped[str(extra)].startswith(f"a folder in {field.parent.parent.name}/ that is "
                                          "no magnification of BreakHis")


def test_the_miniature_lists_a_malignant_patient_under_two_types(tmp_path):
    # as the release's 14-13412: with three patients a type a benign patient was listed
    # again under lobular carcinoma, a split group of two labels the release never has
    plan = write_breakhis(tmp_path, patients_per_type=3, seed=1, images_per_set=2)
    assert plan.patients[plan.two_types][0] == "malignant"
