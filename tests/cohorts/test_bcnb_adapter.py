"""The bcnb adapter on a miniature BCNB download (plain JPEG slides, the .xlsx clinical
table, the release's split files) with oddities planted by
:func:`mmpipe.cohorts.demo.bcnb.write_bcnb`."""

import polars as pl
import pytest

from mmpipe.cohorts import build_manifest, read_qc
from mmpipe.cohorts.demo.bcnb import write_bcnb
from mmpipe.errors import ConfigError

FIELDS = ["Age(years)", "Tumour Size(cm)", "ER", "PR", "HER2", "Ki67"]


def _cfg(root, **over):
    cfg = {"adapter": "bcnb", "root": str(root), "labels": ["aln_metastasis", "aln_status"],
           "modalities": {"wsi": {"kind": "slide", "encoders": ["clam_resnet50"]},
                          "clinical": {"kind": "table", "encoders": ["tabular"],
                                       "fields": FIELDS}}}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def bcnb(tmp_path_factory):
    root = tmp_path_factory.mktemp("BCNB")
    plan = write_bcnb(root, n_patients=12, seed=3)
    manifest = build_manifest("bcnb", _cfg(root), root / "out", base_dir=root)
    return root, plan, manifest, read_qc(root / "out")


def _row(manifest, sid):
    return manifest.filter(pl.col("subject_id") == sid).row(0, named=True)


def test_slides_labels_fields_and_the_release_split(bcnb):
    _, plan, manifest, qc = bcnb
    assert set(manifest["subject_id"]) == set(plan.patients)
    for sid in plan.patients:
        row = _row(manifest, sid)
        assert row["aln_status"] == plan.aln[sid]
        if plan.aln[sid] is not None:
            assert row["aln_metastasis"] == ("negative" if plan.aln[sid] == "N0" else "positive")
            assert row["split"] == plan.split[sid]
    ok = _row(manifest, plan.patients[0])
    assert ok["wsi_path"].endswith("WSIs/1.jpg") and ok["Age(years)"] is not None
    # Ki67, a fraction written as text in the release, is a number; its ranges and
    # bounds ("30-40%", "＜5%") are not, blanked with a QC row naming the value
    assert 0 < ok["Ki67"] < 1
    for sid, text in plan.ki67_ranges.items():
        assert _row(manifest, sid)["Ki67"] is None
        why = qc.filter((pl.col("subject_id") == sid) & (pl.col("status") == "non_numeric"))
        assert text in why["reason"].item()


def test_oddities_are_kept_or_skipped_with_a_reason(bcnb):
    _, plan, manifest, qc = bcnb
    assert _row(manifest, plan.no_slide)["wsi_path"] is None  # its clinical record stays
    assert _row(manifest, plan.no_row)["aln_status"] is None
    why = {r["subject_id"]: r["reason"]
           for r in qc.filter(pl.col("modality") == "label").iter_rows(named=True)}
    assert "'N1' is not one of" in why[plan.bad_aln]
    assert "no row in patient-clinical-data.xlsx" in why[plan.no_row]
    skipped = qc.filter(pl.col("status") == "skipped")
    assert skipped["path"].to_list() == [plan.stray_file]


def test_a_field_that_gives_the_label_away_is_refused(bcnb):
    root, _, _, _ = bcnb
    cfg = _cfg(root)
    cfg["modalities"]["clinical"]["fields"] = ["Age(years)", "Number of lymph node metastases"]
    with pytest.raises(ConfigError, match="'Number of lymph node metastases' is what label "
                       "'aln_status' is derived from: it cannot be an input"):
        build_manifest("bcnb", cfg, root / "o2", base_dir=root)
    # the surgery follows the nodes' status: an axillary dissection after a positive
    # sentinel node
    cfg["modalities"]["clinical"]["fields"] = ["Age(years)", "Surgical"]
    with pytest.raises(ConfigError, match="'Surgical' is what label 'aln_metastasis'"):
        build_manifest("bcnb", cfg, root / "o2", base_dir=root)


