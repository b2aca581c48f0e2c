"""The codes a table's ``missing_values`` read as blank, in a prompt block and in a tabular
encoding, and where the two differ.

A module of its own so that the tabular encoding's jobs, which compare their codes with
the prompts' (:mod:`mmpipe.encode.tabular`), do not carry the prompts' rendering in their
code key: a change to how a prompt is written reran every tabular store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mmpipe.encoders.categories import canonical_codes, canonical_value

log = logging.getLogger(__name__)


def missing_codes(prompt: Mapping[str, Any], field: str) -> set[str]:
    """The canonical ``missing_values`` codes of ``field`` in a prompt block."""
    codes = prompt.get("missing_values") or []
    if isinstance(codes, Mapping):
        codes = codes.get(field) or []
    return set(canonical_codes(codes))


def prompt_blank_codes(prompt: Mapping[str, Any], fields: Sequence[str]) -> dict[str, list[str]]:
    """Each field's blank codes in a prompt block, sorted: what a reused tabular
    encoding's must equal (:func:`blank_code_differences`)."""
    return {f: sorted(missing_codes(prompt, f)) for f in fields}


def blank_code_differences(encoding: Mapping[str, Any], prompt_codes: Mapping[str, Any]
                           ) -> str | None:
    """Where a tabular encoding (a block with ``missing_values``: an encoder's config or a
    stored encoding's) treats other codes as blank than the prompts (``prompt_codes``:
    field -> codes), said per field as "field: [its] against [the prompt's]"; None where
    they agree."""
    differ = [(f, own, sorted(codes)) for f, codes in prompt_codes.items()
              if (own := sorted(missing_codes(encoding, f))) != sorted(codes)]
    return "; ".join(f"{f}: {own} against {codes}" for f, own, codes in differ) or None


def warn_of_codes_matching_nothing(where: str, codes: Mapping[str, Any] | Sequence[Any] | None,
                                   values: Mapping[str, Iterable[Any]]) -> None:
    """Warn of a ``missing_values`` code (``where``'s: ``tabular``, ``prompt``) that is no
    value of its field, or of any field for a list that applies to all (``values``: each
    field's values): it blanks nothing. "unknown" where the table holds "Unknown" left that
    value a category and a prompt's words, without a word."""
    if not codes:
        return
    seen = {f: {canonical_value(v) for v in vs} - {None} for f, vs in values.items()}
    if isinstance(codes, Mapping):
        groups = {f"{where}.missing_values.{f}": (set(canonical_codes(c or [])), seen[f])
                  for f, c in codes.items() if f in seen}
    else:
        groups = {f"{where}.missing_values": (set(canonical_codes(codes)),
                                              set().union(*seen.values()))}
    for name, (wanted, have) in groups.items():
        unmatched = sorted(wanted - have)
        if not unmatched:
            continue
        folded = {h.casefold(): h for h in have}
        other_case = [f"{c!r} is written {folded[c.casefold()]!r} there" for c in unmatched
                      if c.casefold() in folded]
        log.warning("%s: %s match(es) no value of the data, and blank(s) nothing%s", name,
                    unmatched, f" ({'; '.join(other_case)})" if other_case else "")
