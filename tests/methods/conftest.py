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
- ``bench_draws(shapes, seeds=(0, 1), means_seed=0, **kw)`` → one ``BenchData`` per seed
  from ``separable(shapes, seed=seed, means_seed=means_seed, **kw)``, subjects
  ``s{seed}_{i}``: train and validation sets as draws of one problem.
- ``fit_and_score(method, train, val, cfg, log_path=...)`` → balanced accuracy on ``val``
  after a single-phase fit with the shared trainer that runs all ``cfg["max_epochs"]``
  epochs (its predicted probabilities checked finite).
- ``assert_attention_masked(weights, tokens)``: attention maps ``[B, heads, N, N]`` put
  exactly zero weight on absent keys from present queries, and the summary (first) token's
  row positive weight on every present token.
- ``assert_no_modality_rows_identical(method, x)`` → the eval-mode output with no modality
  present, after checking it finite and the same on every row (nothing of ``x`` reaches it).
- ``assert_masked_values_ignored(method, x, present)``: large random values, NaN or
  infinity written in the absent entries must leave the output unchanged (eval mode, and
  train mode under the same random seed), and the parameters' gradients.
- ``assert_present_values_used(method, x, present)``: the opposite sanity check, so a
  method that ignores everything does not pass the first one vacuously.
- ``assert_masking(method, x, present)``: the two above, in that order.
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


def bench_draws(shapes: dict[str, tuple[int, ...]], seeds=(0, 1), means_seed: int = 0,
                **kw) -> list[BenchData]:
    """One ``BenchData`` per seed: ``separable(shapes, seed=seed, means_seed=means_seed,
    **kw)`` with subjects ``s{seed}_{i}``. The class means come from ``means_seed`` alone, so
    the draws share them (train and validation sets of one problem) and differ in presence
    and noise."""
    return [bench_data(*separable(shapes, seed=seed, means_seed=means_seed, **kw),
                       tag=f"s{seed}") for seed in seeds]


def fit_and_score(method, train: BenchData, val: BenchData, cfg: dict, log_path=None) -> float:
    """Fit ``method`` with the shared trainer and return its balanced accuracy on ``val``.
    The fit must be one phase named ``train`` that runs every one of ``cfg["max_epochs"]``
    epochs (set ``patience`` so that early stopping cannot cut it short)."""
    from mmpipe.bench.metrics import classification_metrics
    from mmpipe.bench.trainer import fit, predict_proba

    result = fit(method, train, val, cfg, seed=0, log_path=log_path)
    assert result.epochs == {"train": cfg["max_epochs"]}
    proba = predict_proba(method, val)
    assert np.isfinite(proba).all()
    return classification_metrics(val.y, proba)["balanced_accuracy"]


def check_attention_masked(weights: torch.Tensor, tokens: torch.Tensor) -> None:
    """``weights``: attention maps ``[B, heads, N, N]`` (queries × keys) over ``N`` tokens
    whose presence is ``tokens`` ``[B, N]``, the summary (CLS) token first. Present queries
    put exactly zero weight on absent keys; the summary row, which the fused output reads,
    puts positive weight on every present token."""
    tokens = tokens.bool()
    assert weights.shape[-2:] == (tokens.shape[1], tokens.shape[1])
    absent_keys = ~tokens[:, None, None, :]
    present_queries = tokens[:, None, :, None]
    assert torch.all(weights.masked_select(absent_keys & present_queries) == 0)
    summary = weights[:, :, 0]
    assert torch.all(summary[tokens.unsqueeze(1).expand_as(summary)] > 0)


def _run(method, x, present, train: bool, seed: int = 0) -> torch.Tensor:
    method.train(train)
    torch.manual_seed(seed)
    with torch.no_grad():
        return method(x, present)


def _perturb(x, present, modalities, absent: bool, seed: int = 1, fill: float | None = None):
    """Copy of ``x`` with large random values (or ``fill``) in the absent (or present)
    rows."""
    gen = torch.Generator().manual_seed(seed)
    out, changed = {}, 0
    for j, m in enumerate(modalities):
        rows = ~present[:, j] if absent else present[:, j]
        noise = 1e3 * torch.randn(x[m].shape, generator=gen)
        if fill is not None:
            noise = torch.full_like(noise, fill)
        mask = rows.view(-1, *([1] * (x[m].dim() - 1)))
        out[m] = torch.where(mask, noise, x[m])
        changed += int(rows.sum())
    return out, changed


