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


def _built_report(tmp_path):
    """:func:`_report` with its ``runs.csv`` (when it was built) and its runs a minute
    older than it; the report, its runs and the time it was built."""
    import os

    report, runs = _report(tmp_path)
    (report / "runs.csv").write_text("method\n")
    built = (report / "runs.csv").stat().st_mtime
    for run in runs:
        os.utime(run, (built - 60, built - 60))
    return report, runs, built


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


def test_a_report_older_than_a_run_is_marked_and_its_banner_follows(tmp_path):
    """A run trained again with new settings, then another job failed before the report
    was rebuilt: every run was on disk, so the report of the old run stood unmarked; and
    a banner written once kept its first count."""
    import os

    report, runs, built = _built_report(tmp_path)
    assert mark_stale_report(report, runs) == []          # built after its runs
    os.utime(runs[0], (built + 60, built + 60))           # trained again since
    assert mark_stale_report(report, runs) == [str(runs[0])]
    results = (report / "results.md").read_text()
    assert results.startswith("**Stale report.** 1 of them were trained again after it")
    assert "Trained again:" in (report / STALE_FILE).read_text()
    runs[1].rmdir()                                       # and a later failure loses one
    assert mark_stale_report(report, runs) == [str(runs[1]), str(runs[0])]
    results = (report / "results.md").read_text()
    assert results.count("**Stale report.**") == 1
    assert results.startswith("**Stale report.** 1 of the 2 training runs this report is "
                              "built from are not on disk")
    assert results.endswith("# Results: demo\n")


def test_a_run_touched_by_snakemake_is_newer_than_the_report(tmp_path):
    """``snakemake --touch`` after a settings change moves a folder output's
    ``.snakemake_timestamp``, not the folder: the report of the old settings stood
    unmarked while Snakemake read the run as new."""
    import os

    report, runs, built = _built_report(tmp_path)
    for run in runs:
        (run / ".snakemake_timestamp").touch()
        os.utime(run / ".snakemake_timestamp", (built - 60, built - 60))
    assert mark_stale_report(report, runs) == []
    os.utime(runs[0] / ".snakemake_timestamp", (built + 60, built + 60))  # --touch
    os.utime(runs[0], (built - 60, built - 60))
    assert mark_stale_report(report, runs) == [str(runs[0])]


def test_a_report_is_marked_while_a_run_is_under_way_and_unmarked_when_it_agrees(tmp_path):
    """Snakemake killed (SIGKILL, out of memory, a lost session) runs neither onerror nor
    onsuccess, after it may have removed a run's outputs: the report of the runs before
    read as finished. onstart marks it; the handlers leave the mark only where the runs
    no longer agree with it."""
    from mmpipe.report.stale import UNDER_WAY, mark_under_way

    report, runs = _report(tmp_path)
    assert mark_under_way(report)
    assert UNDER_WAY.format(it="this report") in (report / STALE_FILE).read_text()
    results = (report / "results.md").read_text()
    assert results.startswith("**Stale report.**") and results.endswith("# Results: demo\n")
    assert mark_stale_report(report, runs) == []  # the run ended and every run agrees
    assert not (report / STALE_FILE).exists()
    assert (report / "results.md").read_text() == "# Results: demo\n"
    mark_under_way(report)
    runs[0].rmdir()  # the run removed one, then failed: the failure's mark replaces it
    assert mark_stale_report(report, runs) == [str(runs[0])]
    assert UNDER_WAY.format(it="this report") not in (report / STALE_FILE).read_text()
    assert (report / "results.md").read_text().count("**Stale report.**") == 1
    mark_under_way(report)  # the next run's start keeps the list of what is missing
    assert str(runs[0]) in (report / STALE_FILE).read_text()
    assert (report / "results.md").read_text().count("**Stale report.**") == 1
    assert not mark_under_way(tmp_path / "no_report")


def test_a_report_older_than_what_its_runs_read_is_marked(tmp_path):
    """A run that rebuilt a store and stopped before training (a target, --until encode)
    left the runs, and the report, of the store before, unmarked: every run was on disk
    and older than the report."""
    import os

    report, runs = _report(tmp_path)
    (report / "runs.csv").write_text("method\n")
    built = (report / "runs.csv").stat().st_mtime
    store = tmp_path / "stores" / "ct" / "med3d.zarr"
    store.mkdir(parents=True)
    for path in (*runs, store):
        os.utime(path, (built - 60, built - 60))
    assert mark_stale_report(report, runs, inputs=[store]) == []
    os.utime(store, (built + 60, built + 60))  # rebuilt after the report
    assert mark_stale_report(report, runs, inputs=[store]) == [str(store)]
    assert "stores, splits or masks its runs read were rebuilt after it" in (
        report / STALE_FILE).read_text()


