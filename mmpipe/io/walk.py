"""Listing a download's files as its readers need them: ``Path.rglob`` goes neither into
a linked folder (cohorts are often assembled by linking series or slides kept elsewhere)
nor, without a word, into a folder it cannot read, and a file there was lost while its
subject read "ok". Links to nothing (a download's files not fetched) are returned apart,
for the reader to name (:mod:`mmpipe.io.links`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mmpipe.io.links import is_dangling_link

# folders an OS or a disk keeps beside a download, no part of it (and often not listable:
# a .Trash-1000 of another user stopped a whole slide index)
_NOT_DOWNLOAD_FOLDERS = ("lost+found", "System Volume Information", "$RECYCLE.BIN")


def _walked(folder: str | Path) -> Iterator[tuple[str, list[str]]]:
    """(folder, its file names) of ``folder`` and every folder under it, linked ones too:
    a folder reached twice (a link loop, two links to it) once, a link to a folder above
    ``folder`` (whose tree holds other subjects' files) not at all, hidden and system
    folders not at all. A folder that cannot be listed raises its :class:`OSError`."""
    def fail(err: OSError) -> None:
        raise err

    top_real = os.path.realpath(folder)
    seen = {top_real}
    for top, dirs, names in os.walk(folder, followlinks=True, onerror=fail):
        walked = []
        for d in sorted(dirs):
            if not walks_into(d):
                continue
            real = os.path.realpath(os.path.join(top, d))
            if real in seen or lies_above(real, top_real):
                continue
            seen.add(real)
            walked.append(d)
        dirs[:] = walked
        yield top, names


def walks_into(name: str) -> bool:
    """Whether a folder of this name is walked: not a hidden one or the OS's."""
    return not name.startswith(".") and name not in _NOT_DOWNLOAD_FOLDERS


def lies_above(real: str, top_real: str) -> bool:
    """Whether the folder ``real`` (resolved) holds ``top_real``: a link to it leads back
    up the tree, into other subjects' files."""
    return top_real.startswith(real.rstrip(os.sep) + os.sep)


def walk_files(folder: str | Path, keep: Callable[[str], bool] = lambda name: True
               ) -> tuple[list[Path], list[Path]]:
    """The files under ``folder`` whose names ``keep`` keeps, and its links to nothing,
    each sorted, walked as :func:`_walked` says."""
    files: list[Path] = []
    dangling: list[Path] = []
    for top, names in _walked(folder):
        for name in names:
            path = Path(top, name)
            if not keep(name):
                continue
            if path.is_file():
                files.append(path)
            elif is_dangling_link(path):
                dangling.append(path)
    return sorted(files), sorted(dangling)


def holds_a_file(folder: str | Path) -> bool:
    """Whether :func:`walk_files` would find a file or a link to nothing under
    ``folder``, stopping at the first folder that holds one."""
    return any(names for _, names in _walked(folder))
