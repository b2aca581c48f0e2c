"""The shared dropout: F.dropout's contract with a cheaper mask, and every method on it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from mmpipe.methods.blocks import Dropout, dropout

METHODS = Path(__file__).resolve().parents[2] / "mmpipe" / "methods"


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_dropout_zeroes_a_share_p_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, p)
    zeroed = (y == 0).float().mean().item()
    assert zeroed == pytest.approx(p, abs=4 * (p * (1 - p) / x.numel()) ** 0.5 + 1e-5)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-4)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)


def test_dropout_masks_follow_the_seed_and_differ_between_calls():
    x = torch.randn(7, 13, 5)  # a size that is no multiple of four words
    torch.manual_seed(3)
    a, b = dropout(x, 0.3), dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.3), a)
    assert not torch.equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_dropout_gradient_is_its_mask_times_the_scale():
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.5)
    y.sum().backward()
    expected = torch.where(y != 0, 2.0, 0.0)
    assert torch.equal(x.grad, expected)


def test_dropout_keeps_a_lower_precision_dtype():
    x = torch.randn(16, 16, dtype=torch.bfloat16)
    assert dropout(x, 0.2).dtype == torch.bfloat16


def test_dropout_is_the_identity_in_evaluation_and_at_p_zero_and_zero_at_p_one():
    x = torch.randn(8, 8)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, 1.5)


def test_dropout_module_is_an_nn_dropout_that_draws_through_dropout():
    module = Dropout(0.4)
    assert isinstance(module, nn.Dropout) and module.p == 0.4
    assert module.state_dict() == {}
    x = torch.randn(32, 32)
    torch.manual_seed(5)
    expected = dropout(x, 0.4)
    torch.manual_seed(5)
    assert torch.equal(module(x), expected)
    assert module.eval()(x) is x


def test_every_method_drops_out_through_the_shared_dropout():
    # torch's own dropout draws other, slower masks: one method on it would train
    # differently for the same seed and hide the cost the shared one removes
    offenders = [f"{path.name}:{i}" for path in sorted(METHODS.glob("*.py"))
                 if path.name != "blocks.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"nn\.Dropout\(|F\.dropout\(|functional\.dropout\(",
                              line.split("#")[0])]
    assert offenders == []


def test_masked_mean_is_over_present_entries_whatever_the_absent_ones_hold():
    """It masked by a product, so an absent entry's inf or NaN (0 * inf) reached the mean:
    safe only while every caller zeroed its input first."""
    from mmpipe.methods.blocks import masked_mean

    stack = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [float("nan"), float("inf")]],
                          [[float("-inf"), 0.0], [5.0, 7.0], [1.0, 1.0]],
                          [[float("nan"), 1.0], [2.0, 2.0], [3.0, 3.0]]])
    present = torch.tensor([[True, True, False], [False, True, True], [False, False, False]])
    assert torch.equal(masked_mean(stack, present),
                       torch.tensor([[2.0, 3.0], [3.0, 4.0], [0.0, 0.0]]))


def test_modality_dropout_keeps_one_present_modality_and_draws_from_shapes_alone():
    from mmpipe.methods.blocks import modality_dropout

    present = torch.rand(400, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    torch.manual_seed(1)
    keep = modality_dropout(present, 0.7)
    assert not (keep & ~present).any()                       # never adds a modality
    assert torch.equal(keep.any(1), present.any(1))          # never empties a subject
    assert 0.3 < keep.sum() / present.sum() < 0.6   # 1 - p, and the rows given one back
    torch.manual_seed(1)
    assert torch.equal(modality_dropout(present, 0.7), keep)


def test_masked_attention_scores_and_a_prepended_token():
    from mmpipe.methods.blocks import mask_attention_scores, prepend_token

    tokens, mask = torch.randn(2, 3, 4), torch.tensor([[True, False, True], [False] * 3])
    seq, full = prepend_token(tokens, mask, torch.ones(1, 1, 4))
    assert torch.equal(seq[:, 0], torch.ones(2, 4)) and torch.equal(seq[:, 1:], tokens)
    assert full.tolist() == [[True, True, False, True], [True, False, False, False]]
    scores = mask_attention_scores(torch.zeros(2, 1, 4, 4), full)
    low = torch.finfo(scores.dtype).min
    assert (scores[0, 0, 2] == low).all() and (scores[0, 0, :, 2] == low).all()
    assert (scores[0, 0, 0, [0, 1, 3]] == 0).all() and torch.isfinite(scores.softmax(-1)).all()
