"""The floor ``benchmarks/operator_floor.py`` counts for a run: each product by its own
shape at its own best rate, every other operator by the bytes it must move, views and
allocations moving nothing. The stage-2 table's "floor" column is read against it, so a
count that drifted (a view charged as a copy, an in-place update charged twice, a product
counted by the wrong FLOPs) would misstate how far the methods are from the limit."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import operator_floor  # noqa: E402
from operator_floor import FloorCounter, product_flops  # noqa: E402

MIB = 2**20


def _flat_bandwidth(gb_s: float = 10.0):
    return lambda n_bytes: n_bytes / (gb_s * 1e9)


@pytest.mark.parametrize("op,shapes", [
    (torch.mm, [(64, 512), (512, 256)]),
    (torch.addmm, [(256,), (64, 512), (512, 256)]),
    (torch.bmm, [(3, 64, 32), (3, 32, 16)]),
    (torch.baddbmm, [(3, 64, 16), (3, 64, 32), (3, 32, 16)]),
])
def test_product_flops_match_the_flop_counter(op, shapes):
    operands = [torch.randn(s) for s in shapes]
    floor = FloorCounter(_flat_bandwidth(), rate_gflops=100.0)
    with FlopCounterMode(display=False) as counter, floor:
        op(*operands)
    assert len(floor.products) == 1
    ((key, calls),) = floor.products.items()
    assert calls == 1
    assert product_flops(*key) == counter.get_total_flops()
    assert floor.memory_seconds == 0.0  # a product is counted by its arithmetic only


def test_a_transposed_operand_is_its_own_product():
    a, b = torch.randn(64, 128), torch.randn(256, 128)
    floor = FloorCounter(_flat_bandwidth(), rate_gflops=100.0)
    with floor:
        a @ b.t()
        a @ b.t().contiguous()
    # the same shapes, different strides: timed apart, as BLAS runs them apart
    assert len(floor.products) == 2


def test_other_operators_are_charged_their_bytes_once():
    a, b = torch.randn(MIB // 4), torch.randn(MIB // 4)  # 1 MiB each
    seconds_of = _flat_bandwidth()
    floor = FloorCounter(seconds_of, rate_gflops=100.0)
    with floor:
        c = a + b            # two reads, one write
    assert floor.memory_seconds == pytest.approx(seconds_of(3 * MIB))
    with floor:
        c.add_(a)            # in place: two reads and the write back, as ``torch.add``
        c.view(-1, 4).t()    # views move nothing
        torch.empty(MIB)     # an allocation writes nothing
        a * a                # one tensor read twice is one read
    assert floor.memory_seconds == pytest.approx(seconds_of(3 * MIB + 3 * MIB + 2 * MIB))


def test_renamed_views_factories_and_gathers_are_not_charged_what_they_do_not_move():
    seconds_of = _flat_bandwidth()
    x, w = torch.randn(4, 64, 256), torch.randn(256, 256)
    floor = FloorCounter(seconds_of, rate_gflops=100.0)
    with floor:
        x @ w                     # a 3-D @ 2-D: mm and an _unsafe_view of its result
    assert floor.memory_seconds == 0.0
    with floor:
        torch.zeros_like(w)       # writes its output, reads nothing of w
    assert floor.memory_seconds == pytest.approx(seconds_of(256 * 256 * 4))
    big, rows = torch.randn(1000, 256), torch.tensor([1, 5, 7])
    floor = FloorCounter(seconds_of, rate_gflops=100.0)
    with floor:
        big[rows]                 # reads 3 rows of the source, not all 1000
    assert floor.memory_seconds == pytest.approx(seconds_of(2 * 3 * 256 * 4 + 3 * 8))


def test_the_fused_adam_step_reads_four_arrays_and_writes_three():
    params = [torch.nn.Parameter(torch.randn(MIB // 4))]
    params[0].grad = torch.randn(MIB // 4)
    opt = torch.optim.Adam(params, fused=True)
    opt.step()  # the state exists
    seconds_of = _flat_bandwidth()
    floor = FloorCounter(seconds_of, rate_gflops=100.0)
    with floor:
        opt.step()
    adam = seconds_of(7 * MIB)
    # the step counter's own small operators come on top
    assert adam <= floor.memory_seconds < adam * 1.01


def test_an_expanded_tensor_moves_its_storage_not_its_elements():
    row = torch.randn(1, 1024)
    seconds_of = _flat_bandwidth()
    floor = FloorCounter(seconds_of, rate_gflops=100.0)
    with floor:
        row.expand(256, 1024).contiguous()
    assert floor.memory_seconds == pytest.approx(seconds_of(4 * 1024 + 4 * 256 * 1024))


def test_seconds_adds_products_at_their_rate_the_rest_at_the_matmul_rate(monkeypatch):
    a, b = torch.randn(64, 512), torch.randn(512, 256)
    floor = FloorCounter(_flat_bandwidth(), rate_gflops=100.0)
    with floor:
        a @ b
    ((key, _),) = floor.products.items()
    monkeypatch.setitem(operator_floor._BARE, key, 50.0)  # this shape's best: 50 GFLOP/s
    flops = product_flops(*key)
    other = 4e9  # e.g. a convolution's FLOPs in the same run
    assert floor.seconds(flops + other) == pytest.approx(flops / 50e9 + other / 100e9)


def test_a_product_is_timed_alone_at_its_shape():
    key = ("aten::mm", (((32, 64), (64, 1), torch.float32), ((64, 16), (1, 64), torch.float32)))
    rate = operator_floor.bare_matmul_gflops(key, seconds=0.01)
    assert 0 < rate < 1e4
    assert operator_floor._BARE[key] == rate  # measured once a process


def test_products_of_expanded_operands_are_timed_too():
    """``lin(x).sum().backward()`` multiplies an expanded gradient (strides 0, 0)."""
    lin, x = torch.nn.Linear(64, 32), torch.randn(16, 64)
    floor = FloorCounter(_flat_bandwidth(), rate_gflops=100.0)
    with floor:
        lin(x).sum().backward()
    assert any(0 in layout[1] for key in floor.products for layout in key[1])
    assert floor.seconds(0.0) > 0


def test_a_working_set_between_measured_sizes_takes_the_faster_rate():
    """The floor is a lower bound: 17 MiB is priced at the 16 MiB size's rate (cache),
    not at the 64 MiB one's (DRAM)."""
    from machine import traffic_seconds

    seconds = traffic_seconds([(16 * MIB, 80.0), (64 * MIB, 25.0)])
    assert seconds(17 * MIB) == pytest.approx(17 * MIB / 80e9)
    assert seconds(64 * MIB) == pytest.approx(64 * MIB / 25e9)
    assert seconds(1024) == pytest.approx(1024 / 80e9)
