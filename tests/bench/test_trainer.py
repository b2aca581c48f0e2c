"""The trainer's noise augmentation (MMARE thesis 4.3)."""

from __future__ import annotations

import torch

from mmpipe.bench.trainer import _augment


def test_noise_lands_on_present_features_of_a_share_p_of_the_rows_only():
    n = 4000
    x = {"a": torch.zeros(n, 8), "b": torch.zeros(n, 3, 4)}
    present = torch.ones(n, 2, dtype=torch.bool)
    present[::2, 1] = False
    out = _augment(x, present, 0.3, 0.1, torch.Generator().manual_seed(0))
    for j, (m, v) in enumerate(out.items()):
        assert v.shape == x[m].shape
        hit = v.reshape(n, -1).ne(0).any(1)
        assert not hit[~present[:, j]].any()  # an absent modality stays absent
        share = hit[present[:, j]].float().mean().item()
        assert abs(share - 0.3) < 0.04
        noise = v[hit]
        assert noise.ne(0).all() and abs(noise.std().item() - 0.1) < 0.01


def test_noise_follows_the_generator_and_leaves_the_input_alone():
    x = {"a": torch.randn(64, 5)}
    present = torch.ones(64, 1, dtype=torch.bool)
    before = x["a"].clone()
    a = _augment(x, present, 0.3, 0.1, torch.Generator().manual_seed(4))
    b = _augment(x, present, 0.3, 0.1, torch.Generator().manual_seed(4))
    assert torch.equal(a["a"], b["a"]) and torch.equal(x["a"], before)
    assert _augment(x, present, 0.0, 0.1, torch.Generator()) is x
