"""The stage-1 summary from the adapter's QC rows and the stores' statuses."""

from __future__ import annotations

from mmpipe.cohorts.manifest_files import NON_NUMERIC
from mmpipe.qc import qc_frame
from mmpipe.report.stage1 import write_cohort_qc


def test_a_blanked_value_of_a_field_two_tables_share_is_listed_once(tmp_path):
    """MMIST-ccRCC's clinical and genomic records can share a field; the summary counted
    the value once and listed it twice, once per modality."""
    reason = "age = '45y' is not a number"
    rows = [{"subject_id": "s1", "modality": m, "stage": "adapter", "status": NON_NUMERIC,
             "reason": reason} for m in ("clinical", "genomic")]
    rows.append({"subject_id": "s2", "modality": "clinical", "stage": "adapter",
                 "status": NON_NUMERIC, "reason": "age = 'old' is not a number"})
    qc_frame(rows).write_parquet(tmp_path / "adapter_qc.parquet")
    qc = write_cohort_qc(tmp_path / "adapter_qc.parquet", [], tmp_path / "qc.parquet",
                         tmp_path / "summary.md")
    summary = (tmp_path / "summary.md").read_text()
    assert "2 value(s) of 2 subject(s)" in summary
    assert summary.count(reason) == 1
    assert f"| s1 | clinical, genomic | {reason} |" in summary
    assert qc.height == 3   # the QC table keeps a row per modality


def _store(path, encoder, rejected_reason):
    import numpy as np

    from mmpipe.store import FeatureStoreWriter

    with FeatureStoreWriter(path, ["s1", "s2", "s3"], (2,),
                            {"modality": "ct", "encoder": encoder}) as w:
        w.write("s1", np.zeros(2))
        w.mark("s2", "rejected", rejected_reason)
        w.mark("s3", "absent", "no file")
        w.commit()
    return path


def _cohort_qc(tmp_path, rows: list[dict], rejected_reason: str):
    """qc.parquet's table and the summary's text of ``rows`` of adapter QC beside one
    med3d store of ct (:func:`_store`)."""
    qc_frame(rows).write_parquet(tmp_path / "adapter_qc.parquet")
    store = _store(tmp_path / "ct.zarr", "med3d", rejected_reason)
    qc = write_cohort_qc(tmp_path / "adapter_qc.parquet", [store], tmp_path / "qc.parquet",
                         tmp_path / "summary.md")
    return qc, (tmp_path / "summary.md").read_text()


def test_the_adapters_own_rows_of_an_encoded_modality_are_kept(tmp_path):
    """Every adapter row of a modality with a store was dropped as the store's: a folder
    the adapter skipped, a whole-cohort record, were in neither qc.parquet nor the
    summary. A store's ok and absent rows still stand for the adapter's present and
    absent ones."""
    rows = [{"subject_id": "s1", "modality": "ct", "stage": "adapter", "status": "present",
             "reason": ""},
            {"subject_id": "s3", "modality": "ct", "stage": "adapter", "status": "absent",
             "reason": "no file"},
            {"subject_id": "*", "modality": "ct", "stage": "adapter", "status": "skipped",
             "reason": "folder 'junk' skipped: not a case"},
            {"subject_id": "s1", "modality": "ct", "stage": "adapter", "status": "skipped",
             "reason": "file 'notes.txt' skipped"}]
    qc, summary = _cohort_qc(tmp_path, rows, "corrupt series")
    skipped = qc.filter(qc["status"] == "skipped")["reason"].to_list()
    assert sorted(skipped) == ["file 'notes.txt' skipped", "folder 'junk' skipped: not a case"]
    assert "| * | ct | skipped | folder 'junk' skipped: not a case |" in summary
    assert qc.height == 3 + 2   # the store's three rows and the adapter's two of its own


