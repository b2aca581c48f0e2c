"""Feature-set loading and normalisation: zeros for absent, drops recorded, train-only stats."""

from __future__ import annotations

import json
import logging

import numpy as np
import polars as pl
import pytest

from mmpipe.bench.data import BenchData, Normalizer, load_feature_set
from mmpipe.errors import StoreError
from mmpipe.layout import CohortLayout
from mmpipe.store import FeatureStoreWriter

IDS = ["p1", "p2", "p3", "p4", "p5", "p6"]
LABELS = ["low", "high", None, "low", "high", "low"]
# ct absent for p2 and p6, wsi absent for p1 and p6: p6 has nothing, p3 has no label
CT = {"p1": 1.0, "p3": 3.0, "p4": 4.0, "p5": 5.0}
WSI = {"p2": 20.0, "p3": 30.0, "p4": 40.0, "p5": 50.0}


def _cohort(tmp_path, ids=IDS, wsi_ids=None):
    df = pl.DataFrame({"subject_id": ids, "grade": LABELS[:len(ids)],
                       "ct_path": [f"{s}.nii" if s in CT else None for s in ids],
                       "wsi_path": [f"{s}.svs" if s in WSI else None for s in ids]})
    df.write_parquet(tmp_path / "manifest.parquet")
    meta = {"cohort": "toy", "labels": ["grade"], "n_subjects": len(ids), "extra_columns": [],
            "modalities": {"ct": {"kind": "volume", "path_column": "ct_path"},
                           "wsi": {"kind": "slide", "path_column": "wsi_path"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(meta))
    for mod, enc, values, shape, order in (("ct", "ctenc", CT, (3,), ids),
                                           ("wsi", "wsienc", WSI, (2, 2), wsi_ids or ids)):
        with FeatureStoreWriter(CohortLayout(tmp_path).store(mod, enc), order, shape, {"encoder": enc}) as w:
            for s in order:
                if s in values:
                    w.write(s, np.full(shape, values[s]))
                else:
                    w.mark(s, "absent", "not available")
            w.commit()
    return tmp_path


def test_load_feature_set_zeros_absent_and_records_drops(tmp_path):
    data, dropped = load_feature_set(_cohort(tmp_path), {"ct": "ctenc", "wsi": "wsienc"}, "grade")
    assert data.subject_id.tolist() == ["p1", "p2", "p4", "p5", "p6"]
    assert data.modalities == ["ct", "wsi"]
    assert data.label_name == "grade"
    assert data.label_values == ["high", "low"]       # sorted label values -> 0, 1
    assert data.y.tolist() == [1, 0, 1, 0, 1]
    assert data.n_classes == 2
    assert data.shapes() == {"ct": (3,), "wsi": (2, 2)}
    assert data.present.tolist() == [[True, False], [False, True], [True, True], [True, True],
                                     [False, False]]
    assert data.x["ct"].dtype == np.float32 and not np.isnan(data.x["ct"]).any()
    np.testing.assert_array_equal(data.x["ct"][1], 0)  # absent: exact zeros, not NaN
    np.testing.assert_array_equal(data.x["wsi"][0], 0)
    np.testing.assert_array_equal(data.x["wsi"][2], np.full((2, 2), 40.0))
    assert data.patterns() == ["ct", "wsi", "ct+wsi", "ct+wsi", ""]
    assert dropped == [{"subject_id": "p3", "reason": "label missing (grade)"}]


def test_every_feature_set_holds_the_same_labelled_subjects(tmp_path):
    """A subject without the feature set's modalities stays, every entry absent: it was
    dropped before splitting, so a CT-only run was scored on fewer test subjects than
    the CT+WSI run it was paired with in the report."""
    cohort = _cohort(tmp_path)
    ct, dropped = load_feature_set(cohort, {"ct": "ctenc"}, "grade")
    both, _ = load_feature_set(cohort, {"ct": "ctenc", "wsi": "wsienc"}, "grade")
    assert ct.subject_id.tolist() == both.subject_id.tolist() == ["p1", "p2", "p4", "p5", "p6"]
    assert ct.present[:, 0].tolist() == [True, False, True, True, False]
    assert {d["subject_id"] for d in dropped} == {"p3"}


def test_stores_in_different_order_are_refused(tmp_path):
    _cohort(tmp_path, wsi_ids=IDS[::-1])
    with pytest.raises(StoreError, match=r"ctenc\.zarr.*wsienc\.zarr"):
        load_feature_set(tmp_path, {"ct": "ctenc", "wsi": "wsienc"}, "grade")


def test_store_and_manifest_must_agree(tmp_path):
    _cohort(tmp_path)
    df = pl.read_parquet(tmp_path / "manifest.parquet").head(5)
    df.write_parquet(tmp_path / "manifest.parquet")
    meta = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**meta, "n_subjects": 5}))
    with pytest.raises(StoreError, match="stale"):
        load_feature_set(tmp_path, {"ct": "ctenc"}, "grade")


