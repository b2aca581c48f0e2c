"""Canonical parameter sets and their hash: one spelling of "the same settings".

A mapping's key order never means anything in a parameter set (the YAML a user reorders,
a dict built in another order), so :func:`canonical` sorts keys recursively and
:func:`params_hash` hashes that form. Lists keep their order: where a list's order means
nothing, the code that reads it sorts it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys sorted, recursively (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def params_hash(params: Any) -> str:
    """SHA-256 (hex) of a JSON-able parameter set; key order does not matter."""
    blob = json.dumps(canonical(params), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
