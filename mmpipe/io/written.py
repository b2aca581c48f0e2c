"""Whether a file just written holds all its writer meant to put there.

SimpleITK's NIfTI writer (nifti1_io's ``nifti_write_all_data``) reports a short write,
a disk or quota that filled up under it, on stderr ("NWAD: wrote only 0 of ... bytes")
and returns as if it had written the file. The truncated ``.nii.gz`` then reads back
through SimpleITK without an error, its missing voxels zero. A converter checks its
temporary file with :func:`check_nifti_written` before renaming it into place.
"""

from __future__ import annotations

import errno
import gzip
from pathlib import Path

import numpy as np


def check_nifti_written(path: str | Path) -> None:
    """Raise ``OSError(ENOSPC)`` unless ``path`` (``.nii`` or ``.nii.gz``) holds its whole
    header and every voxel its header declares: a short write is the disk's (full, or a
    quota), which fails the job rather than one subject."""
    import nibabel as nib

    path = Path(path)
    try:
        header = nib.load(str(path)).header  # the header alone
        expected = int(header.get_data_offset()) + int(
            np.prod(header.get_data_shape(), dtype=np.int64)) * header.get_data_dtype().itemsize
        opener = gzip.open if path.name.endswith(".gz") else open
        held = 0
        with opener(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                held += len(chunk)
    except (EOFError, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise OSError(errno.ENOSPC, f"{path} was not written whole (the disk or a quota "
                                    f"full?): it cannot be read back: {err}") from err
    if held < expected:
        raise OSError(errno.ENOSPC, f"{path} was not written whole (the disk or a quota "
                                    f"full?): {held} of its {expected} bytes")
