"""Which failures of one subject's input reject that subject and which fail the job:
a preprocessing job's (DICOM conversion, slide tiling) or an encoding job's.

A reader's error on one damaged file (pydicom's ``NotImplementedError`` on a broken
element, OpenSlide's ``KeyError`` on a property name, Pillow's ``OSError`` on a cut
file) is that subject's: it is rejected, named, and the job goes on. A cause every
subject shares is the job's (:func:`mmpipe.errors.shared_cause`): a library that cannot
be imported, a full or read-only disk, running out of memory, a network mount that
dropped. Rejected one by one, those left an output that looked finished with its
subjects rejected, which Snakemake never reruns; so they fail the job, and a shard
whose every subject failed with an error no reader names fails too.

An input the manifest names was there when the manifest was built (an adapter rejects
a path not found). One that is not there when the job starts was moved or deleted
since: that subject's rejection. None there is the data's folder or mount missing where
the job ran (a node without the mount); one there at the start and gone at the end is
the mount dropping during the job. Both fail the job: their subjects' inputs
are not defective, and an output of their rejections would stand after the mount is back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from mmpipe.errors import MOUNT_ERRNOS, InputError, shared_noted

_REBUILD = "`snakemake --forcerun manifest` rebuilds the manifest from the files as they are"
_NEXT_STEP = (f"if the data moved, {_REBUILD}; if its mount is missing on this node, mount "
              "it and rerun")
# a subject's rejection for an input moved or deleted since the manifest was built
NOT_THERE = f"not found: there when the manifest was built, not now (moved or deleted; {_REBUILD})"


def not_there_error(path: str | Path, error: type[InputError] = InputError) -> InputError:
    """The subject's rejection for an input moved or deleted since the manifest was
    built (:data:`NOT_THERE`)."""
    return error(NOT_THERE, path=path)


class SharedCauseError(RuntimeError):
    """A job's failure that its subjects share: the job fails and writes nothing."""


def _not_there(path: str | Path) -> bool:
    """Whether nothing is at ``path`` now, a link's target included: the manifest refused
    links to nothing, so one dangling now lost its target since (a cohort folder of links
    into a store whose mount is missing). A mount's error fails the job; any other
    (permissions) is the reader's to name."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError as err:
        if err.errno in MOUNT_ERRNOS:
            raise
    return False


def check_inputs_there(paths: Mapping[str, str | Path]) -> set[str]:
    """The subjects of a job (``subject -> input path``) whose input is not there now.
    Fails the job when none is: the data's folder or mount missing where the job ran (a
    job of one input too: its folder may be an empty mount point, or a folder of links
    into the missing store; a rejection would stand after the mount is back, where a
    deliberate deletion is rebuilt by the manifest the message names)."""
    missing = {sid for sid, path in paths.items() if _not_there(path)}
    if paths and len(missing) == len(paths):
        shown = "; ".join(f"{sid}: {paths[sid]}" for sid in list(paths)[:3])
        raise SharedCauseError(
            f"none of the job's {len(paths)} inputs is where the manifest says ({shown}); "
            f"{_NEXT_STEP}. No output is written")
    return missing


def check_none_went(paths: Mapping[str, str | Path], missing_at_start: set[str],
                    failed: Iterable[str]) -> None:
    """Fail the job when an input there at its start is gone after its subject (one of
    ``failed``) failed: the data went away during the job (a mount that dropped)."""
    went = [sid for sid in failed if sid not in missing_at_start and _not_there(paths[sid])]
    if went:
        shown = "; ".join(f"{sid}: {paths[sid]}" for sid in went[:3])
        raise SharedCauseError(
            f"{len(went)} of the job's inputs were there when the job started and are "
            f"gone now ({shown}): the data went away during the job; {_NEXT_STEP}. No "
            "output is written")


def _as_subject_error(err: Exception, what: str, path: str | Path) -> InputError:
    """``err`` as the subject's :class:`InputError` (``what`` failed on ``path``)."""
    if isinstance(err, InputError):
        return err
    return InputError(f"cannot {what}: {type(err).__name__}: {err}", path=path)


def _check_not_all_unnamed(failures: list[tuple[str, Exception]], n_subjects: int,
                          what: str) -> None:
    """Fail the job when every one of ``n_subjects`` failed with an error that is no
    reader's :class:`InputError` (a cause they share, not each file's)."""
    unnamed = [(sid, e) for sid, e in failures if not isinstance(e, InputError)]
    if n_subjects and len(unnamed) == n_subjects:
        shown = "; ".join(f"{sid}: {type(e).__name__}: {e}" for sid, e in unnamed[:3])
        raise SharedCauseError(f"every one of the job's {n_subjects} subjects failed to "
                               f"{what} with an unexpected error, a cause they share rather "
                               f"than each file's; no output is written ({shown})")


class JobFailures:
    """One job's subjects, judged together as the module says: the inputs not there at
    its start (:func:`check_inputs_there`), each subject's failure (its rejection, or
    the job's shared cause, noted with the subject), and at its end the checks on the
    whole job (:func:`check_none_went`, :func:`_check_not_all_unnamed`)."""

    def __init__(self, paths: Mapping[str, str | Path], what: str):
        self.paths, self.what = dict(paths), what
        self.missing = check_inputs_there(self.paths)
        self.failures: list[tuple[str, Exception]] = []

    def check_there(self, subject_id: str, error: type[InputError] = InputError) -> None:
        """Raise the subject's rejection for an input not there at the start."""
        if subject_id in self.missing:
            raise not_there_error(self.paths[subject_id], error)

    def shared(self, subject_id: str, raised: Exception) -> bool:
        """Whether ``raised`` is the job's (noted with the subject), for the caller to
        raise again."""
        return shared_noted(raised, subject_id, self.paths[subject_id])

    def rejection(self, subject_id: str, raised: Exception) -> InputError:
        """``raised``, not the job's, as the subject's :class:`InputError`."""
        if subject_id not in self.missing:  # a deleted input failed no reader
            self.failures.append((subject_id, raised))
        return _as_subject_error(raised, self.what, self.paths[subject_id]).for_subject(
            subject_id)

    def finish(self) -> None:
        """Fail the job where the job's failures share a cause: inputs gone during the
        job, or every subject read failing with an error no reader names."""
        check_none_went(self.paths, self.missing, (sid for sid, _ in self.failures))
        _check_not_all_unnamed(self.failures, len(self.paths) - len(self.missing), self.what)
