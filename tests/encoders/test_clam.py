"""CLAM ResNet50-trunc: a torchvision-layout ResNet50 state_dict loads strictly and the
features equal torchvision's conv1…layer3 + average pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmpipe.encoders.clam import IMAGENET_MEAN, IMAGENET_STD, build_clam_resnet50, imagenet_tensor
from mmpipe.errors import WeightsError


class TvBottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (v1.5: stride on the 3x3 conv), same names."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class TvResNet50(nn.Module):
    """torchvision.models.resnet50 with its module names (conv1, bn1, layer1..4, fc)."""

    def __init__(self):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(64, 3)
        self.layer2 = self._layer(128, 4, 2)
        self.layer3 = self._layer(256, 6, 2)
        self.layer4 = self._layer(512, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, 1000)

    def _layer(self, planes, blocks, stride=1):
        ds = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                           nn.BatchNorm2d(planes * 4))
        layers = [TvBottleneck(self.inplanes, planes, stride, ds)]
        self.inplanes = planes * 4
        layers += [TvBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def trunc(self, x):  # CLAM resnet50_baseline.forward
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)


@pytest.fixture(scope="module")
def torchvision_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    ref = TvResNet50().eval()
    g = torch.Generator().manual_seed(1)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    path = tmp_path_factory.mktemp("w") / "resnet50-0676ba61.pth"
    torch.save(ref.state_dict(), path)
    return path, ref


def test_torchvision_resnet50_loads_strictly_and_matches(torchvision_checkpoint):
    path, ref = torchvision_checkpoint
    sd = torch.load(path, weights_only=True)
    assert "fc.weight" in sd and "layer1.0.downsample.0.weight" in sd and "layer4.2.bn3.bias" in sd
    net, info = build_clam_resnet50({"weights": str(path)})
    assert not info.random_init and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert not any(k.startswith(("fc.", "layer4.")) for k in net.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        out = net(x)
        expected = ref.trunc(x)
    assert out.shape == (2, 1024)
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)


def test_missing_weights_names_file():
    with pytest.raises(WeightsError, match="resnet50-0676ba61.pth"):
        build_clam_resnet50({})


def test_imagenet_tensor():
    tiles = np.zeros((3, 256, 256, 3), dtype=np.uint8)
    tiles[0] = 255
    tiles[1, ..., 0] = 128
    tiles[2] = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    x = imagenet_tensor(tiles)
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    # constant tiles stay constant through the resize
    assert torch.allclose(x[0].mean(dim=(1, 2)), (1 - mean) / std, atol=1e-5)
    assert torch.allclose(x[1, 0], torch.full((224, 224), (128 / 255 - 0.485) / 0.229), atol=1e-5)
    assert torch.allclose(x[1, 1], torch.full((224, 224), -0.456 / 0.224), atol=1e-5)
    # already 224: no resampling, exact per-pixel normalisation
    y = imagenet_tensor(tiles[2:, :224, :224])
    expected = (torch.from_numpy(tiles[2, :224, :224]).permute(2, 0, 1) / 255 - mean[:, None, None]) \
        / std[:, None, None]
    assert torch.allclose(y[0], expected, atol=1e-6)
    with pytest.raises(ValueError):
        imagenet_tensor(np.zeros((2, 8, 8), dtype=np.uint8))
    # tiles on 0-255 as floats or 16 bits were normalised as if on [0, 1]: 200 became 871
    for dtype in (np.float32, np.uint16):
        with pytest.raises(ValueError, match="expected uint8 tiles"):
            imagenet_tensor(tiles.astype(dtype))
