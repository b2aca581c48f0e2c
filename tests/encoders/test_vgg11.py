"""VGG11 trunk: torchvision's layer indices, strict loading of a torchvision-layout file."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmpipe.encoders.vgg11 import VGG11Features, build_vgg11_slices
from mmpipe.encoders.weights import sha256_file
from mmpipe.errors import WeightsError

# torchvision vgg11 (config "A"): features index -> (in, out) of each conv; pools after 1,2,4,6,8th
CONVS = {0: (3, 64), 3: (64, 128), 6: (128, 256), 8: (256, 256), 11: (256, 512),
         13: (512, 512), 16: (512, 512), 18: (512, 512)}
POOLS = (2, 5, 10, 15, 20)


def _torchvision_vgg11_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (cin, cout) in CONVS.items():
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    # the classifier (25088→4096→4096→1000) is dropped on load; small stand-ins keep the test light
    for i in (0, 3, 6):
        sd[f"classifier.{i}.weight"] = torch.zeros(4, 4)
        sd[f"classifier.{i}.bias"] = torch.zeros(4)
    return sd


def _reference(sd, x):
    for i in range(21):
        if i in CONVS:
            x = F.relu(F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1))
        elif i in POOLS:
            x = F.max_pool2d(x, 2, 2)
    return x


def test_layer_indices_match_torchvision():
    feats = VGG11Features().features
    assert len(feats) == 21
    for i, m in enumerate(feats):
        if i in CONVS:
            assert isinstance(m, nn.Conv2d) and (m.in_channels, m.out_channels) == CONVS[i]
        elif i in POOLS:
            assert isinstance(m, nn.MaxPool2d)
        else:
            assert isinstance(m, nn.ReLU)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    sd = _torchvision_vgg11_state_dict()
    path = tmp_path_factory.mktemp("w") / "vgg11-8a719046.pth"
    torch.save(sd, path)
    return path, sd


def test_torchvision_checkpoint_loads_strictly(checkpoint):
    path, sd = checkpoint
    net, info = build_vgg11_slices({"weights": str(path)})
    assert info.sha256 == sha256_file(path) and not info.random_init
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = net(x)
    assert out.shape == (2, 512, 2, 2)
    assert torch.allclose(out, _reference(sd, x), atol=1e-5)


def test_224_gives_7x7(checkpoint):
    path, _ = checkpoint
    net, _ = build_vgg11_slices({"weights": str(path)})
    with torch.inference_mode():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 512, 7, 7)


def test_missing_weights_and_random_init(caplog):
    with pytest.raises(WeightsError, match="vgg11-8a719046.pth"):
        build_vgg11_slices({"weights": None})
    net, info = build_vgg11_slices({"allow_random_init": True, "name": "my_vgg"})
    assert info.random_init and "my_vgg" in caplog.text and "RANDOM WEIGHTS" in caplog.text
    # the same random weights on every build (a rerun must not change the store), drawn
    # without touching the caller's random state
    state = torch.random.get_rng_state()
    again, _ = build_vgg11_slices({"allow_random_init": True})
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 again.state_dict().values(), strict=True))


def test_batchnorm_checkpoint_is_rejected(tmp_path):
    sd = _torchvision_vgg11_state_dict()
    sd["features.1.running_mean"] = torch.zeros(64)  # a vgg11_bn file has BN layers
    path = tmp_path / "vgg11_bn.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="features.1.running_mean"):
        build_vgg11_slices({"weights": str(path)})
