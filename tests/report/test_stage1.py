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