def test_splits_drawn_per_seed_when_asked(bcnb):
    root, plan, _, _ = bcnb
    manifest = build_manifest("bcnb", _cfg(root, bcnb={"split": "none"}), root / "o3",
                              base_dir=root)
    assert "split" not in manifest.columns and len(manifest) == len(plan.patients)


def test_two_files_of_one_slide_number_are_rejected_not_chosen(bcnb, tmp_path):
    """``1.jpg`` and ``01.jpg`` are one patient's: the later replaced the earlier."""
    import shutil

    root, _, manifest, _ = bcnb
    copy = tmp_path / "BCNB"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("out", "o*"))
    sid = manifest.filter(pl.col("wsi_path").is_not_null())["subject_id"][0]
    shutil.copy(copy / "WSIs" / f"{sid}.jpg", copy / "WSIs" / f"0{sid}.jpg")
    out = build_manifest("bcnb", _cfg(copy), copy / "out", base_dir=copy)
    assert _row(out, sid)["wsi_path"] is None
    qc = read_qc(copy / "out")
    why = qc.filter((pl.col("subject_id") == sid) & (pl.col("modality") == "wsi"))
    assert why["status"].to_list() == ["rejected"]
    assert f"0{sid}.jpg" in why["reason"][0] and f" {sid}.jpg" in why["reason"][0]
    assert why["path"].to_list() == [str(copy / "WSIs")]   # the stage-1 summary's file


def test_text_ids_with_zeros_meet_their_slides_and_a_row_without_an_id_is_said(bcnb,
                                                                               tmp_path):
    """A spreadsheet ID typed as text "001" became patient "001" beside slide 001.jpg's
    patient "1" (two subjects, one with the table, one with the slide); a row with
    values but no ID was dropped without a word (now a QC row, as IXI's)."""
    import shutil

    import openpyxl

    from mmpipe.cohorts.bcnb import SPREADSHEET
    root, _, manifest, _ = bcnb
    copy = tmp_path / "BCNB"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("out", "o*"))
    book = openpyxl.load_workbook(copy / SPREADSHEET)
    sheet = book.worksheets[0]
    first = sheet.cell(row=2, column=1)
    sid = str(first.value)
    first.value = sid.zfill(3)   # text
    book.save(copy / SPREADSHEET)
    out = build_manifest("bcnb", _cfg(copy), copy / "out", base_dir=copy)
    assert sorted(out["subject_id"]) == sorted(manifest["subject_id"])
    row = _row(out, sid)
    assert row["wsi_path"] is not None and row["Age(years)"] == _row(manifest, sid)["Age(years)"]
    sheet.cell(row=2, column=1).value = None
    book.save(copy / SPREADSHEET)
    out = build_manifest("bcnb", _cfg(copy), copy / "out2", base_dir=copy)
    qc = read_qc(copy / "out2").filter(pl.col("subject_id") == "*")
    assert f"row 2 of {SPREADSHEET} holds values but no 'Patient ID': skipped" in \
        qc["reason"].to_list()
    assert _row(out, sid)["aln_status"] is None      # its slide stays, without the row


def test_a_split_file_saved_with_a_byte_order_mark_reads_its_first_id(bcnb, tmp_path):
    """Notepad's byte-order mark made the first ID "\ufeff1", which no patient has."""
    import shutil

    from mmpipe.cohorts.bcnb import SPLIT_FILES, SPLIT_FOLDER

    root, plan, manifest, _ = bcnb
    copy = tmp_path / "BCNB"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("out"))
    test_ids = copy / SPLIT_FOLDER / SPLIT_FILES["test"]
    test_ids.write_text(test_ids.read_text(), encoding="utf-8-sig")
    again = build_manifest("bcnb", _cfg(copy), copy / "out", base_dir=copy)
    assert again["split"].to_list() == manifest["split"].to_list()


