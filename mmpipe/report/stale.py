"""A benchmark report that no longer describes the runs on disk says so.

Snakemake removes the outputs of a job it reruns, not what an earlier run built from
them: when a training job's rerun fails (after a change of its settings, say),
``results/<cohort>/report/`` still holds the report of the runs before, one of which is
gone, and nothing in it says so; nor does a run that retrains and stops short of the
report (a target, ``--until``). The Snakefile's ``onerror`` and ``onsuccess`` handlers
call :func:`mark_stale_report` for each cohort it trains: a report some of whose training
outputs are missing gets a ``STALE.md`` naming them, and its ``results.md``, the page
read first, opens with the same warning; a report whose runs all agree with it loses
any mark. Neither handler runs when Snakemake itself is killed (SIGKILL, out of memory,
a lost login session, a time limit), which can happen after it removed a run's outputs:
so ``onstart`` marks each report first (:func:`mark_under_way`), and the handlers leave
the mark only where the runs no longer agree. The next run that rebuilds the report
replaces the whole folder, marks included. The stage-1 summary
(``stage1_summary.md``) is marked the same way, in its first lines, when a store it
describes is gone or was written after it, or the manifest's QC table holds other
records than it was built from (:func:`mark_stale_summary`). Kept apart from
the report's own modules, so that the report job's code key does not move with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from mmpipe.fsutil import atomic_file
from mmpipe.layout import METRICS, REPORT_PAGE, REPORT_RUNS

STALE_FILE = "STALE.md"
_BANNER = "**Stale report.**"
SUMMARY_BANNER = "**Stale summary.**"


# "{it}": the report or the stage-1 summary, as each mark says it
FAILED = "a later run of the workflow failed before it rebuilt {it}"
UNDER_WAY = ("a later run of the workflow started and has not finished; if it is no "
             "longer running, it was stopped (killed, out of memory or time) and may have "
             "removed or remade what {it} describes")
NOT_REBUILT = ("a later run of the workflow (a target, `--until` or `--omit-from` short of "
               "{it}) did not rebuild {it}")


def mark_stale_report(report_dir: str | Path, runs: Sequence[str | Path],
                      cause: str = FAILED, inputs: Sequence[str | Path] = (),
                      view: str | None = None) -> list[str]:
    """Mark ``report_dir`` stale when some of ``runs`` (the training outputs the report
    is built from) are not on disk, or were written after it (a run trained again, then
    another job failed before the report was rebuilt), or some of ``inputs`` (the stores,
    splits and masks the runs read) were written after it (rebuilt by a run that stopped
    before training, so the runs are of the inputs before) or are not on disk (removed by
    a job that reran them and failed: its runs will be retrained on what replaces them),
    or the runs recorded another ``view`` of the cohort (``benchmark_view``: subjects,
    label, split, presence) than the manifest's now (a manifest rebuilt with other labels
    by a target short of the runs); return those (empty: the
    report agrees with its runs and loses any mark). A report marked before gets the
    banner of now, not a second one."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        return []
    found = _disagreements(report_dir, runs, inputs)
    recorded = _recorded_view(runs) if view is not None else None
    other_view = [view] if recorded is not None and recorded != view else []
    if not any(found) and not other_view:
        _unmark(report_dir)  # the mark of a run under way (mark_under_way), or of before
        return []
    missing, newer, rebuilt, gone = found
    found_text = []
    if other_view:
        found_text.append("the manifest was rebuilt with other subjects, labels, split or "
                          "modalities than its runs trained on (benchmark_view "
                          f"{recorded[:12]} in the runs, {view[:12]} now)")
    if missing:
        found_text.append(f"{len(missing)} of the {len(runs)} training runs this report is "
                          f"built from are not on disk (first: `{missing[0]}`)")
    if newer:
        found_text.append(f"{len(newer)} of them were trained again after it (first: "
                          f"`{newer[0]}`)")
    if rebuilt:
        found_text.append(f"{len(rebuilt)} of the stores, splits or masks its runs read were "
                          f"rebuilt after it (first: `{rebuilt[0]}`)")
    if gone:
        found_text.append(f"{len(gone)} of the stores, splits or masks its runs read are not "
                          f"on disk (first: `{gone[0]}`)")
    listed = "".join(f"\n{title}:\n\n" + "".join(f"- `{r}`\n" for r in rs)
                     for title, rs in (("Missing", missing), ("Trained again", newer),
                                       ("Rebuilt inputs", rebuilt), ("Missing inputs", gone))
                     if rs)
    _mark(report_dir, f"{'; '.join(found_text)}: {cause.format(it='the report')}, so its "
                      "figures describe runs that "
                      "are gone, older than the config or than what they read, or trained "
                      "again since", listed)
    return missing + newer + rebuilt + gone + other_view


