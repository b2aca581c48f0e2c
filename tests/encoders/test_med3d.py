"""Med3D must reproduce MedicalNet's network, checked against a functional re-implementation
of Tencent/MedicalNet ``models/resnet.py`` that reads a MedicalNet-layout state_dict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmpipe.encoders.med3d import build_med3d, build_med3d_network, layer4_features
from mmpipe.encoders.weights import sha256_file
from mmpipe.errors import ConfigError, WeightsError

# MedicalNet: (block, blocks per layer, shortcut) per depth (README "parameter settings")
ARCH = {10: ("basic", [1, 1, 1, 1], "B"), 18: ("basic", [2, 2, 2, 2], "A"),
        50: ("bottleneck", [3, 4, 6, 3], "B")}


def _randomise_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return net


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                        sd[f"{p}.bias"], training=False, eps=1e-5)


def _shortcut(x, sd, p, planes, stride, shortcut):
    if f"{p}.downsample.0.weight" in sd:  # type B: 1x1x1 conv + BN
        return _bn(F.conv3d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
    if shortcut == "A" and (stride != 1 or x.shape[1] != planes):
        out = F.avg_pool3d(x, kernel_size=1, stride=stride)
        pad = torch.zeros(out.shape[0], planes - out.shape[1], *out.shape[2:])
        return torch.cat([out, pad], dim=1)
    return x


def medicalnet_block(x, sd, p, kind, stride, dilation, shortcut):
    """MedicalNet BasicBlock / Bottleneck: conv3x3x3(stride, dilation, padding=dilation)."""
    if kind == "basic":
        out = F.relu(_bn(F.conv3d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=dilation,
                                  dilation=dilation), sd, f"{p}.bn1"))
        out = _bn(F.conv3d(out, sd[f"{p}.conv2.weight"], padding=dilation, dilation=dilation),
                  sd, f"{p}.bn2")
        planes = sd[f"{p}.conv2.weight"].shape[0]
    else:
        out = F.relu(_bn(F.conv3d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
        out = F.relu(_bn(F.conv3d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=dilation,
                                  dilation=dilation), sd, f"{p}.bn2"))
        out = _bn(F.conv3d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
        planes = sd[f"{p}.conv3.weight"].shape[0]
    return F.relu(out + _shortcut(x, sd, p, planes, stride, shortcut))


def medicalnet_forward(sd, x, depth):
    """MedicalNet ResNet up to layer4 (strides 1,2,1,1; dilations 1,1,2,4) + global average."""
    kind, layers, shortcut = ARCH[depth]
    x = F.relu(_bn(F.conv3d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool3d(x, kernel_size=3, stride=2, padding=1)
    for li, (n, stride, dil) in enumerate(zip(layers, (1, 2, 1, 1), (1, 1, 2, 4), strict=True)):
        for b in range(n):
            x = medicalnet_block(x, sd, f"layer{li + 1}.{b}", kind, stride if b == 0 else 1, dil,
                                 shortcut)
    return x


def _medicalnet_checkpoint(net: nn.Module, path) -> None:
    """Save ``net``'s weights the way MedicalNet's pretrained files hold them."""
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    c = [m for m in net.layer4.modules() if isinstance(m, nn.BatchNorm3d)][-1].num_features
    sd["module.conv_seg.0.weight"] = torch.randn(c, 32, 2, 2, 2)
    sd["module.conv_seg.0.bias"] = torch.randn(32)
    sd["module.conv_seg.1.weight"] = torch.ones(32)
    sd["module.conv_seg.4.weight"] = torch.randn(32, 32, 3, 3, 3)
    sd["module.conv_seg.6.weight"] = torch.randn(2, 32, 1, 1, 1)
    torch.save({"state_dict": sd}, path)


@pytest.mark.parametrize("depth", [10, 18, 50])
def test_medicalnet_checkpoint_loads_strictly_and_matches_reference(depth, tmp_path):
    torch.manual_seed(depth)
    src = _randomise_bn(build_med3d_network(depth)).eval()
    ckpt = tmp_path / f"resnet_{depth}_23dataset.pth"
    _medicalnet_checkpoint(src, ckpt)

    net, info = build_med3d({"depth": depth, "weights": str(ckpt)})
    assert not info.random_init and info.sha256 == sha256_file(ckpt) and info.source == str(ckpt)
    assert not net.training and not any(p.requires_grad for p in net.parameters())

    x = torch.randn(2, 1, 16, 32, 32)
    with torch.inference_mode():
        out = net(x)
        expected = src(x)
        fmap = layer4_features(net, x)
        ref = medicalnet_forward({k: v for k, v in src.state_dict().items()}, x, depth)
    dim = 2048 if depth == 50 else 512
    assert out.shape == (2, dim)
    assert torch.allclose(out, expected, atol=1e-5)
    # D/8 x H/8 x W/8: conv1 stride 2, maxpool 2, layer2 stride 2; layer3/4 dilated, stride 1
    assert fmap.shape == (2, dim, 2, 4, 4)
    assert torch.allclose(fmap, ref, atol=1e-4, rtol=1e-4)
    assert torch.allclose(out, ref.mean(dim=(2, 3, 4)), atol=1e-4, rtol=1e-4)


def test_layer4_spatial_size_is_an_eighth():
    net = build_med3d_network(18).eval()
    with torch.inference_mode():
        assert layer4_features(net, torch.randn(1, 1, 24, 48, 40)).shape == (1, 512, 3, 6, 5)


def test_dilation_attributes():
    net = build_med3d_network(18)
    for layer, d in (("layer3", 2), ("layer4", 4)):
        for block in getattr(net, layer):
            for conv in (block.conv1, block.conv2):
                assert conv.stride == (1, 1, 1)
                assert conv.dilation == (d, d, d) and conv.padding == (d, d, d)
    assert net.layer2[0].conv1.stride == (2, 2, 2) and net.layer2[0].conv1.dilation == (1, 1, 1)
    net50 = build_med3d_network(50)
    assert net50.layer3[0].conv2.dilation == (2, 2, 2) and net50.layer3[0].conv2.stride == (1, 1, 1)
    assert net50.layer4[0].downsample[0].stride == (1, 1, 1)
    assert net50.layer2[0].downsample[0].stride == (2, 2, 2)


@pytest.mark.parametrize("depth,layer,d", [(18, "layer3", 2), (18, "layer4", 4), (10, "layer3", 2)])
def test_first_dilated_block_equals_functional_medicalnet_block(depth, layer, d):
    """One block (with its channel-changing shortcut) against F.conv3d with dilation d."""
    torch.manual_seed(1)
    net = _randomise_bn(build_med3d_network(depth)).eval()
    block = getattr(net, layer)[0]
    cin = block.conv1.in_channels
    x = torch.randn(1, cin, 4, 6, 6)
    sd = {k: v for k, v in block.state_dict().items()}
    with torch.inference_mode():
        ours = block(x.clone())
        ref = medicalnet_block(x, {f"b.{k}": v for k, v in sd.items()}, "b", "basic", 1, d,
                               ARCH[depth][2])
    assert ours.shape == (1, block.conv1.out_channels, 4, 6, 6)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_random_init_and_missing_weights(caplog):
    net, info = build_med3d({"depth": 18, "allow_random_init": True})
    assert info.random_init and info.source == "random-init"
    assert "RANDOM WEIGHTS" in caplog.text
    with pytest.raises(WeightsError, match="resnet_18_23dataset.pth"):
        build_med3d({"depth": 18, "weights": None})
    with pytest.raises(ConfigError):
        build_med3d({"depth": 19, "allow_random_init": True})


def test_wrong_depth_checkpoint_is_rejected(tmp_path):
    ckpt = tmp_path / "resnet_10.pth"
    _medicalnet_checkpoint(build_med3d_network(10), ckpt)
    with pytest.raises(WeightsError, match="do not match"):
        build_med3d({"depth": 18, "weights": str(ckpt)})


@pytest.mark.parametrize("saved, asked, legacy", [(10, 18, True), (34, 18, False),
                                                  (50, 34, False), (18, 10, True)])
def test_a_file_of_another_depth_is_named_with_the_depth_to_set(saved, asked, legacy,
                                                                tmp_path):
    """The refusal listed 96 unexpected keys and never said that the file was MedicalNet's
    of another depth, nor that ``depth`` (18 by default) chooses it. MedicalNet's files
    (2019) are in torch's legacy format, which a memory-mapped read refuses."""
    ckpt = tmp_path / f"resnet_{saved}.pth"
    _medicalnet_checkpoint(build_med3d_network(saved), ckpt)
    if legacy:
        torch.save(torch.load(ckpt, weights_only=True), ckpt,
                   _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match=rf"do not match.*the file holds MedicalNet's "
                                           rf"resnet{saved}, not resnet{asked}: set "
                                           rf"encoders\.med3d\.depth: {saved}"):
        build_med3d({"depth": asked, "weights": str(ckpt), "name": "med3d"})