def test_slides_extracted_one_folder_too_deep_are_named_not_missing(bcnb, tmp_path):
    """WSIs/WSIs/1.jpg ... left every patient's slide absent without a word."""
    import shutil

    from mmpipe.errors import InputError

    root, _, _, _ = bcnb
    copy = tmp_path / "BCNB"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("out", "o*"))
    shutil.move(copy / "WSIs", tmp_path / "WSIs")
    (copy / "WSIs").mkdir()
    shutil.move(tmp_path / "WSIs", copy / "WSIs" / "WSIs")
    with pytest.raises(InputError, match=r"folder WSIs/ of modality 'wsi' holds no "
                                         r"<number>.jpg slide file; it holds the folder\(s\) "
                                         r"\['WSIs'\]"):
        build_manifest("bcnb", _cfg(copy), copy / "out", base_dir=copy)


def test_an_aln_status_typed_with_a_fullwidth_sign_is_its_class(bcnb, tmp_path):
    """``N+(＞2)`` (the BALNMP repository's spelling of its sample images) was an
    unknown value, blanking the patient's labels with a QC row."""
    import shutil

    import openpyxl

    from mmpipe.cohorts.bcnb import ALN_COLUMN, SPREADSHEET
    root, plan, manifest, _ = bcnb
    copy = tmp_path / "BCNB"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("out", "o*"))
    book = openpyxl.load_workbook(copy / SPREADSHEET)
    sheet = book.worksheets[0]
    header = [c.value for c in sheet[1]]
    column = header.index(ALN_COLUMN) + 1
    retyped = []
    for r in range(2, sheet.max_row + 1):
        if sheet.cell(row=r, column=column).value == "N+(>2)":
            sheet.cell(row=r, column=column).value = "N+(\uff1e2)"
            retyped.append(str(sheet.cell(row=r, column=1).value))
    assert retyped
    book.save(copy / SPREADSHEET)
    out = build_manifest("bcnb", _cfg(copy), copy / "out", base_dir=copy)
    for sid in retyped:
        assert _row(out, sid)["aln_status"] == "N+(>2)"
        assert _row(out, sid)["aln_metastasis"] == "positive"



def test_a_spreadsheet_column_named_twice_is_refused(bcnb, tmp_path):
    """dict(zip(header, row)) kept the last copy of a column named twice, without a word,
    where the CSV reader took the first."""
    import shutil

    import openpyxl

    from mmpipe.cohorts.bcnb import SPREADSHEET
    from mmpipe.errors import InputError

    root = bcnb[0]
    copy = tmp_path / "BCNB"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("out", "o*"))
    book = openpyxl.load_workbook(copy / SPREADSHEET)
    sheet = book.worksheets[0]
    sheet.cell(row=1, column=sheet.max_column + 1).value = "ER"
    book.save(copy / SPREADSHEET)
    with pytest.raises(InputError, match=r"names column\(s\) \['ER'\] more than once"):
        build_manifest("bcnb", _cfg(copy), copy / "out", base_dir=copy)


def test_rows_below_a_sheet_dimension_recorded_short_are_read(bcnb, tmp_path):
    """The read-only reader stops at the sheet's recorded <dimension>: a workbook whose
    writer recorded it short lost the patients below it, each then "no row" and unlabelled
    beside a slide."""
    import re
    import shutil
    import zipfile

    from mmpipe.cohorts.bcnb import SPREADSHEET, read_clinical

    root = bcnb[0]
    copy = tmp_path / "BCNB"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("out", "o*"))
    _, full, _ = read_clinical(root / SPREADSHEET)
    with zipfile.ZipFile(root / SPREADSHEET) as src, \
            zipfile.ZipFile(copy / SPREADSHEET, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data, n = re.subn(rb'<dimension ref="[^"]*"\s*/>', b'<dimension ref="A1:C4"/>',
                                  data)
                assert n == 1
            dst.writestr(item, data)
    _, table, _ = read_clinical(copy / SPREADSHEET)
    assert len(full) > 4 and table == full
