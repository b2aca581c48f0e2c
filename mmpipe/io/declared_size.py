"""Whether a file can hold the data its header declares.

A damaged header (a NIfTI's dimensions, a ``.npy`` shape) can declare terabytes, and a
reader then asks for that memory before it reads a byte: the failure looks like the
machine's (``MemoryError``), which fails the job and its retries, where it is one
subject's file. Deflate (gzip, ``.npz``, zip) compresses at most about 1032:1 (RFC 1951:
a 258-byte match in as few as 2 bits), so a file that would need more is damaged.
"""

from __future__ import annotations

from pathlib import Path

DEFLATE_MAX_RATIO = 1032
COMPRESSED_SUFFIXES = (".gz", ".npz", ".zip")


def beyond_file(declared_bytes: int, path: str | Path) -> str | None:
    """Why ``path`` cannot hold ``declared_bytes`` of data, or None when it can."""
    path = Path(path)
    size = path.stat().st_size
    compressed = path.name.lower().endswith(COMPRESSED_SUFFIXES)
    if declared_bytes <= size * (DEFLATE_MAX_RATIO if compressed else 1):
        return None
    held = (f"a compressed file of {size} bytes can hold at most "
            f"{size * DEFLATE_MAX_RATIO} (deflate's ratio)" if compressed
            else f"the file holds {size} bytes")
    return f"its header declares {declared_bytes} bytes of data, and {held}: a damaged header"
