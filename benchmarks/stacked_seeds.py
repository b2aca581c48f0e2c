"""Would training the seeds of a cell together bring stage 2 closer to its FLOP bound?
Measured, on MMIST-ccRCC-sized data, one thread as the ``train`` rule runs.

The stage-2 table (``training_time.py``) finds the small methods' operators other than
the matrix products running at several times their memory floor, and the grid's
CPU-seconds about twice its FLOP bound. If that excess were each call's fixed cost
(dispatch, allocation, Python), stacking the seeds of a cell, so that one call does the
work of ten, would remove most of it. Two measurements test that:

1. **Operator cost by rows.** Six non-product operators the methods run, on a
   1024-wide float32 activation of 1 row (nearly all fixed cost), 64 rows (one batch)
   and 640 rows (ten seeds' batches stacked): microseconds a call, and the rate of the
   least traffic each must move against the elementwise bandwidth of ``machine.py``. A
   cost that grows with the rows is per-element work that stacking keeps.
2. **Training steps.** ``--seeds`` models of a method, each with its own initial
   weights and its own batches, take ``--steps`` optimiser steps of the method's first
   phase as the trainer takes them (its loss, ``backward``, the fused Adam, AdamW or
   RMSprop at the phase's learning rate and weight decay over its parameters, batches of
   the method's size; no class weights, as the trainer's default), the seeds in turn
   at each step; and then as one model with the seeds' parameters stacked
   (``torch.func.stack_module_state``), the loss ``vmap``-ed over them, one optimiser
   over the stacked tensors. Both are run once untimed, then alternately ``--repeats``
   times, the fastest of each kept; printed are their CPU-seconds, the speed-up, and the
   seconds inside the products and inside the other operators (a further run of each
   under ``training_time.OperatorTimer``, whose per-call overhead weighs more on the
   run of more calls, the one-by-one run). The first step's losses of the two are
   compared (printed: their largest difference, float rounding where the loss draws
   nothing at random), so both are seen to time the same work.

Dropout is off in both runs: the project's CPU dropout (``methods.blocks.dropout``)
draws its mask in place into a fresh tensor, which ``vmap`` cannot give each seed its
own draw of. A method ``vmap`` cannot run (a Python branch on a batched value, as
MMARE's pairwise fusion stopping once no sample has another modality), that moves
parameters itself after a step (DRIM's discriminators) or that trains with SGD (not
one fused kernel) is listed with the reason and not timed.

    python benchmarks/stacked_seeds.py [--methods mmare_mean single] [--seeds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from machine import describe, elementwise_bandwidth, traffic_seconds
from operator_floor import MATMUL_OPS
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from training_time import (
    REPO,
    OperatorTimer,
    mmist_sized,
    mmist_splits,
    one_thread,
    run_configs,
    train_settings,
)

from mmpipe.bench.data import BenchData
from mmpipe.bench.optim import adam, rmsprop
from mmpipe.bench.run import build_method
from mmpipe.config import load_config
from mmpipe.methods import method_class
from mmpipe.methods.base import FusionMethod

WIDTH = 1024  # the widest modality (WSI features)
ROWS = (1, 64, 640)
FUSED = ("adam", "adamw", "rmsprop")  # the trainer's optimisers of one kernel each


def _best_of(fn, calls: int = 500, repeats: int = 5) -> float:
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _operator_cases(n: int) -> dict[str, tuple]:
    """Each operator on an ``[n, WIDTH]`` activation, with the bytes it must move."""
    x, w = torch.randn(n, WIDTH), torch.randn(n, WIDTH)
    keep = torch.rand(n, 1) < 0.5
    mat = n * WIDTH * 4
    return {
        "where(keep[B,1], x, 0)": (lambda: torch.where(keep, x, 0.0), 2 * mat + n),
        "x * w": (lambda: x * w, 3 * mat),
        "x + w": (lambda: x + w, 3 * mat),
        "relu(x)": (lambda: torch.relu(x), 2 * mat),
        "layer_norm(x)": (lambda: nn.functional.layer_norm(x, (WIDTH,)), 2 * mat),
        "x.sum(0)": (lambda: x.sum(0), mat + WIDTH * 4),
    }


def operator_costs(rows: tuple[int, ...] = ROWS) -> list[tuple[str, int, float, int]]:
    """(operator, rows, seconds a call, bytes of its least traffic) for six non-product
    operators the small methods run on every batch: masking absent rows with
    ``torch.where``, elementwise products and sums, ReLU, layer norm and a sum over the
    batch (bias gradients)."""
    return [(name, n, _best_of(fn), traffic) for n in rows
            for name, (fn, traffic) in _operator_cases(n).items()]


class _Loss(nn.Module):
    """A method's training loss as a module's forward, so that ``functional_call`` can
    run it on parameters other than the method's own."""

    def __init__(self, method: FusionMethod, loss_fn: Callable):
        super().__init__()
        self.method = method
        self.loss_fn = loss_fn  # the unbound loss of the method's first phase

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.method, x, present, y, None)[0]


