"""DRIM: disentangled shared and unique representations with masked attention fusion.

Robinet et al., "DRIM: Learning Disentangled Representations from Incomplete Multimodal
Healthcare Data", MICCAI 2024; official code github.com/Lucas-rbnt/DRIM (files cited
below as ``drim/...``; the DRIMSurv model, ``train_drimsurv.py``).

Architecture (dimensions are the defaults, ``configs/multimodal.yaml``):

1. **Encoders** — per modality a *shared* and a *unique* encoder, each
   Linear(D_m, 256)-Dropout(0.2)-GELU-Linear(256, 128) (``drim/mri/models.py``
   ``MRIEmbeddingEncoder``, the official encoder of a cached embedding), then L2
   normalisation (``drim/multimodal/models.py`` ``_forward_encoders``).
2. **Masked attention fusion** (``drim/fusion/fusion.py`` ``MaskedAttentionFusion``,
   ``drim/fusion/utils.py``): a learned CLS token prepended to the modality tokens,
   ``depth`` pre-norm blocks of multi-head self-attention (16 heads of 64, no qkv bias)
   + feed-forward (LN-Linear(128, 128)-GELU-Linear(128, 128)), residuals, LayerNorm of the
   CLS output. Attention runs under the outer product of the presence mask (the CLS
   token always present) and uses the *quiet softmax* ``exp(s)/(1 + Σ exp(s))``.
   A first fusion reads the shared embeddings; a second one reads the unique
   embeddings plus the fused shared token (always present), and a Linear(128, C) head
   reads its output (``drim/models.py`` ``MultimodalWrapper.final``).
3. **Losses** (``drim/trainers.py`` ``DRIMSurvTrainer``): total = task + 1.0·shared +
   0.8·unique (``aux_loss.alpha``, ``disentangled.gamma``).
   - *shared*: supervised-contrastive loss (``drim/losses.py`` ``ContrastiveLoss``,
     τ = 0.07) where a patient is its own class: the present shared embeddings of one
     patient are positives of each other, every other present embedding of the batch is
     a negative; absent modalities are left out of numerator and denominator.
   - *unique*: per modality a discriminator (``drim/models.py`` ``Discriminator``,
     Linear(256, 1024)-Dropout-GELU-Linear(1024, 256)-Dropout-GELU-Linear(256, 1)) reads
     ``[shared.detach(), unique]``. It learns to tell the joint pairs of one patient
     (label 0) from pairs whose shared half is rolled by one subject in the batch, a
     sample of the product of marginals (label 1). The encoders are trained with
     ``BCE(D(joint), 1)``: make the joint look like the product of marginals, i.e. keep
     the unique embedding free of the shared information (a JSD estimate of their
     mutual information). Modalities with fewer than two present subjects in a batch
     are skipped, as in the official loop.

The adversarial min-max in one training loop: the discriminators are *not* in the
trainer's optimiser (:meth:`DRIM.phases` hands it every other parameter). Each training
call of :meth:`DRIM.loss` (module in train mode, gradients enabled) returns the encoders'
loss computed through detached views of the current discriminators and keeps the batch's
pairs; after the trainer's backward and optimiser step, :meth:`DRIM.after_step` updates
the discriminators on those detached pairs with their own AdamW (lr 1e-3, weight decay
3e-4, ``disentangled.dsm_lr``/``dsm_wd``). That is the official order (encoders step with
the pre-update discriminator, then the discriminators step on the same batch's
embeddings). Neither backward nor the optimiser step draws random numbers, so the
discriminators' dropout draws keep their place in the random stream. Validation (eval
mode, no grad) never updates them.

Adapted to this benchmark (see :meth:`DRIM.report_notes`): cached vectors (flattened) for
every modality with the official embedding-encoder; cross-entropy on classes instead of
the logistic-hazard survival loss; training on every subject (the official multimodal
scripts keep patients with at least two modalities); the trainer's cosine schedule
anneals to the official ``eta_min`` (5e-6, ``configs/multimodal.yaml``) and its best-validation checkpoint is restored,
judged on the validation task loss alone, from the first epoch (the official code keeps
the last epoch, which ``min_epochs: 30``, equal to ``max_epochs``, reproduces; on a
validation split of a few dozen subjects an early epoch can win by noise; the
adversarial term moves with the discriminators and would pick the epoch); batches are
shuffled without class balancing, as the official loader's; the discriminators'
optimiser state is not in the state_dict. Absent modalities are zero-filled by the method before their encoders
and masked out of every attention and loss term, so their values never reach the output.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.bench.optim import adam
from mmpipe.methods.base import FusionMethod, Phase, phase_settings
from mmpipe.methods.blocks import (
    Dropout,
    flat_dim,
    flat_zero_filled,
    mask_attention_scores,
    prepend_token,
)

SOFTMAX_VARIANTS = ("official", "exact")


def quiet_softmax(scores: torch.Tensor, dim: int = -1, variant: str = "official") -> torch.Tensor:
    """Softmax with 1 added to the denominator ("attention is off by one", E. Miller).

    ``exact``: ``exp(s_i) / (1 + Σ_j exp(s_j))``, computed stably. ``official``: the
    official ``softmax_one`` (``drim/fusion/utils.py``) subtracts the row maximum *before*
    adding the 1, i.e. ``exp(s_i - m) / (1 + Σ_j exp(s_j - m))``, so the weights sum to
    at least 1/2. Both sum to less than 1.
    """
    if variant == "official":
        e = (scores - scores.amax(dim, keepdim=True)).exp()
        return e / (1 + e.sum(dim, keepdim=True))
    if variant == "exact":
        # exp(s)/(1+Σexp(s)) = exp(s-m)/(exp(-m)+Σexp(s-m)) with m = max(0, max s)
        m = scores.amax(dim, keepdim=True).clamp_min(0)
        e = (scores - m).exp()
        return e / ((-m).exp() + e.sum(dim, keepdim=True))
    raise ValueError(f"quiet_softmax: variant must be one of {SOFTMAX_VARIANTS}, got {variant!r}")


def supcon_loss(z: torch.Tensor, present: torch.Tensor, temperature: float = 0.07,
                base_temperature: float = 0.07) -> torch.Tensor:
    """DRIM's shared loss (``drim/losses.py`` ``ContrastiveLoss``) on ``z`` [B, M, D].

    Anchors are the B·M (patient, modality) embeddings; positives of an anchor are the
    other present modalities of the same patient, its contrast set every other present
    embedding. Absent anchors and anchors without positives contribute 0 but count in
    the mean over B·M, and the 1e-6 guards are kept, as in the official code.
    """
    batch, n_mod, _ = z.shape
    feats = z.transpose(0, 1).reshape(n_mod * batch, -1)           # modality-major, as official
    valid = present.bool().t().reshape(-1)
    logits = feats @ feats.t() / temperature
    eye = torch.eye(n_mod * batch, dtype=torch.bool, device=z.device)
    # shift by the row maximum over what the anchor may see (itself and present entries):
    # for unit vectors the self-similarity 1/τ, as in the official code, whatever sits in
    # the absent rows
    seen = logits.masked_fill(~(valid[None, :] | eye), float("-inf"))
    logits = logits - seen.amax(1, keepdim=True).detach()
    contrast = valid[:, None] & valid[None, :] & ~eye
    patient = torch.arange(batch, device=z.device).repeat(n_mod)
    positive = contrast & (patient[:, None] == patient[None, :])
    exp_logits = torch.where(contrast, logits.exp(), 0.0)
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True) + 1e-6)
    pos = positive.to(z.dtype)
    mean_log_prob_pos = (pos * torch.where(positive, log_prob, 0.0)).sum(1) / (pos.sum(1) + 1e-6)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


class QuietAttention(nn.Module):
    """Pre-norm multi-head self-attention under a presence mask (``drim/fusion/utils.py``)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, softmax: str):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale, self.softmax = heads, dim_head ** -0.5, softmax
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.dropout = Dropout(dropout)
        self.to_out = (nn.Identity() if heads == 1 and dim_head == dim
                       else nn.Sequential(nn.Linear(inner, dim), Dropout(dropout)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, N, D], ``mask`` [B, N] → (update [B, N, D], weights [B, h, N, N])."""
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2)
                   for t in self.to_qkv(self.norm(x)).chunk(3, dim=-1))
        dots = mask_attention_scores(q @ k.transpose(-1, -2) * self.scale, mask)
        attn = quiet_softmax(dots, dim=-1, variant=self.softmax)
        out = (self.dropout(attn) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out), attn


class MaskedAttentionFusion(nn.Module):
    """CLS token + masked quiet-softmax transformer; returns the normalised CLS output."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int,
                 dropout: float, softmax: str):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))   # official init: randn
        self.layers = nn.ModuleList()
        for _ in range(depth):
            ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp_dim), nn.GELU(),
                               Dropout(dropout), nn.Linear(mlp_dim, dim), Dropout(dropout))
            self.layers.append(nn.ModuleList(
                [QuietAttention(dim, heads, dim_head, dropout, softmax), ff]))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``tokens`` [B, N, D], ``mask`` [B, N] → (fused [B, D], attention per layer)."""
        x, mask = prepend_token(tokens, mask, self.cls_token)
        maps = []
        for attn, ff in self.layers:
            update, weights = attn(x, mask)
            maps.append(weights)
            x = x + update
            x = x + ff(x)
        return self.norm(x[:, 0]), maps


def embedding_encoder(d_in: int, hidden: int, dim: int, dropout: float) -> nn.Sequential:
    """``drim/mri/models.py`` ``MRIEmbeddingEncoder``: the official encoder of an embedding."""
    return nn.Sequential(nn.Linear(d_in, hidden), Dropout(dropout), nn.GELU(),
                         nn.Linear(hidden, dim))


def discriminator(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """``drim/models.py`` ``Discriminator`` on ``[shared, unique]`` (2·dim) → one logit."""
    return nn.Sequential(nn.Linear(2 * dim, hidden), Dropout(dropout), nn.GELU(),
                         nn.Linear(hidden, 2 * dim), Dropout(dropout), nn.GELU(),
                         nn.Linear(2 * dim, 1))


class DRIM(FusionMethod):
    """DRIMSurv with a classification head; see the module docstring."""

    name = "drim"
    permutation_invariant = True   # no positional embedding: attention over a set
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("dim",)}
    defaults: ClassVar[dict[str, Any]] = {
        "dim": 128,                   # general.dim
        "encoder_hidden": 256,        # MRIEmbeddingEncoder hidden width
        "dropout": 0.2,               # general.dropout (encoders, attention, discriminators)
        "depth": 1,                   # fusion.params (maf)
        "heads": 16,
        "dim_head": 64,
        "mlp_dim": 128,
        "quiet_softmax": "official",  # official (max-shifted, utils.softmax_one) | exact
        # ContrastiveLoss temperature; its base_temperature stays 0.07, as the official
        # class's default (train_drimsurv.py: ContrastiveLoss()), so another temperature
        # scales the term by t / 0.07: SupCon's normalisation, which keeps its gradient's
        # size
        "temperature": 0.07,
        "shared_weight": 1.0,         # aux_loss.alpha
        "unique_weight": 0.8,         # disentangled.gamma
        "disc_hidden": 1024,          # Discriminator hidden width
        "disc_lr": 1e-3,              # disentangled.dsm_lr (AdamW)
        "disc_weight_decay": 3e-4,    # disentangled.dsm_wd
        # trainer settings (configs/multimodal.yaml, train_drimsurv.py)
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-2,
        "schedule": "cosine",         # CosineAnnealingLR(T_max=epochs, eta_min=5e-6):
        "eta_min": 5e-6,              # configs/multimodal.yaml scheduler
        "max_epochs": 30,             # general.epochs
        "patience": 30,               # no early stopping in the official code
        "batch_size": 24,             # dataloader.batch_size
        "noise_p": 0.0,               # no feature-noise augmentation in the official code
        # a plain shuffled loader (train_drimsurv.py): the benchmark's weighted sampler
        # draws with replacement, and a patient twice in a batch is its own negative in
        # the contrastive loss
        "sampler": "none",
    }

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        if hp["quiet_softmax"] not in SOFTMAX_VARIANTS:
            raise ValueError(f"drim: quiet_softmax must be one of {SOFTMAX_VARIANTS}, "
                             f"got {hp['quiet_softmax']!r}")
        if int(hp["depth"]) < 1:
            raise ValueError(f"drim: depth must be >= 1, got {hp['depth']}")
        dim, hidden, dropout = int(hp["dim"]), int(hp["encoder_hidden"]), float(hp["dropout"])
        def encoders() -> nn.ModuleDict:
            return nn.ModuleDict({
                m: embedding_encoder(flat_dim(self.shapes[m]), hidden, dim, dropout)
                for m in self.modalities})

        self.shared_encoders, self.unique_encoders = encoders(), encoders()
        fusion = dict(dim=dim, depth=int(hp["depth"]), heads=int(hp["heads"]),
                      dim_head=int(hp["dim_head"]), mlp_dim=int(hp["mlp_dim"]),
                      dropout=dropout, softmax=hp["quiet_softmax"])
        self.fusion_shared = MaskedAttentionFusion(**fusion)
        self.fusion_unique = MaskedAttentionFusion(**fusion)
        self.head = nn.Linear(dim, self.n_classes)
        self.discriminators = nn.ModuleDict({
            m: discriminator(dim, int(hp["disc_hidden"]), dropout) for m in self.modalities})
        self._disc_optimizer = None  # mmpipe.bench.optim.adam, made at the first step
        self._pending_pairs = None   # the last training batch's pairs, for after_step

    # -- forward ---------------------------------------------------------------------------
    def embed(self, x, present) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised shared and unique embeddings [B, M, dim]; zeros where absent."""
        present = present.bool()
        shared, unique = [], []
        for j, m in enumerate(self.modalities):
            keep = present[:, j]
            v = flat_zero_filled(x[m], keep)
            for encoders, out in ((self.shared_encoders, shared), (self.unique_encoders, unique)):
                z = F.normalize(encoders[m](v), p=2, dim=-1)
                out.append(torch.where(keep.unsqueeze(-1), z, 0.0))
        return torch.stack(shared, 1), torch.stack(unique, 1)

    def fuse(self, shared, unique, present) -> tuple[torch.Tensor, dict[str, list]]:
        """Fused representation [B, dim] (DRIMSurv.drim_forward) and the attention maps."""
        present = present.bool()
        fused_shared, maps_shared = self.fusion_shared(shared, present)
        tokens = torch.cat([unique, fused_shared.unsqueeze(1)], dim=1)
        mask = torch.cat([present, present.new_ones(present.shape[0], 1)], dim=1)
        fused, maps_unique = self.fusion_unique(tokens, mask)
        return fused, {"shared": maps_shared, "unique": maps_unique}

    def forward(self, x, present):
        shared, unique = self.embed(x, present)
        return self.head(self.fuse(shared, unique, present)[0])

    # -- losses ----------------------------------------------------------------------------
    def _pairs(self, shared, unique, present) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality (joint, product-of-marginals) inputs of its discriminator."""
        pairs = {}
        for j, m in enumerate(self.modalities):
            rows = present[:, j]
            if int(rows.sum()) <= 1:   # the roll needs two subjects (official: skip)
                continue
            s, u = shared[rows, j].detach(), unique[rows, j]
            pairs[m] = (torch.cat([s, u], 1), torch.cat([s.roll(1, 0), u], 1))
        return pairs

    def _unique_loss(self, pairs) -> torch.Tensor:
        """Encoders' side: ``Σ_m BCE(D_m(joint), 1)`` through detached views of each D_m's
        parameters: the gradient reaches the encoders only. No copy: the discriminators
        step after backward (:meth:`after_step`), so the views hold the weights the loss
        was computed with when backward reads them (the fused optimiser kernels do not
        bump version counters, so autograd would not notice an earlier step)."""
        ref = next(self.head.parameters())
        total = ref.new_zeros(())
        for m, (joint, _) in pairs.items():
            disc = self.discriminators[m]
            if torch.is_grad_enabled():
                frozen = {name: p.detach() for name, p in disc.named_parameters()}
                logits = torch.func.functional_call(disc, frozen, (joint,))
            else:  # validation: no backward to keep away from the discriminators
                logits = disc(joint)
            total = total + F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return total

    def loss_terms(self, x, present, y, class_weight=None) -> dict[str, Any]:
        """Task, shared and unique losses, the logits and the discriminator pairs."""
        present = present.bool()
        shared, unique = self.embed(x, present)
        logits = self.head(self.fuse(shared, unique, present)[0])
        pairs = self._pairs(shared, unique, present)
        return {"task": F.cross_entropy(logits, y, weight=class_weight),
                "shared": supcon_loss(shared, present, float(self.hparams["temperature"])),
                "unique": self._unique_loss(pairs), "logits": logits, "pairs": pairs}

    def loss(self, x, present, y, class_weight=None):
        terms = self.loss_terms(x, present, y, class_weight)
        total = (terms["task"] + float(self.hparams["shared_weight"]) * terms["shared"]
                 + float(self.hparams["unique_weight"]) * terms["unique"])
        if self.training and torch.is_grad_enabled():
            if self._pending_pairs:  # a loop without the hook would never train them
                raise RuntimeError("drim: a training loss before the previous batch's "
                                   "after_step(): the discriminators' step was skipped")
            self._pending_pairs = terms["pairs"]
        return total, terms["logits"]

    def validation_loss(self, x, present, y, class_weight=None):
        """The task loss alone: the official code keeps the last epoch (trainers.py saves
        after the loop); the benchmark's protocol keeps the best validation epoch, judged
        on the task, since the adversarial term moves with the discriminators' steps and
        outweighs it (patience = max_epochs: no early stop, as the official code)."""
        terms = self.loss_terms(x, present, y, class_weight)
        return terms["task"], terms["logits"]

    def after_step(self) -> None:
        """The discriminators' step on the last training batch's pairs (official order:
        after the encoders' step, on the same batch's embeddings)."""
        pairs, self._pending_pairs = self._pending_pairs, None
        if pairs:
            self.discriminator_step(pairs)

    def discriminator_loss(self, pairs) -> torch.Tensor:
        """``drim/losses.py`` ``DiscriminatorLoss``: marginals → 1, joint → 0, on detached pairs."""
        ref = next(self.head.parameters())
        total = ref.new_zeros(())
        for m, (joint, marginal) in pairs.items():
            disc = self.discriminators[m]
            real, fake = disc(marginal.detach()), disc(joint.detach())
            total = total + (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                             + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        return total

    def discriminator_step(self, pairs) -> float:
        """One AdamW step of the discriminators (their own optimiser, official settings)."""
        if self._disc_optimizer is None:
            params = list(self.discriminators.parameters())
            self._disc_optimizer = adam(params, lr=float(self.hparams["disc_lr"]),
                                        weight_decay=float(self.hparams["disc_weight_decay"]),
                                        decoupled=True)
        loss = self.discriminator_loss(pairs)
        self._disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._disc_optimizer.step()
        self._disc_optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    # -- training --------------------------------------------------------------------------
    def encoder_parameters(self):
        """Every parameter but the discriminators' (those have their own optimiser)."""
        disc = {id(p) for p in self.discriminators.parameters()}
        return [p for p in self.parameters() if id(p) not in disc]

    def phases(self, train_cfg):
        return [Phase("train", self.encoder_parameters, **phase_settings(train_cfg))]

    def report_notes(self) -> list[str]:
        hp = self.hparams
        return [
            "drim: cached vector features, each through the official embedding encoder "
            f"(MRIEmbeddingEncoder: Linear-{hp['encoder_hidden']}-GELU-Linear-"
            f"{hp['dim']}) for both the shared and the unique branch; "
            "cross-entropy instead of the logistic-hazard survival loss.",
            "drim: discriminators stepped after each encoder step, on that batch's "
            "embeddings, with their own AdamW (the official order); their optimiser state "
            "is not checkpointed.",
            "drim: trained on every subject (official multimodal scripts keep patients "
            f"with >= 2 modalities); {self._checkpoint_words()}; "
            + ("plain shuffled batches as the official loader (no class balancing)."
               if hp["sampler"] == "none" else
               f"batches drawn by the {hp['sampler']} sampler (official: plain shuffled "
               "batches)."),
            *(["drim: attention with the exact quiet softmax (quiet_softmax: exact; the "
               "official utils.softmax_one shifts by the max, quiet_softmax: official)"]
              if hp["quiet_softmax"] == "exact" else []),
        ]

    def _checkpoint_words(self) -> str:
        """Which epoch's weights the run kept, as its trainer settings chose."""
        from mmpipe.bench.trainer import TRAIN_DEFAULTS  # the settings a config leaves out

        hp = {**TRAIN_DEFAULTS, **self.hparams}
        if int(hp["min_epochs"]) >= int(hp["max_epochs"]):
            return "the last epoch's weights are kept, as the official code keeps them"
        by = "the task loss" if hp["monitor"] == "loss" else f"validation {hp['monitor']}"
        since = f" from epoch {int(hp['min_epochs'])} on" if int(hp["min_epochs"]) > 1 else ""
        return f"the best-validation checkpoint by {by}{since} is kept (official: last epoch)"
