"""An adapter's source CSV read with errors that name the file.

polars' own errors for a file that is not UTF-8, a row with more fields than the header,
an empty file or a path that cannot be opened name neither the file nor what to do, and
a header without rows would build a manifest of no subjects. A row with fewer fields than
the header (a comma forgotten) was read as blank cells, which look like missing data by
nature, or with its values in the wrong columns; a header naming a column twice was read
from the first copy; both are refused, naming the rows and the column. The path is a
path, not a pattern (polars expands ``[``, ``*`` and ``?``: ``cohort[final].csv`` read
``cohortf.csv``). Every adapter reads its CSV tables through :func:`read_source_csv`
(BCNB's .xlsx and IXI's .xls have their own readers, which name the file too).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from mmpipe.errors import InputError


def _refuse_wide_encoding(path: Path) -> None:
    """polars reads a UTF-16 file (Excel's "Unicode Text", PowerShell's default) without
    an error, as columns named "\ufffd\ufffdi\x00d\x00" of values with NULs: no ID or field
    would match."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return  # polars' own error below names the file
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise InputError("the file is UTF-16 (or holds NUL bytes), not UTF-8 text: save it "
                         "as UTF-8 CSV", path=path)


def read_utf8_text(path: Path) -> str:
    """A text file as UTF-8 (a byte-order mark dropped); another encoding is an
    :class:`InputError` naming the file, where Python's decoding error named none."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason} at byte {err.start}): save it as "
                         "UTF-8", path=path) from err


def refuse_columns_named_twice(header: Iterable[str], path: Path) -> None:
    """Refuse a table header (a CSV's, a spreadsheet's) naming a column twice: one reader
    took the first copy, another the last, and neither said so."""
    twice = sorted(n for n, k in Counter(h.strip() for h in header).items()
                   if k > 1 and n)
    if twice:
        raise InputError(f"the header names column(s) {twice} more than once: which copy "
                         "is meant cannot be told; rename or remove one", path=path)


def _holds_rows(cell: str, width: int) -> bool:
    """Whether ``cell``'s lines after its first are two or more, each a row of ``width``
    fields as a CSV line (a quote left open swallowed them)."""
    lines = cell.split("\n")[1:]
    return len(lines) >= 2 and all(line.count(",") == width - 1 for line in lines)


def _refuse_ragged_rows(path: Path) -> None:
    """Refuse a header naming a column twice, rows whose field count is not the header's
    (a blank line is left to the adapters, which drop it or refuse a row without an ID),
    naming the lines, as a CSV reader counts fields (a quoted comma or line break is
    inside its field), and a quoted cell holding whole rows."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if header is None:
                return  # empty: refused below
            refuse_columns_named_twice(header, path)
            off, swallowed = [], []
            for row in rows:
                # a blank or whitespace-only line is no row of data (BraTS's tables end
                # with some): the adapters drop it, or refuse it as a row without an ID
                if any(c.strip() for c in row) and len(row) != len(header):
                    off.append((rows.line_num, len(row)))
                # a quote left open runs its field over the rows below, which vanish: a
                # cell whose lines after its first are two or more whole rows (a note
                # over two lines holds one such line at most, in a narrow table)
                if len(header) > 1 and any(_holds_rows(cell, len(header)) for cell in row):
                    swallowed.append(rows.line_num)
    except (UnicodeDecodeError, OSError, csv.Error):
        return  # polars' reading below names the file and why
    if swallowed:
        more = f" and {len(swallowed) - 1} more" if len(swallowed) > 1 else ""
        raise InputError(f"a quoted cell runs over whole rows (the record ending on line "
                         f"{swallowed[0]}{more}): a quote left open swallows the rows below "
                         "it; close it", path=path)
    if off:
        shown = ", ".join(f"line {line} has {n}" for line, n in off[:10])
        more = f" and {len(off) - 10} more" if len(off) > 10 else ""
        raise InputError(f"{len(off)} row(s) with another number of fields than the "
                         f"header's {len(header)} ({shown}{more}): a comma missing or one "
                         "too many; read as blank cells, or in the wrong columns, their "
                         "values would be lost", path=path)


def read_source_csv(path: str | Path, *, text_columns: Iterable[str] = (),
                    all_text: bool = False) -> pl.DataFrame:
    """The CSV at ``path``; ``text_columns`` (or every column with ``all_text``) kept as
    text whatever they look like (an ID "007" stays "007"). Raises :class:`InputError`
    naming the file when it cannot be read as UTF-8 CSV or holds no data row."""
    path = Path(path)
    _refuse_wide_encoding(path)
    _refuse_ragged_rows(path)
    try:
        if all_text:
            df = pl.read_csv(path, infer_schema=False, glob=False)
        else:
            df = pl.read_csv(path, infer_schema_length=None, glob=False,
                             schema_overrides={c: pl.Utf8 for c in text_columns})
    except pl.exceptions.NoDataError as e:
        raise InputError("the file is empty: a CSV needs a header and a row per subject",
                         path=path) from e
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, UnicodeDecodeError,
            OSError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = (" (save it as UTF-8)" if "utf-8" in why.lower() or "utf8" in why.lower()
                else "")
        raise InputError(f"not a readable CSV: {why}{hint}", path=path) from e
    if df.height == 0:
        raise InputError(f"no data rows under the header {df.columns}: the cohort would "
                         "have no subjects", path=path)
    return df
