"""One training loop for every neural method.

Method-specific behaviour comes in through the method: its phases (HyperMM trains φ
then ρ), its loss, the modalities it reads, and ``after_step`` for parameters it moves
itself after each batch (DRIM's discriminators). The loop itself does what every paper of
the seeds does: mini-batches with a class-balancing sampler, optional Gaussian noise
on the present features, early stopping on a validation metric with the best
checkpoint restored, deterministic seeds, a per-epoch log. Without a validation split
(a refit on the whole training part after cross-validation chose the epochs,
:mod:`mmpipe.bench.selection`) each phase runs a fixed number of epochs and keeps its
last weights.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmpipe.bench.budget import MONITORS
from mmpipe.bench.data import BenchData
from mmpipe.bench.metrics import classification_metrics
from mmpipe.bench.optim import CosineSchedule, FusedAdam, adam, rmsprop
from mmpipe.methods import BATCH_KEYS, PHASE_KEYS
from mmpipe.methods.base import FusionMethod, Phase

log = logging.getLogger(__name__)

TRAIN_DEFAULTS = {"lr": 1e-4, "weight_decay": 1e-4, "max_epochs": 200, "patience": 25,
                  "optimizer": "adam", "batch_size": 64, "sampler": "weighted",
                  "schedule": None, "eta_min": 0.0, "class_weights": False, "noise_p": 0.0,
                  "noise_std": 0.1, "monitor": "loss", "min_epochs": 0}
LOG_HEADER = "phase\tepoch\ttrain_loss\tval_loss\tval_balanced_accuracy\tval_auc"


class NotTrainable(Exception):
    """The method cannot be trained on this split (e.g. no complete-case subject).
    ``selection``: the model selection's record where trials ran before it failed (a
    cross-validation's refit), for the run to keep."""

    def __init__(self, message: str, selection: dict | None = None):
        super().__init__(message)
        self.selection = selection


class NonFiniteOutputs(Exception):
    """The model's outputs on the validation split, or its validation loss, hold NaN or
    inf: it diverged. The message says which."""


@dataclass
class FitResult:
    epochs: dict[str, int] = field(default_factory=dict)        # epochs run per phase
    best_epoch: dict[str, int] = field(default_factory=dict)
    best_score: dict[str, float] = field(default_factory=dict)
    # the first epoch a checkpoint could come from (max(1, min_epochs)), per phase
    first_eligible: dict[str, int] = field(default_factory=dict)
    # per phase that diverged (a non-finite loss or validation output), the epoch it did
    diverged: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # what ran: the batch settings and each phase's optimiser and stopping settings
    settings: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)             # the per-epoch log
    # subjects training iterated over: the split given, less those the method's
    # train_subset leaves out (complete cases, or those with one modality)
    n_fit: int = 0


# the streams a seed's training draws from, apart from the one its weights were drawn
# from (``torch.manual_seed(seed)`` before the method is built)
_TRAINING_STREAM, _BATCH_STREAM = 1, 2


def _stream(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), stream]).generate_state(1, np.uint64)[0])


def seed_everything(seed: int) -> torch.Generator:
    """Seed a fit's draws: torch's global generator (dropout, noise) and the returned
    generator (batch order) each from a stream of its own, derived from ``seed``. Both
    were seeded with ``seed`` itself, which had drawn the weights just before: the first
    dropout masks and the first batch order were functions of the very numbers that
    initialised the weights."""
    torch.manual_seed(_stream(seed, _TRAINING_STREAM))
    np.random.seed(seed % (2**32))
    return torch.Generator().manual_seed(_stream(seed, _BATCH_STREAM))


def _tensors(data: BenchData, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                             torch.Tensor]:
    x = {m: torch.as_tensor(data.x[m], dtype=torch.float32, device=device) for m in data.modalities}
    present = torch.as_tensor(data.present, dtype=torch.bool, device=device)
    y = torch.as_tensor(data.y, dtype=torch.long, device=device)
    return x, present, y


def _optimizer(phase: Phase, params):
    """Adam, AdamW and RMSprop through :class:`~mmpipe.bench.optim.FusedAdam` and
    :class:`~mmpipe.bench.optim.FusedRMSprop` (torch's fused Adam kernel, without
    torch.optim's start-up and per-step Python); SGD, and parameters the kernel cannot
    take, from torch.optim."""
    params = [p for p in params if p.requires_grad]
    kind = phase.optimizer.lower()
    if kind in ("adam", "adamw"):
        return adam(params, lr=phase.lr, weight_decay=phase.weight_decay,
                    decoupled=kind == "adamw")
    if kind == "rmsprop":
        return rmsprop(params, lr=phase.lr, weight_decay=phase.weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=phase.lr, weight_decay=phase.weight_decay, momentum=0.9)
    raise ValueError(f"unknown optimizer {phase.optimizer!r}")


