"""The trainer's Adam, AdamW and RMSprop, and their cosine schedule, without ``torch.optim``.

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

:class:`FusedRMSprop` makes ``torch.optim.RMSprop``'s update (no momentum, not centred:
HAM's recipe) with the same fused Adam kernel, up to float rounding: torch has no fused
RMSprop, and its per-tensor update (six passes over every parameter, a new tensor for
the square root) was a fifth of a ShaSpec-style run's CPU under the profiler and the
most of HAM's "other operators" (``benchmarks/training_time.py``); timed without the
profiler, HAM's run went from 2.1 to 1.9 CPU-s with this one.

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


def rmsprop(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0):
    """A :class:`FusedRMSprop`, or torch.optim's RMSprop for parameters the fused kernel
    cannot take."""
    if fusable(params):
        return FusedRMSprop(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)


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
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {
                    "step": self._new_step(p),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            lists = groups.setdefault((p.device, p.dtype), ([], [], [], [], []))
            for target, value in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"],
                                             state["step"]), strict=True):
                target.append(value)
        kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        for params, grads, exp_avgs, exp_avg_sqs, steps in groups.values():
            self._advance(steps)
            kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=self.lr,
                   beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay,
                   eps=self.eps, maximize=False, grad_scale=None, found_inf=None)

    def _new_step(self, p: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float32, device=p.device)

    def _advance(self, steps: list[torch.Tensor]) -> None:
        torch._foreach_add_(steps, 1)


# Adam's second bias correction 1 - beta2**step is 1.0 in double for every beta2 in [0, 1)
# at this step (pow underflows to 0), so the kernel divides by sqrt(1) and adds eps as
# RMSprop does; the kernel only reads the step, FusedRMSprop never advances it.
_PAST_BIAS_CORRECTION = 1e30


class FusedRMSprop(FusedAdam):
    """RMSprop (``alpha``, ``eps``, L2 ``weight_decay`` added to the gradient, no momentum,
    not centred) as Adam with beta1 = 0 (the first moment is the gradient, its bias
    correction 1) and beta2 = ``alpha`` at a step past the second bias correction:
    ``p -= lr * g / (sqrt(v) + eps)``, ``v = alpha * v + (1 - alpha) * g * g``, torch's
    RMSprop update; equal to ``torch.optim.RMSprop`` to float rounding (the kernel
    multiplies by the learning rate before dividing), ``tests/bench/test_optim.py``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if not 0.0 <= alpha < 1.0:  # inside [0, 1), alpha ** 1e30 is 0.0 in double
            raise ValueError(f"RMSprop's alpha must be in [0, 1), got {alpha}")
        super().__init__(params, lr=lr, weight_decay=weight_decay, decoupled=False,
                         betas=(0.0, alpha), eps=eps)

    def _new_step(self, p: torch.Tensor) -> torch.Tensor:
        return torch.full((), _PAST_BIAS_CORRECTION, dtype=torch.float32, device=p.device)

    def _advance(self, steps: list[torch.Tensor]) -> None:
        pass

    @property
    def param_groups(self) -> list[dict]:
        return [{"params": self.params, "lr": self.lr, "weight_decay": self.weight_decay,
                 "alpha": self.betas[1], "eps": self.eps}]


class CosineSchedule:
    """``CosineAnnealingLR(optimizer, T_max, eta_min=0)`` for a :class:`FusedAdam` (or
    :class:`FusedRMSprop`): each
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
