"""The ixi adapter on a miniature IXI download (real names, NIfTI-1 gz, Excel 97 IXI.xls)
with the release's oddities planted by :func:`mmpipe.cohorts.demo.ixi.write_ixi`."""

import copy
import re
from pathlib import Path

import nibabel as nib
import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.demo.ixi import write_ixi
from mmpipe.cohorts.ixi import age_group
from mmpipe.errors import ConfigError, InputError


def _cfg(root, **over):
    cfg = {"adapter": "ixi", "root": str(root), "labels": ["sex", "age_group"],
           "ixi": {"age_bins": [20, 40, 60, 90]},
           "modalities": {seq: {"kind": "volume", "encoders": ["med3d_demo"]}
                          for seq in ("t1", "t2", "pd", "mra")}
           | {"demographics": {"kind": "table", "encoders": ["tabular"],
                               "fields": ["HEIGHT", "WEIGHT"]}}}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def ixi(tmp_path_factory):
    root = tmp_path_factory.mktemp("ixi")
    plan = write_ixi(root, n_subjects=10, seed=3)
    manifest = build_manifest("ixi", _cfg(root), root / "out", base_dir=root)
    return root, plan, manifest, read_qc(root / "out")


def _row(manifest, sid):
    return manifest.filter(pl.col("subject_id") == sid).row(0, named=True)


def test_layout_is_read_with_its_natural_missingness(ixi):
    root, plan, manifest, _ = ixi
    # a row without images stays through its demographics (a table modality)
    assert set(manifest["subject_id"]) == set(plan.subjects)
    kept = set(plan.subjects) - {plan.no_image}
    for seq in ("t1", "t2", "pd", "mra"):
        for sid in kept - {plan.two_t1_files}:
            path = _row(manifest, sid)[f"{seq}_path"]
            if sid in plan.files[seq]:
                assert path.endswith(plan.files[seq][sid])
                assert nib.load(path).shape == (32, 32, 12)   # NIfTI (x, y, z)
            else:
                assert path is None
    ok = next(s for s in kept if s not in (plan.conflicting_rows, plan.no_row, plan.no_age))
    row = _row(manifest, ok)
    assert row["sex"] == plan.sex[ok]
    assert row["age_group"] == age_group(plan.age[ok], [20, 40, 60, 90])
    assert row["site"] in ("Guys", "HH", "IOP") and row["HEIGHT"] is not None


def test_duplicate_rows_merged_or_blanked_never_chosen(ixi):
    _, plan, manifest, qc = ixi
    merged = qc.filter((pl.col("subject_id") == plan.merged_rows) & (pl.col("status") == "merged"))
    assert merged.height == 1 and "2 rows in IXI.xls merged" in merged["reason"][0]
    assert _row(manifest, plan.merged_rows)["sex"] == plan.sex[plan.merged_rows]
    conflict = qc.filter(pl.col("status") == "conflict")
    assert conflict["subject_id"].to_list() == [plan.conflicting_rows]
    assert any(f"SEX_ID (1=m, 2=f): {a} vs {b}" in conflict["reason"][0]
               for a, b in (("1", "2"), ("2", "1")))
    assert _row(manifest, plan.conflicting_rows)["sex"] is None


def test_missing_rows_ages_and_images_are_recorded(ixi):
    _, plan, manifest, qc = ixi
    assert _row(manifest, plan.no_row)["sex"] is None          # images, no row: unlabelled
    assert _row(manifest, plan.no_age)["age_group"] is None
    assert _row(manifest, plan.no_age)["sex"] == plan.sex[plan.no_age]
    assert all(_row(manifest, plan.no_image)[f"{q}_path"] is None
               for q in ("t1", "t2", "pd", "mra"))


def test_a_row_without_images_or_table_is_excluded(ixi, tmp_path):
    root, plan, _, _ = ixi
    cfg = _cfg(root)
    del cfg["modalities"]["demographics"]
    manifest = build_manifest("ixi", cfg, tmp_path, base_dir=root)
    assert plan.no_image not in manifest["subject_id"].to_list()
    qc = read_qc(tmp_path)
    excluded = qc.filter((pl.col("subject_id") == plan.no_image) & (pl.col("status") == "excluded"))
    assert excluded.height == 1


