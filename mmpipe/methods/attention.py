"""UniLMMV-style masked attention over modality tokens with a learned summary token.

Chen, Oliva & Niethammer, "A Unified Model for Longitudinal Multi-Modal Multi-View
Prediction with Missingness" (2024); official code github.com/uncbiag/UniLMMV (files
cited below: ``network/model.py`` ``MaskedAtten``, ``network/attention.py``,
``config.py``, ``run.py``).

Architecture (defaults from ``config.py`` ``attention``):

1. each modality's cached vector ``[D_m]`` (flattened) → Linear(D_m, width=512), plus a
   learned *modality embedding* (``modality_enc``) keyed by the modality's name;
2. a learned *summary token* is prepended; a stack of ``depth=6`` pre-norm GPT-style
   blocks (LN → masked multi-head self-attention with 8 heads → residual; LN → MLP
   width→4·width→width with GELU → residual; no biases, dropout 0.1, GPT-2 init) runs
   over ``[summary, modality tokens]`` (``MaskedAttenBlock``);
3. attention follows the outer product of the token mask (``MaskedSelfAttention``): a
   token attends only to present tokens, the summary token is always present, so a
   subject without any modality reads its summary token alone (finite output);
4. final LayerNorm on the summary token (``MaskedAtten.forward`` returns it), then the
   longitudinal decoder (``network/model.py`` ``TransDecoder``, the official
   ``classifier``) at one time point: a learned position embedding, ``decoder_depth=6``
   blocks (``attention.n_layers``; causal attention over one token is its value and
   output projections) and a bias-free Linear(width, C) on the decoder's output *before*
   its final LayerNorm (``TransDecoder.forward`` returns ``self.fc(x)``; the norm feeds
   only the returned features, so it is omitted). ``decoder_depth: 0`` puts the head on
   the summary token instead (versions before this one did; the decoder's 18.9 M
   parameters at width 512 are as many as the attention blocks'). ``head`` hidden widths
   make the head an MLP.

**Modality dropout** (``MaskedAtten.forward``, ``input_drop=0.5``): in training, present
modalities are masked out at random. ``dropout_scope="subject"`` (default, the project
spec): each present modality of each subject is dropped with probability ``p``
independently, and a subject left with none gets one of its present modalities back,
chosen uniformly, so no subject is emptied. ``dropout_scope="batch"`` is the official
code: one draw per modality for the whole batch, which can leave a subject with the
summary token alone. Off in evaluation. The draws use the global torch RNG and depend
only on the presence mask, never on feature values.

Adapted to cached features (see :meth:`MaskedAttention.report_notes`): the official
image (ResNet-18, 512-d) and tabular (SAINT) encoders are fine-tuned end to end; here
every modality gets a learned Linear projection to the common width instead (torch's
default Linear init, with a bias: the GPT-2 init and the bias-free layers are the
blocks'). The official summary token is ``sum_emb`` plus the modality encoding of
position 0, two N(0, 0.02) vectors under weight decay; here it is one parameter drawn
N(0, 0.02), the same function with a narrower start (0.02 against about 0.028). The
longitudinal decoder runs over the one time point a cohort has, as the official code
runs it whatever the number of visits. The learned
``empty_emb`` of missing images is masked out of attention in the official code and
therefore omitted; absent tokens are zero. Training: AdamW with weight decay 1e-3 and
balanced class weights as in ``run.py``; the official OneCycle schedule and gradient
clipping (1.0) are replaced by the trainer's cosine schedule and no clipping, and the
official lr 1e-5 (attention and classifier) and batch 256, set for thousands of OAI
knee images, by lr 1e-4 and batches of 64: on a few hundred subjects the official
setting makes only ~60 optimiser steps and undertrains (synthetic 300-subject check
with the MMIST widths: validation-selected test AUC 0.62 with the official setting,
0.69 with these). The official 30 epochs are kept, with the best validation epoch
restored (``patience`` 30: no early stopping), best by the trainer's default monitor, the
validation loss (the official ``trainer.py`` keeps the best validation average precision,
or balanced accuracy, which ``monitor: balanced_accuracy`` gives); 200 epochs with early stopping cost
about 8 minutes per MMIST-ccRCC run on 2 CPU cores for this model without its decoder
(20 M parameters).
All are configurable (``lr``, ``batch_size``, ``max_epochs``, ``patience``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods.base import FusionMethod
from mmpipe.methods.blocks import (
    Dropout,
    flat_dim,
    flat_zero_filled,
    mask_attention_scores,
    mlp_head,
    modality_dropout,
    prepend_token,
)

DROPOUT_SCOPES = ("subject", "batch")


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention under the outer product of a token mask."""

    def __init__(self, width: int, heads: int, dropout: float, bias: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"unilmmv: width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width, bias=bias)
        self.c_proj = nn.Linear(width, width, bias=bias)
        self.attn_dropout = Dropout(dropout)
        self.resid_dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, N, W], ``mask`` [B, N] bool → (output [B, N, W], weights [B, h, N, N])."""
        b, n, w = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2)
                   for t in self.c_attn(x).split(w, dim=2))
        att = mask_attention_scores(q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]), mask)
        att = F.softmax(att, dim=-1)
        y = (self.attn_dropout(att) @ v).transpose(1, 2).reshape(b, n, w)
        return self.resid_dropout(self.c_proj(y)), att


class MaskedBlock(nn.Module):
    """Pre-norm transformer block (``network/attention.py`` ``MaskedAttenBlock``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float, bias: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, bias=bias)
        self.attn = MaskedSelfAttention(width, heads, dropout, bias)
        self.ln2 = nn.LayerNorm(width, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width, bias=bias), nn.GELU(),
                                 nn.Linear(mlp_ratio * width, width, bias=bias),
                                 Dropout(dropout))

    def forward(self, x, mask):
        update, att = self.attn(self.ln1(x), mask)
        x = x + update
        return x + self.mlp(self.ln2(x)), att


