"""The one rule by which a table's text is a number: the manifest's numeric fields are
cleaned by it (:func:`mmpipe.cohorts.manifest.clean_table_fields`) and the tabular
encoder reads its fields by it, so a value is a number in both or in neither."""

from __future__ import annotations

import math
import re

# A number, once surrounding whitespace is stripped: an optional sign, digits with an
# optional decimal point (or a leading point), an optional exponent ("1e3", "2.5E-1").
# Not numbers: "nan", "inf", "infinity" (in any case, and NaN/inf floats: no encoder can
# use them), a decimal comma or thousands separator ("1,5", "1,000"), "1_000", hex,
# units ("45y"), comparisons ("<5"), and anything else.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_INT64_MAX = 2**63 - 1


def is_integer_text(text: str) -> bool:
    """Whether ``text`` is written as an integer (of any size: beyond int64,
    :func:`parse_number` gives it as a float)."""
    return bool(_INTEGER.fullmatch(text.strip()))


def parse_number(text: str) -> int | float | None:
    """``text`` as an int (within int64) or a finite float, or None when it is not a
    number by the rule above."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    if _INTEGER.fullmatch(text):
        n = int(text)
        if abs(n) <= _INT64_MAX:
            return n
    try:
        x = float(text)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None
