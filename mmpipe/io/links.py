"""Symbolic links in a download: links to nothing, how a DataLad or git-annex download
lists a file it has not fetched (or one whose storage moved), and links to folders, how
cohorts are often assembled from series or slides kept elsewhere. Listings that ask
``is_file()`` lose the first without a word, and ``Path.rglob`` does not go into the
second (nor into a folder it cannot read); every reader that lists a download names the
first, in these words, and walks the second with :func:`walk_files`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

DANGLING_LINK = ("a symbolic link to nothing (a DataLad or git-annex file not fetched, or "
                 "storage that moved)")


def is_dangling_link(path: str | Path) -> bool:
    return os.path.islink(path) and not os.path.exists(path)


def walk_files(folder: str | Path, keep: Callable[[str], bool] = lambda name: True
               ) -> tuple[list[Path], list[Path]]:
    """The files under ``folder`` whose names ``keep`` keeps, and its links to nothing,
    each sorted. Linked folders are walked (a folder reached twice, by a link loop or two
    links to it, once); a folder that cannot be listed raises its :class:`OSError`, which
    names it: ``Path.rglob`` went past both without a word, and a series or slide in such
    a folder was lost while the subject read "ok"."""
    def fail(err: OSError) -> None:
        raise err

    files: list[Path] = []
    dangling: list[Path] = []
    seen = {os.path.realpath(folder)}
    for top, dirs, names in os.walk(folder, followlinks=True, onerror=fail):
        walked = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(top, d))
            if real not in seen:
                seen.add(real)
                walked.append(d)
        dirs[:] = walked
        for name in names:
            path = Path(top, name)
            if not keep(name):
                continue
            if path.is_file():
                files.append(path)
            elif is_dangling_link(path):
                dangling.append(path)
    return sorted(files), sorted(dangling)
