"""mmpipe.params: what a job's params record of the files it reads."""

from __future__ import annotations

import pytest

from mmpipe.errors import InputError
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


def test_a_link_to_nothing_among_the_weights_is_named(tmp_path):
    model = _model(tmp_path)
    (model / "fold_1").symlink_to(tmp_path / "gone", target_is_directory=True)
    with pytest.raises(InputError, match="a link to nothing among the weights") as err:
        weights_sha256(model)
    assert "fold_1" in str(err.value)
