"""Encoder weights as a user gets them wrong: a configured file that is not there (even
with ``allow_random_init``), a file whose SHA-256 is not the configured one, a file of
another architecture. Each stops the encoding job with an error naming the file and the
encoder entry, before anything is written; the right file loads strictly."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from mmpipe.encoders.med3d import build_med3d_network
from mmpipe.encoders.weights import sha256_file
from mmpipe.errors import WeightsError
from tests.reliability.conftest import build, csv_cohort_config, encode, with_cohort, write_csv


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """MedicalNet-layout checkpoints of Med3D depth 10: right, and of the wrong depth."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    right = {"state_dict": {f"module.{k}": v for k, v in
                            build_med3d_network(10).state_dict().items()}}
    torch.save(right, folder / "resnet_10.pth")
    torch.save({"state_dict": build_med3d_network(18).state_dict()}, folder / "resnet_18.pth")
    return folder


@pytest.fixture
def cohort(tmp_path, base_config):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        path = tmp_path / f"v{i}.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(100, 20, (16, 16, 8)).astype(np.float32),
                                 np.eye(4)), str(path))
        rows.append({"id": f"s{i}", "y": i, "mri": str(path)})
    mods = {"mri": {"kind": "volume", "column": "mri", "encoders": ["med3d_demo"]}}
    return tmp_path, csv_cohort_config(write_csv(tmp_path / "c.csv", rows), mods)


def _encode(cohort, base_config, **med3d):
    tmp_path, cohort_cfg = cohort
    cfg = with_cohort(base_config, cohort_cfg)
    cfg["encoders"]["med3d_demo"].update(depth=10, **med3d)
    cfg["encoders"]["med3d_demo"]["transform"]["resize"] = [8, 16, 16]
    layout = build(tmp_path, cfg)
    return layout, lambda: encode(layout, cfg, "mri", "med3d_demo")


def test_a_configured_file_that_is_missing_is_an_error_not_random_weights(cohort, base_config):
    layout, run = _encode(cohort, base_config, weights="weights/resnet_10_23dataset.pth",
                          allow_random_init=True)
    with pytest.raises(WeightsError) as info:
        run()
    assert "resnet_10_23dataset.pth" in str(info.value)
    assert "encoders.med3d_demo.weights" in str(info.value)
    assert not layout.store("mri", "med3d_demo").exists()


def test_a_file_with_another_sha256_is_an_error(cohort, base_config, weights):
    path = weights / "resnet_10.pth"
    layout, run = _encode(cohort, base_config, weights=str(path), sha256="ab" * 32)
    with pytest.raises(WeightsError, match="SHA-256 mismatch") as info:
        run()
    assert sha256_file(path) in str(info.value) and str(path) in str(info.value)
    assert not layout.store("mri", "med3d_demo").exists()


def test_a_file_of_another_architecture_is_an_error(cohort, base_config, weights):
    _, run = _encode(cohort, base_config, weights=str(weights / "resnet_18.pth"))
    with pytest.raises(WeightsError, match="do not match the architecture"):
        run()


def test_the_right_file_loads_and_is_recorded(cohort, base_config, weights):
    path = weights / "resnet_10.pth"
    _, run = _encode(cohort, base_config, weights=str(path), sha256=sha256_file(path),
                     allow_random_init=False)
    store = run()
    assert store.attrs["weights_random_init"] is False
    assert store.attrs["weights_sha256"] == sha256_file(path)
    assert store.present.all()
