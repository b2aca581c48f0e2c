"""Errors that name the subject, the file and the reason.

Bad input never vanishes silently: readers raise :class:`InputError` (or a
subclass), and the callers that process a whole cohort catch it and turn it
into an explicit QC record (``status="rejected"`` with the message).
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

# the disk's, not a file's: nothing can be written anywhere
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# a network mount's: NFS's stale handle and soft-mount timeout, sshfs's or a FUSE mount's
# lost connection (EIO stays a file's: a bad sector is one file's)
MOUNT_ERRNOS = frozenset({errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN})


class MmpipeError(Exception):
    """Base class of every error mmpipe raises on purpose."""


class ConfigError(MmpipeError):
    """The configuration is invalid or incomplete."""


class InputError(MmpipeError):
    """One input file (or folder) cannot be used; says which and why."""

    def __init__(self, reason: str, path: str | Path | None = None, subject: str | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.subject = subject
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.subject is not None:
            parts.append(f"subject {self.subject!r}")
        if self.path is not None:
            parts.append(f"file {self.path}")
        where = ", ".join(parts)
        return f"{where}: {self.reason}" if where else self.reason

    def for_subject(self, subject: str) -> InputError:
        """Return the same error, attributed to ``subject``."""
        self.subject = subject
        self.args = (self._message(),)
        return self


class DicomSeriesError(InputError):
    """A DICOM folder holds no usable series (corrupt, gaps, mixed orientation...)."""


class SlideError(InputError):
    """A whole-slide image cannot be opened, has no tissue or lacks its resolution."""


class MixedTileFeaturesError(InputError):
    """The tile feature files of one modality were made differently (another feature
    encoder, dimension, patch size or magnification): their features do not share one
    space, so no store is written rather than one that silently mixes them."""


class WeightsError(MmpipeError):
    """Encoder weights are missing, unreadable or do not match their checksum."""


class StoreError(MmpipeError):
    """A feature store is missing, incomplete or does not follow the contract."""


class StaleRunError(MmpipeError):
    """A benchmark run on disk is missing, unfinished or trained with other settings than
    the config asks for."""


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is the machine running out of memory, which fails the job (a rerun
    on a larger node succeeds) instead of rejecting the subject: Python's
    :class:`MemoryError`, torch's ``OutOfMemoryError`` (CUDA) and its CPU allocator's
    ``RuntimeError`` ("can't allocate memory"), SimpleITK's ``RuntimeError`` ("Failed to
    allocate memory for image."), an ``OSError`` ENOMEM (a memory map refused under an
    address-space limit, as nibabel maps an uncompressed NIfTI), also as the cause of
    another (MONAI wraps a transform's failure). Read by name and message: no torch
    import."""
    for seen in _causes(err):
        if (isinstance(seen, MemoryError) or type(seen).__name__ == "OutOfMemoryError"
                or (isinstance(seen, OSError) and seen.errno == errno.ENOMEM)):
            return True
        # SimpleITK's (ITK's image buffer): "Failed to allocate memory for image."
        if isinstance(seen, RuntimeError) and any(
                words in str(seen).lower() for words in (
                    "can't allocate memory", "out of memory", "failed to allocate memory")):
            return True
    return False


def shared_cause(err: BaseException) -> bool:
    """Whether ``err`` says nothing about the subject it was raised on: the machine's or
    the install's (:func:`out_of_memory`, a library that cannot be imported, a full or
    read-only disk, a network mount's error), also as the cause of another. Such a
    failure fails the job, where the subject's rejection would have stood in an output
    that looks finished (:mod:`mmpipe.job_failures`)."""
    return out_of_memory(err) or any(
        isinstance(seen, ImportError)
        or (isinstance(seen, OSError) and seen.errno in DISK_ERRNOS | MOUNT_ERRNOS)
        for seen in _causes(err))


def shared_noted(err: BaseException, subject_id: str, path: str | Path) -> bool:
    """:func:`shared_cause`, noting on such an ``err`` the subject it was raised on
    (:func:`note_subject`) for the caller to raise it again."""
    if shared_cause(err):
        note_subject(err, subject_id, path)
        return True
    return False


def _causes(err: BaseException):
    """``err`` and the chain of its causes (``raise ... from``), outermost first."""
    seen: BaseException | None = err
    while seen is not None:
        yield seen
        seen = seen.__cause__


def note_subject(err: BaseException, subject_id: str, path: str | Path) -> None:
    """Note on ``err``, a cause every subject shares about to fail the job (memory, disk),
    the subject it was raised on: an out-of-memory error names no file, and the input
    that needs the larger node is the one to try it with."""
    err.add_note(f"raised on subject {subject_id!r} ({path})")


def unpickler_refusal(err: BaseException) -> str | None:
    """What ``torch.load(weights_only=True)`` refused in a file ("Unsupported global:
    GLOBAL print was not an allowed global by default"), or None for another error:
    torch's message also advises loading the file with its pickles allowed in full,
    which runs their code, and carries terminal colour codes, neither of which belongs
    in a reason."""
    text = str(err)
    if type(err).__name__ != "UnpicklingError" and "Weights only load failed" not in text:
        return None
    why = (text.split("WeightsUnpickler error:")[-1].strip().splitlines() or ["?"])[0]
    return why.split(". Please")[0].strip() or "?"


def pickles_code(err: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a class or function the file's
    pickle names (its code), not bytes no pickle starts with ("curl: (22) ..." read as a
    pickle's GLOBAL opcode, an HTML page)."""
    refused = unpickler_refusal(err)
    return refused is not None and _NAMED_GLOBAL.search(refused) is not None


def read_error_words(err: BaseException) -> str:
    """A reader's error as a reason: a pickle refused says what it holds, and no advice
    to load it unsafely (a file of other bytes, a git-lfs pointer in a model's place,
    is said to be no torch file); any other error, its type and message."""
    refused = unpickler_refusal(err)
    if pickles_code(err):  # a class or function: code
        return (f"the file pickles more than tensors ({refused}); refused without "
                "unpickling it (torch.load weights_only=True)")
    if refused is not None and "torch" in refused:  # torch's own (a DTensor's module)
        return f"torch cannot load it with weights_only ({refused})"
    if refused is not None:  # bytes no pickle starts with: text, an LFS pointer, HTML
        return f"not a file torch saved ({refused})"
    return f"{type(err).__name__}: {err}"


# the refusal of a pickle's class or function by name; text read as a pickle's GLOBAL
# opcode ("curl: (22) ..." starts with c) names no such thing
_NAMED_GLOBAL = re.compile(r"GLOBAL [A-Za-z_][\w.]* was not an allowed global")
