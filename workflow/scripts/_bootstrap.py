"""Imported first by every rule script: makes `mmpipe` importable from the
repository (conda envs do not install it) and sends logging, and the error that stops
a job, to the rule's log. Nothing here may change what a job computes: no job's code key
covers this file, and Snakemake compares only a rule's own script, so an edit here
reruns nothing (a result setting such as torch's determinism belongs in a keyed module)."""

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmpipe.logs import setup_logging  # noqa: E402


def _log_failure(kind, error, tb):
    # the reason a job failed belongs in its log file, not only in Snakemake's output
    logging.getLogger("mmpipe").critical("job failed", exc_info=(kind, error, tb))


def start(snakemake):
    # Snakemake limits the OpenMP and BLAS pools to the job's threads, and the scripts
    # torch's; a Rust library's own pool (the text encoder's tokenizers) took one thread
    # per core of the node, whatever the job's threads
    os.environ.setdefault("RAYON_NUM_THREADS", str(snakemake.threads))
    setup_logging(snakemake.log[0] if snakemake.log else None)
    sys.excepthook = _log_failure
