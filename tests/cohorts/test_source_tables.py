"""The tables of a dataset's download are the ``manifest`` job's inputs
(:func:`mmpipe.cohorts.source_tables`): a label fixed in ``ADNIMERGE.csv`` or
``IXI.xls`` used to rerun nothing, and the splits and runs stayed on the old labels."""

from __future__ import annotations

from mmpipe.cohorts import ADAPTERS, SOURCE_TABLES, source_tables


def test_every_dataset_adapter_says_which_tables_it_reads():
    assert set(SOURCE_TABLES) == set(ADAPTERS) - {"csv", "demo"}


def test_the_tables_that_exist_under_root_and_the_ones_options_name(tmp_path):
    root = tmp_path / "ADNI"
    root.mkdir()
    cohort = {"adapter": "adni", "root": "ADNI"}
    assert source_tables(cohort, tmp_path) == []  # missing: the adapter's error says so
    (root / "ADNIMERGE.csv").write_text("PTID\n")
    assert source_tables(cohort, tmp_path) == [root / "ADNIMERGE.csv"]
    (tmp_path / "merge_2024.csv").write_text("PTID\n")
    cohort["adni"] = {"table": "merge_2024.csv"}
    assert source_tables(cohort, tmp_path) == [root / "ADNIMERGE.csv",
                                               tmp_path / "merge_2024.csv"]
    (tmp_path / "BCNB" / "dataset-splitting").mkdir(parents=True)
    (tmp_path / "BCNB" / "dataset-splitting" / "test_id.txt").write_text("1\n")
    assert source_tables({"adapter": "bcnb", "root": str(tmp_path / "BCNB")}) == [
        tmp_path / "BCNB" / "dataset-splitting" / "test_id.txt"]
    assert source_tables({"adapter": "csv", "csv": "x.csv"}, tmp_path) == []
