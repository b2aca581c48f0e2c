"""The machine a benchmark ran on, and the limits its figures are read against: the
measured float32 matmul rate (GFLOP/s) on one thread and on all of them, and the
one-thread bandwidth of an elementwise operator by the size of its working set.

    python benchmarks/machine.py
"""

from __future__ import annotations

import bisect
import os
import platform
import time
from collections.abc import Callable

import torch


def describe() -> str:
    """CPU model, cores, memory, torch and the device a run would use."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    gpu = (f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
           else "no CUDA device")
    return (f"{cpu}, {os.cpu_count()} cores{mem}; python {platform.python_version()}, "
            f"torch {torch.__version__}; {gpu}")


def matmul_gflops(threads: int, n: int = 1024, seconds: float = 2.0,
                  device: str = "cpu") -> float:
    """Best-of float32 ``n×n @ n×n`` rate in GFLOP/s (2n³ FLOPs a product) on ``threads``
    CPU threads, or on a CUDA device with TF32 off: the ceiling dense arithmetic reaches
    on this machine, which every other figure is a fraction of."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the docstring's float32, not TF32
    try:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        best, spent = float("inf"), 0.0
        for _ in range(3):
            a @ b  # warm up the kernels and the thread pool
        while spent < seconds:
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device != "cpu":
                torch.cuda.synchronize()
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
        return 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(before)
        torch.backends.cuda.matmul.allow_tf32 = tf32


# bytes an elementwise operator touches: from inside the caches to well beyond them
BANDWIDTH_SIZES = tuple(2**k for k in range(18, 29, 2))  # 256 KiB .. 256 MiB


def elementwise_bandwidth(sizes: tuple[int, ...] = BANDWIDTH_SIZES,
                          seconds: float = 0.3) -> list[tuple[int, float]]:
    """Best-of one-thread rate (GB/s) of ``torch.add(a, b, out=c)`` for each working set
    in ``sizes`` (bytes of the three arrays): what an operator that only streams memory
    reaches here, from the caches at the small sizes and from DRAM at the large ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        curve = []
        for size in sizes:
            n = size // 12
            a, b, c = torch.randn(n), torch.randn(n), torch.empty(n)
            for _ in range(3):
                torch.add(a, b, out=c)
            best, spent = float("inf"), 0.0
            while spent < seconds:
                start = time.perf_counter()
                torch.add(a, b, out=c)
                took = time.perf_counter() - start
                best, spent = min(best, took), spent + took
            curve.append((size, 12 * n / best / 1e9))
        return curve
    finally:
        torch.set_num_threads(before)


def traffic_seconds(curve: list[tuple[int, float]]) -> Callable[[int], float]:
    """``bytes -> seconds``: the least time moving that many bytes takes, at the best
    rate the curve measured for any working set at least as large as the largest
    measured size not above it (below the smallest, the best of all). A floor, not a
    model: it leaves out each call's fixed cost."""
    sizes = [size for size, _ in curve]
    best_from = [max(rate for _, rate in curve[i:]) for i in range(len(curve))]

    def seconds(n_bytes: int) -> float:
        i = max(bisect.bisect_right(sizes, n_bytes) - 1, 0)
        return n_bytes / (best_from[i] * 1e9)

    return seconds


def describe_bandwidth(curve: list[tuple[int, float]]) -> str:
    return ", ".join(f"{size / 2**20:g} MiB {rate:.0f}" for size, rate in curve) + " GB/s"


def main() -> None:
    print(describe())
    for threads in sorted({1, os.cpu_count() or 1}):
        print(f"float32 matmul, {threads} thread(s): {matmul_gflops(threads):.1f} GFLOP/s")
    print(f"elementwise add, 1 thread, by working set: "
          f"{describe_bandwidth(elementwise_bandwidth())}")


if __name__ == "__main__":
    main()
