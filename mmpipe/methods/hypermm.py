"""HyperMM (Chaptoukaev et al., "HyperMM: Robust Multimodal Learning with Varying-sized
Inputs", 2024; official code github.com/robustml-eurecom/hyperMM, ``HyperMM.py``,
``train+test.py``, ``utils.py``).

A modality is identified by a learned embedding; a small hypernetwork turns it into
the weights and bias of one shared feature extractor φ, so one set of parameters serves
every modality. The present modalities' φ outputs are aggregated by a set function
(mean by default) and classified by ρ, so any non-empty subset of modalities is a valid
input and absent modalities are simply left out of the set.

Two steps (official ``train+test.py``):

1. **phase "phi"** — embeddings + hypernetwork, a decoder and a temporary classifier
   are trained on single (subject, modality) items with ``lambda_rec · MSE(decoder(φ(x)),
   x) + CE(classifier(φ(x)), y)`` (``utils.pretrain_model``: ``mse + ce``). The MSE is
   of the inputs as the benchmark normalises them: the official code reconstructs raw
   VGG activations, where it is of the cross-entropy's size, as it is under ``zscore``
   (about 1 per element); under ``normalize: l2`` (MMIST-ccRCC's) a D-wide input has a
   mean square of 1/D, so the term is a few thousandths of the cross-entropy and phase φ
   trains on the cross-entropy nearly alone (raise ``lambda_rec`` to weigh it back).
2. **phase "rho"** — φ is frozen; ρ is trained with cross-entropy on the aggregation of
   the present modalities' φ outputs (``HyperMMNet``).

φ on VGG11 slice blocks ``[C=512, 7, 7]`` is a 1×1 convolution whose weight and bias come
from the hypernetwork (``HyperMMPretrain.encoder``/``sample_weights``); the decoder is a
learned, modality-agnostic 1×1 transposed convolution back to the block
(``HyperMMPretrain.decoder``), and both the temporary classifier and ρ read the
*flattened* φ output (``torch.flatten(features, 1)``, 512·7·7 values), as in the official
code. ``pool="gap"`` (global average pooling to ``C`` values) is offered as a cheaper
alternative.

On cohorts without VGG blocks (vector features such as MMIST's Med3D/CLAM/text
embeddings, shape ``[D]``) the same two-step hypernetwork conditions a *linear* layer
``D → D'`` instead of the 1×1 conv (a 1×1 conv on a 1×1 map), with a linear decoder. When
the modalities' dimensions differ, each modality first goes through its own linear
adapter to a common dimension (``adapter_dim``, default the smallest dimension) and the
reconstruction target stays the raw input, reached by a per-modality linear decoder.
This vector variant is our extension, not in the paper. On MMIST-ccRCC ``with_clinical``
the smallest dimension is the tabular record's 28, beside 512-d and 1024-d image
features; measured on its validation splits (``benchmarks/selection_defaults.py
--variants``: 10 seeds, l2 normalisation, early stopping on a seventh of each training
split, the validation split held out, the test split not read; AMD VM, 2026-12-06), the
held-out AUC was 0.829 ± 0.047 at 28, 0.832 ± 0.045 at ``adapter_dim: 512`` (the
official φ width; 28 times the parameters, 5 times the time) and 0.814 ± 0.063 at 128,
so the default stays.

Choices where the paper/code leave room (all hyper-parameters below):

- ``emb_dim=5`` and a ``5 → 20 → |θ|`` ReLU MLP are the official code's values
  (``nn.Embedding(20, 5)``, ``hypernet``); here the table has one row per modality.
- ``hyper_init="scaled"`` (default, ours): the hypernetwork's last layer is rescaled at
  construction so the generated weights start at the spread of PyTorch's default
  conv/linear init (std 1/√(3·fan_in)) instead of ~0.3 with the plain ``nn.Linear``
  init of the official code (``hyper_init="default"``), which blows the φ outputs up by
  about an order of magnitude (Ortiz et al., ICLR 2024, on hypernetwork magnitudes).
- ρ: ``rho_layers=3`` (the paper's three linear layers, widths ``rho_hidden`` and
  ``rho_hidden/2``; the paper gives no widths) is the default; ``rho_layers=2`` is the
  official code's ``Linear(F, 512) → ReLU → Dropout(0.5) → Linear(512, C)``. Dropout 0.5
  after the first layer in both (official code).
- temporary classifier of phase φ: ``Linear(F, 512) → ReLU → Linear(512, C)`` (official
  ``HyperMMPretrain.classifier``), with C-class cross-entropy instead of the binary BCE.
- aggregation over present modalities: ``mean`` (official ``latent.mean(dim=0)``),
  ``sum`` or ``max``.
- early stopping: phase φ watches the validation phase loss (``phi_monitor="loss"``;
  the official code stops pre-training on the *training* loss, which the shared trainer
  does not track, and keeps its last epoch where φ here restores its best validation
  epoch); phase ρ watches the trainer's default, the validation loss of each subject's
  prediction from its present modalities, from epoch ``min_epochs`` on, 0 here. The
  official code (``train+test.py``, ``utils.evaluate_model``) scores each validation
  subject's prediction from every single present modality *and* from all of them
  together, pooled into one loss and one AUC, stops on that loss's patience and keeps
  the epoch of the best pooled AUC from its sixth epoch on (``epoch >= 5``, counted
  from 0). The shared trainer scores one prediction per subject, so the single-modality
  predictions are not pooled in (the selection favours the full set, not robustness to
  one modality alone); ``monitor: auc`` with ``min_epochs: 6`` comes nearest to the
  checkpoint rule, though it also holds phase φ's checkpoint back and stops on the
  AUC's patience, not the loss's.
- optimiser settings are the official ``train+test.py`` defaults: Adam, lr 1e-4 for both
  steps, weight decay 5e-4, 50 pre-training epochs, 100 main epochs, patience 10. The
  official batch size of one subject is replaced by the trainer's mini-batches and its
  ReduceLROnPlateau scheduler is not reproduced. Batches are drawn as the official
  loader shuffles, without class balancing, and the loss weighs every subject equally,
  so each class by its share, as the official unweighted ``BCEWithLogitsLoss`` does
  (``sampler: none``, ``class_weights: false``; before this version the trainer's
  class-balancing sampler was left on). Phase φ's loss is the mean over a batch's
  (subject, modality) items; the official ``utils.pretrain_model`` zeroes the gradients
  once a subject and steps after each of its items, so a subject's second step carries
  the first item's gradient again, which reads as an accident and is not reproduced.
  :meth:`HyperMM.report_notes` gives the report each departure that ran.

Freezing φ for phase ρ (what the shared trainer relies on): the ``parameters`` callable of
the ρ phase, called once when the trainer builds that phase's optimiser, sets
``requires_grad=False`` on every φ-side parameter (embedding, hypernetwork, adapters,
decoder, temporary classifier) and returns ρ's parameters only; from then on φ runs under
``torch.no_grad()`` and :meth:`train` keeps the φ modules in eval mode. The phase also
lists the frozen modules in ``Phase.extra["frozen"]`` for a trainer that wants to check.
The φ phase's callable unfreezes them again, so ``phases()`` can be run twice.

``HyperMMEndToEnd`` is the paper's "HyperMM w/o 2-steps" ablation: one phase, every
parameter (embeddings, hypernetwork, adapters, ρ) trained together with cross-entropy
only (``lambda_rec=0``; a positive ``lambda_rec`` adds the reconstruction term and
builds the decoder).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods.base import FusionMethod, Phase, phase_settings
from mmpipe.methods.blocks import Dropout, check_choice, masked_mean

PHI_MODULES = ("embedding", "hypernet", "adapters")
AUX_MODULES = ("decoder", "classifier")  # trained in phase φ only, unused at inference


# settings of both variants; the official train+test.py argparse defaults for the trainer
_SHARED_DEFAULTS: dict[str, Any] = {
    "emb_dim": 5,             # official HyperMM.py: nn.Embedding(20, 5)
    "hyper_hidden": 20,       # official: Linear(5, 20) -> ReLU -> Linear(20, |θ|)
    "hyper_init": "scaled",   # scaled | default (official nn.Linear init)
    "phi_dim": None,          # φ output channels / dim; None = input channels (official 512→512)
    "adapter_dim": None,      # vector path, differing dims: common dim (None = smallest)
    "pool": "flatten",        # flatten (official) | gap: what the classifier and ρ read
    "aggregation": "mean",    # mean (official) | sum | max over present modalities
    "rho_layers": 3,          # 3 (paper) | 2 (official code)
    "rho_hidden": 512,
    "dropout": 0.5,           # official ρ Dropout(0.5)
    "lr": 1e-4,
    "weight_decay": 5e-4,
    "max_epochs": 100,
    "patience": 10,
    # train+test.py: DataLoader(shuffle=True) and an unweighted BCEWithLogitsLoss; the
    # trainer's default class-balancing sampler had resampled both phases
    "sampler": "none",
    "class_weights": False,
}
# the two-step variant's phase φ (pre-training with the reconstruction loss)
_TWO_STEP_DEFAULTS: dict[str, Any] = {
    "cls_hidden": 512,        # temporary classifier of phase φ (official 512)
    "lambda_rec": 1.0,        # weight of the reconstruction MSE (official: mse + ce)
    "phi_lr": None,           # None = lr (official lr_pretrain = lr = 1e-4)
    "phi_max_epochs": 50,     # official epochs_pretrain
    "phi_patience": None,     # None = patience
    "phi_monitor": "loss",    # validation phase loss (MSE + CE) | balanced_accuracy
}


class HyperMM(FusionMethod):
    """Two-step HyperMM: hypernetwork-conditioned φ, then set aggregation and ρ."""

    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr", "phi_lr"), "capacity": ("rho_hidden",)}
    name: ClassVar[str] = "hypermm"
    permutation_invariant: ClassVar[bool] = True
    two_step: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {**_SHARED_DEFAULTS, **_TWO_STEP_DEFAULTS}

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        for key, allowed in (("aggregation", ("mean", "sum", "max")), ("rho_layers", (2, 3)),
                             ("pool", ("flatten", "gap")), ("hyper_init", ("scaled", "default")),
                             ("phi_monitor", ("loss", "balanced_accuracy", "auc"))):
            if key in hp:
                check_choice(self.name, key, hp[key], allowed)
        ranks = {len(s) for s in self.shapes.values()}
        if ranks == {3}:
            if len(set(self.shapes.values())) != 1:
                raise ValueError(f"{self.name}: the conv path needs blocks of one shape "
                                 f"[C, H, W] for every modality, got {self.shapes}")
            self.conv = True
            c_in, h, w = next(iter(self.shapes.values()))
            self.in_dim = c_in
            self.spatial = h * w
            dims = {m: c_in for m in self.modalities}
        elif ranks == {1}:
            self.conv = False
            dims = {m: s[0] for m, s in self.shapes.items()}
            self.spatial = 1
            self.in_dim = int(hp["adapter_dim"] or min(dims.values()))
        else:
            raise ValueError(f"{self.name}: every modality must be a [C, H, W] block (VGG) or "
                             f"every modality a vector [D]; got {self.shapes}")
        self.out_dim = int(hp["phi_dim"] or self.in_dim)
        m = len(self.modalities)
        # vector features of differing dims: per-modality adapters to a common dim (ours)
        adapt = not self.conv and (len(set(dims.values())) > 1 or bool(hp["adapter_dim"]))
        self.adapters = (nn.ModuleDict({k: nn.Linear(d, self.in_dim) for k, d in dims.items()})
                         if adapt else None)
        if hp["phi_dim"] is None:
            self.derived["phi_dim"] = self.out_dim
        if hp["adapter_dim"] is None and not self.conv:
            self.derived["adapter_dim"] = self.in_dim if adapt else None
        self.embedding = nn.Embedding(m, hp["emb_dim"])
        n_theta = self.out_dim * self.in_dim + self.out_dim
        self.hypernet = nn.Sequential(nn.Linear(hp["emb_dim"], hp["hyper_hidden"]), nn.ReLU(),
                                      nn.Linear(hp["hyper_hidden"], n_theta))
        if hp["hyper_init"] == "scaled":
            self._scale_hypernet()
        feat = self.out_dim * (self.spatial if hp["pool"] == "flatten" else 1)
        self.feature_dim = feat
        # decoder: reconstructs the input from φ's output (official ConvTranspose2d 1×1);
        # per modality when adapters map differing raw dims to the common one
        self.decoder: nn.Module | None = None
        if self.two_step or hp["lambda_rec"] > 0:
            if self.conv:
                self.decoder = nn.ConvTranspose2d(self.out_dim, self.in_dim, kernel_size=1)
            elif self.adapters is not None:
                self.decoder = nn.ModuleDict({k: nn.Linear(self.out_dim, d)
                                              for k, d in dims.items()})
            else:
                self.decoder = nn.Linear(self.out_dim, self.in_dim)
        self.classifier = (nn.Sequential(nn.Linear(feat, hp["cls_hidden"]), nn.ReLU(),
                                         nn.Linear(hp["cls_hidden"], self.n_classes))
                           if self.two_step else None)
        hidden = int(hp["rho_hidden"])
        if hp["rho_layers"] == 2:  # official HyperMMNet.rho
            self.rho = nn.Sequential(nn.Linear(feat, hidden), nn.ReLU(), Dropout(hp["dropout"]),
                                     nn.Linear(hidden, self.n_classes))
        else:  # the paper's three linear layers (widths ours)
            # at least one unit: rho_hidden 1 (a tuning trial's half of 2) made a layer of
            # none, and rho's output its last bias alone
            half = max(1, hidden // 2)
            self.rho = nn.Sequential(nn.Linear(feat, hidden), nn.ReLU(), Dropout(hp["dropout"]),
                                     nn.Linear(hidden, half), nn.ReLU(),
                                     nn.Linear(half, self.n_classes))
        self._phi_frozen = False

    def reorder_modalities(self, order: list[str]) -> None:
        """Relabel the modality axis (``present`` columns in ``order``): the embedding
        table is the only parameter indexed by modality position."""
        if sorted(order) != sorted(self.modalities):
            raise ValueError(f"{order} is not a reordering of {self.modalities}")
        idx = torch.as_tensor([self.modalities.index(m) for m in order],
                              device=self.embedding.weight.device)
        with torch.no_grad():
            self.embedding.weight.copy_(self.embedding.weight[idx].clone())
        self.modalities = list(order)

    # ---------------------------------------------------------------- φ
    @torch.no_grad()
    def _scale_hypernet(self) -> None:
        """Generated weights start with the spread of a default conv/linear init."""
        last = self.hypernet[-1]
        last.bias.zero_()
        theta = self.hypernet(self.embedding.weight)
        n_w = self.out_dim * self.in_dim
        target = 1.0 / math.sqrt(3 * self.in_dim)
        std = float(theta[:, :n_w].std())
        if std > 0:
            last.weight.mul_(target / std)

    def generated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality weights ``[M, out, in]`` and biases ``[M, out]`` of φ."""
        theta = self.hypernet(self.embedding.weight)
        n_w = self.out_dim * self.in_dim
        return (theta[:, :n_w].reshape(-1, self.out_dim, self.in_dim), theta[:, n_w:])

    def _inputs(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Stack ``[B, M, C(, H, W)]`` with absent entries set to zero (whatever they held)."""
        items = []
        for j, m in enumerate(self.modalities):
            v = x[m]
            keep = present[:, j].view(-1, *([1] * (v.dim() - 1)))
            v = torch.where(keep, v, torch.zeros((), dtype=v.dtype, device=v.device))
            if self.adapters is not None:
                v = self.adapters[m](v)
            items.append(v)
        return torch.stack(items, 1)

    def phi(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """φ outputs ``[B, M, out(, H, W)]`` (absent entries are meaningless; mask them)."""
        inp = self._inputs(x, present)
        w, b = self.generated()
        if self.conv:  # 1×1 conv with modality-specific generated weights
            return torch.einsum("moc,bmchw->bmohw", w, inp) + b[None, :, :, None, None]
        return torch.einsum("mod,bmd->bmo", w, inp) + b[None]

    def _pool(self, z: torch.Tensor) -> torch.Tensor:
        if not self.conv:
            return z
        if self.hparams["pool"] == "gap":
            return z.mean(dim=(-2, -1))
        return z.flatten(2)

    def aggregate(self, f: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Set aggregation of ``f`` [B, M, F] over the present modalities only."""
        keep = present.unsqueeze(-1)
        how = self.hparams["aggregation"]
        if how == "max":
            out = f.masked_fill(~keep, float("-inf")).amax(1)
            return torch.where(present.any(1, keepdim=True), out, torch.zeros_like(out))
        if how == "sum":
            return torch.where(keep, f, torch.zeros((), dtype=f.dtype, device=f.device)).sum(1)
        return masked_mean(f, present)

    def representation(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """The aggregated φ representation ρ reads, ``[B, F]``."""
        if self._phi_frozen:
            with torch.no_grad():
                return self.aggregate(self._pool(self.phi(x, present)), present)
        return self.aggregate(self._pool(self.phi(x, present)), present)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.rho(self.representation(x, present))

    # ---------------------------------------------------------------- losses
    def _reconstruction(self, z: torch.Tensor, x: dict[str, torch.Tensor],
                        present: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the decoded φ outputs against the raw present inputs."""
        sse = z.new_zeros(())
        count = 0
        for j, m in enumerate(self.modalities):
            keep = present[:, j]
            if not bool(keep.any()):
                continue
            dec = self.decoder[m] if isinstance(self.decoder, nn.ModuleDict) else self.decoder
            target = x[m][keep]
            sse = sse + F.mse_loss(dec(z[:, j][keep]), target, reduction="sum")
            count += target.numel()
        return sse / max(count, 1)

    def phi_loss(self, x: dict[str, torch.Tensor], present: torch.Tensor, y: torch.Tensor,
                 class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase φ: ``lambda_rec · MSE + CE`` over the present (subject, modality) items
        (official ``utils.pretrain_model``). Logits returned per subject are the mean of
        the temporary classifier's logits over its present modalities."""
        z = self.phi(x, present)
        item_logits = self.classifier(self._pool(z)[present])           # [P, C]
        items_y = y.unsqueeze(1).expand_as(present)[present]
        # a batch of no present item has no term (its mean over nothing was NaN)
        ce = (F.cross_entropy(item_logits, items_y, weight=class_weight) if len(items_y)
              else item_logits.sum())
        loss = ce
        if self.hparams["lambda_rec"] > 0:
            loss = loss + self.hparams["lambda_rec"] * self._reconstruction(z, x, present)
        per = item_logits.new_zeros((*present.shape, self.n_classes))
        per[present] = item_logits
        return loss, masked_mean(per, present)

    # ---------------------------------------------------------------- phases
    def _submodules(self, names) -> list[nn.Module]:
        return [mod for n in names if (mod := getattr(self, n, None)) is not None]

    def freeze_phi(self, frozen: bool = True) -> None:
        """Freeze (or release) φ and the phase-φ heads: no gradients, eval mode."""
        self._phi_frozen = frozen
        for mod in self._submodules(PHI_MODULES + AUX_MODULES):
            for p in mod.parameters():
                p.requires_grad_(not frozen)
            mod.train(self.training and not frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        if self._phi_frozen:  # φ has no dropout/normalisation, but keep it in eval anyway
            for mod in self._submodules(PHI_MODULES + AUX_MODULES):
                mod.train(False)
        return self

    def phi_parameters(self) -> list[nn.Parameter]:
        self.freeze_phi(False)
        return [p for mod in self._submodules(PHI_MODULES + AUX_MODULES) for p in mod.parameters()]

    def rho_parameters(self) -> list[nn.Parameter]:
        self.freeze_phi(True)
        return list(self.rho.parameters())

    def report_notes(self) -> list[str]:
        """Where the run departs from the official code (``train+test.py``,
        ``HyperMM.py``, ``utils.py``), as its settings ran: the report read none on VGG
        blocks, where the module docstring lists seven."""
        hp = self.hparams
        notes = []
        if not self.conv:
            notes.append("HyperMM on vector features: the hypernetwork generates a "
                         "conditioned linear layer instead of the paper's 1x1 convolution on "
                         "VGG11 slice blocks (mmpipe extension, not in the paper)"
                         + (f", each modality first mapped to {self.in_dim} values by its own "
                            "linear adapter" if self.adapters is not None else ""))
        if hp["hyper_init"] == "scaled":
            notes.append("hypernetwork's last layer rescaled at construction (hyper_init: "
                         "scaled, ours; the official nn.Linear init is hyper_init: default)")
        if hp["rho_layers"] == 3:
            notes.append("rho of three linear layers (the paper); the official code has two "
                         "(rho_layers: 2)")
        notes.append("mini-batches where the official code steps once a subject (each of "
                     "its modality items in phase phi), without its ReduceLROnPlateau "
                     "scheduler; C-class cross-entropy for its binary BCE")
        if self.two_step:
            notes.append("phase phi keeps its best validation-loss epoch (the official code "
                         "its last, stopping on the training loss); rho its best validation "
                         "epoch by the trainer's monitor, each subject's prediction from all "
                         "its modalities (the official code the best AUC pooled over those "
                         "and every single-modality prediction, from epoch 6)")
        return notes

    def phases(self, train_cfg: dict[str, Any]) -> list[Phase]:
        settings = phase_settings(train_cfg)
        hp = self.hparams
        phi_settings = {**settings, "max_epochs": hp["phi_max_epochs"],
                        "monitor": hp["phi_monitor"]}
        if hp["phi_lr"] is not None:
            phi_settings["lr"] = hp["phi_lr"]
        if hp["phi_patience"] is not None:
            phi_settings["patience"] = hp["phi_patience"]
        frozen = [n for n in PHI_MODULES + AUX_MODULES if getattr(self, n, None) is not None]
        return [
            Phase("phi", self.phi_parameters, loss=self.phi_loss, **phi_settings),
            Phase("rho", self.rho_parameters, extra={"frozen": frozen}, **settings),
        ]

    def trainable_parameters(self) -> int:
        """Every parameter trained in some phase (φ, its phase-φ heads and ρ), whether or
        not φ is frozen at the moment of asking."""
        return sum(p.numel() for p in self.parameters())


class HyperMMEndToEnd(HyperMM):
    """The paper's "HyperMM w/o 2-steps" ablation: φ and ρ trained together, one phase,
    cross-entropy on the aggregated prediction only (``lambda_rec=0``; a positive value
    adds the reconstruction MSE of the present inputs)."""

    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("rho_hidden",)}
    name: ClassVar[str] = "hypermm_e2e"
    two_step: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {**_SHARED_DEFAULTS, "lambda_rec": 0.0}

    def loss(self, x: dict[str, torch.Tensor], present: torch.Tensor, y: torch.Tensor,
             class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.phi(x, present)
        logits = self.rho(self.aggregate(self._pool(z), present))
        loss = F.cross_entropy(logits, y, weight=class_weight)
        if self.hparams["lambda_rec"] > 0:
            loss = loss + self.hparams["lambda_rec"] * self._reconstruction(z, x, present)
        return loss, logits

    def validation_loss(self, x: dict[str, torch.Tensor], present: torch.Tensor,
                        y: torch.Tensor, class_weight: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The task alone: a positive ``lambda_rec``'s reconstruction falls as φ trains,
        whatever the prediction's quality (the official code selects on the task)."""
        return FusionMethod.loss(self, x, present, y, class_weight)

    def phases(self, train_cfg: dict[str, Any]) -> list[Phase]:
        def everything():
            self.freeze_phi(False)
            return list(self.parameters())
        return [Phase("train", everything, **phase_settings(train_cfg))]