def test_a_report_whose_runs_read_an_input_now_gone_is_marked(tmp_path):
    """A split whose rerun (new ratios) failed was removed by Snakemake; the report, every
    run of which trained on the split before, was left unmarked: an input not on disk was
    left for stage 1 to say, which says nothing of splits and masks."""
    import os

    report, runs = _report(tmp_path)
    (report / "runs.csv").write_text("method\n")
    built = (report / "runs.csv").stat().st_mtime
    for path in runs:
        os.utime(path, (built - 60, built - 60))
    split = tmp_path / "splits" / "seed0.parquet"
    assert mark_stale_report(report, runs, inputs=[split]) == [str(split)]
    text = (report / STALE_FILE).read_text()
    assert "1 of the stores, splits or masks its runs read are not on disk" in text
    assert f"Missing inputs:\n\n- `{split}`" in text


def test_a_stage1_summary_whose_store_is_gone_or_newer_is_marked_and_unmarked(tmp_path):
    """A store whose rerun failed is gone (Snakemake removes a failed job's outputs), and
    one rebuilt by a run that stopped short of the summary holds other verdicts: the
    summary still described the stores before, unmarked."""
    import os

    from mmpipe.report.stale import (
        FAILED,
        mark_stale_summary,
        mark_summary_under_way,
    )

    summary, qc = tmp_path / "stage1_summary.md", tmp_path / "qc.parquet"
    stores = [tmp_path / "features" / m / "tabular.zarr" for m in ("a", "b")]
    for store in stores:
        store.mkdir(parents=True)
        os.utime(store, (1_000, 1_000))
    summary.write_text("# Stage 1 summary\n")
    qc.write_text("qc")
    assert mark_stale_summary(summary, qc, stores) == []
    assert summary.read_text() == "# Stage 1 summary\n"
    stores[1].rmdir()
    assert mark_stale_summary(summary, qc, stores, FAILED) == [str(stores[1])]
    assert mark_stale_summary(summary, qc, stores, FAILED) == [str(stores[1])]
    text = summary.read_text()
    assert text.startswith("**Stale summary.** 1 of the stores it describes are not on disk")
    assert "failed before it rebuilt the summary" in text and text.count("**Stale") == 1
    assert text.endswith("# Stage 1 summary\n")
    # rebuilt after the summary's qc table
    stores[1].mkdir()
    os.utime(stores[1], (qc.stat().st_mtime + 10,) * 2)
    assert mark_stale_summary(summary, qc, stores) == [str(stores[1])]
    assert "1 of the stores it describes were written after it" in summary.read_text()
    # agreeing again: the mark goes
    os.utime(stores[1], (1_000, 1_000))
    assert mark_stale_summary(summary, qc, stores) == []
    assert summary.read_text() == "# Stage 1 summary\n"
    # killed: the mark of a run under way stays until a handler finds them agreeing
    assert mark_summary_under_way(summary)
    assert summary.read_text().startswith("**Stale summary.** a later run of the workflow "
                                          "started and has not finished")
    assert mark_stale_summary(summary, qc, stores) == []
    assert summary.read_text() == "# Stage 1 summary\n"
    assert not mark_summary_under_way(tmp_path / "none.md")


def test_a_stage1_summary_of_a_manifest_rebuilt_since_is_marked(tmp_path):
    """A download mended and its manifest rebuilt by a run that stopped short of the
    summary (a target, ``--until``): the stores on disk were not rebuilt, so the summary
    went on listing rejections the manifest no longer holds, its mark removed by the
    handlers. The same records rewritten (a manifest job's rerun, in the project's copy
    elsewhere too) leave it agreeing."""
    from mmpipe.qc import qc_frame
    from mmpipe.report.stage1 import write_cohort_qc
    from mmpipe.report.stale import NOT_REBUILT, mark_stale_summary, mark_summary_under_way

    adapter_qc, qc = tmp_path / "adapter_qc.parquet", tmp_path / "qc.parquet"
    summary = tmp_path / "stage1_summary.md"
    rows = [{"subject_id": "s1", "modality": "t1", "stage": "adapter", "status": "rejected",
             "reason": "2 files of t1", "path": "/data/s1"},
            {"subject_id": "s2", "modality": "t1", "stage": "adapter", "status": "present",
             "reason": "", "path": "/data/s2/t1.nii.gz"}]
    qc_frame(rows).write_parquet(adapter_qc)
    write_cohort_qc(adapter_qc, [], qc, summary)
    built = summary.read_text()
    qc_frame(rows[::-1]).write_parquet(adapter_qc)   # the same records, rewritten
    assert mark_stale_summary(summary, qc, [], NOT_REBUILT, adapter_qc=adapter_qc) == []
    # and found in the project's copy elsewhere: the same verdicts of the same files
    qc_frame([{**r, "path": "/copy" + r["path"]} for r in rows]).write_parquet(adapter_qc)
    assert mark_stale_summary(summary, qc, [], NOT_REBUILT, adapter_qc=adapter_qc) == []
    rows[0].update(status="present", reason="", path="/data/s1/t1.nii.gz")
    qc_frame(rows).write_parquet(adapter_qc)
    mark_summary_under_way(summary)
    assert mark_stale_summary(summary, qc, [], NOT_REBUILT, adapter_qc=adapter_qc) == [
        str(adapter_qc)]
    text = summary.read_text()
    assert text.startswith(f"**Stale summary.** the manifest's QC table `{adapter_qc}` "
                           "holds other records than the summary was built from")
    assert "did not rebuild the summary" in text and text.count("**Stale") == 1
    assert text.endswith(built)
    adapter_qc.unlink()   # the manifest's rerun failed
    assert mark_stale_summary(summary, qc, [], adapter_qc=adapter_qc) == [str(adapter_qc)]
    assert "is not on disk" in summary.read_text()


