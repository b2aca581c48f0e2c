"""Fixtures shared by the stage-2 tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def failing_refit(monkeypatch):
    """Cross-validation's refit (a fit without a validation split) fails NotTrainable
    ("the training loss is nan in phase 'train', epoch 2"); the folds train as usual."""
    import mmpipe.bench.selection as selection_module
    from mmpipe.bench.trainer import NotTrainable

    fit = selection_module.fit

    def refit_fails(method, train, val, *args, **kwargs):
        if val is None:
            raise NotTrainable("the training loss is nan in phase 'train', epoch 2")
        return fit(method, train, val, *args, **kwargs)

    monkeypatch.setattr(selection_module, "fit", refit_fails)
