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


def test_hidden_and_system_folders_and_links_above_are_not_walked(tmp_path, monkeypatch):
    """A .Trash-1000 of another user (not listable) stopped a whole slide index, and a
    link to a folder above the one walked pulled in every other subject's files."""
    from mmpipe.io.walk import holds_a_file

    top = tmp_path / "cohort" / "P1"
    (top / "series").mkdir(parents=True)
    (top / "series" / "1.dcm").write_bytes(b"1")
    (tmp_path / "cohort" / "P2").mkdir()
    (tmp_path / "cohort" / "P2" / "1.dcm").write_bytes(b"2")
    (top / "all").symlink_to(tmp_path / "cohort", target_is_directory=True)
    for hidden in (".Trash-1000", "lost+found"):
        (top / hidden).mkdir()
        (top / hidden / "old.dcm").write_bytes(b"x")
    scandir = os.scandir

    def refusing(path="."):
        if os.path.basename(str(path)) == ".Trash-1000":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    assert walk_files(top) == ([top / "series" / "1.dcm"], [])
    assert holds_a_file(top)
    (top / "series" / "1.dcm").unlink()
    assert not holds_a_file(top)
