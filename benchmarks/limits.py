"""Every stage against its physical limit, in one table: the machine, its matmul rate,
each encoder's pipeline next to its bare forward (and a throttled reader), each job's
start-up, and each method's training FLOPs, CPU-seconds, share of the matmul rate, its
operators' floor (``operator_floor.py``) and disk, with the MMIST-ccRCC grid's estimate.

    python benchmarks/limits.py [--subjects 64] [--repeats 3] [--methods mmare deepsets]
                                [--skip methods] [--precision bfloat16]
                                [--loader-workers 8] [--loader-processes] [--threads 8]
                                [--volume-input med3d_resnet18]

Sections (each also runs alone): ``machine.py``, ``encoder_throughput.py``,
``startup.py``, ``training_time.py``. Stage 1 runs on the generated demo cohort
(``--subjects``), stage 2 on MMIST-ccRCC's stores when ``results/mmist_ccrcc`` holds
them, else on synthetic features of its size. An encoding job runs ``--repeats`` times,
its ratio the median of each run against the bare forward timed just before it; a
start-up is the median of as many; the throttled reader and each
method's training are one run each: on a shared machine read the ratios, not the absolute
rates.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads this once

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from encoder_throughput import (  # noqa: E402
    add_stage1_arguments,
    as_configured,
    set_precision,
    set_volume_input,
)
from machine import (  # noqa: E402
    describe,
    describe_bandwidth,
    elementwise_bandwidth,
    matmul_gflops,
)

from mmpipe.config import load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("encoders", "startup", "methods")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stage1_arguments(parser)
    parser.add_argument("--methods", nargs="*", default=None, help="default: every method")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    start = time.perf_counter()

    from mmpipe.encoders.device import resolve_device

    device = resolve_device(args.device)
    print(f"# mmpipe limits: {describe()}")
    threads = os.cpu_count() or 1
    rate1 = matmul_gflops(1)
    print(f"float32 matmul (1024²): {rate1:.1f} GFLOP/s on 1 thread, "
          f"{matmul_gflops(threads):.1f} on {threads}"
          + (f"; {matmul_gflops(1, device='cuda') / 1e3:.1f} TFLOP/s on {device}"
             if device.type == "cuda" else ""))
    cfg = load_config(REPO / "config.yaml")
    set_precision(cfg, args.precision)
    set_volume_input(cfg, args.volume_input)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mmpipe-limits-"))

    if "encoders" not in args.skip or "startup" not in args.skip:
        from encoder_throughput import (
            prepare_demo,
            print_encoders,
            print_reader_ceiling,
            print_throttled,
        )

        workdir, cohort_dir = prepare_demo(cfg, args.subjects, workdir)
    if "encoders" not in args.skip:
        torch.set_num_threads(args.threads)
        print(f"\n## Stage 1: encoders on the demo cohort ({args.subjects} subjects), "
              f"device {device}, {torch.get_num_threads()} torch thread(s) as the encode "
              f"rule, loader workers {as_configured(args.loader_workers)}"
              f"{' (processes for volumes)' if args.loader_processes else ''}, precision "
              f"{as_configured(args.precision)}, volume input {as_configured(args.volume_input)}")
        print_encoders(cfg, cohort_dir, workdir, device, args.repeats, args.loader_workers,
                       args.loader_processes)
        print_throttled(cfg, cohort_dir, workdir, device)
        print_reader_ceiling(cfg, cohort_dir, workdir, device, args.repeats)
    if "startup" not in args.skip:
        from startup import print_startup

        print("\n## Job start-up (process start to the job's first subject or epoch)")
        print_startup({**cfg, "device": "cpu"}, cohort_dir, workdir, repeats=args.repeats)
    if "methods" not in args.skip:
        from training_time import feature_set_figures, grid_tuning, one_thread, print_grid

        one_thread()
        bandwidth = elementwise_bandwidth()
        print("\n## Stage 2: one training run per method on each feature set the grid runs "
              "it on (one thread, "
              f"each method against the matmul rate timed after its run and, for the "
              f"other operators, an elementwise bandwidth by working set of "
              f"{describe_bandwidth(bandwidth)})")
        methods = {k: v for k, v in cfg["methods"].items()
                   if args.methods is None or k in args.methods}
        rows, sources = feature_set_figures(cfg, methods, None, bandwidth, grid_tuning(cfg))
        print(f"data of every feature set timed: {sources}")
        print_grid(rows, cfg)
    print(f"\n(benchmark took {time.perf_counter() - start:.0f} s; work files in {workdir})")


if __name__ == "__main__":
    main()
