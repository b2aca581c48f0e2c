"""The codes a table's ``missing_values`` read as blank, in a prompt block and in a tabular
encoding, and where the two differ.

A module of its own so that the tabular encoding's jobs, which compare their codes with
the prompts' (:mod:`mmpipe.encode.tabular`), do not carry the prompts' rendering in their
code key: a change to how a prompt is written reran every tabular store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmpipe.encoders.categories import canonical_codes


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
