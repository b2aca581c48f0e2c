"""The brats adapter on miniature BraTS downloads (2020 and 2019 layouts, NIfTI-1 gz,
the survival CSVs) with the releases' oddities planted by
:func:`mmpipe.cohorts.demo.brats.write_brats`."""

from pathlib import Path

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.brats import survival_class
from mmpipe.cohorts.demo.brats import write_brats
from mmpipe.errors import ConfigError, InputError
from mmpipe.preprocess.masks import mask_column

SEQS = ("t1", "t1ce", "t2", "flair")


def _cfg(root, **over):
    cfg = {"adapter": "brats", "root": str(root), "labels": ["survival_class"],
           "modalities": {seq: {"kind": "volume", "encoders": ["vgg11_slices"]} for seq in SEQS}
           | {"clinical": {"kind": "table", "encoders": ["tabular"], "fields": ["Age"]}}}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module", params=["2020", "2019"])
def brats(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"brats{request.param}")
    plan = write_brats(root, n_cases=10, seed=2, release=request.param)
    manifest = build_manifest("brats", _cfg(root), root / "out", base_dir=root)
    return root, plan, manifest, read_qc(root / "out")


def _row(manifest, case):
    return manifest.filter(pl.col("subject_id") == case).row(0, named=True)


def test_cases_sequences_and_masks_are_read_from_the_layout(brats):
    _, plan, manifest, qc = brats
    assert set(manifest["subject_id"]) == set(plan.cases)
    ok = plan.cases[0]
    row = _row(manifest, ok)
    for seq in SEQS:
        assert row[f"{seq}_path"].endswith(f"{ok}_{seq}.nii.gz")
        assert row[mask_column(seq)].endswith(f"{ok}_seg.nii.gz")
    assert _row(manifest, plan.no_t2)["t2_path"] is None
    assert qc.filter((pl.col("subject_id") == plan.no_t2) & (pl.col("modality") == "t2")
                     )["status"].to_list() == ["absent"]
    if plan.release == "2019":
        assert {row["grade"] for row in manifest.iter_rows(named=True)} == {"HGG", "LGG"}


def test_two_files_of_a_sequence_reject_it_naming_both(brats):
    _, plan, manifest, qc = brats
    case = plan.two_t1_files
    assert _row(manifest, case)["t1_path"] is None
    reason = qc.filter((pl.col("subject_id") == case) & (pl.col("modality") == "t1")
                       )["reason"].item()
    assert f"{case}_t1.nii.gz" in reason and f"{case}_t1.nii," in reason + ","
    # the stage-1 summary's file column: the case folder, where its files are named
    folder = Path(qc.filter((pl.col("subject_id") == case) & (pl.col("modality") == "t1")
                            )["path"].item())
    assert folder.name == case and folder.is_dir()


def test_a_misnamed_segmentation_is_skipped_with_a_qc_row_and_leaves_no_mask(brats):
    _, plan, manifest, qc = brats
    case = plan.misnamed_seg
    assert _row(manifest, case)[mask_column("t1")] is None
    skipped = qc.filter((pl.col("subject_id") == case) & (pl.col("status") == "skipped"))
    assert skipped["path"].str.ends_with("W39_1998.09.19_Segm.nii").all()
    assert sorted(skipped["modality"]) == sorted(SEQS)


def test_survival_classes_and_the_release_oddities(brats):
    _, plan, manifest, qc = brats
    labelled = {r["subject_id"]: r["survival_class"] for r in manifest.iter_rows(named=True)}
    why = {r["subject_id"]: r["reason"] for r in
           qc.filter(pl.col("modality") == "label").iter_rows(named=True)}
    # censored before the long edge: unknown, said; censored past it: long
    assert labelled[plan.censored_unknown] is None
    assert "censored at 361 days" in why[plan.censored_unknown]
    assert labelled[plan.censored_long] == "long"
    assert labelled[plan.not_a_number] is None and "'NA'" in why[plan.not_a_number]
    assert labelled[plan.no_row] is None
    assert any(f"survival row of {plan.row_without_case} skipped: no case folder" in r
               for r in qc.filter(pl.col("subject_id") == "*")["reason"].to_list())
    for case, days in plan.survival_days.items():
        if days.isdigit() and labelled.get(case) is not None:
            assert labelled[case] == survival_class(days, (300.0, 450.0))[0]