def test_each_encoders_rejection_of_a_subject_is_listed(tmp_path):
    """Two encoders of one modality rejecting a subject for their own reasons: one row
    was kept, picked at random, and the table did not say which encoder it was."""
    qc_frame([]).write_parquet(tmp_path / "adapter_qc.parquet")
    stores = [_store(tmp_path / "a.zarr", "med3d", "embedding holds NaN"),
              _store(tmp_path / "b.zarr", "vgg11_slices", "embedding of shape (3,) not (512,)")]
    write_cohort_qc(tmp_path / "adapter_qc.parquet", stores, tmp_path / "qc.parquet",
                    tmp_path / "summary.md")
    summary = (tmp_path / "summary.md").read_text()
    assert "| s2 | ct | med3d | embedding holds NaN |" in summary
    assert "| s2 | ct | vgg11_slices | embedding of shape (3,) not (512,) |" in summary


def test_a_path_the_adapter_rejected_is_listed_once_per_store(tmp_path):
    """An empty DICOM folder, rejected by the adapter and so by each store of the
    modality with the same reason, was listed once more with no encoder, and again under
    the other records."""
    reason = "empty folder"
    qc_frame([{"subject_id": "s2", "modality": "ct", "stage": "adapter",
               "status": "rejected", "reason": reason}]).write_parquet(
        tmp_path / "adapter_qc.parquet")
    stores = [_store(tmp_path / "a.zarr", "med3d", reason),
              _store(tmp_path / "b.zarr", "vgg11_slices", reason)]
    qc = write_cohort_qc(tmp_path / "adapter_qc.parquet", stores, tmp_path / "qc.parquet",
                         tmp_path / "summary.md")
    rejected = qc.filter(qc["status"] == "rejected")
    assert sorted(rejected["encoder"].to_list()) == ["med3d", "vgg11_slices"]
    assert (tmp_path / "summary.md").read_text().count(f"| {reason} |") == 2


def test_a_rejection_no_store_holds_is_listed_once(tmp_path):
    """A path the adapter rejected for a subject no store lists (left out of the manifest
    without another modality) was listed under Rejected inputs and Other records."""
    reason = "not a DICOM series: 0 readable files"
    qc_frame([{"subject_id": "s9", "modality": "ct", "stage": "adapter", "status": "rejected",
               "reason": reason}]).write_parquet(tmp_path / "adapter_qc.parquet")
    write_cohort_qc(tmp_path / "adapter_qc.parquet", [_store(tmp_path / "ct.zarr", "med3d",
                                                             "corrupt series")],
                    tmp_path / "qc.parquet", tmp_path / "summary.md")
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count(reason) == 1
    assert f"| s9 | ct |  | {reason} |" in summary


def test_an_adapter_verdict_the_store_does_not_hold_is_kept(tmp_path):
    """A store that holds another word on a subject than the adapter's rejection (it read
    a stray file's note as the verdict: absent) had the rejection dropped as "the
    store's" from every record. The same verdict in the store's own words (a table's
    "all fields missing" is its "no clinical field recorded") is said once."""
    rows = [{"subject_id": "s3", "modality": "ct", "stage": "adapter", "status": "rejected",
             "reason": "2 files of ct: a.nii, a.nii.gz"}]
    qc, summary = _cohort_qc(tmp_path, rows, "corrupt series")
    kept = qc.filter(qc["encoder"].is_null())
    assert kept.select("subject_id", "status", "reason").rows() == [
        ("s3", "rejected", "2 files of ct: a.nii, a.nii.gz")]
    assert "| s3 | ct |  | 2 files of ct: a.nii, a.nii.gz |" in summary
    rows = [{**rows[0], "status": "absent", "reason": "all fields missing"}]
    qc, summary = _cohort_qc(tmp_path, rows, "corrupt series")
    assert qc.filter(qc["subject_id"] == "s3").select("encoder", "status", "reason").rows() == [
        ("med3d", "absent", "no file")]
    assert "all fields missing" not in summary


