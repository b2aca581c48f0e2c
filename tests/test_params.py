"""mmpipe.params: what a job's params record of the files it reads."""

from __future__ import annotations

from mmpipe.hashing import content_sha256
from mmpipe.params import weights_sha256


def _model(root):
    model = root / "model"
    (model / "fold_0").mkdir(parents=True)
    (model / "plans.json").write_text("{}")
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights 1")
    return model


def test_a_folder_without_links_keeps_its_digest(tmp_path):
    """Weights folders hashed before keep their params: nothing reruns for them."""
    model = _model(tmp_path)
    (model / ".hidden").mkdir()
    (model / ".hidden" / "x").write_text("x")
    assert weights_sha256(model) == content_sha256(model)
    assert weights_sha256(model / "plans.json") == content_sha256(model / "plans.json")


def test_weights_replaced_in_a_linked_subfolder_change_the_digest(tmp_path):
    """content_sha256's rglob went into no linked folder: the weights of a linked
    fold_0 were not hashed, and replacing them reran no mask or store."""
    real = _model(tmp_path / "real")
    model = tmp_path / "model"
    model.mkdir()
    (model / "plans.json").write_text("{}")
    (model / "fold_0").symlink_to(real / "fold_0", target_is_directory=True)
    (model / "again").symlink_to(model, target_is_directory=True)  # a loop: walked once
    before = weights_sha256(model)
    assert before == weights_sha256(real)  # the same files under the same names
    (real / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights 2")
    assert weights_sha256(model) != before


def test_a_link_to_nothing_among_the_weights_counts_and_plans(tmp_path):
    """Planning goes on (the job reading the weights says what is missing), and fetching
    the link's file later changes the digest."""
    model = _model(tmp_path)
    (model / "README.md").symlink_to(tmp_path / "blobs" / "deadbeef")
    before = weights_sha256(model)
    assert before != content_sha256(model)  # which left it out
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "deadbeef").write_text("fetched")
    assert weights_sha256(model) != before


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
        digests.append(weights_sha256(model))
    assert digests[0] == digests[1]
