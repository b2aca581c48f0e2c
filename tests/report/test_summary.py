"""The summary that opens results.md: best method, fusion vs single/baselines, flags."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import t, wilcoxon

from mmpipe.report.aggregate import summarise
from mmpipe.report.summary import flags_markdown, summary_markdown, t_interval

SEEDS = range(5)
# balanced accuracy per seed; natural: hgb (a baseline) best, mmare ahead of single_ct on
# every seed; mcar 0.4: mmare best, ahead of hgb on 4 of 5 seeds only
NATURAL = {"mmare": [0.80, 0.78, 0.82, 0.79, 0.81], "hgb": [0.85, 0.84, 0.86, 0.80, 0.83],
           "logreg": [0.70, 0.71, 0.69, 0.72, 0.70], "single_ct": [0.60, 0.62, 0.61, 0.63, 0.60],
           "muse": [0.50, 0.50, 0.50, 0.50, 0.66]}
# standard trained on one seed only: its high mean is no contest
MCAR = {"mmare": [0.75, 0.74, 0.76, 0.70, 0.77], "hgb": [0.70, 0.70, 0.72, 0.74, 0.73],
        "muse": [0.50] * 5, "standard": [0.95, None, None, None, None]}
TYPES = {"mmare": "mmare", "featimpute": "featimpute", "hgb": "hgb", "logreg": "logreg", "single_ct": "single",
         "single_cli": "single", "single_ct2": "single",
         "muse": "muse", "standard": "standard"}
FAMILY = {"mmare": "MMARE", "featimpute": "HAM & comparators", "hgb": "baselines", "logreg": "baselines",
          "single_ct": "single modality", "single_cli": "single modality",
          "single_ct2": "single modality",
          "muse": "attention / graph",
          "standard": "simple fusion"}


def _runs() -> pl.DataFrame:
    rows = []
    for scenario, rate, table in (("mcar", 0.4, MCAR), ("natural", 0.0, NATURAL)):
        for method, vals in table.items():
            for seed, v in zip(SEEDS, vals, strict=True):
                rows.append({"cohort": "c", "feature_set": "all", "method": method,
                             "method_type": TYPES[method], "family": FAMILY[method],
                             "scenario": scenario, "rate": rate, "seed": seed,
                             "balanced_accuracy": v, "trained": v is not None,
                             "collapsed": method == "muse" and v == 0.5})
    return pl.DataFrame(rows)


def _flags() -> pl.DataFrame:
    rows = [{"cohort": "c", "feature_set": "all", "method": "muse", "method_type": "muse",
             "scenario": s, "rate": r, "seed": seed, "flag": "single_class_test",
             "reason": "every test prediction (26 subjects) is class 0",
             "auc": 0.74 if s == "natural" else 0.52}
            for s, r, seeds in (("natural", 0.0, range(4)), ("mcar", 0.4, SEEDS))
            for seed in seeds]
    rows += [{**rows[0], "method": "standard", "method_type": "standard", "scenario": "mcar",
              "rate": 0.4, "seed": seed, "flag": "not_trained", "reason": "training failed"}
             for seed in range(1, 5)]
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def md() -> str:
    runs = _runs()
    return summary_markdown(runs, summarise(runs), _flags())


def _section(md: str, heading: str) -> list[str]:
    lines = md.splitlines()
    start = lines.index(heading)
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("- "):
            break
        out.append(line)
    return out


def test_natural_comes_first_and_the_baseline_win_is_said_plainly(md):
    assert md.index("**Natural missingness**") < md.index("**MCAR: 40 % of present entries removed**")
    lines = _section(md, "**Natural missingness**")
    hgb = np.array(NATURAL["hgb"])
    lo, hi = t_interval(hgb)
    assert lines[0] == (f"- best: **hgb** (baselines), {hgb.mean():.3f} ± {hgb.std(ddof=1):.3f} "
                        f"(95 % CI {lo:.3f}–{hi:.3f}, 5 seeds). **A simple baseline has the "
                        "best mean here**: no fusion method beats hgb on average; on 5 seeds "
                        "no row can be told apart from it at 0.05")
    line = next(x for x in lines if x.startswith("- **baseline hgb ahead of the fusion**"))
    # ahead on every one of 5 seeds is the smallest two-sided p there is, 2/32: no claim
    p = wilcoxon(NATURAL["hgb"], NATURAL["mmare"], method="exact").pvalue
    assert p == pytest.approx(2 / 32)
    assert line.endswith(f"hgb ahead on 5 of 5 seeds, two-sided p = {p:.3g} (not significant "
                         "at 0.05: not shown to beat the fusion)")


def _six_seeds(table: dict[str, list]) -> pl.DataFrame:
    return pl.DataFrame([{"cohort": "c", "feature_set": "all", "method": method,
                          "method_type": TYPES[method], "family": FAMILY[method],
                          "scenario": "natural", "rate": 0.0, "seed": seed,
                          "balanced_accuracy": v, "trained": True, "collapsed": False}
                         for method, vals in table.items()
                         for seed, v in enumerate(vals)])


def test_a_side_ahead_on_every_seed_of_six_wins_either_way():
    """The smallest two-sided p on 6 seeds, 2/64, says which side is better: the baseline
    (a simple baseline's win is said plainly) or the fusion."""
    base = [0.70, 0.72, 0.74, 0.71, 0.73, 0.75]
    for ahead, says in (("hgb", "(significant: hgb beats the fusion)"),
                        ("mmare", "(significant)")):
        runs = _six_seeds({ahead: [v + 0.05 for v in base],
                           "hgb" if ahead == "mmare" else "mmare": base})
        md = summary_markdown(runs, summarise(runs), None)
        line = next(x for x in _section(md, "**Natural missingness**")
                    if "two-sided p" in x and "hgb" in x)
        assert line.endswith(f"{ahead} ahead on 6 of 6 seeds, two-sided p = 0.0312 {says}")


def test_the_test_direction_is_not_taken_from_the_data():
    """hgb ahead on 5 of 6 seeds: one-sided towards the side the data put ahead, p =
    0.031, "hgb beats the fusion"; under no difference that test claimed a winner in 8 %
    of 10-seed comparisons, not 5 %. Two-sided, p = 0.0625: no claim."""
    fusion = [0.70, 0.72, 0.74, 0.71, 0.73, 0.75]
    hgb = [0.75, 0.77, 0.79, 0.76, 0.78, 0.74]
    assert wilcoxon(hgb, fusion, alternative="greater", method="exact").pvalue < 0.05
    runs = _six_seeds({"mmare": fusion, "hgb": hgb})
    md = summary_markdown(runs, summarise(runs), None)
    line = next(x for x in _section(md, "**Natural missingness**") if "two-sided p" in x)
    assert line.endswith("hgb ahead on 5 of 6 seeds, two-sided p = 0.0625 (not significant "
                         "at 0.05: not shown to beat the fusion)")


def test_a_baseline_ahead_within_noise_is_not_said_to_beat_the_fusion():
    """A 0.001 lead of a baseline was "**baseline logreg beats the fusion**" in bold,
    under a test of the other direction (fusion better: p = 0.625)."""
    runs = _table_runs({"mmare": [0.70, 0.80, 0.75, 0.745, 0.755],
                        "logreg": [0.80, 0.70, 0.76, 0.74, 0.755]})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    line = next(x for x in lines if "logreg" in x and "fusion" in x and "vs" in x)
    assert "beats" not in line
    from mmpipe.report.stats import paired_p

    p = paired_p(np.array([0.80, 0.70, 0.76, 0.74, 0.755]),
                 np.array([0.70, 0.80, 0.75, 0.745, 0.755]))
    assert p > 0.3
    assert line.endswith(f"logreg ahead on 2 of 5 seeds, two-sided p = {p:.3g} (not "
                         "significant at 0.05: not shown to beat the fusion)")


def test_fusion_vs_single_two_sided_wilcoxon(md):
    lines = _section(md, "**Natural missingness**")
    single = next(line for line in lines if "single modality best" in line)
    a, b = np.array(NATURAL["mmare"]), np.array(NATURAL["single_ct"])
    p = wilcoxon(a, b, method="exact").pvalue
    assert p == pytest.approx(2 / 32)     # ahead on all 5 seeds: the smallest p there is
    assert single == (f"- fusion **mmare** vs single modality best on test **single_ct** "
                      f"({b.mean():.3f}): {a.mean() - b.mean():+.3f}; mmare ahead on 5 of 5 "
                      f"seeds, two-sided p = {p:.3g} (not significant at 0.05)")


def test_mcar_fusion_best_but_not_significant(md):
    lines = _section(md, "**MCAR: 40 % of present entries removed**")
    assert lines[0].startswith("- best: **mmare** (MMARE), 0.744 ± 0.027")
    assert lines[0].endswith("(standard has a higher mean, 0.950, over 1 of 5 seeds only: "
                             "the others have no value)")
    hgb = next(line for line in lines if "vs baseline **hgb**" in line)
    p = wilcoxon(MCAR["mmare"], MCAR["hgb"], method="exact").pvalue
    assert (f"mmare ahead on 4 of 5 seeds, two-sided p = {p:.3g} "
            "(not significant at 0.05)") in hgb
    assert lines[-2:] == ["- collapsed to one class on the test split: muse (5 of 5 seeds)",
                          "- could not train: standard (4 of 5 seeds)"]
    natural = _section(md, "**Natural missingness**")
    assert natural[-1] == "- collapsed to one class on the test split: muse (4 of 5 seeds)"
    assert "no single-modality" not in md


def test_flags_listed_with_their_reason():
    runs = _runs()
    lines = flags_markdown(_flags(), summarise(runs))
    assert lines[0] == "## Flagged runs"
    assert ("- **muse**, Natural missingness: collapsed to one class on 4 of 5 seeds "
            "(seed 0, 1, 2, 3): every test prediction (26 subjects) is class 0") in [
        line.split("; ")[0] for line in lines]
    assert flags_markdown(_flags().clear()) == []


def test_a_collapse_says_whether_the_scores_still_rank():
    """Why a run predicted one class: scores that still rank the subjects (a collapsed
    threshold) or scores at chance (nothing learnt), from the AUC of the flagged seeds."""
    lines = flags_markdown(_flags(), summarise(_runs()))
    natural = next(line for line in lines if "Natural missingness" in line)
    assert natural.endswith("; its scores still rank the subjects (AUC 0.74 on these seeds): "
                            "the class threshold collapsed, not the ranking, so read its AUC, "
                            "not its balanced accuracy or F1")
    mcar = next(line for line in lines if "muse**, MCAR" in line)
    assert mcar.endswith("; its scores do not rank the subjects either (AUC 0.52 on these "
                         "seeds): it learnt nothing this split can see")
    untrained = next(line for line in lines if "standard" in line)
    assert "rank" not in untrained          # not a collapse: no diagnosis
    no_auc = flags_markdown(_flags().with_columns(pl.lit(None, pl.Float64).alias("auc")))
    assert not any("rank" in line for line in no_auc)


def test_the_statistics_are_stated(md):
    assert "two-sided" in md and "paired by seed" in md and "95 % CI" in md
    assert ("its smallest p is 0.0625 (ahead on every seed), so no comparison on 5 seeds can "
            "be significant at 0.05") in md


def test_t_interval_by_hand():
    v = [0.7, 0.8, 0.9]
    half = t.ppf(0.975, 2) * np.std(v, ddof=1) / np.sqrt(3)
    assert t_interval(v) == pytest.approx((0.8 - half, 0.8 + half))
    assert t_interval([0.5]) is None


def test_t_interval_corrected_for_overlapping_splits_by_hand():
    """Nadeau & Bengio's corrected resampled variance: (1/n + n_test/n_train)·s²."""
    v = [0.7, 0.8, 0.9]
    half = t.ppf(0.975, 2) * np.std(v, ddof=1) * np.sqrt(1 / 3 + 0.2 / 0.7)
    assert t_interval(v, test_train_ratio=0.2 / 0.7) == pytest.approx((0.8 - half, 0.8 + half))


def _sized(runs: pl.DataFrame, split_fixed: str | None = None) -> pl.DataFrame:
    runs = runs.with_columns(n_train=pl.lit(70.0), n_test=pl.lit(20.0))
    return runs if split_fixed is None else runs.with_columns(split_fixed=pl.lit(split_fixed))


def test_seeds_that_re_split_the_cohort_get_the_corrected_interval_and_a_caveat():
    """Seeds that each re-split one cohort overlap in their subjects: the interval of
    s²/n covered the procedure's AUC about three times in four, and the text said
    nothing of the p values counting the seeds as independent."""
    runs = _sized(_runs())
    md = summary_markdown(runs, summarise(runs), _flags())
    assert "**Each seed re-splits one cohort.**" in md
    hgb = np.array(NATURAL["hgb"])
    lo, hi = t_interval(hgb, test_train_ratio=20 / 70)
    plain = t_interval(hgb)
    assert (f"95 % CI {lo:.3f}–{hi:.3f} corrected for the splits' overlap (as independent "
            f"seeds {plain[0]:.3f}–{plain[1]:.3f})") in _section(md, "**Natural missingness**")[0]


def test_an_interval_past_0_or_1_is_clipped_to_the_metrics_range():
    """Four seeds and the overlap's correction gave a balanced accuracy's interval an upper
    bound of 1.071 on the demo."""
    runs = _sized(_runs()).with_columns(n_train=pl.lit(10.0), n_test=pl.lit(100.0))
    md = summary_markdown(runs, summarise(runs), _flags())
    lo, hi = t_interval(np.array(NATURAL["hgb"]), test_train_ratio=10.0)
    assert hi > 1
    assert f"95 % CI {lo:.3f}–1.000 corrected" in _section(md, "**Natural missingness**")[0]


def test_runs_without_their_split_sizes_are_not_said_to_get_the_correction():
    runs = _runs()  # no n_train / n_test (runs written before they were recorded)
    md = summary_markdown(runs, summarise(runs), _flags())
    assert "**Each seed re-splits one cohort.**" in md
    assert "is widened" not in md and "do not record their split sizes" in md
    lo, hi = t_interval(np.array(NATURAL["hgb"]))
    assert f"95 % CI {lo:.3f}–{hi:.3f}, 5 seeds" in _section(md, "**Natural missingness**")[0]


@pytest.mark.parametrize("split_fixed", ["train,val,test", "test"])
def test_a_fixed_split_or_test_set_keeps_the_plain_interval(split_fixed):
    runs = _sized(_runs(), split_fixed)
    md = summary_markdown(runs, summarise(runs), _flags())
    assert "**Each seed re-splits one cohort.**" not in md
    assert "corrected for the splits' overlap" not in md
    lo, hi = t_interval(np.array(NATURAL["hgb"]))
    assert f"95 % CI {lo:.3f}–{hi:.3f}, 5 seeds" in _section(md, "**Natural missingness**")[0]


def test_a_collapsed_run_says_how_much_it_trained():
    """MUSE's official lr 1e-4 and batch 256 give about a hundred optimiser steps on a few
    hundred subjects: the report states it beside the collapse."""
    from mmpipe.report.aggregate import training_effort

    m = {"n_train": 430, "epochs": {"train": 25},
         "training": {"batch_size": 256, "phases": [{"name": "train", "lr": 1e-4}]}}
    assert training_effort(m) == "50 optimiser steps (batch 256, lr 0.0001)"
    two = {"n_train": 100, "epochs": {"phi": [3, 5], "rho": 4},
           "training": {"batch_size": 64, "phases": [{"name": "phi", "lr": 1e-4},
                                                     {"name": "rho", "lr": 1e-3}]}}
    assert training_effort(two) == "18 optimiser steps (batch 64, lr 0.0001/0.001)"
    assert training_effort({"n_train": 10, "training": {}}) is None   # sklearn: no epochs
    # the subjects the model trained on, not the split: a cv refit's training part
    refit = {**m, "n_train": 300, "n_fit": 430, "epochs": {"train": [40, 25, 30]},
             "training": {"batch_size": 256,
                          "phases": [{"name": "train", "lr": 1e-4, "epochs": 25}]}}
    assert training_effort(refit) == "50 optimiser steps (batch 256, lr 0.0001)"
    # a last batch of one subject is skipped by the trainer: 257 subjects make 1 step
    one_over = {**m, "n_train": 257}
    assert training_effort(one_over) == "25 optimiser steps (batch 256, lr 0.0001)"


def test_the_summary_names_the_auc_leader_when_it_differs():
    """A thresholded headline metric can hide a baseline that ranks the subjects best:
    the summary says so in a line of its own."""
    runs = _runs().with_columns(
        pl.when((pl.col("method") == "hgb") & (pl.col("scenario") == "mcar")).then(0.95)
        .otherwise(pl.col("balanced_accuracy") + 0.05).alias("auc"))
    md = summary_markdown(runs, summarise(runs), _flags())
    mcar = _section(md, "**MCAR: 40 % of present entries removed**")
    # standard's one trained seed is mentioned, not ranked, as in the headline
    assert mcar[1] == ("- by AUC the best is **hgb** (baselines), 0.950: **by AUC a simple "
                       "baseline has the best mean here** (standard has a higher mean AUC, "
                       "1.000, over 1 of 5 seeds only: the others have no value)")
    assert not any(line.startswith("- by AUC") for line in _section(md, "**Natural missingness**"))


def test_means_equal_at_the_printed_precision_are_level_not_a_win():
    """0.7498 against 0.7502 prints as 0.750 against 0.750 and the table bolds both: the
    summary must not say that one beats the other."""
    rows = [{"cohort": "c", "feature_set": "all", "method": method, "method_type": TYPES[method],
             "family": FAMILY[method], "scenario": "natural", "rate": 0.0, "seed": seed,
             "balanced_accuracy": value + 0.0001 * (seed - 2), "trained": True,
             "collapsed": False}
            for method, value in (("mmare", 0.7498), ("hgb", 0.7502)) for seed in SEEDS]
    runs = pl.DataFrame(rows)
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    line = next(x for x in lines if "hgb" in x and "mmare" in x and "two-sided p" in x)
    assert line.startswith("- fusion **mmare** and baseline **hgb** level at 0.750")
    assert "beats" not in line
    assert lines[0].startswith("- best: **hgb** (baselines), 0.750")
    assert "level at 0.750 with **mmare**" in lines[0]
    assert "**The best fusion is level with a simple baseline here**" in lines[0]
    assert "has the best mean" not in lines[0]



def _table_runs(table: dict[str, list], scenario: str = "natural", rate: float = 0.0):
    return pl.DataFrame([{"cohort": "c", "feature_set": "all", "method": method,
                          "method_type": TYPES[method], "family": FAMILY[method],
                          "scenario": scenario, "rate": rate, "seed": seed,
                          "balanced_accuracy": v, "trained": v is not None, "collapsed": False}
                         for method, vals in table.items()
                         for seed, v in zip(SEEDS, vals, strict=True)])


def test_a_tie_with_a_baseline_is_said_whichever_is_named_first():
    """0.7502 for the fusion and 0.7498 for the baseline print alike: the statement that
    the best fusion is not ahead came only when the baseline was the one ranked first."""
    runs = _table_runs({"mmare": [0.7502 + 0.0001 * (s - 2) for s in SEEDS],
                        "hgb": [0.7498 + 0.0001 * (s - 2) for s in SEEDS]})
    lead = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")[0]
    assert lead.startswith("- best: **mmare**") and "level at 0.750 with **hgb**" in lead
    assert "**The best fusion is level with a simple baseline here**" in lead


def test_a_baseline_that_trained_on_some_seeds_is_compared_on_the_shared_seeds():
    """hgb's mean over its two trained seeds against mmare's over all five said "hgb beats
    the best fusion", while mmare was ahead on both seeds they share."""
    runs = _table_runs({"mmare": [0.60, 0.62, 0.80, 0.82, 0.61],
                        "hgb": [None, None, 0.79, 0.81, None]})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    line = next(x for x in lines if "baseline **hgb**" in x or "baseline hgb" in x)
    assert "beats" not in line
    assert line.startswith("- fusion **mmare** vs baseline **hgb** (0.800): +0.010 "
                           "(means over the 2 seeds both have a value on)")


def test_a_partial_run_level_with_the_best_is_not_said_to_be_higher():
    """featimpute over 2 of 4 seeds and mmare over all at the same mean: "featimpute has
    a higher mean, 0.750" (the partial best was told apart by identity, not by value)."""
    runs = _table_runs({"mmare": [0.75] * 5, "featimpute": [0.80, 0.70, None, None, None]})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert lines[0].startswith("- best: **mmare**") and "higher mean" not in lines[0], lines[0]


def test_the_single_modality_compared_is_chosen_on_validation_among_whole_runs():
    """The comparator was the single modality best on the test runs it is compared on,
    partial runs included: a modality that trained on one seed of five (0.9 there) hid
    the whole one ahead of the fusion on every seed, and the best of several on test was
    "ahead of the fusion" three times as often as one fixed modality under no
    difference."""
    runs = _table_runs({"mmare": [0.70, 0.71, 0.69, 0.72, 0.70],
                        "single_ct": [0.80, 0.81, 0.82, 0.80, 0.83],
                        "single_cli": [0.90, None, None, None, None]})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    line = next(x for x in lines if "single modality best" in x)
    assert line.startswith("- **single modality best on test single_ct ahead of the "
                           "fusion** mmare: 0.812 vs 0.704; single_ct ahead on 5 of 5 seeds")
    # validation chooses among the whole runs: single_ct2 is best on test, single_ct on
    # validation
    runs = _table_runs({"mmare": [0.70, 0.71, 0.69, 0.72, 0.70],
                        "single_ct": [0.60, 0.62, 0.61, 0.63, 0.60],
                        "single_ct2": [0.80, 0.81, 0.82, 0.80, 0.83]})
    runs = runs.with_columns(pl.when(pl.col("method") == "single_ct").then(0.9)
                             .otherwise(0.6).alias("val_balanced_accuracy"))
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    line = next(x for x in lines if "single modality best" in x)
    assert line.startswith("- fusion **mmare** vs single modality best on validation "
                           "**single_ct** (0.612)"), line


def test_a_fusion_method_short_of_a_seed_is_still_compared():
    """Every fusion method missing one seed and the baselines whole: the summary said "no
    fusion method ran here" and compared nothing, while mmare led hgb on every seed they
    share."""
    runs = _table_runs({"mmare": [0.82, 0.81, 0.80, 0.83, None],
                        "muse": [0.70, None, 0.71, 0.72, 0.70],
                        "hgb": [0.70, 0.71, 0.72, 0.70, 0.71]})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert not any("no fusion method ran" in x for x in lines), lines
    # the lead speaks of the whole rows only: mmare is ahead on the seeds it has
    assert ("no fusion method with a value on every seed beats hgb on average" in lines[0])
    line = next(x for x in lines if "baseline **hgb**" in x)
    assert line.startswith("- fusion **mmare** vs baseline **hgb**"), line
    assert "4 seeds both have a value on" in line


def test_an_auc_tie_names_every_leader_not_the_first_by_name():
    """hgb and mmare at the same mean AUC: the line crowned hgb alone ("a simple baseline
    has the best mean") because it sorted first; with the names swapped the tie went
    unsaid."""
    runs = _table_runs({"mmare": [0.80, 0.78, 0.82, 0.79, 0.81],
                        "hgb": [0.70, 0.71, 0.72, 0.70, 0.71]})
    runs = runs.with_columns(pl.lit(0.7).alias("auc"))
    auc = next(x for x in _section(summary_markdown(runs, summarise(runs), None),
                                   "**Natural missingness**") if x.startswith("- by AUC"))
    assert "**mmare**" in auc and "**hgb**" in auc, auc
    assert "by AUC the fusion leader is level with a simple baseline here" in auc
    assert "has the best mean" not in auc


def test_the_auc_line_names_a_higher_auc_over_some_seeds_only():
    """mmare's AUC 0.9 on 4 of 5 seeds went unmentioned while the line crowned hgb."""
    runs = _table_runs({"mmare": [0.80, 0.78, 0.82, 0.79, 0.81],
                        "hgb": [0.85, 0.84, 0.86, 0.80, 0.83]})
    runs = runs.with_columns(pl.when(pl.col("method") == "hgb").then(0.8)
                             .when(pl.col("seed") == 0).then(None).otherwise(0.9).alias("auc"))
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    auc = next(x for x in lines if x.startswith("- by AUC"))
    assert auc.startswith("- by AUC the best is **hgb**") or "**hgb**" in lines[0], lines
    assert "(mmare has a higher mean AUC, 0.900, over 4 of 5 seeds only" in auc, auc


def test_an_mcar_rate_the_cohort_cannot_lose_is_said():
    """MCAR 0.6 on subjects of two modalities each can remove half of their entries (each
    keeps one); the summary printed "MCAR 60 %" over runs whose masks removed 50 %."""
    runs = _runs().with_columns(mask_rate=pl.lit(0.5), mask_max_mcar_share=pl.lit(0.5),
                                mask_rate_of=pl.lit(200.0))
    runs = pl.concat([runs.filter(pl.col("scenario") == "natural"),
                      runs.filter(pl.col("scenario") == "mcar").with_columns(
                          rate=pl.lit(0.6))])
    md = summary_markdown(runs, summarise(runs), _flags())
    lines = _section(md, "**MCAR: 60 % of present entries removed**")
    assert lines[0] == ("- **the masks removed 50 % of the labelled subjects' present entries, "
                        "not 60 %**: the most that can go while every subject keeps one "
                        "modality, so this group is MCAR 50 %, not the 60 % asked")
    # a rate met to within one entry gets no line, nor does natural
    met = runs.with_columns(mask_rate=pl.when(pl.col("scenario") == "mcar")
                            .then(pl.lit(0.605)).otherwise(None))
    md = summary_markdown(met, summarise(met), _flags())
    assert "the masks removed" not in md
    # off for another reason than the cap: the figures, no cause
    off = runs.with_columns(mask_rate=pl.when(pl.col("seed") % 2 == 0).then(0.4)
                            .otherwise(0.45), mask_max_mcar_share=pl.lit(0.7))
    lines = _section(summary_markdown(off, summarise(off), _flags()),
                     "**MCAR: 60 % of present entries removed**")
    assert lines[0] == ("- **the masks removed 42 % of the labelled subjects' present entries, "
                        "not 60 %** (40 %–45 % across seeds)")



def test_a_test_time_rate_short_of_subjects_with_another_modality_is_said():
    """BD's protocol keeps a test subject's only modality: at 0.8 with a third of the test
    subjects having the clinical record alone, the masks took it from 0.67 of them."""
    runs = _runs().filter(pl.col("scenario") == "mcar").with_columns(
        scenario=pl.lit("testmiss"), rate=pl.lit(0.8), mask_rate=pl.lit(20 / 30),
        mask_rate_of=pl.lit(30.0), mask_max_mcar_share=pl.lit(0.4))
    lines = _section(summary_markdown(runs, summarise(runs), _flags()),
                     TESTMISS_80)
    assert lines[0] == ("- **the masks took the modality from 67 % of the test subjects "
                        "having it, not 80 %**: the others have it as their only modality, "
                        "which the protocol keeps, so this group is 67 % missing at test "
                        "time, not the 80 % asked")
    met = runs.with_columns(mask_rate=pl.lit(24 / 30))
    assert "the masks took" not in summary_markdown(met, summarise(met), _flags())
    # short by more than one subject, level in whole percents: a decimal says it
    near = runs.with_columns(mask_rate=pl.lit(797 / 1000), mask_rate_of=pl.lit(1000.0))
    assert "from 79.7 % of the test subjects having it, not 80 %" in summary_markdown(
        near, summarise(near), _flags())
    # the rate asked reads as the heading prints it: 12.5 % was "not 12 %" under it
    eighth = runs.with_columns(rate=pl.lit(0.125), mask_rate=pl.lit(1 / 30))
    lines = _section(summary_markdown(eighth, summarise(eighth), _flags()),
                     "**Missing at test time: 12.5 % of the test subjects with the modality lose it (BD)**")
    assert lines[0].startswith("- **the masks took the modality from 3 % of the test "
                               "subjects having it, not 12.5 %**"), lines[0]
    assert lines[0].endswith("missing at test time, not the 12.5 % asked")


TESTMISS_80 = ("**Missing at test time: 80 % of the test subjects with the modality lose it "
               "(BD)**")


def _testmiss_runs(**columns) -> pl.DataFrame:
    """The MCAR runs as a testmiss cell at 80 %, whose masks met the rate over 30 test
    subjects, with ``columns`` added."""
    return _runs().filter(pl.col("scenario") == "mcar").with_columns(
        scenario=pl.lit("testmiss"), rate=pl.lit(0.8), mask_rate=pl.lit(24 / 30),
        mask_rate_of=pl.lit(30.0), feature_set_rate=pl.lit(24 / 30),
        feature_set_rate_of=pl.lit(30.0), **columns)

def test_a_feature_set_without_the_removed_modality_is_said_to_be_untouched():
    """A testmiss cell removing the clinical record, run on a slide-only feature set:
    nothing is taken from it, so its "80 %" row is its natural row, and nothing said so."""
    base = _testmiss_runs(scenario_modality_not_held=pl.lit(None, pl.String))
    slide = base.with_columns(feature_set=pl.lit("slide"), feature_set_rate=pl.lit(None),
                              feature_set_rate_of=pl.lit(None),
                              scenario_modality_not_held=pl.lit("clinical"))
    runs = pl.concat([base, slide])
    lines = _section(summary_markdown(runs, summarise(runs), _flags()), TESTMISS_80)
    named = [x for x in lines if "which this scenario removes" in x]
    assert named == ["- **slide does not hold clinical, which this scenario removes**: "
                     "nothing is taken from its test subjects, so its rows here are its "
                     "natural runs, a comparator that never needs the modality"], lines
    # no line where every feature set holds it
    lines = _section(summary_markdown(base, summarise(base), _flags()), TESTMISS_80)
    assert not [x for x in lines if "which this scenario removes" in x]


def test_a_feature_set_that_kept_the_modality_more_often_is_named():
    """The cell's masks met 80 % over the cohort's modalities, so no line was printed,
    while a slide+clinical row gave the clinical record back to every test subject
    without a slide and lost it from 62 % of them under the "80 %" title."""
    base = _testmiss_runs(mask_max_mcar_share=pl.lit(0.4))
    narrow = base.with_columns(feature_set=pl.lit("slide_clinical"),
                               feature_set_rate=pl.when(pl.col("seed") % 2 == 0)
                               .then(16 / 26).otherwise(17 / 26),
                               feature_set_rate_of=pl.lit(26.0))
    runs = pl.concat([base, narrow])
    lines = _section(summary_markdown(runs, summarise(runs), _flags()),
                     TESTMISS_80)
    named = [x for x in lines if "of its test subjects having it" in x]
    assert named == ["- **slide_clinical: the modality was taken from 63.1 % of its test "
                     "subjects having it, not 80 %**: the others have it as their only "
                     "modality of this feature set, which the protocol keeps"], lines
    # above the rate (a store short of subjects), or as short as the cell's masks, which
    # their own line names: no feature-set line
    for above in (0.9, 0.8):
        odd = pl.concat([base, narrow.with_columns(feature_set_rate=pl.lit(above))])
        assert "of its test subjects having it" not in summary_markdown(
            odd, summarise(odd), _flags())
    short = pl.concat([base, base.with_columns(feature_set=pl.lit("slide_clinical"))]
                      ).with_columns(mask_rate=pl.lit(20 / 30), feature_set_rate=pl.lit(20 / 30))
    md = summary_markdown(short, summarise(short), _flags())
    assert "the masks took the modality" in md and "of its test subjects having it" not in md


def test_a_feature_set_trained_more_complete_than_the_level_is_named():
    """A completeness level is drawn over the scenario's modalities; a narrower feature
    set keeps complete the subjects that lost a modality outside it, and its row sat
    under the "25 %" heading without a word."""
    base = _runs().filter(pl.col("scenario") == "mcar").with_columns(
        scenario=pl.lit("completeness"), rate=pl.lit(0.25), mask_rate=pl.lit(50 / 200),
        mask_rate_of=pl.lit(200.0), mask_max_mcar_share=pl.lit(None),
        feature_set_rate=pl.lit(50 / 200), feature_set_rate_of=pl.lit(200.0))
    narrow = base.with_columns(feature_set=pl.lit("slide_clinical"),
                               feature_set_rate=pl.lit(0.625), feature_set_rate_of=pl.lit(200.0))
    runs = pl.concat([base, narrow])
    md = summary_markdown(runs, summarise(runs), _flags())
    named = [x for x in md.splitlines() if "stayed complete" in x]
    assert named == ["- **slide_clinical: 62.5 % of its complete training subjects stayed "
                     "complete in its modalities, not 25 %**: the level is drawn over the "
                     "scenario's modalities, and a subject that lost one outside this "
                     "feature set is complete in it"], md
    # one subject over the level is the level met
    close = pl.concat([base, narrow.with_columns(feature_set_rate=pl.lit(51 / 200))])
    assert "stayed complete" not in summary_markdown(close, summarise(close), _flags())
    # a feature set holding none of the scenario's modalities loses nothing
    age = base.with_columns(feature_set=pl.lit("ct"), feature_set_rate=pl.lit(None),
                            feature_set_rate_of=pl.lit(None),
                            scenario_modality_not_held=pl.lit("wsi, clinical"))
    runs = pl.concat([base.with_columns(scenario_modality_not_held=pl.lit(None, pl.String)),
                      age])
    named = [x for x in summary_markdown(runs, summarise(runs), _flags()).splitlines()
             if "makes incomplete" in x]
    assert named == ["- **ct holds none of wsi, clinical, which this scenario makes "
                     "incomplete**: no subject of it loses a modality, so its rows here are "
                     "its natural runs, a comparator that never needs them"]


def test_a_feature_set_that_lost_more_than_the_mcar_rate_on_every_seed_is_named():
    """A narrower feature set loses more than the MCAR rate (the masks keep each subject
    one of the cohort's modalities, which can lie outside it): runs recorded it, the
    summary said nothing. A difference of either sign across seeds is chance: no line."""
    base = _runs().filter(pl.col("scenario") == "mcar").with_columns(
        mask_rate=0.4 + 0.01 * (pl.col("seed") % 3 - 1), mask_rate_of=pl.lit(600.0),
        mask_max_mcar_share=pl.lit(0.7))
    base = base.with_columns(feature_set_rate=pl.col("mask_rate"),
                             feature_set_rate_of=pl.lit(600.0))
    narrow = base.with_columns(feature_set=pl.lit("imaging"),
                               feature_set_rate=pl.col("mask_rate") + 0.04,
                               feature_set_rate_of=pl.lit(400.0))
    noisy = base.with_columns(feature_set=pl.lit("tables"),
                              feature_set_rate=pl.col("mask_rate")
                              + pl.when(pl.col("seed") % 2 == 0).then(0.02).otherwise(-0.02))
    runs = pl.concat([base, narrow, noisy])
    md = summary_markdown(runs, summarise(runs), _flags())
    named = [x for x in md.splitlines() if "MCAR removed" in x]
    n = runs["seed"].n_unique()
    mean = float(base.unique("seed")["mask_rate"].mean()) * 100
    assert named == [f"- **imaging: MCAR removed {mean + 4:.1f} % of its present entries, not "
                     f"the masks' {mean:.1f} %** (above on each of its {n} seeds): the masks "
                     "keep every subject one modality of the cohort's, which can lie outside "
                     "this feature set"], named


def test_seeds_on_the_cohorts_own_split_are_said_to_differ_by_initialisation_only():
    """BCNB's official split fixes train, val and test for every seed: the summary called
    a fusion ahead of logreg on its 5 initialisations "significant" as if each seed had
    drawn a new split, and logreg's "± 0.000" went unexplained."""
    runs = _runs()
    plain = summary_markdown(runs, summarise(runs), _flags())
    assert "One split for every seed" not in plain
    assert "over initialisations" not in plain
    fixed = runs.with_columns(split_fixed=pl.lit("train,val,test"))
    md = summary_markdown(fixed, summarise(fixed), _flags())
    assert "**One split for every seed.**" in md
    verdicts = [x for x in md.splitlines() if "two-sided p" in x]
    assert verdicts and all("over initialisations on one split" in x for x in verdicts)
    # a split that fixes the test part only redraws train and val per seed
    test_only = runs.with_columns(split_fixed=pl.lit("test"))
    md = summary_markdown(test_only, summarise(test_only), _flags())
    assert "One split for every seed" not in md
    # but every seed scores the same test subjects, which the intervals cannot see
    assert "**One test set for every seed.**" in md
    assert "One test set" not in plain



def test_the_fusion_compared_is_chosen_on_validation_not_on_the_test_runs():
    """The best fusion on the test split was tested against the baselines on the same test
    runs: under a global null of 20 equal methods and 10 seeds, about a quarter of the
    groups called it significantly better. The fusion with the best validation mean is
    compared; the test mean only where there is no validation value."""
    runs = _runs().filter(pl.col("scenario") == "natural")
    # muse is far ahead on validation, mmare on test
    runs = runs.with_columns(pl.when(pl.col("method") == "muse").then(0.9)
                             .otherwise(0.6).alias("val_balanced_accuracy"))
    md = summary_markdown(runs, summarise(runs), None)
    lines = _section(md, "**Natural missingness**")
    assert any(line.startswith("- the fusion compared below is **muse**, the best fusion by "
                               "validation balanced accuracy (0.900; 0.532 on test)")
               for line in lines)
    assert any(line.startswith("- **baseline hgb ahead of the fusion** muse")
               for line in lines), lines
    assert not any("**mmare**" in line and "vs baseline" in line for line in lines)
    # a fusion without a validation value (an AUC undefined on a one-class split) is not
    # chosen, and does not send the whole group back to the test means
    partial = runs.with_columns(pl.when(pl.col("method") == "mmare").then(None)
                                .otherwise(pl.col("val_balanced_accuracy"))
                                .alias("val_balanced_accuracy"))
    assert "the fusion compared below is **muse**, the best fusion by validation" in \
        summary_markdown(partial, summarise(partial), None)
    # no validation value: the best on test, said to be optimistic
    md = summary_markdown(_runs(), summarise(_runs()), _flags())
    assert ("- the fusion compared below is **mmare**, the best on these test runs (no "
            "validation balanced accuracy to choose by), so its p values are optimistic"
            in md)


def test_fusions_level_on_validation_are_parted_by_validation_auc_not_by_name():
    """Small validation splits score in steps: muse and mmare level at 0.700 on validation
    balanced accuracy went to whichever came first in the rows' order, and whether "hgb
    beats the fusion" followed the names. The validation AUC parts them; where it cannot
    either, the line says the validation did not choose."""
    runs = _runs().filter(pl.col("scenario") == "natural").with_columns(
        pl.when(pl.col("method").is_in(["muse", "mmare"])).then(0.7).otherwise(0.6)
        .alias("val_balanced_accuracy"),
        pl.when(pl.col("method") == "muse").then(0.8).otherwise(0.75).alias("val_auc"))
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert ("- the fusion compared below is **muse**, the best fusion by validation balanced "
            "accuracy (0.700; 0.532 on test), level on it with **mmare**, ahead by validation "
            "AUC (0.800), so these test runs do not choose it") in lines, lines
    level = runs.with_columns(pl.lit(0.75).alias("val_auc"))
    lines = _section(summary_markdown(level, summarise(level), None), "**Natural missingness**")
    assert ("- the fusion compared below is **mmare**, the best fusion by validation balanced "
            "accuracy (0.700; 0.800 on test), level on it with **muse** (and on validation "
            "AUC): validation does not tell them apart, and the first by name is the one "
            "compared, so these test runs do not choose it") in lines, lines


def test_fusions_level_on_both_validation_scores_are_compared_first_by_name():
    """The rows' order is feature set then method: muse [all] was compared before
    mmare [ct] although the line said the first in the tables' order (mmare's)."""
    rows = [{"cohort": "c", "feature_set": fs, "method": method, "method_type": method,
             "family": fam, "scenario": "natural", "rate": 0.0, "seed": seed,
             "balanced_accuracy": base + 0.01 * seed, "trained": True,
             "val_balanced_accuracy": 0.7 if fam == "MMARE" or method == "muse" else 0.6,
             "val_auc": 0.75}
            for fs, method, fam, base in (("all", "muse", "attention / graph", 0.70),
                                          ("ct", "mmare", "MMARE", 0.72),
                                          ("ct", "hgb", "baselines", 0.71))
            for seed in range(5)]
    runs = pl.DataFrame(rows)
    md = summary_markdown(runs, summarise(runs), None)
    line = next(x for x in md.splitlines() if x.startswith("- the fusion compared below"))
    assert line.startswith("- the fusion compared below is **mmare"), line
    assert "level on it with **muse" in line and "the first by name is the one compared" in line


def test_a_flag_of_one_feature_set_names_it_when_the_tables_show_several():
    """Whether to name the feature set was judged from the flags alone: when only
    muse [all] collapsed, the section said "muse", which the tables show on two feature
    sets, so the collapse read as the other row's too."""
    runs = pl.concat([_runs(), _runs().with_columns(pl.lit("other").alias("feature_set"))])
    lines = flags_markdown(_flags(), summarise(runs))
    assert any(line.startswith("- **muse [all]**, Natural missingness: collapsed")
               for line in lines), lines


def test_runs_trained_on_more_than_one_kind_of_device_are_said_to():
    """``device`` reruns nothing, so seeds retrained on a GPU node landed beside CPU-trained
    ones and the report read as one reproducible run."""
    runs = _runs()
    plain = summary_markdown(runs.with_columns(device=pl.lit("cpu")),
                             summarise(runs), _flags())
    assert "more than one kind of device" not in plain
    # mmare's seeds 3 and 4 of the natural cell retrained on a GPU
    mixed = runs.with_columns(device=pl.when((pl.col("method") == "mmare")
                                             & (pl.col("scenario") == "natural")
                                             & (pl.col("seed") >= 3))
                              .then(pl.lit("cuda")).otherwise(pl.lit("cpu")))
    md = summary_markdown(mixed, summarise(mixed), _flags())
    [line] = [x for x in md.splitlines() if "more than one kind of device" in x]
    n = len(runs)
    assert f"(cpu: {n - 2} runs, cuda: 2 runs)" in line
    assert line.endswith("different devices: mmare (Natural missingness).")
    # a scikit-learn fit's device is null (collect_runs): a GPU grid is no mixture
    gpu = runs.with_columns(device=pl.when(pl.col("method_type").is_in(["hgb", "logreg"]))
                            .then(pl.lit(None)).otherwise(pl.lit("cuda")))
    assert "more than one kind of device" not in summary_markdown(gpu, summarise(gpu),
                                                                  _flags())


def test_no_side_is_called_better_where_the_ranks_favour_the_side_behind():
    """The fusion ahead by 0.01 on 11 of 12 seeds and collapsed on the last: the baseline's
    mean is higher, and the two-sided p (0.033) came from the fusion's side of the ranks,
    yet the line said "significant: logreg beats the fusion"."""
    fusion = [0.80 + 0.001 * s for s in range(11)] + [0.40]
    base = [v - 0.01 for v in fusion[:11]] + [0.79]
    runs = _six_seeds({"mmare": fusion, "logreg": base})
    md = summary_markdown(runs, summarise(runs), None)
    line = next(x for x in _section(md, "**Natural missingness**") if "two-sided p" in x)
    assert line.startswith("- **baseline logreg ahead of the fusion**")
    assert line.endswith("logreg ahead on 1 of 12 seeds, two-sided p = 0.0332 (the signed "
                         "ranks favour the side behind in mean: no side shown better at "
                         "0.05: not shown to beat the fusion)")


def _two_methods(fusion: list[float], baseline: list[float]) -> list[str]:
    """The summary's lines of MMARE against hgb on these per-seed values (all trained)."""
    rows = [{"cohort": "c", "feature_set": "all", "method": m, "method_type": m,
             "family": family, "scenario": "natural", "rate": 0.0, "seed": s,
             "balanced_accuracy": v, "trained": True, "collapsed": False}
            for m, family, vals in (("mmare", "MMARE", fusion), ("hgb", "baselines", baseline))
            for s, v in enumerate(vals)]
    runs = pl.DataFrame(rows)
    return [line for line in summary_markdown(runs, summarise(runs), None).splitlines()
            if line.startswith("- ")]


def test_a_seed_ahead_by_float_noise_is_not_ahead():
    """Values equal but for their last bits counted as "mmare ahead on 4 of 6 seeds"
    where the test, which rounds them, saw every seed tied."""
    base = [0.05, 0.15, 0.35, 0.45, 0.05, 0.15]
    lines = _two_methods([1 - (1 - v) for v in base], base)
    assert any("level at 0.200; mmare ahead on 0 of 6 seeds" in line for line in lines), lines


def test_means_level_as_shown_are_led_by_the_side_ahead_unrounded():
    """hgb ahead on every seed by less than the shown decimals: the line said the signed
    ranks favoured "the side behind in mean", the fusion leading at 0 of 10 seeds. Then
    it said "hgb beats the fusion" below a lead line calling the two level, "not ahead"
    (with 5 seeds p cannot reach 0.05, so the 5-seed test of level means cannot see it)."""
    fusion = [0.70 + 0.01 * s for s in range(10)]
    lines = _two_methods(fusion, [v + 0.00002 * (s + 1) for s, v in enumerate(fusion)])
    line = next(line for line in lines if line.startswith("- fusion **mmare** and baseline"))
    assert "level at 0.745; hgb ahead on 10 of 10 seeds, two-sided p = 0.00195" in line
    assert "(significant, but by less than 0.001 in mean: level as shown)" in line
    assert "beats" not in line
    assert "**The best fusion is level with a simple baseline here**, not ahead" in lines[0]


def test_a_metric_undefined_on_runs_that_trained_is_not_called_untrained():
    """A test split of one class leaves balanced accuracy undefined on every run: the
    summary said "none trained" above "no run ... failed to train"."""
    lines = _two_methods([float("nan")] * 3, [float("nan")] * 3)
    assert "- no method has a balanced accuracy here (undefined on every run that trained, " \
           "e.g. a test split of one class)" in lines
    assert not any("none trained" in line for line in lines)


def _simple_fusion_runs(table: dict[str, tuple[str, str, list, float]]) -> pl.DataFrame:
    """method -> (type, family, test balanced accuracy per seed, validation value)."""
    return pl.DataFrame([{"cohort": "c", "feature_set": "all", "method": method,
                          "method_type": mtype, "family": fam, "scenario": "natural",
                          "rate": 0.0, "seed": seed, "balanced_accuracy": v,
                          "val_balanced_accuracy": val, "trained": v is not None,
                          "collapsed": False}
                         for method, (mtype, fam, vals, val) in table.items()
                         for seed, v in enumerate(vals)])


def test_a_simple_fusion_that_leads_is_said_and_compared_not_taken_for_the_fusion():
    """Late fusion led the demo's MCAR group and was "the fusion compared": no line said a
    simple method led, and MMARE was never held against it. A simple fusion is one of the
    simple comparators: its lead is said, the fusion compared is one of the papers'
    methods, and it is compared with the best simple fusion on validation."""
    base = [0.70, 0.72, 0.74, 0.71, 0.73]
    runs = _simple_fusion_runs({
        "late_fusion": ("late_fusion", "simple fusion", [v + 0.06 for v in base], 0.80),
        "concat_zero": ("concat_zero", "simple fusion", [v + 0.01 for v in base], 0.70),
        "mmare": ("mmare", "MMARE", base, 0.75),
        "logreg": ("logreg", "baselines", [v - 0.05 for v in base], 0.70)})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert lines[0].startswith("- best: **late_fusion** (simple fusion)"), lines
    assert lines[0].endswith("**A simple fusion has the best mean here**: no other fusion "
                             "method beats late_fusion on average; on 5 seeds no row can be "
                             "told apart from it at 0.05")
    assert any(x.startswith("- the fusion compared below is **mmare**, the best fusion by "
                            "validation") for x in lines), lines
    assert any(x.startswith("- **simple fusion best on validation late_fusion ahead of the "
                            "fusion** mmare: 0.780 vs 0.720") for x in lines), lines
    assert not any("concat_zero" in x for x in lines[1:]), lines
    # level with a paper's method: not ahead
    level = runs.with_columns(pl.when(pl.col("method") == "mmare")
                              .then(pl.col("balanced_accuracy") + 0.06)
                              .otherwise(pl.col("balanced_accuracy")).alias("balanced_accuracy"))
    lead = _section(summary_markdown(level, summarise(level), None), "**Natural missingness**")[0]
    assert lead.endswith("**The best fusion is level with a simple fusion here**, not ahead; "
                         "on 5 seeds no row can be told apart from it at 0.05")
    # only simple fusions ran: the best of them on validation is the fusion compared
    plain = runs.filter(pl.col("method") != "mmare")
    lines = _section(summary_markdown(plain, summarise(plain), None), "**Natural missingness**")
    assert any(x.startswith("- the fusion compared below is **late_fusion**, the best simple "
                            "fusion (no other fusion ran) by validation") for x in lines), lines


def test_single_and_baseline_runs_that_never_trained_are_not_said_not_to_have_run():
    runs = _simple_fusion_runs({
        "mmare": ("mmare", "MMARE", [0.70, 0.72, 0.74, 0.71], 0.75),
        "single_ct": ("single", "single modality", [None] * 4, None),
        "logreg": ("logreg", "baselines", [None] * 4, None)})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert ("- **logreg**, **single_ct** ran but have no balanced accuracy on any seed: "
            "no single-modality or baseline comparison") in lines, lines
    assert not any("no single-modality or baseline run here" in x for x in lines)


def test_fusion_runs_that_never_trained_are_not_said_not_to_have_run():
    """The fusions with no value dropped out of the rows, and the summary said "no fusion
    method ran here" above the flags saying they could not train."""
    runs = _simple_fusion_runs({
        "mmare": ("mmare", "MMARE", [None] * 4, None),
        "single_ct": ("single", "single modality", [0.60, 0.62, 0.61, 0.63], 0.60),
        "logreg": ("logreg", "baselines", [0.70, 0.72, 0.74, 0.71], 0.75)})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert ("- **mmare** ran but has no balanced accuracy on any seed: no fusion "
            "comparison") in lines, lines
    assert not any("no fusion method ran here" in x for x in lines)


def test_the_auc_line_names_the_kind_of_the_simple_run_that_leads():
    """A simple fusion leading by AUC, level with a baseline, was called "a simple
    baseline" (the first kind in the summary's order, not the leader's)."""
    runs = _simple_fusion_runs({
        "mmare": ("mmare", "MMARE", [0.80, 0.82, 0.84, 0.81], 0.85),
        "concat_zero": ("concat_zero", "simple fusion", [0.70, 0.72, 0.74, 0.71], 0.75),
        "logreg": ("logreg", "baselines", [0.70, 0.72, 0.74, 0.71], 0.75)})
    runs = runs.with_columns(auc=pl.when(pl.col("method") == "mmare").then(0.70)
                             .otherwise(0.90))
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    auc = next(x for x in lines if x.startswith("- by AUC"))
    assert auc.startswith("- by AUC the best is **concat_zero** (simple fusion)"), auc
    assert auc.endswith("**by AUC a simple fusion has the best mean here**"), auc


def test_a_fusion_chosen_on_the_score_its_early_stopping_watched_says_so():
    """MMARE stops on validation balanced accuracy, the score the fusion compared is chosen
    by: its validation value is the best of its epochs, and tilted the choice to it."""
    runs = _simple_fusion_runs({
        "mmare": ("mmare", "MMARE", [0.70, 0.72, 0.74, 0.71], 0.80),
        "muse": ("muse", "attention / graph", [0.71, 0.73, 0.70, 0.72], 0.75),
        "logreg": ("logreg", "baselines", [0.69, 0.70, 0.71, 0.72], 0.70)})
    def fusion_line(runs: pl.DataFrame) -> str:
        return next(x for x in _section(summary_markdown(runs, summarise(runs), None),
                                        "**Natural missingness**")
                    if x.startswith("- the fusion compared below"))

    watched = runs.with_columns(pl.when(pl.col("method") == "mmare")
                                .then(pl.lit("balanced_accuracy"))
                                .when(pl.col("method") == "muse").then(pl.lit("auc;loss"))
                                .otherwise(None).alias("monitor"))
    line = fusion_line(watched)
    assert line.endswith("so these test runs do not choose it; its early stopping watched "
                         "validation balanced accuracy too, so that score is the best of its "
                         "epochs and optimistic beside methods that stopped on their loss or "
                         "tried fewer settings")
    other = watched.with_columns(pl.when(pl.col("method") == "mmare").then(pl.lit("loss"))
                                 .otherwise(pl.col("monitor")).alias("monitor"))
    line = fusion_line(other)
    assert line.endswith("so these test runs do not choose it")
    # its tuning trials chosen by that score: the best of its trials, said the same way
    # (a budget's trials judged by the headline score left the choice tilted, unsaid)
    chosen = other.with_columns(pl.when(pl.col("method") == "mmare")
                                .then(pl.lit("balanced_accuracy")).otherwise(pl.lit("auc"))
                                .alias("chosen_by"))
    line = fusion_line(chosen)
    assert line.endswith("so these test runs do not choose it; its tuning trials were chosen "
                         "by validation balanced accuracy too, so that score is the best of "
                         "its trials and optimistic beside methods that stopped on their "
                         "loss or tried fewer settings"), line


def test_a_completeness_level_over_a_handful_of_complete_subjects_is_said():
    """Without `modalities`, a level is drawn over the subjects complete in every modality:
    11 of MMIST-ccRCC's 432 training subjects, so "25 %" changed 8 of them and the group
    was the natural cell under another name, within the rate's one-unit tolerance."""
    base = _runs().filter(pl.col("scenario") == "mcar").with_columns(
        scenario=pl.lit("completeness"), rate=pl.lit(0.25), mask_rate=pl.lit(3 / 11),
        mask_rate_of=pl.lit(11.0), mask_max_mcar_share=pl.lit(None), n_train=pl.lit(432))
    heading = "**Completeness: 25 % of the complete training subjects kept complete (HAM)**"
    lines = _section(summary_markdown(base, summarise(base), _flags()), heading)
    assert lines[0] == ("- **this level was drawn over 11 of the 432 training subjects "
                        "only**, those complete in the scenario's modalities: the others are "
                        "incomplete by nature, so the group differs little from natural "
                        "missingness (name modalities every subject has: `completeness: "
                        "{modalities: [...]}`)"), lines
    most = base.with_columns(mask_rate_of=pl.lit(400.0), mask_rate=pl.lit(100 / 400))
    assert "this level was drawn over" not in summary_markdown(most, summarise(most), _flags())


def test_the_rows_the_test_cannot_tell_from_the_best_are_named_beside_it():
    """A baseline 0.001 ahead of a fusion at p = 0.92 was announced, in bold, as the best
    with "no fusion method beats it", and the fusion best on test went unnamed: only one
    chosen on validation was compared. The opening line now names the rows the tables leave
    without a † (Holm-corrected), and says when every other row is behind."""
    hgb = [.60, .80, .65, .75, .70, .55, .85, .70, .62, .78]
    table = {"hgb": hgb, "mmare": [.62, .78, .66, .73, .70, .57, .83, .69, .63, .78],
             "muse": [v - 0.1 for v in hgb]}
    runs = _six_seeds(table)
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert lines[0].endswith("no fusion method beats hgb on average; not told apart from it "
                             "at 0.05 (Holm-corrected Wilcoxon: no † in the tables): "
                             "**mmare** (MMARE) 0.699"), lines[0]
    behind = _six_seeds({"hgb": hgb, "muse": [v - 0.1 for v in hgb]})
    lines = _section(summary_markdown(behind, summarise(behind), None), "**Natural missingness**")
    assert lines[0].endswith("; every other row is behind it at 0.05 (Holm-corrected)")


def test_one_seed_is_said_to_give_no_spread_interval_or_test():
    """With one seed the text spoke of a widened interval and of "1 seeds"."""
    runs = _runs().filter(pl.col("seed") == 0).with_columns(
        n_train=pl.lit(70), n_val=pl.lit(10), n_test=pl.lit(20))
    md = summary_markdown(runs, summarise(runs), None)
    assert "**One seed.** Every figure below is one run" in md
    assert "re-splits one cohort" not in md and "1 seeds" not in md
    assert "(1 seed)." in md


def test_seeds_that_drew_their_own_masks_on_one_split_are_said_to_differ_by_them():
    """Under MCAR on the cohort's own split the text said the seeds differ by
    initialisation alone and a deterministic method has no spread; each seed's mask
    differs too, and logreg's MCAR scores spread."""
    runs = _runs().with_columns(
        split_fixed=pl.lit("train,val,test"),
        mask_removed=pl.when(pl.col("scenario") == "mcar").then(12).otherwise(0))
    md = summary_markdown(runs, summarise(runs), _flags())
    assert "the mask each seed draws" in md
    assert "has no spread under natural missingness" in md
    mcar = _section(md, "**MCAR: 40 % of present entries removed**")
    natural = _section(md, "**Natural missingness**")
    assert any("over initialisations and masks on one split" in x for x in mcar)
    assert not any("and masks" in x for x in natural)
    assert any("over initialisations on one split" in x for x in natural)


def test_a_block_too_large_for_holm_to_tell_any_row_apart_is_said():
    """Holm multiplies the smallest p by the rows tested: on 7 seeds 2/128 = 0.016 times 4
    rows is 0.0625, so no † could appear, and the summary named the rows behind the best,
    each behind on every seed, as "not told apart from it" as if they were level."""
    top = [.80, .82, .84, .81, .83, .85, .86]
    table = {"mmare": top, **{m: [v - 0.1 - 0.01 * k for v in top]
                              for k, m in enumerate(["hgb", "logreg", "muse", "featimpute"])}}
    runs = _six_seeds(table)
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert lines[0].endswith("; with 4 rows tested against it on 7 seeds, no row can be told "
                             "apart from it at 0.05 after Holm's correction (no corrected "
                             "p can fall below 0.0625), however far behind"), lines[0]
    # three rows: 0.047, a † each
    runs = _six_seeds({m: v for m, v in table.items() if m != "featimpute"})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert lines[0].endswith("; every other row is behind it at 0.05 (Holm-corrected)")


def _ten_seed_runs(table: dict[str, list], val: dict[str, float] | None = None):
    rows = [{"cohort": "c", "feature_set": "all", "method": method,
             "method_type": TYPES[method], "family": FAMILY[method], "scenario": "natural",
             "rate": 0.0, "seed": seed, "balanced_accuracy": v, "trained": v is not None,
             "collapsed": False, "val_balanced_accuracy": (val or {}).get(method)}
            for method, vals in table.items() for seed, v in enumerate(vals)]
    return pl.DataFrame(rows)


_BASE = [0.62, 0.66, 0.64, 0.68, 0.63, 0.67, 0.65, 0.61, 0.69, 0.60]


def test_a_row_short_of_a_seed_and_not_told_apart_is_named_in_the_lead():
    """muse a little behind the best and level with it on the seeds they share (a Holm
    p near 0.5), untrained on one: the lead said every other row was behind the best at
    0.05, and named no muse."""
    noise = [-0.012, 0.008, -0.010, 0.006, -0.009, 0.011, -0.007, 0.005, -0.013]
    runs = _ten_seed_runs({
        "mmare": [b + 0.05 for b in _BASE],
        "muse": [None, *(b + 0.05 + e for b, e in zip(_BASE[1:], noise, strict=True))],
        "logreg": list(_BASE)})
    lead = _section(summary_markdown(runs, summarise(runs), None),
                    "**Natural missingness**")[0]
    assert lead.startswith("- best: **mmare**"), lead
    assert "every other row is behind" not in lead, lead
    assert "not told apart from it" in lead and "**muse** (attention / graph, 9 of 10 seeds)" in lead


def test_a_row_short_of_a_seed_and_ahead_on_the_seeds_it_has_is_said_ahead():
    """mmare ahead of muse on all 9 seeds both have (Holm p 0.004), untrained on one: the
    lead named muse best and said every other row was behind it."""
    runs = _ten_seed_runs({"mmare": [None, *(b + 0.06 for b in _BASE[1:])],
                           "muse": [b + 0.02 for b in _BASE], "logreg": list(_BASE)},
                          val={"mmare": 0.80, "muse": 0.70, "logreg": 0.60})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert lines[0].startswith("- best: **muse**"), lines[0]
    assert ("ahead of it at 0.05 (Holm-corrected) on the seeds both have a value on: "
            "**mmare** (MMARE) 0.708 against 0.668 on 9 seeds") in lines[0], lines[0]
    assert "the rest are behind it at 0.05" in lines[0]  # logreg
    # validation ranks mmare first, but the choice is among the whole rows: said so
    fusion = next(x for x in lines if x.startswith("- the fusion compared below"))
    assert fusion.startswith("- the fusion compared below is **muse**"), fusion
    assert fusion.endswith("; chosen among the fusions with a value on every seed (left "
                           "out: mmare, 9 of 10 seeds)"), fusion


def test_a_fusion_method_on_one_modality_is_not_the_single_modality_compared():
    """A clinical-only MMARE is of the single-modality family, but its validation score,
    stopped on the metric, made it "the single modality best on validation" over the
    protocol's single run, which beats the fusion: the fusion was said to win."""
    runs = _simple_fusion_runs({
        "mmare_all": ("mmare", "MMARE", [0.72, 0.73, 0.74, 0.72, 0.73], 0.72),
        "mmare_clin": ("mmare", "single modality", [0.62, 0.61, 0.63, 0.62, 0.62], 0.80),
        "single_clin": ("single", "single modality", [0.76, 0.77, 0.75, 0.76, 0.76], 0.75)})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    line = next(x for x in lines if "single modality best on validation" in x)
    assert "single_clin" in line and "mmare_clin" not in line, line


def test_fusion_methods_that_ran_on_one_modality_each_are_named():
    """Every feature set of one modality: "no fusion method ran here" while MMARE ran, and
    "no fusion method beats it" of a block that had none."""
    runs = _simple_fusion_runs({
        "mmare": ("mmare", "single modality", [0.77, 0.78, 0.76, 0.77, 0.77], 0.80),
        "hgb": ("hgb", "baselines", [0.70, 0.71, 0.72, 0.70, 0.71], 0.72)})
    lines = _section(summary_markdown(runs, summarise(runs), None), "**Natural missingness**")
    assert lines[0].startswith("- best: **mmare** (single modality)"), lines
    assert "**One modality alone has the best mean here**;" in lines[0], lines[0]
    assert "- no fusion method ran here on more than one modality: **mmare** ran on one, " \
           "with the single modalities" in lines, lines