def _scheduler(phase: Phase, opt):
    if phase.schedule is None:
        return None
    if phase.schedule == "cosine":
        t_max = max(phase.max_epochs, 1)
        if isinstance(opt, FusedAdam):
            return CosineSchedule(opt, t_max, eta_min=phase.eta_min)
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max,
                                                          eta_min=phase.eta_min)
    raise ValueError(f"unknown schedule {phase.schedule!r} (cosine | null)")


def _epoch_order(y: np.ndarray, sampler: str, gen: torch.Generator) -> torch.Tensor:
    """Indices of one epoch: shuffled, class-balanced by weights, or minority oversampled."""
    n = len(y)
    if sampler == "none":
        return torch.randperm(n, generator=gen)
    counts = np.bincount(y, minlength=int(y.max()) + 1).astype(float)
    if sampler == "weighted":
        # torch's WeightedRandomSampler: draw n with replacement, weight 1/class count
        w = torch.as_tensor(1.0 / counts[y], dtype=torch.double)
        return torch.multinomial(w, n, replacement=True, generator=gen)
    if sampler == "oversample":
        # repeat minority classes up to the majority count, then shuffle
        target = int(counts.max())
        idx = []
        for c in np.flatnonzero(counts):
            members = np.flatnonzero(y == c)
            extra = torch.randint(len(members), (target - len(members),), generator=gen).numpy()
            idx.append(np.concatenate([members, members[extra]]))
        idx = torch.as_tensor(np.concatenate(idx))
        return idx[torch.randperm(len(idx), generator=gen)]
    raise ValueError(f"unknown sampler {sampler!r} (weighted | oversample | none)")