def test_a_store_of_another_manifest_or_modality_is_refused(tmp_path):
    """The subject lists alone were compared: a store encoded before the manifest lost a
    subject's CT (or copied from a cohort of the same IDs, or of another modality) was
    read as this one's, and the subject trained on a CT the manifest no longer gives it."""
    cohort = _cohort(tmp_path)
    manifest = pl.read_parquet(cohort / "manifest.parquet")
    manifest.with_columns(pl.when(pl.col("subject_id") == "p4").then(None)
                          .otherwise(pl.col("ct_path")).alias("ct_path")
                          ).write_parquet(cohort / "manifest.parquet")
    with pytest.raises(StoreError, match=r"ctenc.zarr holds features for 1 subject\(s\) the "
                                         r"manifest gives no ct \(p4\)"):
        load_feature_set(cohort, {"ct": "ctenc", "wsi": "wsienc"}, "grade")
    manifest.write_parquet(cohort / "manifest.parquet")
    store = CohortLayout(cohort).store("wsi", "wsienc")
    with FeatureStoreWriter(store, IDS, (2, 2), {"encoder": "wsienc", "cohort": "toy",
                                                 "modality": "ct"}) as w:
        for s in IDS:
            w.mark(s, "absent", "not available")
        w.commit()
    with pytest.raises(StoreError, match=r"wsienc.zarr was encoded for modality 'ct', not "
                                         r"'wsi'"):
        load_feature_set(cohort, {"ct": "ctenc", "wsi": "wsienc"}, "grade")


def _toy(n=40, seed=0):
    rng = np.random.default_rng(seed)
    present = rng.random((n, 2)) < 0.7
    present[~present.any(axis=1), 0] = True
    x = {"a": rng.normal(5, 3, (n, 4)).astype(np.float32),
         "b": rng.normal(-2, 0.5, (n, 2, 3)).astype(np.float32)}
    x["a"][:, 3] = 7.0  # constant feature: std floor
    for j, m in enumerate(("a", "b")):
        x[m][~present[:, j]] = 0
    return BenchData(subject_id=[f"s{i}" for i in range(n)], y=rng.integers(0, 2, n), x=x,
                     present=present, modalities=["a", "b"], n_classes=2)


def test_normalizer_statistics_are_those_of_the_present_rows_it_is_fitted_on():
    """(Which subjects a run fits it on: tests/bench/test_run.py.)"""
    data = _toy()
    train_idx = np.arange(25)
    norm1 = Normalizer("zscore").fit(data.subset(train_idx))
    train = data.subset(train_idx)
    rows = train.x["a"][train.present[:, 0]]
    np.testing.assert_allclose(norm1.stats["a"]["mean"], rows.mean(axis=0), rtol=1e-5)
    out = norm1.transform(train)
    z = out.x["a"][train.present[:, 0]]
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1, atol=1e-4)
    np.testing.assert_array_equal(z[:, 3], 0)  # constant: (7 - 7) / 1e-6


def test_normalizer_keeps_absent_rows_zero_and_round_trips():
    data = _toy()
    for mode in ("zscore", "l2", "none"):
        norm = Normalizer(mode).fit(data.subset(np.arange(30)))
        out = norm.transform(data)
        for j, m in enumerate(data.modalities):
            assert (out.x[m][~data.present[:, j]] == 0).all()
            assert out.x[m].dtype == np.float32
        again = Normalizer.from_state(json.loads(json.dumps(norm.state_dict()))).transform(data)
        for m in data.modalities:
            np.testing.assert_allclose(again.x[m], out.x[m], rtol=1e-6)
    out = Normalizer("l2").fit(data).transform(data)
    norms = np.linalg.norm(out.x["b"][data.present[:, 1]], axis=-1)
    np.testing.assert_allclose(norms, 1, rtol=1e-5)


def test_normalizer_refuses_other_shapes():
    data = _toy()
    norm = Normalizer().fit(data)
    other = BenchData(subject_id=["x"], y=[0], x={"a": np.zeros((1, 5), np.float32),
                                                  "b": np.zeros((1, 2, 3), np.float32)},
                      present=[[True, True]], modalities=["a", "b"], n_classes=2)
    with pytest.raises(StoreError, match="fitted on"):
        norm.transform(other)


