"""Baselines: the simple ways of fusing modalities when some are missing.

Each is a small MLP stack over the flattened per-modality features (a modality of shape
``[*s]`` is read as a ``[prod(s)]`` vector). Unless a config says otherwise they train
with the same protocol as MMARE (lr 1e-4, weight decay 1e-4, batches of 64, weighted
sampler, early stopping with patience 25, Gaussian noise with p = 0.3) except that early
stopping watches the validation loss from epoch 5 on (``methods.blocks.PROTOCOL_RECIPE``),
so that a difference in results comes from the fusion, not from the training recipe.

- :class:`DeepSets` — per-modality encoders, mean over the present ones, MLP head.
- :class:`ZeroFillConcat` — concatenation with absent modalities filled with zeros.
- :class:`CompleteCaseStandard` — the same network trained on complete subjects only.
- :class:`LateFusion` — one classifier per modality, probabilities averaged.
- :class:`SingleModality` — one modality; the learned class prior when it is absent.

Every method zero-fills absent modalities itself (``torch.where`` on the presence
mask, not relying on the caller's zeros), so an absent modality's values never reach
the output.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods.base import FusionMethod
from mmpipe.methods.blocks import (
    PROTOCOL_RECIPE,
    flat_dim,
    flat_zero_filled,
    masked_mean,
    mlp_head,
)


class DeepSets(FusionMethod):
    """Mean pooling of per-modality encodings (Zaheer et al. 2017), no conditioning.

    ``φ_m``: Linear(D_m, dim)+ReLU per modality; the mean over the present modalities
    goes through the head ``ρ``: Linear(dim, h1)-ReLU-Dropout-...-Linear(·, C).
    """

    name = "deepsets"
    permutation_invariant = True
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("dim",)}
    defaults: ClassVar[dict[str, Any]] = {"dim": 256, "head": [128], "dropout": 0.3,
                                          **PROTOCOL_RECIPE}

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        dim = int(self.hparams["dim"])
        self.encoders = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(flat_dim(self.shapes[m]), dim), nn.ReLU())
            for m in self.modalities})
        self.head = mlp_head(dim, list(self.hparams["head"]), self.n_classes,
                             float(self.hparams["dropout"]))

    def forward(self, x, present):
        present = present.bool()
        emb = torch.stack([self.encoders[m](flat_zero_filled(x[m], present[:, j]))
                           for j, m in enumerate(self.modalities)], dim=1)
        return self.head(masked_mean(emb, present))


class ZeroFillConcat(FusionMethod):
    """Concatenation of every modality with zeros for the absent ones → MLP.

    With ``indicators: true`` the presence mask (M floats) is appended to the input.
    The zeros are written by the method itself (absent rows replaced), so it does not
    depend on the caller having zeroed them.
    MLP: Linear(ΣD_m [+M], h1)-ReLU-Dropout-Linear(h1, h2)-ReLU-Dropout-Linear(h2, C).
    """

    name = "concat_zero"
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("hidden",)}
    defaults: ClassVar[dict[str, Any]] = {"hidden": [256, 128], "dropout": 0.3,
                                          "indicators": False, **PROTOCOL_RECIPE}

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        d_in = sum(flat_dim(self.shapes[m]) for m in self.modalities)
        self.indicators = bool(self.hparams.get("indicators", False))
        if self.indicators:
            d_in += len(self.modalities)
        self.mlp = mlp_head(d_in, list(self.hparams["hidden"]), self.n_classes,
                            float(self.hparams["dropout"]))

    def forward(self, x, present):
        present = present.bool()
        parts = [flat_zero_filled(x[m], present[:, j]) for j, m in enumerate(self.modalities)]
        if self.indicators:
            parts.append(present.to(parts[0].dtype))
        return self.mlp(torch.cat(parts, dim=1))


class CompleteCaseStandard(ZeroFillConcat):
    """The "Standard" baseline of HAM: concat MLP trained on complete subjects only.

    ``train_subset = "complete"``: the trainer drops every training subject that lacks a
    modality (validation and test keep everyone). At test time the missing modalities
    of incomplete subjects are zero-filled, as HAM's Standard baseline does; the network
    never saw such inputs in training, which is the point of the comparison.
    """

    name = "standard"
    train_subset = "complete"
    defaults: ClassVar[dict[str, Any]] = {"hidden": [256, 128], "dropout": 0.3,
                                          **PROTOCOL_RECIPE}


class LateFusion(FusionMethod):
    """One MLP classifier per modality; their probabilities averaged over the present ones.

    ``forward`` returns ``log(mean_{m present} softmax(f_m(x_m)))`` as logits (so softmax
    of the output is the averaged probability); a subject with no modality gets zeros
    (uniform). ``loss`` trains each head on its own modality: the sum over modalities
    of the cross-entropy of ``f_m`` on the subjects where ``m`` is present (each term a
    mean over those subjects), not the cross-entropy of the fused output. Early stopping
    and the epoch kept (the default ``monitor: loss``) read this same sum on the validation
    split, as every method's validation loss is its training loss: a rare modality's head
    weighs as much there as a common one's. ``monitor: balanced_accuracy`` (or ``auc``)
    judges the fused output that is scored.
    Heads: Linear(D_m, h1)-ReLU-Dropout-...-Linear(·, C).
    """

    name = "late_fusion"
    permutation_invariant = True
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("hidden",)}
    defaults: ClassVar[dict[str, Any]] = {"hidden": [256, 128], "dropout": 0.3,
                                          **PROTOCOL_RECIPE}

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        self.heads = nn.ModuleDict({
            m: mlp_head(flat_dim(self.shapes[m]), list(self.hparams["hidden"]), self.n_classes,
                        float(self.hparams["dropout"]))
            for m in self.modalities})

    def modality_logits(self, x, present) -> torch.Tensor:
        """Per-modality logits [B, M, C] (absent modalities computed on zeros)."""
        present = present.bool()
        return torch.stack([self.heads[m](flat_zero_filled(x[m], present[:, j]))
                            for j, m in enumerate(self.modalities)], dim=1)

    def _fused(self, per_mod: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(per_mod, dim=-1)
        logp = logp.masked_fill(~present.unsqueeze(-1), torch.finfo(logp.dtype).min)
        count = present.sum(1, keepdim=True)
        fused = torch.logsumexp(logp, dim=1) - torch.log(count.clamp_min(1).to(logp.dtype))
        return torch.where(count > 0, fused, torch.zeros_like(fused))

    def forward(self, x, present):
        present = present.bool()
        return self._fused(self.modality_logits(x, present), present)

    def loss(self, x, present, y, class_weight=None):
        present = present.bool()
        per_mod = self.modality_logits(x, present)
        total = per_mod.new_zeros(())
        for j in range(len(self.modalities)):
            rows = present[:, j]
            if rows.any():
                total = total + F.cross_entropy(per_mod[rows, j], y[rows], weight=class_weight)
        return total, self._fused(per_mod, present)


class SingleModality(FusionMethod):
    """One modality (hparam ``modality``, required) through an MLP; the others ignored.

    A subject without that modality gets the logits of a learned bias ``[C]`` (a class
    prior), so every subject still has a prediction; under natural missingness that prior
    can carry the signal of being missing. It starts where training on the training
    subjects that lack the modality leads (:meth:`prepare`): from zeros, at the protocol's
    learning rate, it moved about 1e-4 a step and stayed near uniform. MLP:
    Linear(D_m, h1)-ReLU-Dropout-...-Linear(·, C).
    """

    name = "single"
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("hidden",)}
    defaults: ClassVar[dict[str, Any]] = {"modality": None, "hidden": [256, 128],
                                          "dropout": 0.3, **PROTOCOL_RECIPE}

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        modality = self.hparams["modality"]
        if modality is None:
            raise ValueError("single: the hyper-parameter 'modality' is required "
                             f"(one of {self.modalities})")
        if modality not in self.modalities:
            raise ValueError(f"single: modality {modality!r} is not in the feature set "
                             f"{self.modalities}")
        self.modality = modality
        self.mlp = mlp_head(flat_dim(self.shapes[modality]), list(self.hparams["hidden"]),
                            self.n_classes, float(self.hparams["dropout"]))
        self.prior = nn.Parameter(torch.zeros(self.n_classes))

    def forward(self, x, present):
        has = present.bool()[:, self.modalities.index(self.modality)]
        logits = self.mlp(flat_zero_filled(x[self.modality], has))
        return torch.where(has.unsqueeze(-1), logits, self.prior.expand_as(logits))

    def prepare(self, x, present, y):
        """The prior's start: the log class shares of the training subjects that lack the
        modality (half a subject added to each class training has), each class weighed by
        the inverse of its training count where the sampler or the loss balances the
        classes, as training weighs them; with no such subject (``testmiss``, a modality
        every training subject has), the training split's class shares, the prior a subject
        without any input gets (``mmpipe.bench.run``). A thousandth is spread evenly over
        the classes, so a class training lacks has a finite logit, far below the rest."""
        has = present.bool()[:, self.modalities.index(self.modality)]
        counts = torch.bincount(y, minlength=self.n_classes).double()
        lacking = torch.bincount(y[~has], minlength=self.n_classes).double()
        if lacking.sum() == 0:
            shares = counts
        else:
            # half a subject for each class training has, none for a class it lacks (its
            # 0.5 / 1, weighed, outweighed every class training has)
            shares = (lacking + 0.5) * (counts > 0)
            if self.hparams["sampler"] != "none" or self.hparams.get("class_weights"):
                shares = shares / counts.clamp_min(1.0)
        # a class training lacks keeps a finite logit far below the others, as little as
        # training could give it (a log of 0 would be -inf, which weight decay makes NaN)
        shares = (1 - 1e-3) * shares / shares.sum() + 1e-3 / self.n_classes
        with torch.no_grad():
            self.prior.copy_(shares.log().to(self.prior.dtype))
