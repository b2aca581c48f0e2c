from __future__ import annotations

import pytest
import torch

from mmpipe.encoders.device import resolve_device
from mmpipe.errors import ConfigError


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


def test_bad_spec():
    with pytest.raises(ConfigError):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable_is_a_config_error():
    with pytest.raises(ConfigError, match="not available"):
        resolve_device("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_checked():
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
