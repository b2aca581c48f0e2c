"""Listing a download's files as its readers need them: ``Path.rglob`` goes neither into
a linked folder (cohorts are often assembled by linking series or slides kept elsewhere)
nor, without a word, into a folder it cannot read, and a file there was lost while its
subject read "ok". Links to nothing (a download's files not fetched) are returned apart,
for the reader to name (:mod:`mmpipe.io.links`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

# folders an OS or a disk keeps beside a download, no part of it (and often not listable:
# a .Trash-1000 of another user stopped a whole slide index)
_NOT_DOWNLOAD_FOLDERS = ("lost+found", "System Volume Information", "$RECYCLE.BIN")


def _walked(folder: str | Path) -> Iterator[tuple[str, list[os.DirEntry]]]:
    """(folder, its entries that are not folders) of ``folder`` and every folder under
    it, linked ones too: a folder reached twice (a link loop, two links to it) once, a
    link to a folder above ``folder`` (whose tree holds other subjects' files) not at all,
    hidden and system folders not at all. One ``scandir`` a folder: an entry says its type
    without a stat (a link's target is stat'ed). A folder that cannot be listed raises its
    :class:`OSError`, which names it."""
    top_real = os.path.realpath(folder)
    seen = {top_real}
    stack = [os.fspath(folder)]
    while stack:
        here = stack.pop()
        with os.scandir(here) as it:
            entries = sorted(it, key=lambda e: e.name)
        others, below = [], []
        for entry in entries:
            if not entry.is_dir():
                others.append(entry)
            elif walks_into(entry.name):
                real = os.path.realpath(entry.path)
                if real not in seen and not lies_above(real, top_real):
                    seen.add(real)
                    below.append(entry.path)
        yield here, others
        stack.extend(reversed(below))  # depth first, in name order


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
    for _, entries in _walked(folder):
        for entry in entries:
            if not keep(entry.name):
                continue
            if entry.is_file():
                files.append(Path(entry.path))
            elif not_fetched(entry):
                dangling.append(Path(entry.path))
    return sorted(files), sorted(dangling)


def not_fetched(entry: os.DirEntry) -> bool:
    """Whether an entry is a link to nothing (:data:`mmpipe.io.links.DANGLING_LINK`)."""
    return entry.is_symlink() and not os.path.exists(entry.path)


def holds_a_file(folder: str | Path) -> bool:
    """Whether :func:`walk_files` would find a file or a link to nothing under
    ``folder``, stopping at the first folder that holds one."""
    return any(entries for _, entries in _walked(folder))


def folder_stamps(folder: str | Path) -> list[list]:
    """``[folder, mtime]`` of ``folder`` and each folder under it, as :func:`walk_files`
    walks them, and ``[link, "not fetched"]`` of each link to nothing, whose folder's
    mtime does not move when ``datalad get`` fetches it (relative to ``folder``)."""
    stamps: list[list] = []
    for here, entries in _walked(folder):
        stamps.append([os.path.relpath(here, folder), os.stat(here).st_mtime_ns])
        stamps += [[os.path.relpath(e.path, folder), "not fetched"]
                   for e in entries if not_fetched(e)]
    return stamps