def test_subset_and_with_present():
    data = _toy()
    sub = data.subset(np.array([3, 1]))
    assert sub.subject_id.tolist() == ["s3", "s1"]
    assert sub.subset(np.array([True, False])).subject_id.tolist() == ["s3"]
    mask = np.zeros_like(data.present)
    mask[:, 0] = True
    masked = data.with_present(mask)
    assert (masked.present == (data.present & mask)).all()
    assert (masked.x["b"] == 0).all()
    np.testing.assert_array_equal(masked.x["a"], data.x["a"])
    assert (data.x["b"] != 0).any()  # the original is untouched


def _tabular(ages: list, stages: list) -> BenchData:
    """Clinical rows through the stage-1 tabular encoding, fitted on every subject (as
    the encode job does: it knows no split), as the stage-2 data carries them."""
    from mmpipe.encoders.tabular import TabularEncoding
    from mmpipe.store import encoding_signature

    frame = pl.DataFrame({"age": ages, "stage": stages}, strict=False)
    encoding = TabularEncoding(["age", "stage"], categorical=["stage"]).fit(frame)
    x = encoding.transform(frame)
    n = len(ages)
    return BenchData(subject_id=np.array([f"s{i}" for i in range(n)]),
                     y=np.arange(n) % 2, x={"clin": x}, present=np.ones((n, 1), bool),
                     modalities=["clin"], n_classes=2,
                     provenance={"clin": encoding_signature(
                         {"encoder_type": "tabular", "tabular_encoding": encoding.to_dict()})})


def test_tabular_features_of_training_subjects_do_not_move_with_the_test_subjects():
    """Stage 1 standardises and imputes blanks with the whole cohort's statistics; the
    z-score fitted on the training subjects must leave no trace of the test ones: a blank
    training age sat at the cohort mean, and a stage only a test subject has became 1e6
    (a training column of zeros divided by the floor of its standard deviation)."""
    train = [40.0, 50.0, None, 60.0, 70.0, None]
    stages = ["I", "II", "I", "II", "I", "II"]
    first = _tabular([*train, 20.0, 25.0], [*stages, "IV", "I"])
    second = _tabular([*train, 90.0, 95.0], [*stages, "II", "IV"])
    out = []
    for data in (first, second):
        tr, te = data.subset(np.arange(6)), data.subset([6, 7])
        norm = Normalizer("zscore").fit(tr)
        out.append((norm.transform(tr).x["clin"], norm.transform(te).x["clin"], norm))
    np.testing.assert_allclose(out[0][0], out[1][0], atol=1e-6)   # training rows alike
    ages = out[0][0][:, 0]
    assert ages[[2, 5]].tolist() == [0.0, 0.0]                      # blanks: the training mean
    assert ages[[0, 1, 3, 4]].mean() == pytest.approx(0, abs=1e-6)
    assert set(np.unique(out[0][0][:, 1])) == {0.0, 1.0}            # the blank indicator
    assert np.abs(out[1][1]).max() < 10                             # the unseen stage IV
    restored = Normalizer.from_state(json.loads(json.dumps(out[0][2].state_dict())))
    te = first.subset([6, 7])
    np.testing.assert_array_equal(restored.transform(te).x["clin"], out[0][1])


def test_l2_features_of_training_subjects_do_not_move_with_the_test_subjects():
    """l2 scaled a tabular store as stored, in stage 1's cohort-wide standardisation: the
    training subjects' features moved by up to 2 when only the test subjects' ages did
    (MMIST-ccRCC normalises with l2)."""
    train = [40.0, 50.0, None, 60.0, 70.0, None]
    stages = ["I", "II", "I", "II", "I", "II"]
    out = []
    for test_ages in ([20.0, 25.0], [90.0, 95.0]):
        data = _tabular([*train, *test_ages], [*stages, "II", "I"])
        tr = data.subset(np.arange(6))
        norm = Normalizer("l2").fit(tr)
        out.append((norm.transform(tr).x["clin"], norm, tr))
    np.testing.assert_allclose(out[0][0], out[1][0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[0][0], axis=1), 1.0, atol=1e-6)
    restored = Normalizer.from_state(json.loads(json.dumps(out[0][1].state_dict())))
    np.testing.assert_array_equal(restored.transform(out[0][2]).x["clin"], out[0][0])


