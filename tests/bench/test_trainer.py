"""The trainer's optimisers: Adam and AdamW take the fused kernel where it exists, with
the same update as the per-tensor loop."""

import pytest
import torch
from torch import nn

from mmpipe.bench.trainer import _optimizer, adam_implementation
from mmpipe.methods.base import Phase


def _steps(optimizer: str, fused: bool) -> torch.Tensor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    params = list(net.parameters())
    opt = (_optimizer(Phase("train", net.parameters, lr=1e-2, optimizer=optimizer), params)
           if fused else getattr(torch.optim, {"adam": "Adam", "adamw": "AdamW"}[optimizer])(
               params, lr=1e-2, weight_decay=1e-4))
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in params])


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_is_fused_on_the_cpu_with_the_same_update(optimizer):
    net = nn.Linear(4, 2)
    opt = _optimizer(Phase("train", net.parameters, optimizer=optimizer), net.parameters())
    assert opt.defaults["fused"] is True
    # the per-tensor loop and the fused kernel move the weights alike
    assert torch.allclose(_steps(optimizer, fused=True), _steps(optimizer, fused=False),
                          atol=1e-5)


def test_no_fused_kernel_without_parameters_it_can_take():
    assert adam_implementation([]) == {}
    meta = nn.Parameter(torch.zeros(3, device="meta"))
    assert adam_implementation([meta]) == {}
