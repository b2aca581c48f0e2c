"""How a seed's model is chosen and what the choice may spend, as the config gives them:
the selection strategy (:class:`Selection`, used by :mod:`mmpipe.bench.selection`) and
the tuning budget (:class:`Tuning`, :mod:`mmpipe.bench.tuning`), and what early stopping
may watch. Kept free of torch: the training jobs' parameters are built from
:meth:`Selection.effective` and :meth:`Tuning.effective` while Snakemake plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# what early stopping can watch (the trainer's ``monitor``)
MONITORS = ("loss", "auc", "balanced_accuracy")

STRATEGIES = ("validation", "cv")
FINALS = ("refit", "ensemble")


@dataclass(frozen=True)
class Selection:
    """How a seed chooses its model; the defaults are the config schema's (a test checks)."""

    strategy: str = "validation"
    folds: int = 5
    final: str = "refit"

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> Selection:
        cfg = dict(cfg or {})
        out = cls(strategy=str(cfg.get("strategy", "validation")),
                  folds=int(cfg.get("folds", 5)), final=str(cfg.get("final", "refit")))
        if out.strategy not in STRATEGIES or out.final not in FINALS or out.folds < 2:
            raise ValueError(f"selection: strategy in {STRATEGIES}, final in {FINALS}, "
                             f"folds >= 2, got {cfg}")
        return out

    def effective(self) -> dict[str, Any]:
        """The settings this strategy reads (``folds`` and ``final`` only under ``cv``): the
        training jobs hash this, so a setting nothing reads reruns nothing."""
        if self.strategy == "validation":
            return {"strategy": self.strategy}
        return {"strategy": self.strategy, "folds": self.folds, "final": self.final}


# what a trial is judged by: the quantities early stopping can watch
CHOOSE_BY = MONITORS


@dataclass(frozen=True)
class Tuning:
    """The budget; the defaults are the config schema's (a test checks they agree), so a
    partial ``tuning:`` block keeps the documented values for the keys it leaves out."""

    trials: int = 4
    lr: tuple[float, ...] = (1.0, 3.0, 0.3)
    capacity: tuple[float, ...] = (1.0, 0.5, 2.0)
    choose_by: str = "loss"

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> Tuning:
        cfg = dict(cfg or {})
        base = cls()
        out = cls(trials=int(cfg.get("trials", base.trials)),
                  lr=tuple(float(f) for f in cfg.get("lr", base.lr)),
                  capacity=tuple(float(f) for f in cfg.get("capacity", base.capacity)),
                  choose_by=str(cfg.get("choose_by", base.choose_by)))
        if out.trials < 1 or out.choose_by not in CHOOSE_BY or not out.lr or not out.capacity:
            raise ValueError(f"tuning: trials >= 1, choose_by in {CHOOSE_BY} and non-empty "
                             f"factor lists, got {cfg}")
        if any(f <= 0 for f in (*out.lr, *out.capacity)):
            raise ValueError(f"tuning: factors must be positive, got {cfg}")
        return out

    def effective(self) -> dict[str, Any]:
        """The settings as the budget spends them: each factor list cut after the last
        factor a trial reaches (:meth:`factor_pairs` of the result is this one's), so a
        factor no trial reaches reruns nothing (the training jobs hash this, and run it)."""
        lrs = [f for f in self.lr if f != 1.0]
        caps = [f for f in self.capacity if f != 1.0]
        n_lr = n_cap = 0
        count = 1                                      # the defaults' trial
        for i in range(max(len(lrs), len(caps))):      # one knob at a time, as factor_pairs
            if count < self.trials and i < len(lrs):
                n_lr, count = i + 1, count + 1
            if count < self.trials and i < len(caps):
                n_cap, count = i + 1, count + 1
        if count < self.trials:                        # the trials reach the pairs of both
            n_lr, n_cap = len(lrs), len(caps)
        # trials beyond the budget's factor pairs run none more: 9 and 20 are one budget
        trials = min(self.trials, (len(lrs) + 1) * (len(caps) + 1))
        # one trial is chosen by nothing: its choose_by reran every training job
        chosen_by = {"choose_by": self.choose_by} if trials > 1 else {}
        return {"trials": trials, "lr": [1.0, *lrs[:n_lr]],
                "capacity": [1.0, *caps[:n_cap]], **chosen_by}

    def factor_pairs(self) -> list[tuple[float, float]]:
        """The budget's (lr, capacity) factor pairs: (1, 1), one knob at a time, then both."""
        lrs = [f for f in self.lr if f != 1.0]
        caps = [f for f in self.capacity if f != 1.0]
        order: list[tuple[float, float]] = [(1.0, 1.0)]
        for i in range(max(len(lrs), len(caps))):
            order += [(lrs[i], 1.0)] if i < len(lrs) else []
            order += [(1.0, caps[i])] if i < len(caps) else []
        order += [(lr, cap) for lr in lrs for cap in caps]
        return order[: self.trials]
