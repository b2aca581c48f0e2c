"""What the volume loops share (:mod:`mmpipe.encode.volume`): the batch a network gets."""

from __future__ import annotations

import pytest
import torch

from mmpipe.encode.volume import batch_of


def test_a_lone_tensor_is_its_own_batch_and_several_are_joined():
    """A lone volume is the batch as it is, a view and not a copy (a 45 MB copy a volume
    at MedicalNet's input and batch size 1); several give torch.stack's and torch.cat's
    values."""
    volume, other = torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8)
    alone = batch_of([volume])
    assert alone.shape == (1, 1, 4, 8, 8) and alone.data_ptr() == volume.data_ptr()
    assert torch.equal(batch_of([volume, other]), torch.stack([volume, other]))
    slices = torch.rand(3, 3, 8, 8)  # the VGG11 loop's slices of one volume
    assert batch_of([slices], stack=False).data_ptr() == slices.data_ptr()
    assert torch.equal(batch_of([slices, slices[:2]], stack=False),
                       torch.cat([slices, slices[:2]]))


def _fails_the_job_on(second: str, error: BaseException) -> BaseException:
    """Subjects "ok" then ``second``, whose read raises ``error``: the first is read, the
    second fails the job; what it raised."""
    from types import SimpleNamespace

    from mmpipe.encode.volume import load_volumes

    def transform(source):
        if source == f"{second}.nii.gz":
            raise error
        return torch.zeros(1, 2, 2, 2)

    items = [SimpleNamespace(subject_id=s, source=f"{s}.nii.gz") for s in ("ok", second)]
    out = load_volumes(items, transform, {"loader_workers": 0})
    assert next(out)[0] == "ok"
    with pytest.raises(type(error)) as raised:
        next(out)
    return raised.value


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 46116860184273879040 bytes"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    MemoryError(),
    # SimpleITK's (an .mha or .nrrd volume, a DICOM series): read as the file's fault
    RuntimeError("Exception thrown in SimpleITK ImageSeriesReader_Execute: /work/ITK/"
                 "Modules/Core/Common/include/itkImportImageContainer.hxx:179:\nFailed to "
                 "allocate memory for image."),
])
def test_running_out_of_memory_fails_the_job_and_rejects_no_subject(error):
    """torch's allocators raise RuntimeError, not MemoryError: a volume resampled past the
    node's memory was rejected, so which subjects a store held depended on the node, and
    the store looked finished."""
    from types import SimpleNamespace

    from mmpipe.encode.volume import load_volumes

    raised = _fails_the_job_on("big", error)
    assert raised.__notes__ == ["raised on subject 'big' (big.nii.gz)"]  # named none
    # any other failure is the subject's own
    bad = [SimpleNamespace(subject_id="x", source="big.nii.gz")]
    got = list(load_volumes(bad, lambda s: (_ for _ in ()).throw(RuntimeError("bad header")),
                            {"loader_workers": 0}))
    assert got[0][1] is None and "RuntimeError: bad header" in got[0][2]


@pytest.mark.parametrize("readers", [{"loader_workers": 0}, {"loader_workers": 2},
                                     {"loader_workers": 2, "loader_processes": True}])
def test_a_refused_subject_is_not_read_and_keeps_its_place(readers):
    """The subjects refused before reading (an MR series under an HU window) come with
    their reason, in the items' order, and no reader touches their file."""
    from types import SimpleNamespace

    from mmpipe.encode.volume import load_volumes

    def transform(source):
        if source.startswith("s1"):
            raise AssertionError("a refused subject was read")
        return torch.full((1, 2, 2, 2), float(source[1]))

    items = [SimpleNamespace(subject_id=f"s{i}", source=f"s{i}.nii.gz") for i in range(4)]
    got = list(load_volumes(items, transform, readers, refused={"s1": "its series is MR"}))
    assert [(s, e) for s, _, e in got] == [("s0", None), ("s1", "its series is MR"),
                                           ("s2", None), ("s3", None)]
    assert [float(t[0, 0, 0, 0]) for _, t, _ in got if t is not None] == [0.0, 2.0, 3.0]


@pytest.mark.parametrize("error", [
    OSError(116, "Stale file handle"),           # NFS: the mount's, not the file's
    OSError(107, "Transport endpoint is not connected"),   # sshfs, a FUSE mount
    OSError(12, "Cannot allocate memory"),       # nibabel's memory map under a limit
    OSError(28, "No space left on device"),
    ImportError("libitk.so.5: cannot open shared object file"),
])
def test_a_cause_every_subject_shares_fails_the_job(error):
    """A stale NFS handle, a lost FUSE connection, a memory map refused under an
    address-space limit, a full disk, a library that cannot load: each rejected the
    subjects read after it into a store that looked finished, where a preprocessing shard
    fails its job on the same errors."""
    from types import SimpleNamespace

    from mmpipe.encode.volume import load_volumes

    raised = _fails_the_job_on("later", error)
    assert raised.__notes__ == ["raised on subject 'later' (later.nii.gz)"]
    # a file's own read error (EIO: a bad sector) stays its subject's rejection
    eio = [SimpleNamespace(subject_id="x", source="x.nii.gz")]
    got = list(load_volumes(eio, lambda s: (_ for _ in ()).throw(OSError(5, "I/O error")),
                            {"loader_workers": 0}))
    assert got[0][1] is None and "I/O error" in got[0][2]