def test_a_case_without_a_survival_row_or_value_says_why(tmp_path):
    """A case without a row in the survival CSV, or with its cell blank (about a third
    of 2020's 369 cases), was only "label missing" in the QC table and the stage-1
    summary, where every other blank label says why."""
    plan = write_brats(tmp_path, n_cases=8, seed=1)
    csv = tmp_path / "survival_info.csv"
    blank = plan.cases[0]
    csv.write_text("\n".join(",".join(c if i != 2 or not line.startswith(blank) else ""
                                      for i, c in enumerate(line.split(",")))
                             for line in csv.read_text().splitlines()) + "\n")
    build_manifest("brats", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    qc = read_qc(tmp_path / "out").filter(pl.col("modality") == "label")
    why = {r["subject_id"]: (r["reason"], r["path"]) for r in qc.iter_rows(named=True)}
    assert why[plan.no_row] == ("no row in survival_info.csv", str(csv))
    assert why[blank] == ("Survival_days blank in survival_info.csv", str(csv))


def test_class_edges_follow_the_config_and_both_ends_are_mid():
    assert survival_class("299", (300, 450)) == ("short", None)
    assert survival_class("300", (300, 450)) == ("mid", None)
    assert survival_class("450", (300, 450)) == ("mid", None)
    assert survival_class("451", (300, 450)) == ("long", None)
    assert survival_class("451", (500, 600))[0] == "short"
    assert survival_class("-3", (300, 450))[0] is None
    # float() reads these as numbers of days: they were the class "long"
    for text in ("inf", "Infinity", "1e999"):
        assert survival_class(text, (300, 450)) == (
            None, f"survival {text!r} is not a number of days")


def test_config_errors_name_what_to_fix(tmp_path):
    plan_root = tmp_path / "b"
    write_brats(plan_root, n_cases=8, seed=0)
    with pytest.raises(ConfigError, match="derives \\['survival_class'\\]"):
        build_manifest("b", _cfg(plan_root, labels=["grade"]), tmp_path / "o1", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="survival_days must be increasing"):
        build_manifest("b", _cfg(plan_root, brats={"survival_days": [450, 300]}),
                       tmp_path / "o2", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="no modality 'seg'"):
        build_manifest("b", _cfg(plan_root, modalities={"seg": {"kind": "volume",
                                                                "encoders": ["med3d_demo"]}}),
                       tmp_path / "o3", base_dir=tmp_path)
    (plan_root / "survival_info.csv").unlink()
    with pytest.raises(InputError, match="2021 ships no survival data"):
        build_manifest("b", _cfg(plan_root), tmp_path / "o4", base_dir=tmp_path)


def test_the_survival_days_are_not_an_input(brats, tmp_path):
    root = brats[0]
    cfg = _cfg(root)
    survival = "Survival_days" if (root / "survival_info.csv").is_file() else "Survival"
    cfg["modalities"]["clinical"]["fields"] = ["Age", survival]
    with pytest.raises(ConfigError, match=f"'{survival}' is what label 'survival_class'"):
        build_manifest("brats", cfg, tmp_path, base_dir=root)


def test_a_survival_csv_of_another_release_is_refused(tmp_path):
    """2020's ``survival_info.csv`` (``BraTS20_Training_001``) beside 2021's folders
    (``BraTS2021_00001``) matched no case: every label blank, an empty split, warnings."""
    plan = write_brats(tmp_path, n_cases=8, seed=1, release="2020")
    for i, case in enumerate(plan.cases):
        new = f"BraTS2021_{i:05d}"
        folder = tmp_path / case
        for f in folder.iterdir():
            f.rename(folder / f.name.replace(case, new))
        folder.rename(tmp_path / new)
    with pytest.raises(InputError, match="no survival row names a case folder.*BraTS2021_00000"):
        build_manifest("brats", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)


@pytest.mark.parametrize("with_csv", [True, False])
def test_a_2023_download_is_refused_naming_its_layout(tmp_path, with_csv):
    """2023 ships no survival CSV: its download was told of the CSV, not of its naming."""
    (tmp_path / "BraTS-GLI-00000-000").mkdir()
    (tmp_path / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1n.nii.gz").write_bytes(b"")
    if with_csv:
        (tmp_path / "survival_info.csv").write_text("Brats20ID,Age,Survival_days\nX,60,400\n")
    with pytest.raises(InputError, match="2023's BraTS-GLI"):
        build_manifest("brats", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)


@pytest.mark.parametrize("release", ["2020", "2019"])
def test_a_folder_that_is_not_a_case_is_said(tmp_path, release):
    """A case folder renamed by a second download (``<case> (1)``) vanished: no QC row,
    at most a survival row's "no case folder"."""
    import shutil

    plan = write_brats(tmp_path, n_cases=8, seed=1, release=release)
    case = plan.cases[0]
    folder = next(p for p in tmp_path.rglob(case) if p.is_dir())
    renamed = folder.with_name(f"{case} (1)")
    shutil.move(folder, renamed)
    manifest = build_manifest("brats", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    assert case not in manifest["subject_id"].to_list()
    skipped = read_qc(tmp_path / "out").filter(pl.col("path") == str(renamed))
    assert sorted(skipped["modality"]) == sorted(SEQS)
    assert skipped["reason"][0].startswith(f"folder '{case} (1)' skipped: not a case")


def test_a_moved_download_keeps_every_sequences_view(tmp_path):
    """Every sequence's view held the other sequences' mask paths, absolute: a download
    moved with its times (cp -a) reran every sequence's stage-1 jobs, and a new mask of
    one sequence reran the others'."""
    import shutil

    from mmpipe.cohorts.manifest_views import modality_view_digest

    def views(root, out):
        build_manifest("brats", _cfg(root), out, base_dir=root)
        return {seq: modality_view_digest(out, seq) for seq in SEQS}

    write_brats(tmp_path / "a" / "data", n_cases=8, seed=1, release="2020")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2: the files' times come along
    assert views(tmp_path / "b" / "data", tmp_path / "out_b") == \
        views(tmp_path / "a" / "data", tmp_path / "out_a")


def test_blank_rows_of_the_survival_csv_are_left_out(tmp_path):
    """Excel's trailing ``,,,`` rows: two stopped the build as "case(s) listed twice:
    [None]", one read as "survival row of None skipped". A row without an ID that holds
    values is a QC row naming its number."""
    plan = write_brats(tmp_path, n_cases=8, seed=1)
    csv = tmp_path / "survival_info.csv"
    text = csv.read_text()
    n_rows = len(text.strip().splitlines()) - 1
    width = text.splitlines()[0].count(",")
    # and a blank line of fewer commas, and one of spaces: no row of data, not a row
    # of another field count
    csv.write_text(text.rstrip("\n") + "\n" + ("," * width + "\n") * 2
                   + ",61," + "," * (width - 2) + "\n" + ",\n" + "   \n")
    manifest = build_manifest("brats", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    assert set(manifest["subject_id"]) <= set(plan.cases)
    qc = read_qc(tmp_path / "out")
    assert not qc["reason"].str.contains("None").any()
    said = qc.filter(pl.col("reason").str.contains("holds values but no case ID"))
    assert said["reason"].to_list() == [f"data row {n_rows + 3} of survival_info.csv (the "
                                        "header not counted) holds values but no case ID: "
                                        "skipped"]


def test_a_stray_file_beside_a_rejected_or_missing_sequence_keeps_the_verdict(tmp_path):
    """The encoders read the last adapter row of a subject's modality as its verdict: a
    stray file's note, written after the verdict, made a case whose two T1 files the
    adapter had rejected "absent, file notes.txt skipped", and the rejection was lost
    from qc.parquet and the stage-1 summary."""
    import numpy as np

    from mmpipe.encode.inputs import gather_inputs
    from mmpipe.report.stage1 import write_cohort_qc
    from mmpipe.store import FeatureStoreWriter

    root = tmp_path / "brats"
    plan = write_brats(root, n_cases=10, seed=2)
    for case in (plan.two_t1_files, plan.no_t2):
        (root / case / "notes.txt").write_text("x")
    out = tmp_path / "out"
    build_manifest("brats", _cfg(root), out, base_dir=root)
    stores = []
    for seq in ("t1", "t2"):
        items = {i.subject_id: i for i in gather_inputs(out, seq, "volume")}
        assert items[plan.two_t1_files if seq == "t1" else plan.no_t2].status == (
            "rejected" if seq == "t1" else "absent")
        rejected = items[plan.two_t1_files]
        if seq == "t1":
            assert f"{plan.two_t1_files}_t1.nii.gz" in rejected.reason, rejected.reason
        else:
            assert "no " in items[plan.no_t2].reason and "notes.txt" not in items[
                plan.no_t2].reason
        path = tmp_path / f"{seq}.zarr"
        with FeatureStoreWriter(path, list(items), (2,), {"modality": seq,
                                                         "encoder": "e"}) as w:
            for sid, item in items.items():
                if item.status == "ok":
                    w.write(sid, np.zeros(2))
                else:
                    w.mark(sid, item.status, item.reason)
            w.commit()
        stores.append(path)
    qc = write_cohort_qc(out / "qc" / "adapter.parquet", stores, tmp_path / "qc.parquet",
                         tmp_path / "summary.md")
    summary = (tmp_path / "summary.md").read_text()
    assert f"| {plan.two_t1_files} | t1 | e | 2 files of t1" in summary
    assert qc.filter((pl.col("subject_id") == plan.two_t1_files) & (pl.col("modality") == "t1")
                     & (pl.col("status") == "rejected")).height == 1
    # the stray file's note, whose text holds a "|", is one row of its table
    note = next(x for x in summary.splitlines() if "notes.txt" in x)
    assert note.count(" | ") == 3 and "&lt;t1\\|t1ce" in note, note


def test_files_named_in_another_case_are_read(tmp_path):
    """``_T1.nii.gz`` and ``.NII.GZ``, which the volume readers take, read as no file of
    the sequence (missing by nature); a case whose every file was so named vanished."""
    plan = write_brats(tmp_path, n_cases=9, seed=1)
    upper_t1, all_upper = plan.cases[0], plan.cases[-1]
    (tmp_path / upper_t1 / f"{upper_t1}_t1.nii.gz").rename(
        tmp_path / upper_t1 / f"{upper_t1}_T1.nii.gz")
    for f in (tmp_path / all_upper).iterdir():
        f.rename(f.with_name(f.name.replace(".nii.gz", ".NII.GZ")))
    manifest = build_manifest("brats", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    assert _row(manifest, upper_t1)["t1_path"].endswith("_T1.nii.gz")
    row = _row(manifest, all_upper)
    assert all(row[f"{seq}_path"].endswith(f"_{seq}.NII.GZ") for seq in SEQS)
    assert row[mask_column("t1")].endswith("_seg.NII.GZ")


def test_a_nested_case_folder_and_a_folder_named_as_a_file_are_said(tmp_path):
    """An archive extracted into ``<case>/<case>/`` vanished without a row; a folder
    ``<case>_t1.nii`` (a file extracted into one) read as no T1, missing by nature."""
    import shutil

    plan = write_brats(tmp_path, n_cases=9, seed=1)
    nested, foldered = plan.cases[0], plan.cases[-1]
    shutil.move(tmp_path / nested, tmp_path / "tmp")
    (tmp_path / nested).mkdir()
    shutil.move(tmp_path / "tmp", tmp_path / nested / nested)
    t1 = tmp_path / foldered / f"{foldered}_t1.nii.gz"
    t1.rename(tmp_path / "x")
    t1.mkdir()
    (tmp_path / "x").rename(t1 / "inner.nii.gz")
    manifest = build_manifest("brats", _cfg(tmp_path), tmp_path / "out", base_dir=tmp_path)
    qc = read_qc(tmp_path / "out")
    assert nested not in manifest["subject_id"].to_list()
    said = qc.filter(pl.col("path") == str(tmp_path / nested))
    assert sorted(said["modality"]) == sorted(SEQS)
    assert said["reason"][0].startswith(f"folder '{nested}' skipped: not a case")
    assert _row(manifest, foldered)["t1_path"] is None
    verdict = qc.filter((pl.col("subject_id") == foldered) & (pl.col("modality") == "t1"))
    assert verdict["status"].to_list() == ["rejected"]
    assert "is a folder, not a NIfTI file" in verdict["reason"][0]
