"""A report some of whose training runs are gone is marked, and only then (the
Snakefile's ``onerror`` handler; the workflow test makes a rerun fail)."""

from __future__ import annotations

from mmpipe.report.stale import STALE_FILE, mark_stale_report


def _report(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "results.md").write_text("# Results: demo\n")
    runs = [tmp_path / "runs" / name for name in ("a", "b")]
    for run in runs:
        run.mkdir(parents=True)
    return report, runs


def test_a_report_whose_runs_are_all_there_is_left_alone(tmp_path):
    report, runs = _report(tmp_path)
    assert mark_stale_report(report, runs) == []
    assert not (report / STALE_FILE).exists()
    assert (report / "results.md").read_text() == "# Results: demo\n"
    assert mark_stale_report(tmp_path / "no_report", [tmp_path / "gone"]) == []
    assert not (tmp_path / "no_report").exists()


def test_a_report_with_a_run_gone_is_marked_once(tmp_path):
    report, runs = _report(tmp_path)
    runs[1].rmdir()
    assert mark_stale_report(report, runs) == [str(runs[1])]
    assert mark_stale_report(report, runs) == [str(runs[1])]  # a second failed run
    results = (report / "results.md").read_text()
    assert results.startswith("**Stale report.** 1 of the 2 training runs")
    assert results.count("**Stale report.**") == 1
    assert results.endswith("# Results: demo\n")
    assert str(runs[1]) in (report / STALE_FILE).read_text()
