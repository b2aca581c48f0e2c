"""The tables of a dataset's download are the ``manifest`` job's inputs
(:func:`mmpipe.cohorts.source_tables`): a label fixed in ``ADNIMERGE.csv`` or
``IXI.xls`` used to rerun nothing, and the splits and runs stayed on the old labels."""

from __future__ import annotations

from mmpipe.cohorts import ADAPTERS, source_tables


def test_every_dataset_adapter_says_which_tables_it_reads():
    reads_a_download = {name for name, a in ADAPTERS.items() if a.source_tables is not None}
    assert reads_a_download == set(ADAPTERS) - {"csv", "demo"}


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


def test_a_download_added_under_root_changes_its_listing(tmp_path):
    """BreakHis takes its labels from its folders, and every dataset adapter its images:
    new subjects or a modality fetched later under ``root`` left the manifest, and all
    after it, as they were until ``--forcerun manifest``."""
    from mmpipe.cohorts import download_listing

    root = tmp_path / "IXI"
    (root / "IXI-T1").mkdir(parents=True)
    (root / "IXI-T1" / "IXI002-Guys-0828-T1.nii.gz").write_bytes(b"t1")
    cohort = {"adapter": "ixi", "root": "IXI"}
    first = download_listing(cohort, tmp_path)
    assert first == download_listing(cohort, tmp_path)
    (root / "IXI-T2").mkdir()  # a modality fetched later: its folder, then its files
    assert download_listing(cohort, tmp_path) != first
    (root / "IXI-T2" / "IXI002-Guys-0828-T2.nii.gz").write_bytes(b"t2")
    second = download_listing(cohort, tmp_path)
    assert second != first
    (root / "IXI-T2" / "IXI002-Guys-0828-T2.nii.gz").rename(root / "IXI-T2" / "renamed.nii.gz")
    assert download_listing(cohort, tmp_path) != second
    (root / "IXI-T2" / "renamed.nii.gz").rename(root / "IXI-T2" / "IXI002-Guys-0828-T2.nii.gz")
    assert download_listing(cohort, tmp_path) == second


def test_what_is_no_download_leaves_the_listing(tmp_path):
    """Times (a copy to another disk), hidden entries (``.DS_Store``, ``.snakemake``), the
    workflow's own results under ``root`` (each job would rebuild the manifest) and a
    symlink back into the tree (walked once) change nothing."""
    import os

    from mmpipe.cohorts import download_listing

    root = tmp_path / "BreaKHis_v1" / "histology_slides"
    (root / "benign").mkdir(parents=True)
    (root / "benign" / "SOB_B_A-14-22549AB-40-001.png").write_bytes(b"png")
    cohort = {"adapter": "breakhis", "root": str(tmp_path / "BreaKHis_v1")}
    first = download_listing(cohort, tmp_path, skip=[tmp_path / "BreaKHis_v1" / "results"])
    os.utime(root / "benign" / "SOB_B_A-14-22549AB-40-001.png", (0, 0))
    (root / ".DS_Store").write_bytes(b"finder")
    (tmp_path / "BreaKHis_v1" / ".snakemake" / "metadata").mkdir(parents=True)
    (tmp_path / "BreaKHis_v1" / ".snakemake" / "metadata" / "x").write_text("{}")
    (tmp_path / "BreaKHis_v1" / "results" / "breakhis").mkdir(parents=True)
    (tmp_path / "BreaKHis_v1" / "results" / "breakhis" / "manifest.parquet").write_bytes(b"")
    assert download_listing(cohort, tmp_path,
                            skip=[tmp_path / "BreaKHis_v1" / "results"]) == first
    (root / "benign" / "back").symlink_to(root)
    looped = download_listing(cohort, tmp_path, skip=[tmp_path / "BreaKHis_v1" / "results"])
    assert looped != first  # a new entry, walked no further than the tree itself


def test_only_a_dataset_download_is_listed(tmp_path):
    from mmpipe.cohorts import download_listing

    assert download_listing({"adapter": "csv", "csv": "x.csv"}, tmp_path) is None
    assert download_listing({"adapter": "demo"}, tmp_path) is None
    assert download_listing({"adapter": "ixi", "root": "nowhere"}, tmp_path) == "missing"


