"""Whether a volume file's header declares more data than the file can hold.

A damaged header (a NIfTI's dimensions, an ``.mha``'s ``DimSize``) makes a reader ask for
that memory before it reads a voxel: SimpleITK's "Failed to allocate memory for image"
and numpy's ``MemoryError`` look like the machine's failure, and failed every subject's
job on every retry, where it is one subject's file. Both the encoders' volume reader
(:mod:`mmpipe.preprocess.volume`) and the mask step (:mod:`mmpipe.preprocess.segment`)
check a volume here before reading it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mmpipe.errors import InputError, shared_cause
from mmpipe.io.declared_size import beyond_file


def check_declared_size(volume: Path, what: str = "volume") -> None:
    """Raise :class:`InputError` when ``volume``'s header declares more data than its
    file can hold (:func:`mmpipe.io.declared_size.beyond_file`): a NIfTI, as the
    encoders' reader checks it, or an ``.mha``/``.nrrd`` that keeps its data raw in the
    same file. Others are left to SimpleITK's read: their data lie in another file (an
    ``.mhd`` and its ``.raw``) or compressed (a gzip ``.nrrd``, Slicer's default), which
    the file's size says nothing of."""
    try:
        if volume.name.lower().endswith((".nii", ".nii.gz")):
            import nibabel as nib

            header = nib.load(str(volume)).header
            shape, itemsize = header.get_data_shape(), header.get_data_dtype().itemsize
        elif _raw_in_one_file(volume):
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(volume))
            reader.ReadImageInformation()
            shape = reader.GetSize()
            # "16-bit signed integer", "vector of 8-bit unsigned integer", "complex of ..."
            kind = sitk.GetPixelIDValueAsString(reader.GetPixelID())
            itemsize = (int(re.search(r"(\d+)-bit", kind).group(1)) // 8
                        * reader.GetNumberOfComponents()
                        * (2 if kind.startswith("complex") else 1))
        else:
            return
    except Exception as err:  # a header no reader can parse: the subject's
        if shared_cause(err):  # a mount that dropped: the job's
            raise
        raise InputError(f"cannot read the {what}'s header: {type(err).__name__}: {err}",
                         path=volume) from err
    declared = int(np.prod(shape, dtype=np.float64)) * int(itemsize)
    if why := beyond_file(declared, volume):
        raise InputError(f"shape {tuple(shape)}: {why}", path=volume)


def _raw_in_one_file(volume: Path) -> bool:
    """Whether an ``.mha`` or ``.nrrd`` holds its data uncompressed after its own text
    header (MetaImage ``ElementDataFile = LOCAL`` without ``CompressedData = True``;
    NRRD ``encoding: raw`` without a ``data file``)."""
    suffix = volume.suffix.lower()
    if suffix not in (".mha", ".nrrd"):
        return False
    with open(volume, "rb") as fh:
        head = fh.read(1 << 16).decode("latin-1")
    if suffix == ".mha":
        fields = dict(re.findall(r"(?m)^\s*(\w+)\s*=\s*(.*?)\s*$", head))
        return (fields.get("ElementDataFile") == "LOCAL"
                and fields.get("CompressedData", "False").lower() != "true")
    header = head.split("\n\n", 1)[0]
    fields = dict(re.findall(r"(?m)^([^:#\n]+):\s*(.*?)\s*$", header))
    return (fields.get("encoding", "").strip() == "raw"
            and not any(k.strip() in ("data file", "datafile") for k in fields))
