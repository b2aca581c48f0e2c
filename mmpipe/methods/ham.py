"""HAM (Fürböck et al., "No Modality Left Behind: Dynamic Model Generation for Incomplete
Medical Data", arXiv 2509.11406, 2025) and its Channel Dropout comparator.

**HAM** (Hypernetwork for Absent Modalities; the paper's abstract and the project issue): a
hypernetwork ``h`` maps the binary modality vector ``μ ∈ {0,1}^M`` (1 = present) to *every*
parameter ``θ_μ`` of a small task model, ``h: μ → θ_μ``; the task model ``f_θμ`` then
classifies the input in which the absent modalities are zero-padded. One network thus
yields one classifier per missingness pattern.

- hypernetwork: an MLP of 4 linear layers with ReLU and a narrow bottleneck,
  ``M → 32 → 8 → 32 → |θ|`` (``hyper_hidden``);
- task model: ``Linear(ΣD_m, 32) → ReLU → Linear(32, C)`` (``task_hidden``) on the
  concatenation of the flattened modalities, absent ones set to zero (the paper's task
  model is a small CNN on zero-padded image channels; vector features get an MLP);
- training (the project issue): ``μ`` is drawn at random and kept for ``n_it = 10`` iterations;
  the batch is masked with it. Our subjects are already naturally incomplete, so the
  *effective* presence of a subject is ``present AND μ``; a subject that this would leave
  without any modality keeps its own presence instead (no subject is emptied, and no
  further random choice is made). The hypernetwork receives the effective per-subject
  presence. ``μ`` is uniform over the ``2^M − 1`` non-empty patterns. In evaluation
  ``μ`` is each subject's own presence; weights are generated once per distinct pattern
  of the batch and the subjects of a pattern run together;
- loss: weighted focal loss (class weights from the trainer, ``class_weights: true``),
  optimiser RMSprop.

The items above (4 linear layers, ReLU, bottleneck, ``n_it = 10``, weighted focal loss,
RMSprop) are this project's reading of the paper. The paper's numeric implementation
details (layer widths, focal ``γ``, learning rate) could not be consulted here, so the
widths are ours, ``γ = 2`` is the focal-loss default of Lin et al. (2017) and lr/weight
decay/batches/early stopping follow the project protocol (``PROTOCOL_RECIPE``), its
feature noise included (``noise_p`` 0.3, ours: ShaSpec's code adds none, nor does what
was read of the paper). The class-balancing sampler is off (``sampler: none``) since the weighted loss
already balances the classes.

``hyper_init="scaled"`` (default, ours): the hypernetwork's last layer starts with zero
bias and its rows are rescaled per generated tensor so that, over the non-empty
patterns, each generated weight/bias has the spread of PyTorch's default linear init
(std ``1/√(3·fan_in)``); with the plain ``nn.Linear`` init (``"default"``) the generated
weights are about an order of magnitude too large for ΣD ≈ 2 000 inputs.

**Channel Dropout** (the paper's "channel dropout" comparator): the same task network
with ordinary learned weights on the same zero-filled concatenation; in training each
present modality of each subject is zeroed with probability ``p_drop = 0.5`` (the paper's
probability is not available here), and a subject whose present modalities would all be
dropped keeps one of them chosen at random. Nothing is dropped in evaluation. Trained with
HAM's recipe (weighted focal loss, RMSprop) so that the comparison isolates the
hypernetwork.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods.base import FusionMethod
from mmpipe.methods.blocks import (
    check_choice,
    flat_dim,
    flat_zero_filled,
    mlp_head,
    modality_dropout,
    nonempty_subsets,
)
from mmpipe.methods.ham_recipe import (
    HAM_TRAIN_DEFAULTS,
    TASK_LOSS_DEFAULTS,
    TaskLossMixin,
    recipe_note,
)


class HAM(TaskLossMixin, FusionMethod):
    """Hypernetwork ``μ → θ_μ`` generating every weight of the task MLP (see module doc)."""

    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("task_hidden",)}
    name: ClassVar[str] = "ham"
    defaults: ClassVar[dict[str, Any]] = {
        "hyper_hidden": [32, 8, 32],  # 4 linear layers, narrow bottleneck (widths ours)
        "task_hidden": [32],          # task MLP hidden widths (ours: "small task model")
        "n_it": 10,                   # iterations a sampled μ is kept (the project issue)
        "mu_sampling": True,          # false: train on the natural presence only (ablation)
        "hyper_init": "scaled",       # scaled (ours) | default (plain nn.Linear init)
        **TASK_LOSS_DEFAULTS,
        **HAM_TRAIN_DEFAULTS,
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        check_choice(self.name, "hyper_init", hp["hyper_init"], ("scaled", "default"))
        if len(hp["hyper_hidden"]) < 1 or int(hp["n_it"]) < 1:
            raise ValueError(f"{self.name}: hyper_hidden needs at least one width and n_it >= 1")
        n_mod = len(self.modalities)
        d_in = sum(flat_dim(self.shapes[m]) for m in self.modalities)
        widths = [d_in, *[int(w) for w in hp["task_hidden"]], self.n_classes]
        # (out, in) of each generated linear layer of the task model, in order
        self.task_layers = list(zip(widths[1:], widths[:-1], strict=True))
        self.n_task_params = sum(o * i + o for o, i in self.task_layers)
        layers: list[nn.Module] = []
        prev = n_mod
        for width in hp["hyper_hidden"]:
            layers += [nn.Linear(prev, int(width)), nn.ReLU()]
            prev = int(width)
        layers.append(nn.Linear(prev, self.n_task_params))
        self.hypernet = nn.Sequential(*layers)
        if hp["hyper_init"] == "scaled":
            self._scale_hypernet()
        self._calls = 0          # loss calls in training: μ is redrawn every n_it of them
        self.mu_draws = 0
        self.current_mu: torch.Tensor | None = None

    # ---------------------------------------------------------------- hypernetwork
    def _chunks(self):
        """(start, end, fan_in) of every generated tensor (weight, then bias, per layer)."""
        start = 0
        for out, inp in self.task_layers:
            yield start, start + out * inp, inp
            start += out * inp
            yield start, start + out, inp
            start += out

    @torch.no_grad()
    def _scale_hypernet(self) -> None:
        last = self.hypernet[-1]
        last.bias.zero_()
        mus = nonempty_subsets(len(self.modalities)) if len(self.modalities) <= 12 else (
            torch.rand(512, len(self.modalities)) < 0.5)
        theta = self.hypernet(mus.to(last.weight.dtype))
        for start, end, fan_in in self._chunks():
            std = float(theta[:, start:end].std())
            if std > 0:
                last.weight[start:end].mul_(1.0 / math.sqrt(3 * fan_in) / std)

    def generate(self, mu: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Task-model weights for presence patterns ``mu`` [U, M]: per layer ``W`` [U, out,
        in] and ``b`` [U, out]."""
        theta = self.hypernet(mu.to(self.hypernet[0].weight.dtype))
        params, start = [], 0
        for out, inp in self.task_layers:
            w = theta[:, start:start + out * inp].reshape(-1, out, inp)
            start += out * inp
            params.append((w, theta[:, start:start + out]))
            start += out
        return params

    # ---------------------------------------------------------------- forward
    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        present = present.bool()
        inp = torch.cat([flat_zero_filled(x[m], present[:, j])
                         for j, m in enumerate(self.modalities)], dim=1)
        patterns, inverse = torch.unique(present.long(), dim=0, return_inverse=True)
        params = self.generate(patterns)
        out = inp.new_zeros(inp.shape[0], self.n_classes)
        for u in range(patterns.shape[0]):
            rows = torch.nonzero(inverse == u).squeeze(1)
            h = inp[rows]
            for k, (w, b) in enumerate(params):
                h = F.linear(h, w[u], b[u])
                if k < len(params) - 1:
                    h = F.relu(h)
            out = out.index_copy(0, rows, h)
        return out

    # ---------------------------------------------------------------- training
    def _draw_mu(self, device: torch.device) -> torch.Tensor:
        """A pattern uniform over the non-empty ones (global torch RNG)."""
        n_mod = len(self.modalities)
        code = int(torch.randint(1, 2 ** n_mod, (1,)))
        return torch.tensor([(code >> j) & 1 for j in range(n_mod)], dtype=torch.bool,
                            device=device)

    def training_presence(self, present: torch.Tensor) -> torch.Tensor:
        """``present AND μ`` with μ redrawn every ``n_it`` calls; a subject left empty keeps
        its own presence."""
        present = present.bool()
        if self._calls % int(self.hparams["n_it"]) == 0 or self.current_mu is None:
            self.current_mu = self._draw_mu(present.device)
            self.mu_draws += 1
        self._calls += 1
        eff = present & self.current_mu.to(present.device)
        return torch.where(eff.any(1, keepdim=True), eff, present)

    def loss(self, x, present, y, class_weight=None):
        present = present.bool()
        if self.training and self.hparams["mu_sampling"]:
            present = self.training_presence(present)
        return super().loss(x, present, y, class_weight)

    def report_notes(self) -> list[str]:
        return ["HAM on vector features: the hypernetwork generates an MLP task model on the "
                "zero-filled concatenation instead of the paper's small CNN on zero-padded "
                "image channels; hypernetwork/task widths, the focal gamma and lr are ours (the "
                "paper's values were not available); the sampled mu is intersected with each "
                "subject's natural presence (a subject it would empty keeps its own)",
                f"HAM: trained with {recipe_note(self.hparams)}",
                *(["HAM: hypernetwork's last layer rescaled at construction (hyper_init: "
                   "scaled, ours; the plain nn.Linear init is hyper_init: default)"]
                  if self.hparams["hyper_init"] == "scaled" else [])]