@dataclass
class Seeds:
    """A method's seeds ready to train: one model each, and the settings of the method's
    first phase as the trainer would run it."""
    models: list[FusionMethod]
    loss_fn: Callable        # unbound: (method, x, present, y, class_weight) -> (loss, logits)
    trained: set[str]        # names of the parameters the phase's optimiser moves
    lr: float
    weight_decay: float
    optimizer_kind: str      # the phase's: adam | adamw | rmsprop | sgd
    batch_size: int
    x: dict[str, torch.Tensor]
    present: torch.Tensor
    y: torch.Tensor

    def optimizer(self, params: list[torch.Tensor]):
        """The trainer's fused optimiser with the phase's settings (each is elementwise, so
        one over stacked tensors steps each seed's slice as that seed's own would)."""
        if self.optimizer_kind == "rmsprop":
            return rmsprop(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer_kind not in FUSED:
            raise ValueError(f"{self.optimizer_kind}: not timed here (fused optimisers only)")
        return adam(params, lr=self.lr, weight_decay=self.weight_decay,
                    decoupled=self.optimizer_kind == "adamw")


def _seeds(mcfg: dict, data: BenchData, train: BenchData, seeds: int) -> Seeds:
    x = {m: torch.as_tensor(train.x[m], dtype=torch.float32) for m in train.modalities}
    present = torch.as_tensor(train.present, dtype=torch.bool)
    y = torch.as_tensor(train.y, dtype=torch.long)
    models = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        method = build_method(mcfg, data)
        for module in method.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        method.prepare(x, present, y)
        method.train()
        models.append(method)
    cfg = train_settings(models[0])
    phase = next(iter(models[0].phases(cfg)))
    moved = {id(p) for p in phase.parameters()}
    trained = {name for name, p in models[0].named_parameters() if id(p) in moved}
    return Seeds(models, (phase.loss or models[0].loss).__func__, trained, phase.lr,
                 phase.weight_decay, phase.optimizer.lower(),
                 int(cfg["batch_size"]), x, present, y)


def _sequential(seeds: Seeds, batches: torch.Tensor) -> list[float]:
    """Each seed's step in turn, as the trainer takes one; returns the first step's
    losses. ``batches`` is ``[steps, seeds, batch]``."""
    opts = [seeds.optimizer([p for n, p in m.named_parameters() if n in seeds.trained])
            for m in seeds.models]
    first = []
    for step in range(batches.shape[0]):
        for seed, (method, opt) in enumerate(zip(seeds.models, opts, strict=True)):
            idx = batches[step, seed]
            loss, _ = seeds.loss_fn(method, {m: v.index_select(0, idx) for m, v in seeds.x.items()},
                                    seeds.present.index_select(0, idx),
                                    seeds.y.index_select(0, idx), None)
            value = loss.item()
            if step == 0:
                first.append(value)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return first


def _stacked(seeds: Seeds, batches: torch.Tensor) -> tuple[list[float], dict[str, torch.Tensor]]:
    """All seeds' steps at once: their parameters stacked, the loss ``vmap``-ed over them,
    one optimiser over the stacked tensors (elementwise, so each seed's slice
    steps as its own optimiser would step it). Returns the first step's losses and the
    stacked parameters (``"method.<name>"`` -> ``[seeds, *shape]``)."""
    wrappers = [_Loss(m, seeds.loss_fn) for m in seeds.models]
    params, buffers = stack_module_state(wrappers)  # leaves, requires_grad as each parameter's
    base = wrappers[0]  # its own tensors stand aside while functional_call runs

    def one(p, b, xb, pb, yb):
        return functional_call(base, (p, b), (xb, pb, yb))

    losses_of = vmap(one, randomness="different")
    opt = seeds.optimizer([p for k, p in params.items()
                           if k.removeprefix("method.") in seeds.trained])
    first = []
    for step in range(batches.shape[0]):
        idx = batches[step]  # [seeds, batch]
        flat = idx.reshape(-1)
        xb = {m: v.index_select(0, flat).view(*idx.shape, *v.shape[1:])
              for m, v in seeds.x.items()}
        losses = losses_of(params, buffers, xb,
                           seeds.present.index_select(0, flat).view(*idx.shape, -1),
                           seeds.y.index_select(0, flat).view(idx.shape))
        values = losses.tolist()
        if step == 0:
            first = values
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # the seeds' parameters are apart: each gets its own gradient
        opt.step()
    return first, params


@dataclass
class StepFigures:
    name: str
    sequential_s: float = 0.0
    stacked_s: float = 0.0
    sequential_products_s: float = 0.0
    sequential_others_s: float = 0.0
    stacked_products_s: float = 0.0
    stacked_others_s: float = 0.0
    first_loss_difference: float = 0.0
    skipped: str = ""


def method_configs(methods: dict[str, dict], names: list[str] | None) -> dict[str, dict]:
    """The runs of ``training_time.run_configs`` named in ``names`` (all when None), by
    the run's name (``single_wsi``) or the configured one (``single``)."""
    runs = {}
    for key, mcfg in methods.items():
        for name, run in run_configs({key: mcfg}).items():
            if names is None or name in names or key in names:
                runs[name] = run
    known = set(methods) | set(run_configs(methods))
    if names is not None and (unknown := set(names) - known):
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; known: {sorted(known)}")
    return runs


def step_figures(name: str, mcfg: dict, data: BenchData, train: BenchData, seeds: int,
                 steps: int, repeats: int) -> StepFigures:
    figures = StepFigures(name)
    cls = method_class(mcfg["type"])
    if getattr(cls, "kind", "torch") != "torch":
        figures.skipped = "not torch: a scikit-learn fit"
        return figures
    if cls.after_step is not FusionMethod.after_step:
        figures.skipped = "moves parameters itself after each step (after_step)"
        return figures
    setup = _seeds(mcfg, data, train, 1)
    if setup.optimizer_kind not in FUSED:
        figures.skipped = f"trains with {setup.optimizer_kind}, not timed (fused optimisers only)"
        return figures
    batches = torch.randint(len(train.y), (steps, seeds, setup.batch_size),
                            generator=torch.Generator().manual_seed(0))

    def run(kind, timer=None):
        fresh = _seeds(mcfg, data, train, seeds)
        start = time.process_time()
        with timer or contextlib.nullcontext():
            out = kind(fresh, batches)
        first = out[0] if kind is _stacked else out
        return time.process_time() - start, first

    try:  # warms both up; finds a method vmap cannot run
        run(_stacked)
    except RuntimeError as exc:  # vmap's refusals (and torch's missing batching rules)
        reason = str(exc).splitlines()[0].split(". ")[0]  # torch's advice after it is vmap's
        figures.skipped = f"vmap cannot run it: {reason}"
        return figures
    run(_sequential)
    figures.sequential_s = figures.stacked_s = float("inf")
    for _ in range(repeats):
        took, first_seq = run(_sequential)
        figures.sequential_s = min(figures.sequential_s, took)
        took, first_stacked = run(_stacked)
        figures.stacked_s = min(figures.stacked_s, took)
    figures.first_loss_difference = max(abs(a - b) for a, b in
                                        zip(first_seq, first_stacked, strict=True))
    for kind, attr in ((_sequential, "sequential"), (_stacked, "stacked")):
        timer = OperatorTimer()
        run(kind, timer)
        products = sum(v for k, v in timer.seconds.items() if k in MATMUL_OPS)
        setattr(figures, f"{attr}_products_s", products)
        setattr(figures, f"{attr}_others_s", sum(timer.seconds.values()) - products)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=None,
                        help="names in config.yaml's methods (default: all)")
    parser.add_argument("--seeds", type=int, default=10, help="the grid's seeds a cell")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps of each seed")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    one_thread()
    print(describe())
    seconds_of = traffic_seconds(elementwise_bandwidth())
    print(f"\noperators on a [rows, {WIDTH}] float32 activation, one thread")
    print(f"{'operator':26}{'rows':>6}{'us/call':>10}{'us/row':>9}{'of floor':>10}")
    for name, rows, seconds, traffic in operator_costs():
        print(f"{name:26}{rows:6d}{seconds * 1e6:10.1f}{seconds * 1e6 / rows:9.2f}"
              f"{seconds / seconds_of(traffic):9.1f}x")
    cfg = load_config(REPO / "config.yaml")
    data, source = mmist_sized()
    train, _, _ = mmist_splits(data)
    print(f"\ntraining steps: {source}, {len(train.y)} training subjects; {args.seeds} seeds x "
          f"{args.steps} steps of each method's batch size, dropout off; CPU-seconds, fastest "
          f"of {args.repeats}")
    print(f"{'method':28}{'one by one':>11}{'stacked':>9}{'speed-up':>10}"
          f"{'products':>17}{'other ops':>17}{'1st loss diff':>15}")
    for name, mcfg in method_configs(cfg["methods"], args.methods).items():
        f = step_figures(name, mcfg, data, train, args.seeds, args.steps, args.repeats)
        if f.skipped:
            print(f"{name:28}not timed: {f.skipped}")
            continue
        print(f"{name:28}{f.sequential_s:11.2f}{f.stacked_s:9.2f}"
              f"{f.sequential_s / f.stacked_s:9.2f}x"
              f"{f.sequential_products_s:8.2f} ->{f.stacked_products_s:6.2f}"
              f"{f.sequential_others_s:8.2f} ->{f.stacked_others_s:6.2f}"
              f"{f.first_loss_difference:15.1e}", flush=True)


if __name__ == "__main__":
    main()