def test_the_summary_names_the_file_the_notes_and_subjects_left_without_input(tmp_path):
    """A rejection's reason ("file not found") named no file, though the adapter had it;
    a note on an input that was used (a DICOM file skipped: a slice short) was in
    qc.parquet only; and a subject every store rejected or lacked read as any other."""
    import numpy as np

    from mmpipe.store import FeatureStoreWriter

    rows = [{"subject_id": "s1", "modality": "ct", "stage": "adapter", "status": "present",
             "reason": "", "path": "/data/s1/ct"},
            {"subject_id": "s1", "modality": "ct", "stage": "adapter", "status": "skipped",
             "reason": "file 'notes.txt' skipped", "path": "/data/s1/ct/notes.txt"},
            {"subject_id": "s2", "modality": "ct", "stage": "adapter", "status": "present",
             "reason": "", "path": "/data/s2/ct"}]
    qc_frame(rows).write_parquet(tmp_path / "adapter_qc.parquet")
    with FeatureStoreWriter(tmp_path / "ct.zarr", ["s1", "s2", "s3"], (2,),
                            {"modality": "ct", "encoder": "med3d"}) as w:
        w.write("s1", np.zeros(2))
        w.note("s1", "converted; skipped 1 of 5 files: 2062 (not a DICOM file)")
        w.mark("s2", "rejected", "corrupt series")
        w.mark("s3", "absent", "no file")
        w.commit()
    qc = write_cohort_qc(tmp_path / "adapter_qc.parquet", [tmp_path / "ct.zarr"],
                         tmp_path / "qc.parquet", tmp_path / "summary.md")
    summary = (tmp_path / "summary.md").read_text()
    assert "| s2 | ct | med3d | corrupt series | /data/s2/ct |" in summary
    assert qc.filter(qc["encoder"].is_not_null()).select("subject_id", "path").rows() == [
        ("s1", "/data/s1/ct"), ("s2", "/data/s2/ct"), ("s3", None)]
    # the adapter's own row keeps its own file
    assert qc.filter(qc["status"] == "skipped")["path"].to_list() == ["/data/s1/ct/notes.txt"]
    assert ("| s1 | ct | med3d | converted; skipped 1 of 5 files: 2062 (not a DICOM file) |"
            in summary.split("## Notes on inputs used")[1])
    assert "2 subject(s) have no input any store could use (every modality absent or " \
           "rejected): s2, s3." in summary


def test_many_subjects_rejected_for_one_reason_are_said_as_one_cause(tmp_path):
    """A shard job on a node without the data's mount rejected each of its subjects as
    "not a folder"; the summary listed them among the others as each one's defect."""
    import numpy as np

    from mmpipe.store import FeatureStoreWriter

    ids = [f"s{i}" for i in range(10)]
    gone = "not a folder (a DICOM series is read from a folder of files)"
    with FeatureStoreWriter(tmp_path / "ct.zarr", ids, (2,),
                            {"modality": "ct", "encoder": "med3d"}) as w:
        for sid in ids[:5]:
            w.write(sid, np.zeros(2))
        for sid in ids[5:9]:
            w.mark(sid, "rejected", gone)
        w.mark(ids[9], "rejected", "corrupt series")
        w.commit()
    qc_frame([]).write_parquet(tmp_path / "adapter_qc.parquet")
    write_cohort_qc(tmp_path / "adapter_qc.parquet", [tmp_path / "ct.zarr"],
                    tmp_path / "qc.parquet", tmp_path / "summary.md")
    summary = (tmp_path / "summary.md").read_text()
    assert f'**One reason, many subjects:** ct/med3d: 4 subjects rejected for "{gone}". ' \
           in summary
    assert 'corrupt series"' not in summary.split("## Rejected inputs")[0]


def test_one_reason_is_counted_among_the_subjects_with_an_input(tmp_path):
    """With most subjects without the modality, 8 of the 20 that have it rejected for
    one reason were under a tenth of the store's 100 subjects, and went unsaid."""
    import numpy as np

    from mmpipe.store import FeatureStoreWriter

    ids = [f"s{i:03d}" for i in range(100)]
    with FeatureStoreWriter(tmp_path / "ct.zarr", ids, (2,),
                            {"modality": "ct", "encoder": "med3d"}) as w:
        for sid in ids[:12]:
            w.write(sid, np.zeros(2))
        for sid in ids[12:20]:
            w.mark(sid, "rejected", "not a folder")
        for sid in ids[20:]:
            w.mark(sid, "absent", "no file")
        w.commit()
    qc_frame([]).write_parquet(tmp_path / "adapter_qc.parquet")
    write_cohort_qc(tmp_path / "adapter_qc.parquet", [tmp_path / "ct.zarr"],
                    tmp_path / "qc.parquet", tmp_path / "summary.md")
    assert ('ct/med3d: 8 subjects rejected for "not a folder"'
            in (tmp_path / "summary.md").read_text())
