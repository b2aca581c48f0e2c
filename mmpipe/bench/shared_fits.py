"""One fit for the cells of a training job that train on the same data.

A seed's model depends only on what it is trained and chosen on: the method's settings
(one set per job), the seed, the selection and tuning settings, and the training and
validation splits as the scenario's mask leaves them. ``testmiss`` (bidirectional
distillation's protocol) masks the test split only, so each of its rates trains exactly
the model of the ``natural`` cell, as the paper trains once and tests at each rate; a
``completeness`` level of 1.0 on a cohort already complete is the natural cohort too.
Within one ``train_jobs: method`` job such cells train once: :func:`fit_key` keys the
outcome of the first by the bytes of its inputs, so a cell whose data differ in one
value, one subject or one presence bit trains its own model. Jobs of ``train_jobs:
cell`` hold one cell each and share nothing.

A failed fit (:class:`~mmpipe.bench.trainer.NotTrainable`) is shared as well: the same
inputs fail the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from mmpipe.bench.data import BenchData
from mmpipe.bench.trainer import NotTrainable


def _feed(h, data: BenchData) -> None:
    h.update("\x1f".join(map(str, data.subject_id)).encode())
    for array in (data.y, data.present, *(data.x[m] for m in data.modalities)):
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array.tobytes())


def fit_key(seed: int, settings: dict[str, Any], train: BenchData, val: BenchData) -> str:
    """What a seed's model selection reads: ``settings`` (the method, selection and tuning
    settings), the seed, and the normalised training and validation data."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({"seed": seed, **settings}, sort_keys=True, default=str).encode())
    h.update(json.dumps(train.modalities).encode())
    for data in (train, val):
        _feed(h, data)
    return h.hexdigest()


class SharedFits:
    """The outcomes of one seed's fits in a job, by :func:`fit_key`; kept for one seed at
    a time by the caller, so a job holds at most one model per cell."""

    def __init__(self) -> None:
        self._done: dict[str, tuple[Any, str]] = {}

    def select(self, key: str, cell: str, select: Callable[[], Any]) -> tuple[Any, str | None]:
        """``select()``'s outcome, run unless a cell of the same key ran it: (the outcome,
        the cell that trained it, or None when this call did). Raises the
        :class:`NotTrainable` of a failed fit, shared or not."""
        if key in self._done:
            outcome, first = self._done[key]
            if isinstance(outcome, NotTrainable):
                raise NotTrainable(f"{outcome} (as in cell {first}, trained on the same data)",
                                   selection=outcome.selection)
            return outcome, first
        try:
            outcome = select()
        except NotTrainable as err:
            self._done[key] = (err, cell)
            raise
        self._done[key] = (outcome, cell)
        return outcome, None
