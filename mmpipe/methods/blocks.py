"""Building blocks several methods share, and the project's training protocol.

Kept apart from any one method so that a job's code hash (``mmpipe.config.train_params``)
can cover what a method really uses without tying it to another method's module.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

# The benchmark's default recipe for methods whose paper gives none we could use: MMARE's
# training protocol (thesis 4.3) except that early stopping watches the validation loss
# from epoch MIN_EPOCHS on, not the balanced accuracy: on validation splits of a few dozen
# subjects the balanced accuracy moves in steps of several points and kept epoch-1
# checkpoints (benchmarks/selection_defaults.py measures both). Read by the trainer from a
# method's hparams.
TRAIN_DEFAULTS: dict[str, Any] = {
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
    flat = x.reshape(x.shape[0], -1)
    return torch.where(keep.bool().unsqueeze(-1), flat, torch.zeros((), dtype=flat.dtype,
                                                                      device=flat.device))


def mlp_head(d_in: int, hidden: list[int], n_out: int, dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout blocks through ``hidden`` widths, then a Linear to ``n_out``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(d_in, width), nn.ReLU(), nn.Dropout(dropout)]
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