@pytest.mark.parametrize("mode", ["zscore", "l2"])
def test_a_category_only_test_subjects_have_is_zero(mode):
    """Stage IV only in the test split: its one-hot column is zero in training, so a model's
    weight for it never trained, and at test it added that weight's random initial value
    to the subject's score (under l2 the column was not even refitted). Likewise the
    blank indicator of a field no training subject leaves blank."""
    train_ages = [40.0, 50.0, 45.0, 60.0, 70.0, 55.0]
    data = _tabular([*train_ages, None, 30.0], ["I", "II", "I", "II", "I", "II", "IV", "I"])
    tr, te = data.subset(np.arange(6)), data.subset([6, 7])
    norm = Normalizer(mode).fit(tr)
    names = ["age", "age=missing", "stage=I", "stage=II", "stage=IV", "stage=missing"]
    out = dict(zip(names, norm.transform(te).x["clin"].T, strict=True))
    assert out["stage=IV"].tolist() == [0.0, 0.0]
    assert out["age=missing"].tolist() == [0.0, 0.0]
    assert out["stage=I"][1] != 0.0                      # a category training subjects have
    restored = Normalizer.from_state(json.loads(json.dumps(norm.state_dict())))
    np.testing.assert_array_equal(restored.transform(te).x["clin"], norm.transform(te).x["clin"])
    # a model saved before: its normaliser has no `keep`, and transforms as it trained
    old = norm.state_dict()
    for stats in old["stats"].values():
        stats.pop("keep")
    assert Normalizer.from_state(old).transform(te).x["clin"][0, names.index("stage=IV")] != 0


@pytest.mark.parametrize("mode", ["zscore", "l2"])
def test_a_field_whose_training_values_are_one_value_is_zero(mode, caplog):
    """Training ages all 50 or blank: the z-score saw a constant column, but its blanks
    held stage 1's imputed value, so the column was kept and test ages 80 and 90 reached
    an untrained weight. And under l2 a store of category fields alone was not refitted,
    its stage IV (only at test) kept."""
    data = _tabular([50.0, None, 50.0, None, 50.0, 50.0, 80.0, 90.0],
                    ["I", "II", "I", "II", "I", "II", "IV", "I"])
    tr, te = data.subset(np.arange(6)), data.subset([6, 7])
    assert Normalizer(mode).fit(tr).transform(te).x["clin"][:, 0].tolist() == [0.0, 0.0]
    from mmpipe.encoders.tabular import TabularEncoding
    from mmpipe.store import encoding_signature

    frame = pl.DataFrame({"stage": ["I", "II", "I", "II", "IV"]})
    enc = TabularEncoding(["stage"], categorical=["stage"]).fit(frame)
    cats = BenchData(subject_id=np.array([f"s{i}" for i in range(5)]), y=np.arange(5) % 2,
                     x={"clin": enc.transform(frame)}, present=np.ones((5, 1), bool),
                     modalities=["clin"], n_classes=2,
                     provenance={"clin": encoding_signature(
                         {"encoder_type": "tabular", "tabular_encoding": enc.to_dict()})})
    norm = Normalizer(mode).fit(cats.subset(np.arange(4)))
    assert enc.feature_names[2] == "stage=IV"
    assert norm.transform(cats.subset([4])).x["clin"][0, 2] == 0.0
    # one training subject with the modality: every feature constant, said
    with caplog.at_level(logging.WARNING):
        Normalizer(mode).fit(cats.subset([0]))
    assert "every feature of clin is constant over the training subjects (1 have it)" in (
        caplog.text)


def test_a_store_listing_a_subject_twice_is_refused(tmp_path):
    """The store was checked against the manifest as a set: a second row of a subject
    (a store the writer, which refuses it, did not write) trained and scored it twice."""
    import zarr

    cohort = _cohort(tmp_path)
    store = CohortLayout(cohort).store("ct", "ctenc")
    ids = zarr.open_group(store, mode="r+")["subject_id"]
    ids[1] = "p1"
    with pytest.raises(StoreError, match=r"lists subject\(s\) \['p1'\] more than once"):
        load_feature_set(cohort, {"ct": "ctenc"}, "grade")


def test_a_store_whose_every_subject_was_rejected_is_refused(tmp_path):
    """A setting that rejects every subject (min_slices above every series) left a
    finished store of no features, and the benchmark trained without the modality: a
    normaliser warning was its one trace. A modality no subject has is no such store."""
    cohort = _cohort(tmp_path)
    with FeatureStoreWriter(CohortLayout(cohort).store("ct", "strict"), IDS, (3,),
                            {"encoder": "strict"}) as w:
        for s in IDS:
            w.mark(s, "rejected" if s in CT else "absent",
                   "no usable series for rule 'most_slices'" if s in CT else "no file")
        w.commit()
    with pytest.raises(StoreError, match=r"ct/strict.zarr: none of its 4 subject\(s\) with "
                       r"ct input has features \(4 x \"no usable series"):
        load_feature_set(cohort, {"ct": "strict", "wsi": "wsienc"}, "grade")
    with FeatureStoreWriter(CohortLayout(cohort).store("ct", "none"), IDS, (3,),
                            {"encoder": "none"}) as w:
        for s in IDS:
            w.mark(s, "absent", "no file")
        w.commit()
    data, _ = load_feature_set(cohort, {"ct": "none", "wsi": "wsienc"}, "grade")
    assert not data.present[:, 0].any()
