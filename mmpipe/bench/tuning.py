"""An equal hyper-parameter budget for every method, spent on validation data only.

Each method names the hyper-parameters that play two roles (``tuning_keys`` on its
class): ``lr``, its learning rate(s), and ``capacity``, its main width (MMARE's shared
dimension, an MLP's hidden widths, a transformer's width). A cohort's ``tuning`` settings
give the budget, ``trials``, and the factors the defaults are scaled by:

    tuning: {trials: 4, lr: [1, 3, 0.3], capacity: [1, 0.5, 2], choose_by: loss}

The candidates are the grid of (lr factor, capacity factor) pairs, in a fixed order: the
method's own defaults first (its paper's recipe, factors 1 and 1), then one knob at a
time, alternating (the listed lr factors and capacity factors in turn: lr × 3, capacity
× 0.5, lr × 0.3, capacity × 2 with the defaults above), then the pairs that move both.
``trials`` takes the head of that order, so a budget of 3 already moves each knob once,
and every method and every seed tries the same factor pairs. A method whose capacity (or learning rate) cannot be scaled
(a scikit-learn baseline that picks its own regularisation on validation) has fewer
distinct candidates: it runs those, and the run records how many.

Each seed chooses among its trials by ``choose_by`` on its own validation predictions
(or the out-of-fold predictions under cross-validation): ``loss`` is the cross-entropy
of the predicted probabilities (lower is better), ``auc`` or ``balanced_accuracy`` the
metric (higher is better); a tie keeps the earlier trial, so the paper's defaults win
ties. The test split is never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmpipe.bench.budget import Tuning
from mmpipe.bench.metrics import classification_metrics


def _scaled(value: Any, factor: float, integer: bool, floor: int = 1) -> Any:
    """``value`` × ``factor``: a width (``integer``) rounds to at least ``floor``, a
    learning rate stays a float even when the config wrote it as an integer."""
    if isinstance(value, list | tuple):
        return [_scaled(v, factor, integer, floor) for v in value]
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if integer:
        return max(floor, int(round(value * factor)))
    return float(f"{value * factor:.12g}")  # 3e-4 as written, not 0.00030000000000000003


def _width_multiple(keys: dict[str, tuple[str, ...]], hparams: dict[str, Any]) -> int:
    """A transformer's width, split into its heads, must stay divisible by the head count."""
    heads = hparams.get("heads")
    return heads if keys.get("capacity") == ("width",) and isinstance(heads, int) else 1


def candidate_overrides(method_cls, hparams: dict[str, Any], trainer_defaults: dict[str, Any],
                        tuning: Tuning) -> list[dict[str, Any]]:
    """Distinct hyper-parameter overrides of the budget's trials, the defaults (``{}``)
    first. ``hparams`` are the method's effective settings (class defaults and config)."""
    keys = getattr(method_cls, "tuning_keys", {})
    multiple = _width_multiple(keys, hparams)
    # the least capacity the method takes (hgb's trees need two leaves): a trial below
    # it failed, recorded, and spent a trial of the budget
    floor = getattr(method_cls, "capacity_floor", 1)
    out: list[dict[str, Any]] = []
    for lr_f, cap_f in tuning.factor_pairs():
        over: dict[str, Any] = {}
        for key in keys.get("lr", ()):
            base = hparams.get(key, trainer_defaults.get(key))
            if base is not None and lr_f != 1.0:
                over[key] = _scaled(base, lr_f, integer=False)
        for key in keys.get("capacity", ()):
            base = hparams.get(key)
            if base is not None and cap_f != 1.0:
                value = _scaled(base, cap_f, integer=True, floor=floor)
                if multiple > 1:
                    value = max(multiple, int(round(value / multiple)) * multiple)
                if value != base:
                    over[key] = value
        if over not in out:
            out.append(over)
    return out


def selection_score(y: np.ndarray, proba: np.ndarray, choose_by: str) -> float:
    """Higher is better; NaN (e.g. AUC with one class) ranks last."""
    if choose_by == "loss":
        p = np.clip(proba[np.arange(len(y)), y], 1e-7, 1.0)
        return float(np.mean(np.log(p))) if len(y) else float("nan")
    value = classification_metrics(y, proba)[choose_by]
    return float(value)


@dataclass
class TrialRecord:
    overrides: dict[str, Any]
    score: float | None = None
    best_epoch: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # per phase that diverged, its epoch (per fold under cv): the trial kept an earlier
    # checkpoint, and could be chosen with nothing in its record to say it was unstable
    diverged: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, choose_by: str) -> dict[str, Any]:
        score = self.score
        if score is not None and choose_by == "loss":
            score = -score  # recorded as the loss itself
        return {"overrides": self.overrides, f"val_{choose_by}": score,
                "best_epoch": self.best_epoch, **({"error": self.error} if self.error else {}),
                **({"diverged": self.diverged} if self.diverged else {})}
