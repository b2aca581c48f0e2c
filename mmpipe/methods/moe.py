"""AdaCoMed-style mixture of modality experts with a presence-aware gate.

AdaCoMed (Chen et al., "Multi-modal Medical Diagnosis via Large-small Model
Collaboration", CVPR 2025; official code github.com/Zoew420/AdaCoMed) fuses the
embeddings of frozen single-modality "large" models with a *mixture of modality
experts* (MoME, ``model.py: MixtureOfModalityExperts``) and then blends the result with
a multimodal "small" model through an adaptive co-learning weight. The benchmark has
cached per-modality embeddings and no small model, so only the MoME branch is built
here, generalised from the official two modalities to any number ``M``:

1. **Encoders**: each modality's flattened vector ``[D_m]`` → ``Linear(D_m, d)`` (the
   official ``img_proj``/``text_proj``: a plain linear projection to ``hidden_dim``,
   ``d = 512``), then dropout (0.1, the official block's rate, at a place that is ours:
   the official block drops its attention and mixture outputs before their residual
   sums, which are not built here, see 4, and not the projections the gate and the
   experts read).
2. **Experts**: one per non-empty modality combination ``S`` (official: "image only",
   "text only", "image+text"; here ``2^M − 1``, or only the combinations of at most
   ``max_combination_size`` modalities; more than 64 experts is an error). Expert ``S``
   reads the encodings of its modalities and is the official ``ModalityExpert``
   ``Linear(in, d)–ReLU–Linear(d, C)``, with ``in = |S|·d`` for ``fusion="concat"``
   (official: the expert of a combination reads the concatenation) or ``in = d`` for
   ``fusion="mean"`` (mean of the encodings). It outputs class logits.
3. **Gate**: ``Linear(g_in, E)`` over the presence vector ``[M]`` concatenated with the
   zero-filled encodings (``gate_features="concat"``: the official gate input is the
   concatenated features alone, ``model.py`` ``gate_input``; the presence vector in
   front of them is ours, under every setting; ``"mean"``: their mean over the present
   modalities; ``"none"``: the presence vector only). An expert is *available* for a subject only if every
   modality of its combination is present; unavailable experts get gate logit −∞, so
   their softmax weight is exactly 0 and the available ones sum to 1.
4. **Output**: ``mix="logits"`` (default): ``Σ_e g_e · logits_e``. ``mix="probs"``:
   ``log Σ_e g_e · softmax(logits_e)``, the classic mixture-of-experts likelihood (Jacobs
   et al. 1991). Both are ours: the official experts output ``2·d`` features
   (``MixtureOfModalityExperts(hidden_dim, 2*hidden_dim)``), whose gated sum is added to
   the block's input and layer-normalised (``MultimodalMoETransformerBlock.forward``),
   then read by the small model's MLP classifier (``small_model.py``
   ``SimpleClassifier``). Without the small model and the attention (below) that path has
   no classifier to end in, so each expert here ends in the classes itself; this is a
   deviation, not an equivalent form.

Everything that depends on modality identity is keyed by modality *name*: experts by
the sorted tuple of their modalities' names, and the concatenations (expert inputs,
gate input) follow the sorted names, not ``self.modalities``. Relabelling the modality
axis therefore leaves the function unchanged (``permutation_invariant``), without a
``reorder_modalities``.

Deviations from the official code (also in :meth:`report_notes`): no small model and no
adaptive co-learning weight (nothing to collaborate with on cached features); the
official block's ``nn.MultiheadAttention`` is left out: it receives a 2-D ``[B, 2·d]``
tensor, which PyTorch reads as one unbatched sequence of length ``B``, i.e. attention
across the subjects of a batch, and a subject's prediction here must not depend on the
others in its batch; the residual + LayerNorm around the mixture go with it, and so
does the LayerNorm before it (``norm1(proj + attn)``, which the official experts and
gate read): here they read the projections as they are, and a LayerNorm over the
concatenation would fold a subject's zero-filled absent blocks into the statistics of
its present ones. The official gate sees all features and masks nothing (its data set is complete); the
availability mask is ours, for missing modalities. Cross-entropy replaces the official
``BCEWithLogitsLoss`` (multi-label VQA answers there, single-label classes here).

Training recipe from the official ``train.py``: Adam, lr 1e-4, no weight decay, batch
128, 100 epochs, cosine annealing over the epochs, shuffled batches without class
balancing, no early stopping (the best validation checkpoint is kept: ``patience`` =
``max_epochs``), no feature noise. The checkpoint is the best by the trainer's default
monitor, the validation loss; the official ``train.py`` keeps the best validation
accuracy (``val_score > best_score``): ``monitor: balanced_accuracy`` is the nearest.

A subject with no modality present has no available expert: its logits are 0 (uniform
probabilities); the trainer flags such rows as ``no_input``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods.base import FusionMethod
from mmpipe.methods.blocks import (
    Dropout,
    check_choice,
    flat_dim,
    flat_zero_filled,
    masked_mean,
    mlp_head,
)

MAX_EXPERTS = 64


def modality_combinations(names: list[str], max_size: int | None) -> list[tuple[str, ...]]:
    """Non-empty combinations of ``names`` (each sorted) of at most ``max_size`` modalities,
    by size then name: a canonical order independent of the order of ``names``."""
    ordered = sorted(names)
    top = len(ordered) if max_size is None else int(max_size)
    return [c for size in range(1, top + 1) for c in itertools.combinations(ordered, size)]


class ModalityExperts(FusionMethod):
    """Mixture of modality-combination experts, gated by presence (AdaCoMed's MoME)."""

    name = "adacomed"
    permutation_invariant = True
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("dim",)}
    defaults: ClassVar[dict[str, Any]] = {
        "dim": 512,                     # official hidden_dim
        "fusion": "concat",             # concat (official expert input) | mean
        "gate_features": "concat",      # concat (official gate input) | mean | none
        "mix": "logits",                # logits | probs
        "max_combination_size": None,   # None = every combination (2^M - 1 experts)
        "dropout": 0.1,                 # official block dropout
        # official train.py: Adam lr 1e-4 (no weight decay), batch 128, 100 epochs,
        # CosineAnnealingLR(T_max=epochs), shuffle=True, best validation checkpoint kept
        "lr": 1e-4,
        "weight_decay": 0.0,
        "optimizer": "adam",
        "batch_size": 128,
        "max_epochs": 100,
        "patience": 100,                # = max_epochs: no early stopping (official)
        "schedule": "cosine",
        "sampler": "none",
        "noise_p": 0.0,
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        for key, allowed in (("fusion", ("concat", "mean")),
                             ("gate_features", ("concat", "mean", "none")),
                             ("mix", ("logits", "probs"))):
            check_choice(self.name, key, hp[key], allowed)
        n_mod = len(self.modalities)
        max_size = hp["max_combination_size"]
        if max_size is not None and not 1 <= int(max_size) <= n_mod:
            raise ValueError(f"{self.name}: max_combination_size must lie in 1..{n_mod} "
                             f"(or be null for every combination), got {max_size!r}")
        n_experts = sum(math.comb(n_mod, s) for s in range(1, (max_size or n_mod) + 1))
        if n_experts > MAX_EXPERTS:
            raise ValueError(f"{self.name}: {n_mod} modalities give {n_experts} experts "
                             f"(more than {MAX_EXPERTS}); set max_combination_size to cap "
                             "the size of the combinations")
        dim = int(hp["dim"])
        self.dim = dim
        # modality-identity lives in names: the sorted names fix every concatenation order
        self.canonical = sorted(self.modalities)
        self.combos = modality_combinations(self.modalities, max_size)
        self.combo_index = [[self.canonical.index(m) for m in c] for c in self.combos]
        self.encoders = nn.ModuleDict({m: nn.Linear(flat_dim(self.shapes[m]), dim)
                                       for m in self.modalities})
        self.drop = Dropout(float(hp["dropout"]))
        concat = hp["fusion"] == "concat"
        self.experts = nn.ModuleList([mlp_head(len(c) * dim if concat else dim, [dim],
                                               self.n_classes, 0.0)
                                      for c in self.combos])
        gate_in = n_mod + {"concat": n_mod * dim, "mean": dim, "none": 0}[hp["gate_features"]]
        self.gate = nn.Linear(gate_in, len(self.combos))
        member = torch.tensor([[m in c for m in self.canonical] for c in self.combos])
        self.register_buffer("membership", member, persistent=False)  # [E, M] canonical

    def encode(self, x: dict[str, torch.Tensor], present: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(encodings [B, M, d] zero where absent, presence [B, M]), both in sorted-name order."""
        present = present.bool()
        cols = [self.modalities.index(m) for m in self.canonical]
        pres = present[:, cols]
        ref = self.gate.weight
        encs = []
        for j, m in enumerate(self.canonical):
            keep = pres[:, j]
            e = self.drop(self.encoders[m](flat_zero_filled(x[m], keep).to(ref.dtype)))
            encs.append(torch.where(keep.unsqueeze(-1), e, torch.zeros((), dtype=e.dtype,
                                                                      device=e.device)))
        return torch.stack(encs, dim=1), pres

    def available(self, pres: torch.Tensor) -> torch.Tensor:
        """[B, E]: every modality of the expert's combination is present."""
        return (pres.unsqueeze(1) | ~self.membership.unsqueeze(0)).all(-1)

    def _gate(self, enc: torch.Tensor, pres: torch.Tensor) -> torch.Tensor:
        kind = self.hparams["gate_features"]
        parts = [pres.to(enc.dtype)]
        if kind == "concat":
            parts.append(enc.flatten(1))
        elif kind == "mean":
            parts.append(masked_mean(enc, pres))
        avail = self.available(pres)
        # the most negative float rather than -inf: a row with no available expert gets a
        # finite uniform softmax (zeroed below) instead of NaN values and NaN gradients
        logits = self.gate(torch.cat(parts, dim=1)).masked_fill(~avail, torch.finfo(enc.dtype).min)
        return F.softmax(logits, dim=-1) * avail.to(enc.dtype)

    def _experts(self, enc: torch.Tensor) -> torch.Tensor:
        outs = []
        for idx, expert in zip(self.combo_index, self.experts, strict=True):
            if self.hparams["fusion"] == "concat":
                inp = enc[:, idx].flatten(1)
            else:  # mean over the combination; its modalities are all present where used
                inp = enc[:, idx].mean(1)
            outs.append(expert(inp))
        return torch.stack(outs, dim=1)

    def gate_weights(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Gate weights [B, E] over ``self.combos``: 0 for unavailable experts, rows sum to 1
        (all 0 for a subject without any modality)."""
        enc, pres = self.encode(x, present)
        return self._gate(enc, pres)

    def expert_logits(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Every expert's logits [B, E, C] (unavailable ones computed on zeros, unused)."""
        return self._experts(self.encode(x, present)[0])

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        enc, pres = self.encode(x, present)
        weights = self._gate(enc, pres)                       # [B, E]
        logits = self._experts(enc)                           # [B, E, C]
        if self.hparams["mix"] == "logits":
            return (weights.unsqueeze(-1) * logits).sum(1)
        logw = torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))
        logw = logw.masked_fill(weights == 0, torch.finfo(weights.dtype).min)
        mixed = torch.logsumexp(logw.unsqueeze(-1) + F.log_softmax(logits, dim=-1), dim=1)
        return torch.where(pres.any(1, keepdim=True), mixed, torch.zeros_like(mixed))

    def report_notes(self) -> list[str]:
        from mmpipe.bench.trainer import TRAIN_DEFAULTS  # the settings a config leaves out

        monitor = {**TRAIN_DEFAULTS, **self.hparams}["monitor"]
        return [
            f"AdaCoMed: only the mixture-of-modality-experts branch ({len(self.combos)} "
            "experts, one per modality combination"
            + ("" if self.hparams["max_combination_size"] is None
               else f" of at most {self.hparams['max_combination_size']} modalities")
            + "); no small model nor adaptive co-learning weight on cached features",
            "AdaCoMed: the official block's self-attention (across the subjects of a batch) "
            "and its residual+LayerNorm are left out; the gate masks experts whose modalities "
            "are not all present (ours: the official data set is complete)",
            "AdaCoMed: each expert ends in class logits, mixed by the gate (official: the "
            "experts' 2·d features, added to the block's input and layer-normalised, feed "
            "the small model's MLP classifier)",
            "AdaCoMed: cross-entropy instead of the official BCEWithLogitsLoss (multi-label VQA)",
            f"AdaCoMed: early stopping on the validation {monitor} (the "
            "official train.py keeps the best validation accuracy)",
        ]