def test_a_report_whose_runs_read_another_build_of_the_manifest_is_marked(tmp_path):
    """Labels flipped in the source and the manifest rebuilt alone (`--forcerun manifest`,
    a target short of the runs): every run trained on the labels before, and the report
    was left unmarked, the run's own end having removed the mark of its start."""
    import json
    import os

    report, runs, built = _built_report(tmp_path)
    seed = runs[0] / "seed0"
    seed.mkdir()
    (seed / "metrics.json").write_text(json.dumps({"benchmark_view": "a" * 64}))
    # the seed folder made just now moved its run's time past the report's on a clock
    # tick between them; the run is the report's, a minute older
    os.utime(runs[0], (built - 60, built - 60))
    assert mark_stale_report(report, runs, view="a" * 64) == []
    assert mark_stale_report(report, runs, view="b" * 64) == ["b" * 64]
    text = (report / STALE_FILE).read_text()
    assert ("the manifest was rebuilt with other subjects, labels, split or modalities than "
            f"its runs trained on (benchmark_view {'a' * 12} in the runs, {'b' * 12} now)"
            ) in text
    assert mark_stale_report(report, runs, view="a" * 64) == []
    assert not (report / STALE_FILE).exists()


def test_a_cohort_outside_the_run_is_held_to_what_its_report_was_built_from(tmp_path):
    """The hooks mark the report of a cohort the run does not name (one of its outputs
    may be a target) against what it was built from and what is on disk, not against
    runs its config names and nobody built yet."""
    import os

    import polars as pl

    from mmpipe.report.stale import (
        report_built_from,
        report_cells,
        spoken_for,
        summary_described,
    )

    report, runs, _ = _built_report(tmp_path)
    pl.DataFrame({"path": [str(runs[0] / "seed0" / "metrics.json")]}).write_csv(
        report / "runs.csv")
    never = tmp_path / "runs" / "never_built"
    assert spoken_for([*runs, never], report_built_from(report)) == runs
    runs[0].rmdir()  # a run it was built from, removed by a failed rerun: still spoken for
    assert spoken_for([*runs, never], report_built_from(report)) == runs
    assert mark_stale_report(report, spoken_for([*runs, never], report_built_from(report))
                             ) == [str(runs[0])]
    relative = os.path.relpath(runs[1], os.getcwd())
    assert spoken_for([relative], []) == [relative]
    # a path the report wrote relative is the same path given absolute
    gone = tmp_path / "features" / "ct" / "med3d.zarr"
    assert spoken_for([gone], [os.path.relpath(gone / "zarr.json", os.getcwd())]) == [gone]
    pl.DataFrame({"feature_set": ["all", "all", None], "scenario": ["mcar", "mcar", "x"],
                  "rate": ["0.4", "0.4", "0"], "seed": [0, 0, 1]}).write_csv(
        report / "runs.csv")
    assert report_cells(report) == [("all", "mcar", 0.4, 0)]
    assert report_cells(tmp_path / "no_report") == []
    assert report_built_from(tmp_path / "no_report") == []
    qc = tmp_path / "qc.parquet"
    pl.DataFrame({"modality": ["ct", "ct", "wsi", None], "encoder": ["med3d", "med3d",
                                                                     None, None]}
                 ).write_parquet(qc)
    assert summary_described(qc) == [("ct", "med3d")]
    assert summary_described(tmp_path / "none.parquet") == []