def _augment(x: dict[str, torch.Tensor], present: torch.Tensor, p: float, std: float,
             gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Gaussian noise on present features of a random share ``p`` of the batch (MMARE 4.3).

    Noise is drawn for the rows it is added to only: drawing it for the whole batch and
    keeping the 30 % it hits spent up to a fifth of a small method's training in ``randn``.
    """
    if p <= 0:
        return x
    out = {}
    for j, (m, v) in enumerate(x.items()):
        hit = (torch.rand(v.shape[0], generator=gen) < p).to(v.device) & present[:, j]
        rows = hit.nonzero().squeeze(1)
        noise = torch.randn((len(rows), *v.shape[1:]), generator=gen).mul_(std)
        out[m] = v.index_add(0, rows, noise.to(v.device, v.dtype))
    return out


@torch.no_grad()
def predict_proba(method: FusionMethod, data: BenchData, device: torch.device | str = "cpu",
                  batch_size: int = 512) -> np.ndarray:
    if getattr(method, "kind", "torch") == "ensemble":  # cross-validation's fold models
        # a fold model that never saw a modality reads it as absent (Normalizer.unseen):
        # a subject with that modality alone is scored by the fold models that can read it
        scored = []  # (rows, probabilities): one member's input at a time in memory
        for m, part in method.member_inputs(data):
            rows = np.flatnonzero(part.present.any(axis=1))
            if len(rows) == len(data.y):
                scored.append((None, predict_proba(m, part, device, batch_size)))
            elif len(rows):
                scored.append((rows, predict_proba(m, part.subset(rows), device, batch_size)))
        if all(rows is None for rows, _ in scored):
            return np.mean([p for _, p in scored], axis=0)
        total = np.zeros((len(data.y), data.n_classes), dtype=np.float64)
        count = np.zeros(len(data.y), dtype=np.int64)
        for rows, p in scored:
            rows = np.arange(len(data.y)) if rows is None else rows
            total[rows] += p
            count[rows] += 1
        return (total / np.maximum(count, 1)[:, None]).astype(np.float32)
    if getattr(method, "kind", "torch") == "sklearn":
        return method.predict_proba(data)
    method.eval()
    x, present, _ = _tensors(data, torch.device(device))
    out = []
    for start in range(0, len(data.y), batch_size):
        sl = slice(start, start + batch_size)
        logits = method({m: v[sl] for m, v in x.items()}, present[sl])
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, method.n_classes), dtype=np.float32)


def _validate(method, phase: Phase, val: BenchData, x, present, y, class_weight, device) -> dict:
    method.eval()
    with torch.no_grad():
        loss_fn = phase.loss or method.validation_loss
        loss, logits = loss_fn(x, present, y, class_weight)
        if class_weight is not None and not bool(torch.isfinite(loss)):
            # a term whose every subject is of a class the training split lacks (weight 0;
            # late fusion's of a modality only they have) is 0/0: early stopping would
            # keep no epoch, so the split is scored unweighted, every epoch alike
            loss, logits = loss_fn(x, present, y, None)
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteOutputs("its outputs on the validation split are not finite")
    if not bool(torch.isfinite(loss)):
        # finite logits, but a term of the loss (an auxiliary one) is not: under
        # `monitor: loss` no epoch could checkpoint, and the phase ran on past it
        raise NonFiniteOutputs(f"the validation loss is {float(loss)}")
    proba = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    metrics = classification_metrics(val.y, proba)
    metrics["loss"] = float(loss)
    return metrics


def _score(metrics: dict, monitor: str) -> float:
    if monitor == "loss":
        return -metrics["loss"]
    if monitor not in MONITORS:  # an unknown name would score -inf and keep epoch 1 silently
        raise ValueError(f"unknown monitor {monitor!r} (known: {MONITORS})")
    value = metrics[monitor]
    return float("-inf") if value is None or np.isnan(value) else float(value)


def _need_both_classes(method: FusionMethod, train: BenchData) -> None:
    if len(np.unique(train.y)) < 2:
        raise NotTrainable(f"{len(train.y)} training subject(s) usable by {method.name}, "
                           f"classes {np.unique(train.y).tolist()}: need both classes")


def fit(method: FusionMethod, train: BenchData, val: BenchData | None, train_cfg: dict[str, Any],
        seed: int, device: torch.device | str = "cpu", log_path: str | Path | None = None, *,
        epochs: dict[str, int] | None = None) -> FitResult:
    """Train ``method`` phase by phase with early stopping on ``val``; best weights restored.

    ``val=None`` needs ``epochs`` (phase name -> epochs): each phase runs that many
    epochs and keeps its last weights (a refit whose epochs cross-validation chose).
    """
    cfg = {**TRAIN_DEFAULTS, **train_cfg}
    if val is None and epochs is None:
        raise ValueError("fit without a validation split needs the epochs of each phase")
    device = torch.device(device)
    gen = seed_everything(seed)
    if getattr(method, "kind", "torch") == "sklearn":
        # hgb fitted one class without a word and failed in predict_proba, which stopped
        # the job and lost the cell's other seeds
        _need_both_classes(method, train)
        start = time.perf_counter()
        method.fit(train, val, seed)
        return FitResult(seconds=time.perf_counter() - start,
                         settings={"estimator": method.fitted_settings()}, n_fit=len(train.y))
    if method.train_subset != "all":
        # "complete": every modality; "with:<m>": modality m (BD's with_modality, whose
        # losses read no other row: kept, they took the weighted sampler's draws, so the
        # rows that trained were not class-balanced)
        if method.train_subset == "complete":
            keep, having = train.present.all(axis=1), "every modality"
        else:
            having = method.train_subset.removeprefix("with:")
            keep = train.present[:, method.modalities.index(having)]
        log.info("%s trains on the %d of %d subjects with %s", method.name, int(keep.sum()),
                 len(keep), having)
        train = train.subset(np.flatnonzero(keep))
    _need_both_classes(method, train)
    method.to(device)
    xt, pt, yt = _tensors(train, device)
    if val is not None:
        xv, pv, yv = _tensors(val, device)
    class_weight = None
    if cfg["class_weights"]:
        # n / (classes × n_c) over the classes the training split has; a class it lacks
        # weighs nothing: at n / classes it could carry most of the validation loss that
        # early stopping reads, on a class the model never saw
        counts = np.bincount(train.y, minlength=method.n_classes).astype(float)
        weight = counts.sum() / np.maximum(counts, 1) / int((counts > 0).sum())
        weight[counts == 0] = 0.0
        class_weight = torch.as_tensor(weight, dtype=torch.float32, device=device)
    result = FitResult(settings={k: cfg[k] for k in BATCH_KEYS}, n_fit=len(train.y))
    result.settings["phases"] = []
    lines = []
    start = time.perf_counter()
    method.prepare(xt, pt, yt)
    for phase in method.phases(cfg):
        # a refit runs the epochs cross-validation chose under the schedule the folds ran
        # (a cosine annealed over max_epochs), so it repeats what it copies
        n_epochs = int(epochs[phase.name]) if epochs is not None else phase.max_epochs
        result.settings["phases"].append({"name": phase.name,
                                          **{k: getattr(phase, k) for k in PHASE_KEYS},
                                          **({"epochs": n_epochs} if epochs else {})})
        opt = _optimizer(phase, phase.parameters())
        sched = _scheduler(phase, opt)
        loss_fn = phase.loss or method.loss
        best, best_state, best_epoch, waited = float("-inf"), None, 0, 0
        # checkpoints (and stops) from this epoch on; a cap below it keeps the last epoch
        eligible = max(1, min(int(phase.min_epochs), phase.max_epochs))
        result.first_eligible[phase.name] = eligible
        epoch, diverged = 0, None
        for epoch in range(1, n_epochs + 1):
            method.train()
            order = _epoch_order(train.y, cfg["sampler"], gen)
            total, batches = 0.0, 0
            for s in range(0, len(order), cfg["batch_size"]):
                idx = order[s:s + cfg["batch_size"]].to(device)
                if len(idx) < 2:  # batch norm / layer statistics need more than one sample
                    continue
                # index_select, not v[idx]: the same rows, where torch's general indexing
                # took about 90 µs a 64-row batch of a 1024-d modality against 18 µs
                pb = pt.index_select(0, idx)
                xb = _augment({m: v.index_select(0, idx) for m, v in xt.items()}, pb,
                              cfg["noise_p"], cfg["noise_std"], gen)
                loss, _ = loss_fn(xb, pb, yt.index_select(0, idx), class_weight)
                value = loss.item()
                if not math.isfinite(value):
                    diverged = f"the training loss is {value}"
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                method.after_step()
                total += value
                batches += 1
            if diverged is None and val is not None:
                try:
                    metrics = _validate(method, phase, val, xv, pv, yv, class_weight, device)
                except NonFiniteOutputs as err:
                    diverged = str(err)
            if diverged is not None:
                # a checkpoint taken before it stands (as early stopping keeps it against
                # any later epoch); with none, a failed trial, not a crash
                if best_state is None:
                    raise NotTrainable(f"{method.name}: {diverged} in phase {phase.name!r}, "
                                       f"epoch {epoch} (lr {phase.lr:g})")
                log.warning("%s phase %s diverged at epoch %d (%s): kept its checkpoint of "
                            "epoch %d", method.name, phase.name, epoch, diverged, best_epoch)
                result.diverged[phase.name] = epoch
                break
            if sched is not None:
                sched.step()
            if val is None:
                lines.append(f"{phase.name}\t{epoch}\t{total / max(batches, 1):.5f}\tnan\tnan\tnan")
                best_epoch = epoch
                continue
            score = _score(metrics, phase.monitor)
            lines.append(f"{phase.name}\t{epoch}\t{total / max(batches, 1):.5f}\t"
                         f"{metrics['loss']:.5f}\t{metrics['balanced_accuracy']:.4f}\t"
                         f"{metrics['auc']:.4f}")
            if epoch < eligible:
                continue
            if score > best:
                best, best_epoch, waited = score, epoch, 0
                best_state = copy.deepcopy(method.state_dict())
            else:
                waited += 1
                if waited >= phase.patience:
                    break
        if val is None and diverged is None and not all(  # batch norm's statistics too
                bool(torch.isfinite(t).all()) for t in (*method.parameters(),
                                                        *method.buffers())):
            # a refit has no validation split to catch a last step that left a finite loss
            # but non-finite weights: its scores would have crashed the run
            raise NotTrainable(f"{method.name}: its weights are not finite after phase "
                               f"{phase.name!r}, epoch {epoch} (lr {phase.lr:g})")
        if best_state is not None:
            method.load_state_dict(best_state)
        result.epochs[phase.name] = epoch
        result.best_epoch[phase.name] = best_epoch
        result.best_score[phase.name] = best
        log.info("%s phase %s: %d epochs, best %s %.4f at epoch %d", method.name, phase.name,
                 epoch, phase.monitor, best if phase.monitor != "loss" else -best, best_epoch)
    result.seconds = time.perf_counter() - start
    result.lines = lines
    if log_path is not None:
        Path(log_path).write_text(LOG_HEADER + "\n" + "\n".join(lines) + "\n")
    method.eval()
    return result
