"""A benchmark report that no longer describes the runs on disk says so.

Snakemake removes the outputs of a job it reruns, not what an earlier run built from
them: when a training job's rerun fails (after a change of its settings, say),
``results/<cohort>/report/`` still holds the report of the runs before, one of which is
gone, and nothing in it says so; nor does a run that retrains and stops short of the
report (a target, ``--until``). The Snakefile's ``onerror`` and ``onsuccess`` handlers
call :func:`mark_stale_report` for each cohort it trains: a report some of whose training
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


FAILED = "a later run of the workflow failed before it rebuilt the report"
NOT_REBUILT = ("a later run of the workflow (a target, `--until` or `--omit-from` short of "
               "the report) trained again and did not rebuild the report")


def mark_stale_report(report_dir: str | Path, runs: Sequence[str | Path],
                      cause: str = FAILED) -> list[str]:
    """Mark ``report_dir`` stale when some of ``runs`` (the training outputs the report
    is built from) are not on disk, or were written after it (a run trained again, then
    another job failed before the report was rebuilt); return those (empty: the report
    is left as it is). A report marked before gets the banner of now, not a second one."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        return []
    built = _built_at(report_dir)
    missing, newer = [], []
    for run in runs:
        try:
            written = Path(run).stat().st_mtime
        except FileNotFoundError:
            missing.append(str(run))
            continue
        if built is not None and written > built:
            newer.append(str(run))
    if not missing and not newer:
        return []
    found = []
    if missing:
        found.append(f"{len(missing)} of the {len(runs)} training runs this report is built "
                     f"from are not on disk (first: `{missing[0]}`)")
    if newer:
        found.append(f"{len(newer)} of them were trained again after it (first: "
                     f"`{newer[0]}`)")
    note = (f"{_BANNER} {'; '.join(found)}: {cause}, so its figures describe runs that are "
            f"gone, older than the config or trained again since. Run the workflow again to "
            f"rebuild it.\n")
    listed = "".join(f"\n{title}:\n\n" + "".join(f"- `{r}`\n" for r in rs)
                     for title, rs in (("Missing", missing), ("Trained again", newer)) if rs)
    with atomic_file(report_dir / STALE_FILE) as tmp:
        tmp.write_text(note + listed)
    results = report_dir / "results.md"
    if results.is_file():
        text = results.read_text()
        if text.startswith(_BANNER):  # marked by an earlier failed run: today's counts
            text = text.split("\n\n", 1)[1] if "\n\n" in text else ""
        with atomic_file(results) as tmp:
            tmp.write_text(note + "\n" + text)
    return missing + newer


def _built_at(report_dir: Path) -> float | None:
    """When the report was built: its ``runs.csv``, which marking never rewrites (it
    rewrites ``results.md``); None for a folder without one."""
    runs_csv = report_dir / "runs.csv"
    return runs_csv.stat().st_mtime if runs_csv.is_file() else None
