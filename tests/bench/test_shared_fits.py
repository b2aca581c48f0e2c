"""Cells that train on the same data share one fit, its failure included."""

from __future__ import annotations

import pytest

from mmpipe.bench.shared_fits import SharedFits
from mmpipe.bench.trainer import NotTrainable


def test_a_shared_failure_keeps_the_trials_record_in_every_cell():
    # the second cell's run recorded no selection where the first's kept its trials
    fits = SharedFits()

    def fails():
        raise NotTrainable("the refit failed", selection={"trials": [1, 2]})

    for cell in ("testmiss-0.5", "testmiss-0.8"):
        with pytest.raises(NotTrainable) as err:
            fits.select("key", cell, fails)
        assert err.value.selection == {"trials": [1, 2]}
    assert "as in cell testmiss-0.5" in str(err.value)
