"""MMARE: missing-aware conditioning and pairwise fusion of per-modality embeddings.

Follows the MMARE thesis (Pedro, ch. 4.2) as specified in the project issue:

1. **Adapters** (4.2): each modality's vector ``[D_m]`` is mapped to the shared width
   ``D`` (512) by Linear+ReLU; a modality already of width ``D`` passes unchanged.
2. **Missing-aware conditioning** (4.2): from the binary missingness vector ``m``
   (``[M]``, 1 = modality missing) two linear maps give ``γ = s·g(m)`` and
   ``β = s·h(m)`` (``s = 0.05``), and each *present* modality's embedding becomes
   ``LN(e + γ⊙e + β)``. Absent modalities take no part: their rows go through the
   adapters as zeros (the whole batch at once) and their embeddings are zeroed after
   the conditioning, so their values reach neither the output nor a gradient.
3. **Pairwise fusion** (4.2): ``h`` starts as the first present embedding and folds in
   the next present one with ``h ← LN(h + MLP(h ⊕ e_next))``; one MLP (2D→D→D, ReLU,
   Kaiming init) shared by every step. The order of the present modalities is shuffled
   per sample in training and fixed (``self.modalities`` order) in evaluation.
4. **Head**: Linear(D,256)-ReLU-Dropout(0.3)-Linear(256,128)-ReLU-Dropout(0.3)-Linear(128,C)
   (the spec's "head 256→128→C" read as hidden widths after the D-wide fused vector).

Ablations of thesis 5.5: ``conditioning: true|false`` × ``fusion: pairwise|mean``
(``mean`` = masked mean of the (conditioned) embeddings of the present modalities;
``conditioning: false`` uses the adapter outputs as they are, no γ/β and no LN).

Inputs must be vector features: a modality of shape ``[*s]`` is flattened to
``[prod(s)]`` (e.g. a ``(1, 512)`` embedding is read as 512-d). Block features such as
VGG11's (512, 7, 7) would become 25 088-d vectors: use pooled features for MMARE.

A subject with no present modality gets ``h = 0`` and therefore the head's constant
output (the trainer flags such rows as ``no_input``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mmpipe.methods.base import FusionMethod
from mmpipe.methods.blocks import flat_dim, flat_zero_filled, masked_mean, mlp_head


class PairwiseFusion(nn.Module):
    """``h ← LN(h + MLP(h ⊕ e))`` over the present modalities in a per-sample order (4.2)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):  # Kaiming init of the fusion MLP (4.2)
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, emb: torch.Tensor, order: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Fuse ``emb`` [B, M, D] in ``order`` [B, M] (present first); ``count`` [B] present."""
        seq = emb.gather(1, order.unsqueeze(-1).expand_as(emb))
        h = seq[:, 0]
        for step in range(1, seq.shape[1]):
            active = (count > step).unsqueeze(-1)
            if not bool(active.any()):
                break
            h_next = self.norm(h + self.mlp(torch.cat([h, seq[:, step]], dim=-1)))
            h = torch.where(active, h_next, h)  # samples with fewer modalities keep h
        return h


class MMARE(FusionMethod):
    name = "mmare"
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("dim",)}
    defaults: ClassVar[dict[str, Any]] = {
        "dim": 512,                 # shared width D (4.2)
        "conditioning": True,       # missing-aware conditioning on/off (ablation 5.5)
        "fusion": "pairwise",       # pairwise | mean (ablation 5.5)
        "cond_scale": 0.05,         # γ, β scale (4.2)
        "shuffle_order": True,      # shuffle present-modality order in training (4.2)
        "head": [256, 128],         # head hidden widths (4.2)
        "dropout": 0.3,             # head dropout (4.2)
        # trainer settings of the thesis (4.3): read by the trainer from hparams
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "optimizer": "adam",
        "batch_size": 64,
        "max_epochs": 200,
        "patience": 25,             # early stopping on validation balanced accuracy (4.3)
        "monitor": "balanced_accuracy",
        "sampler": "weighted",      # weighted | oversample
        "noise_p": 0.3,             # Gaussian noise augmentation probability (4.3)
        "noise_std": 0.1,           # not given by the thesis; the trainer's default
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        if hp["fusion"] not in ("pairwise", "mean"):
            raise ValueError(f"mmare: fusion must be 'pairwise' or 'mean', got {hp['fusion']!r}")
        if hp["sampler"] not in ("weighted", "oversample", "none"):
            raise ValueError(f"mmare: unknown sampler {hp['sampler']!r}")
        dim = int(hp["dim"])
        self.dim = dim
        self.adapters = nn.ModuleDict({
            m: nn.Identity() if flat_dim(self.shapes[m]) == dim
            else nn.Sequential(nn.Linear(flat_dim(self.shapes[m]), dim), nn.ReLU())
            for m in self.modalities})
        n_mod = len(self.modalities)
        if hp["conditioning"]:
            # γ = g(m), β = h(m): linear maps of the missingness vector (4.2); columns
            # follow self.modalities (see reorder_modalities)
            self.gamma = nn.Linear(n_mod, dim)
            self.beta = nn.Linear(n_mod, dim)
            self.cond_norm = nn.LayerNorm(dim)
        self.fusion = PairwiseFusion(dim) if hp["fusion"] == "pairwise" else None
        self.head = mlp_head(dim, list(hp["head"]), self.n_classes, float(hp["dropout"]))

    def embed(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(Conditioned) embeddings [B, M, D] of the present modalities; zeros where absent.

        Absent rows are replaced by zeros before the adapter and their embeddings by
        zeros after the conditioning, so an absent modality's values never reach the
        output (nor, being zeroed first, a gradient). The whole batch goes through each
        layer with a fixed shape: selecting the present rows instead gives every batch
        new shapes, which made CPU training ~10x slower.
        """
        present = present.bool()
        ref = next(iter(self.parameters()))
        if self.hparams["conditioning"]:
            missing = (~present).to(ref.dtype)
            scale = float(self.hparams["cond_scale"])
            gamma = scale * self.gamma(missing)
            beta = scale * self.beta(missing)
        embs = []
        for j, m in enumerate(self.modalities):
            keep = present[:, j].unsqueeze(-1)
            e = self.adapters[m](flat_zero_filled(x[m].to(ref.dtype), present[:, j]))
            if self.hparams["conditioning"]:
                e = self.cond_norm(e + gamma * e + beta)
            embs.append(torch.where(keep, e, 0.0))
        return torch.stack(embs, dim=1)

    def fusion_order(self, present: torch.Tensor) -> torch.Tensor:
        """Per-sample modality order [B, M]: present modalities first.

        Random among the present ones in training (when ``shuffle_order``), the
        ``self.modalities`` order otherwise.
        """
        present = present.bool()
        n_mod = present.shape[1]
        if self.training and self.hparams["shuffle_order"]:
            keys = torch.rand(present.shape, device=present.device)
        else:
            keys = torch.arange(n_mod, device=present.device, dtype=torch.float32) / n_mod
            keys = keys.expand(present.shape)
        keys = keys + (~present).float() * 2.0  # absent ones sort last
        return torch.argsort(keys, dim=1, stable=True)

    def fuse(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        present = present.bool()
        emb = self.embed(x, present)
        if self.fusion is None:
            return masked_mean(emb, present)
        return self.fusion(emb, self.fusion_order(present), present.sum(1))

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.head(self.fuse(x, present))

    def report_notes(self) -> list[str]:
        """Where this run is the project's reading, not the thesis's words."""
        hp = self.hparams
        same = [m for m in self.modalities if flat_dim(self.shapes[m]) == int(hp["dim"])]
        notes = [f"{self.name}: the head's '256→128→C' read as hidden widths after the "
                 f"{hp['dim']}-wide fused vector"]
        if float(hp["noise_p"]) > 0:
            notes.append(f"{self.name}: Gaussian feature noise on {float(hp['noise_p']):g} of "
                         f"the present rows (thesis 4.3), std {float(hp['noise_std']):g}, which "
                         "the thesis does not give")
        if same:
            notes.append(f"{self.name}: {', '.join(same)} already {hp['dim']}-wide, passed "
                         "without an adapter")
        return notes

    def reorder_modalities(self, order: list[str]) -> None:
        """Relabel the modality axis to ``order``, keeping the function of named inputs.

        The conditioning maps take the missingness vector by position, so their input
        columns move with it. Pairwise fusion follows the new order in evaluation, by
        design (used by the permutation-invariance test).
        """
        idx = [self.modalities.index(m) for m in order]
        if self.hparams["conditioning"]:
            with torch.no_grad():
                for layer in (self.gamma, self.beta):
                    layer.weight.copy_(layer.weight[:, idx])
        self.modalities = list(order)
