"""What an encoding loop works with: the store as it sees it (one bad embedding rejects
one subject), and the forward pass at the encoder's precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmpipe.encode.job import EncodeJob, SubjectWriter, build_network, forward
from mmpipe.store import FeatureStoreWriter, encoding_signature, read_features


def test_a_non_finite_or_misshapen_embedding_rejects_its_subject_only(tmp_path):
    ids = ["a", "nan", "inf", "shape", "b"]
    with FeatureStoreWriter(tmp_path / "s.zarr", ids, (3,), {}) as store:
        writer = SubjectWriter(store, notes={"b": "converted; skipped 1 of 9 files: x.dcm"})
        assert writer.write("a", np.ones(3))
        assert not writer.write("nan", np.array([1.0, np.nan, 2.0]))
        assert not writer.write("inf", np.array([1.0, np.inf, 2.0]))
        assert not writer.write("shape", np.ones(4))
        assert writer.write("b", np.full(3, 2.0))
        store.commit()
    f = read_features(tmp_path / "s.zarr")
    rows = {s: (st, r) for s, st, r in zip(f.subject_id, f.status, f.reason, strict=True)}
    assert rows["a"] == ("ok", "")
    assert rows["b"] == ("ok", "converted; skipped 1 of 9 files: x.dcm")
    assert rows["nan"][0] == rows["inf"][0] == rows["shape"][0] == "rejected"
    assert "1 non-finite value(s) (NaN/inf) of 3" in rows["nan"][1]
    assert "shape (4,)" in rows["shape"][1]
    np.testing.assert_array_equal(f.emb[0], np.ones(3))
    assert np.isnan(f.emb[1]).all() and not f.present[1]


def _job(precision=None, device="cpu"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 16))
    cfg = {"type": "vgg11_slices"} if precision is None else {"type": "vgg11_slices",
                                                              "precision": precision}
    return EncodeJob(cfg=cfg, params={}, modality="ct", device=torch.device(device),
                     net=net.eval().to(device))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_forward_at_the_encoders_precision(device):
    """float32 by default: on the CPU the network's own result, on CUDA (TF32 off, as
    build_network sets it) the CPU's to float32 rounding, since its kernels sum in another
    order; bfloat16 under autocast: float32 out, close, not the same."""
    from mmpipe.encode.job import exact_float32

    x = torch.randn(4, 3, 16, 16)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    try:
        exact_float32(torch.device(device), "float32")
        ref = forward(_job(device=device), x)
        low = forward(_job("bfloat16", device), x)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
    assert ref.dtype == low.dtype == torch.float32 and ref.device.type == "cpu"
    with torch.inference_mode():
        cpu = _job().net(x)
    if device == "cpu":
        assert torch.equal(ref, cpu)
    else:
        torch.testing.assert_close(ref, cpu, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ref, low)
    assert torch.allclose(ref, low, rtol=0.05, atol=0.05)


def test_a_lower_precision_is_in_the_stores_signature():
    cfg = {"type": "med3d", "depth": 10, "allow_random_init": True,
           "transform": {"resize": [8, 16, 16]}}
    plain = EncodeJob(cfg=dict(cfg), params={}, modality="ct", device=torch.device("cpu"))
    low = EncodeJob(cfg={**cfg, "precision": "bfloat16"}, params={}, modality="ct",
                    device=torch.device("cpu"))
    for job in (plain, low):
        build_network(job)
    assert "precision" not in plain.attrs and low.attrs["precision"] == "bfloat16"
    assert encoding_signature(low.attrs) == {"precision": "bfloat16"}
    assert encoding_signature(plain.attrs) == {}


def test_a_float32_encoder_on_cuda_turns_tf32_off():
    """cuDNN's TF32 convolutions are torch's default: a float32 store from a GPU differed
    from the CPU's by ~1e-3 and recorded nothing."""
    from mmpipe.encode.job import exact_float32

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    try:
        cudnn.allow_tf32 = matmul.allow_tf32 = True
        exact_float32(torch.device("cpu"), "float32")
        exact_float32(torch.device("cuda"), "bfloat16")
        assert cudnn.allow_tf32 and matmul.allow_tf32
        exact_float32(torch.device("cuda"), "float32")
        assert not cudnn.allow_tf32 and not matmul.allow_tf32
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
