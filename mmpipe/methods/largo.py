"""LARGO (Vyncke, Ashtari & Pižurica, "LARGO: Low-Rank Hypernetwork for Handling Missing
Modalities", arXiv:2605.06086, 2026). No official code was found.

The paper's idea: with ``M`` modalities there are ``S = 2^M − 1`` non-empty modality subsets
("scenarios"), and the best model for a scenario is a *dedicated* model trained on exactly
those modalities. LARGO stores the whole family of dedicated models in one network: the
weight tensor of every inner layer, stacked over scenarios, is written as a Canonical
Polyadic (CP) decomposition whose first factor ``A`` ([S, R]) indexes the scenario (paper,
abstract and Fig. 1: factors ``A`` (models × r), ``B`` (c_out × r), ``C`` (c_in × r),
``D`` (kernel × r)). The rank ``R`` is chosen so that the whole family costs about as
many parameters as ONE dedicated model.

On cached vector features (this benchmark) the convolutions become linear layers, so the
CP decomposition has no kernel factor: for inner layer ``l`` and subset ``s``

    W_s = Σ_r A[s, r] · U[:, r] ⊗ V[:, r]        (A: [S, R], U: [out, R], V: [in, R])
    h ← ReLU(W_s h + b_s)                         (b_s: one bias per subset, ours)

computed as ``((h V) ⊙ A[s]) Uᵀ`` without materialising ``W_s``. A dedicated model for
subset ``s`` (also built explicitly by :meth:`LARGO.dedicated_model`) is

    stem   Linear(Σ_{m∈s} D_m, H) → ReLU → Dropout
    inner  n_layers × [Linear(H, H) → ReLU → Dropout]       (the CP-decomposed layers)
    head   Linear(H, C)

Modalities of shape ``[*s]`` are flattened to ``prod(s)`` values.

Routing: every subject goes through the subset model of its own presence pattern; the stem
reads only the present modalities (absent ones are replaced by zeros with ``torch.where``
before the stem, so their values never reach the output). A subject with no modality
gets zero logits (uniform prediction).

Training (this project's specification of LARGO: "loss on a sampled subset + loss on the
full set"): per
batch, each subject gets a random non-empty subset of ITS present modalities (uniform over
the ``2^k − 1`` non-empty subsets of its ``k`` present ones; global torch RNG, training
only, drawn from the presence mask alone) and is passed through that subset's model;
the loss is ``CE(sampled) + lambda_full · CE(full)`` where "full" is the subject's own
present pattern (full-modality guidance). ``lambda_full = 1`` (1:1): the stored copy of the
paper exposes only its abstract, so no other weighting could be checked. Outside training
the loss is ``CE(full)`` alone (what the prediction is).

Choices where the paper could not be checked or does not apply (all hyper-parameters):

- ``stem``: this project's specification describes LARGO's stem (first layer) and head (last layer) as
  unshared, one per subset; the stored copy of the paper shows only its abstract and the
  caption of Fig. 1, so this could not be checked. In the paper's convolutional
  encoder-decoders (Fig. 1: convolutions and transposed convolutions) such layers are
  small; on embeddings the stem is the largest layer, and ``S`` unshared stems cost
  ``2^(M−1)`` times the dedicated model's stem (each modality is in half of the subsets):
  more than a whole dedicated model as soon as the inputs are wide against the hidden
  layers (MMIST: 2432 input values, ``H = 256``). ``stem="modality"`` (default, ours)
  therefore shares the stem weights per modality — the stem of subset ``s`` is the linear
  map of the concatenated present modalities whose column block for modality ``m`` is
  shared by every subset containing ``m`` — with a per-subset stem bias. ``stem="subset"``
  gives each subset its own ``Linear(Σ_{m∈s} D_m, H)`` as the specification describes; where that
  exceeds the budget the automatic rank raises a ValueError, and ``rank`` must be set.
- heads: one ``Linear(H, C)`` per subset (unshared), as in the specification.
- initialisation: ``A`` = ones, so all subsets start from the same inner weights (the specification);
  ``U``, ``V`` have unit-norm columns ("normalised atoms") scaled so that ``W_s`` has the
  variance of a Kaiming-normal init (``2 / in``); per-subset biases start at zero.
- rank: ``rank: null`` = the largest ``R`` such that LARGO's parameter count is at most one
  dedicated model's (the full-modality one, the largest); :func:`parameter_counts` and
  :meth:`LARGO.dedicated_parameters` expose both counts.
- ``hidden=256``, ``n_layers=2``, ``dropout=0.3``: ours (the paper's networks are
  convolutional segmentation networks). The training recipe is the project's MMARE
  protocol (``PROTOCOL_RECIPE``): the paper's recipe is for segmentation networks and
  could not be checked.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods.base import FusionMethod
from mmpipe.methods.blocks import (
    PROTOCOL_RECIPE,
    Dropout,
    check_choice,
    flat_dim,
    flat_zero_filled,
    nonempty_subsets,
)

STEMS = ("modality", "subset")


def parameter_counts(in_dims: list[int], hidden: int, n_layers: int, n_classes: int,
                     rank: int, stem: str = "modality") -> dict[str, int]:
    """Parameters of LARGO and of ONE dedicated model (the full-modality one, the largest).

    ``in_dims`` are the flattened modality widths. The dedicated model is stem + inner
    layers + head of a single subset model (see the module docstring).
    """
    m, d_all, h, c = len(in_dims), sum(in_dims), hidden, n_classes
    n_sub = 2 ** m - 1
    dedicated = (d_all * h + h) + n_layers * (h * h + h) + (h * c + c)
    if stem == "modality":
        stems = d_all * h + n_sub * h
    else:
        # each modality appears in 2^(M-1) of the subsets
        stems = 2 ** (m - 1) * d_all * h + n_sub * h
    inner = n_layers * (rank * (h + h + n_sub) + n_sub * h)
    heads = n_sub * (h * c + c)
    return {"largo": stems + inner + heads, "dedicated": dedicated}


def matched_rank(in_dims: list[int], hidden: int, n_layers: int, n_classes: int,
                 stem: str = "modality") -> int:
    """The largest CP rank whose LARGO parameter count does not exceed one dedicated model's."""
    base = parameter_counts(in_dims, hidden, n_layers, n_classes, 0, stem)
    per_rank = parameter_counts(in_dims, hidden, n_layers, n_classes, 1, stem)["largo"] - base[
        "largo"]
    rank = (base["dedicated"] - base["largo"]) // per_rank
    if rank < 1:
        raise ValueError(
            f"largo: no CP rank fits the budget of one dedicated model ({base['dedicated']} "
            f"parameters): stems, heads and per-subset biases alone take {base['largo']} "
            f"(stem={stem!r}, hidden={hidden}, {2 ** len(in_dims) - 1} subsets). Use a larger "
            f"'hidden'{', stem=' + repr('modality') if stem != 'modality' else ''} or set "
            "'rank' explicitly.")
    return int(rank)