def _gradients(method, x, present, seed: int = 0) -> dict[str, torch.Tensor]:
    """The parameters' gradients of the train-mode output's sum, on a copy (a train-mode
    forward moves running statistics)."""
    method = copy.deepcopy(method)
    method.train(True)
    method.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    method(x, present).float().sum().backward()
    return {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}


def check_no_modality_rows_identical(method, x) -> torch.Tensor:
    was_training = method.training
    none = torch.zeros(len(next(iter(x.values()))), len(method.modalities), dtype=torch.bool)
    out = _run(method, x, none, False)
    method.train(was_training)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, out[:1].expand_as(out),
                               msg="rows with no modality present have different outputs")
    return out


def check_masked_values_ignored(method, x, present, atol: float = 1e-6) -> None:
    present = present.bool()
    was_training = method.training
    refs = {train: _run(copy.deepcopy(method), x, present, train) for train in (False, True)}
    ref_grads = _gradients(method, x, present)
    # a mask applied as a product (0 * x) passes an absent row's NaN or infinity on
    for fill in (None, float("nan"), float("inf")):
        perturbed, changed = _perturb(x, present, method.modalities, absent=True, fill=fill)
        assert changed > 0, "the batch has no absent entry: the check would be vacuous"
        for train in (False, True):
            out = _run(copy.deepcopy(method), perturbed, present, train)
            assert torch.isfinite(out).all(), f"absent values of {fill} (train={train})"
            torch.testing.assert_close(
                out, refs[train], rtol=0, atol=atol,
                msg=f"absent values of {fill or 'noise'} changed the output (train={train})")
        grads = _gradients(method, perturbed, present)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(
                grad, ref_grads[name], rtol=0, atol=atol,
                msg=f"absent values of {fill or 'noise'} changed {name}'s gradient")
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


def train_steps(model, x, present, y, steps=40, lr=1e-3):
    """``steps`` Adam steps on ``model.loss`` over one batch: (loss before, loss after,
    training accuracy after)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.eval()
    with torch.no_grad():
        before = model.loss(x, present, y)[0].item()
    model.train()
    torch.manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = model.loss(x, present, y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        loss, logits = model.loss(x, present, y)
    return before, loss.item(), (logits.argmax(1) == y).float().mean().item()



@pytest.fixture(name="train_steps")
def train_steps_fixture():
    return train_steps


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


@pytest.fixture(name="bench_draws")
def bench_draws_fixture():
    return bench_draws


@pytest.fixture(name="fit_and_score")
def fit_and_score_fixture():
    return fit_and_score


@pytest.fixture
def assert_attention_masked():
    return check_attention_masked


@pytest.fixture
def assert_no_modality_rows_identical():
    return check_no_modality_rows_identical


@pytest.fixture
def assert_masked_values_ignored():
    return check_masked_values_ignored


@pytest.fixture
def assert_present_values_used():
    return check_present_values_used


def check_masking(method, x, present) -> None:
    """Both halves of the masking contract: absent values ignored, present ones used."""
    check_masked_values_ignored(method, x, present)
    check_present_values_used(method, x, present)


@pytest.fixture
def assert_masking():
    return check_masking


@pytest.fixture
def assert_permutation_invariant():
    return check_permutation_invariant


@pytest.fixture
def assert_permutation_dependent():
    return check_permutation_dependent


def fit_twice(make, train: BenchData, val: BenchData, cfg: dict, threads: int
              ) -> list[dict[str, torch.Tensor]]:
    """The weights of two fits of one seed with ``threads`` torch threads (the suite
    runs its tests at one: tests/conftest.py): a gather whose backward scatter-adds in parallel gave other
    weights on every run."""
    from mmpipe.bench.trainer import fit

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = []
        for _ in range(2):
            torch.manual_seed(0)  # its initial weights, as the run seeds them
            method = make()
            fit(method, train, val, cfg, seed=0)
            out.append({k: v.detach().clone() for k, v in method.state_dict().items()})
        return out
    finally:
        torch.set_num_threads(before)


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differ, f"one seed, two fits: {len(differ)} tensors differ ({differ[:4]})"