def _gpt2_init(modules, blocks: nn.ModuleList) -> None:
    """GPT-2 init, as the official ``_init_weights`` and its residual scaling: every Linear
    of ``modules`` N(0, 0.02) with a zero bias, then each block's residual projections (the
    official "c_proj" of attention and MLP) N(0, 0.02/√(2L)) for ``L`` blocks."""
    for module in modules:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for block in blocks:
        for layer in (block.attn.c_proj, block.mlp[2]):
            nn.init.normal_(layer.weight, mean=0.0, std=0.02 / math.sqrt(2 * len(blocks)))


class MaskedAttention(FusionMethod):
    """Summary token + modality tokens through a masked transformer; see the module doc."""

    name = "unilmmv"
    permutation_invariant = True   # modality embeddings keyed by name, attention over a set
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("width",)}
    defaults: ClassVar[dict[str, Any]] = {
        "width": 512,              # config.py attention.input_dim
        "depth": 6,                # attention.n_layers
        "heads": 8,                # attention.n_heads
        "mlp_ratio": 4,            # network/attention.py MLP: 4·width
        "dropout": 0.1,            # attention.dropout
        "bias": False,             # attention.bias
        "modality_dropout": 0.5,   # attention.input_drop (unified model)
        "dropout_scope": "subject",  # subject (spec, never empties) | batch (official)
        "decoder_depth": 6,        # TransDecoder blocks (attention.n_layers); 0: none
        "head": [],                # hidden widths of the head (MLP) before the class Linear
        # trainer settings: AdamW, weight decay and balanced class weights of run.py;
        # lr and batches of the MMARE protocol, the official 30 epochs (module docstring)
        "optimizer": "adamw",
        "weight_decay": 1e-3,
        "class_weights": True,
        "sampler": "none",         # run.py: shuffled batches, class-weighted loss
        "schedule": "cosine",
        "lr": 1e-4,
        "batch_size": 64,
        "max_epochs": 30,
        "patience": 30,
        "noise_p": 0.0,
    }

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        if hp["dropout_scope"] not in DROPOUT_SCOPES:
            raise ValueError(f"unilmmv: dropout_scope must be one of {DROPOUT_SCOPES}, "
                             f"got {hp['dropout_scope']!r}")
        if not 0.0 <= float(hp["modality_dropout"]) < 1.0:
            raise ValueError("unilmmv: modality_dropout must lie in [0, 1), got "
                             f"{hp['modality_dropout']}")
        if int(hp["depth"]) < 1:
            raise ValueError(f"unilmmv: depth must be >= 1, got {hp['depth']}")
        width, depth, bias = int(hp["width"]), int(hp["depth"]), bool(hp["bias"])
        self.projections = nn.ModuleDict({
            m: nn.Linear(flat_dim(self.shapes[m]), width) for m in self.modalities})
        self.summary = nn.Parameter(torch.zeros(1, 1, width))
        # keyed by modality name, not position: relabelling the modality axis moves nothing
        self.modality_embeddings = nn.ParameterDict({
            m: nn.Parameter(torch.zeros(width)) for m in self.modalities})
        self.blocks = nn.ModuleList([
            MaskedBlock(width, int(hp["heads"]), int(hp["mlp_ratio"]), float(hp["dropout"]), bias)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(width, bias=bias)
        decoder_depth = int(hp["decoder_depth"])
        if decoder_depth < 0:
            raise ValueError(f"unilmmv: decoder_depth must be >= 0, got {decoder_depth}")
        # TransDecoder at one time point: position 0's embedding and the blocks, whose
        # causal attention over one token is the masked block's with the token present
        self.decoder_position = nn.Parameter(torch.zeros(width)) if decoder_depth else None
        self.decoder = nn.ModuleList([
            MaskedBlock(width, int(hp["heads"]), int(hp["mlp_ratio"]), float(hp["dropout"]), bias)
            for _ in range(decoder_depth)])
        if decoder_depth and not hp["head"]:
            self.head = nn.Sequential(nn.Linear(width, self.n_classes, bias=bias))  # TransDecoder.fc
        else:
            self.head = mlp_head(width, list(hp["head"]), self.n_classes, float(hp["dropout"]))
        self._init_attention()
        self._init_decoder()

    def _init_attention(self) -> None:
        """GPT-2 init of ``MaskedAtten``: N(0, 0.02), residual projections N(0, 0.02/√(2L))."""
        _gpt2_init(self.blocks.modules(), self.blocks)
        nn.init.normal_(self.summary, mean=0.0, std=0.02)
        for p in self.modality_embeddings.values():
            nn.init.normal_(p, mean=0.0, std=0.02)

    def _init_decoder(self) -> None:
        """GPT-2 init of ``TransDecoder``, its ``fc`` included (when it is the head)."""
        if not len(self.decoder):
            return
        _gpt2_init([*self.decoder.modules(), *(self.head if len(self.head) == 1 else ())],
                   self.decoder)
        nn.init.normal_(self.decoder_position, mean=0.0, std=0.02)

    def modality_dropout(self, present: torch.Tensor) -> torch.Tensor:
        """Modalities the attention may read [B, M]: ``present`` minus the training dropout."""
        present = present.bool()
        p = float(self.hparams["modality_dropout"])
        if not self.training or p <= 0:
            return present
        if self.hparams["dropout_scope"] == "batch":
            drop = torch.rand(present.shape[1], device=present.device) < p
            return present & ~drop
        return modality_dropout(present, p)

    def encode(self, x, present) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised summary token [B, width] and the attention weights of every block."""
        present = present.bool()
        keep = self.modality_dropout(present)
        tokens = torch.stack([
            self.projections[m](flat_zero_filled(x[m], present[:, j])) + self.modality_embeddings[m]
            for j, m in enumerate(self.modalities)], dim=1)
        tokens = torch.where(keep.unsqueeze(-1), tokens, 0.0)
        seq, mask = prepend_token(tokens, keep, self.summary)
        maps = []
        for block in self.blocks:
            seq, att = block(seq, mask)
            maps.append(att)
        return self.norm(seq[:, 0]), maps

    def classify(self, summary: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] from the normalised summary token [B, width]: the decoder at one
        time point (when ``decoder_depth`` > 0), then the head."""
        if self.decoder_position is None:
            return self.head(summary)
        seq = (summary + self.decoder_position).unsqueeze(1)
        one = seq.new_ones(seq.shape[0], 1, dtype=torch.bool)
        for block in self.decoder:
            seq, _ = block(seq, one)
        return self.head(seq[:, 0])  # before the decoder's norm, as TransDecoder.fc reads it

    def forward(self, x, present):
        return self.classify(self.encode(x, present)[0])

    def report_notes(self) -> list[str]:
        hp = self.hparams
        notes = [
            "unilmmv: cached features through a learned Linear projection per modality "
            "(official: fine-tuned ResNet-18 / SAINT encoders).",
            # what ran (a tuning trial's lr, the config's own), beside the official recipe
            f"unilmmv: {hp['optimizer']} (wd {hp['weight_decay']:g}), lr {hp['lr']:g}, "
            f"batches of {hp['batch_size']}, {hp['max_epochs']} epochs, schedule "
            f"{hp['schedule']}, class weights {hp['class_weights']} (best validation epoch "
            "kept); official: AdamW (wd 1e-3), balanced class weights, 30 epochs, OneCycle "
            "at lr 1e-5, batch 256 and gradient clipping.",
        ]
        if self.decoder_position is None:
            notes.append("unilmmv: decoder_depth 0: a head on the summary token replaces the "
                         "official longitudinal decoder.")
        if self.hparams["dropout_scope"] == "subject":
            notes.append("unilmmv: modality dropout drawn per subject and never empties a "
                         "subject (official: one draw per modality for the whole batch).")
        return notes
