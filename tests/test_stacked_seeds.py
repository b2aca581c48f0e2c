"""``benchmarks/stacked_seeds.py``: its verdict (stacking the seeds of a cell does not
bring training closer to the FLOP bound on this CPU) rests on both of its runs doing the
same work. If the stacked run fed a seed another seed's batch, or its one optimiser over
the stacked tensors did not step each seed as that seed's own optimiser does, the two
timings would compare different trainings."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mmpipe.bench.data import BenchData
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from stacked_seeds import _seeds, _sequential, _stacked, step_figures  # noqa: E402


def _tiny() -> BenchData:
    rng = np.random.default_rng(0)
    n = 48
    present = np.stack([rng.random(n) < 0.6, np.ones(n, bool)], axis=1)
    x = {"ct": (rng.normal(size=(n, 12)) * present[:, [0]]).astype(np.float32),
         "clinical": rng.normal(size=(n, 5)).astype(np.float32)}
    return BenchData(subject_id=np.array([f"s{i}" for i in range(n)]),
                     y=np.arange(n) % 2, x=x, present=present,
                     modalities=["ct", "clinical"], n_classes=2)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_the_stacked_run_trains_each_seed_as_its_own_run_does(optimizer):
    data = _tiny()
    mcfg = {"type": "concat_zero", "lr": 1e-3, "optimizer": optimizer}
    n_seeds = 3
    batches = torch.randint(len(data.y), (4, n_seeds, 16),
                            generator=torch.Generator().manual_seed(1))
    seeds = _seeds(mcfg, data, data, n_seeds)
    first_seq = _sequential(seeds, batches)
    first_stacked, stacked = _stacked(_seeds(mcfg, data, data, n_seeds), batches)
    assert first_stacked == pytest.approx(first_seq, abs=1e-6)
    assert len(set(first_seq)) == n_seeds  # each seed its own initial weights and batch
    assert seeds.trained and seeds.lr == 1e-3 and seeds.optimizer_kind == optimizer
    for seed, method in enumerate(seeds.models):
        for name, param in method.named_parameters():
            # bmm and mm round apart, which RMSprop's division by a small running
            # average can lift to 1e-6; a step of another batch or setting moves by ~lr
            torch.testing.assert_close(stacked[f"method.{name}"][seed].detach(), param.detach(),
                                       rtol=1e-4, atol=1e-5)


def test_a_method_vmap_cannot_trace_is_reported_not_timed():
    # MMARE's pairwise fusion stops at the first step no sample reaches: a Python branch
    # on a batched value, which vmap refuses
    data = _tiny()
    figures = step_figures("mmare", {"type": "mmare", "dim": 8, "head": [8]}, data, data,
                           seeds=2, steps=1, repeats=1)
    assert figures.skipped.startswith("vmap cannot run it")
    assert figures.sequential_s == 0.0
