"""Model bundles are plain data: loaded without running code, malformed ones named."""

from __future__ import annotations

import pickle

import pytest
import torch

from mmpipe.bench.bundle import FORMAT, ModelBundleError, load_bundle, save_bundle
from tests.conftest import RunsCode

GOOD = {"method": {"type": "deepsets"}, "state": {"w": torch.zeros(2)}, "modalities": ["a"],
        "shapes": {"a": [2]}, "n_classes": 2, "label": "y", "label_values": [0, 1],
        "normalizer": {"mode": "none", "shapes": {"a": [2]}, "stats": {}},
        "feature_set": {"a": "precomputed"}, "encodings": {"a": {}}, "meta": {}}



def test_a_bundle_round_trips_with_weights_only(tmp_path):
    import numpy as np

    save_bundle(tmp_path / "model.pt", **{**GOOD, "label_values": [np.int64(0), np.int64(1)]})
    bundle = load_bundle(tmp_path)
    assert bundle["format"] == FORMAT and bundle["label_values"] == [0, 1]


def test_a_bundle_that_runs_code_on_loading_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({**GOOD, "format": FORMAT, "state": {"x": RunsCode(marker)}},
               tmp_path / "model.pt")
    with pytest.raises(ModelBundleError, match="would run code"):
        load_bundle(tmp_path)
    assert not marker.exists()
    # the same file does run code when loaded the unsafe way: the test means something
    torch.load(tmp_path / "model.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("content, message", [
    ({k: v for k, v in GOOD.items() if k != "shapes"}, "'shapes' missing"),
    ({**GOOD, "n_classes": "2"}, "'n_classes' is str"),
    ({**GOOD, "modalities": ["a", "b"]}, "modalities and shapes disagree"),
    # scores named for a third class with no column of its own
    ({**GOOD, "label_values": [0, 1, 2]}, "3 label values for 2 classes"),
    ({**GOOD, "n_classes": 1, "label_values": [0]}, "n_classes is 1"),
    ([1, 2], "a model bundle is a mapping"),
])
def test_a_malformed_bundle_is_a_named_error(tmp_path, content, message):
    if isinstance(content, dict):
        content = {"format": FORMAT, **content}
    torch.save(content, tmp_path / "model.pt")
    with pytest.raises(ModelBundleError, match=message):
        load_bundle(tmp_path)


def test_other_files_are_named_errors(tmp_path):
    with pytest.raises(ModelBundleError, match="no model file"):
        load_bundle(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelBundleError, match="not a readable model file"):
        load_bundle(tmp_path)
    # an HTTP error page saved as the model ("curl: ..." read as a pickle's GLOBAL
    # opcode) was called tampered with, code that would run when loaded
    (tmp_path / "model.pt").write_bytes(b"curl: (22) The requested URL returned error: "
                                        b"404\nmore\n")
    with pytest.raises(ModelBundleError, match="not a readable model file") as err:
        load_bundle(tmp_path)
    assert "would run code" not in str(err.value)
    torch.save({**GOOD, "format": 1}, tmp_path / "model.pt")
    with pytest.raises(ModelBundleError, match="format 1.*retrain the run"):
        load_bundle(tmp_path)
    torch.save({**GOOD, "format": FORMAT + 1}, tmp_path / "model.pt")
    with pytest.raises(ModelBundleError, match="written by a newer mmpipe; upgrade mmpipe"):
        load_bundle(tmp_path)
    # a plain pickle (not torch's zip format) is refused too
    (tmp_path / "model.pt").write_bytes(pickle.dumps(GOOD))
    with pytest.raises(ModelBundleError):
        load_bundle(tmp_path)


def test_what_a_bundle_cannot_hold_is_refused_when_saving(tmp_path):
    from pathlib import Path

    with pytest.raises(ModelBundleError, match=r"bundle.meta.where: .* not PosixPath"):
        save_bundle(tmp_path / "model.pt", **{**GOOD, "meta": {"where": Path("/x")}})
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("change, message", [
    ({"method": {"lr": 1}}, "its method has no 'type'"),
    ({"shapes": {"a": "2"}}, "a shape is not a list of sizes"),
])
def test_a_bundle_with_a_broken_method_or_shape_is_named(tmp_path, change, message):
    torch.save({"format": FORMAT, **GOOD, **change}, tmp_path / "model.pt")
    with pytest.raises(ModelBundleError, match=message):
        load_bundle(tmp_path)


def test_a_bundle_whose_bytes_changed_is_refused(tmp_path):
    """torch.load does not check the zip's checksums: a byte flipped inside a weight (a
    bad copy or disk) loaded, and the run scored with the changed weight."""
    weights = torch.full((256,), 1234.5)
    save_bundle(tmp_path / "model.pt", **{**GOOD, "state": {"w": weights}})
    raw = bytearray((tmp_path / "model.pt").read_bytes())
    at = raw.find(weights[:4].numpy().tobytes())
    assert at > 0
    raw[at + 1] ^= 0xFF
    (tmp_path / "model.pt").write_bytes(bytes(raw))
    # the change is one torch.load does not see
    assert not torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["state"]["w"],
                           weights)
    with pytest.raises(ModelBundleError, match=r"damaged: its record .*data/0 fails its "
                                               r"checksum"):
        load_bundle(tmp_path)