def mark_under_way(report_dir: str | Path) -> bool:
    """Mark an existing report before a run of the workflow starts (the Snakefile's
    ``onstart``): if Snakemake is killed, the mark stays, where ``onerror`` would have
    written one. A report marked already keeps its mark, which names the runs. Returns
    whether there was a report to mark."""
    report_dir = Path(report_dir)
    if not (report_dir / REPORT_PAGE).is_file():
        return False
    if not (report_dir / STALE_FILE).exists():  # an earlier mark says more: its list stays
        _mark(report_dir, f"{UNDER_WAY.format(it='this report')}, so its figures may "
                          "describe runs that are gone or "
                          "older than the config", "")
    return True


def _disagreements(report_dir: Path, runs: Sequence[str | Path],
                   inputs: Sequence[str | Path] = ()
                   ) -> tuple[list[str], list[str], list[str], list[str]]:
    """The runs not on disk, the runs and the inputs written after the report, the
    inputs not on disk (each empty where all agree). A split whose rerun failed was
    removed, and the report it fed, unmarked, read as current."""
    built = _built_at(report_dir)
    missing, newer = _missing_or_newer(runs, built)
    gone, rebuilt = _missing_or_newer(inputs, built)
    return missing, newer, rebuilt, gone


def _recorded_view(runs: Sequence[str | Path]) -> str | None:
    """The ``benchmark_view`` the first run found under ``runs`` (training outputs: cells
    or method folders) recorded; None when none did. The runs of one report trained on
    one view: the report refuses them otherwise."""
    for output in runs:
        for metrics in sorted(Path(output).rglob(METRICS)):
            try:
                return json.loads(metrics.read_text()).get("benchmark_view")
            except (OSError, ValueError):
                continue
    return None


def _missing_or_newer(outputs: Sequence[str | Path], built: float | None
                      ) -> tuple[list[str], list[str]]:
    """The ``outputs`` not on disk, and those written after ``built`` (None: none is)."""
    missing, newer = [], []
    for output in outputs:
        try:
            written = _modified(Path(output))
        except FileNotFoundError:
            missing.append(str(output))
            continue
        if built is not None and written > built:
            newer.append(str(output))
    return missing, newer


def _mark(report_dir: Path, why: str, listed: str) -> None:
    """``STALE.md`` and the banner of ``results.md``, replacing an earlier mark's."""
    note = f"{_BANNER} {why}. Run the workflow again to rebuild it.\n"
    with atomic_file(report_dir / STALE_FILE) as tmp:
        tmp.write_text(note + listed)
    results = report_dir / REPORT_PAGE
    if results.is_file():
        text = _unbannered(results.read_text())
        with atomic_file(results) as tmp:
            tmp.write_text(note + "\n" + text)


def _unmark(report_dir: Path) -> None:
    (report_dir / STALE_FILE).unlink(missing_ok=True)
    results = report_dir / REPORT_PAGE
    if results.is_file() and (text := results.read_text()).startswith(_BANNER):
        with atomic_file(results) as tmp:
            tmp.write_text(_unbannered(text))


def _unbannered(text: str, banner: str = _BANNER) -> str:
    """``results.md`` without the banner a mark put before it (one paragraph)."""
    if not text.startswith(banner):
        return text
    return text.split("\n\n", 1)[1] if "\n\n" in text else ""


def mark_stale_summary(summary: str | Path, qc: str | Path, stores: Sequence[str | Path],
                       cause: str = FAILED, adapter_qc: str | Path | None = None
                       ) -> list[str]:
    """Mark a cohort's stage-1 summary stale when some of ``stores`` are not on disk, or
    were written after its ``qc`` table (which the same job writes and marking never
    rewrites): a store whose rerun failed is gone, and one rebuilt by a run that stopped
    short of the summary holds other subjects' verdicts; or when ``adapter_qc`` (the
    manifest's QC table) now holds other records than the summary was built from, or is
    gone (a manifest rebuilt after the download was mended, by a run that stopped short
    of the summary, whose rejections then no longer exist). Returns those; an agreeing
    summary loses any mark. Stores by their time: a folder output is never compared by
    content, so a store written again reruns the summary. The adapter's QC table by its
    content, recorded in ``qc``: a manifest job rewrites it with the same records, which
    Snakemake does not rerun the summary for (it compares a small file's checksum), and
    its time marked a summary a full run had left agreeing."""
    summary = Path(summary)
    if not summary.is_file():
        return []
    built = Path(qc).stat().st_mtime if Path(qc).is_file() else None
    missing, newer = _missing_or_newer(stores, built)
    other_records = _other_adapter_records(qc, adapter_qc) if adapter_qc is not None else []
    text = summary.read_text()
    plain = _unbannered(text, SUMMARY_BANNER)
    if not missing and not newer and not other_records:
        if plain != text:
            with atomic_file(summary) as tmp:
                tmp.write_text(plain)
        return []
    found = [f"{len(missing)} of the stores it describes are not on disk (first: "
             f"`{missing[0]}`)"] if missing else []
    found += [f"{len(newer)} of the stores it describes were written after it (first: "
              f"`{newer[0]}`)"] if newer else []
    found += [f"the manifest's QC table `{other_records[0]}` {other_records[1]}"
              ] if other_records else []
    _banner_summary(summary, plain, f"{'; '.join(found)}: {cause.format(it='the summary')}")
    return missing + newer + other_records[:1]


