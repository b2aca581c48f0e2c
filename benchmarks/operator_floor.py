"""The least time a training run's operators take on this machine, counted operator by
operator while the run goes (:class:`FloorCounter`):

- a matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``): its FLOPs at the best rate
  the same product reaches here alone (same shapes and strides, warm operands, best of
  repeated calls: :func:`bare_matmul_gflops`). A product of 64 rows does not reach the
  1024×1024 product's rate on any BLAS; this is the rate it does reach;
- any other operator: the bytes it must move at the least (its tensor arguments read
  once, its outputs that are not arguments written once; a view moves nothing) at the
  machine's measured elementwise bandwidth for a working set of that size
  (:func:`machine.traffic_seconds`);
- convolutions and fused attention: their FLOPs at the 1024×1024 product's rate.

Everything a run spends beyond the floor is fixed cost per call (dispatch, allocation,
autograd's bookkeeping, Python), products that run below their own best, and traffic
beyond one pass: what fewer, larger operators (fusion, seeds trained together) could
remove, and no more.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# every operator whose cost is its arithmetic (the rest move memory)
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::convolution",
              "aten::mkldnn_convolution", "aten::convolution_backward",
              "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward"}
# the products timed alone, with the operands each takes (addmm's first is the bias)
PRODUCTS = {"aten::mm": (0, 1), "aten::addmm": (1, 2), "aten::bmm": (0, 1),
            "aten::baddbmm": (1, 2)}

Layout = tuple[tuple[int, ...], tuple[int, ...], torch.dtype]  # shape, strides, dtype
ProductKey = tuple[str, tuple[Layout, ...]]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes one read or write of ``t`` moves at the least: its elements, or its storage
    when that is smaller (an expanded tensor repeats elements)."""
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


def product_flops(name: str, layouts: tuple[Layout, ...]) -> int:
    """2·M·K·N per product (times the batch for ``bmm``), as ``torch.utils.flop_counter``."""
    a, b = (layouts[i][0] for i in PRODUCTS[name])
    batch = a[0] if len(a) == 3 else 1
    return 2 * batch * a[-2] * a[-1] * b[-1]


_BARE: dict[ProductKey, float] = {}


def bare_matmul_gflops(key: ProductKey, seconds: float = 0.05) -> float:
    """Best-of rate (GFLOP/s) of one product alone on operands of the key's shapes,
    strides and dtypes, on the current thread count; measured once per key in a process."""
    if key not in _BARE:
        name, layouts = key
        func = getattr(torch.ops.aten, name.removeprefix("aten::")).default
        operands = [torch.empty_strided(shape, strides, dtype=dtype).normal_()
                    for shape, strides, dtype in layouts]
        for _ in range(2):
            func(*operands)
        best, spent, calls = float("inf"), 0.0, 0
        while spent < seconds and calls < 1000:
            start = time.perf_counter()
            func(*operands)
            took = time.perf_counter() - start
            best, spent, calls = min(best, took), spent + took, calls + 1
        _BARE[key] = product_flops(name, layouts) / best / 1e9
    return _BARE[key]


class FloorCounter(TorchDispatchMode):
    """Counts a run's floor as it goes (see the module): products by shape and the other
    operators' least memory time. Read :meth:`seconds` after the run, with the run's
    FLOPs from ``torch.utils.flop_counter``; it times the products it saw alone, so call
    it outside the mode."""

    def __init__(self, traffic_seconds: Callable[[int], float], rate_gflops: float):
        super().__init__()
        self.traffic_seconds = traffic_seconds
        self.rate = rate_gflops
        self.products: dict[ProductKey, int] = {}  # calls of each product
        self.memory_seconds = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        if name in PRODUCTS and not kwargs and all(isinstance(a, torch.Tensor) for a in args):
            key = (name, tuple((tuple(a.shape), tuple(a.stride()), a.dtype) for a in args))
            self.products[key] = self.products.get(key, 0) + 1
        # convolutions and fused attention count by their FLOPs (seconds); an empty
        # tensor is allocated, not written
        elif name not in MATMUL_OPS and not func.is_view and not name.startswith("aten::empty"):
            seen: set[tuple[int, int]] = set()
            for leaf in tree_leaves((args, kwargs or {})) + tree_leaves(out):
                if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu":
                    seen.add((leaf.data_ptr(), tensor_bytes(leaf)))
            self.memory_seconds += self.traffic_seconds(sum(n for _, n in seen))
        return out

    def seconds(self, run_flops: float) -> float:
        products = sum(calls * product_flops(*key) for key, calls in self.products.items())
        product_seconds = sum(calls * product_flops(*key) / (bare_matmul_gflops(key) * 1e9)
                              for key, calls in self.products.items())
        return (product_seconds + max(0.0, run_flops - products) / (self.rate * 1e9)
                + self.memory_seconds)
