"""Tabular encoding of clinical/genomic fields: standardised numbers, one-hot categories.

The encoding is fitted once and stored (``to_dict``) with the features, so the
exact columns, categories and statistics behind every vector are known. Blanks
never disappear: each field gets a ``{field}=missing`` column, numeric blanks
become 0 (the fit mean after standardisation) with that indicator set, and
categorical blanks are their own category. Sentinel codes such as MMIST's
``-1`` = unknown are mapped to blank through ``missing_values``; numerically
coded categoricals (AJCC stage codes) are one-hot through ``categorical``.

The pipeline fits it on the whole cohort in stage 1; stage 2's ``zscore`` and ``l2``
refit the numbers' statistics and blank imputation on each training split
(:class:`mmpipe.bench.data.Normalizer`), so the test subjects reach no model's features
(under ``normalize: none`` the cohort's scaling stays, see :mod:`mmpipe.encode.tabular`).

A value the fitted encoding cannot place (a category not seen when fitting, which is
encoded as all zeros; a text or inf in a numeric field, which is encoded as blank) never
vanishes: ``transform(df, unplaced=[])`` appends one :class:`Unplaced` per such value,
and a warning is logged once per field. A float NaN is a blank, as in a CSV (the
manifest records the NaN it blanks, so the pipeline never brings one here).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from mmpipe.cohorts.numbers import parse_number
from mmpipe.encoders.categories import MISSING, canonical_codes, canonical_value
from mmpipe.errors import ConfigError, InputError
from mmpipe.preprocess.blank_codes import warn_of_codes_matching_nothing

log = logging.getLogger(__name__)

_VERSION = 1


class Unplaced(NamedTuple):
    """A value of row ``row`` (0-based, in the transformed frame) that the encoding could
    not place: ``why`` is ``"unseen"`` (a category the fit never saw; all zeros) or
    ``"not_a_number"`` (a numeric field's text or inf; encoded as blank)."""

    row: int
    field: str
    value: str
    why: str

    def describe(self) -> str:
        if self.why == UNSEEN:
            return (f"{self.field} = {self.value!r} is a category not seen when the encoding "
                    "was fitted (encoded as all zeros)")
        return (f"{self.field} = {self.value!r} is not a number in a numeric field (encoded "
                "as blank)")


UNSEEN, NOT_A_NUMBER = "unseen", "not_a_number"


def _number_or_none(value: str | None) -> float | None:
    """A finite number by the manifest's rule (no NaN/inf, no "1_000"), or None."""
    number = None if value is None else parse_number(value)
    return None if number is None else float(number)


def _sort_key(cat: str) -> tuple[int, float, str]:
    """Numbers first, by value (by the manifest's rule: "-nan" is text, whose float() NaN
    key left the column order to the set's hash order), then text."""
    number = parse_number(cat)
    return (1, 0.0, cat) if number is None else (0, float(number), cat)


class TabularEncoding:
    """Fit on a polars DataFrame, then transform rows to ``float32 [n, n_features]``."""

    def __init__(self, fields: Sequence[str], categorical: Iterable[str] = (),
                 missing_values: Mapping[str, Sequence[Any]] | Sequence[Any] | None = None) -> None:
        if not fields:
            raise ConfigError("tabular encoding needs at least one field")
        self.fields = list(fields)
        self.categorical = sorted(set(categorical))
        unknown = [f for f in self.categorical if f not in self.fields]
        if unknown:
            raise ConfigError(f"tabular: categorical fields {unknown} are not among the fields "
                              f"{self.fields}")
        self.missing_values: dict[str, list[str]] | list[str]
        if missing_values is None:
            self.missing_values = []
        elif isinstance(missing_values, Mapping):
            self.missing_values = {str(f): canonical_codes(v) for f, v in missing_values.items()}
        else:
            self.missing_values = canonical_codes(missing_values)
        self.columns: list[dict[str, Any]] | None = None
        self._warned: set[str] = set()

    # -- configuration and state ---------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], fields: Sequence[str]) -> TabularEncoding:
        """From an ``encoders:`` entry of type ``tabular`` and the modality's fields. One
        entry may serve several table modalities (MMIST-ccRCC's clinical and genomic
        records): its ``categorical`` fields and per-field ``missing_values`` are read for
        the fields this modality has (the config check refuses a name no modality has)."""
        missing = cfg.get("missing_values")
        if isinstance(missing, Mapping):
            missing = {f: v for f, v in missing.items() if f in fields}
        return cls(fields, categorical=[f for f in cfg.get("categorical") or () if f in fields],
                   missing_values=missing)

    def _sentinels(self, field: str) -> set[str]:
        if isinstance(self.missing_values, dict):
            return set(self.missing_values.get(field, ()))
        return set(self.missing_values)

    def _values(self, df: pl.DataFrame, field: str) -> list[str | None]:
        """Canonical strings of a column, with blanks and sentinels as None."""
        sentinels = self._sentinels(field)
        out = []
        for v in df.get_column(field).to_list():
            c = canonical_value(v)
            out.append(None if c is None or c in sentinels else c)
        return out

    def all_missing(self, df: pl.DataFrame) -> list[bool]:
        """Per row of ``df``: every field blank or one of its ``missing_values``. The
        manifest counts a table present when one field is not blank; a row of sentinels
        only ("-1" = unknown everywhere) holds no value either."""
        self._check_fields(df)
        rows = [True] * df.height
        for field in self.fields:
            rows = [r and v is None for r, v in zip(rows, self._values(df, field), strict=True)]
        return rows

    def _check_fields(self, df: pl.DataFrame) -> None:
        missing = [f for f in self.fields if f not in df.columns]
        if missing:
            raise ConfigError(f"tabular: fields {missing} are not columns of the table "
                              f"(columns: {df.columns})")

    # -- fit / transform ----------------------------------------------------------------
    def fit(self, df: pl.DataFrame) -> TabularEncoding:
        self._check_fields(df)
        values_of = {field: self._values(df, field) for field in self.fields}
        empty = [f for f, values in values_of.items() if all(v is None for v in values)]
        if empty:
            # harmless here (a constant =missing column), and common in a small cohort (a
            # field blank for 88 % of MMIST-ccRCC's patients); fitted on nothing (a list of
            # no category, or a numeric field of mean 0 and spread 1), it misplaces the
            # values of a cohort given this encoding (encoding_from)
            coded = any(self._sentinels(f) for f in empty)
            log.warning("tabular field(s) %s have no value in any of the %d subjects (each "
                        "blank%s): they carry nothing here, and the encoding, fitted on "
                        "nothing, cannot place their values in a cohort given it", empty,
                        df.height, " or a missing_values code" if coded else "")
        columns = []
        for field in self.fields:
            dtype = df.schema[field]
            numeric = dtype.is_numeric() and field not in self.categorical
            values = values_of[field]
            if numeric:
                x = np.array([v for v in map(_number_or_none, values) if v is not None],
                             dtype=np.float64)
                with np.errstate(over="ignore", invalid="ignore"):
                    mean = float(x.mean()) if x.size else 0.0
                    std = float(x.std()) if x.size else 0.0
                if not (math.isfinite(mean) and math.isfinite(std)):
                    # a value near float64's limit (1e308, a unit or a code gone wrong)
                    # overflowed the moments: every subject's feature became inf, and each
                    # was rejected as non-finite without the value being named
                    raise InputError(f"tabular field {field!r}: a value of "
                                     f"{float(np.abs(x).max()):.3g} overflows its mean or "
                                     "spread; correct it in the source table or list it in "
                                     "missing_values")
                if not x.size or x.min() == x.max():
                    # a constant's spread is rounding (0.1 six hundred times: 1.4e-17), by
                    # which another cohort's value given this encoding was divided
                    std = 1.0
                columns.append({"field": field, "kind": "numeric", "mean": mean, "std": std})
            else:
                cats = sorted({v for v in values if v is not None}, key=_sort_key)
                columns.append({"field": field, "kind": "categorical", "categories": cats})
        self.columns = columns
        self._warned = set()
        warn_of_codes_matching_nothing("tabular", self.missing_values,
                                       {f: df.get_column(f).to_list() for f in self.fields})
        return self

    @property
    def fitted(self) -> bool:
        return self.columns is not None

    def _require_fit(self) -> list[dict[str, Any]]:
        if self.columns is None:
            raise RuntimeError("TabularEncoding is not fitted; call fit() or from_dict() first")
        return self.columns

    @property
    def feature_names(self) -> list[str]:
        names = []
        for col in self._require_fit():
            f = col["field"]
            if col["kind"] == "numeric":
                names.append(f)
            else:
                names += [f"{f}={c}" for c in col["categories"]]
            names.append(f"{f}={MISSING}")
        return names

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def transform(self, df: pl.DataFrame, unplaced: list[Unplaced] | None = None) -> np.ndarray:
        """Rows of ``df`` as ``float32 [n, n_features]``. Values the encoding cannot
        place are appended to ``unplaced`` (when given) as :class:`Unplaced`; an unseen
        category is all zeros in its field's block, a numeric field's text is blank."""
        columns = self._require_fit()
        self._check_fields(df)
        found: list[Unplaced] = []
        blocks = []
        for col in columns:
            field = col["field"]
            values = self._values(df, field)
            if col["kind"] == "numeric":
                numbers = [_number_or_none(v) for v in values]
                bad = [Unplaced(r, field, v, NOT_A_NUMBER) for r, (v, x) in
                       enumerate(zip(values, numbers, strict=True)) if v is not None and x is None]
                missing = np.array([x is None for x in numbers], dtype=np.float32)
                x = np.array([0.0 if v is None else v for v in numbers], dtype=np.float64)
                z = np.where(missing > 0, 0.0, (x - col["mean"]) / col["std"])
                blocks.append(np.stack([z.astype(np.float32), missing], axis=1))
            else:
                cats = col["categories"]
                index = {c: i for i, c in enumerate(cats)}
                block = np.zeros((len(values), len(cats) + 1), dtype=np.float32)
                bad = []
                for r, v in enumerate(values):
                    if v is None:
                        block[r, -1] = 1.0
                    elif v in index:
                        block[r, index[v]] = 1.0
                    else:
                        bad.append(Unplaced(r, field, v, UNSEEN))  # all zeros
                blocks.append(block)
            if bad and field not in self._warned:
                self._warned.add(field)
                shown = sorted({u.value for u in bad})
                what = ("categories not seen when fitting, encoded as all zeros"
                        if col["kind"] == "categorical"
                        else "values that are not numbers in a numeric field, encoded as blank")
                log.warning("tabular field %r: %d %s: %s", field, len(bad), what,
                            ", ".join(map(repr, shown[:10])) + (" ..." if len(shown) > 10 else ""))
            found += bad
        if unplaced is not None:
            unplaced.extend(sorted(found, key=lambda u: u.row))  # stable: field order kept
        if not blocks:
            return np.zeros((df.height, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1)

    def fit_transform(self, df: pl.DataFrame, unplaced: list[Unplaced] | None = None
                      ) -> np.ndarray:
        return self.fit(df).transform(df, unplaced)

    # -- provenance -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: fields, options, per-field statistics/categories, feature names."""
        return {
            "version": _VERSION,
            "fields": list(self.fields),
            "categorical": list(self.categorical),
            "missing_values": self.missing_values,
            "columns": self._require_fit(),
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> TabularEncoding:
        if state.get("version") != _VERSION:
            raise ConfigError(f"tabular encoding state version {state.get('version')!r} is not "
                              f"{_VERSION}")
        enc = cls(state["fields"], categorical=state.get("categorical", ()),
                  missing_values=state.get("missing_values"))
        enc.columns = [dict(c) for c in state["columns"]]
        if [c["field"] for c in enc.columns] != enc.fields:
            raise ConfigError("tabular encoding state: columns do not match fields")
        for col in enc.columns:
            if col["kind"] != "categorical":
                continue
            # an encoding stored before number text was read as its number ('01' stayed
            # '01'): its categories as values are read now, so its own values place
            names = [canonical_value(c) for c in col["categories"]]
            if len(set(names)) != len(names) or None in names:
                raise ConfigError(f"tabular encoding state: the categories of "
                                  f"{col['field']!r} {col['categories']} are one value as "
                                  "numbers; encode the store it comes from again")
            col["categories"] = names
        return enc
