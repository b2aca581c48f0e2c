"""Feature imputation baselines: fill the absent modalities, then the concatenation MLP.

Both replace each absent modality's (flattened) feature vector with values derived from
the *training split* only, then run exactly the network of
:class:`~mmpipe.methods.baselines.ZeroFillConcat` (subclassed: same layers, same
``hidden``/``dropout``/``indicators`` hyper-parameters, same MMARE training protocol),
so a difference from ``concat_zero`` comes from the imputed values alone.
MLP: Linear(ΣD_m [+M], h1)-ReLU-Dropout-Linear(h1, h2)-ReLU-Dropout-Linear(h2, C).

- :class:`MeanImpute` (``mean_impute``) — an absent modality gets the mean of that
  modality over the training subjects where it is present (scikit-learn's
  ``SimpleImputer(strategy="mean")`` per feature element, which here coincides with the
  per-modality mean because a modality is present or absent as a block).
- :class:`KNNImpute` (``knn_impute``) — an absent modality gets the mean of that
  modality over the ``k`` (5) nearest training subjects that have it, with scikit-learn's
  ``KNNImputer`` semantics (uniform weights, ``nan_euclidean`` distance): the distance
  between a subject and a training subject uses only the feature elements present in
  both, scaled by (all elements / shared elements), i.e.
  ``d² = ΣD / Σ_{m shared} D_m · Σ_{m shared} ‖z_m − z'_m‖²``; training subjects sharing
  no modality with the subject are not neighbours; with fewer than ``k`` candidates all
  are used; with none, the training mean is used (``KNNImputer`` falls back to the column
  mean the same way). Distances are computed on features standardised with the training
  mean/standard deviation of each element (``standardize: true``, deviation 0 read as 1
  like ``StandardScaler``); the imputed values are the neighbours' raw features. With
  ``standardize: false`` the result is ``KNNImputer`` on the raw features (centred on the
  training mean, which moves no distance and keeps float32 exact far from zero).

Both statistics come from :meth:`prepare` (the whole normalised training split) and live
in buffers, so they are saved with the model; evaluation only ever reads the training
bank, never other evaluation subjects, and a subject's own absent values enter neither
the distance nor the output (they are replaced by zeros before anything else).

A training subject is never its own neighbour: its imputation targets are modalities it
lacks, and its bank row lacks them too, so it is never a candidate (the bank holds the
presence mask the trainer trains with; neither method drops modalities in training).

A modality that no training subject has is imputed with zeros (what
``KNNImputer``/``SimpleImputer`` do with ``keep_empty_features=True``) and the report
says so. Under z-score normalisation fitted on the training split the training means are
0 and :class:`MeanImpute` is the same function as ``concat_zero``; :meth:`report_notes`
says so when it finds it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch

from mmpipe.methods.baselines import ZeroFillConcat
from mmpipe.methods.blocks import flat_dim, flat_zero_filled

log = logging.getLogger(__name__)

# |training mean| below this everywhere: mean imputation is zero-filling (z-scored data)
ZERO_MEAN_ATOL = 1e-5


class MeanImpute(ZeroFillConcat):
    """Absent modalities ← their training-split mean, then the zero-fill concat MLP."""

    name = "mean_impute"

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        self.widths = [flat_dim(self.shapes[m]) for m in self.modalities]
        self.register_buffer("means", torch.zeros(sum(self.widths)))
        self.register_buffer("seen", torch.zeros(len(self.modalities), dtype=torch.bool))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _blocks(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
        """Flattened features [B, D_m] per modality, zeros where absent."""
        return [flat_zero_filled(x[m], present[:, j]).to(self.means.dtype)
                for j, m in enumerate(self.modalities)]

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(flat, self.widths, dim=-1))

    @torch.no_grad()
    def prepare(self, x, present, y) -> None:
        present = present.bool().to(self.means.device)
        x = {m: v.to(self.means.device) for m, v in x.items()}
        means = []
        for j, (m, block) in enumerate(zip(self.modalities, self._blocks(x, present),
                                           strict=True)):
            rows = present[:, j]
            self.seen[j] = bool(rows.any())
            if not self.seen[j]:
                log.warning("%s: no training subject has %s; it is imputed with zeros",
                            self.name, m)
            means.append(block[rows].mean(0) if self.seen[j] else torch.zeros_like(block[0]))
        self.means.copy_(torch.cat(means))
        self.fitted.fill_(True)

    def impute(self, blocks: list[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
        """Blocks with the absent rows replaced by the training means."""
        means = self._split(self.means)
        return [torch.where(present[:, j].unsqueeze(-1), b, means[j].expand_as(b))
                for j, b in enumerate(blocks)]

    def filled(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """The imputed feature matrix [B, ΣD_m] the MLP reads (without indicators)."""
        if not bool(self.fitted):
            raise RuntimeError(f"{self.name}: prepare() must see the training split before "
                               "the first forward (the imputation statistics come from it)")
        present = present.bool()
        return torch.cat(self.impute(self._blocks(x, present), present), dim=1)

    def forward(self, x, present):
        present = present.bool()
        parts = [self.filled(x, present)]
        if self.indicators:
            parts.append(present.to(parts[0].dtype))
        return self.mlp(torch.cat(parts, dim=1))

    def report_notes(self) -> list[str]:
        notes = []
        unseen = [m for m, s in zip(self.modalities, self.seen.tolist(), strict=True) if not s]
        if bool(self.fitted) and unseen:
            notes.append(f"{self.name}: no training subject has {unseen}; imputed with zeros")
        if (bool(self.fitted) and type(self) is MeanImpute
                and float(self.means.abs().max()) < ZERO_MEAN_ATOL):
            notes.append("mean_impute: the training means are 0 (z-scored features), so mean "
                         "imputation is the same function as concat_zero")
        return notes


class KNNImpute(MeanImpute):
    """Absent modalities ← mean over the k nearest training subjects that have them."""

    name = "knn_impute"
    defaults: ClassVar[dict[str, Any]] = {"k": 5, "standardize": True,
                                          **ZeroFillConcat.defaults}

    def __init__(self, modalities, shapes, n_classes, **hparams):
        super().__init__(modalities, shapes, n_classes, **hparams)
        self.k = int(self.hparams["k"])
        if self.k < 1:
            raise ValueError(f"{self.name}: k must be at least 1, got {self.hparams['k']!r}")
        total = sum(self.widths)
        # the training bank; its length is set by prepare() (and by a loaded state_dict)
        self.register_buffer("bank", torch.zeros(0, total))
        self.register_buffer("bank_present", torch.zeros(0, len(self.modalities),
                                                         dtype=torch.bool))
        self.register_buffer("center", torch.zeros(total))
        self.register_buffer("scale", torch.ones(total))
        # the bank standardised as a query is, and each row's squared norm, per modality:
        # fixed once the bank is, so derived after prepare() and after a load instead of in
        # every batch's distances (about 8 % of a training run); not saved
        for j, width in enumerate(self.widths):
            self.register_buffer(f"bank_standard_{j}", torch.zeros(0, width), persistent=False)
            self.register_buffer(f"bank_sqnorm_{j}", torch.zeros(0), persistent=False)

    @torch.no_grad()
    def prepare(self, x, present, y) -> None:
        super().prepare(x, present, y)
        present = present.bool().to(self.means.device)
        x = {m: v.to(self.means.device) for m, v in x.items()}
        blocks = self._blocks(x, present)
        self.bank = torch.cat(blocks, dim=1).clone()
        self.bank_present = present.clone()
        # centred in either case, which moves no distance: the float32 expansion
        # |q|² + |b|² - 2 q·b of features far from zero (1000 ± 1) cancelled to noise and
        # chose other neighbours than KNNImputer on the same raw features
        self.center.copy_(self.means)
        if self.hparams["standardize"]:
            stds = []
            for j, b in enumerate(blocks):
                rows = b[present[:, j]]
                std = rows.std(0, unbiased=False) if len(rows) else torch.ones_like(b[0])
                stds.append(torch.where(std > 0, std, torch.ones_like(std)))
            self.scale.copy_(torch.cat(stds))
        self._standardise_bank()

    @torch.no_grad()
    def _standardise_bank(self) -> None:
        centers, scales = self._split(self.center), self._split(self.scale)
        for j, bank in enumerate(self._split(self.bank)):
            standard = (bank - centers[j]) / scales[j]
            setattr(self, f"bank_standard_{j}", standard)
            setattr(self, f"bank_sqnorm_{j}", (standard * standard).sum(1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a fresh model has an empty bank: take the saved bank's size before loading
        for name in ("bank", "bank_present"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                current = getattr(self, name)
                setattr(self, name, torch.empty(saved.shape, dtype=current.dtype,
                                                device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._standardise_bank()

    def distances(self, blocks: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """``nan_euclidean`` squared distances [B, N] to the bank (inf: nothing shared)."""
        centers, scales = self._split(self.center), self._split(self.scale)
        sq = torch.zeros(present.shape[0], self.bank.shape[0], dtype=self.bank.dtype,
                         device=self.bank.device)
        shared_width = torch.zeros_like(sq)
        for j, width in enumerate(self.widths):
            shared = present[:, j].unsqueeze(1) & self.bank_present[:, j].unsqueeze(0)
            q = (blocks[j] - centers[j]) / scales[j]
            b = getattr(self, f"bank_standard_{j}")
            d = ((q * q).sum(1, keepdim=True) + getattr(self, f"bank_sqnorm_{j}")
                 - 2.0 * q @ b.T).clamp_min(0.0)
            # where() rather than a product: absent rows are zeros, but never let them count
            sq = sq + torch.where(shared, d, torch.zeros((), dtype=d.dtype, device=d.device))
            shared_width = shared_width + shared.to(sq.dtype) * width
        scaled = sq * (sum(self.widths) / shared_width.clamp_min(1.0))
        return torch.where(shared_width > 0, scaled, torch.full_like(scaled, float("inf")))

    def neighbours(self, x: dict[str, torch.Tensor], present: torch.Tensor, modality: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(bank indices [B, k'], valid [B, k']) of each subject's nearest training subjects
        that have ``modality`` (``k' = min(k, bank size)``; invalid slots: fewer candidates)."""
        present = present.bool()
        return self._neighbours(self.distances(self._blocks(x, present), present),
                                self.modalities.index(modality))

    def _neighbours(self, dist: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        candidate = self.bank_present[:, j].unsqueeze(0) & torch.isfinite(dist)
        masked = torch.where(candidate, dist, torch.full_like(dist, float("inf")))
        k = min(self.k, dist.shape[1])
        values, idx = torch.topk(masked, k, dim=1, largest=False, sorted=True)
        return idx, torch.isfinite(values)

    def impute(self, blocks: list[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
        if self.bank.shape[0] == 0:
            raise RuntimeError(f"{self.name}: the training bank is empty")
        dist = self.distances(blocks, present)
        bank, means = self._split(self.bank), self._split(self.means)
        out = []
        for j, b in enumerate(blocks):
            idx, valid = self._neighbours(dist, j)
            w = valid.to(b.dtype)
            count = w.sum(1, keepdim=True)
            # index_select, not bank[j][idx]: the same rows without torch's general
            # indexing, which was 8 % of this method's training
            rows = bank[j].index_select(0, idx.reshape(-1)).view(*idx.shape, -1)
            knn = (rows * w.unsqueeze(-1)).sum(1) / count.clamp_min(1.0)
            # no training subject shares a modality with this one: the training mean
            fill = torch.where(count > 0, knn, means[j].expand_as(b))
            out.append(torch.where(present[:, j].unsqueeze(-1), b, fill))
        return out
