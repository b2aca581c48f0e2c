"""Which failures of one subject's preprocessing reject that subject and which fail the
shard's job.

A reader's error on one damaged file (pydicom's ``NotImplementedError`` on a broken
element, OpenSlide's ``KeyError`` on a property name, Pillow's ``OSError`` on a cut
file) is that subject's: it is rejected, named, and the shard goes on. A cause every
subject shares is the job's: a library that cannot be imported, a full or read-only
disk, running out of memory. Rejected one by one, those left a shard that looked
finished with every subject rejected, which Snakemake never reruns; so they fail the
job, and a shard whose every subject failed with an error no reader names fails too.
"""

from __future__ import annotations

import errno
from pathlib import Path

from mmpipe.errors import InputError, out_of_memory

# the disk's, not a file's: nothing can be written anywhere
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def shared_cause(err: BaseException) -> bool:
    """Whether ``err`` says nothing about the subject: the machine's or the install's."""
    return (out_of_memory(err) or isinstance(err, ImportError)
            or (isinstance(err, OSError) and err.errno in _DISK_ERRNOS))


def as_subject_error(err: Exception, what: str, path: str | Path) -> InputError:
    """``err`` as the subject's :class:`InputError` (``what`` failed on ``path``)."""
    if isinstance(err, InputError):
        return err
    return InputError(f"cannot {what}: {type(err).__name__}: {err}", path=path)


def check_not_all_unnamed(failures: list[tuple[str, Exception]], n_subjects: int,
                          what: str) -> None:
    """Fail the job when every one of ``n_subjects`` failed with an error that is no
    reader's :class:`InputError` (a cause they share, not each file's)."""
    unnamed = [(sid, e) for sid, e in failures if not isinstance(e, InputError)]
    if n_subjects and len(unnamed) == n_subjects:
        shown = "; ".join(f"{sid}: {type(e).__name__}: {e}" for sid, e in unnamed[:3])
        raise RuntimeError(f"every one of the shard's {n_subjects} subjects failed to {what} "
                           f"with an unexpected error, a cause they share rather than each "
                           f"file's; no output is written ({shown})")
