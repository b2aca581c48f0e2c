"""Would flushing denormal floats to zero speed stage 2's training on this CPU?

Arithmetic on denormal (subnormal) float32 values, below about 1.2e-38, takes a slow
microcode path on x86 cores; training can make them where Adam's moments decay or a
softmax's tail underflows. ``torch.set_flush_denormal(True)`` sets the core's
flush-to-zero and denormals-are-zero modes, which change a run's numbers only where such
values arise. Each method's run as ``training_time.py`` times it (one thread, the
MMIST-ccRCC-sized data, seed 0), with the modes off and on in alternation, ``--repeats``
times each; printed: the fastest CPU-seconds of each and their ratio (below 1: flushing
is faster).

    python benchmarks/denormals.py [--methods mmare drim] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from machine import describe
from training_time import REPO, _fit, mmist_sized, mmist_splits, one_thread, run_configs

from mmpipe.bench.trainer import NotTrainable
from mmpipe.config import load_config
from mmpipe.methods import method_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    one_thread()
    data, source = mmist_sized()
    train, val, _ = mmist_splits(data)
    configs = run_configs(load_config(REPO / "config.yaml")["methods"])
    print(describe())
    print(f"data: {source}; one thread; {args.repeats} alternating runs each, fastest kept")
    print(f"{'method':28s} {'off CPU s':>9s} {'flush CPU s':>11s} {'flush/off':>9s}")
    # the one-off imports (dynamo with the first optimiser, each method's libraries)
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    for mcfg in configs.values():
        method_class(mcfg["type"])
    for name, mcfg in configs.items():
        if args.methods is not None and name not in args.methods:
            continue
        seconds: dict[bool, list[float]] = {False: [], True: []}
        try:
            for _ in range(args.repeats):
                for flush in (False, True):
                    torch.set_flush_denormal(flush)
                    cpu = time.process_time()
                    _fit(mcfg, data, train, val)
                    seconds[flush].append(time.process_time() - cpu)
        except NotTrainable as err:
            print(f"{name:28s} not trainable here: {err}")
            continue
        finally:
            torch.set_flush_denormal(False)
        off, on = min(seconds[False]), min(seconds[True])
        print(f"{name:28s} {off:9.2f} {on:11.2f} {on / off:9.2f}", flush=True)


if __name__ == "__main__":
    main()
