"""The trainer's Adam and AdamW, and their cosine schedule, without ``torch.optim``.

:class:`FusedAdam` makes the update ``torch.optim.Adam(fused=True)`` (and ``AdamW``)
makes: the same fused kernels (``torch._fused_adam_``, ``torch._fused_adamw_``) called
with the same state (``exp_avg``, ``exp_avg_sq``, a float32 ``step``, created the first
time a parameter has a gradient; a parameter without a gradient is skipped, its step not
counted), bit for bit (``tests/bench/test_optim.py`` compares them step by step). Why
not ``torch.optim`` itself, measured with torch 2.13 on one CPU core:

- the first ``torch.optim`` optimiser of a process imports ``torch._dynamo``
  (``torch/_compile.py``): 1.2 to 1.6 s of every training job's start-up, which the
  ``train`` rule pays once per job;
- its ``step`` goes through Python wrappers (profiling hooks, dynamo graph breaks, the
  grouping of tensors) costing about 0.3 ms a step, a tenth of a small method's step.

:class:`CosineSchedule` repeats ``torch.optim.lr_scheduler.CosineAnnealingLR``'s
recursive form (not its closed form), so its learning rates are the same floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def fusable(params: list[torch.nn.Parameter]) -> bool:
    """The fused kernels take float tensors on the CPU or a CUDA device."""
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                for p in params)


def adam(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0,
         decoupled: bool = False):
    """A :class:`FusedAdam`, or torch.optim's Adam/AdamW for parameters the fused kernel
    cannot take."""
    if fusable(params):
        return FusedAdam(params, lr=lr, weight_decay=weight_decay, decoupled=decoupled)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay)


class FusedAdam:
    """Adam (L2 weight decay added to the gradient) or, ``decoupled``, AdamW."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float,
                 weight_decay: float = 0.0, decoupled: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        if not fusable(self.params):
            raise ValueError("FusedAdam takes float parameters on the CPU or a CUDA device")
        self.lr, self.weight_decay, self.decoupled = float(lr), float(weight_decay), decoupled
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}

    @property
    def param_groups(self) -> list[dict]:
        """One group, as torch.optim lists it (for code that inspects an optimiser)."""
        return [{"params": self.params, "lr": self.lr, "weight_decay": self.weight_decay,
                 "betas": self.betas, "eps": self.eps}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        groups: dict[tuple, tuple[list, ...]] = {}
        for p in self.params:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients")
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            lists = groups.setdefault((p.device, p.dtype), ([], [], [], [], []))
            for target, value in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"],
                                             state["step"]), strict=True):
                target.append(value)
        kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        for params, grads, exp_avgs, exp_avg_sqs, steps in groups.values():
            torch._foreach_add_(steps, 1)
            kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=self.lr,
                   beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay,
                   eps=self.eps, maximize=False, grad_scale=None, found_inf=None)


class CosineSchedule:
    """``CosineAnnealingLR(optimizer, T_max, eta_min=0)`` for a :class:`FusedAdam`: each
    ``step()`` (once per epoch) sets the optimiser's next learning rate."""

    def __init__(self, optimizer: FusedAdam, t_max: int, eta_min: float = 0.0):
        self.optimizer, self.t_max, self.eta_min = optimizer, int(t_max), float(eta_min)
        self.base_lr, self.last_epoch = optimizer.lr, 0

    def step(self) -> None:
        self.last_epoch += 1
        lr, e, t, low = self.optimizer.lr, self.last_epoch, self.t_max, self.eta_min
        if (e - 1 - t) % (2 * t) == 0:
            lr = lr + (self.base_lr - low) * (1 - math.cos(math.pi / t)) / 2
        else:
            lr = ((1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t))
                  * (lr - low) + low)
        self.optimizer.lr = lr
