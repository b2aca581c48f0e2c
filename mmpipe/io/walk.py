"""Listing a download's files as its readers need them: ``Path.rglob`` goes neither into
a linked folder (cohorts are often assembled by linking series or slides kept elsewhere)
nor, without a word, into a folder it cannot read, and a file there was lost while its
subject read "ok". Links to nothing (a download's files not fetched) are returned apart,
for the reader to name (:mod:`mmpipe.io.links`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mmpipe.io.links import is_dangling_link


def walk_files(folder: str | Path, keep: Callable[[str], bool] = lambda name: True
               ) -> tuple[list[Path], list[Path]]:
    """The files under ``folder`` whose names ``keep`` keeps, and its links to nothing,
    each sorted. Linked folders are walked (a folder reached twice, by a link loop or two
    links to it, once); a folder that cannot be listed raises its :class:`OSError`, which
    names it."""
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