def test_the_manifest_job_reruns_for_a_download_added(tmp_path, monkeypatch):
    """Its parameters carry the listing (Snakemake's params trigger reruns it); the demo's
    and a CSV cohort's parameters are as they were."""
    import copy

    import yaml

    from mmpipe.config import validate_config
    from mmpipe.params import manifest_params
    from tests.conftest import REPO

    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["cohorts"]["brains"] = {"adapter": "ixi", "root": "data/IXI", "labels": ["sex"],
                                "modalities": {"t1": {"kind": "volume",
                                                      "encoders": ["med3d_demo"]}}}
    cfg = validate_config(copy.deepcopy(raw))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "IXI" / "IXI-T1").mkdir(parents=True)
    before = manifest_params(cfg, "brains")
    (tmp_path / "data" / "IXI" / "IXI-T1" / "IXI012-HH-1211-T1.nii.gz").write_bytes(b"t1")
    assert manifest_params(cfg, "brains") != before
    assert "download" not in manifest_params(cfg, "demo")


def test_a_symlink_to_a_listed_folder_lists_as_its_name_only(tmp_path):
    """Followed once: a link back into the tree lists as an empty folder of that name
    would (walking it again looped; two links across took minutes)."""
    from mmpipe.cohorts import download_listing

    def listing(make_back):
        root = tmp_path / make_back.__name__
        (root / "benign").mkdir(parents=True)
        (root / "benign" / "a.png").write_bytes(b"png")
        make_back(root / "benign" / "back", root)
        return download_listing({"adapter": "breakhis", "root": str(root)})

    def link(path, root):
        path.symlink_to(root)

    def folder(path, root):
        path.mkdir()

    assert listing(link) == listing(folder)


def test_editors_files_and_names_that_are_not_utf8(tmp_path):
    """Thumbs.db, desktop.ini and Excel's lock file beside an open table are no
    download; a name that is not UTF-8 is listed by its bytes (it stopped the planning)."""
    import os

    from mmpipe.cohorts import download_listing

    root = tmp_path / "IXI"
    (root / "IXI-T1").mkdir(parents=True)
    cohort = {"adapter": "ixi", "root": "IXI"}
    first = download_listing(cohort, tmp_path)
    for junk in ("Thumbs.db", "desktop.ini", "~$IXI.xls"):
        (root / "IXI-T1" / junk).write_bytes(b"")
    assert download_listing(cohort, tmp_path) == first
    (root / os.fsdecode(b"caf\xe9.nii.gz")).write_bytes(b"latin-1 name")
    assert download_listing(cohort, tmp_path) not in (first, None)


def test_a_folder_an_option_names_outside_root_is_listed(tmp_path):
    """IXI's brain masks often lie beside the download: a mask added there reruns the
    manifest, which then holds it."""
    from mmpipe.cohorts import download_listing

    (tmp_path / "IXI").mkdir()
    masks = tmp_path / "hdbet"
    masks.mkdir()
    cohort = {"adapter": "ixi", "root": "IXI", "ixi": {"brain_masks": str(masks)}}
    first = download_listing(cohort, tmp_path)
    (masks / "IXI002-Guys-0828-T1_mask.nii.gz").write_bytes(b"mask")
    assert download_listing(cohort, tmp_path) != first


def test_a_file_fetched_later_changes_the_listing(tmp_path):
    """A DataLad or git-annex file not fetched is a link to nothing, which the manifest
    rejects; ``datalad get`` keeps its name, so the listing of names stayed the same and
    the subject stayed rejected until ``--forcerun manifest``."""
    import os

    from mmpipe.cohorts import download_listing

    root = tmp_path / "IXI"
    (root / "IXI-T1").mkdir(parents=True)
    t1 = root / "IXI-T1" / "IXI002-Guys-0828-T1.nii.gz"
    annexed = tmp_path / "annex" / "objects" / "key"
    os.symlink(annexed, t1)
    cohort = {"adapter": "ixi", "root": "IXI"}
    not_fetched = download_listing(cohort, tmp_path)
    annexed.parent.mkdir(parents=True)
    annexed.write_bytes(b"t1")  # datalad get: the object arrives, the link stays
    assert download_listing(cohort, tmp_path) != not_fetched
