"""Imported first by every rule script: makes `mmpipe` importable from the
repository (conda envs do not install it) and sends logging to the rule's log."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmpipe.logs import setup_logging  # noqa: E402


def start(snakemake):
    setup_logging(snakemake.log[0] if snakemake.log else None)
