"""Clinical table rows → text prompts for a clinical text encoder.

The prompt is a header followed by one phrase per field, in the configured field
order. A blank field (empty, NaN, or the text "missing", as the tabular encoding reads
it) is left out (``missing: omit``) or written with
``missing_text`` (``missing: explicit``); the two modes are what the literature on
prompting tabular data compares. A value among the prompt's ``missing_values`` (codes
such as MMIST's ``-1`` = unknown, for every field or per field, matched as the tabular
encoding matches its own) is blank too, so a subject whose every field is blank or
coded has no prompt and is absent from the text store, as it is from the tabular one.
The task label is never part of a prompt.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from mmpipe.encoders.categories import canonical_value
from mmpipe.errors import ConfigError
from mmpipe.preprocess.blank_codes import missing_codes, warn_of_codes_matching_nothing

log = logging.getLogger(__name__)

DEFAULT_PHRASE = "{field}: {value}."
# an integer written with a zero fraction ("6.0", "6."), as a CSV column of text holds it
_WHOLE_DECIMAL = re.compile(r"\+?(-?[0-9]+)\.0*")


def _format(value: Any) -> str:
    # 6.0 read from a CSV with blanks is the integer code 6, and so is the text "6.0" of a
    # column that also holds text (the tabular encoding reads both as the category 6);
    # an integer's own digits ("007") stay as written
    if isinstance(value, str) and (whole := _WHOLE_DECIMAL.fullmatch(value.strip())):
        return whole[1]  # its own digits: no float between, no exponent
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float) and math.isfinite(value):
        # the shortest digits that read back as the value, without an exponent: a lab
        # value of 0.00005 was written "5e-05"
        return np.format_float_positional(value, trim="-")
    return str(value)


def _map_key(value: Any) -> str | None:
    """A value as a value map looks it up: :func:`canonical_value`, with a truth value's
    every spelling one key. A table reader reads a column of ``TRUE``/``FALSE`` (a
    spreadsheet's export) as booleans, which read ``true``/``false``: the map key "TRUE",
    quoted as the config check asks, missed every value without a word."""
    key = canonical_value(value)
    return key.lower() if key is not None and key.lower() in ("true", "false") else key


def value_map(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """A field's ``value_maps`` keyed as :func:`_map_key` reads values, so a key ``2``
    (YAML's integer or its text) maps 2, 2.0 and the text "2.0", as the tabular encoding
    makes them one category, and "TRUE" maps a boolean true. Keys that are one value with
    different texts (``2`` and ``"2.0"`` mapped apart) are a config error
    (:func:`value_map_collisions`)."""
    return {_map_key(k): v for k, v in mapping.items()}


def value_map_collisions(mapping: Mapping[Any, Any]) -> list[list[Any]]:
    """Groups of ``value_maps`` keys that name one value (and so one category)."""
    groups: dict[str | None, list[Any]] = {}
    for k in mapping:
        groups.setdefault(_map_key(k), []).append(k)
    return [keys for keys in groups.values() if len(keys) > 1]


def _is_missing(value: Any, codes: set[str]) -> bool:
    """Blank as the tabular encoding reads a value (None, NaN, whitespace, the text
    "missing") or one of ``codes``."""
    canonical = canonical_value(value)
    return canonical is None or canonical in codes


def render_prompt(row: Mapping[str, Any], fields: Sequence[str], prompt: Mapping[str, Any]) -> str | None:
    """One subject's prompt, or None when every field is blank or a ``missing_values``
    code (no clinical data)."""
    return _render(row, fields, prompt, _field_rules(prompt, fields))[0]


def _field_rules(prompt: Mapping[str, Any], fields: Sequence[str]
                 ) -> dict[str, tuple[set[str], dict[str, Any]]]:
    """Per field, once for every subject: its blank codes and its :func:`value_map`."""
    value_maps = prompt.get("value_maps") or {}
    return {f: (missing_codes(prompt, f), value_map(value_maps.get(f) or {})) for f in fields}


def _shown(value: Any, mapping: Mapping[str, Any]) -> Any:
    """A present value as a prompt writes it: its value map's text, else the value."""
    return mapping.get(_map_key(value), _format(value))


def _render(row: Mapping[str, Any], fields: Sequence[str], prompt: Mapping[str, Any],
            rules: Mapping[str, tuple[set[str], dict[str, Any]]]) -> tuple[str | None, int]:
    """(the prompt or None, the number of fields with a value), ``rules`` per field
    (:func:`_field_rules`)."""
    phrases = prompt.get("phrases", {})
    mode = prompt.get("missing", "omit")
    missing_text = prompt.get("missing_text", "unknown")
    parts = [prompt["header"]] if prompt.get("header") else []
    n_present = 0
    for field in fields:
        value = row.get(field)
        template = phrases.get(field, DEFAULT_PHRASE)
        codes, mapping = rules[field]
        if _is_missing(value, codes):
            if mode == "explicit":
                parts.append(template.format(field=field, value=missing_text))
            continue
        n_present += 1
        parts.append(template.format(field=field, value=_shown(value, mapping)))
    return (" ".join(parts) if n_present else None), n_present


def _refuse_missing_text_taken(manifest: pl.DataFrame, fields: Sequence[str],
                               prompt: Mapping[str, Any],
                               rules: Mapping[str, tuple[set[str], dict[str, Any]]]) -> None:
    """Under ``missing: explicit``, a blank is written as ``missing_text``: a field that
    has blanks and also holds that text as a value ("unknown", a category of its own for
    the tabular encoding) gave a blank and that value one prompt."""
    said = str(prompt.get("missing_text", "unknown")).strip().casefold()
    taken = {}
    for field in fields:
        codes, mapping = rules[field]
        values = manifest[field].unique().to_list()
        if not any(_is_missing(value, codes) for value in values):
            continue  # no blank to confuse with it
        for value in values:
            if not _is_missing(value, codes) and str(
                    _shown(value, mapping)).strip().casefold() == said:
                taken[field] = value
    if taken:
        raise ConfigError(
            f"prompt.missing_text {prompt.get('missing_text', 'unknown')!r} is also a value of "
            + ", ".join(f"{f} ({v!r})" for f, v in taken.items())
            + ": a blank and that value would read the same. Set another missing_text, or "
            "list the value in missing_values if it means a blank")


def _warn_of_maps_that_match_nothing(manifest: pl.DataFrame,
                                     rules: Mapping[str, tuple[set[str], dict[str, Any]]]
                                     ) -> None:
    """A value map none of whose keys is a value of its field (filed under the wrong
    field, or ``m``/``f`` where the table holds 1/2) changed no prompt, and the prompts
    carried the raw codes the user meant to reword, without a word."""
    for field, (_, mapping) in rules.items():
        if not mapping:
            continue
        values = {_map_key(v) for v in manifest[field].unique().to_list()} - {None}
        if values and not values & set(mapping):
            shown = sorted(values)[:5]
            log.warning("prompt.value_maps.%s: none of its keys %s is a value of the field "
                        "(values: %s): it changes no prompt", field, sorted(mapping), shown)


def build_prompts(manifest: pl.DataFrame, fields: Sequence[str], labels: Sequence[str],
                  prompt: Mapping[str, Any]) -> pl.DataFrame:
    """Prompts for every manifest subject: ``subject_id``, ``prompt`` (null when the
    subject has no clinical field), ``n_fields``."""
    leaked = [f for f in fields if f in labels]
    if leaked:
        raise ConfigError(f"prompt fields {leaked} are task labels; remove them from 'fields'")
    missing = [f for f in fields if f not in manifest.columns]
    if missing:
        raise ConfigError(f"prompt fields {missing} are not manifest columns "
                          f"(columns: {manifest.columns})")
    mode = prompt.get("missing", "omit")
    if mode not in ("omit", "explicit"):
        raise ConfigError(f"prompt.missing must be 'omit' or 'explicit', not {mode!r}")
    rules = _field_rules(prompt, fields)
    _warn_of_maps_that_match_nothing(manifest, rules)
    warn_of_codes_matching_nothing("prompt", prompt.get("missing_values"),
                                   {f: manifest[f].to_list() for f in fields})
    if mode == "explicit":
        _refuse_missing_text_taken(manifest, fields, prompt, rules)
    rows = []
    # a Float32 column's 0.1 reads back as the double 0.10000000149011612: its shortest
    # float32 digits are what the table holds
    single = [f for f in fields if manifest.schema[f] == pl.Float32]
    for row in manifest.select(["subject_id", *fields]).iter_rows(named=True):
        for f in single:
            if row[f] is not None:
                row[f] = float(str(np.float32(row[f])))
        text, n = _render(row, fields, prompt, rules)
        rows.append({"subject_id": row["subject_id"], "prompt": text, "n_fields": n})
    out = pl.DataFrame(rows, schema={"subject_id": pl.String, "prompt": pl.String,
                                     "n_fields": pl.Int64}, orient="row")
    n_none = out["prompt"].null_count()
    if n_none:
        log.warning("%d subjects have no clinical field other than blanks and missing_values "
                    "codes: no prompt (recorded as absent)", n_none)
    return out
