"""Symbolic links to nothing: how a DataLad or git-annex download lists a file it has not
fetched (or one whose storage moved). Listings that ask ``is_file()`` lose such a file
without a word; every reader that lists a download names it instead, in these words."""

from __future__ import annotations

import os
from pathlib import Path

DANGLING_LINK = ("a symbolic link to nothing (a DataLad or git-annex file not fetched, or "
                 "storage that moved)")


def is_dangling_link(path: str | Path) -> bool:
    return os.path.islink(path) and not os.path.exists(path)
