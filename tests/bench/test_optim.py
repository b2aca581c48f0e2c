"""The trainer's Adam and AdamW make torch.optim's fused update bit for bit, its RMSprop
torch.optim's RMSprop to float rounding, its cosine schedule gives torch's learning rates,
and a training job never imports torch._dynamo."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from mmpipe.bench.optim import CosineSchedule, FusedAdam, FusedRMSprop, adam
from mmpipe.bench.trainer import _optimizer, _scheduler
from mmpipe.methods.base import Phase


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2), nn.Linear(2, 2))


def _train(make, schedule: bool):
    net = _net()
    opt = make(list(net.parameters()))
    sched = (CosineSchedule(opt, 7) if isinstance(opt, FusedAdam)
             else torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)) if schedule else None
    gen = torch.Generator().manual_seed(1)
    lrs = []
    for step in range(12):
        x, y = torch.randn(32, 8, generator=gen), torch.randint(0, 2, (32,), generator=gen)
        opt.zero_grad(set_to_none=True)
        hidden = net[1](net[0](x))
        # the last layer sits out every third step: no gradient, no update, no step count
        out = net[2](hidden) if step % 3 == 0 else net[3](net[2](hidden))
        nn.functional.cross_entropy(out, y).backward()
        opt.step()
        if sched is not None:
            sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return [p.detach().clone() for p in net.parameters()], lrs


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("schedule", [False, True])
def test_fused_adam_is_torch_fused_adam_bit_for_bit(decoupled, schedule):
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ours, our_lrs = _train(lambda ps: FusedAdam(ps, lr=1e-2, weight_decay=1e-3,
                                                decoupled=decoupled), schedule)
    theirs, their_lrs = _train(lambda ps: cls(ps, lr=1e-2, weight_decay=1e-3, fused=True),
                               schedule)
    assert our_lrs == their_lrs
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("schedule", [False, True])
def test_fused_rmsprop_is_torch_rmsprop_to_rounding(weight_decay, schedule):
    ours, our_lrs = _train(lambda ps: FusedRMSprop(ps, lr=1e-2, weight_decay=weight_decay),
                           schedule)
    theirs, their_lrs = _train(lambda ps: torch.optim.RMSprop(ps, lr=1e-2,
                                                              weight_decay=weight_decay),
                               schedule)
    assert our_lrs == their_lrs
    for a, b in zip(ours, theirs, strict=True):
        # the kernel computes (lr * g) / avg, torch lr * (g / avg): an ulp per step
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # the layer that sat out steps moved as torch's did: skipped steps are not updates
    assert not torch.equal(ours[-1], _net()[3].weight.detach())


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_cosine_schedule_ends_at_eta_min_as_torchs(optimizer):
    """DRIM's official scheduler anneals to eta_min 5e-6 (configs/multimodal.yaml); the
    trainer's cosine ended at 0 whatever the recipe said."""
    lrs = {}
    for eta_min in (0.0, 5e-6):
        net = nn.Linear(4, 2)
        phase = Phase("train", net.parameters, optimizer=optimizer, lr=1e-3,
                      schedule="cosine", eta_min=eta_min, max_epochs=30)
        opt = _optimizer(phase, net.parameters())
        sched = _scheduler(phase, opt)
        ref = torch.optim.lr_scheduler.CosineAnnealingLR(
            torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=1e-3), T_max=30, eta_min=eta_min)
        ours, theirs = [], []
        for _ in range(30):
            sched.step()
            ref.step()
            ours.append(opt.param_groups[0]["lr"])
            theirs.append(ref.get_last_lr()[0])
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
        lrs[eta_min] = ours[-1]
    assert lrs[0.0] == pytest.approx(0.0, abs=1e-15) and lrs[5e-6] == pytest.approx(5e-6)


@pytest.mark.parametrize("alpha", [1.0, -0.1])
def test_fused_rmsprop_refuses_an_alpha_outside_0_1(alpha):
    with pytest.raises(ValueError, match="alpha"):
        FusedRMSprop(list(nn.Linear(2, 2).parameters()), lr=1e-3, alpha=alpha)


def test_the_trainer_takes_fused_adam_and_torch_for_what_it_cannot_take():
    net = nn.Linear(4, 2)
    for kind, decoupled in (("adam", False), ("adamw", True)):
        opt = _optimizer(Phase("train", net.parameters, optimizer=kind, schedule="cosine"),
                         net.parameters())
        assert isinstance(opt, FusedAdam) and opt.decoupled is decoupled
        assert isinstance(_scheduler(Phase("train", net.parameters, schedule="cosine"), opt),
                          CosineSchedule)
    assert isinstance(_optimizer(Phase("train", net.parameters, optimizer="rmsprop"),
                                 net.parameters()), FusedRMSprop)
    assert isinstance(_optimizer(Phase("train", net.parameters, optimizer="sgd"),
                                 net.parameters()), torch.optim.SGD)
    meta = nn.Parameter(torch.zeros(3, device="meta"))
    assert isinstance(adam([meta], lr=1e-3), torch.optim.Adam)


TRAIN_IN_A_CHILD = """
import sys
import numpy as np
from mmpipe.bench.data import BenchData
from mmpipe.bench.trainer import fit
from mmpipe.methods import method_class
rng = np.random.default_rng(0)
data = BenchData(subject_id=np.array([f"s{i}" for i in range(40)]), y=rng.integers(0, 2, 40),
                 x={m: rng.normal(size=(40, 6)).astype(np.float32) for m in "ab"},
                 present=np.ones((40, 2), bool), modalities=["a", "b"], n_classes=2)
for kind, optimizer in (("deepsets", "rmsprop"), ("deepsets", "adam"), ("drim", "adamw")):
    method = method_class(kind)(["a", "b"], {"a": (6,), "b": (6,)}, 2)
    fit(method, data, data, {"max_epochs": 2, "optimizer": optimizer, "schedule": "cosine"},
        seed=0)
print("drim-discriminators-stepped" if method._disc_optimizer is not None else "no-step")
print("dynamo" if "torch._dynamo" in sys.modules else "no-dynamo")
"""


def test_a_training_job_never_imports_torch_dynamo():
    """torch.optim's first optimiser imports torch._dynamo, 1.2 to 1.6 s of every
    training job's start-up."""
    out = subprocess.run([sys.executable, "-c", TRAIN_IN_A_CHILD], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["drim-discriminators-stepped", "no-dynamo"]
