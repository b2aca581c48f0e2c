"""Bidirectional distillation (BD) for a modality that may be missing at test time, and
the paper's two comparators that fill that modality in.

Zhang et al., "Multi-modal Learning with Missing Modality in Predicting Axillary Lymph
Node Metastasis" (arXiv 2401.01553, 2024); official code github.com/ZZSSCCC/missing-modality
(``models.py``: ``MILNetWithClinicalData``, ``MILNetImageOnly``; ``train_test.py``:
``train_val_test_binary_class``; ``main.py``). The paper has two modalities, a whole-slide
image (WSI, always present) and clinical data (may be missing at test; the training set
is complete). Its "Ensemble" comparator is our ``late_fusion``.

Here a feature set has ``M >= 2`` modalities; the hyper-parameter ``missing_modality``
(required) names the one that may be missing, the ``K = M - 1`` others play the WSI.

**Architecture** (official ``models.py``; widths are hyper-parameters):

- *multi-modal branch* (``MILNetWithClinicalData``): each other modality ``o`` goes
  through its own encoder ``Linear(D_o, 256)-Dropout(0.5)-ReLU`` (the ``fc1`` of the
  official attention aggregator; its attention pooling over patches is the identity on a
  cached slide vector); the missing modality through ``Linear(D_miss, 50)``
  (``pro_clinicalData``); the concatenation ``[K·256 + 50]`` goes to the classifier
  ``Linear(·, 64)-ReLU-Linear(64, C)``.
- *single-modal branch* (``MILNetImageOnly``): its own encoders of the other modalities
  and its own classifier, the same shapes; the missing modality's slot holds a *prompt*:
  one learned vector ``u`` of the missing modality's input shape ``[D_miss]`` (the
  official ``unk``, ``randn`` init, shared by all subjects) mapped by
  ``Linear(D_miss, 100)-ReLU-Linear(100, 50)`` to a 50-d vector (the paper's "prompt of
  length 50 mapped by 100→50 layers").
- *test time*: the multi-modal branch's output for a subject with ``missing_modality``,
  the single-modal branch's otherwise (official ``train_val_test_binary_class``, ``miss``).

**Loss** (official ``train_val_test_binary_class``; λ and τ of the paper):

- multi-modal branch: ``CE(z_m, y) + λm · MSE(f_m, sg(f_s))``: it learns the
  single-modal branch's features of the other modalities (single → multi).
- single-modal branch: ``CE(z_s, y) + λs · MSE([sg(f_s), p], sg([f_m, c_m]))
  + λs · KL(softmax(z_m/τ) ‖ softmax(z_s/τ))`` with ``p`` the prompt and ``c_m`` the
  multi-modal branch's projection of the real modality: the prompt learns to stand in for
  it and the branch to mimic the multi-modal predictions (multi → single).
- ``λs = 0.5``, ``λm = 0.6`` (paper), ``τ = 1.2``; the official code weighs the
  multi-modal feature term with 0.2 (``lambda_m: 0.2`` reproduces it).
- ``sg`` = stop-gradient: each term moves one branch only, as the two separate backward
  passes of the official code do; the sum is minimised by one optimiser.
- ``kd_form: standard`` (default) is the KL of temperature-softened distributions,
  averaged over subjects; ``kd_form: official`` is the official expression
  ``KLDivLoss(log_target=True)(log_softmax(z_s)/τ, log_softmax(z_m/τ))``: τ divides the
  student's log-probabilities *after* the log-softmax, and the mean runs over classes too;
  that is no divergence (it can be negative), hence not the default.

**Comparators** (the paper's "Filling" and "AE"): :class:`Filling` is the multi-modal
branch alone, the missing modality filled with zeros (or the training mean);
:class:`AutoEncoderImpute` is the multi-modal branch whose missing modality, where
absent, is generated from the other modalities by an encoder-decoder trained to
reconstruct it (MSE) where present.

**Adaptations to cached vector features and to our scenarios** (also in
:meth:`report_notes`): modalities are flattened vectors; an absent *other* modality is
zero-filled (``torch.where``) in every branch and in the generator, and its block of
encoded features is left out of the feature losses (a row with no other modality out of
the multi-modal branch's feature term); the branch choice
depends only on ``missing_modality``. ``train_subjects`` chooses who trains: ``complete``
(default, the paper's protocol: every modality present), ``with_modality`` (everyone
having ``missing_modality``, the others zero-filled), and for the comparators also
``all``. The trainer keeps only the subjects that train (``train_subset``), so the
weighted sampler balances the classes over them. The trainer settings are the
benchmark's (``PROTOCOL_RECIPE``), not the official batch-of-one SGD (lr 1e-4, momentum
0.3, weight decay 1e-3, cosine warm restarts) used to train a patch CNN end to end; the official optimiser of the multi-modal branch has a
100× smaller learning rate and weight decay, which one optimiser over all parameters
cannot express. The official script loads a trained multi-modal model as the
multi-modal branch (its line is commented out in the published code; the checkpoint's
name carries the paper's 0.861 AUC), so by default (``pretrain_multi``) a first phase
trains the multi-modal branch alone.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods.base import FusionMethod, Phase, phase_settings
from mmpipe.methods.blocks import (
    PROTOCOL_RECIPE,
    Dropout,
    check_choice,
    flat_dim,
    flat_zero_filled,
    mlp_head,
)

# official models.py: attention aggregator width L = 256 (its fc1: Linear-Dropout()-ReLU),
# clinical projection / prompt of 5 × expand_times 10 = 50, classifier Linear(L+50, 64)
BRANCH_DEFAULTS: dict[str, Any] = {
    "missing_modality": None,       # required: the modality that may be missing at test
    "feat_dim": 256,                # per-modality encoder width (aggregator L)
    "dropout": 0.5,                 # nn.Dropout() in the aggregator's fc1
    "prompt_dim": 50,               # width of the missing modality's slot (and prompt)
    "classifier_hidden": [64],      # classifier Linear(·, 64)-ReLU-Linear(64, C)
    "train_subjects": "complete",   # complete | with_modality (| all for the comparators)
}


def _row_mean(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [B] over ``rows`` [B] (0, still in the graph, when none)."""
    kept = torch.where(rows, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() / rows.sum().clamp_min(1).to(values.dtype)


def _masked_ce(logits: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
               class_weight: torch.Tensor | None) -> torch.Tensor:
    """``F.cross_entropy(logits[rows], y[rows], weight=class_weight)`` with fixed shapes."""
    ce = F.cross_entropy(logits, y, weight=class_weight, reduction="none")
    w = rows.to(ce.dtype) if class_weight is None else rows.to(ce.dtype) * class_weight[y]
    kept = torch.where(rows, ce, torch.zeros((), dtype=ce.dtype, device=ce.device))
    return kept.sum() / w.sum().clamp_min(1e-12)


def _row_mse(a: torch.Tensor, b: torch.Tensor, cols: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Per-row mean squared error [B] of [B, D] tensors; with ``cols`` [B, D] (bool), over
    each row's columns where it is true."""
    if cols is None:
        return (a - b).pow(2).mean(-1)
    sq = torch.where(cols, (a - b).pow(2), torch.zeros((), dtype=a.dtype, device=a.device))
    return sq.sum(-1) / cols.sum(-1).clamp_min(1).to(a.dtype)


class Prompt(nn.Module):
    """The single-modal branch's stand-in: a learned pseudo-input ``u`` [D_miss] mapped by
    ``Linear(D_miss, hidden)-ReLU-Linear(hidden, dim)`` (official ``unk``, ``pro_clinicalData``
    of ``MILNetImageOnly``); one vector shared by every subject."""

    def __init__(self, d_in: int, hidden: int, dim: int):
        super().__init__()
        self.unk = nn.Parameter(torch.randn(d_in))
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, batch: int) -> torch.Tensor:
        return self.mlp(self.unk).expand(batch, -1)


class Branch(nn.Module):
    """Encoders of the other modalities, a slot for the missing one, a classifier.

    ``slot`` maps the missing modality's features [B, D_miss] to [B, prompt_dim] (multi-modal
    branch), or is a :class:`Prompt` that ignores them (single-modal branch).
    ``forward`` returns ``(logits, f, s)``: the encoded others ``f`` [B, K·feat_dim] and
    the slot ``s`` [B, prompt_dim] that were concatenated for the classifier.
    """

    def __init__(self, others: dict[str, int], slot: nn.Module, feat_dim: int, dropout: float,
                 prompt_dim: int, hidden: list[int], n_classes: int):
        super().__init__()
        self.encoders = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(d, feat_dim), Dropout(dropout), nn.ReLU())
            for m, d in others.items()})
        self.slot = slot
        self.classifier = mlp_head(len(others) * feat_dim + prompt_dim, hidden, n_classes, 0.0)

    def forward(self, others: dict[str, torch.Tensor], missing: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = torch.cat([self.encoders[m](v) for m, v in others.items()], dim=-1)
        s = self.slot(missing.shape[0]) if isinstance(self.slot, Prompt) else self.slot(missing)
        return self.classifier(torch.cat([f, s], dim=-1)), f, s


class _MissingModalityMethod(FusionMethod):
    """What BD and its comparators share: which modality may be missing, who trains, the
    zero-filled inputs, and the multi-modal branch."""

    subject_choices: ClassVar[tuple[str, ...]] = ("complete", "with_modality")

    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("feat_dim",)}
    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        miss = hp["missing_modality"]
        if miss is None:
            raise ValueError(f"{self.name}: the hyper-parameter 'missing_modality' is required "
                             f"(one of {self.modalities})")
        if miss not in self.modalities:
            raise ValueError(f"{self.name}: missing_modality {miss!r} is not in the feature set "
                             f"{self.modalities}")
        if len(self.modalities) < 2:
            raise ValueError(f"{self.name}: needs at least one modality besides {miss!r}")
        if hp["train_subjects"] not in self.subject_choices:
            raise ValueError(f"{self.name}: train_subjects must be one of "
                             f"{list(self.subject_choices)}, got {hp['train_subjects']!r}")
        self.missing = miss
        # the trainer keeps the subjects that train (every modality, or the missing one);
        # the losses mask the rest where a batch holds them (validation, which no trainer
        # filters)
        self.train_subset = {"complete": "complete",
                             "with_modality": f"with:{miss}"}.get(hp["train_subjects"], "all")
        self.d_miss = flat_dim(self.shapes[miss])
        self.other_dims = {m: flat_dim(self.shapes[m]) for m in self.modalities if m != miss}

    def _branch(self, slot: nn.Module) -> Branch:
        hp = self.hparams
        return Branch(self.other_dims, slot, int(hp["feat_dim"]), float(hp["dropout"]),
                      int(hp["prompt_dim"]), list(hp["classifier_hidden"]), self.n_classes)

    def _multi_branch(self) -> Branch:
        return self._branch(nn.Linear(self.d_miss, int(self.hparams["prompt_dim"])))

    def has_missing(self, present: torch.Tensor) -> torch.Tensor:
        """[B] bool: rows where ``missing_modality`` is present."""
        return present.bool()[:, self.modalities.index(self.missing)]

    def inputs(self, x, present) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Zero-filled flat features: the others {m: [B, D_m]} and the missing one [B, D_miss]."""
        present = present.bool()
        others = {m: flat_zero_filled(x[m], present[:, self.modalities.index(m)])
                  for m in self.other_dims}
        return others, flat_zero_filled(x[self.missing], self.has_missing(present))

    def validation_loss(self, x, present, y, class_weight=None):
        """The task: the cross-entropy of the test-time output over every validation
        subject, each through the path the test takes (a branch, a fill, a generated
        modality), averaged over two views of the split: as it is, and with
        ``missing_modality`` removed from every subject that has another modality. The
        second is the path a test subject without it takes: under ``testmiss`` the
        validation split is left whole, so with the split alone every subject took the
        multi-modal path, and the epoch was chosen blind to the single-modal branch (or
        the fill, the generator) that scores most test subjects at the protocol's rates (a
        testmiss cell shares its fit with the natural one, so the view cannot weigh by a
        rate). A tuning trial is chosen, as every method's, on the validation predictions
        as the split is (:mod:`mmpipe.bench.tuning`). The official BD keeps the epoch of the best
        validation F1 of that output (``main.py``; its ``--kd`` validation loop reads a
        ``miss`` key its validation data never sets). A loss over the training rows only
        (the subjects having the modality) never scored the path of those without it, and
        BD's feature terms, about two thirds of its joint loss, fall for as long as the
        branches train, so watched with it early stopping never stopped."""
        as_is = FusionMethod.loss(self, x, present, y, class_weight)
        j = self.modalities.index(self.missing)
        others = torch.cat([present[:, :j], present[:, j + 1:]], dim=1).any(dim=1)
        removable = self.has_missing(present) & others
        if not bool(removable.any()):
            return as_is
        without = present.clone()
        without[removable, j] = False
        removed = FusionMethod.loss(self, x, without, y, class_weight)
        return (as_is[0] + removed[0]) / 2, as_is[1]

    def training_rows(self, present: torch.Tensor) -> torch.Tensor:
        """Rows a training loss uses: those with ``missing_modality`` (every row under
        ``train_subjects: complete``, as the trainer kept only complete subjects)."""
        if self.hparams["train_subjects"] == "all":
            return torch.ones(present.shape[0], dtype=torch.bool, device=present.device)
        return self.has_missing(present)

    def encoded_columns(self, present: torch.Tensor) -> torch.Tensor | None:
        """[B, K·feat_dim] bool: the columns of the encoded others ``f`` whose modality the
        row has; None for a training batch under ``train_subjects: complete``, where every
        row has every modality. An absent modality's block is its encoder's output on the
        zero fill: a feature loss over it would pull that encoder's bias towards the other
        branch's, and the validation split, which no trainer filters, scored it in the
        loss that early stopping reads."""
        width = int(self.hparams["feat_dim"])
        present = present.bool()
        cols = torch.cat([present[:, self.modalities.index(m)].unsqueeze(-1).expand(-1, width)
                          for m in self.other_dims], dim=-1)
        if self.hparams["train_subjects"] == "complete" and bool(cols.all()):
            return None
        return cols

    def prepare(self, x, present, y) -> None:
        rows = self.training_rows(present)
        if len(torch.unique(y[rows])) < 2:
            from mmpipe.bench.trainer import NotTrainable
            raise NotTrainable(f"{self.name}: {int(rows.sum())} training subject(s) with "
                               f"{self.missing!r}, classes {torch.unique(y[rows]).tolist()}: "
                               "need two classes")

    def _common_notes(self) -> list[str]:
        zero = list(self.other_dims)
        return [
            f"{self.name}: '{self.missing}' is the modality that may be missing; absent values "
            f"of {zero} are zero-filled (the paper has one other modality, always present).",
            f"{self.name}: trains on subjects chosen by train_subjects="
            f"{self.hparams['train_subjects']!r} (the paper: complete training data).",
            f"{self.name}: benchmark trainer settings ({self.hparams['optimizer']}, lr "
            f"{self.hparams['lr']:g}, batches of {self.hparams['batch_size']}, early stopping on "
            + ("the validation split as it is and without the modality"
               if self.hparams["monitor"] == "loss" else
               f"the validation {self.hparams['monitor']} of the split as it is")
            + "), not the official batch-of-one SGD with cosine warm restarts"
            + "".join(f"; {added} (not in the official code)" for added in (
                *([f"Gaussian feature noise on {float(self.hparams['noise_p']):g} of the "
                   f"present rows (std {float(self.hparams['noise_std']):g})"]
                  if float(self.hparams["noise_p"]) > 0 else []),
                *([f"a {self.hparams['sampler']} class-balancing sampler"]
                  if self.hparams["sampler"] != "none" else [])))
            + ".",
        ]


class BidirectionalDistillation(_MissingModalityMethod):
    """BD: multi- and single-modal branches distilled into each other (module docstring)."""

    name = "bd"
    defaults: ClassVar[dict[str, Any]] = {
        **BRANCH_DEFAULTS,
        "prompt_hidden": 100,       # prompt MLP Linear(D_miss, 100)-ReLU-Linear(100, 50)
        "lambda_s": 0.5,            # single-modal branch: feature MSE and KL weights
        "lambda_m": 0.6,            # multi-modal branch: feature MSE weight (official 0.2)
        "tau": 1.2,                 # distillation temperature
        "kd_form": "standard",      # standard | official (see the module docstring)
        "pretrain_multi": True,     # phase "multi" trains the multi-modal branch first
        **PROTOCOL_RECIPE,
    }

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        if hp["kd_form"] not in ("standard", "official"):
            raise ValueError(f"bd: kd_form must be 'standard' or 'official', got {hp['kd_form']!r}")
        if float(hp["tau"]) <= 0:
            raise ValueError(f"bd: tau must be positive, got {hp['tau']}")
        self.multi = self._multi_branch()
        self.single = self._branch(Prompt(self.d_miss, int(hp["prompt_hidden"]),
                                          int(hp["prompt_dim"])))

    def branches(self, x, present):
        """``(logits, f, s)`` of the multi-modal and of the single-modal branch."""
        others, missing = self.inputs(x, present)
        return self.multi(others, missing), self.single(others, missing)

    def forward(self, x, present):
        (z_m, _, _), (z_s, _, _) = self.branches(x, present)
        return torch.where(self.has_missing(present).unsqueeze(-1), z_m, z_s)

    def _kl(self, z_s: torch.Tensor, z_m: torch.Tensor) -> torch.Tensor:
        """Per-row KL [B] from the multi-modal (target, no gradient) to the single-modal
        predictions at temperature τ."""
        tau = float(self.hparams["tau"])
        target = F.log_softmax(z_m.detach() / tau, dim=-1)
        if self.hparams["kd_form"] == "official":
            # KLDivLoss(log_target=True)(log_softmax(z_s) / τ, target), mean over classes too
            student = F.log_softmax(z_s, dim=-1) / tau
            return (target.exp() * (target - student)).mean(-1)
        student = F.log_softmax(z_s / tau, dim=-1)
        return (target.exp() * (target - student)).sum(-1)

    def loss_terms(self, x, present, y, class_weight=None) -> dict[str, torch.Tensor]:
        """The unweighted terms of the loss, each averaged over the training rows."""
        rows = self.training_rows(present)
        cols = self.encoded_columns(present)
        (z_m, f_m, c_m), (z_s, f_s, p) = self.branches(x, present)
        fused_s = torch.cat([f_s.detach(), p], dim=-1)       # only the prompt learns from it
        fused_m = torch.cat([f_m, c_m], dim=-1).detach()
        return {
            "ce_multi": _masked_ce(z_m, y, rows, class_weight),
            "ce_single": _masked_ce(z_s, y, rows, class_weight),
            # a row without any other modality has no feature to match: out of the mean,
            # which it would otherwise dilute
            "feat_to_multi": _row_mean(_row_mse(f_m, f_s.detach(), cols),
                                       rows if cols is None else rows & cols.any(-1)),
            "feat_to_single": _row_mean(_row_mse(  # the prompt's columns always count
                fused_s, fused_m,
                None if cols is None else torch.cat([cols, cols.new_ones(p.shape)], dim=-1)),
                rows),
            "kl_to_single": _row_mean(self._kl(z_s, z_m), rows),
            "logits": torch.where(self.has_missing(present).unsqueeze(-1), z_m, z_s),
        }

    def loss(self, x, present, y, class_weight=None):
        t = self.loss_terms(x, present, y, class_weight)
        lam_s, lam_m = float(self.hparams["lambda_s"]), float(self.hparams["lambda_m"])
        total = (t["ce_multi"] + lam_m * t["feat_to_multi"]
                 + t["ce_single"] + lam_s * (t["feat_to_single"] + t["kl_to_single"]))
        return total, t["logits"]

    def multi_loss(self, x, present, y, class_weight=None):
        """Phase "multi": cross-entropy of the multi-modal branch alone. The logits validated
        are the test-time ones; the single-modal branch does not move in this phase, so
        only the subjects having the modality change the validation score."""
        (z_m, _, _), (z_s, _, _) = self.branches(x, present)
        logits = torch.where(self.has_missing(present).unsqueeze(-1), z_m, z_s.detach())
        return _masked_ce(z_m, y, self.training_rows(present), class_weight), logits

    def phases(self, train_cfg):
        settings = phase_settings(train_cfg)
        joint = Phase("bd", self.parameters, **settings)
        if not self.hparams["pretrain_multi"]:
            return [joint]
        return [Phase("multi", self.multi.parameters, loss=self.multi_loss, **settings), joint]

    def report_notes(self) -> list[str]:
        hp = self.hparams
        return self._common_notes() + [
            f"bd: λs={hp['lambda_s']}, λm={hp['lambda_m']} (official code 0.2), τ={hp['tau']}, "
            f"KL form {hp['kd_form']!r}; the multi-modal branch"
            + (" is pre-trained alone, then" if hp["pretrain_multi"] else "")
            + " trains jointly at the single-modal branch's learning rate (official: 1/100); "
            + ("early stopping watches the test-time output's validation cross-entropy, on "
               "the split as it is and without the modality (official: its F1)."
               if hp["monitor"] == "loss" else
               f"early stopping watches the test-time output's validation {hp['monitor']} "
               "(official: its F1)."),
            *(["bd: an absent other modality's block of encoded features is left out of the "
               "feature losses, and a row with no other modality out of the multi-modal "
               "branch's feature term."] if hp["train_subjects"] != "complete" else []),
        ]


class Filling(_MissingModalityMethod):
    """The paper's "Filling": the multi-modal branch alone, with the missing modality filled
    in where absent: ``fill: zero`` (default), ``fill: mean`` (its mean over the subjects
    the method trains on that have it, computed in :meth:`prepare`: under ``complete`` the
    complete subjects, those the paper trains on, not every training subject that has the
    modality) or ``fill: minus_one``, the official code's test-time fill (``dataset.py``:
    a missing clinical record becomes ``[-1, -1, -1, -1, -1]``; on its raw codes a value
    outside their range, on mmpipe's normalised features one unit below the training
    mean). The paper does not say. ``train_subjects: all`` also trains it
    on the filled-in subjects; ``complete`` (default) follows the paper, whose training set
    has every modality, so that filling happens at test only."""

    name = "bd_filling"
    subject_choices = ("complete", "with_modality", "all")
    defaults: ClassVar[dict[str, Any]] = {**BRANCH_DEFAULTS, "fill": "zero", **PROTOCOL_RECIPE}

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        check_choice(self.name, "fill", self.hparams["fill"], ("zero", "mean", "minus_one"))
        self.multi = self._multi_branch()
        self.register_buffer("fill_value", torch.full(
            (self.d_miss,), -1.0 if self.hparams["fill"] == "minus_one" else 0.0))

    def prepare(self, x, present, y) -> None:
        super().prepare(x, present, y)
        if self.hparams["fill"] == "mean":
            has = self.has_missing(present)
            flat = flat_zero_filled(x[self.missing], has)
            self.fill_value.copy_(flat.sum(0) / has.sum().clamp_min(1))

    def forward(self, x, present):
        others, missing = self.inputs(x, present)
        missing = torch.where(self.has_missing(present).unsqueeze(-1), missing,
                              self.fill_value.to(missing.dtype))
        return self.multi(others, missing)[0]

    def loss(self, x, present, y, class_weight=None):
        logits = self(x, present)
        return _masked_ce(logits, y, self.training_rows(present), class_weight), logits

    def report_notes(self) -> list[str]:
        return self._common_notes() + [
            f"bd_filling: absent '{self.missing}' filled with the {self.hparams['fill']} "
            "value (the paper does not say; the official code fills -1, fill: minus_one)."]


class AutoEncoderImpute(_MissingModalityMethod):
    """The paper's "AE": the multi-modal branch whose missing modality, where absent, is
    generated from the others by ``G``: ``Linear(ΣD_o, h)-ReLU-...-Linear(·, D_miss)`` on the
    zero-filled other modalities; real features are used wherever the modality is present.

    ``ae_training: pretrain`` (default): phase "ae" trains ``G`` alone by MSE
    reconstruction on the subjects having the modality (early stopping on the validation
    MSE), then phase "classifier" trains the branch with ``G`` frozen. ``joint``: one phase,
    ``CE + lambda_rec · MSE``. The paper does not describe its AE; this is the usual
    cross-modal generator of the missing-modality literature.
    """

    name = "ae_impute"
    subject_choices = ("complete", "with_modality", "all")
    defaults: ClassVar[dict[str, Any]] = {**BRANCH_DEFAULTS, "ae_hidden": [256],
                                          "ae_training": "pretrain", "lambda_rec": 1.0,
                                          **PROTOCOL_RECIPE}

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        if self.hparams["ae_training"] not in ("pretrain", "joint"):
            raise ValueError(f"ae_impute: ae_training must be 'pretrain' or 'joint', "
                             f"got {self.hparams['ae_training']!r}")
        self.multi = self._multi_branch()
        self.generator = mlp_head(sum(self.other_dims.values()), list(self.hparams["ae_hidden"]),
                                  self.d_miss, 0.0)

    def generate(self, others: dict[str, torch.Tensor]) -> torch.Tensor:
        """Generated features [B, D_miss] of the missing modality from the zero-filled others."""
        return self.generator(torch.cat(list(others.values()), dim=-1))

    def _terms(self, x, present, y, class_weight=None, generator_grad: bool = True):
        """(cross-entropy over the training rows, reconstruction MSE over the rows having the
        modality, logits); ``generator_grad=False`` keeps ``G`` out of the graph."""
        others, missing = self.inputs(x, present)
        with torch.set_grad_enabled(generator_grad and torch.is_grad_enabled()):
            generated = self.generate(others)
        has = self.has_missing(present)
        completed = torch.where(has.unsqueeze(-1), missing, generated)
        logits = self.multi(others, completed)[0]
        ce = _masked_ce(logits, y, self.training_rows(present), class_weight)
        return ce, _row_mean(_row_mse(generated, missing), has), logits

    def forward(self, x, present):
        others, missing = self.inputs(x, present)
        completed = torch.where(self.has_missing(present).unsqueeze(-1), missing,
                                self.generate(others))
        return self.multi(others, completed)[0]

    def ae_loss(self, x, present, y, class_weight=None):
        _, rec, logits = self._terms(x, present, y, class_weight)
        return rec, logits

    def classifier_loss(self, x, present, y, class_weight=None):
        if not self.training:
            # validated as the task (the trainer validates a phase with its own loss): on
            # the split as it is and without the modality, so generated inputs are scored
            # even where the validation split is whole (testmiss)
            return self.validation_loss(x, present, y, class_weight)
        ce, _, logits = self._terms(x, present, y, class_weight, generator_grad=False)
        return ce, logits

    def loss(self, x, present, y, class_weight=None):
        ce, rec, logits = self._terms(x, present, y, class_weight)
        return ce + float(self.hparams["lambda_rec"]) * rec, logits

    def phases(self, train_cfg):
        settings = phase_settings(train_cfg)
        if self.hparams["ae_training"] == "joint":
            return [Phase("train", self.parameters, **settings)]
        return [Phase("ae", self.generator.parameters, loss=self.ae_loss,
                      **{**settings, "monitor": "loss"}),
                Phase("classifier", self.multi.parameters, loss=self.classifier_loss,
                      **settings)]

    def report_notes(self) -> list[str]:
        return self._common_notes() + [
            f"ae_impute: '{self.missing}' generated from the zero-filled other modalities "
            f"where absent (generator trained {self.hparams['ae_training']!r}); the paper "
            "gives no details of its AE."]
