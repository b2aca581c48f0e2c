"""Checks of a cohort's table fields against each other and against its labels.

Neither refuses the cohort: each returns the reasons the manifest writes as column QC
rows (``qc/adapter.parquet``) and logs as warnings.

- :func:`case_variants`: a text field whose values differ only in case or surrounding spaces
  (``male``, ``Male``, ``MALE``). The tabular encoding makes each spelling a category of
  its own, so one sex is split over several one-hot columns, and a spelling only test
  subjects have is a column training never saw; the text encoder's uncased tokenizer
  reads them alike, so the two encodings of one table disagree; a prompt's value map
  matches the spelling it names only.
- :func:`label_proxies`: a field that separates a label's classes exactly on the
  labelled subjects, by its values or by which subjects leave it blank (a vital status
  beside a survival label, a date of death blank for every survivor). Such a field is
  most often recorded with or after the outcome, and a method reading it learns the
  label. A check of at least :data:`PROXY_MIN_SUBJECTS` subjects and
  :data:`PROXY_MIN_CLASS` of each class, so that a small cohort or a rare class does not
  meet it by chance: categories must hold two subjects each on average, and a number
  separates a two-class label by a threshold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import polars as pl

# the fewest labelled subjects (with a value, for the values' test) a proxy is claimed on,
# and the fewest of each class among them: a class of one or two subjects is set apart
# from the others by some number of every record by chance
PROXY_MIN_SUBJECTS = 20
PROXY_MIN_CLASS = 5


def _shown(values: Iterable[str], n: int = 5) -> str:
    values = list(values)
    return ", ".join(repr(v) for v in values[:n]) + (" ..." if len(values) > n else "")


def case_variants(frame: pl.DataFrame, fields: Iterable[str]) -> list[str]:
    """One reason per text field whose values differ only in case or surrounding spaces."""
    reasons = []
    for name in fields:
        col = frame.get_column(name)
        if col.dtype != pl.Utf8:
            continue
        spellings: dict[str, set[str]] = defaultdict(set)
        counts: dict[str, int] = defaultdict(int)
        for value in col.drop_nulls().to_list():
            spellings[value.strip().casefold()].add(value)
            counts[value] += 1
        twins = [sorted(group) for group in spellings.values() if len(group) > 1]
        if twins:
            shown = "; ".join(", ".join(f"{v!r} ({counts[v]})" for v in group)
                              for group in twins[:3])
            reasons.append(f"table field {name!r}: values that differ only in case or "
                           "surrounding spaces are separate categories to the tabular "
                           f"encoding and a prompt's value map: {shown}. Write each one way "
                           "in the source")
    return reasons


def _separates(values: list, classes: list[str], numeric: bool) -> bool:
    """Whether ``values`` tell the ``classes`` of their subjects apart exactly."""
    counts = Counter(classes)
    if len(values) < PROXY_MIN_SUBJECTS or len(counts) < 2 or min(counts.values()) < PROXY_MIN_CLASS:
        return False
    if numeric:
        if len(set(classes)) != 2:
            return False
        a, b = sorted(set(classes))
        of_a = [v for v, c in zip(values, classes, strict=True) if c == a]
        of_b = [v for v, c in zip(values, classes, strict=True) if c == b]
        return max(of_a) < min(of_b) or max(of_b) < min(of_a)
    by_value: dict[object, set[str]] = defaultdict(set)
    for v, c in zip(values, classes, strict=True):
        by_value[v].add(c)
    # an identifier-like field, a value a subject, separates any label
    return 2 * len(by_value) <= len(values) and all(len(c) == 1 for c in by_value.values())


def label_proxies(frame: pl.DataFrame, fields: Iterable[str], labels: Iterable[str]
                  ) -> list[str]:
    """One reason per (field, label) where the field tells the label's classes apart on
    the labelled subjects: by its values, or by which subjects leave it blank."""
    reasons = []
    for label in labels:
        labelled = frame.filter(pl.col(label).is_not_null())
        classes = [str(c) for c in labelled[label].to_list()]
        for name in fields:
            if name == label:
                continue
            col = labelled.get_column(name)
            values = col.to_list()
            blank = [v is None for v in values]
            if 0 < sum(blank) < len(values) and _separates(blank, classes, numeric=False):
                blank_of = sorted({c for c, b in zip(classes, blank, strict=True) if b})
                reasons.append(f"table field {name!r} is blank exactly for the subjects of "
                               f"label {label!r} {_shown(blank_of)} ({sum(blank)} of "
                               f"{len(values)} labelled): its blanks give the label away; "
                               "a field recorded after the outcome leaks it")
                continue
            kept = [(v, c) for v, c in zip(values, classes, strict=True) if v is not None]
            if not kept:
                continue
            numeric = col.dtype.is_numeric()
            if _separates([v for v, _ in kept], [c for _, c in kept], numeric):
                how = "by a threshold" if numeric else "by its values"
                reasons.append(f"table field {name!r} separates the classes of label "
                               f"{label!r} exactly {how} on the {len(kept)} labelled "
                               "subjects with a value: a field recorded with or after the "
                               "outcome leaks it")
    return reasons
