"""An adapter's source CSV read with errors that name the file.

polars' own errors for a file that is not UTF-8, a row with more fields than the header,
an empty file or a path that cannot be opened name neither the file nor what to do, and
a header without rows would build a manifest of no subjects. Every adapter reads its
CSV tables through :func:`read_source_csv` (BCNB's .xlsx and IXI's .xls have their own
readers, which name the file too).
"""

from __future__ import annotations

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


def read_source_csv(path: str | Path, *, text_columns: Iterable[str] = (),
                    all_text: bool = False) -> pl.DataFrame:
    """The CSV at ``path``; ``text_columns`` (or every column with ``all_text``) kept as
    text whatever they look like (an ID "007" stays "007"). Raises :class:`InputError`
    naming the file when it cannot be read as UTF-8 CSV or holds no data row."""
    path = Path(path)
    _refuse_wide_encoding(path)
    try:
        if all_text:
            df = pl.read_csv(path, infer_schema=False)
        else:
            df = pl.read_csv(path, infer_schema_length=None,
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
