"""Building blocks several methods share, and the project's training protocol.

Kept apart from any one method so that a job's code hash (``mmpipe.params.train_params``)
can cover what a method really uses without tying it to another method's module.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# The benchmark's default recipe for methods whose paper gives none we could use: MMARE's
# training protocol (thesis 4.3) except that early stopping watches the validation loss
# from epoch MIN_EPOCHS on, not the balanced accuracy: on validation splits of a few dozen
# subjects the balanced accuracy moves in steps of several points and kept epoch-1
# checkpoints (benchmarks/selection_defaults.py measures both). Read by the trainer from a
# method's hparams; a key a method leaves unset (one that follows its own paper's recipe)
# takes the trainer's fallback (mmpipe.bench.trainer.TRAIN_DEFAULTS: no noise, no minimum
# epoch), and each run records the settings that ran.
PROTOCOL_RECIPE: dict[str, Any] = {
    "lr": 1e-4, "weight_decay": 1e-4, "optimizer": "adam", "batch_size": 64,
    "max_epochs": 200, "patience": 25, "sampler": "weighted", "noise_p": 0.3,
    "noise_std": 0.1, "monitor": "loss", "min_epochs": 5,
}


def flat_dim(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape)) if shape else 1


def flat_zero_filled(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x`` [B, *s] as [B, prod(s)] with the rows where ``keep`` [B] is false set to 0.

    ``torch.where`` rather than a product, so that even inf/NaN in an absent row cannot
    leak (0·inf is NaN).
    """
    flat = x.flatten(1) if x.ndim > 1 else x.reshape(-1, 1)  # reshape(0, -1) is ambiguous
    return torch.where(keep.bool().unsqueeze(-1), flat, torch.zeros((), dtype=flat.dtype,
                                                                      device=flat.device))


_MASK_LEVELS = 2 ** 16  # a dropout mask element is one 16-bit draw


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``: each element zeroed with probability ``p``, the
    others scaled by ``1 / (1 - p)``; on CPU its mask comes from 16 random bits an element.

    Every method drops out through this function (or :class:`Dropout`), because torch's CPU
    kernel (``bernoulli_``) draws each mask element with its own call to the generator,
    about 8 ns an element on the development machine: the mask of a 64×512 activation cost
    more than that batch's 512×512 matmul, and dropout took up to 13 % of a method's
    training (``benchmarks/training_time.py``). Here one 64-bit draw gives four elements,
    which takes the whole dropout to about half of ``F.dropout``'s time, forward and
    backward. ``p`` is rounded to a multiple of 2^-16 (at most 8e-6 off) and the scale
    follows the rounded ``p``, so the expectation is kept exactly. On CUDA, where
    ``F.dropout`` is one fused kernel, it is ``F.dropout``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    levels = round(p * _MASK_LEVELS)
    if levels >= _MASK_LEVELS:
        return x * 0.0
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)
    bits = words.view(torch.int16)[:n].view(x.shape)
    keep = bits >= levels - _MASK_LEVELS // 2  # int16 spans [-2^15, 2^15)
    return x * keep.to(x.dtype).mul_(_MASK_LEVELS / (_MASK_LEVELS - levels))


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (the same module otherwise: ``p``, repr, an
    empty state dict)."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def mlp_head(d_in: int, hidden: list[int], n_out: int, dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout blocks through ``hidden`` widths, then a Linear to ``n_out``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(d_in, width), nn.ReLU(), Dropout(dropout)]
        d_in = width
    layers.append(nn.Linear(d_in, n_out))
    return nn.Sequential(*layers)


def check_choice(name: str, key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {key} must be one of {allowed}, got {value!r}")


def nonempty_subsets(n_modalities: int) -> torch.Tensor:
    """The ``2^M − 1`` non-empty modality subsets as bool rows ``[S, M]``; row ``s`` is the
    bit pattern of ``s + 1`` (bit ``j`` = modality ``j``)."""
    codes = torch.arange(1, 2 ** n_modalities)
    return (codes.unsqueeze(1) >> torch.arange(n_modalities)) & 1 == 1


def keep_random(present: torch.Tensor, keep_count: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``present`` [B, M] keeps ``keep_count[b]`` of its present modalities,
    chosen uniformly at random (global torch RNG, drawn from shapes only, never values);
    also returns each row's first modality of that random order, which is kept when
    ``keep_count >= 1``. Modality dropout of MUSE's edge drop and ShaSpec's random mode."""
    keys = torch.rand(present.shape, device=present.device) + (~present).float() * 2.0
    rank = keys.argsort(dim=1).argsort(dim=1)  # random rank among the present ones first
    return present & (rank < keep_count.unsqueeze(1)), keys.argmin(dim=1)


def modality_dropout(present: torch.Tensor, p: float) -> torch.Tensor:
    """``present`` [B, M] less each present modality dropped with probability ``p``; a row
    that would lose them all keeps one of its present modalities, chosen uniformly (global
    torch RNG, two draws of ``present``'s shape whatever ``p``, never of the values).
    UniLMMV's per-subject modality dropout and HAM's channel dropout: one algorithm, which
    each had spelled alike."""
    present = present.bool()
    keep = present & ~(torch.rand(present.shape, device=present.device) < p)
    pick = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
    restore = F.one_hot(pick.argmax(1), present.shape[1]).bool() & present
    return torch.where(keep.any(1, keepdim=True), keep, restore)


def masked_mean(stack: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean over the modality axis of ``stack`` [B, M, *s] of the present entries only
    (``present`` [B, M]); zeros for a row with none. ``torch.where``, as
    :func:`flat_zero_filled`: an absent entry's inf or NaN cannot reach the mean."""
    keep = present.bool().reshape(*present.shape, *[1] * (stack.ndim - 2))
    total = torch.where(keep, stack, torch.zeros((), dtype=stack.dtype,
                                                 device=stack.device)).sum(1)
    count = present.to(stack.dtype).sum(1).clamp_min(1.0)
    return total / count.reshape(-1, *[1] * (total.ndim - 1))


def mask_attention_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention scores [B, heads, N, N] under the outer product of the token mask [B, N]:
    a token neither attends to nor is read by an absent one. The fill is the dtype's
    finite minimum (UniLMMV's official -1e9): a fully masked row (an absent query) stays
    finite, where -inf turned it into NaN that a later zero weight could not cancel."""
    allowed = mask[:, None, :, None] & mask[:, None, None, :]
    return scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)


def prepend_token(tokens: torch.Tensor, mask: torch.Tensor, token: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """A learned token [1, 1, D] before ``tokens`` [B, N, D] (a CLS or summary token),
    and its column, always present, before ``mask`` [B, N]."""
    b = tokens.shape[0]
    return (torch.cat([token.expand(b, -1, -1), tokens], dim=1),
            torch.cat([mask.new_ones(b, 1), mask], dim=1))