class ChannelDropout(TaskLossMixin, FusionMethod):
    """HAM's task network with learned weights and random modality dropout in training."""

    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("task_hidden",)}
    name: ClassVar[str] = "modality_dropout"
    defaults: ClassVar[dict[str, Any]] = {
        "task_hidden": [32],      # the same task network as HAM
        "p_drop": 0.5,            # per modality and subject (paper value not available)
        "dropout": 0.0,           # unit dropout in the task MLP (HAM's task model has none)
        **TASK_LOSS_DEFAULTS,
        **HAM_TRAIN_DEFAULTS,
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        if not 0.0 <= float(hp["p_drop"]) < 1.0:
            raise ValueError(f"{self.name}: p_drop must lie in [0, 1), got {hp['p_drop']!r}")
        d_in = sum(flat_dim(self.shapes[m]) for m in self.modalities)
        self.mlp = mlp_head(d_in, [int(w) for w in hp["task_hidden"]], self.n_classes,
                            float(hp["dropout"]))

    def drop_mask(self, present: torch.Tensor) -> torch.Tensor:
        """Presence after dropping each present modality with ``p_drop``; a subject that
        would lose all keeps one present modality at random (:func:`blocks.modality_dropout`,
        as UniLMMV's, whose draws never depend on the feature values)."""
        return modality_dropout(present, float(self.hparams["p_drop"]))

    def forward(self, x, present):
        present = present.bool()
        if self.training:
            present = self.drop_mask(present)
        return self.mlp(torch.cat([flat_zero_filled(x[m], present[:, j])
                                   for j, m in enumerate(self.modalities)], dim=1))

    def report_notes(self) -> list[str]:
        return [f"Channel Dropout: each present modality dropped with p="
                f"{float(self.hparams['p_drop']):g} in training (the HAM paper's probability "
                f"was not available), at least one kept; HAM's task network, trained with "
                f"{recipe_note(self.hparams)}"]
