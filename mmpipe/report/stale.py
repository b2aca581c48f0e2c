"""A benchmark report that no longer describes the runs on disk says so.

Snakemake removes the outputs of a job it reruns, not what an earlier run built from
them: when a training job's rerun fails (after a change of its settings, say),
``results/<cohort>/report/`` still holds the report of the runs before, one of which is
gone, and nothing in it says so. The Snakefile's ``onerror`` handler calls
:func:`mark_stale_report` for each cohort it trains: a report some of whose training
outputs are missing gets a ``STALE.md`` naming them, and its ``results.md``, the page
read first, opens with the same warning. The next run that rebuilds the report replaces
the whole folder, marks included. Kept apart from the report's own modules, so that
the report job's code key does not move with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmpipe.fsutil import atomic_file

STALE_FILE = "STALE.md"
_BANNER = "**Stale report.**"


def mark_stale_report(report_dir: str | Path, runs: Sequence[str | Path]) -> list[str]:
    """Mark ``report_dir`` stale when some of ``runs`` (the training outputs the report
    is built from) are not on disk; return those (empty: the report is left as it is)."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        return []
    missing = [str(run) for run in runs if not Path(run).exists()]
    if not missing:
        return []
    note = (f"{_BANNER} {len(missing)} of the {len(runs)} training runs this report is "
            f"built from are not on disk (first: `{missing[0]}`): a later run of the "
            f"workflow failed before it rebuilt the report, so its figures describe runs "
            f"that are gone or older than the config. Run the workflow again to rebuild "
            f"it.\n")
    with atomic_file(report_dir / STALE_FILE) as tmp:
        tmp.write_text(note + "\nMissing:\n\n" + "".join(f"- `{m}`\n" for m in missing))
    results = report_dir / "results.md"
    if results.is_file():
        text = results.read_text()
        if not text.startswith(_BANNER):
            with atomic_file(results) as tmp:
                tmp.write_text(note + "\n" + text)
    return missing
