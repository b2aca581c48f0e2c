"""The least time a training run's operators take on this machine, counted operator by
operator while the run goes (:class:`FloorCounter`):

- a matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``): its FLOPs at the best rate
  the same product reaches here alone (same shapes and strides, warm operands, best of
  repeated calls: :func:`bare_matmul_gflops`). A product of 64 rows does not reach the
  1024×1024 product's rate on any BLAS; this is the rate it does reach;
- any other operator: the bytes it must move at the least (its tensor arguments read
  once, the arguments it writes and its new outputs written once; a gather reads from
  its source no more than it outputs; a view, an allocation and a ``*_like``/``new_*``
  factory's arguments move nothing) at the machine's measured elementwise bandwidth for
  a working set of that size (:func:`machine.traffic_seconds`);
- convolutions (any arithmetic the FLOP counter counts beyond the products): their
  FLOPs at the 1024×1024 product's rate.

Everything a run spends beyond the floor is each call's fixed cost (dispatch,
allocation, autograd's bookkeeping, Python), products that run below their own best,
traffic beyond one pass, and kernels slower per element than the bandwidth allows
(torch's CPU ``where``, layer norm, a sum over rows: ``stacked_seeds.py`` times them by
rows). Fusing operators could remove the fixed cost and the extra traffic; stacking the
seeds of a cell only the fixed cost, and ``stacked_seeds.py`` measures what it adds.
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


# operators that read from their first tensor argument only the rows they output
GATHERS = {"aten::index", "aten::index_select", "aten::embedding", "aten::gather",
           "aten::take", "aten::nll_loss_forward"}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes one read or write of ``t`` moves at the least: its distinct elements (an
    axis of stride 0 repeats them), and no more than its storage."""
    distinct = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            distinct *= size
    return min(distinct * t.element_size(), t.untyped_storage().nbytes())


def _strided_tensors(tree) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor)
            and leaf.layout == torch.strided and leaf.device.type == "cpu"]


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
        # random values laid out as the run's operands, stride-0 axes included
        operands = [torch.randn(1 + sum((n - 1) * st for n, st in zip(shape, strides,
                                                                       strict=True)))
                    .to(dtype).as_strided(shape, strides)
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
        if (name in PRODUCTS and not kwargs
                and len(_strided_tensors(args)) == len(args)):
            key = (name, tuple((tuple(a.shape), tuple(a.stride()), a.dtype) for a in args))
            self.products[key] = self.products.get(key, 0) + 1
        elif name not in MATMUL_OPS and not func.is_view and "empty" not in name:
            self.memory_seconds += self.traffic_seconds(self._bytes(func, name, args,
                                                                    kwargs or {}, out))
        return out

    @staticmethod
    def _bytes(func, name: str, args, kwargs, out) -> int:
        """Reads of the arguments, writes of the written arguments and new outputs."""
        inputs = _strided_tensors((args, kwargs))
        storages = {t.untyped_storage().data_ptr() for t in inputs}
        outputs = _strided_tensors(out)
        new = [t for t in outputs if t.untyped_storage().data_ptr() not in storages]
        if not new and outputs and not func._schema.is_mutable:
            return 0  # a view under another name (_unsafe_view, alias): nothing moves
        if name.endswith("_like") or name.startswith("aten::new_"):
            inputs = []  # a factory reads its argument's shape, not its values
        reads = {(t.data_ptr(), tensor_bytes(t)) for t in inputs}
        if name in GATHERS and inputs:
            source, produced = inputs[0], sum(tensor_bytes(t) for t in new)
            reads.discard((source.data_ptr(), tensor_bytes(source)))
            reads.add((source.data_ptr(), min(tensor_bytes(source), produced)))
        written = {(t.data_ptr(), tensor_bytes(t)) for arg, value in
                   zip(func._schema.arguments, args, strict=False)
                   if arg.alias_info is not None and arg.alias_info.is_write
                   # the fused optimisers' schemas mark the gradients written: only an
                   # unscaling (grad_scale) writes them
                   and not (arg.name == "grads" and kwargs.get("grad_scale") is None)
                   for t in _strided_tensors(value)}
        written |= {(t.data_ptr(), tensor_bytes(t)) for t in new}
        return sum(n for _, n in reads) + sum(n for _, n in written)

    def seconds(self, run_flops: float) -> float:
        products = sum(calls * product_flops(*key) for key, calls in self.products.items())
        product_seconds = sum(calls * product_flops(*key) / (bare_matmul_gflops(key) * 1e9)
                              for key, calls in self.products.items())
        return (product_seconds + max(0.0, run_flops - products) / (self.rate * 1e9)
                + self.memory_seconds)
