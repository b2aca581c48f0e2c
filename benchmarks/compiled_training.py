"""Would ``torch.compile`` bring stage 2 closer to its FLOP bound? Measured, on
MMIST-ccRCC-sized data, one thread as the ``train`` rule runs.

The stage-2 table (``training_time.py``) puts the small methods' distance to the bound
in operators other than the matrix products (elementwise work, layer norms, masking),
each a separate pass over memory. A compiler that fuses them into one loop would cut that
traffic. Per method, a fit of ``--epochs`` epochs (the method's recipe, seed 0, no early
stop) runs eagerly and then with the method's losses compiled (``torch.compile`` of the
method's ``loss`` and of each phase's own loss, inductor's default mode; the backward is
compiled with it), each twice in one process: printed are the CPU-seconds of the
eager fit (the faster of two), of the first compiled fit (the compilation included, as
every training job would pay it: one job is one process) and of the second (the graphs
cached in the process: the steady state), the graph breaks (where the compiler hands
back to Python), and the largest difference between the eager and the compiled fit's
weights (the compiled kernels round differently, so a seed's numbers are no longer
the eager path's). The compiler's workers run in the process (``compile_threads = 1``),
so their CPU is counted, as one thread of a job would spend it.

    python benchmarks/compiled_training.py [--methods late_fusion mmare] [--epochs 30]
"""

from __future__ import annotations

import argparse
import logging
import resource

import torch
from machine import describe
from training_time import (
    REPO,
    mmist_sized,
    mmist_splits,
    one_thread,
    run_configs,
    train_settings,
)

from mmpipe.bench.run import build_method
from mmpipe.bench.trainer import fit
from mmpipe.config import load_config

DEFAULT_METHODS = ("mmare", "mmare_mean", "late_fusion", "modality_dropout", "deepsets",
                   "featimpute", "hypermm_e2e", "drim")


def _cpu() -> float:
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _compiled(method):
    """``method`` with its loss and every phase's own loss compiled."""
    method.loss = torch.compile(method.loss)
    phases = method.phases

    def compiled_phases(cfg):
        out = list(phases(cfg))
        for phase in out:
            if phase.loss is not None:
                phase.loss = torch.compile(phase.loss)
        return out

    method.phases = compiled_phases
    return method


def _fit(mcfg, data, train, val, epochs: int, compiled: bool):
    torch.manual_seed(0)  # as run_seed: the same initial weights either way
    method = build_method(mcfg, data)
    if compiled:
        method = _compiled(method)
    settings = {**train_settings(method), "max_epochs": epochs, "patience": 10**6}
    start = _cpu()
    fit(method, train, val, settings, seed=0)
    return _cpu() - start, {k: v.detach().clone() for k, v in method.state_dict().items()
                            if torch.is_tensor(v)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    one_thread()
    torch._inductor.config.compile_threads = 1
    import torch._dynamo.utils as dynamo_utils

    print(describe())
    methods = run_configs(load_config(REPO / "config.yaml")["methods"])
    data, source = mmist_sized()
    train, val, _ = mmist_splits(data)
    print(f"\n{source}; {args.epochs} epochs of each method's recipe, seed 0; CPU-seconds")
    print(f"{'method':28}{'eager':>8}{'compiled 1st':>14}{'compiled 2nd':>14}"
          f"{'2nd/eager':>11}{'breaks':>8}{'max |dw|':>11}")
    for name in args.methods:
        mcfg = methods[name]
        eager = min(_fit(mcfg, data, train, val, args.epochs, False)[0] for _ in range(2))
        _, eager_w = _fit(mcfg, data, train, val, args.epochs, False)
        torch._dynamo.reset()
        dynamo_utils.counters.clear()
        first, compiled_w = _fit(mcfg, data, train, val, args.epochs, True)
        second, _ = _fit(mcfg, data, train, val, args.epochs, True)
        breaks = sum(dynamo_utils.counters["graph_break"].values())
        diff = max(float((eager_w[k] - compiled_w[k]).abs().max()) for k in eager_w)
        print(f"{name:28}{eager:8.2f}{first:14.2f}{second:14.2f}{second / eager:10.2f}x"
              f"{breaks:8d}{diff:11.1e}", flush=True)


if __name__ == "__main__":
    main()
