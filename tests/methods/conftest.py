"""Shared fixtures and invariance checks for fusion-method tests.

Fixtures returning functions (pytest's importlib mode cannot import a conftest):

- ``make_batch(shapes, batch=..., n_classes=..., seed=...)`` → ``(x, present, y)``: random
  features, zeros where absent, every row with at least one modality, every modality
  both present and absent somewhere, and one complete row.
- ``batch`` → a ready ``(x, present, y)`` over ``SHAPES`` (small vector modalities).
- ``separable(shapes, n=..., n_classes=..., seed=..., ...)`` → ``(x, present, y)``: a
  learnable problem (class-conditional Gaussian features, random presence, every row with
  at least one modality) for the training tests.
- ``bench_data(x, present, y, tag=...)`` → the same tensors as a ``BenchData`` for the
  shared trainer.
- ``assert_masked_values_ignored(method, x, present)``: large random values written in the
  absent entries must leave the output unchanged (eval mode, and train mode under the
  same random seed).
- ``assert_present_values_used(method, x, present)``: the opposite sanity check, so a
  method that ignores everything does not pass the first one vacuously.
- ``assert_permutation_invariant(method, x, present)``: relabelling the modality axis in
  another order (``present`` columns permuted accordingly) leaves the output unchanged.
  The relabelled copy is a deep copy with ``modalities`` reordered; a method whose
  parameters are indexed by modality position (not only keyed by name) must define
  ``reorder_modalities(order)`` to move them (MMARE does).
- ``assert_permutation_dependent(...)``: the same relabelling must change the output
  (for order-dependent methods, e.g. MMARE's pairwise fusion).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping

import numpy as np
import pytest
import torch

from mmpipe.bench.data import BenchData

# small vector modalities with distinct widths (one equal to the MMARE test width)
SHAPES = {"ct": (16,), "mri": (12,), "wsi": (24,), "clinical": (8,)}
N_CLASSES = 3


def make_batch(shapes: dict[str, tuple[int, ...]], batch: int = 32, n_classes: int = N_CLASSES,
               seed: int = 0, p_present: float = 0.6):
    gen = torch.Generator().manual_seed(seed)
    modalities = list(shapes)
    present = torch.rand(batch, len(modalities), generator=gen) < p_present
    present[0] = True                                  # one complete row
    for j in range(len(modalities)):                   # each modality absent somewhere
        present[1 + j % (batch - 1), j] = False
    for i in range(batch):                             # at least one modality per row
        if not present[i].any():
            present[i, int(torch.randint(len(modalities), (1,), generator=gen))] = True
    x = {}
    for j, m in enumerate(modalities):
        v = torch.randn(batch, *shapes[m], generator=gen)
        x[m] = v * present[:, j].view(-1, *([1] * len(shapes[m])))
    y = torch.randint(n_classes, (batch,), generator=gen)
    return x, present, y


def separable(shapes: dict[str, tuple[int, ...]], n: int = 96, n_classes: int = N_CLASSES,
              seed: int = 0, p_present: float = 0.7, complete: bool = False,
              missing: Mapping[str, float] | None = None, mean_scale: float = 2.0,
              noise: float = 0.5, means_seed: int | None = None):
    """Class-conditional Gaussian features: ``x[m] = mean[m][y] + noise * N(0, 1)``, zeros
    where absent, with ``y = arange(n) % n_classes`` and every class mean drawn as
    ``mean_scale * N(0, 1)``.

    Presence: each entry present with probability ``p_present``, then one random modality
    per row set present (so every row has at least one). ``complete=True`` makes every
    modality present; ``missing={m: p}`` makes every modality present except each listed
    one, absent with probability ``p`` (the same draws are taken first in all three cases).

    ``means_seed=None`` draws the class means from the ``seed`` generator, so two seeds give
    two problems (split one draw to get train and validation sets); an int draws them from
    their own generator, so draws with different ``seed`` share the class means (train and
    validation as two draws of one distribution).
    """
    if complete and missing is not None:
        raise ValueError("complete and missing are exclusive")
    gen = torch.Generator().manual_seed(seed)
    means_gen = gen if means_seed is None else torch.Generator().manual_seed(means_seed)
    modalities = list(shapes)
    y = torch.arange(n) % n_classes
    present = torch.rand(n, len(modalities), generator=gen) < p_present
    present[torch.arange(n), torch.randint(len(modalities), (n,), generator=gen)] = True
    if complete or missing is not None:
        present[:] = True
    for m, p in (missing or {}).items():
        present[:, modalities.index(m)] = torch.rand(n, generator=gen) >= p
    x = {}
    for j, (m, s) in enumerate(shapes.items()):
        means = mean_scale * torch.randn(n_classes, *s, generator=means_gen)
        v = means[y] + noise * torch.randn(n, *s, generator=gen)
        x[m] = v * present[:, j].view(-1, *([1] * len(s)))
    return x, present, y


def bench_data(x, present, y, tag: str = "s", n_classes: int | None = None) -> BenchData:
    """``BenchData`` from ``(x, present, y)`` tensors (or arrays), subjects ``{tag}_{i}``;
    ``n_classes`` defaults to ``max(y) + 1``."""
    def arr(v):
        return v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

    y = arr(y)
    return BenchData(np.array([f"{tag}_{i}" for i in range(len(y))]), y,
                     {m: arr(v).astype(np.float32) for m, v in x.items()}, arr(present),
                     list(x), int(y.max()) + 1 if n_classes is None else n_classes)


def _run(method, x, present, train: bool, seed: int = 0) -> torch.Tensor:
    method.train(train)
    torch.manual_seed(seed)
    with torch.no_grad():
        return method(x, present)


def _perturb(x, present, modalities, absent: bool, seed: int = 1):
    """Copy of ``x`` with large random values in the absent (or present) rows."""
    gen = torch.Generator().manual_seed(seed)
    out, changed = {}, 0
    for j, m in enumerate(modalities):
        rows = ~present[:, j] if absent else present[:, j]
        noise = 1e3 * torch.randn(x[m].shape, generator=gen)
        mask = rows.view(-1, *([1] * (x[m].dim() - 1)))
        out[m] = torch.where(mask, noise, x[m])
        changed += int(rows.sum())
    return out, changed


def check_masked_values_ignored(method, x, present, atol: float = 1e-6) -> None:
    present = present.bool()
    was_training = method.training
    perturbed, changed = _perturb(x, present, method.modalities, absent=True)
    assert changed > 0, "the batch has no absent entry: the check would be vacuous"
    for train in (False, True):
        ref = _run(method, x, present, train)
        out = _run(method, perturbed, present, train)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref, rtol=0, atol=atol,
                                   msg=f"absent values changed the output (train={train})")
    method.train(was_training)


def check_present_values_used(method, x, present) -> None:
    present = present.bool()
    was_training = method.training
    perturbed, _ = _perturb(x, present, method.modalities, absent=False)
    ref = _run(method, x, present, False)
    out = _run(method, perturbed, present, False)
    assert not torch.allclose(out, ref), "the output ignores the present values"
    method.train(was_training)


def relabelled(method, order: list[str]):
    """Deep copy of ``method`` with its modality axis in ``order``."""
    clone = copy.deepcopy(method)
    if hasattr(clone, "reorder_modalities"):
        clone.reorder_modalities(list(order))
    else:
        clone.modalities = list(order)
    return clone


def _orders(modalities: list[str], limit: int = 6):
    perms = [list(p) for p in itertools.permutations(modalities) if list(p) != modalities]
    return perms[:limit]


def check_permutation_invariant(method, x, present, atol: float = 1e-5) -> None:
    present = present.bool()
    ref = _run(method, x, present, False)
    for order in _orders(method.modalities):
        clone = relabelled(method, order)
        cols = [method.modalities.index(m) for m in order]
        out = _run(clone, x, present[:, cols], False)
        torch.testing.assert_close(out, ref, rtol=0, atol=atol,
                                   msg=f"output changed with modality order {order}")


def check_permutation_dependent(method, x, present) -> None:
    present = present.bool()
    ref = _run(method, x, present, False)
    for order in _orders(method.modalities):
        clone = relabelled(method, order)
        cols = [method.modalities.index(m) for m in order]
        if not torch.allclose(_run(clone, x, present[:, cols], False), ref, atol=1e-5):
            return
    raise AssertionError("no modality order changed the output")


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Method tests use tiny tensors: intra-op threads only add overhead, and on a machine
    whose cores are shared with other jobs they slowed fits down by 10-100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shapes():
    return dict(SHAPES)


@pytest.fixture(name="make_batch")
def make_batch_fixture():
    return make_batch


@pytest.fixture
def batch():
    return make_batch(SHAPES)


@pytest.fixture(name="separable")
def separable_fixture():
    return separable


@pytest.fixture(name="bench_data")
def bench_data_fixture():
    return bench_data


@pytest.fixture
def assert_masked_values_ignored():
    return check_masked_values_ignored


@pytest.fixture
def assert_present_values_used():
    return check_present_values_used


@pytest.fixture
def assert_permutation_invariant():
    return check_permutation_invariant


@pytest.fixture
def assert_permutation_dependent():
    return check_permutation_dependent
