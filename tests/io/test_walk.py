"""Listing a download: linked folders walked once each, links to nothing named."""

from __future__ import annotations

import os

from mmpipe.io.walk import walk_files


def test_linked_folders_are_walked_once_and_links_to_nothing_are_named(tmp_path):
    kept = tmp_path / "elsewhere"
    kept.mkdir()
    (kept / "a.dcm").write_bytes(b"a")
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "b.dcm").write_bytes(b"b")
    (top / ".hidden").write_bytes(b"")
    (top / "linked").symlink_to(kept, target_is_directory=True)
    (top / "linked_again").symlink_to(kept, target_is_directory=True)  # the same files
    (top / "sub" / "loop").symlink_to(top, target_is_directory=True)
    os.symlink("/nonexistent/annex/key", top / "sub" / "c.dcm")
    files, dangling = walk_files(top, keep=lambda name: not name.startswith("."))
    assert files == [top / "linked" / "a.dcm", top / "sub" / "b.dcm"]
    assert dangling == [top / "sub" / "c.dcm"]