class CPLinear(nn.Module):
    """``S`` linear maps ``in → out`` whose weights are a rank-``R`` CP decomposition of the
    tensor [S, out, in]: ``W_s = Σ_r A[s, r] U[:, r] V[:, r]ᵀ``, plus a bias per subset."""

    def __init__(self, n_subsets: int, d_in: int, d_out: int, rank: int):
        super().__init__()
        self.subset_factor = nn.Parameter(torch.ones(n_subsets, rank))  # "A": all subsets alike
        self.out_factor = nn.Parameter(self._atoms(d_out, rank))          # "B"
        self.in_factor = nn.Parameter(self._atoms(d_in, rank))            # "C"
        # unit-norm atoms scaled so that W_s has the Kaiming-normal variance 2 / d_in
        # when A = 1: Var(W_ij) = R · s⁴ / (d_out · d_in)
        scale = (2.0 * d_out / rank) ** 0.25
        with torch.no_grad():
            self.out_factor.mul_(scale)
            self.in_factor.mul_(scale)
        self.bias = nn.Parameter(torch.zeros(n_subsets, d_out))

    @staticmethod
    def _atoms(dim: int, rank: int) -> torch.Tensor:
        atoms = torch.randn(dim, rank)
        return atoms / atoms.norm(dim=0, keepdim=True)

    def weights(self) -> torch.Tensor:
        """The effective weight of every subset, [S, out, in]."""
        return torch.einsum("sr,or,ir->soi", self.subset_factor, self.out_factor, self.in_factor)

    def forward(self, h: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``W_{rows[b]} h[b] + b_{rows[b]}`` for every row, without building the weights."""
        # index_select, not [rows]: indexing's backward scatter-adds in parallel, so one
        # seed gave other weights on every run with more than one torch thread
        z = (h @ self.in_factor) * self.subset_factor.index_select(0, rows)
        return z @ self.out_factor.T + self.bias.index_select(0, rows)


class LARGO(FusionMethod):
    """The 2^M − 1 dedicated subset models stored as CP-decomposed inner layers."""

    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",), "capacity": ("hidden",)}
    name: ClassVar[str] = "largo"
    # a subset is a set of named modalities: relabelling the modality axis changes nothing
    # (reorder_modalities re-points the pattern → subset lookup)
    permutation_invariant: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "hidden": 256,          # width H of the stem output and inner layers (ours)
        "n_layers": 2,          # CP-decomposed inner layers H → H (ours)
        "rank": None,           # None: matched to one dedicated model's parameter count
        "stem": "modality",     # modality (ours, default) | subset (unshared, as specified)
        "dropout": 0.3,         # after every hidden activation (ours, as the baselines)
        "lambda_full": 1.0,     # weight of the full-set term (1:1)
        **PROTOCOL_RECIPE,       # MMARE protocol: the paper's recipe could not be used
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__(modalities, shapes, n_classes, **hparams)
        hp = self.hparams
        check_choice(self.name, "stem", hp["stem"], STEMS)
        for key in ("hidden", "n_layers"):
            if not isinstance(hp[key], int) or hp[key] < 1:
                raise ValueError(f"largo: {key} must be a positive integer, got {hp[key]!r}")
        if hp["rank"] is not None and (not isinstance(hp["rank"], int) or hp["rank"] < 1):
            raise ValueError(f"largo: rank must be a positive integer or null, got {hp['rank']!r}")
        if float(hp["lambda_full"]) < 0:
            raise ValueError(f"largo: lambda_full must be >= 0, got {hp['lambda_full']!r}")
        if len(self.modalities) < 2:
            raise ValueError("largo: needs at least two modalities")
        self.stem_kind = hp["stem"]
        self.hidden = int(hp["hidden"])
        self.lambda_full = float(hp["lambda_full"])
        self.in_dims = {m: flat_dim(self.shapes[m]) for m in self.modalities}
        dims = [self.in_dims[m] for m in self.modalities]
        self.rank = int(hp["rank"]) if hp["rank"] is not None else matched_rank(
            dims, self.hidden, int(hp["n_layers"]), self.n_classes, self.stem_kind)
        if hp["rank"] is None:
            self.derived["rank"] = self.rank
        # subset s of the parameters = pattern s + 1 over the construction-time order; the
        # names (not positions) are what a subset means, see reorder_modalities
        self.subsets: list[tuple[str, ...]] = [
            tuple(m for m, on in zip(self.modalities, row, strict=True) if on)
            for row in nonempty_subsets(len(self.modalities)).tolist()]
        self.n_subsets = len(self.subsets)
        self.register_buffer("_row_of_code", self._lookup(), persistent=False)

        h, s = self.hidden, self.n_subsets
        if self.stem_kind == "modality":
            self.stem = nn.ModuleDict({m: nn.Linear(d, h, bias=False)
                                       for m, d in self.in_dims.items()})
        else:
            self.stem = nn.ModuleList([
                nn.Linear(sum(self.in_dims[m] for m in sub), h, bias=False)
                for sub in self.subsets])
        self.stem_bias = nn.Parameter(torch.zeros(s, h))
        self.inner = nn.ModuleList([CPLinear(s, h, h, self.rank)
                                    for _ in range(int(hp["n_layers"]))])
        self.head_weight = nn.Parameter(torch.empty(s, self.n_classes, h))
        self.head_bias = nn.Parameter(torch.empty(s, self.n_classes))
        for k in range(s):  # each head initialised like its own nn.Linear(H, C)
            nn.init.kaiming_uniform_(self.head_weight[k], a=math.sqrt(5))
        nn.init.uniform_(self.head_bias, -1 / math.sqrt(h), 1 / math.sqrt(h))
        self.dropout = Dropout(float(hp["dropout"]))

    # ------------------------------------------------------------ subsets and routing
    def _lookup(self) -> torch.Tensor:
        """Subset row of every presence code over the current modality order (−1: none)."""
        table = torch.full((2 ** len(self.modalities),), -1, dtype=torch.long)
        for row, sub in enumerate(self.subsets):
            code = sum(1 << self.modalities.index(m) for m in sub)
            table[code] = row
        return table

    def reorder_modalities(self, order: list[str]) -> None:
        """Relabel the modality axis (``present`` columns in ``order``); parameters stay."""
        if sorted(order) != sorted(self.modalities):
            raise ValueError(f"{order} is not a reordering of {self.modalities}")
        self.modalities = list(order)
        self._row_of_code = self._lookup().to(self._row_of_code.device)

    def subset_rows(self, present: torch.Tensor) -> torch.Tensor:
        """Subset index [B] of each row's presence pattern; −1 where nothing is present."""
        weights = 1 << torch.arange(present.shape[1], device=present.device)
        return self._row_of_code[(present.long() * weights).sum(1)]

    def sample_subsets(self, present: torch.Tensor) -> torch.Tensor:
        """A random non-empty subset of each row's present modalities, uniform over the
        ``2^k − 1`` of them (global torch RNG; depends on the mask only). Rows with no
        modality stay empty."""
        present = present.bool()
        k = present.sum(1)
        n_options = (1 << k) - 1
        u = torch.rand(present.shape[0], device=present.device)
        pick = torch.minimum((u * n_options).floor().long(), n_options - 1) + 1
        position = (present.long().cumsum(1) - 1).clamp_min(0)  # rank among present ones
        bits = (pick.unsqueeze(1) >> position) & 1
        return present & (bits == 1)

    # ------------------------------------------------------------ the subset models
    def _stem(self, x: dict[str, torch.Tensor], keep: torch.Tensor,
              rows: torch.Tensor) -> torch.Tensor:
        batch = keep.shape[0]
        flat = {m: flat_zero_filled(x[m], keep[:, j]) for j, m in enumerate(self.modalities)}
        if self.stem_kind == "modality":
            h = sum(self.stem[m](flat[m]) for m in self.modalities)
        else:
            h = self.stem_bias.new_zeros(batch, self.hidden)
            for row in torch.unique(rows[rows >= 0]).tolist():
                idx = torch.nonzero(rows == row).squeeze(1)
                inp = torch.cat([flat[m][idx] for m in self.subsets[row]], dim=1)
                h = h.index_copy(0, idx, self.stem[row](inp))
        return h + self.stem_bias.index_select(0, rows.clamp_min(0))

    def route(self, x: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """Logits of each row through the subset model of ``keep`` [B, M] (the modalities
        it reads); zero logits for rows where ``keep`` is empty."""
        keep = keep.bool()
        rows = self.subset_rows(keep)
        safe = rows.clamp_min(0)
        h = self.dropout(F.relu(self._stem(x, keep, rows)))
        for layer in self.inner:
            h = self.dropout(F.relu(layer(h, safe)))
        logits = (torch.einsum("bh,bch->bc", h, self.head_weight.index_select(0, safe))
                  + self.head_bias.index_select(0, safe))
        return torch.where((rows >= 0).unsqueeze(1), logits, torch.zeros_like(logits))

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.route(x, present)

    def loss(self, x, present, y, class_weight=None):
        """``CE(sampled subset) + lambda_full · CE(full present set)`` in training;
        ``CE(full)`` otherwise. The logits returned are the full-set ones. A row with no
        modality (zero logits in both terms) adds only the constant ``log C``."""
        present = present.bool()
        sampled = self.sample_subsets(present) if self.training else None  # RNG first
        logits = self.route(x, present)
        full = F.cross_entropy(logits, y, weight=class_weight)
        if sampled is None:
            return full, logits
        part = F.cross_entropy(self.route(x, sampled), y, weight=class_weight)
        return part + self.lambda_full * full, logits

    # ------------------------------------------------------------ dedicated models
    def subset_index(self, modalities: list[str] | tuple[str, ...]) -> int:
        wanted = set(modalities)
        for row, sub in enumerate(self.subsets):
            if set(sub) == wanted:
                return row
        raise ValueError(f"largo: {sorted(wanted)} is not a non-empty subset of "
                         f"{self.modalities}")

    @torch.no_grad()
    def dedicated_model(self, modalities: list[str] | tuple[str, ...]) -> nn.Sequential:
        """The plain MLP that LARGO holds for this subset, with its effective weights. It
        reads the subset's flattened modalities concatenated in ``self.modalities`` order."""
        row = self.subset_index(modalities)
        names = [m for m in self.modalities if m in set(modalities)]
        if self.stem_kind == "modality":
            w = torch.cat([self.stem[m].weight for m in names], dim=1)
        else:  # the subset's own stem reads its modalities in construction order
            blocks = dict(zip(self.subsets[row], torch.split(
                self.stem[row].weight, [self.in_dims[m] for m in self.subsets[row]], dim=1),
                strict=True))
            w = torch.cat([blocks[m] for m in names], dim=1)
        layers: list[nn.Module] = [_linear(w, self.stem_bias[row]), nn.ReLU(),
                                   Dropout(self.dropout.p)]
        for layer in self.inner:
            layers += [_linear(layer.weights()[row], layer.bias[row]), nn.ReLU(),
                       Dropout(self.dropout.p)]
        layers.append(_linear(self.head_weight[row], self.head_bias[row]))
        # in LARGO's own mode: a fresh Sequential trains, and drew dropout after model.eval()
        return nn.Sequential(*layers).to(w.device).train(self.training)

    def dedicated_parameters(self) -> int:
        """Parameters of ONE dedicated model (the full-modality one, the largest)."""
        return parameter_counts([self.in_dims[m] for m in self.modalities], self.hidden,
                                len(self.inner), self.n_classes, self.rank,
                                self.stem_kind)["dedicated"]

    def report_notes(self) -> list[str]:
        notes = [
            f"LARGO on vector features: inner layers are linear (CP over [subset, out, in], "
            f"no kernel factor), rank {self.rank}; {self.trainable_parameters()} parameters "
            f"for {self.n_subsets} subset models vs {self.dedicated_parameters()} for one "
            f"dedicated model.",
            "LARGO: loss = CE on a random non-empty subset of each subject's present "
            f"modalities + {self.lambda_full:g} · CE on its full present set (weighting not "
            "checked against the paper); MMARE training protocol (paper's recipe not used).",
        ]
        if self.stem_kind == "modality":
            notes.append("LARGO: stem weights shared per modality with a per-subset bias "
                         "(unshared per-subset stems cannot fit one dedicated model's budget "
                         "on embeddings); heads unshared per subset.")
        return notes


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.copy_(weight)
    layer.bias.copy_(bias)
    return layer
