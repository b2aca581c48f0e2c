"""The store as an encoding loop sees it: one bad embedding rejects one subject."""

from __future__ import annotations

import numpy as np

from mmpipe.encode.job import SubjectWriter
from mmpipe.store import FeatureStoreWriter, read_features


def test_a_non_finite_or_misshapen_embedding_rejects_its_subject_only(tmp_path):
    ids = ["a", "nan", "inf", "shape", "b"]
    with FeatureStoreWriter(tmp_path / "s.zarr", ids, (3,), {}) as store:
        writer = SubjectWriter(store, notes={"b": "converted; skipped 1 of 9 files: x.dcm"})
        assert writer.write("a", np.ones(3))
        assert not writer.write("nan", np.array([1.0, np.nan, 2.0]))
        assert not writer.write("inf", np.array([1.0, np.inf, 2.0]))
        assert not writer.write("shape", np.ones(4))
        assert writer.write("b", np.full(3, 2.0))
        store.commit()
    f = read_features(tmp_path / "s.zarr")
    rows = {s: (st, r) for s, st, r in zip(f.subject_id, f.status, f.reason, strict=True)}
    assert rows["a"] == ("ok", "")
    assert rows["b"] == ("ok", "converted; skipped 1 of 9 files: x.dcm")
    assert rows["nan"][0] == rows["inf"][0] == rows["shape"][0] == "rejected"
    assert "1 non-finite value(s) (NaN/inf) of 3" in rows["nan"][1]
    assert "shape (4,)" in rows["shape"][1]
    np.testing.assert_array_equal(f.emb[0], np.ones(3))
    assert np.isnan(f.emb[1]).all() and not f.present[1]
