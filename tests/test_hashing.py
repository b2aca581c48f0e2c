"""Canonical parameter sets: key order never matters, list order always does."""

from __future__ import annotations

import os
import time

import pytest

from mmpipe import hashing
from mmpipe.hashing import canonical, content_sha256, params_hash, sha256_file


def test_params_hash_ignores_key_order_at_every_depth():
    assert params_hash({"a": 1, "b": {"x": 1, "y": [1, 2]}}) == params_hash(
        {"b": {"y": [1, 2], "x": 1}, "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_lists_keep_their_order():
    assert params_hash({"fields": ["age", "sex"]}) != params_hash({"fields": ["sex", "age"]})


def test_canonical_repr_is_the_same_for_reordered_mappings():
    # Snakemake compares repr(params): the canonical form must print the same
    one = canonical({"b": 1, "a": {"d": (1, 2), "c": None}})
    two = canonical({"a": {"c": None, "d": [1, 2]}, "b": 1})
    assert repr(one) == repr(two)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MMPIPE_HASH_CACHE", str(folder))
    hashing._cached_sha256.cache_clear()
    yield folder
    hashing._cached_sha256.cache_clear()


def _big_file(path, fill=b"a", age_s=60):
    path.write_bytes(fill * (hashing._DISK_CACHE_MIN_BYTES + 10))
    then = time.time_ns() - age_s * 10**9
    os.utime(path, ns=(then, then))
    return path


def _no_reading(monkeypatch):
    """A later process: nothing in memory, and reading the file fails the test."""
    hashing._cached_sha256.cache_clear()

    def read(path, *args, **kwargs):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(hashing, "sha256_file", read)


def test_a_large_files_digest_is_read_once_across_processes(tmp_path, cache_dir, monkeypatch):
    (tmp_path / "model").mkdir()
    weights = _big_file(tmp_path / "model" / "weights.pth")
    first, folder = content_sha256(weights), content_sha256(tmp_path / "model")
    assert first == sha256_file(weights)
    _no_reading(monkeypatch)
    assert content_sha256(weights) == first
    assert content_sha256(tmp_path / "model") == folder


def test_a_file_rewritten_to_the_same_size_and_mtime_is_hashed_again(tmp_path, cache_dir):
    weights = _big_file(tmp_path / "weights.pth")
    first = content_sha256(weights)
    st = os.stat(weights)
    # a change time is only as fine as the file system's clock tick: a rewrite on the
    # tick of the file's last change keeps its ctime, which no stat can tell apart
    time.sleep(0.02)
    with open(weights, "r+b") as fh:  # in place: same inode and size
        fh.write(b"b")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    hashing._cached_sha256.cache_clear()
    assert content_sha256(weights) == sha256_file(weights) != first


def test_a_damaged_cache_entry_is_not_taken_for_a_digest(tmp_path, cache_dir):
    weights = _big_file(tmp_path / "weights.pth")
    good = content_sha256(weights)
    (entry,) = cache_dir.iterdir()
    entry.write_text(good[:20])  # a write cut short
    hashing._cached_sha256.cache_clear()
    assert content_sha256(weights) == good


def test_small_files_are_not_cached_and_an_unwritable_cache_costs_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("MMPIPE_HASH_CACHE", str(blocker / "sha256"))
    hashing._cached_sha256.cache_clear()
    weights = _big_file(tmp_path / "weights.pth")
    assert content_sha256(weights) == sha256_file(weights)
    small = tmp_path / "plans.json"
    small.write_text("{}")
    monkeypatch.setenv("MMPIPE_HASH_CACHE", str(tmp_path / "cache"))
    assert content_sha256(small) == sha256_file(small)
    assert not (tmp_path / "cache").exists()
    hashing._cached_sha256.cache_clear()


def test_a_file_written_moments_ago_or_while_read_is_not_cached(tmp_path, cache_dir,
                                                                monkeypatch):
    """A file modified within the mtime's resolution may change again without a new
    identity (git's racy clean): its digest stays out of the disk cache. One written to
    while it is hashed is read again."""
    fresh = _big_file(tmp_path / "downloading.pth", age_s=0)
    assert content_sha256(fresh) == sha256_file(fresh)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())

    weights = _big_file(tmp_path / "weights.pth")
    reads = []
    real = hashing.sha256_file

    def read_while_written(path, *args):
        reads.append(path)
        if len(reads) == 1:  # the writer appends while the first read runs
            with open(path, "ab") as fh:
                fh.write(b"more")
        return real(path, *args)

    hashing._cached_sha256.cache_clear()
    monkeypatch.setattr(hashing, "sha256_file", read_while_written)
    assert content_sha256(weights) == real(weights)  # the whole file, read again
    assert len(reads) == 2


# a folder's digest (weights folders: TotalSegmentator's, a sentence-transformers model)
def _model(root):
    model = root / "model"
    (model / "fold_0").mkdir(parents=True)
    (model / "plans.json").write_text("{}")
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights 1")
    return model


def test_a_folder_without_links_keeps_its_digest(tmp_path):
    """Weights folders hashed before links were walked keep their params: nothing
    reruns for them."""
    import hashlib

    model = _model(tmp_path)
    (model / ".hidden").mkdir()
    (model / ".hidden" / "x").write_text("x")
    before = hashlib.sha256()  # the digest before: Path.rglob's files in name order
    for f in sorted(p for p in model.rglob("*") if p.is_file()):
        before.update(f.relative_to(model).as_posix().encode())
        before.update(content_sha256(f).encode())
    assert content_sha256(model) == before.hexdigest()


def test_weights_replaced_in_a_linked_subfolder_change_the_digest(tmp_path):
    """Path.rglob went into no linked folder: the weights of a linked
    fold_0 were not hashed, and replacing them reran no mask or store."""
    real = _model(tmp_path / "real")
    model = tmp_path / "model"
    model.mkdir()
    (model / "plans.json").write_text("{}")
    (model / "fold_0").symlink_to(real / "fold_0", target_is_directory=True)
    (model / "again").symlink_to(model, target_is_directory=True)  # a loop: walked once
    before = content_sha256(model)
    assert before == content_sha256(real)  # the same files under the same names
    (real / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights 2")
    assert content_sha256(model) != before


def test_a_link_to_nothing_among_the_weights_counts_and_plans(tmp_path):
    """Planning goes on (the job reading the weights says what is missing), and fetching
    the link's file later changes the digest."""
    model = _model(tmp_path)
    without = content_sha256(model)
    (model / "README.md").symlink_to(tmp_path / "blobs" / "deadbeef")
    before = content_sha256(model)
    assert before != without  # left out, it was no change
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "deadbeef").write_text("fetched")
    assert content_sha256(model) != before


def test_the_digest_does_not_follow_the_file_systems_listing_order(tmp_path, monkeypatch):
    """A folder and a link to it: which name was walked depended on os.walk's listing,
    which a copy to another disk reorders, so moving the weights reran every job."""
    import os

    model = _model(tmp_path)
    (model / "best").symlink_to(model / "fold_0", target_is_directory=True)
    listed = os.walk
    digests = []
    for order in (sorted, lambda names: sorted(names, reverse=True)):
        def walk(top, order=order, **kwargs):
            for here, folders, names in listed(top, **kwargs):
                folders[:] = order(folders)
                yield here, folders, names
        monkeypatch.setattr(os, "walk", walk)
        digests.append(content_sha256(model))
    assert digests[0] == digests[1]
