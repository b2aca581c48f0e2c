"""Missingness scenarios: MCAR hits its rate, never empties a subject, never adds a modality."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mmpipe.bench.missingness import (
    SCENARIO_OPTIONS,
    SCENARIOS,
    TEST_SPLIT_ONLY,
    align_mask,
    max_mcar_rate,
    mcar_mask,
    modality_subsets,
    read_mask,
    scenario_mask,
    subset_mask,
    write_mask,
)
from mmpipe.errors import ConfigError


def _present(n=500, seed=0):
    """Natural availability like a real cohort: most subjects complete, some partial."""
    rng = np.random.default_rng(seed)
    present = rng.random((n, 3)) < 0.85
    present[~present.any(axis=1), 1] = True
    return present


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mcar_hits_rate_and_never_empties_a_subject(rate, seed):
    present = _present(n=500, seed=100 + seed)
    mask = mcar_mask(present, rate, seed)
    assert mask.shape == present.shape and mask.dtype == bool
    assert not (mask & ~present).any()                 # never adds a modality
    assert mask.any(axis=1).all()                      # at least one modality per subject
    removed = 1 - mask.sum() / present.sum()           # share of *present* entries removed
    assert abs(removed - rate) <= 0.02


def test_mcar_calibration_meets_the_rate_to_one_entry():
    present = _present(n=500, seed=10)
    n_present = present.sum()
    for seed in range(5):
        for rate in (0.1, 0.2, 0.4, 0.6):
            removed = n_present - mcar_mask(present, rate, seed).sum()
            assert abs(removed - rate * n_present) <= 1


def test_uncalibrated_mcar_falls_short_of_the_rate():
    present = _present(n=2000)
    naive = 1 - mcar_mask(present, 0.6, 0, calibrate=False).sum() / present.sum()
    assert naive < 0.6 - 0.02


def test_mcar_is_deterministic_and_nested_across_rates():
    present = _present()
    a = mcar_mask(present, 0.4, 7)
    np.testing.assert_array_equal(a, mcar_mask(present, 0.4, 7))
    assert (a != mcar_mask(present, 0.4, 8)).any()
    masks = [mcar_mask(present, r, 7) for r in (0.0, 0.2, 0.4, 0.6)]
    np.testing.assert_array_equal(masks[0], present)
    for low, high in zip(masks, masks[1:], strict=False):
        assert not (high & ~low).any()                 # higher rate removes a superset


def test_unreachable_rate_keeps_exactly_one_modality(caplog):
    present = np.zeros((100, 2), dtype=bool)
    present[:, 0] = True
    present[:50, 1] = True                             # at most 50 of 150 entries removable
    assert max_mcar_rate(present) == pytest.approx(1 / 3)
    with caplog.at_level(logging.WARNING):
        mask = mcar_mask(present, 0.6, 0)
    assert "not reachable" in caplog.text
    assert (mask.sum(axis=1) == 1).all()


def test_scenario_mask_dispatch():
    present = _present(n=50)
    np.testing.assert_array_equal(scenario_mask(present, "natural", 0.0, 0), present)
    np.testing.assert_array_equal(scenario_mask(present, "mcar", 0.4, 3), mcar_mask(present, 0.4, 3))
    with pytest.raises(ConfigError, match="unknown missingness scenario"):
        scenario_mask(present, "mnar", 0.2, 0)
    with pytest.raises(ConfigError):
        scenario_mask(present, "mcar", 1.5, 0)


def test_modality_subsets_and_subset_mask():
    subsets = modality_subsets(["ct", "wsi", "rna"])
    assert len(subsets) == 7
    assert subsets[:3] == [("ct",), ("wsi",), ("rna",)] and subsets[-1] == ("ct", "wsi", "rna")
    present = np.array([[True, True, False], [False, True, True]])
    np.testing.assert_array_equal(subset_mask(present, ["ct", "wsi", "rna"], ("ct", "rna")),
                                  [[True, False, False], [False, False, True]])
    with pytest.raises(ConfigError):
        subset_mask(present, ["ct", "wsi", "rna"], ("mri",))


def test_mask_file_round_trip_and_alignment(tmp_path):
    present = _present(n=20)
    ids = [f"s{i}" for i in range(20)]
    mask = mcar_mask(present, 0.4, 0)
    path = write_mask(ids, mask, ["ct", "wsi", "rna"], tmp_path / "masks" / "mcar-0.4-seed0.parquet")
    got_ids, got, mods = read_mask(path)
    assert got_ids.tolist() == ids and mods == ["ct", "wsi", "rna"]
    np.testing.assert_array_equal(got, mask)
    sub = align_mask(got_ids, got, mods, ["s3", "s1"], ["rna", "ct"])
    np.testing.assert_array_equal(sub, mask[[3, 1]][:, [2, 0]])


MODS = ["a", "b", "c"]


def _parts(n, seed=0):
    """A 60:20:20 split of ``n`` rows, in no order."""
    return np.random.default_rng(seed).choice(["train", "val", "test"], size=n,
                                              p=[0.6, 0.2, 0.2])


@pytest.mark.parametrize("complete", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("drop", ["one", "many"])
def test_completeness_keeps_the_share_of_complete_training_subjects(complete, drop):
    """HAM's level is the share of complete training cases: it was drawn over the whole
    cohort, so the test split lost modalities too (the subset evaluation of HAM's table 2
    then scored "all modalities" mostly on incomplete subjects) and the training split
    met the level only on average (35 % for 25 % on an 80-subject cohort)."""
    present = _present(400)
    parts = _parts(400)
    mask = scenario_mask(present, "completeness", complete, 3, cohort_modalities=MODS,
                         parts=parts, drop=drop)
    was_complete = present.all(axis=1)
    assert not (mask & ~present).any()
    # naturally incomplete subjects, and the test split, are left as they are
    assert (mask[~was_complete] == present[~was_complete]).all()
    assert (mask[parts == "test"] == present[parts == "test"]).all()
    for part in ("train", "val"):  # each split meets the level on its own
        rows = was_complete & (parts == part)
        still = mask[rows].all(axis=1)
        assert abs(still.mean() - complete) <= 0.5 / rows.sum() + 1e-12, part
    rows = was_complete & (parts != "test")
    still = mask[rows].all(axis=1)
    lost = (present[rows] & ~mask[rows]).sum(axis=1)[~still]
    assert (lost == 1).all() if drop == "one" else ((lost >= 1) & (lost <= 2)).all()
    assert mask.any(axis=1).all()
    with pytest.raises(ValueError, match="part of the seed's split"):
        scenario_mask(present, "completeness", complete, 3, cohort_modalities=MODS)


def test_rates_are_met_on_the_subjects_the_benchmark_scores():
    """Subjects without the label are in no split: MCAR counted their entries (here one
    modality each, which MCAR never takes), so the share removed from the labelled ones
    was 0.27 for 0.2; completeness counted them among the complete subjects."""
    labelled = _present(n=300, seed=4)
    unlabelled = np.zeros((300, 3), dtype=bool)
    unlabelled[:, 0] = True
    present = np.vstack([labelled, unlabelled])
    scored = np.arange(600) < 300
    for rate in (0.2, 0.4):
        mask = mcar_mask(present, rate, 0, scored=scored)
        removed = labelled.sum() - mask[:300].sum()
        assert abs(removed - rate * labelled.sum()) <= 1
        assert (mask[300:] == unlabelled).all()
        # counted over every row, the labelled subjects lost more than the rate
        over_all = labelled.sum() - mcar_mask(present, rate, 0)[:300].sum()
        assert over_all > (rate + 0.04) * labelled.sum()
    complete = np.vstack([labelled, np.ones((300, 3), dtype=bool)])
    mask = scenario_mask(complete, "completeness", 0.5, 3, cohort_modalities=MODS,
                         scored=scored, parts=np.array(["train"] * 600))
    was = labelled.all(axis=1)
    assert abs(mask[:300][was].all(axis=1).mean() - 0.5) <= 1 / was.sum()
    assert mask[300:].all()


def test_completeness_over_named_modalities_only_touches_those():
    present = np.ones((100, 3), dtype=bool)
    mask = scenario_mask(present, "completeness", 0.5, 0, cohort_modalities=MODS,
                         modalities=["a", "c"], parts=np.array(["train"] * 100))
    assert mask[:, 1].all()
    assert (~mask[:, [0, 2]]).any(axis=1).sum() == 50
    with pytest.raises(ConfigError, match="unknown modalities"):
        scenario_mask(present, "completeness", 0.5, 0, cohort_modalities=MODS, modalities=["a", "x"])
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        scenario_mask(present, "completeness", 0.0, 0, cohort_modalities=MODS)


def test_testmiss_removes_the_modality_from_that_share_of_test_subjects_only():
    present = _present(600)
    test = np.zeros(len(present), dtype=bool)
    test[::3] = True
    for rate in (0.0, 0.5, 0.8):
        mask = scenario_mask(present, "testmiss", rate, 1, cohort_modalities=MODS, test=test,
                             modality="b")
        assert (mask[~test] == present[~test]).all()
        assert (mask[:, [0, 2]] == present[:, [0, 2]]).all()
        has = test & present[:, 1]
        removed = (has & ~mask[:, 1]).sum()
        assert removed == round(rate * has.sum())
        assert mask.any(axis=1).all()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_test_split_only_names_the_scenarios_that_leave_training_as_natural(scenario):
    """What shared fits rely on: a scenario declared test-split-only leaves every
    non-test row as ``natural`` does; the others change some at a non-zero rate."""
    present = _present(300)
    test = np.zeros(len(present), dtype=bool)
    test[::3] = True
    options = {"modality": "b"} if "modality" in SCENARIO_OPTIONS[scenario] else {}
    natural = scenario_mask(present, "natural", 0.0, 0, cohort_modalities=MODS, test=test)
    rate = 0.5 if scenario != "natural" else 0.0
    mask = scenario_mask(present, scenario, rate, 0, cohort_modalities=MODS, test=test,
                         parts=np.where(test, "test", "train"), **options)
    same = bool((mask[~test] == natural[~test]).all())
    assert same == (scenario in TEST_SPLIT_ONLY or scenario == "natural")


def test_testmiss_keeps_a_subject_s_only_modality(caplog):
    present = np.zeros((10, 2), dtype=bool)
    present[:, 0] = True
    present[:5, 1] = True
    with caplog.at_level(logging.WARNING):
        mask = scenario_mask(present, "testmiss", 1.0, 0, cohort_modalities=["x", "y"],
                             test=np.ones(10, dtype=bool), modality="x")
    assert (mask[:5, 0] == 0).all() and mask[5:, 0].all()
    assert "keep it" in caplog.text
    with pytest.raises(ConfigError, match="modality"):
        scenario_mask(present, "testmiss", 0.5, 0, cohort_modalities=["x", "y"],
                      test=np.ones(10, dtype=bool))



def test_the_realised_rate_of_each_scenario():
    """What the report compares with a scenario's rate: testmiss falls short when test
    subjects have the modality alone (the protocol keeps it), completeness meets its
    share to a subject, MCAR is its share of present entries."""
    from mmpipe.bench.missingness import completeness_mask, realised_rate, testmiss_mask

    present = np.array([[1, 1], [1, 1], [1, 1], [0, 1], [0, 1], [1, 1]], bool)
    test = np.array([1, 1, 1, 1, 1, 0], bool)
    mods = ["a", "b"]
    mask = testmiss_mask(present, 0.8, 0, cohort_modalities=mods, test=test, modality="b")
    # 5 test subjects have b; 2 have it alone: at most 3 of 5 lose it
    assert realised_rate("testmiss", present, mask, cohort_modalities=mods, test=test,
                         modality="b") == (pytest.approx(3 / 5), 5)
    # of the complete training subjects; the validation and test ones are no unit
    complete = np.array([[1, 1]] * 4 + [[0, 1]] + [[1, 1]] * 2, bool)
    parts = np.array(["train"] * 5 + ["val", "test"])
    mask = completeness_mask(complete, 0.5, 0, cohort_modalities=mods, parts=parts)
    assert realised_rate("completeness", complete, mask, cohort_modalities=mods,
                         parts=parts) == (pytest.approx(2 / 4), 4)
    mask = mcar_mask(present, 0.3, 0)
    rate, n = realised_rate("mcar", present, mask, cohort_modalities=mods)
    assert n == 10 and rate == pytest.approx((present & ~mask).sum() / 10)
    assert realised_rate("natural", present, present, cohort_modalities=mods) is None


def test_a_modality_named_twice_is_not_two():
    """[wsi, wsi] passed completeness's check of two modalities, and only wsi went
    missing."""
    present = np.ones((10, 3), bool)
    with pytest.raises(ConfigError, match=r"modalities \['c'\] named twice"):
        scenario_mask(present, "completeness", 0.5, 0, cohort_modalities=["a", "b", "c"],
                      modalities=["c", "c"])
