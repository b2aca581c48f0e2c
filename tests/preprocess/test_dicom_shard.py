"""A shard of DICOM folders: a bad folder is one rejected QC row, the others convert."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import generate_uid

from mmpipe.preprocess.dicom_shard import convert_dicom_shard
from tests.dicom_files import write_ct_slice
from tests.preprocess.conftest import one_modality_cohort


def write_series(folder: Path, pixel_spacing) -> Path:
    uid = generate_uid()
    for k in range(4):
        write_ct_slice(folder / f"IM{k}.dcm", series_uid=uid, position=(0, 0, 2.0 * k),
                       hu=np.full((8, 8), 10 * k, np.int16), instance=k + 1,
                       spacing=pixel_spacing)
    return folder


def test_zero_pixel_spacing_rejects_its_subject_only(tmp_path):
    # SimpleITK refuses a zero spacing with a RuntimeError: it must not take the shard down
    write_series(tmp_path / "dcm" / "good", (0.7, 0.8))
    bad = write_series(tmp_path / "dcm" / "zero", (0, 0))
    one_modality_cohort(tmp_path, "dicom", {"good": "dcm/good", "zero": "dcm/zero"})

    qc = convert_dicom_shard(tmp_path / "results" / "toy", "ct", 0, 1, {}, tmp_path / "out")
    rows = {r["subject_id"]: r for r in qc.to_dicts()}
    assert rows["good"]["status"] == "ok"
    volume = nib.load(tmp_path / "out" / rows["good"]["volume"])
    assert volume.shape == (8, 8, 4)
    assert rows["zero"]["status"] == "rejected" and rows["zero"]["volume"] is None
    assert rows["zero"]["path"] == str(bad)
    assert "PixelSpacing 0\\0 is not a positive distance" in rows["zero"]["reason"]


def test_an_unexpected_error_rejects_its_subject_only(tmp_path, monkeypatch):
    """A reader's bare error (pydicom's NotImplementedError on a damaged element, before
    the reader caught it) took the whole shard down: no output, every subject lost."""
    from mmpipe.io import dicom

    write_series(tmp_path / "dcm" / "good", (0.7, 0.8))
    write_series(tmp_path / "dcm" / "odd", (0.7, 0.8))
    one_modality_cohort(tmp_path, "dicom", {"good": "dcm/good", "odd": "dcm/odd"})
    convert = dicom.dicom_to_nifti

    def fails_on_odd(folder, *args, **kwargs):
        if Path(folder).name == "odd":
            raise NotImplementedError("Unknown Value Representation 'Lv' in tag (0010,0020)")
        return convert(folder, *args, **kwargs)

    monkeypatch.setattr(dicom, "dicom_to_nifti", fails_on_odd)
    qc = convert_dicom_shard(tmp_path / "results" / "toy", "ct", 0, 1, {}, tmp_path / "out")
    rows = {r["subject_id"]: r for r in qc.to_dicts()}
    assert rows["good"]["status"] == "ok"
    assert rows["odd"]["status"] == "rejected"
    assert "cannot convert: NotImplementedError: Unknown Value Representation" in \
        rows["odd"]["reason"]



@pytest.mark.parametrize("error", [
    MemoryError(),                                               # the machine's
    ModuleNotFoundError("No module named 'SimpleITK'"),          # the install's
    OSError(28, "No space left on device"),                      # the disk's
    NotImplementedError("Unknown Value Representation 'Lv'"),    # every folder alike
], ids=["memory", "import", "disk", "every-subject"])
def test_a_cause_every_subject_shares_fails_the_job(tmp_path, monkeypatch, error):
    """Rejected one by one, a missing library or a full disk left a shard that looked
    finished with every subject rejected, which nothing reran."""
    from mmpipe.io import dicom

    for name in ("a", "b"):
        write_series(tmp_path / "dcm" / name, (0.7, 0.8))
    one_modality_cohort(tmp_path, "dicom", {"a": "dcm/a", "b": "dcm/b"})

    def fails(folder, *args, **kwargs):
        raise error

    monkeypatch.setattr(dicom, "dicom_to_nifti", fails)
    with pytest.raises(type(error) if not isinstance(error, NotImplementedError)
                       else RuntimeError):
        convert_dicom_shard(tmp_path / "results" / "toy", "ct", 0, 1, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_cause_every_subject_shares_names_the_subject_it_was_raised_on(tmp_path,
                                                                        monkeypatch):
    """Out of memory failed the job naming no subject: the input that needs the larger
    node was unsaid."""
    from mmpipe.io import dicom

    write_series(tmp_path / "dcm" / "a", (0.7, 0.8))
    one_modality_cohort(tmp_path, "dicom", {"a": "dcm/a"})
    monkeypatch.setattr(dicom, "dicom_to_nifti", lambda *a, **k: (_ for _ in ()).throw(
        MemoryError()))
    with pytest.raises(MemoryError) as raised:
        convert_dicom_shard(tmp_path / "results" / "toy", "ct", 0, 1, {}, tmp_path / "out")
    assert raised.value.__notes__ == [
        f"raised on subject 'a' ({tmp_path / 'dcm' / 'a'})"]


@pytest.mark.parametrize("errno_name", ["ESTALE", "ENOTCONN", "ETIMEDOUT"])
def test_a_mount_that_drops_fails_the_job(tmp_path, monkeypatch, errno_name):
    """NFS's stale handle or a FUSE mount's lost connection rejected the subject and the
    shard stood finished."""
    import errno
    import os

    from mmpipe.io import dicom

    for name in ("a", "b"):
        write_series(tmp_path / "dcm" / name, (0.7, 0.8))
    one_modality_cohort(tmp_path, "dicom", {"a": "dcm/a", "b": "dcm/b"})
    convert = dicom.dicom_to_nifti
    code = getattr(errno, errno_name)

    def drops_on_b(folder, *args, **kwargs):
        if Path(folder).name == "b":
            raise OSError(code, os.strerror(code), str(folder))
        return convert(folder, *args, **kwargs)

    monkeypatch.setattr(dicom, "dicom_to_nifti", drops_on_b)
    with pytest.raises(OSError):
        convert_dicom_shard(tmp_path / "results" / "toy", "ct", 0, 1, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_inputs_gone_where_the_job_runs_fail_it(tmp_path):
    """A node without the data's mount rejected every subject "not a folder" and wrote a
    finished shard, which nothing reran once the mount was back."""
    from mmpipe.job_failures import SharedCauseError

    for name in ("a", "b"):
        write_series(tmp_path / "dcm" / name, (0.7, 0.8))
    cohort = one_modality_cohort(tmp_path, "dicom", {"a": "dcm/a", "b": "dcm/b"})
    (tmp_path / "dcm").rename(tmp_path / "unmounted")
    with pytest.raises(SharedCauseError, match="none of the job's 2 inputs is where the "
                                               "manifest says"):
        convert_dicom_shard(cohort, "ct", 0, 1, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_input_deleted_since_the_manifest_rejects_its_subject_only(tmp_path):
    import shutil

    for name in ("a", "b"):
        write_series(tmp_path / "dcm" / name, (0.7, 0.8))
    cohort = one_modality_cohort(tmp_path, "dicom", {"a": "dcm/a", "b": "dcm/b"})
    shutil.rmtree(tmp_path / "dcm" / "b")
    qc = convert_dicom_shard(cohort, "ct", 0, 1, {}, tmp_path / "out")
    rows = {r["subject_id"]: r for r in qc.to_dicts()}
    assert rows["a"]["status"] == "ok"
    assert rows["b"]["status"] == "rejected"
    assert rows["b"]["reason"].startswith("not found: there when the manifest was built")
    assert "--forcerun manifest" in rows["b"]["reason"]


def test_inputs_gone_during_the_job_fail_it(tmp_path, monkeypatch):
    """A mount that dropped half-way rejected the rest of the shard "not a folder"."""
    import shutil

    from mmpipe.io import dicom
    from mmpipe.job_failures import SharedCauseError

    for name in ("a", "b"):
        write_series(tmp_path / "dcm" / name, (0.7, 0.8))
    cohort = one_modality_cohort(tmp_path, "dicom", {"a": "dcm/a", "b": "dcm/b"})
    convert = dicom.dicom_to_nifti

    def mount_drops_after_a(folder, *args, **kwargs):
        done = convert(folder, *args, **kwargs)
        shutil.rmtree(tmp_path / "dcm" / "b", ignore_errors=True)
        return done

    monkeypatch.setattr(dicom, "dicom_to_nifti", mount_drops_after_a)
    with pytest.raises(SharedCauseError, match="1 of the job's inputs were there when the "
                                               "job started and are gone now"):
        convert_dicom_shard(cohort, "ct", 0, 1, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_links_into_a_store_whose_mount_is_missing_fail_the_job(tmp_path):
    """A cohort folder of links into a data store: with the store's mount missing, each
    link dangled, counted as there, and every subject was rejected "not a folder"."""
    from mmpipe.job_failures import SharedCauseError

    (tmp_path / "dcm").mkdir()
    for name in ("a", "b"):
        write_series(tmp_path / "store" / name, (0.7, 0.8))
        (tmp_path / "dcm" / name).symlink_to(tmp_path / "store" / name)
    cohort = one_modality_cohort(tmp_path, "dicom", {"a": "dcm/a", "b": "dcm/b"})
    (tmp_path / "store").rename(tmp_path / "unmounted")
    with pytest.raises(SharedCauseError, match="none of the job's 2 inputs"):
        convert_dicom_shard(cohort, "ct", 0, 1, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_shard_of_one_input_on_a_missing_mount_fails_the_job(tmp_path):
    """A shard of one input under an empty mount point (or a folder of links into the
    missing store) rejected it "moved or deleted", a shard that stood after the mount was
    back; a deletion the message points to the manifest's rebuild for."""
    import shutil

    from mmpipe.job_failures import SharedCauseError

    write_series(tmp_path / "mnt" / "a", (0.7, 0.8))
    cohort = one_modality_cohort(tmp_path, "dicom", {"a": "mnt/a"})
    shutil.rmtree(tmp_path / "mnt")
    (tmp_path / "mnt").mkdir()  # the mount point, empty
    with pytest.raises(SharedCauseError, match=r"none of the job's 1 inputs .*--forcerun "
                                               r"manifest"):
        convert_dicom_shard(cohort, "ct", 0, 1, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_deleted_input_leaves_the_shared_cause_judged_on_those_read(tmp_path, monkeypatch):
    """One deleted input beside readers that all fail with a bare error: the deleted one
    counted among the subjects that did not fail so, and a library's regression stood as
    a shard of rejections."""
    import shutil

    from mmpipe.io import dicom
    from mmpipe.job_failures import SharedCauseError

    for name in ("a", "b", "c"):
        write_series(tmp_path / "dcm" / name, (0.7, 0.8))
    cohort = one_modality_cohort(tmp_path, "dicom", {n: f"dcm/{n}" for n in "abc"})
    shutil.rmtree(tmp_path / "dcm" / "c")

    def bare(folder, *args, **kwargs):
        raise NotImplementedError("Unknown Value Representation 'Lv'")

    monkeypatch.setattr(dicom, "dicom_to_nifti", bare)
    with pytest.raises(SharedCauseError, match="every one of the job's 2 subjects failed"):
        convert_dicom_shard(cohort, "ct", 0, 1, {}, tmp_path / "out")


def test_a_mount_error_on_an_inputs_path_fails_the_job(tmp_path, monkeypatch):
    """ESTALE while looking for an input read as "moved or deleted": its subject was
    rejected so, and the shard stood finished."""
    import errno
    import os

    for name in ("a", "b"):
        write_series(tmp_path / "dcm" / name, (0.7, 0.8))
    cohort = one_modality_cohort(tmp_path, "dicom", {"a": "dcm/a", "b": "dcm/b"})
    real = {"stat": os.stat, "lstat": os.lstat}

    def stale(name):
        def call(path, *args, **kwargs):
            if str(path).endswith("dcm/b"):
                raise OSError(errno.ESTALE, "Stale file handle", str(path))
            return real[name](path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "stat", stale("stat"))
    monkeypatch.setattr(os, "lstat", stale("lstat"))
    with pytest.raises(OSError, match="Stale file handle"):
        convert_dicom_shard(cohort, "ct", 0, 1, {}, tmp_path / "out")
    monkeypatch.undo()
    assert not (tmp_path / "out").exists()