def test_odd_files_are_skipped_or_rejected_by_name(ixi):
    _, plan, manifest, qc = ixi
    skipped = qc.filter(pl.col("status") == "skipped")
    assert sorted(skipped["path"].to_list()) == sorted(plan.stray_files)
    assert any("a T2 file in IXI-T1/" in r for r in skipped["reason"])
    two = qc.filter((pl.col("subject_id") == plan.two_t1_files) & (pl.col("modality") == "t1"))
    assert two["status"].to_list() == ["rejected"] and "2 files in IXI-T1/" in two["reason"][0]
    assert _row(manifest, plan.two_t1_files)["t1_path"] is None
    unused = set(qc.filter(pl.col("status") == "unused")["reason"].to_list())
    assert any("'DOB'" in r for r in unused) and not any("'HEIGHT'" in r for r in unused)


def test_config_and_layout_errors_name_what_is_wrong(ixi, tmp_path):
    root, _, _, _ = ixi
    with pytest.raises(ConfigError, match="age_bins"):
        build_manifest("ixi", _cfg(root, ixi={}), tmp_path / "a", base_dir=root)
    with pytest.raises(ConfigError, match="derives"):
        build_manifest("ixi", _cfg(root, labels=["diagnosis"]), tmp_path / "b", base_dir=root)
    bad = _cfg(root)
    bad["modalities"] = {"flair": {"kind": "volume", "encoders": []}}
    with pytest.raises(ConfigError, match="no modality 'flair'"):
        build_manifest("ixi", bad, tmp_path / "c", base_dir=root)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "IXI.xls").write_text("IXI_ID,AGE\n2,30\n")   # a CSV renamed .xls
    with pytest.raises(InputError, match="not a readable .xls"):
        build_manifest("ixi", _cfg(tmp_path / "r"), tmp_path / "d", base_dir=root)
    # a download cut short: xlrd's IndexError or struct.error named no file
    for size in (100, len((root / "IXI.xls").read_bytes()) // 2):
        (tmp_path / "r" / "IXI.xls").write_bytes((root / "IXI.xls").read_bytes()[:size])
        with pytest.raises(InputError, match="not a readable .xls workbook") as err:
            build_manifest("ixi", _cfg(tmp_path / "r"), tmp_path / "d", base_dir=root)
        assert err.value.path == str(tmp_path / "r" / "IXI.xls")
    only_xls = copy.deepcopy(_cfg(tmp_path / "r"))
    (tmp_path / "r" / "IXI.xls").write_bytes((root / "IXI.xls").read_bytes())
    with pytest.raises(InputError, match="IXI-T1/ of modality 't1' not found"):
        build_manifest("ixi", only_xls, tmp_path / "e", base_dir=root)


def test_age_bins_are_left_closed():
    assert age_group(40.0, [20, 40, 60]) == "40-60"
    assert age_group(19.9, [20, 40, 60]) is None and age_group(60.0, [20, 40, 60]) is None


def test_odd_spreadsheet_values_are_blanked_with_a_reason(ixi, tmp_path):
    """Texts in a numeric column reach the manifest's non-numeric check (never a silent
    cast); an age that is no number and a sex code that is neither 1 nor 2 blank the
    label with a QC row."""
    import xlwt

    root, plan, _, _ = ixi
    (tmp_path / "IXI-T1").mkdir()
    rows = [(2, 1, 180.0, 45.5), (3, "m", "175 cm", "unknown"), (4, 2, 165.0, 101.0),
            (5, 1, 170.0, " 33 "), (6, "2", 160.0, "52.5"), ("", 1, 150.0, 40.0),
            ("IXI007", 1, 150.0, 40.0), (2.5, 2, 150.0, 40.0)]
    book = xlwt.Workbook()
    sheet = book.add_sheet("Table")
    for c, name in enumerate(("IXI_ID", "SEX_ID (1=m, 2=f)", "HEIGHT", "AGE")):
        sheet.write(0, c, name)
    t1 = next(iter(plan.files["t1"].values()))
    for r, row in enumerate(rows, start=1):
        for c, v in enumerate(row):
            sheet.write(r, c, v)
        if isinstance(row[0], int):
            (tmp_path / "IXI-T1" / f"IXI{row[0]:03d}-Guys-0001-T1.nii.gz").write_bytes(
                (root / "IXI-T1" / t1).read_bytes())
    book.save(str(tmp_path / "IXI.xls"))
    cfg = _cfg(tmp_path)
    cfg["modalities"] = {"t1": {"kind": "volume", "encoders": []},
                         "demographics": {"kind": "table", "encoders": [], "fields": ["HEIGHT"]}}
    manifest = build_manifest("ixi", cfg, tmp_path / "out", base_dir=tmp_path)
    qc = read_qc(tmp_path / "out")
    odd = _row(manifest, "IXI003")
    assert odd["sex"] is None and odd["age_group"] is None and odd["HEIGHT"] is None
    reasons = qc.filter(pl.col("subject_id") == "IXI003")["reason"].to_list()
    assert "SEX_ID (1=m, 2=f) value 'm' is not 1 or 2" in reasons
    assert "AGE value 'unknown' is not a number" in reasons
    assert any("'175 cm'" in r for r in reasons)                 # the manifest's non_numeric row
    assert _row(manifest, "IXI004")["age_group"] is None        # 101 is past the last edge
    assert "age 101 is outside ixi.age_bins [20.0, 40.0, 60.0, 90.0]" in \
        qc.filter(pl.col("subject_id") == "IXI004")["reason"].to_list()
    assert _row(manifest, "IXI002")["HEIGHT"] == 180.0
    # an age typed as text is the number it says, as a sex code typed as text is
    assert _row(manifest, "IXI005")["age_group"] == "20-40"
    assert _row(manifest, "IXI006")["age_group"] == "40-60"
    assert _row(manifest, "IXI006")["sex"] == "female"
    # a row with values and no ID was dropped as an empty line
    assert "row 7 of IXI.xls holds values but no IXI_ID: skipped" in \
        qc.filter(pl.col("subject_id") == "*")["reason"].to_list()
    # an ID that is text or a fraction is its row's QC record: it failed the whole
    # cohort, or (2.5) was truncated into IXI002's rows
    assert {"row 8 of IXI.xls: IXI_ID 'IXI007' is not a whole number: skipped",
            "row 9 of IXI.xls: IXI_ID 2.5 is not a whole number: skipped"} <= \
        set(qc.filter(pl.col("subject_id") == "*")["reason"].to_list())
    assert _row(manifest, "IXI002")["sex"] == "male"


def test_brain_masks_become_each_sequences_mask_column(tmp_path, caplog):
    """Skull stripping reads the user's brain masks (HD-BET 1.x's <name>_mask or 2.x's
    <name>_bet, which was never found, nothing said); a volume without one gets no mask,
    which a mask_out encoder then rejects."""
    import shutil

    root = tmp_path / "IXI"
    plan = write_ixi(root, n_subjects=8, seed=5)
    masks = root / "masks"
    masks.mkdir()
    with_mask = [sid for sid, name in plan.files["t1"].items()][:2]
    for sid, suffix in zip(with_mask, ("_mask.nii.gz", "_bet.nii.gz"), strict=True):
        name = plan.files["t1"][sid].removesuffix(".nii.gz")
        shutil.copy(root / "IXI-T1" / plan.files["t1"][sid], masks / f"{name}{suffix}")
    with caplog.at_level("WARNING", logger="mmpipe.cohorts.ixi"):
        manifest = build_manifest("ixi", _cfg(root, ixi={"age_bins": [20, 40, 60, 90],
                                                          "brain_masks": "masks"}),
                                  tmp_path / "out", base_dir=tmp_path)
    got = {r["subject_id"]: r["t1_mask_path"] for r in manifest.iter_rows(named=True)}
    assert got[with_mask[0]].endswith("_mask.nii.gz") and got[with_mask[1]].endswith(
        "_bet.nii.gz")
    assert sum(v is not None for v in got.values()) == len(with_mask)
    assert manifest["t2_mask_path"].null_count() == len(manifest)
    # HD-BET 1.x told to write X_bet.nii.gz: that is the stripped volume, its mask beside it
    from mmpipe.cohorts.ixi import _brain_mask

    for name in ("IXI999-T1_bet.nii.gz", "IXI999-T1_bet_mask.nii.gz"):
        (masks / name).write_bytes(b"")
    assert _brain_mask(masks, "IXI999-T1.nii.gz").endswith("IXI999-T1_bet_mask.nii.gz")
    # a sequence none of whose volumes has a mask is said
    assert "no brain mask in" in caplog.text and " t2 volumes" in caplog.text
    assert " t1 volumes" not in caplog.text
    with pytest.raises(InputError, match="brain_masks: folder not found"):
        build_manifest("ixi", _cfg(root, ixi={"age_bins": [20, 40], "brain_masks": "nope"}),
                       tmp_path / "o2", base_dir=tmp_path)


@pytest.mark.parametrize("field,label", [("SEX_ID (1=m, 2=f)", "sex"), ("AGE", "age_group"),
                                         ("DOB", "age_group")])
def test_a_column_a_label_is_derived_from_is_not_an_input(ixi, tmp_path, field, label):
    root, _, _, _ = ixi
    cfg = _cfg(root)
    cfg["modalities"]["demographics"]["fields"] = ["HEIGHT", field]
    with pytest.raises(ConfigError, match=f"field '{re.escape(field)}' is what label '{label}'"):
        build_manifest("ixi", cfg, tmp_path, base_dir=root)


def test_an_error_cell_is_a_blank_not_its_error_code(tmp_path):
    """xlrd gives an error cell (#N/A, #VALUE!) its code as its value: 42 and 15 were read
    as an age and a height."""
    import xlwt

    from mmpipe.cohorts.ixi import AGE_COLUMN, ID_COLUMN, SEX_COLUMN, read_table

    book = xlwt.Workbook()
    table = book.add_sheet("Table")
    for c, name in enumerate([ID_COLUMN, SEX_COLUMN, AGE_COLUMN, "HEIGHT"]):
        table.write(0, c, name)
    table.write(1, 0, 2)
    table.write(1, 1, 1)
    table.row(1).set_cell_error(2, "#N/A!")   # xlwt's spelling of #N/A (code 42)
    table.row(1).set_cell_error(3, 15)        # another error code
    book.save(str(tmp_path / "IXI.xls"))
    (row,) = read_table(tmp_path / "IXI.xls")
    assert row[AGE_COLUMN] is None and row["HEIGHT"] is None and row[ID_COLUMN] == 2.0


def test_a_sequence_extracted_one_folder_too_deep_is_named_not_missing(ixi, tmp_path):
    """An archiver that extracts IXI-T2.tar into IXI-T2/IXI-T2/ left T2 absent for every
    subject, "missing by nature", without a word; a folder beside the files is a QC row."""
    import shutil

    root, _, _, _ = ixi
    copy_root = tmp_path / "IXI"
    shutil.copytree(root, copy_root, ignore=shutil.ignore_patterns("out"))
    t2 = copy_root / "IXI-T2"
    shutil.move(t2, tmp_path / "IXI-T2")
    t2.mkdir()
    shutil.move(tmp_path / "IXI-T2", t2 / "IXI-T2")
    with pytest.raises(InputError, match=r"folder IXI-T2/ of modality 't2' holds no "
                                         r"IXI<ID>-<Site>-<n>-T2.nii.gz file; it holds the "
                                         r"folder\(s\) \['IXI-T2'\]") as err:
        build_manifest("ixi", _cfg(copy_root), tmp_path / "a", base_dir=copy_root)
    assert err.value.path == str(t2)
    for p in (t2 / "IXI-T2").iterdir():  # the files moved up; an extra folder stays
        shutil.move(p, t2 / p.name)
    build_manifest("ixi", _cfg(copy_root), tmp_path / "b", base_dir=copy_root)
    skipped = read_qc(tmp_path / "b").filter(pl.col("path") == str(t2 / "IXI-T2"))
    assert skipped["status"].to_list() == ["skipped"]
    assert skipped["reason"][0].startswith("a folder in IXI-T2/ (its files are not read")


def test_a_field_with_text_keeps_every_digit_of_its_numbers():
    """A field with one text cell is written as text; its numbers went through ``:g``,
    six significant digits, and were read back as other numbers."""
    from mmpipe.cohorts.ixi import _field_column

    assert _field_column([45.123456789, 1234567.0, 2.0, "n/k", None]) == [
        "45.123456789", "1234567", "2", "n/k", None]


def test_a_spreadsheet_column_named_twice_is_refused(tmp_path):
    """A row's values were keyed by header name: of a column named twice the last copy
    was read, without a word."""
    import xlwt

    from mmpipe.cohorts.ixi import read_table

    book = xlwt.Workbook()
    sheet = book.add_sheet("Table")
    for c, name in enumerate(("IXI_ID", "SEX_ID (1=m, 2=f)", "AGE", "AGE")):
        sheet.write(0, c, name)
    for c, v in enumerate((2, 1, 45.5, 46.0)):
        sheet.write(1, c, v)
    book.save(str(tmp_path / "IXI.xls"))
    with pytest.raises(InputError, match=r"IXI\.xls: the header names column\(s\) \['AGE'\]"):
        read_table(tmp_path / "IXI.xls")


@pytest.mark.parametrize("rename", [lambda n: n.replace(".nii.gz", " (1).nii.gz"),
                                    lambda n: n.replace("IXI", "ixi", 1)])
def test_a_renamed_copy_is_the_subjects_rejected_file_not_a_missing_one(ixi, tmp_path, rename):
    """A T1 saved as "IXI013-...-T1 (1).nii.gz" (or "ixi013-...") left the subject's T1
    absent, "no file in IXI-T1/", which counts as missing by nature; the skipped row named
    no subject."""
    import shutil

    root, plan, _, _ = ixi
    copy_root = tmp_path / "IXI"
    shutil.copytree(root, copy_root, ignore=shutil.ignore_patterns("out"))
    manifest = build_manifest("ixi", _cfg(copy_root), tmp_path / "a", base_dir=copy_root)
    sid = next(s for s in manifest.filter(pl.col("t1_path").is_not_null())["subject_id"])
    original = next(p for p in (copy_root / "IXI-T1").iterdir()
                    if p.name.startswith(f"{sid}-") and p.name.endswith("-T1.nii.gz"))
    renamed = original.with_name(rename(original.name))
    original.rename(renamed)
    manifest = build_manifest("ixi", _cfg(copy_root), tmp_path / "b", base_dir=copy_root)
    qc = read_qc(tmp_path / "b")
    assert _row(manifest, sid)["t1_path"] is None
    t1 = qc.filter((pl.col("subject_id") == sid) & (pl.col("modality") == "t1"))
    assert t1["status"].to_list() == ["rejected"]
    assert t1["reason"][0] == (f"only {renamed.name} in IXI-T1/: name does not follow "
                               "IXI<ID>-<Site>-<n>-<SEQ>.nii.gz")


def test_an_id_whose_files_name_two_sites_is_rejected_naming_them(ixi, tmp_path):
    """IXI018-Guys-...-T1 beside IXI018-HH-...-T2: one ID of two scans that disagree was
    kept as one subject at the first site found, with nothing said."""
    import shutil

    root, _, _, _ = ixi
    copy_root = tmp_path / "IXI"
    shutil.copytree(root, copy_root, ignore=shutil.ignore_patterns("out"))
    t1 = {p.name.split("-")[0]: p for p in (copy_root / "IXI-T1").glob("IXI*-T1.nii.gz")}
    t2 = next(p for p in sorted((copy_root / "IXI-T2").glob("IXI*-T2.nii.gz"))
              if p.name.split("-")[0] in t1)
    sid, site = t2.name.split("-")[:2]
    other = next(s for s in ("Guys", "HH", "IOP") if s != site)
    moved = t2.with_name(t2.name.replace(f"-{site}-", f"-{other}-"))
    t2.rename(moved)
    manifest = build_manifest("ixi", _cfg(copy_root), tmp_path / "out", base_dir=copy_root)
    row = _row(manifest, sid)
    assert row["t1_path"] is None and row["t2_path"] is None and row["site"] is None
    qc = read_qc(tmp_path / "out").filter(pl.col("subject_id") == sid)
    for seq, path in (("t1", t1[sid]), ("t2", moved)):
        (reason,) = qc.filter(pl.col("modality") == seq)["reason"]
        assert reason.startswith("files of this ID name sites") and path.name in reason


def test_a_date_cell_is_read_as_the_text_dates_are(tmp_path):
    """IXI.xls writes DOB as text, 1968-02-22, but as a date cell for IXI219 and IXI662:
    xlrd gives a date cell its day count, and a DOB field read 23809 beside 1968-02-22."""
    import datetime as dt

    import xlwt

    from mmpipe.cohorts.ixi import AGE_COLUMN, ID_COLUMN, SEX_COLUMN, read_table

    book = xlwt.Workbook()
    table = book.add_sheet("Table")
    for c, name in enumerate([ID_COLUMN, SEX_COLUMN, AGE_COLUMN, "DOB", "STUDY_DATE"]):
        table.write(0, c, name)
    day = xlwt.easyxf(num_format_str="DD/MM/YYYY")
    for r, (dob, study) in enumerate([("1968-02-22", dt.date(2005, 7, 1)),
                                      (dt.date(1965, 3, 8), dt.datetime(2005, 8, 2, 14, 30))],
                                     start=1):
        for c, value in enumerate([r, 1, 40.5]):
            table.write(r, c, value)
        table.write(r, 3, dob, day if isinstance(dob, dt.date) else xlwt.Style.default_style)
        table.write(r, 4, study, day)
    book.save(str(tmp_path / "IXI.xls"))
    rows = read_table(tmp_path / "IXI.xls")
    assert [(r["DOB"], r["STUDY_DATE"]) for r in rows] == [
        ("1968-02-22", "2005-07-01"), ("1965-03-08", "2005-08-02 14:30:00")]


def test_brain_masks_rerun_only_the_stores_that_read_them(tmp_path):
    """Masks added for one sequence changed every sequence's view, and so reran every
    volume store of the cohort, those whose transform reads no mask included."""
    import shutil

    from mmpipe.cohorts.manifest_views import modality_view_digest

    root = tmp_path / "IXI"
    plan = write_ixi(root, n_subjects=8, seed=5)
    out = tmp_path / "out"
    build_manifest("ixi", _cfg(root), out, base_dir=tmp_path)
    before = {(seq, m): modality_view_digest(out, seq, m) for seq in ("t1", "t2")
              for m in (False, True)}
    masks = root / "masks"
    masks.mkdir()
    sid = next(iter(plan.files["t1"]))
    name = plan.files["t1"][sid].removesuffix(".nii.gz")
    shutil.copy(root / "IXI-T1" / plan.files["t1"][sid], masks / f"{name}_mask.nii.gz")
    build_manifest("ixi", _cfg(root, ixi={"age_bins": [20, 40, 60, 90],
                                          "brain_masks": "masks"}), out, base_dir=tmp_path)
    after = {(seq, m): modality_view_digest(out, seq, m) for seq in ("t1", "t2")
             for m in (False, True)}
    assert after[("t1", False)] == before[("t1", False)]
    assert after[("t2", False)] == before[("t2", False)]
    assert after[("t1", True)] != before[("t1", True)]  # a skull-stripping store's


def test_only_an_encoder_that_reads_the_adapters_mask_carries_it_in_its_view(tmp_path,
                                                                               monkeypatch):
    """The view every stage-1 job of a modality carried held its mask column: shards,
    prompts and encoders that read no mask reran on a mask's change."""
    import mmpipe.cohorts.manifest_views as views
    from mmpipe.config import load_config_layers
    from mmpipe.params import manifest_view

    repo = Path(__file__).resolve().parents[2]
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("encoders:\n  med3d_resnet18: {allow_random_init: true}\n"
                       "  med3d_stripped: {type: med3d, allow_random_init: true,\n"
                       "                   transform: {mask_out: true}}\n"
                       "cohorts:\n  ixi:\n    ixi: {brain_masks: masks}\n    modalities:\n"
                       "      t1: {kind: volume, encoders: [med3d_resnet18, med3d_stripped]}\n")
    cfg = load_config_layers([repo / "config.yaml", repo / "experiments" / "ixi_mmare.yaml",
                              overlay])
    asked = []
    monkeypatch.setattr(views, "modality_view_digest",
                        lambda out, m, with_mask=True: asked.append((m, with_mask)) or "")
    manifest_view(cfg, "ixi", "t1", "med3d_stripped")
    manifest_view(cfg, "ixi", "t1", "med3d_resnet18")
    manifest_view(cfg, "ixi", "t1")  # a shard's, a segment job's
    assert asked == [("t1", True), ("t1", False), ("t1", False)]
