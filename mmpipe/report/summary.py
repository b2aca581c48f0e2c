"""The opening of ``results.md``: per (scenario, rate), natural first, in a few lines.

For each group: the best method on the headline metric with its interval, and in bold
when a simple comparator leads or is level, and the rows the tables' † test (Holm-corrected)
does not tell apart from it, so a bold best is not read as a clear winner, or tells to be
ahead of it (a row short of a seed, which the best's ranking among the rows with every
seed leaves out, ahead on the seeds both have); whether the *fusion* method best on
validation beats the single-modality run and the simple fusion best on validation, and
each baseline;
which runs collapsed, kept their first epoch or could not train. Method types are grouped by
:data:`mmpipe.methods.families.FAMILIES`: ``baselines``, ``single modality`` and ``simple
fusion`` (late fusion, concatenation, DeepSets, complete-case Standard and BD's Filling,
mean and kNN imputation) are the simple
comparators; every other
family is a fusion method, of which the one compared is chosen (a simple fusion only
where no other ran); a fusion method's run on one modality is of the single-modality
family (``report.aggregate.run_family``), though the single modality compared is chosen
among the ``single`` method's runs, trained as the protocol's reference. The fusion's line
says when its early stopping watched the validation score it was chosen by (MMARE's
balanced accuracy), or its tuning trials were chosen by it: that score is then the best
of its epochs or trials, optimistic beside a method that stopped on its loss, and no
validation score is free of such a tilt, since every method selects on one.

Statistics, stated in the text too:

- interval: mean ± std over seeds (sample std, ddof=1) and a 95 % confidence interval of
  the mean from the t distribution over seeds; where each seed re-splits the cohort, with
  Nadeau & Bengio's corrected variance (1/n + n_test/n_train)·s² (:func:`t_interval`),
  since seeds that share most training subjects are no independent replicates, and the
  text says the p values below still treat them as such;
- comparison: exact Wilcoxon signed-rank test over seeds, paired by seed (two methods on
  one seed share the split and the missingness mask), two-sided; a significant result
  says the side ahead in mean is better, the fusion or the comparator (a comparator is
  called a win only then), unless the signed ranks favour the other side (ahead by a
  little on most seeds, behind by much on one), when no side is called better. A one-sided test towards whichever mean was higher, as this once ran,
  takes its direction from the data: under no difference it was "significant" in 6 % of
  5-seed and 8 % of 10-seed comparisons, not 5 %. With n seeds the smallest two-sided p
  is 2/2^n (0.0625 for 5 seeds: nothing on 5 seeds or fewer can be significant, and the
  summary says so; 0.002 for 10). The fusion compared is the one with the
  best *validation* mean of the headline metric among those that have one (the test mean
  only where none has): picked on the test runs it tests, its p value was
  "significant" under a global null for about a quarter of 10-seed groups of 20 equal
  methods, not 5 %. The single modality it is compared with is chosen the same way,
  among the single-modality runs with a value on every seed (all of them when none
  has): the best of several on test was "ahead of the fusion" about three times as
  often as one fixed modality. The best method of the opening line is still the best
  on test, so its mean and interval are optimistic; the p values are not corrected for
  the comparators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from mmpipe.bench.flags import COLLAPSE_FLAGS
from mmpipe.methods.families import (
    BASELINE_FAMILY,
    FAMILIES,
    SIMPLE_FUSION_FAMILY,
    SINGLE_FAMILY,
    types_of,
)
from mmpipe.report.aggregate import NOT_HELD_COLUMN, TABLE_METRICS
from mmpipe.report.stats import (
    DECIMALS,
    min_wilcoxon_p,
    paired_tails,
    two_sided,
    wilcoxon_vs_best,
)
from mmpipe.report.tables import (
    LOWER_IS_BETTER,
    SHOWN_DECIMALS,
    SIGNIFICANCE,
    _scenario_key,
    group_label,
    metric_label,
)

# what a flag is called in a sentence, and in what order the summary names them
FLAG_WORDS = {"not_trained": "could not train", "single_class_test": "collapsed to one class",
              "single_class_val": "predicted one class on validation",
              "first_epoch": "kept its first eligible checkpoint",
              "no_checkpoint": "never scored a checkpoint",
              "diverged": "diverged and kept an earlier checkpoint",
              "one_class_validation": "early-stopped on a validation split of one class"}
# a collapsed run whose scores reach this AUC still ranks the subjects (chance is 0.5;
# on the test splits of a few dozen subjects the benchmarks run, an AUC below 0.6 is
# within a couple of standard errors of it)
RANKS_AUC = 0.6
# the validation score that parts fusions level on the headline's validation mean
VAL_AUC = "val_auc_mean"
# the same, after "N method(s)"
_MILDER = {f: FLAG_WORDS[f] for f in ("single_class_val", "no_checkpoint", "diverged",
                                      "one_class_validation")} | {
    "first_epoch": "kept the first eligible checkpoint"}


def _shown(mean: float) -> float:
    """A mean as the summary prints it (3 decimals): claims are decided on these, as the
    tables bold, so 0.7498 against 0.7502 is level, not a win."""
    return round(mean, SHOWN_DECIMALS)


# the simple comparators every fusion method must beat, and what a sentence calls one
# (the first of several that lead): the baselines, one modality alone, and the plain
# fusions (families.SIMPLE_FUSION_FAMILY), which a paper's method is published
# against and which, leading, were called "the best fusion" as if a paper's method led
SIMPLE = {BASELINE_FAMILY: "a simple baseline", SINGLE_FAMILY: "one modality alone",
          SIMPLE_FUSION_FAMILY: "a simple fusion"}


def _simple_kind(families) -> str:
    return next(words for fam, words in SIMPLE.items() if fam in families)


def _labeller(summary: pl.DataFrame):
    several = "feature_set" in summary.columns and summary["feature_set"].n_unique() > 1

    def label(row: dict) -> str:
        return f"{row['method']} [{row['feature_set']}]" if several else row["method"]
    return label


def t_interval(values: Sequence[float], level: float = 0.95,
               test_train_ratio: float | None = None) -> tuple[float, float] | None:
    """Confidence interval of the mean of ``values`` (t distribution); None under 2 values.

    With ``test_train_ratio`` (n_test / n_train of the seeds' splits) the variance of the
    mean is the corrected resampled one of Nadeau & Bengio (Machine Learning 52:239-281,
    2003), (1/n + n_test/n_train)·s², not s²/n: seeds that each re-split one cohort share
    most of their training subjects and some of their test ones, so their scores are not
    independent and s²/n understates the variance: over 10 random 7:1:2 splits of a
    618-subject cohort, a 95 % interval covered the procedure's expected AUC 74 % of the
    time plain and 96 % corrected (``benchmarks/report_statistics.py``)."""
    from scipy.stats import t

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) < 2:
        return None
    factor = 1 / len(v) + (test_train_ratio or 0.0)
    half = t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) * math.sqrt(factor)
    return float(v.mean() - half), float(v.mean() + half)


def _bounded(ci: tuple[float, float] | None, metric: str) -> tuple[float, float] | None:
    """``ci`` clipped to [0, 1] for a metric that is a fraction (all the tables' are): a
    bound past them says only that few seeds leave the interval wide."""
    if ci is None or metric not in TABLE_METRICS:
        return ci
    return max(ci[0], 0.0), min(ci[1], 1.0)


# what the runs record of their split sizes, which the overlap's correction reads
SPLIT_SIZES = frozenset({"n_train", "n_test"})


def _test_train_ratio(runs: pl.DataFrame, row: dict) -> float | None:
    """Mean n_test / mean n_train of a row's runs (which hold :data:`SPLIT_SIZES`); None
    where they do not say."""
    part = _runs_of(runs, row)
    n_test, n_train = part["n_test"].mean(), part["n_train"].mean()
    if n_test is None or n_train is None or not n_train > 0:
        return None
    return float(n_test) / float(n_train)


def _runs_of(runs: pl.DataFrame, row: dict) -> pl.DataFrame:
    """The runs (one a seed) a summary row is the mean of."""
    part = runs.filter((pl.col("feature_set") == row["feature_set"])
                       & (pl.col("method") == row["method"])
                       & _in_group(row["scenario"], row["rate"]))
    if "cohort" in row and "cohort" in runs.columns:
        part = part.filter(pl.col("cohort") == row["cohort"])
    return part


def _seed_values(runs: pl.DataFrame, row: dict, metric: str) -> dict[int, float]:
    part = _runs_of(runs, row)
    return {int(s): float(v) for s, v in part.select("seed", metric).iter_rows()
            if v is not None and not math.isnan(v)}


def _in_group(scenario: str, rate: float) -> pl.Expr:
    """The rows of one (scenario, rate) group (rates compared to rounding)."""
    return (pl.col("scenario") == scenario) & ((pl.col("rate") - rate).abs() < 1e-9)


def _fixed_test(runs: pl.DataFrame) -> bool:
    """Whether every run tested on the cohort's own fixed test part (``split_fixed``
    holds ``test``): its seeds then score the same test subjects."""
    if "split_fixed" not in runs.columns or not len(runs):
        return False
    return all("test" in str(v or "").split(",") for v in runs["split_fixed"].to_list())


def _device_lines(runs: pl.DataFrame, label) -> list[str]:
    """A caveat when the runs trained on more than one kind of device (``device``: cpu,
    cuda). The device is not part of what a training job's output depends on, so
    changing ``device`` (or ``auto`` finding a GPU on another node) reruns nothing, and
    the seeds a later run adds or retrains land beside those trained before: the same
    seed gives other numbers on a GPU than on the CPU (other kernels, other rounding),
    so such a report could not be reproduced on either device without saying so."""
    if "device" not in runs.columns:
        return []
    runs = runs.drop_nulls("device")  # a scikit-learn fit's is null (collect_runs)
    counts = list(runs.group_by("device").len().sort("device").iter_rows())
    if len(counts) < 2:
        return []
    keys = [c for c in ("cohort", "feature_set", "method", "scenario", "rate")
            if c in runs.columns]
    mixed = (runs.group_by(keys, maintain_order=True)
             .agg(pl.col("device").n_unique().alias("n")).filter(pl.col("n") > 1)
             .sort(keys))
    named = [f"{label(r)} ({group_label(r['scenario'], r['rate'])})"
             for r in mixed.iter_rows(named=True)]
    line = ("**Trained on more than one kind of device** ("
            + ", ".join(f"{d}: {n} runs" for d, n in counts)
            + "). A seed trained on a GPU does not give the numbers it gives on the CPU, "
            "and changing the device reruns nothing, so these runs reproduce only on the "
            "device each ran on (`device` in its metrics.json).")
    if named:
        shown = ", ".join(named[:8]) + (f" and {len(named) - 8} more" if len(named) > 8
                                         else "")
        line += f" Seeds of one run that trained on different devices: {shown}."
    return [line, ""]


def _one_split(runs: pl.DataFrame) -> bool:
    """Whether every run's seed trained, validated and tested on the cohort's own split
    (``split_fixed``: train, val and test): its seeds then differ by initialisation only."""
    if "split_fixed" not in runs.columns or not len(runs):
        return False
    return all(set(str(v or "").split(",")) >= {"train", "val", "test"}
               for v in runs["split_fixed"].to_list())


def _compare(runs, metric, fusion: dict, other: dict, label, role: str,
             one_split: bool = False, masked: bool = False) -> str:
    """One line: the fusion compared against ``other``, paired by seed. ``one_split``: the
    seeds share the cohort's own split; ``masked``: each drew its own mask (the test is
    then of initialisations and masks)."""
    lower = metric in LOWER_IS_BETTER
    a, b = _seed_values(runs, fusion, metric), _seed_values(runs, other, metric)
    seeds = sorted(set(a) & set(b))
    name_f, name_o = label(fusion), label(other)
    if not seeds:
        return f"{role} **{name_o}**: no seed where it and {name_f} both have a value"
    # the claim on the seeds both have a value on: two means over different seeds would
    # compare splits, not methods
    fa, fb = float(np.mean([a[s] for s in seeds])), float(np.mean([b[s] for s in seeds]))
    shown_f, shown_o = _shown(fa), _shown(fb)
    over = ("" if len(seeds) == len(a) == len(b) else
            f" (means over the {len(seeds)} seeds both have a value on)")
    other_ahead = shown_f != shown_o and ((shown_o < shown_f) if lower else (shown_o > shown_f))
    if shown_f == shown_o:
        head = f"fusion **{name_f}** and {role} **{name_o}** level at {fb:.3f}{over}"
    elif not other_ahead:
        head = (f"fusion **{name_f}** vs {role} **{name_o}** ({fb:.3f}): "
                f"{shown_f - shown_o:+.3f}{over}")
    else:
        head = (f"**{role} {name_o} ahead of the fusion** {name_f}: {fb:.3f} vs "
                f"{fa:.3f}{over}")
    if len(seeds) < 2:
        return head + f"; {len(seeds)} paired seed(s), no test"
    x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    if lower:  # "better" is lower: the test asks whether the negated value is higher
        x, y = -x, -y
    # two-sided, the side ahead named by the means: a one-sided test towards the side the
    # data put ahead doubles the false claims. The ranks can favour the side behind in mean
    # (ahead on 11 of 12 seeds by a little, behind by much on one): no side is called then
    # level as shown: the side ahead in the unrounded mean leads the test
    other_leads = other_ahead or (shown_f == shown_o and ((fb < fa) if lower else (fb > fa)))
    leader, (x, y) = (name_o, (y, x)) if other_leads else (name_f, (x, y))
    # a seed is ahead by more than float noise, as the test counts differences
    ahead = int(np.sum(np.round(x - y, DECIMALS) > 0))
    tails = paired_tails(x, y)
    p = None if tails is None else two_sided(tails)
    significant = p is not None and p < SIGNIFICANCE and tails[0] <= tails[1]
    level = shown_f == shown_o
    if significant and level:
        # the claims are the printed means': a side ahead on every seed by less than the
        # printed precision is a consistent difference, not a win the tables show
        verdict = (f"significant, but by less than {10 ** -SHOWN_DECIMALS:g} in mean: level "
                   "as shown")
    elif significant:
        verdict = "significant"
    elif p is not None and p < SIGNIFICANCE:
        verdict = (f"the signed ranks favour the side behind in mean: no side shown better "
                   f"at {SIGNIFICANCE:g}")
    else:
        verdict = f"not significant at {SIGNIFICANCE:g}"
    if one_split:  # the seeds redrew no subject: the test is of initialisations
        verdict += f" over initialisations{' and masks' if masked else ''} on one split"
    if other_leads and not (significant and level):
        verdict += (f": {name_o} beats the fusion" if significant
                    else ": not shown to beat the fusion")
    return (head + f"; {leader} ahead on {ahead} of {len(seeds)} seeds, two-sided p = "
            f"{p:.3g} ({verdict})")


def _masks_removed(runs: pl.DataFrame, scenario: str, rate: float) -> bool:
    """Whether any run of the group lost a present modality to its scenario's mask, drawn
    per seed (MCAR, test-time, completeness): its seeds then differ by that mask too."""
    if "mask_removed" not in runs.columns:
        return False
    removed = runs.filter(_in_group(scenario, rate))["mask_removed"].drop_nulls()
    return bool(len(removed)) and bool((removed > 0).any())


def _seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def _not_told_apart(best: dict, others: list[dict], n: int, metric: str, label,
                    tested: int, seed_values) -> str:
    """The clause after the best row: the rows behind it that the Holm-corrected test of
    the tables' † does not tell apart from it (or cannot: fewer than two seeds pair). A bold
    best alone read as a clear winner where the next row was 0.001 behind at p = 0.9.
    ``tested``: the rows of the group with a p, over which Holm corrects. ``others`` holds
    rows without a value on every seed too (``seed_values``: a row's value by seed): the
    test pairs their seeds with the best's, and one crashed seed had dropped a row 0.004
    behind at p = 0.48 from the clause, which then said every other row was behind, or a
    row ahead on every seed both have a value on."""
    if n < 2 or not others:
        return ""  # one run: the paragraph above says so
    if min_wilcoxon_p(n) >= SIGNIFICANCE:
        return f"; on {_seeds(n)} no row can be told apart from it at {SIGNIFICANCE:g}"
    if tested * min_wilcoxon_p(n) >= SIGNIFICANCE:
        # Holm multiplies the smallest p by the rows tested: MMIST-ccRCC's 34 rows on 10
        # seeds give 33 x 0.00195 = 0.064, and the rows named "not told apart" below read
        # as level with it where no test could have told any apart
        return (f"; with {tested} rows tested against it on {_seeds(n)}, no row can be told "
                f"apart from it at {SIGNIFICANCE:g} after Holm's correction (no corrected p "
                f"can fall below {min(1.0, tested * min_wilcoxon_p(n)):.3g}), however far "
                "behind")
    lower = metric in LOWER_IS_BETTER
    col, p_col = f"{metric}_mean", f"{metric}_p_holm"
    ours = seed_values(best)

    def paired(r: dict) -> tuple[float, float, int]:
        """(its mean, the best's mean, the seeds) over the seeds both have a value on."""
        theirs = seed_values(r)
        shared = sorted(set(theirs) & set(ours))
        if not shared:
            return math.nan, math.nan, 0
        return (float(np.mean([theirs[k] for k in shared])),
                float(np.mean([ours[k] for k in shared])), len(shared))

    def ahead(r: dict) -> bool:
        """Better than the best on the seeds both have a value on (the test is two-sided)."""
        mine, best_mean, n_shared = paired(r)
        return bool(n_shared) and (mine < best_mean if lower else mine > best_mean)

    def shown(r: dict) -> str:
        valued = len(seed_values(r))
        part = "" if valued == r["n_seeds"] else f", {valued} of {r['n_seeds']} seeds"
        return f"**{label(r)}** ({r.get('family') or 'other'}{part}) {r[col]:.3f}"

    def shown_ahead(r: dict) -> str:
        """With both means over the shared seeds: its own mean, over other seeds than the
        best's, could print below the best's."""
        mine, best_mean, n_shared = paired(r)
        return (f"**{label(r)}** ({r.get('family') or 'other'}) {mine:.3f} against "
                f"{best_mean:.3f} on {_seeds(n_shared)}")

    apart = [r for r in others if _valued(r.get(p_col)) and r[p_col] < SIGNIFICANCE]
    close = sorted((r for r in others if not any(r is a for a in apart)),
                   key=lambda r: (r[col] if lower else -r[col], label(r)))
    before = [r for r in apart if ahead(r)]
    text = ""
    if before:
        text = (f"; ahead of it at {SIGNIFICANCE:g} (Holm-corrected) on the seeds both have "
                "a value on: " + ", ".join(shown_ahead(r) for r in before))
    if not close:
        rest = "the rest are" if before else "every other row is"
        return text + (f"; {rest} behind it at {SIGNIFICANCE:g} (Holm-corrected)"
                       if len(before) < len(others) else "")
    more = f" and {len(close) - 3} more" if len(close) > 3 else ""
    return text + (f"; not told apart from it at {SIGNIFICANCE:g} (Holm-corrected Wilcoxon: "
                   f"no † in the tables): {', '.join(shown(r) for r in close[:3])}{more}")


def _flag_counts(flags: pl.DataFrame, scenario: str, rate: float) -> dict[tuple, set[int]]:
    """(method label parts, flag) -> seeds, for one group."""
    out: dict[tuple, set[int]] = {}
    if flags is None or not len(flags):
        return out
    part = flags.filter(_in_group(scenario, rate))
    for r in part.iter_rows(named=True):
        out.setdefault((r["feature_set"], r["method"], r["flag"]), set()).add(int(r["seed"]))
    return out


def _flag_lines(counts: dict[tuple, set[int]], n_seeds: dict[tuple, int], several: bool
                ) -> list[str]:
    """The group's flags in at most three lines: who collapsed on the test split and who
    could not train, by name and seed count (most seeds first); the milder flags counted."""
    def who(flag: str) -> list[tuple[str, int, int]]:
        out = []
        for (fs, method, f), seeds in counts.items():
            if f == flag:
                out.append((f"{method} [{fs}]" if several else method, len(seeds),
                            n_seeds.get((fs, method), len(seeds))))
        return sorted(out, key=lambda x: (-x[1] / x[2], x[0]))

    def names(entries: list[tuple[str, int, int]]) -> str:
        by_count: dict[tuple[int, int], list[str]] = {}
        for name, k, n in entries:
            by_count.setdefault((k, n), []).append(name)
        return "; ".join(f"{', '.join(ns)} ({k} of {n} seeds)" for (k, n), ns in by_count.items())

    lines = []
    if collapsed := who("single_class_test"):
        lines.append(f"- collapsed to one class on the test split: {names(collapsed)}")
    if failed := who("not_trained"):
        lines.append(f"- could not train: {names(failed)}")
    if not lines:
        lines.append("- no run collapsed on the test split or failed to train")
    milder = [(len(who(f)), words) for f, words in _MILDER.items()]
    if any(n for n, _ in milder):
        lines.append("- also flagged (see *Flagged runs*): " + ", ".join(
            f"{n} method(s) {words} on some seed" for n, words in milder if n))
    return lines


def summary_markdown(runs: pl.DataFrame, summary: pl.DataFrame, flags: pl.DataFrame | None,
                     metric: str = "balanced_accuracy") -> str:
    """The ``## Summary`` section of ``results.md`` (see the module docstring)."""
    baseline, single, simple_fusion = BASELINE_FAMILY, SINGLE_FAMILY, SIMPLE_FUSION_FAMILY
    col = f"{metric}_mean"
    if col not in summary.columns or not len(summary):
        return ""
    if f"{metric}_p_holm" not in summary.columns:  # as the tables' † reads it
        summary = wilcoxon_vs_best(runs, summary, [metric])
    label = _labeller(summary)
    several = "feature_set" in summary.columns and summary["feature_set"].n_unique() > 1
    lower = metric in LOWER_IS_BETTER
    n_max = int(summary["n_seeds"].max())
    name = metric_label(metric, arrow=False).lower()
    lines = [f"## Summary: {name} on the test split", "",
             f"Per scenario and rate: the best method by {name} (mean ± std over seeds, "
             "sample std; 95 % CI: t interval of the mean over seeds, clipped to [0, 1], "
             "corrected for the overlap of splits where each seed re-splits the cohort); the "
             "*fusion* method "
             "best on validation (every family but the simple comparators: baselines, "
             "single modality and simple fusion) against the single-modality run and the "
             "simple fusion best on validation "
             f"and each baseline ({', '.join(types_of(BASELINE_FAMILY))}), "
             "by an exact Wilcoxon "
             "signed-rank test over seeds, paired by seed (same split and mask), two-sided: a "
             "significant result says the side ahead is better, the fusion or the "
             "comparator (a comparator's win is called only then). With "
             f"{_seeds(n_max)} its smallest p is {min_wilcoxon_p(n_max):.3g} (ahead on every "
             "seed)" + (f", so no comparison on {_seeds(n_max)} can be significant at "
                        f"{SIGNIFICANCE:g}" if min_wilcoxon_p(n_max) >= SIGNIFICANCE else "")
             + ". The fusion compared is "
             "the one with the best validation mean, so the test runs do not choose what "
             "they test; the best method overall is the best on these test runs, so its "
             "mean and interval are optimistic, and the p values are not corrected for the "
             "comparators. Flags: see *Flagged runs* below the tables.", ""]
    one_split = _one_split(runs)
    # seeds that each drew their own split of the cohort (neither part fixed)
    resplit = not one_split and not _fixed_test(runs)
    corrected = resplit and SPLIT_SIZES <= set(runs.columns)
    if n_max < 2:
        lines += [
            "**One seed.** Every figure below is one run: no spread, interval or test, and "
            "a method ahead of another may be ahead by chance alone.", ""]
    elif resplit:
        lines += [
            "**Each seed re-splits one cohort.** Their training sets share most subjects "
            "and their test sets some, so the seeds are not independent samples of the "
            "population the cohort was drawn from: "
            + ("the best method's interval is widened by Nadeau & Bengio's correction for "
               "that overlap (variance (1/n + n_test/n_train)·s²), but "
               if corrected else
               "the intervals below treat them as independent (these runs do not record "
               "their split sizes, which the correction for that overlap needs), and ")
            + "the Wilcoxon p values below still count the seeds "
            "as independent. For two methods equal on that population, p < 0.05 came in "
            "29 % of 10-split comparisons of a simulation, not 5 % "
            "(benchmarks/report_statistics.py): a *significant* difference is one "
            "consistent over these splits of these subjects, not one shown for new "
            "patients.", ""]
    if n_max >= 2 and one_split:
        lines += [
            "**One split for every seed.** The cohort's own split fixes its training, "
            "validation and test subjects, so the seeds differ by initialisation and "
            "sampling (under cross-validation, folds; under a scenario that removes "
            "modalities, the mask each seed draws) alone: the spreads, intervals and p "
            "values below say how stable each method is on these subjects, not how it "
            "would fare on another draw of the cohort, and a deterministic method (logreg, "
            "hgb) has no spread under natural missingness.", ""]
    elif n_max >= 2 and _fixed_test(runs):
        lines += [
            "**One test set for every seed.** The cohort's own split fixes its test "
            "subjects; the seeds redraw training and validation only. The spreads, "
            "intervals and p values below leave out how much another test sample of the "
            "cohort would move the scores, which on a test set of this size may be larger "
            "than the spread over seeds.", ""]
    lines += _device_lines(runs, label)

    def best_of(rs, key=col):
        return (min if lower else max)(rs, key=lambda x: x[key]) if rs else None

    val_col = f"val_{col}"

    def best_on_validation(rs) -> tuple[dict | None, str]:
        """The best by validation mean among the rows that have one, and what the line
        naming it adds about a tie; None when none has one (a row without one, e.g. an
        AUC undefined on a one-class validation split, is not chosen: a test-chosen
        fallback for the whole group would be worse). Small validation splits score in
        steps, so rows level at the printed precision are common: the validation AUC
        parts them, and where it cannot the tie is said, the row compared being the first
        by name, so no reader takes that choice for validation's."""
        scored = [r for r in rs if _valued(r.get(val_col))]
        if not scored:
            return None, ""
        top = _shown(best_of(scored, val_col)[val_col])
        tied = sorted((r for r in scored if _shown(r[val_col]) == top), key=label)
        if len(tied) == 1:
            return tied[0], ""
        by_auc = ([r for r in tied if _valued(r.get(VAL_AUC))] if val_col != VAL_AUC else [])
        if by_auc:
            auc = max(_shown(r[VAL_AUC]) for r in by_auc)
            ahead = [r for r in by_auc if _shown(r[VAL_AUC]) == auc]
            if len(ahead) == 1:
                others = [r for r in tied if r is not ahead[0]]
                return ahead[0], (f", level on it with {_names(others, label)}, ahead by "
                                  f"validation AUC ({auc:.3f})")
            tied = ahead
        how = ("and on validation AUC" if by_auc else "the headline is the AUC"
               if val_col == VAL_AUC else "no validation AUC to part them")
        return tied[0], (f", level on it with {_names(tied[1:], label)} ({how}): validation "
                         "does not tell them apart, and the first by name is the one "
                         "compared")

    def against_chosen(fusion: dict, family: list[dict], complete: list[dict], kind: str,
                       masked: bool) -> str:
        """The fusion against the row of ``family`` (a family's rows) validation chooses,
        among those with a value on every seed where there are any."""
        pool = _whole_first(family, complete)
        chosen, tie = best_on_validation(pool)
        role = f"{kind} best on validation"
        if chosen is None:
            chosen, role = best_of(pool), f"{kind} best on test"
        return ("- " + _compare(runs, metric, fusion, chosen, label, role, one_split, masked)
                + (f" ({label(chosen)} is best on validation{tie})" if tie else "")
                + _left_out(family, pool, valued, label, f"{kind} runs"))

    def valued(r: dict) -> int:
        return len(_seed_values(runs, r, metric))

    groups = sorted(summary.select("scenario", "rate").unique().iter_rows(),
                    key=lambda g: (_scenario_key(g[0]), g[1]))
    for scenario, rate in groups:
        part = summary.filter(_in_group(scenario, rate))
        rows = [r for r in part.iter_rows(named=True)
                if r.get(col) is not None and not math.isnan(r[col])]
        counts = _flag_counts(flags, scenario, rate)
        masked = _masks_removed(runs, scenario, rate)
        n_seeds = {(r["feature_set"], r["method"]): r["n_seeds"]
                   for r in part.iter_rows(named=True)}
        lines.append(f"**{group_label(scenario, rate)}**")
        if short := _rate_short(runs, scenario, rate):
            lines.append(short)
        if few := _few_complete(runs, scenario, rate):
            lines.append(few)
        lines += _feature_set_rate_lines(runs, scenario, rate)
        if not rows:
            trained = sum(r.get("n_trained") or 0 for r in part.iter_rows(named=True))
            why = ("none trained" if not trained else
                   "undefined on every run that trained, e.g. a test split of one class")
            lines += [f"- no method has a {name} here ({why})",
                      *_flag_lines(counts, n_seeds, several), ""]
            continue

        # ranked: methods with a value on every seed they ran; a mean over the few seeds
        # that trained is no fair contest, so such a method is only mentioned
        complete = [r for r in rows if len(_seed_values(runs, r, metric)) == r["n_seeds"]]
        best = best_of(complete or rows)
        partial = best_of(rows)
        fam = best.get("family") or "other"
        values = list(_seed_values(runs, best, metric).values())
        ratio = _test_train_ratio(runs, best) if corrected else None
        plain = _bounded(t_interval(values), metric)
        ci = _bounded(t_interval(values, test_train_ratio=ratio), metric) if ratio else plain
        std = best.get(f"{metric}_std")
        interval = f"{best[col]:.3f}" + ("" if std is None or math.isnan(std) else f" ± {std:.3f}")
        ci_text = ""
        if ci:
            ci_text = f"95 % CI {ci[0]:.3f}–{ci[1]:.3f}"
            if ratio:
                ci_text += (f" corrected for the splits' overlap (as independent seeds "
                            f"{plain[0]:.3f}–{plain[1]:.3f})")
            ci_text += ", "
        n_valued = len(values)
        # a mean over fewer seeds than were run (the others could not train) says so
        seeds_text = (_seeds(n_valued) if n_valued == best["n_seeds"]
                      else f"{n_valued} of {best['n_seeds']} seeds with a value")
        lead = f"- best: **{label(best)}** ({fam}), {interval} ({ci_text}{seeds_text})"
        level = [r for r in complete or rows
                 if r is not best and _shown(r[col]) == _shown(best[col])]
        # the papers' fusion methods (every family but the simple comparators)
        fusions = [r for r in rows if (r.get("family") or "other") not in SIMPLE]
        # who leads, whatever order the tie came in: a fusion method and a simple run
        # level at the printed precision is "not ahead", whichever is named first
        leaders = {(r.get("family") or "other") for r in (best, *level)}
        simple_leaders = leaders & set(SIMPLE)
        if level:
            lead += f"; level at {best[col]:.3f} with " + ", ".join(
                f"**{label(r)}**" for r in level)
        if simple_leaders and leaders - set(SIMPLE):
            lead += (f". **The best fusion is level with {_simple_kind(simple_leaders)} "
                     "here**, not ahead")
        elif fam in SIMPLE:
            # a fusion method ahead over some seeds only is compared below, on the seeds
            # it shares with this one: "no fusion method beats it" would contradict that
            other = "other " if fam == simple_fusion else ""
            which = (f"no {other}fusion method with a value on every seed" if any(
                r[col] != best[col] and best_of([r, best]) is r for r in fusions)
                else f"no {other}fusion method")
            lead += (f". **{SIMPLE[fam].capitalize()} has the best mean here**"
                     + (f": {which} beats {'it' if fam == single else label(best)} on "
                        "average" if any((r.get("family") or "other") not in
                                         (single, baseline) for r in rows) else ""))
        lead += _not_told_apart(best, [r for r in rows if r is not best and r not in level],
                                n_valued, metric, label,
                                sum(_valued(r.get(f"{metric}_p")) for r in rows),
                                lambda r: _seed_values(runs, r, metric))
        if best.get("n_collapsed"):
            lead += f"; it collapsed to one class on {best['n_collapsed']} seed(s)"
        if partial is not best and _shown(partial[col]) != _shown(best[col]):
            lead += (f" ({label(partial)} has a higher mean, {partial[col]:.3f}, over "
                     f"{len(_seed_values(runs, partial, metric))} of {partial['n_seeds']} "
                     "seeds only: the others have no value)")
        lines.append(lead)
        auc_leaders = _auc_leaders(rows, metric)
        # a higher mean AUC over some seeds only is mentioned, as the headline's is
        ahead = (_auc_leaders(rows, metric, whole_only=False) or [None])[0]
        if ahead is not None and _shown(ahead["auc_mean"]) == _shown(auc_leaders[0]["auc_mean"]):
            ahead = None
        if auc_leaders and (auc_leaders != [best] or ahead is not None):
            top = auc_leaders[0]
            fams = [r.get("family") or "other" for r in auc_leaders]
            simple = [f for f in fams if f in SIMPLE]
            # the leader's own kind where it is one (a simple fusion level with a
            # baseline was called "a simple baseline")
            kind = SIMPLE.get(fams[0]) or (_simple_kind(simple) if simple else "")
            line = (f"- by AUC the best is **{label(top)}** ({fams[0]}), "
                    f"{top['auc_mean']:.3f}")
            if len(auc_leaders) > 1:
                line += "; level with " + ", ".join(
                    f"**{label(r)}** ({f})" for r, f in zip(auc_leaders[1:], fams[1:],
                                                            strict=True))
            if simple and len(simple) < len(fams):
                line += f": **by AUC the fusion leader is level with {kind} here**, not ahead"
            elif simple:
                line += f": **by AUC {kind} has the best mean here**"
            if ahead is not None:
                line += (f" ({label(ahead)} has a higher mean AUC, {ahead['auc_mean']:.3f}, "
                         f"over {ahead['auc_n']} of "
                         f"{ahead['n_seeds']} seeds only: the others have no value)")
            lines.append(line)
        # the fusion compared: one of the papers' methods, a simple fusion only where none
        # ran; "none ran" only when no fusion has a value
        simple_fusions = [r for r in rows if r.get("family") == simple_fusion]
        pool = _whole_first(fusions or simple_fusions, complete)
        left_out = _left_out(fusions or simple_fusions, pool, valued, label, "fusions")
        fusion, tie = best_on_validation(pool)
        if fusion is not None:
            lines.append(f"- the fusion compared below is **{label(fusion)}**, the best "
                         + ("fusion" if fusions else "simple fusion (no other fusion ran)")
                         + f" by validation {name} ({fusion[val_col]:.3f}; {fusion[col]:.3f} "
                         f"on test){tie}, so these test runs do not choose it"
                         + _selected_on_it(runs, fusion, metric, name) + left_out)
        else:
            fusion = best_of(pool)
            if fusion is not None:
                lines.append(f"- the fusion compared below is **{label(fusion)}**, the best "
                             f"on these test runs (no validation {name} to choose by), so "
                             f"its p values are optimistic{left_out}")
        if fusion is None:
            # ran, but no seed has a value: "none ran" contradicted the flags below
            idle = sorted((r for r in part.iter_rows(named=True)
                           if (r.get("family") or "other") not in (single, baseline)),
                          key=label)
            # fusion methods that ran on one modality each (run_family): "none ran" hid them
            alone = sorted((r for r in part.iter_rows(named=True)
                            if r.get("family") == single
                            and FAMILIES.get(r.get("method_type")) not in (single, baseline)),
                           key=label)
            lines.append(f"- {_names(idle, label)} ran but {'has' if len(idle) == 1 else 'have'} "
                         f"no {name} on any seed: no fusion comparison" if idle else
                         f"- no fusion method ran here on more than one modality: "
                         f"{_names(alone, label)} ran on one, with the single modalities"
                         if alone else "- no fusion method ran here")
        else:
            # the single modality is chosen as the fusion is, on validation: the best of
            # several on the test runs it is compared on was "ahead of the fusion" three
            # times as often as one fixed modality under no difference
            # the protocol's single-modality runs: a fusion method's run on one modality
            # is of their family, but its validation score, stopped on the metric (MMARE),
            # was the pick over theirs by its optimism alone
            singles = [r for r in rows if r.get("family") == single
                       and FAMILIES.get(r.get("method_type")) == single]
            if singles:
                lines.append(against_chosen(fusion, singles, complete, "single modality",
                                            masked))
            if fusions and simple_fusions:  # the fusion compared is not itself one
                lines.append(against_chosen(fusion, simple_fusions, complete, "simple fusion",
                                            masked))
            bases = sorted((r for r in rows if r.get("family") == baseline), key=label)
            for b in bases:
                lines.append("- " + _compare(runs, metric, fusion, b, label, "baseline",
                                             one_split, masked))
            if not singles and not bases:
                # ran, but no seed has a value (could not train, a metric undefined on
                # every seed): "none ran" contradicted the flags below
                idle = sorted((r for r in part.iter_rows(named=True)
                               if r.get("family") in (single, baseline)), key=label)
                lines.append(f"- {_names(idle, label)} ran but {'has' if len(idle) == 1 else 'have'} "
                             f"no {name} on any seed: no single-modality or baseline "
                             "comparison" if idle else
                             "- no single-modality or baseline run here to compare with")
        lines += [*_flag_lines(counts, n_seeds, several), ""]
    return "\n".join(lines)


def _selected_on_it(runs: pl.DataFrame, row: dict, metric: str, name: str) -> str:
    """What the fusion line adds when the runs' early stopping watched the very
    validation score the fusion was chosen by (MMARE's balanced accuracy), or their
    tuning trials were chosen by it: that score is the best over the epochs, or over the
    trials, and so optimistic beside methods that stopped on their loss or tried fewer
    distinct settings, which tilts the choice towards such a method (the test runs
    compared stay untouched)."""
    own = _runs_of(runs, row)
    watched = ({m for v in own["monitor"].drop_nulls() for m in v.split(";")}
               if "monitor" in runs.columns else set())
    chosen = (metric in set(own["chosen_by"].drop_nulls())
              if "chosen_by" in runs.columns else False)
    how = [words for held, words in ((metric in watched, "its early stopping watched"),
                                     (chosen, "its tuning trials were chosen by")) if held]
    if not how:
        return ""
    best_of = " and ".join(w for held, w in ((metric in watched, "its epochs"),
                                            (chosen, "its trials")) if held)
    return (f"; {' and '.join(how)} validation {name} too, so that score is the best of "
            f"{best_of} and optimistic beside methods that stopped on their loss or tried "
            "fewer settings")


def _valued(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _names(rows: list[dict], label) -> str:
    return ", ".join(f"**{label(r)}**" for r in rows)


def _whole_first(rows: list[dict], complete: list[dict]) -> list[dict]:
    """The rows with a value on every seed (``complete``), else every row (the comparisons
    pair seeds): a mean over the one seed that trained is no fair pick."""
    return [r for r in rows if any(r is c for c in complete)] or rows


def _left_out(rows: list[dict], pool: list[dict], seeds_valued, label, what: str) -> str:
    """What a choice among ``pool`` adds about the ``rows`` :func:`_whole_first` left out
    of it (those without a value on every seed): the best by validation read as the best
    of them all, where one crashed seed had put the row validation ranks first out of it."""
    out = [r for r in rows if not any(r is p for p in pool)]
    if not out:
        return ""
    return (f"; chosen among the {what} with a value on every seed (left out: " + ", ".join(
        f"{label(r)}, {seeds_valued(r)} of {r['n_seeds']} seeds" for r in
        sorted(out, key=label)) + ")")


def _rate_short(runs: pl.DataFrame, scenario: str, rate: float) -> str:
    """A line when the masks of a group realised another value of its rate than asked
    (a seed's mask off by more than one unit, the precision a rate is met to; the masks'
    ``rate`` and ``rate_of``, :func:`mmpipe.bench.missingness.realised_rate`): an MCAR
    rate above what the cohort can lose while every subject keeps a modality, or a
    test-time rate above the share of test subjects with another modality, is met as
    far as it can be. The masks are the cell's, whatever each run's feature set."""
    if "mask_rate" not in runs.columns:
        return ""
    masks = (runs.filter(_in_group(scenario, rate) & pl.col("mask_rate").is_not_null() & (pl.col("mask_rate_of") > 0))
             .unique("seed").sort("seed"))
    off = masks.filter((pl.col("mask_rate") - rate).abs() > 1 / pl.col("mask_rate_of") + 1e-9)
    if not len(off):
        return ""

    realised = masks["mask_rate"]
    mean, lo, hi = float(realised.mean()), float(realised.min()), float(realised.max())
    # a decimal where whole percents would print "60 %, not 60 %"
    digits = 1 if round(mean * 100) == round(rate * 100) else 0

    def pct(x: float) -> str:
        return f"{x * 100:.{digits}f} %"

    spread = "" if pct(lo) == pct(hi) else f" ({pct(lo)}–{pct(hi)} across seeds)"
    what = {"mcar": "removed {} of the labelled subjects' present entries",
            "completeness": "kept {} of the complete training subjects complete",
            "testmiss": "took the modality from {} of the test subjects having it"
            }.get(scenario, "realised {}")
    # the rate asked as the group's heading prints it (tables.group_label)
    line = f"- **the masks {what.format(pct(mean))}, not {rate * 100:g} %**{spread}"
    capped = ((pl.col("mask_rate") - pl.col("mask_max_mcar_share")).abs()
              <= 1 / pl.col("mask_rate_of") + 1e-9)
    if scenario == "mcar" and mean < rate and masks.filter(capped).height == masks.height:
        line += (": the most that can go while every subject keeps one modality, so this "
                 f"group is MCAR {pct(mean)}, not the {rate * 100:g} % asked")
    elif scenario == "testmiss" and mean < rate:
        line += (": the others have it as their only modality, which the protocol keeps, "
                 f"so this group is {pct(mean)} missing at test time, not the {rate * 100:g} % asked")
    return line


# a completeness level drawn over fewer of the training subjects than this share is said
FEW_COMPLETE = 0.5


def _few_complete(runs: pl.DataFrame, scenario: str, rate: float) -> str:
    """A line when a completeness level was drawn over a small share of the training
    split: the complete subjects (in the scenario's modalities, every modality of the
    cohort when it names none) are its units (``mask_rate_of``), and on a naturally
    incomplete cohort they can be a handful, so that "25 % kept complete" changed a few
    subjects and the group is the natural cell under another name."""
    if scenario != "completeness" or not {"mask_rate_of", "n_train"} <= set(runs.columns):
        return ""
    per_seed = (runs.filter(_in_group(scenario, rate) & pl.col("mask_rate_of").is_not_null()
                            & pl.col("n_train").is_not_null())
                .group_by("seed").agg(pl.col("mask_rate_of").first(), pl.col("n_train").max()))
    if not len(per_seed):
        return ""
    complete, train = float(per_seed["mask_rate_of"].mean()), float(per_seed["n_train"].mean())
    if not train or complete >= FEW_COMPLETE * train:
        return ""
    return (f"- **this level was drawn over {complete:.0f} of the {train:.0f} training "
            "subjects only**, those complete in the scenario's modalities: the others are "
            "incomplete by nature, so the group differs little from natural missingness "
            "(name modalities every subject has: `completeness: {modalities: [...]}`)")


def _feature_set_rate_lines(runs: pl.DataFrame, scenario: str, rate: float) -> list[str]:
    """A line per feature set whose runs met a test-time rate below what the cell's masks
    met (beyond one unit, as :func:`_rate_short`, which says when those fell short of the
    rate): the protocol keeps the modality of a subject whose only modality of the
    feature set it is, so a slide+clinical row at "80 %" lost the clinical record from
    fewer test subjects. Its runs' ``feature_set_rate``, which every method of the
    feature set shares on a seed. Under MCAR: :func:`_mcar_feature_set_lines`; under
    completeness: :func:`_completeness_feature_set_lines`."""
    if scenario in ("testmiss", "completeness") and NOT_HELD_COLUMN in runs.columns:
        lines = _not_held_lines(runs.filter(_in_group(scenario, rate)), scenario)
    else:
        lines = []
    if (scenario not in ("testmiss", "mcar", "completeness")
            or "feature_set_rate" not in runs.columns):
        return lines
    own = (runs.filter(_in_group(scenario, rate) & pl.col("feature_set_rate").is_not_null()
                       & (pl.col("feature_set_rate_of") > 0))
           .unique(["feature_set", "seed"]))
    if scenario == "mcar":
        return _mcar_feature_set_lines(own)
    if scenario == "completeness":
        return lines + _completeness_feature_set_lines(own, rate)
    # short of the masks' own rate (the rate where a run predates the masks' record): a
    # store with fewer subjects than the manifest is no reason to say "kept"
    met = (pl.min_horizontal(pl.col("mask_rate").fill_null(rate), pl.lit(rate))
           if "mask_rate" in own.columns else pl.lit(rate))
    return lines + _feature_sets_beyond(
        own, pl.col("feature_set_rate") < met - 1 / pl.col("feature_set_rate_of") - 1e-9,
        lambda feature_set, mean: (
            f"- **{feature_set}: the modality was taken from {mean * 100:.1f} % of its test "
            f"subjects having it, not {rate * 100:g} %**: the others have it as their only "
            "modality of this feature set, which the protocol keeps"))


def _not_held_lines(group: pl.DataFrame, scenario: str = "testmiss") -> list[str]:
    """A line per feature set that does not hold the modality its testmiss cell removes,
    or any of those its completeness cell makes incomplete: nothing is taken from it, so
    its rows are its natural runs (a comparator that never needs the modality, as the
    papers' unimodal rows), not a model that lost it."""
    held = group.filter(pl.col(NOT_HELD_COLUMN).is_not_null()).unique(
        ["feature_set", NOT_HELD_COLUMN])
    if scenario == "completeness":
        return [f"- **{feature_set} holds none of {modalities}, which this scenario makes "
                "incomplete**: no subject of it loses a modality, so its rows here are its "
                "natural runs, a comparator that never needs them"
                for feature_set, modalities in sorted(held.select(
                    "feature_set", NOT_HELD_COLUMN).rows())]
    return [f"- **{feature_set} does not hold {modality}, which this scenario removes**: "
            "nothing is taken from its test subjects, so its rows here are its natural "
            "runs, a comparator that never needs the modality"
            for feature_set, modality in sorted(held.select(
                "feature_set", NOT_HELD_COLUMN).rows())]


def _completeness_feature_set_lines(own: pl.DataFrame, rate: float) -> list[str]:
    """A line per feature set whose training split was more complete than the level (the
    masks' own, met within one subject, where they record it) beyond one of its subjects:
    the level is drawn over the scenario's modalities, and a subject that lost one outside
    a narrower feature set is complete in it, so "25 %" trained such a row on more."""
    met = pl.col("mask_rate").fill_null(rate) if "mask_rate" in own.columns else pl.lit(rate)
    return _feature_sets_beyond(
        own, pl.col("feature_set_rate") > met + 1 / pl.col("feature_set_rate_of") + 1e-9,
        lambda feature_set, mean: (
            f"- **{feature_set}: {mean * 100:.1f} % of its complete training subjects stayed "
            f"complete in its modalities, not {rate * 100:g} %**: the level is drawn over "
            "the scenario's modalities, and a subject that lost one outside this feature set "
            "is complete in it"))


def _feature_sets_beyond(own: pl.DataFrame, beyond: pl.Expr, line) -> list[str]:
    """``line(feature_set, its mean rate)`` for each feature set (in name order) whose
    rate on some seed is ``beyond`` the cell's."""
    return [line(feature_set, float(part["feature_set_rate"].mean()))
            for (feature_set,), part in sorted(own.group_by("feature_set"), key=lambda g: g[0])
            if len(part.filter(beyond))]


# seeds a feature set's MCAR rate must differ from its masks' on, all one way, to be named:
# one way on 3 seeds by chance alone is 1 in 4, on 5 seeds 1 in 16
_MCAR_SEEDS = 3


def _mcar_feature_set_lines(own: pl.DataFrame) -> list[str]:
    """A line per feature set whose MCAR rate (the share of its present entries the masks
    removed) is off the masks' own rate over the cohort's modalities on every seed, the
    same way, by half a point or more on average. The masks keep every subject one
    modality, which may lie outside a narrower feature set, so it loses more: a bias, where
    a difference of either sign from seed to seed is the draw's chance."""
    if "mask_rate" not in own.columns:
        return []
    lines = []
    for (feature_set,), part in sorted(own.group_by("feature_set"), key=lambda g: g[0]):
        part = part.filter(pl.col("mask_rate").is_not_null())
        diff = (part["feature_set_rate"] - part["mask_rate"]).to_numpy()
        if (len(diff) < _MCAR_SEEDS or not ((diff > 0).all() or (diff < 0).all())
                or abs(diff.mean()) < 0.005):
            continue
        mine, masks = float(part["feature_set_rate"].mean()), float(part["mask_rate"].mean())
        way = "above" if diff.mean() > 0 else "below"
        lines.append(f"- **{feature_set}: MCAR removed {mine * 100:.1f} % of its present "
                     f"entries, not the masks' {masks * 100:.1f} %** ({way} on each of its "
                     f"{len(diff)} seeds): the masks keep every subject one modality of the "
                     "cohort's, which can lie outside this feature set")
    return lines


def _auc_leaders(rows: list[dict], metric: str, *,
                 whole_only: bool = True) -> list[dict]:
    """The rows with the best mean AUC at the printed precision, the highest first, when
    the headline metric is another one: a ranking metric can crown a baseline that the
    thresholded headline does not. Ranked among rows with an AUC on every seed they ran
    (as the headline), else among those with one; a tie is named, not decided by name.
    ``whole_only=False`` ranks every row with a value."""
    if metric == "auc":
        return []
    valued = [r for r in rows if r.get("auc_mean") is not None and not math.isnan(r["auc_mean"])]
    whole = [r for r in valued if whole_only and r["auc_n"] == r["n_seeds"]]
    pool = sorted(whole or valued, key=lambda r: -r["auc_mean"])
    return [r for r in pool if _shown(r["auc_mean"]) == _shown(pool[0]["auc_mean"])] if pool else []


def _collapse_diagnosis(rows: list[dict]) -> str:
    """Why a run predicted one class, read from its AUC on that split: scores that still
    rank the subjects (AUC >= :data:`RANKS_AUC`) mean the decision threshold collapsed
    (an under-trained or prior-dominated head: its AUC can be read, its balanced accuracy
    and F1 cannot); scores near chance mean it learnt nothing the split can see."""
    aucs = [r["auc"] for r in rows if r.get("auc") is not None]
    if not aucs:
        return ""
    auc = float(np.mean(aucs))
    if auc >= RANKS_AUC:
        return (f"; its scores still rank the subjects (AUC {auc:.2f} on these seeds): the "
                "class threshold collapsed, not the ranking, so read its AUC, not its "
                "balanced accuracy or F1")
    return (f"; its scores do not rank the subjects either (AUC {auc:.2f} on these seeds): "
            "it learnt nothing this split can see")


def flags_markdown(flags: pl.DataFrame, summary: pl.DataFrame | None = None) -> list[str]:
    """The ``## Flagged runs`` section: per method, group and flag, on how many of the
    cell's seeds (``summary``'s ``n_seeds``) and why (the distinct reasons, the first two)."""
    if flags is None or not len(flags):
        return []
    n_seeds = {}
    if summary is not None and len(summary):
        n_seeds = {(r["method"], r["feature_set"], r["scenario"], round(r["rate"], 6)):
                   r["n_seeds"] for r in summary.iter_rows(named=True)}
    # the feature sets of the tables, not of the flags: mmare's one flagged feature set was
    # named "mmare", which the tables show on three
    shown = summary if summary is not None and len(summary) else flags
    several = shown["feature_set"].n_unique() > 1
    lines = ["## Flagged runs", "",
             "Runs to read with care: *collapsed* = every prediction of the split is one "
             "class (chance-level balanced accuracy, whatever the AUC); *first eligible "
             "checkpoint* = early stopping kept the first epoch it could (epoch 1, or "
             "`min_epochs`); *never scored a checkpoint* = the monitored score was undefined "
             "at every epoch, so the last weights stand; *diverged* = a later epoch turned "
             "non-finite and an earlier checkpoint stands; *early-stopped on a validation "
             "split of one class* = its checkpoint could not tell the classes apart; *not "
             "trained* = NaN metrics, prior predictions. Counts are seeds of the cell. A not-trained seed "
             "is left out of the tables' means and tests (their Seeds column reads "
             "trained/run); every other flagged seed is in them, as it scored.", ""]
    order = {f: i for i, f in enumerate(FLAG_WORDS)}
    keyed: dict[tuple, list[dict]] = {}
    for r in flags.iter_rows(named=True):
        keyed.setdefault((r["method"], r["feature_set"], r["scenario"], r["rate"], r["flag"]),
                         []).append(r)
    for (method, fs, scenario, rate, flag), rs in sorted(
            keyed.items(), key=lambda kv: (kv[0][0], kv[0][1], _scenario_key(kv[0][2]),
                                           kv[0][3], order.get(kv[0][4], 99))):
        seeds = sorted({int(r["seed"]) for r in rs})
        reasons = list(dict.fromkeys(r["reason"] for r in rs))
        more = f" (and {len(reasons) - 2} other wordings)" if len(reasons) > 2 else ""
        name = f"{method} [{fs}]" if several else method
        total = n_seeds.get((method, fs, scenario, round(rate, 6)))
        of = f" of {total}" if total else ""
        # why a run collapsed or stopped at once: how much it trained
        efforts = sorted({r["effort"] for r in rs if r.get("effort")},
                         key=lambda e: int(e.split()[0]))
        effort = ""
        if efforts and flag != "not_trained":
            effort = (f"; trained {efforts[0]}" if len(efforts) == 1 else
                      f"; trained {efforts[0]} … {efforts[-1]}")
        why = _collapse_diagnosis(rs) if flag in COLLAPSE_FLAGS else ""
        lines.append(f"- **{name}**, {group_label(scenario, rate)}: "
                     f"{FLAG_WORDS.get(flag, flag)} on {len(seeds)}{of} seeds "
                     f"(seed {', '.join(map(str, seeds))}): {'; '.join(reasons[:2])}{more}"
                     f"{why}{effort}")
    return lines + [""]
