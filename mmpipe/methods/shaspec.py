"""FeatImpute: ShaSpec-style shared/specific features with missing-feature generation.

ShaSpec (Wang et al., "Multi-modal Learning with Missing Modality via Shared-Specific
Feature Modelling", CVPR 2023; official code github.com/billhhh/ShaSpec, ``DualNet_SS.py``,
``train_SS.py``), used by HAM (Fürböck et al. 2025) as its imputation-based comparator.

Architecture on cached vectors (``d = dim``, 256 as the official bottleneck channels):

- **shared encoder** (one for every modality, ``DualNet_SS.shared_enc``):
  ``Linear(d_a, d) → ReLU → Linear(d, d) → ReLU`` giving ``r_m``. The official encoder
  reads every modality's image as it is; our modalities have different widths, so each
  first goes through its own adapter ``Linear(D_m, d_a) → ReLU`` (``d_a = adapter_dim``,
  default ``d``). When every modality has the same width no adapter is used (``d_a = D``).
- **specific encoders** (one per modality, ``flair_enc``, ``t1_enc``, ...):
  ``Linear(D_m, d) → ReLU → Linear(d, d) → ReLU`` giving ``s_m``.
- **residual fusion** (``CompositionalLayer``, one layer shared by all modalities):
  ``f_m = r_m + P[r_m ; s_m]`` with ``P = Linear(2d, d, bias=False)`` (the official 3×3×3
  conv without bias becomes a linear projection).
- **missing-modality feature generation** (``DualNet_SS.forward``): an absent modality's
  slot is the shared feature of the first available modality (``general_shared_ft =
  shared_ft[mode_split[0]]``), first in ``self.modalities`` order; ``missing_fill: mean``
  uses the mean of the present shared features (the official alternative, commented out
  in ``DualNet_SS.py``).
- **random modality dropout in training** (``train_dropout: random``, the default; the
  official ``run.sh`` trains its final model with ``--mode=random``, ``DualNet_SS.forward``,
  but in two stages: 80k steps with every modality, then random mode from that
  checkpoint up to 180k steps in all (about 100k steps: ``train_SS.py`` resumes its
  iteration count and SGD state), which ``train_dropout: two_stage`` runs as two phases
  of the shared trainer, each under its early stopping, the second with a fresh
  optimiser; the default runs random mode from
  the first epoch, one stage): each training subject keeps a random number (1 to all) of its present modalities, in a
  random order whose first gives the absent slots their shared feature, so the
  generation path learns on every subset; ``none`` trains on the presence as it is.
  Validation and test use every present modality.
- **head**: the ``M`` fused features are concatenated (official: channel concat before
  the decoder) → ``Linear(M·d, 256) → ReLU → Dropout → Linear(256, 128) → ReLU →
  Dropout → Linear(128, C)`` (an MLP instead of the segmentation decoder).

Loss (``train_SS.py``): ``L_task + 0.1·L_shared + 0.02·L_domain`` where
``L_shared`` is the L1 distance between the shared features of modality pairs, summed
over the pairs ``(1,2), (2,3), …, (M,1)`` (``SimShareAllPairs``: the cycle; ``shared_pairs:
all`` takes every pair; over two modalities the one pair counts once, where the cycle
would count it twice), and ``L_domain`` the cross-entropy of a linear domain classifier
``Linear(d, M)`` predicting which modality a specific feature came from
(``dom_classifier``, ``DomainClsLoss``). Adapted to naturally incomplete subjects: a pair
counts only on subjects where both modalities are present and the domain loss only on
present modalities. This is ours: in random mode the official code computes both losses
over every slot, the zeroed images of dropped modalities included (``train_SS.py``
``term_shared``, ``term_spec``), which on cached features would pull the shared and
specific features of absent modalities, zero vectors here, towards the present ones.

Task loss and training recipe: HAM's (weighted focal loss, RMSprop; see
:mod:`mmpipe.methods.ham`) so that all of HAM's comparators share one recipe; ShaSpec's
own segmentation recipe (SGD, momentum 0.99, poly schedule, Dice+BCE) does not transfer
to this classification setting. Early stopping watches the task loss of the output on
the validation split. That is ours: ``train_SS.py`` can keep its best validation Dice
(``val_Dice_best``), but the published recipe trains with ``--train_only`` (``run.sh``)
and evaluates the last iteration's ``final.pth`` (``eval.sh``).
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods.base import FusionMethod, Phase, phase_settings
from mmpipe.methods.blocks import (
    check_choice,
    flat_dim,
    flat_zero_filled,
    keep_random,
    masked_mean,
    mlp_head,
)
from mmpipe.methods.ham_recipe import (
    HAM_TRAIN_DEFAULTS,
    TASK_LOSS_DEFAULTS,
    TaskLossMixin,
    recipe_note,
)


def _encoder(d_in: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())


class FeatImpute(TaskLossMixin, FusionMethod):
    """Shared + specific encoders, residual fusion, absent slots from a shared feature."""

    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("dim",)}
    name: ClassVar[str] = "featimpute"
    defaults: ClassVar[dict[str, Any]] = {
        "dim": 256,                 # official bottleneck width (256 channels)
        "adapter_dim": None,        # common width before the shared encoder (None = dim)
        "head": [256, 128],
        "dropout": 0.3,             # ours: the official decoder has none
        "lambda_shared": 0.1,       # official train_SS.py alpha
        "lambda_domain": 0.02,      # official train_SS.py beta
        "shared_pairs": "cyclic",   # cyclic (official SimShareAllPairs) | all
        "missing_fill": "first",    # first (official) | mean (official, commented out)
        # random (official --mode=random, from the first epoch) | two_stage (official run.sh:
        # every modality, then random mode from that stage's checkpoint) | none
        "train_dropout": "random",
        **TASK_LOSS_DEFAULTS,
        **HAM_TRAIN_DEFAULTS,
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        check_choice(self.name, "shared_pairs", hp["shared_pairs"], ("cyclic", "all"))
        check_choice(self.name, "missing_fill", hp["missing_fill"], ("first", "mean"))
        check_choice(self.name, "train_dropout", hp["train_dropout"],
                     ("random", "two_stage", "none"))
        # whether training drops modalities at random now (two_stage: its phases set it)
        self.random_modes = hp["train_dropout"] != "none"
        dim = int(hp["dim"])
        widths = {m: flat_dim(self.shapes[m]) for m in self.modalities}
        if len(set(widths.values())) == 1 and hp["adapter_dim"] is None:
            self.adapters = None                     # the shared encoder reads raw inputs
            d_a = next(iter(widths.values()))
        else:
            d_a = int(hp["adapter_dim"] or dim)
            self.adapters = nn.ModuleDict({m: nn.Sequential(nn.Linear(w, d_a), nn.ReLU())
                                           for m, w in widths.items()})
        if hp["adapter_dim"] is None:
            self.derived["adapter_dim"] = None if self.adapters is None else d_a
        self.shared = _encoder(d_a, dim)
        self.specific = nn.ModuleDict({m: _encoder(w, dim) for m, w in widths.items()})
        self.proj = nn.Linear(2 * dim, dim, bias=False)
        self.domain_classifier = nn.Linear(dim, len(self.modalities))
        self.head = mlp_head(len(self.modalities) * dim, [int(w) for w in hp["head"]],
                             self.n_classes, float(hp["dropout"]))

    def pairs(self) -> list[tuple[int, int]]:
        n_mod = len(self.modalities)
        # the official cycle is written for BraTS's four sequences; over two modalities it
        # would visit the one pair twice (doubling L_shared's weight): counted once here
        if self.hparams["shared_pairs"] == "all" or n_mod == 2:
            return list(itertools.combinations(range(n_mod), 2))
        return [(j, (j + 1) % n_mod) for j in range(n_mod)]

    def encode(self, x: dict[str, torch.Tensor], present: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared ``r`` and specific ``s`` features, each [B, M, d]; absent modalities are
        encoded from zeros (their values never enter) and must be masked by the caller."""
        present = present.bool()
        shared_in, spec = [], []
        for j, m in enumerate(self.modalities):
            v = flat_zero_filled(x[m], present[:, j])
            shared_in.append(v if self.adapters is None else self.adapters[m](v))
            spec.append(self.specific[m](v))
        return self.shared(torch.stack(shared_in, 1)), torch.stack(spec, 1)

    def fuse(self, r: torch.Tensor, s: torch.Tensor, present: torch.Tensor,
             first: torch.Tensor | None = None) -> torch.Tensor:
        """Per-modality fused features [B, M, d]: ``r + P[r; s]`` where present, the
        generated feature where absent, zeros for a subject without any modality.
        ``first``: the present modality whose shared feature fills (default: the first
        in ``self.modalities`` order)."""
        present = present.bool()
        fused = r + self.proj(torch.cat([r, s], dim=-1))
        if self.hparams["missing_fill"] == "mean":
            fill = masked_mean(r, present)
        else:  # argmax returns the first maximal index: the first present modality
            first = present.int().argmax(1) if first is None else first
            fill = r[torch.arange(r.shape[0], device=r.device), first]
        fill = torch.where(present.any(1, keepdim=True), fill, torch.zeros_like(fill))
        return torch.where(present.unsqueeze(-1), fused, fill.unsqueeze(1).expand_as(fused))

    def fused_features(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        r, s = self.encode(x, present)
        return self.fuse(r, s, present)

    def forward(self, x, present):
        return self.head(self.fused_features(x, present).flatten(1))

    def auxiliary_losses(self, r: torch.Tensor, s: torch.Tensor, present: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(shared L1 consistency summed over modality pairs, domain cross-entropy), each
        on present modalities only."""
        present = present.bool()
        shared = r.new_zeros(())
        for j, k in self.pairs():
            both = present[:, j] & present[:, k]
            if bool(both.any()):
                shared = shared + F.l1_loss(r[both, j], r[both, k])
        if bool(present.any()):
            labels = torch.arange(len(self.modalities), device=r.device).expand_as(present)
            domain = F.cross_entropy(self.domain_classifier(s[present]), labels[present])
        else:
            domain = r.new_zeros(())
        return shared, domain

    def random_subsets(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ShaSpec's ``--mode=random`` per subject (``DualNet_SS.forward``: ``mode_num =
        randint(1, 4)``, ``random.sample`` of the modalities, the fill from the first of
        the sample): the kept modalities, a uniform number from 1 to the subject's
        present count in a random order, and the first of that order."""
        counts = present.sum(1)
        kept = (torch.rand(counts.shape, device=present.device) * counts).floor().long() + 1
        return keep_random(present, kept)

    def loss(self, x, present, y, class_weight=None):
        present = present.bool()
        first = None
        if self.training and torch.is_grad_enabled() and self.random_modes:
            present, first = self.random_subsets(present)
        r, s = self.encode(x, present)
        logits = self.head(self.fuse(r, s, present, first).flatten(1))
        shared, domain = self.auxiliary_losses(r, s, present)
        total = (self.task_loss(logits, y, class_weight)
                 + float(self.hparams["lambda_shared"]) * shared
                 + float(self.hparams["lambda_domain"]) * domain)
        return total, logits

    def phases(self, train_cfg):
        """One phase; under ``train_dropout: two_stage`` two, as the official ``run.sh``
        trains (80k iterations with every modality, then random mode from that checkpoint
        to 180k in all, its optimiser state resumed; here a fresh one): ``full`` then ``random``, each with the trainer's settings and early
        stopping, the second from the first's kept checkpoint."""
        settings = phase_settings(train_cfg)
        if self.hparams["train_dropout"] != "two_stage":
            return [Phase("train", self.parameters, **settings)]

        def stage(random_modes: bool):
            def parameters():  # called as the phase starts
                self.random_modes = random_modes
                return list(self.parameters())
            return parameters
        return [Phase("full", stage(False), **settings), Phase("random", stage(True), **settings)]

    def validation_loss(self, x, present, y, class_weight=None):
        """The task loss alone, the benchmark protocol's choice (the published recipe
        keeps its last iteration; see the module docstring): the shared and domain terms
        move by themselves as the encoders train."""
        return TaskLossMixin.loss(self, x, present, y, class_weight)

    def report_notes(self) -> list[str]:
        notes = ["FeatImpute (ShaSpec-style) on vector features: MLP encoders and head instead "
                 "of 3D ResNet encoders and a segmentation decoder; shared-consistency and "
                 "domain losses computed on present modalities only; HAM's recipe instead of "
                 f"ShaSpec's segmentation recipe: {recipe_note(self.hparams)}, head dropout "
                 f"{float(self.hparams['dropout']):g}"]
        if self.hparams["train_dropout"] == "none":
            notes.append("FeatImpute: trained without ShaSpec's random modality dropout "
                         "(train_dropout: none; official: --mode=random)")
        elif self.hparams["train_dropout"] == "random":
            notes.append("FeatImpute: random modality dropout from the first epoch, one stage "
                         "(official run.sh: a stage with every modality first; "
                         "train_dropout: two_stage)")
        else:
            notes.append("FeatImpute: two stages as the official run.sh, every modality "
                         "then random modality dropout, each under early stopping")
        if self.adapters is not None:
            notes.append("FeatImpute: per-modality linear adapters to a common width before "
                         "the shared encoder (modality widths differ)")
        if self.hparams["missing_fill"] == "mean":
            notes.append("FeatImpute: an absent modality filled with the mean of the present "
                         "shared features (the official code's commented-out line; its "
                         "default, missing_fill: first, takes the first present one)")
        return notes