def _other_adapter_records(qc: str | Path, adapter_qc: str | Path) -> list[str]:
    """[the adapter QC table, what is wrong with it] where it is not the one the
    summary's ``qc`` table was built from; [] where it is, or where ``qc`` records none
    (built before it did: the summary's job reruns with a new code key anyway)."""
    from mmpipe.report.stage1 import adapter_qc_digest, recorded_adapter_qc

    recorded = recorded_adapter_qc(qc)
    if recorded is None:
        return []
    if not Path(adapter_qc).is_file():
        return [str(adapter_qc), "is not on disk"]
    try:
        now = adapter_qc_digest(adapter_qc)
    except (pl.exceptions.PolarsError, OSError):
        return [str(adapter_qc), "cannot be read"]
    if now != recorded:
        return [str(adapter_qc), "holds other records than the summary was built from"]
    return []


def mark_summary_under_way(summary: str | Path) -> bool:
    """:func:`mark_under_way` for a stage-1 summary."""
    summary = Path(summary)
    if not summary.is_file():
        return False
    text = summary.read_text()
    if not text.startswith(SUMMARY_BANNER):
        _banner_summary(summary, text, UNDER_WAY.format(it="this summary"))
    return True


def _banner_summary(summary: Path, plain: str, why: str) -> None:
    with atomic_file(summary) as tmp:
        tmp.write_text(f"{SUMMARY_BANNER} {why}, so it may describe stores, or the "
                       "manifest's records, that are gone or were rebuilt since. Run the "
                       f"workflow again to rebuild it.\n\n{plain}")


def spoken_for(outputs: Sequence[str | Path], described: Sequence[str | Path]
               ) -> list[str | Path]:
    """The ``outputs`` a report or summary of a cohort outside the run's ``run_cohorts``
    can speak for: those on disk, and those it was built from (``described``: paths of
    them or of files inside them) that are gone. Its config may name runs or stores it
    never built (a method added since, to run later), which no target of this run asked
    for: "not on disk" would call the report stale for what it never said. Paths are
    compared absolute (the hooks and the jobs run in the workflow's directory)."""
    spoken: set[str] = set()
    for path in described:
        path = os.path.abspath(path)
        while path not in spoken:
            spoken.add(path)
            path = os.path.dirname(path)
    return [o for o in outputs if os.path.exists(o) or os.path.abspath(o) in spoken]


def _runs_table(report_dir: str | Path, columns: list[str]) -> pl.DataFrame | None:
    runs_csv = Path(report_dir) / REPORT_RUNS
    if not runs_csv.is_file():
        return None
    try:
        return pl.read_csv(runs_csv, columns=columns, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError):
        return None


def report_built_from(report_dir: str | Path) -> list[str]:
    """The run files a report was built from (its ``runs.csv``'s ``path``); [] where
    it has none."""
    runs = _runs_table(report_dir, ["path"])
    return [] if runs is None else runs["path"].drop_nulls().to_list()


def report_cells(report_dir: str | Path) -> list[tuple[str, str, float, int]]:
    """(feature set, scenario, rate, seed) of every run a report was built from: what
    its runs read is named by them; [] where it has no ``runs.csv``."""
    runs = _runs_table(report_dir, ["feature_set", "scenario", "rate", "seed"])
    if runs is None:
        return []
    return sorted({(fs, scenario, float(rate), int(float(seed)))
                   for fs, scenario, rate, seed in runs.drop_nulls().iter_rows()})


def summary_described(qc: str | Path) -> list[tuple[str, str]]:
    """The (modality, encoder) stores a stage-1 summary describes: those of its cohort's
    QC table; [] where it has none."""
    if not Path(qc).is_file():
        return []
    try:
        rows = pl.read_parquet(qc, columns=["modality", "encoder"]).drop_nulls().unique()
    except (pl.exceptions.PolarsError, OSError):
        return []
    return sorted(rows.rows())


def _modified(path: Path) -> float:
    """When an output was last written, as Snakemake reads it: a folder's
    ``.snakemake_timestamp`` where it has one (``--touch`` moves only that file, and a
    run touched so was newer than the report with nothing to show it)."""
    stamp = path / ".snakemake_timestamp"
    if path.is_dir() and stamp.is_file():
        return stamp.stat().st_mtime
    return path.stat().st_mtime


def _built_at(report_dir: Path) -> float | None:
    """When the report was built: its ``runs.csv``, which marking never rewrites (it
    rewrites ``results.md``); None for a folder without one."""
    runs_csv = report_dir / REPORT_RUNS
    return runs_csv.stat().st_mtime if runs_csv.is_file() else None
