"""The machine a benchmark ran on, and the limit its figures are read against: the
measured float32 matmul rate (GFLOP/s) on one thread and on all of them.

    python benchmarks/machine.py
"""

from __future__ import annotations

import os
import platform
import time

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


def main() -> None:
    print(describe())
    for threads in sorted({1, os.cpu_count() or 1}):
        print(f"float32 matmul, {threads} thread(s): {matmul_gflops(threads):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
