"""A table's value as a category: one spelling for the tabular encoding and the clinical
prompts, which must agree on which values are one category and which codes are blank.
A module of its own, so that an edit of the tabular encoding reruns no prompt and no
text store."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from mmpipe.cohorts.numbers import is_integer_text, parse_number

MISSING = "missing"


def canonical_value(value: Any) -> str | None:
    """A value as a category string; None for blank. Integral floats lose their ``.0``
    so ``2``, ``2.0`` and ``"2"`` are the same category (CSV readers disagree on them)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value).strip()
    # text that is a number is that number: "2.0" in a column of text (it holds an "X")
    # and 2.0 in a column of numbers are one category, and "-1.0" is the code -1; an
    # integer beyond int64, which parse_number gives as a float, keeps its own digits
    if (number := parse_number(text)) is not None:
        return canonical_value(int(text) if is_integer_text(text) else number)
    return text if text and text.lower() != MISSING else None


def canonical_codes(codes: Iterable[Any]) -> list[str]:
    """``missing_values`` codes as :func:`canonical_value` reads values, sorted."""
    return sorted({c for c in map(canonical_value, codes) if c is not None})
