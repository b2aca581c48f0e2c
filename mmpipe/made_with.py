"""What a modality's prompts or masks were made with, in their parquet metadata.

A ``clinical_prompts`` or ``segment`` job writes the hash of its params and of the
manifest view it read (:func:`made_with`). The workflow reruns such a job when either
changes; a hand-run ``mmpipe encode`` has no job to rerun and compares the hash with its
own config's, so that it never encodes prompts or masks made with other settings than
the ones its store records. Its own module, light, so that the rule scripts that write it
import nothing else.
"""

from __future__ import annotations

from mmpipe.hashing import params_hash

# the parquet metadata key
MADE_WITH_KEY = "mmpipe:made_with"


def made_with(params: dict, manifest_view: str) -> dict[str, str]:
    """The parquet metadata of prompts or masks made with ``params`` (the job's) from the
    manifest view ``manifest_view``."""
    return {MADE_WITH_KEY: params_hash({"params": params, "manifest": manifest_view})}
