"""Read one 3-D series out of a folder of DICOM files, and check it before trusting it.

A DICOM folder from a cohort is rarely "one clean series": it holds localizers,
several reconstructions, 4-D acquisitions (the same positions repeated at each
time point), stray files, a corrupt file. So reading is two steps:

1. :func:`scan_dicom_folder` reads headers only (pydicom, ``stop_before_pixels``),
   groups files by SeriesInstanceUID, orders each series along its slice normal,
   keeps one whole volume of a series whose positions repeat
   (:mod:`mmpipe.io.dicom_repeats`) and records, per series, why it cannot be used
   (mixed orientations, a gap, too few slices, ...) without raising;
2. :func:`select_series` picks one usable series by a rule, and
   :func:`read_dicom_series` reads exactly those files, in that order, with
   SimpleITK and sets the geometry we measured.

The geometry is ours, not the reader's: the slice spacing is the median distance
between consecutive positions along the normal (never SliceThickness, which
differs from it for overlapping or gapped acquisitions). A missing slice that
``max_gap_factor`` lets through is filled in on that grid by linear interpolation of
its neighbours, and the note says where.

Nothing is dropped without a trace. A file that is not a DICOM image (a ``.txt``,
a DICOMDIR, a report, random bytes under a name no DICOM file takes) or whose pixel
data is cut short is *skipped*: it is logged, and :func:`dicom_to_nifti` lists it in
its summary (``skipped``) and in a short ``note`` that the shard's QC row carries as
its reason. A converted subject with skipped files stays ``ok``; only hidden files
(``.DS_Store``) are ignored without a word. A file whose header belongs to the
*selected* series but whose pixels cannot be read makes that series incomplete: the
folder is rejected and the file named, rather than converted with a slice missing. A
damaged file of no series that can be read (an I/O error; empty, unparseable or cut
before its SeriesInstanceUID while its name, preamble or SOP class says DICOM: an
interrupted download) could be an end slice of any series, which no gap would show:
the folder is rejected naming it, as a link not fetched is.

One folder is one patient's one study. Every image header's PatientID and
StudyInstanceUID are read; a folder whose series disagree on either is rejected
with the values and the series that carry them, whatever the rule, except that an
explicit ``uid:<UID>`` rule converts the named series and its note says that the
folder also holds other patients/studies. A missing or empty PatientID (or
StudyInstanceUID) counts as one more value, "absent": a folder whose series all
lack it is one patient, but one that mixes series with and without it came from
two sources (or two anonymisation passes) and is rejected, since nothing shows
that the series without it belong to the same patient.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmpipe.errors import ConfigError, DicomSeriesError, shared_cause
from mmpipe.fsutil import tmp_keeping_suffix
from mmpipe.io.dicom_repeats import VOLUME_TAGS, one_volume
from mmpipe.io.links import DANGLING_LINK
from mmpipe.io.walk import walk_files
from mmpipe.io.written import check_nifti_written

log = logging.getLogger(__name__)

ORIENTATION_TOL = 1e-4  # direction cosines: two slices with a larger difference are not one stack
POSITION_TOL = 1e-3  # mm along the normal: closer positions are the same slice (4-D, repeats)
# direction cosines: |length - 1| and |row . column| above this are no orthonormal pair
# (PS3.3 C.7.6.2.1.1); real headers write 6 or more digits, ~1e-6 off
COSINE_TOL = 1e-3
IN_PLANE_TOL = 0.5  # pixels: a slice further off the first slice's axis is misplaced
SHEAR_TOL = 1e-2  # in-plane drift per slice / slice spacing: more means gantry tilt or a sheared stack
# a step between slices off the median step (or off a whole number of missing slices) by more
# than this fraction of it: 5 % passes position jitter (~1e-3 mm on 0.5 mm+ slices) and
# catches mixed steps (2 mm then 1 mm), which a uniform spacing would put in the wrong place
STEP_TOL = 0.05
RULES = ("most_slices", "first", "description:<regex>", "uid:<SeriesInstanceUID>")
# seconds spent reading a failed series' files one by one for the one that fails
CULPRIT_SECONDS = 10.0
NOTE_FILES = 3  # skipped files named in a QC note; the summary lists them all


@dataclass
class SeriesInfo:
    """One DICOM series as found on disk, ordered along its slice normal.

    ``files`` and ``positions`` hold one file per distinct slice position (of one
    volume when positions repeat: ``repeats`` says which), including files whose pixel data cannot be read
    (``unreadable``); ``problem`` says why the series cannot be read as a 3-D volume
    under the scan's thresholds, or is ``None`` when it can.
    """

    series_uid: str
    series_number: int | None
    description: str
    modality: str
    files: list[Path]
    positions: np.ndarray  # [n, 3] ImagePositionPatient (LPS, mm), in the order of `files`
    orientation: tuple[float, ...]  # ImageOrientationPatient: row cosines then column cosines
    pixel_spacing: tuple[float, float]  # DICOM order: (between rows, between columns)
    # the spacing of the grid the slices lie on along the normal: fitted through the first
    # slice over every slice's place on it (the median step places the far slices off
    # by the sum of its error: 0.62/0.63 mm steps written for 0.625)
    slice_spacing: float
    n_files_total: int  # files of the series before dropping duplicated positions
    n_duplicates_dropped: int
    problem: str | None = None
    repeats: str = ""  # which volume of a series with repeated positions was kept (note)
    # problems that no threshold can lift (mixed orientations, sizes, missing geometry)
    defects: list[str] = field(default_factory=list, repr=False)
    slice_thickness: float | None = field(default=None, repr=False)
    # distinct values over the series' files; None = absent (see the module docstring)
    patient_ids: tuple[str | None, ...] = field(default=(), repr=False)
    study_uids: tuple[str | None, ...] = field(default=(), repr=False)
    # files of this series whose pixel data (or, `header_broken`, header) cannot be read:
    # path -> (short reason, full reason). They stay in `files` when they hold a position,
    # so that a missing slice is a named file rather than an unexplained gap or a lost end.
    unreadable: dict[Path, tuple[str, str]] = field(default_factory=dict, repr=False)
    # files of this series (by their SeriesInstanceUID) whose image header cannot be read:
    # no position places them, so a volume read without them could lack any slice
    header_broken: list[Path] = field(default_factory=list, repr=False)
    # whether its files were ordered into positions (not when a defect stopped that first)
    ordered: bool = field(default=True, repr=False)
    # the first file's ImageType (:func:`_image_type`)
    image_type: tuple[str, ...] = field(default=(), repr=False)
    # distinct (RescaleSlope, RescaleIntercept) of the files read (the kept volume's)
    rescales: tuple[tuple[float, float], ...] = field(default=(), repr=False)
    # distinct (PixelRepresentation, BitsStored) of the files read
    storages: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    # positions (mm along the normal) of missing slices that the read filled in
    interpolated: tuple[float, ...] = field(default=(), repr=False)
    # the distinct positions of its multi-frame files, which are refused (0: none)
    frames: int = field(default=0, repr=False)

    @property
    def n_slices(self) -> int:
        return len(self.files)

    @property
    def n_images(self) -> int:
        """Its slices as the series rules rank them: a refused multi-frame file's positions
        (a 60-frame enhanced CT counted one slice, so a reformat beside it, or the PET of a
        PET/CT, took its place with nothing said; a 4-D MR's time points count once),
        each file otherwise."""
        return max(self.n_slices, self.frames)

    @property
    def mosaic(self) -> bool:
        """Whether ImageType calls it a Siemens mosaic (an EPI's slices tiled in each
        file): refused, and no stand-in is said for it, as none is for a localizer."""
        return "MOSAIC" in self.image_type

    @property
    def derived(self) -> bool:
        """Whether ImageType says the scanner did not acquire it as it is: DERIVED or
        SECONDARY (a reformat, a projection, a screen capture). No ImageType reads as
        acquired."""
        return bool({"DERIVED", "SECONDARY"} & set(self.image_type[:2]))

    @property
    def localizer(self) -> bool:
        """Whether ImageType calls it a localizer (a scout: ``ORIGINAL\\PRIMARY\\
        LOCALIZER``), acquired, but no volume of the anatomy (dcm2niix's ``-i y`` ignores
        both kinds)."""
        return "LOCALIZER" in self.image_type[2:]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and slice-normal unit vectors, the column made orthogonal to the
        row (Gram-Schmidt): the cosines are checked to COSINE_TOL only, and positions
        projected on the normal must be mm and the image's direction a rotation."""
        row = np.asarray(self.orientation[:3], dtype=float)
        row = row / np.linalg.norm(row)
        col = np.asarray(self.orientation[3:], dtype=float)
        col = col - np.dot(col, row) * row
        col = col / np.linalg.norm(col)
        return row, col, np.cross(row, col)

    @property
    def normal(self) -> np.ndarray:
        return self.axes()[2]

    def interpolated_note(self) -> str:
        """Where the read filled in missing slices, for the log and the QC note."""
        if not self.interpolated:
            return ""
        shown = ", ".join(f"{z:.4g}" for z in self.interpolated)
        return (f"{len(self.interpolated)} slice(s) missing at {shown} mm along the normal; "
                "interpolated from the neighbours")

    def label(self) -> str:
        """Short human description for logs and error messages."""
        number = "?" if self.series_number is None else self.series_number
        # a series whose defects stopped it before its positions were told apart counts
        # only its files (each was called a position)
        counted = (f"{self.n_slices} positions from {self.n_files_total} files"
                   if self.ordered else f"{self.n_files_total} files")
        return (f"series {number} {self.description!r} ({self.modality}, uid {self.series_uid}, "
                f"{counted})")

    def short_label(self) -> str:
        return str(self.series_number) if self.series_number is not None else f"uid {self.series_uid}"

    def to_json(self) -> dict:
        """What a QC record says about a series that was found."""
        return {"series_uid": self.series_uid, "series_number": self.series_number,
                "description": self.description, "modality": self.modality,
                # no count of positions where a defect stopped their ordering
                "n_slices": self.n_slices if self.ordered else None,
                "n_files_total": self.n_files_total,
                "image_type": list(self.image_type),
                "patient_ids": list(self.patient_ids), "study_uids": list(self.study_uids),
                "problem": self.problem}


@dataclass
class SkippedFile:
    """A file of the folder that gives nothing to the volume, and why."""

    path: Path
    reason: str  # short, for the QC note: "not a DICOM file", "truncated pixel data", ...
    detail: str  # the full message: parser error, byte counts

    def to_json(self, folder: Path) -> dict:
        return {"file": _relative(self.path, folder), "reason": self.reason, "detail": self.detail}


@dataclass
class FolderScan:
    """Everything :func:`scan_folder` found in one folder."""

    folder: Path
    series: list[SeriesInfo]
    skipped: list[SkippedFile]  # files that are no image of any series
    n_files: int  # files looked at (hidden files are not counted)

    def all_skipped(self) -> list[SkippedFile]:
        """Files with no part in any volume: the foreign ones and the series' unreadable ones."""
        out = list(self.skipped)
        for s in self.series:
            out += [SkippedFile(p, short, full) for p, (short, full) in s.unreadable.items()]
        return sorted(out, key=lambda f: str(f.path))


class _IncompleteSeriesError(DicomSeriesError):
    """The chosen series has slices whose pixel data cannot be read (``files``)."""

    def __init__(self, reason: str, files: list[Path]):
        super().__init__(reason)
        self.files = files


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- header scan


@dataclass
class _Header:
    path: Path
    series_uid: str
    series_number: int | None
    description: str
    modality: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    size: tuple[int, int]
    instance: int | None
    samples: int
    frames: int
    thickness: float | None
    patient_id: str | None
    study_uid: str | None
    rescale: tuple[float, float] = (1.0, 0.0)  # (RescaleSlope, RescaleIntercept)
    storage: tuple[int, int] = (0, 16)  # (PixelRepresentation, BitsStored)
    unreadable: tuple[str, str] | None = None  # (short, full) when the pixel data is not there
    sop_uid: str | None = None
    volume_tags: dict[str, float | None] = field(default_factory=dict)  # VOLUME_TAGS' values
    photometric: str | None = None  # PhotometricInterpretation
    image_type: tuple[str, ...] = ()  # ImageType's values, upper case
    # which of RescaleSlope and RescaleIntercept the file gives (absent: 1 and 0)
    rescale_tags: tuple[bool, bool] = (True, True)
    modality_lut: bool = False  # a Modality LUT Sequence (0028,3000), which GDCM ignores
    # an enhanced image's functional groups, where its geometry is (one frame a file too)
    enhanced: bool = False
    # an MR image's complex component (:func:`_complex_component`), None where unstated
    component: str | None = None
    # a multi-frame file's distinct frame positions (its frames where they say none)
    frame_positions: int = 1


# an MR image's complex component as ImageType's third or fourth value writes it (Siemens
# ORIGINAL\PRIMARY\M\ND, Philips ORIGINAL\PRIMARY\M_FFE\M\FFE), or GE's private
# (0043,102F) number (dcm2niix's nii_dicom.cpp reads both)
_COMPONENT_WORDS = {"M": "MAGNITUDE", "P": "PHASE", "R": "REAL", "I": "IMAGINARY",
                    "MAGNITUDE": "MAGNITUDE", "PHASE": "PHASE", "REAL": "REAL",
                    "IMAGINARY": "IMAGINARY"}
_GE_COMPONENT = {0: "MAGNITUDE", 1: "PHASE", 2: "REAL", 3: "IMAGINARY"}


def _complex_component(ds, image_type: tuple[str, ...]) -> str | None:
    """MAGNITUDE, PHASE, REAL or IMAGINARY for an MR image that says which: PS3.3
    C.8.13.3.1.1 ComplexImageComponent (0008,9208), ImageType's values after the second,
    or GE's (0043,102F); None where none does (every CT, most MR)."""
    if str(ds.get("Modality", "") or "").upper() != "MR":
        return None
    stated = _text_or_none(ds.get("ComplexImageComponent"))
    if stated and stated.upper() in _COMPONENT_WORDS.values():
        return stated.upper()
    for word in image_type[2:4]:
        if word in _COMPONENT_WORDS:
            return _COMPONENT_WORDS[word]
    ge = ds.get((0x0043, 0x102F))
    number = _int_or_none(getattr(ge, "value", None)) if ge is not None else None
    return _GE_COMPONENT.get(number) if number is not None else None


def _image_type(value) -> tuple[str, ...]:
    """ImageType's values (ORIGINAL or DERIVED, PRIMARY or SECONDARY, then the vendor's:
    MPR, MIP, LOCALIZER), upper case; () where the tag is absent."""
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, str | bytes) else list(value)
    return tuple(str(v).strip().upper() for v in values)


def _int_or_none(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _syntax(ds):
    return getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)


def _pixel_element_header(ds) -> int:
    """Bytes of the PixelData element's tag, VR and length, which precede the pixels."""
    syntax = _syntax(ds)
    return 8 if syntax is not None and syntax.is_implicit_VR else 12


def _expected_pixel_bytes(ds) -> int | None:
    """Bytes of native (uncompressed) pixel data the header announces; None if compressed."""
    syntax = _syntax(ds)
    if syntax is None or syntax.is_compressed:
        return None
    bits = int(ds.get("BitsAllocated", 16) or 16)
    n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
    n *= int(_int_or_none(ds.get("NumberOfFrames")) or 1)
    return (n * bits + 7) // 8


def _row_bytes(ds) -> int:
    """Bytes of one row of native pixel data as its header announces them (2 at least:
    a pad byte after an odd length is padding whatever the row)."""
    bits = int(ds.get("BitsAllocated", 16) or 16)
    return max(2, (int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * bits + 7) // 8)


def _text_or_none(value) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _is_image_storage(ds) -> bool:
    """Whether the file's SOP class is an image's (CT/MR/PET/... Image Storage), by name:
    the dataset's, or where it has none, its file meta's."""
    from pydicom.uid import UID

    try:
        sop = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get(
            "MediaStorageSOPClassUID")
        return "Image Storage" in UID(str(sop or "")).name
    except Exception:  # a damaged element reads as no class
        return False


# the series a damaged file names when it names none: it could be a slice of any
SERIES_UNKNOWN = ("", False)
# the names DICOM files are given: such a file that cannot be parsed is a damaged slice,
# where another name is a foreign file (notes, a viewer's index)
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def _named_dicom(path: Path) -> bool:
    return path.suffix.lower() in _DICOM_SUFFIXES


# what a file that is no DICOM at all is skipped as (not a DICOMDIR or a report), in
# _read_header's words, which scan_folder reads back
_NOT_A_DICOM_FILE, _NOT_READABLE = "not a DICOM file", "not a readable DICOM file"
_NOT_DICOM = (_NOT_A_DICOM_FILE, _NOT_READABLE)


def _shorter_than_magic(path: Path) -> bool:
    """Whether the file ends before the DICOM magic's end (PS3.10 7.1: byte 132)."""
    try:
        return path.stat().st_size < 132
    except OSError:
        return True


def _name_shape(path: Path) -> str:
    """A file name with each run of digits as one ``#`` (``IM00005``: ``im#``): the
    pattern a folder's slices are named by."""
    return re.sub(r"[0-9]+", "#", path.name.lower())


def _has_magic(path: Path) -> bool:
    """The DICOM preamble's magic (PS3.10 7.1: 128 bytes, then ``DICM``)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return True  # it read as damaged: a read error is no foreign file


def _read_header(path: Path) -> tuple[_Header | None, tuple[str, str] | None,
                                      tuple[str, bool] | None]:
    """Header of one file, or (None, (short, full) reason it is skipped, (series UID,
    whether the file ends inside the UID's value, so that the UID read is its start)).

    An image header whose pixel data is missing or cut short is returned with
    ``unreadable`` set: it still tells which series and position the file was meant for.
    An image of a known series whose header cannot be read (a file cut inside it, a
    damaged element; pydicom converts an element when it is first read) comes back as
    (None, reason, its SeriesInstanceUID): it belongs to that series at an unknown place.
    A file that cannot be read (an I/O error), or that says it is DICOM (its name, its
    preamble, its image SOP class) and cannot be parsed or ends before its
    SeriesInstanceUID, is damaged and of no known series (``SERIES_UNKNOWN``): it could
    be an end slice of any, which no gap would show. Other files without an image
    header are foreign and skipped.
    """
    import warnings

    import pydicom
    from pydicom.errors import InvalidDicomError

    forced = False
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            # a forced parse of a foreign file warns about every odd tag; the skip says it once
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(fh, stop_before_pixels=True)
            except InvalidDicomError:
                # files written without the 128-byte preamble are still DICOM; accept them
                # only if the forced parse yields an image header (checked below)
                fh.seek(0)
                forced = True
                ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
            # pydicom stops at the start of the PixelData element: what is left of the file
            # must hold the announced pixels, otherwise the file was truncated
            size = os.fstat(fh.fileno()).st_size
            remaining = size - fh.tell()
            element = fh.read(12)  # the PixelData element's tag, VR and length
    except Exception as err:  # pydicom raises many types on garbage; all mean "not readable"
        if shared_cause(err):  # a mount that dropped: the job's, not the slice's
            raise
        if isinstance(err, OSError) or _named_dicom(path) or _has_magic(path):
            # a read error, or a file that says it is DICOM and cannot be parsed: a slice of
            # some series, damaged (an interrupted download)
            return None, ("damaged DICOM file", f"a damaged DICOM file, of no series that "
                          f"can be read ({type(err).__name__}: {err})"), SERIES_UNKNOWN
        return None, (_NOT_READABLE, f"{_NOT_READABLE} ({type(err).__name__}: {err})"), None
    not_image = ((_NOT_A_DICOM_FILE, f"{_NOT_A_DICOM_FILE} (no DICOM preamble, and no image "
                  "header when parsed without one)") if forced else
                 ("not a DICOM image", "not a DICOM image (no SeriesInstanceUID/Rows/"
                  "Columns, e.g. a DICOMDIR or report)"))
    if _is_image_storage(ds) or (forced and _named_dicom(path)) or (not forced and not len(ds)):
        # an image by its SOP class, a file named .dcm that parses to nothing, or the DICM
        # magic and no dataset after it (a file meta group cut short is no object either):
        # cut before its series (checked below) is damage
        damaged = ("damaged DICOM file", "a damaged DICOM file, with no SeriesInstanceUID "
                   "(cut short before it, or written without it), so its series cannot be "
                   "told")
    else:
        damaged = None
    # as read from the file, before the first access converts it (and forgets where)
    try:
        raw = ds.get_item(0x0020000E)
    except Exception:
        raw = None
    cut = raw is not None and (getattr(raw, "value_tell", None) is not None and raw.length is not None
           and raw.value_tell + raw.length > size)
    try:
        uid = str(ds.SeriesInstanceUID)
    except Exception:
        # nothing says of which series it was: a slice cut short is damage to any of them
        # (an end slice lost leaves no gap to show it), anything else no image
        return (None, damaged, SERIES_UNKNOWN) if damaged else (None, not_image, None)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as err:
        if not _is_image_storage(ds):
            return None, not_image, None
        # an image's header that ends before Rows/Columns: a file cut short
        return None, ("unreadable image header", "unreadable image header (no Rows/Columns "
                      f"in an image file: cut short? {type(err).__name__}: {err})"), (uid, cut)
    try:
        return _header(path, ds, uid, rows, cols, remaining, element)
    except Exception as err:  # a damaged element, converted on first read
        return None, ("unreadable image header",
                      f"unreadable image header ({type(err).__name__}: {err})"), (uid, cut)


def _declared_pixel_bytes(element: bytes, ds) -> int | None:
    """The length the PixelData element declares (``element``: the file's bytes where
    pydicom stopped, before the pixels), or None where it is not there to read (another
    element, an undefined length: encapsulated)."""
    import struct

    syntax = _syntax(ds)
    order = ">" if syntax is not None and not syntax.is_little_endian else "<"
    if len(element) < 8 or struct.unpack(order + "HH", element[:4]) != (0x7FE0, 0x0010):
        return None
    if syntax is not None and syntax.is_implicit_VR:
        length = struct.unpack(order + "I", element[4:8])[0]
    elif element[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN") and len(element) == 12:
        length = struct.unpack(order + "I", element[8:12])[0]
    else:
        return None
    return None if length == 0xFFFFFFFF else length


def _header(path: Path, ds, uid: str, rows: int, cols: int, remaining: int,
            element: bytes = b""):
    expected = _expected_pixel_bytes(ds)
    # pydicom stops before the element's tag: a file cut by a few bytes still has that many
    # more than its pixels
    remaining -= _pixel_element_header(ds)
    # pydicom inflates a deflated file whole on opening, so its position says nothing about
    # the pixels left; a cut one fails to inflate above (skipped, named) instead
    syntax = _syntax(ds)
    counted = syntax is None or not syntax.is_deflated
    unreadable = None
    if counted and remaining <= 0:
        unreadable = ("no pixel data", "no pixel data (the file ends before the pixels)")
    elif counted and expected is not None and remaining < expected:
        unreadable = ("truncated pixel data",
                      f"truncated pixel data ({remaining} bytes left, {expected} expected)")
    elif (counted and expected is not None
          and (declared := _declared_pixel_bytes(element, ds)) is not None
          and not expected <= declared < expected + _row_bytes(ds)):
        # an image of other dimensions under this header (16 x 16 announced, 16 x 24
        # stored): read as announced, its first pixels made an image that is none of the
        # slice. Less than a row more is padding (a pad byte, what pydicom trims as excess)
        unreadable = ("pixel data of another size",
                      f"pixel data of {declared} bytes, where its header's rows, columns, "
                      f"samples, frames and bits make {expected} (a row "
                      f"{_row_bytes(ds)})")
    spacing = _floats(ds.get("PixelSpacing"), 2)
    image_type = _image_type(ds.get("ImageType"))
    slope = (_floats([ds.get("RescaleSlope")], 1) or (1.0,))[0]
    intercept = (_floats([ds.get("RescaleIntercept")], 1) or (0.0,))[0]
    return _Header(
        path=path,
        series_uid=uid,
        series_number=_int_or_none(ds.get("SeriesNumber")),
        description=str(ds.get("SeriesDescription", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=spacing,  # type: ignore[arg-type]
        size=(rows, cols),
        instance=_int_or_none(ds.get("InstanceNumber")),
        samples=int(ds.get("SamplesPerPixel", 1) or 1),
        frames=_int_or_none(ds.get("NumberOfFrames")) or 1,
        thickness=(_floats([ds.get("SliceThickness")], 1) or (None,))[0],
        patient_id=_text_or_none(ds.get("PatientID")),
        study_uid=_text_or_none(ds.get("StudyInstanceUID")),
        rescale=(slope, intercept),
        storage=(_int_or_none(ds.get("PixelRepresentation")) or 0,
                 _int_or_none(ds.get("BitsStored")) or 0),
        unreadable=unreadable,
        sop_uid=_text_or_none(ds.get("SOPInstanceUID")),
        volume_tags={t: (_floats([ds.get(t)], 1) or (None,))[0] for t in VOLUME_TAGS},
        photometric=_text_or_none(ds.get("PhotometricInterpretation")),
        image_type=image_type,
        component=_complex_component(ds, image_type),
        rescale_tags=("RescaleSlope" in ds, "RescaleIntercept" in ds),
        modality_lut="ModalityLUTSequence" in ds,
        enhanced=("ImagePositionPatient" not in ds
                  and ("SharedFunctionalGroupsSequence" in ds
                       or "PerFrameFunctionalGroupsSequence" in ds)),
        frame_positions=_frame_positions(ds),
    ), unreadable, None


def _frame_positions(ds) -> int:
    """A multi-frame file's distinct slice positions (PS3.3 C.7.6.16.2.3, each frame's
    PlanePositionSequence), so that a 4-D series' time points count once; its frame count
    where no frame says where it lies."""
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    positions = set()
    for group in ds.get("PerFrameFunctionalGroupsSequence") or ():
        plane = group.get("PlanePositionSequence")
        position = _floats(plane[0].get("ImagePositionPatient"), 3) if plane else None
        if position is not None:
            positions.add(tuple(round(v, 3) for v in position))
    return len(positions) or frames


def _distinct(values) -> tuple[str | None, ...]:
    return tuple(sorted(set(values), key=lambda v: (v is None, v or "")))


def _shown(value: str | None) -> str:
    return "absent" if value is None else repr(value)


def _analyse(headers: list[_Header]) -> SeriesInfo:
    """Order one series along its normal, keep one volume of repeated positions, list
    its defects."""
    first = headers[0]
    n_total = len(headers)
    defects: list[str] = []
    sizes = Counter(h.size for h in headers)
    if len(sizes) > 1:
        usual = sizes.most_common(1)[0][0]
        odd = [h for h in headers if h.size != usual]
        defects.append(f"mixed image sizes {sorted(sizes)} ({_files_with(odd, _size)})")
    if any(h.samples != 1 for h in headers):
        colour = [h for h in headers if h.samples != 1]
        defects.append(f"not grey-level (SamplesPerPixel={max(h.samples for h in headers)}; "
                       f"{_files_with(colour, lambda h: h.samples)})")
    inverted = [h for h in headers if h.photometric == "MONOCHROME1"]
    if inverted:
        # PS3.3 C.7.6.3.1.2: MONOCHROME1 says how to display the stored values; the rescale
        # applies to them as they are. SimpleITK's GDCM reader inverts them before the
        # rescale: a stored 5 with intercept -1024 read as 64506, not -1019
        defects.append(f"MONOCHROME1 (inverted grey scale) pixel data in {len(inverted)} of "
                       f"{n_total} files ({_files_with(inverted, lambda h: h.photometric)}), "
                       "which the reader would invert before the rescale; convert the "
                       "series to MONOCHROME2")
    # one frame a file still keeps its geometry in the functional groups: refused as
    # lacking ImagePositionPatient, which said nothing of why
    if any(h.frames > 1 or h.enhanced for h in headers):
        defects.append("multi-frame (enhanced) DICOM files are not supported; "
                       "convert them with dcm2niix first")
    if any("MOSAIC" in h.image_type for h in headers):
        # a Siemens EPI's slices tiled in one image: refused as "too few slices", or at
        # min_slices 1 read as one slice of tiles
        defects.append("Siemens mosaic images (ImageType MOSAIC: each file tiles a "
                       "volume's slices) are not supported; convert them with dcm2niix first")
    patient_ids = _distinct(h.patient_id for h in headers)
    study_uids = _distinct(h.study_uid for h in headers)
    if len(patient_ids) > 1:
        defects.append(f"its files belong to {len(patient_ids)} patients (PatientID "
                       f"{', '.join(map(_shown, patient_ids))})")
    if len(study_uids) > 1:
        defects.append(f"its files belong to {len(study_uids)} studies (StudyInstanceUID "
                       f"{', '.join(map(_shown, study_uids))})")
    no_geometry = [h for h in headers if h.position is None or h.orientation is None]
    if no_geometry:
        named = _files_with(no_geometry, lambda h: "no position" if h.position is None
                            else "no orientation")
        defects.append(f"{len(no_geometry)} of {n_total} files lack ImagePositionPatient/"
                       f"ImageOrientationPatient (not a cross-sectional image; {named})")
    # SimpleITK refuses such a spacing with a RuntimeError that names no file
    bad_spacing = {h.pixel_spacing for h in headers if h.pixel_spacing is not None
                   and not all(np.isfinite(v) and v > 0 for v in h.pixel_spacing)}
    if any(h.pixel_spacing is None for h in headers):
        defects.append("no PixelSpacing")
    elif bad_spacing:
        shown = ", ".join("\\".join(f"{v:g}" for v in sp) for sp in sorted(bad_spacing))
        defects.append(f"PixelSpacing {shown} is not a positive distance")
    elif len({np.round(h.pixel_spacing, 4).tobytes() for h in headers}) > 1:
        defects.append("mixed pixel spacing")
    orientation = first.orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    if not no_geometry:
        defects += _geometry_defects(headers)

    info = SeriesInfo(
        series_uid=first.series_uid,
        series_number=first.series_number,
        description=first.description,
        modality=first.modality,
        files=[h.path for h in headers],
        positions=np.array([h.position or (np.nan,) * 3 for h in headers], dtype=float),
        orientation=tuple(orientation),
        pixel_spacing=tuple(first.pixel_spacing or (1.0, 1.0)),  # type: ignore[arg-type]
        slice_spacing=float("nan"),
        n_files_total=n_total,
        n_duplicates_dropped=0,
        defects=defects,
        slice_thickness=first.thickness,
        patient_ids=patient_ids,
        study_uids=study_uids,
        unreadable={h.path: h.unreadable for h in headers if h.unreadable},
        image_type=first.image_type,
        frames=sum(h.frame_positions for h in headers if h.frames > 1),
    )
    if defects:
        info.ordered = False
        return info  # ordering along a normal means nothing without one geometry

    components = Counter(h.component or "unstated" for h in headers)
    stated = set(components) - {"unstated"}
    if not (len(stated) <= 1 and stated <= {"MAGNITUDE", "REAL"}):
        # a phase map at the magnitude's positions was told apart from it by
        # InstanceNumber blocks alone, and the first block kept, whichever it was. The
        # magnitude is kept, else the real part (a phase-sensitive inversion recovery's
        # image of the anatomy); a phase or imaginary image alone is none
        said = ", ".join(f"{n} {c.lower()}" for c, n in sorted(components.items()))
        kept = next((c for c in ("MAGNITUDE", "REAL") if c in components), None)
        if kept is None:
            info.defects.append(f"no magnitude or real image ({said} images): a phase or "
                                "imaginary image is no picture of the anatomy")
            info.ordered = False
            return info
        headers = [h for h in headers if h.component == kept]
        component_note = f"kept the {kept.lower()} images of {said}"
    else:
        component_note = ""
    normal = info.normal
    along = np.array([np.dot(h.position, normal) for h in headers])
    choice = one_volume(headers, _slots(along))
    if choice.problem:
        info.defects.append(choice.problem)
        info.ordered = False
        return info
    kept = choice.kept
    info.repeats = "; ".join(n for n in (component_note, choice.note) if n)
    # what the read reads: the kept volume's files (another echo's rescale is not its)
    chosen = [headers[i] for i in kept]
    info.rescales = tuple(sorted({h.rescale for h in chosen}))
    info.storages = tuple(sorted({h.storage for h in chosen}))
    rescale_problem = _rescale_defect(chosen)
    if rescale_problem:
        info.defects.append(rescale_problem)
    info.files = [headers[i].path for i in kept]
    info.positions = np.array([headers[i].position for i in kept], dtype=float)
    info.n_duplicates_dropped = n_total - len(kept)
    steps = np.diff(along[kept])
    if len(steps):
        median = float(np.median(steps))
        grid = np.concatenate([[0], np.cumsum(_whole_spacings(steps, median))])
        rise = along[kept] - along[kept][0]
        fitted = float(grid @ rise / (grid @ grid))
        # the median where the two agree (a regular series' spacing as written, 5.0 and
        # not 5.00000055): a part in 1e5 moves the 1000th slice by 1 % of a spacing
        info.slice_spacing = median if abs(fitted - median) <= 1e-5 * median else fitted
        offsets = info.positions - info.positions[0]
        in_plane = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
        per_slice = in_plane[-1] / len(steps)
        # the volume puts every slice on the first one's axis: a drift that is small per
        # slice (a 0.5 degree tilt) adds up over hundreds of slices, and a slice moved
        # in-plane between aligned first and last ones has no drift at all
        worst = int(np.argmax(in_plane))
        if per_slice > SHEAR_TOL * info.slice_spacing:
            info.defects.append(
                f"slices are not stacked along their normal ({per_slice:.3g} mm in-plane shift "
                "per slice: gantry tilt or a sheared series)")
        elif in_plane[worst] > IN_PLANE_TOL * min(info.pixel_spacing):
            info.defects.append(
                f"slices are not stacked along their normal ({info.files[worst].name} lies "
                f"{in_plane[worst]:.3g} mm in-plane from the first slice's axis, more than "
                f"{IN_PLANE_TOL:g} pixel: gantry tilt or slices of another stack)")
    return info


def _slots(along: np.ndarray) -> list[int]:
    """Index of each file's slice position along the normal: positions within
    POSITION_TOL of the previous one are the same slice."""
    order = np.argsort(along, kind="stable")
    slots = [0] * len(along)
    for prev, i in zip(order[:-1], order[1:], strict=True):
        slots[i] = slots[prev] + (along[i] - along[prev] > POSITION_TOL)
    return slots


def _geometry_defects(headers: list[_Header]) -> list[str]:
    """What is wrong with the positions and orientations of a series whose files all
    have them: values that are not finite (named by file), more than one orientation,
    direction cosines that are no orthonormal pair."""
    defects = []
    for key, attr in (("ImagePositionPatient", "position"),
                      ("ImageOrientationPatient", "orientation")):
        bad = [h for h in headers if not np.all(np.isfinite(getattr(h, attr)))]
        if bad:
            # a NaN sorts nowhere and spreads into the spacing: no slice can be placed
            named = _files_with(bad, lambda h, attr=attr: _backslashed(getattr(h, attr)))
            defects.append(f"{key} is not finite in {len(bad)} of {len(headers)} files "
                           f"({named})")
    if defects:
        return defects
    distinct = [np.asarray(headers[0].orientation)]
    members: list[list[_Header]] = [[headers[0]]]
    for h in headers[1:]:
        o = np.asarray(h.orientation)
        near = [i for i, d in enumerate(distinct) if np.max(np.abs(o - d)) <= ORIENTATION_TOL]
        if near:
            members[near[0]].append(h)
        else:
            distinct.append(o)
            members.append([h])
    if len(distinct) > 1:
        # the files off the most common orientation (a scout, a reformat in the series),
        # named so that they can be taken out
        usual = max(range(len(members)), key=lambda i: len(members[i]))
        odd = [h for i, group in enumerate(members) if i != usual for h in group]
        defects.append(f"mixed orientations ({len(distinct)} distinct "
                       f"ImageOrientationPatient in one series; {len(odd)} of "
                       f"{len(headers)} files off the most common "
                       f"{_backslashed(distinct[usual])}: "
                       f"{_files_with(odd, lambda h: _backslashed(h.orientation))})")
    for o in distinct:
        # PS3.3 C.7.6.2.1.1: the row and column cosines are orthogonal unit vectors;
        # otherwise the normal, the spacing along it and the shear test mean nothing
        row, col = o[:3], o[3:]
        lengths = np.linalg.norm(row), np.linalg.norm(col)
        dot = float(np.dot(row, col))
        if max(abs(lengths[0] - 1), abs(lengths[1] - 1), abs(dot)) > COSINE_TOL:
            defects.append(f"ImageOrientationPatient {_backslashed(o)} is not two orthogonal "
                           f"unit vectors (row length {lengths[0]:.4g}, column length "
                           f"{lengths[1]:.4g}, row . column {dot:.3g}; tolerance {COSINE_TOL:g})")
            break
    return defects


def _rescale_defect(headers: list[_Header]) -> str | None:
    """PS3.3 C.11.1.1.2: stored values map to output units as slope * value + intercept;
    a slope of 0 makes every voxel the intercept, a NaN one every voxel NaN. A file
    without the tags its series' other files give was read with slope 1 and intercept 0
    (a CT slice 1024 HU off the others), and a Modality LUT Sequence (C.11.1), which maps
    the values where a rescale would, is not applied by the reader: both are refused."""
    tags = Counter(h.rescale_tags for h in headers)
    # files that give the tags and files that take their defaults, mapping otherwise
    if len(tags) > 1 and len({h.rescale for h in headers}) > 1:
        usual = tags.most_common(1)[0][0]
        odd = [h for h in headers if h.rescale_tags != usual]

        def given(h: _Header) -> str:
            return ", ".join(name for name, has in zip(("slope", "intercept"), h.rescale_tags,
                                                       strict=True) if has) or "neither"

        return (f"RescaleSlope/RescaleIntercept given in some files and not others: "
                f"{len(odd)} of {len(headers)} files differ ({_files_with(odd, given)}), "
                "whose values would be read in other units")
    lut = [h for h in headers if h.modality_lut]
    if lut:
        return (f"a Modality LUT Sequence, which the reader does not apply, in {len(lut)} of "
                f"{len(headers)} files ({_files_with(lut, lambda h: '(0028,3000)')}); "
                "convert the series with its LUT applied")
    bad = [h for h in headers if not (np.isfinite(h.rescale[0]) and h.rescale[0] != 0
                                      and np.isfinite(h.rescale[1]))]
    if not bad:
        return None
    named = _files_with(bad, lambda h: f"slope {h.rescale[0]:g}, intercept {h.rescale[1]:g}")
    return (f"RescaleSlope/RescaleIntercept give no values in {len(bad)} of {len(headers)} "
            f"files ({named})")


def _files_with(headers: list[_Header], value) -> str:
    """``"IM2.dcm: <value>, IM5.dcm: <value>, and 4 more"``: the first NOTE_FILES files."""
    named = ", ".join(f"{h.path.name}: {value(h)}" for h in headers[:NOTE_FILES])
    more = len(headers) - NOTE_FILES
    return named + (f", and {more} more" if more > 0 else "")


def _size(h: _Header) -> str:
    return f"{h.size[0]}x{h.size[1]}"


def _backslashed(values) -> str:
    """Numbers as a DICOM multi-value shows them: 0\\0\\nan."""
    return "\\".join(f"{float(v):g}" for v in values)


def check_series(info: SeriesInfo, min_slices: int = 3, max_gap_factor: float = 1.5) -> str | None:
    """Why ``info`` cannot be read as one 3-D volume under these thresholds (or None)."""
    problems = list(info.defects)
    if not problems:
        if info.n_slices < min_slices:
            problems.append(f"too few slices: {info.n_slices} distinct positions "
                            f"(minimum {min_slices})")
        if info.n_slices >= 2:
            along = info.positions @ info.normal
            steps = np.diff(along)
            median = float(np.median(steps))
            worst = int(np.argmax(steps))
            if steps[worst] > max_gap_factor * median:
                n_gaps = int(np.sum(steps > max_gap_factor * median))
                problems.append(
                    f"gap of {steps[worst]:.3g} mm between slices at {along[worst]:.4g} and "
                    f"{along[worst + 1]:.4g} mm along the normal (median spacing "
                    f"{median:.3g} mm; {n_gaps} gap(s) > {max_gap_factor} x median)")
            uneven = _uneven_steps(steps, median, max_gap_factor)
            if len(uneven):
                shown = ", ".join(f"{steps[i]:.4g} mm after {along[i]:.4g} mm"
                                  for i in uneven[:NOTE_FILES])
                more = f", and {len(uneven) - NOTE_FILES} more" if len(uneven) > NOTE_FILES else ""
                problems.append(
                    f"uneven slice steps: {len(uneven)} of {len(steps)} steps along the normal "
                    f"are off the median spacing {median:.4g} mm by more than "
                    f"{STEP_TOL:.0%} ({shown}{more}); one spacing would misplace the slices")
            elif not problems:
                # each step within 5 % of the median, and yet steps a little apart add up
                # (two slice groups of 2.5 and 2.62 mm in one series): every slice must lie
                # within that tolerance of its place on the volume's grid
                grid = np.concatenate([[0], np.cumsum(_whole_spacings(steps, median))])
                off = np.abs(along - along[0] - grid * info.slice_spacing)
                far = int(np.argmax(off))
                if off[far] > STEP_TOL * info.slice_spacing:
                    problems.append(
                        f"slices drift off one spacing: the slice at {along[far]:.4g} mm "
                        f"along the normal lies {off[far]:.3g} mm from its place on a grid "
                        f"of {info.slice_spacing:.4g} mm (more than {STEP_TOL:.0%} of it); "
                        "one spacing would misplace the slices")
    return "; ".join(problems) or None


def _uneven_steps(steps: np.ndarray, spacing: float, max_gap_factor: float) -> np.ndarray:
    """Indices of the steps that are neither the median spacing nor a gap.

    A step of a whole number of spacings is missing slices: judged as a gap by
    ``max_gap_factor`` (which may let it through), not here.
    """
    ratio = steps / spacing
    whole = _whole_spacings(steps, spacing)
    # one tolerance for every step: slices go on a grid of one spacing, so a gap of 5.24
    # spacings would put every slice after it 0.24 spacings off
    off = np.abs(ratio - whole) > STEP_TOL
    return np.flatnonzero(off & (ratio <= max_gap_factor))


def _whole_spacings(steps: np.ndarray, spacing: float) -> np.ndarray:
    """How many spacings each step spans (at least 1): a gap of k spacings misses k - 1
    slices."""
    return np.maximum(np.rint(steps / spacing), 1).astype(int)


def _candidate_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The folder tree's files, linked subfolders included, and its symbolic links to
    nothing (not hidden files). A subfolder that cannot be listed rejects the folder: a
    series split over ``0001/`` and ``0002/`` read without one half came out short at one
    end, "ok"."""
    try:
        return walk_files(folder, keep=lambda name: not name.startswith("."))
    except OSError as err:
        if shared_cause(err):
            raise
        where = _relative(Path(err.filename), folder) if err.filename else folder
        raise DicomSeriesError(f"cannot list {where}: {err.strerror or err}",
                               path=folder) from err


def _skipped_text(skipped: list[SkippedFile], n_files: int, folder: Path) -> str:
    named = ", ".join(f"{_relative(f.path, folder)} ({f.reason})" for f in skipped[:NOTE_FILES])
    more = f", and {len(skipped) - NOTE_FILES} more" if len(skipped) > NOTE_FILES else ""
    return f"skipped {len(skipped)} of {n_files} files: {named}{more}"


def _folder_error(reason: str, scan: FolderScan, folder: Path,
                  named: tuple[Path, ...] = ()) -> DicomSeriesError:
    """A rejection that also names the files skipped on the way (they often explain it,
    e.g. a gap); ``named``: files the reason already names.

    The error carries ``detail``, a JSON-able dict (skipped files, series found) that the
    shard stores in the subject's QC row.
    """
    skipped = scan.all_skipped()
    others = [f for f in skipped if f.path not in named]
    if others:
        reason = f"{reason}; {_skipped_text(others, scan.n_files, folder)}"
    err = DicomSeriesError(reason, path=folder)
    err.detail = {"n_files_in_folder": scan.n_files,  # type: ignore[attr-defined]
                  "skipped": [f.to_json(folder) for f in skipped],
                  "series": [s.to_json() for s in scan.series]}
    return err


def scan_folder(folder: str | Path, min_slices: int = 3,
                max_gap_factor: float = 1.5) -> FolderScan:
    """Every series under ``folder`` (searched recursively), headers only, and every
    file skipped on the way.

    Files that are not DICOM images (foreign files, DICOMDIR) are skipped with a
    warning naming them; an image whose pixel data is missing or cut short is skipped
    too but stays in its series (``SeriesInfo.unreadable``); hidden files
    (``.DS_Store``) are ignored. Each series carries ``problem`` (None when usable);
    they are sorted by SeriesNumber, then UID. Raises :class:`DicomSeriesError` when
    the folder holds no DICOM image at all.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomSeriesError("not a folder (a DICOM series is read from a folder of files)",
                               path=folder)
    files, dangling = _candidate_files(folder)
    if dangling:
        # files not fetched could be any series' slices: a volume read without them could
        # lack its end slices with nothing to show (a gap at most, naming no file)
        raise DicomSeriesError(
            f"{len(dangling)} of the folder's files are {DANGLING_LINK}: "
            + ", ".join(_relative(p, folder) for p in dangling[:NOTE_FILES])
            + (", ..." if len(dangling) > NOTE_FILES else ""), path=folder)
    groups: dict[str, list[_Header]] = defaultdict(list)
    skipped: list[SkippedFile] = []
    broken: dict[str, list[SkippedFile]] = defaultdict(list)  # by the series they name
    cut_uids: set[str] = set()   # UIDs read from a file that ends inside their value
    damaged: list[SkippedFile] = []   # of no series that can be read
    for path in files:
        header, why, broken_of = _read_header(path)
        if why is not None:
            log.warning("skipping %s: %s", path, why[1])
        if header is None:
            if broken_of == SERIES_UNKNOWN:
                damaged.append(SkippedFile(path, *why))  # type: ignore[misc]
            elif broken_of is not None:
                broken[broken_of[0]].append(SkippedFile(path, *why))  # type: ignore[misc]
                if broken_of[1]:
                    cut_uids.add(broken_of[0])
            else:
                skipped.append(SkippedFile(path, *why))  # type: ignore[misc]
            continue
        groups[header.series_uid].append(header)
    # a file named as the folder's images are (IM00005 beside IM00000..IM00004, a CD's
    # names without a suffix) that is no DICOM at all is one cut to nothing (an empty
    # file of an interrupted copy): called foreign, it lost the series' end slice, ok
    # (a file long enough for the magic and without it that parses is another object: a
    # report written without the preamble)
    shapes = {_name_shape(h.path) for headers in groups.values() for h in headers}
    cut_to_nothing = [f for f in skipped if f.reason in _NOT_DICOM
                      and _name_shape(f.path) in shapes and _shorter_than_magic(f.path)]
    if cut_to_nothing:
        skipped = [f for f in skipped if f not in cut_to_nothing]
        damaged += [SkippedFile(f.path, "damaged DICOM file", "named as the folder's DICOM "
                                f"images are, and {f.detail}: one cut short before its "
                                "DICOM magic (empty, an interrupted copy)")
                   for f in cut_to_nothing]
    if damaged:
        # as a link not fetched: a series read without them could lack its end slices,
        # stored as if whole with a note calling them foreign files
        raise DicomSeriesError(
            f"{len(damaged)} of the folder's files are damaged DICOM files whose series "
            "cannot be read, so any series could be missing slices: "
            + ", ".join(f"{_relative(f.path, folder)} ({f.detail})"
                        for f in damaged[:NOTE_FILES])
            + (", ..." if len(damaged) > NOTE_FILES else "")
            + "; download them again, or remove them if they belong to no series", path=folder)
    for uid in [u for u in broken if u not in groups]:
        # a UID cut short with its file is the start of its series' one; a whole UID that
        # begins another's (…777.1 and …777.12) is its own series, absent here
        owners = [g for g in groups if g.startswith(uid)] if uid in cut_uids else []
        if len(owners) == 1:
            broken[owners[0]] += broken.pop(uid)
        else:
            skipped += broken.pop(uid)
    if not groups:
        reason = f"no DICOM series found: {len(files)} files, none a DICOM image"
        if skipped:
            reason += f" (e.g. {_relative(skipped[0].path, folder)}: {skipped[0].detail})"
        err = DicomSeriesError(reason, path=folder)
        err.detail = {"n_files_in_folder": len(files),  # type: ignore[attr-defined]
                      "skipped": [f.to_json(folder) for f in skipped]}
        raise err
    series = []
    for headers in groups.values():
        info = _analyse(headers)
        for f in broken.get(info.series_uid, ()):
            info.unreadable[f.path] = (f.reason, f.detail)
            info.header_broken.append(f.path)
        info.problem = check_series(info, min_slices, max_gap_factor)
        series.append(info)
    series.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))
    return FolderScan(folder=folder, series=series, skipped=skipped, n_files=len(files))


def scan_dicom_folder(folder: str | Path, min_slices: int = 3,
                      max_gap_factor: float = 1.5) -> list[SeriesInfo]:
    """The series of :func:`scan_folder` (which also returns the skipped files)."""
    return scan_folder(folder, min_slices, max_gap_factor).series


def folder_mix(series: list[SeriesInfo]) -> dict[str, dict[str, list[str]]]:
    """The identifiers a folder holds more than one value of: ``{"PatientID": {value:
    [series...]}, "StudyInstanceUID": {...}}``, values as shown in messages; ``{}`` when
    the folder is one patient's one study."""
    out: dict[str, dict[str, list[str]]] = {}
    for key, attr in (("PatientID", "patient_ids"), ("StudyInstanceUID", "study_uids")):
        owners: dict[str | None, list[str]] = defaultdict(list)
        for s in series:
            for value in getattr(s, attr):
                owners[value].append(s.short_label())
        if len(owners) > 1:
            out[key] = {_shown(v): owners[v] for v in _distinct(owners)}
    return out


def _mix_text(mix: dict[str, dict[str, list[str]]]) -> str:
    parts = []
    for key, noun in (("PatientID", "patients"), ("StudyInstanceUID", "studies")):
        if key in mix:
            values = ", ".join(f"{v} (series {', '.join(labels)})"
                               for v, labels in mix[key].items())
            parts.append(f"{len(mix[key])} {noun} ({key} {values})")
    return " and ".join(parts)


# --------------------------------------------------------------------------- selection


def _parse_rule(rule: str) -> tuple[str, Any]:
    """Validate a series-selection rule early, so a typo is a ConfigError, not a bad input."""
    if rule in ("most_slices", "first"):
        return rule, None
    kind, sep, arg = str(rule).partition(":")
    if sep and kind == "description" and arg:
        try:
            return kind, re.compile(arg, re.IGNORECASE)
        except re.error as err:
            raise ConfigError(f"series selection rule {rule!r}: invalid regex ({err})") from err
    if sep and kind == "uid" and arg:
        return kind, arg.strip()
    raise ConfigError(f"unknown series selection rule {rule!r}; use one of {', '.join(RULES)}")


def _number_key(s: SeriesInfo) -> tuple:
    return (s.series_number is None, s.series_number or 0, s.series_uid)


def select_series(series: list[SeriesInfo], rule: str = "most_slices", min_slices: int = 3,
                  max_gap_factor: float = 1.5) -> SeriesInfo:
    """Pick one usable series by ``rule``.

    Rules: ``most_slices`` (an acquired series before a derived one, by ImageType's
    DERIVED or SECONDARY, or a localizer; then most distinct positions, ties to the lowest
    SeriesNumber), ``first`` (lowest SeriesNumber), ``description:<regex>``
    (case-insensitive search in SeriesDescription; several matches -> as
    ``most_slices``), ``uid:<SeriesInstanceUID>``. Only series without a problem under
    ``min_slices``/``max_gap_factor`` qualify; otherwise :class:`DicomSeriesError`
    lists every series with the reason it was rejected.

    Series of more than one patient or study (:func:`folder_mix`) are rejected as a
    whole, unless the rule is ``uid:``: naming the series is a deliberate choice. A
    chosen series with a file whose pixel data cannot be read is rejected with that
    file's name (another series is not chosen in its place). So is one that ``most_slices``
    or ``first`` chose only because the series it ranks first has a problem, where the
    chosen one is no stand-in for it (:func:`_no_stand_in`: a reformat or a scout for an
    acquired volume).
    """
    kind, arg = _parse_rule(rule)
    mix = folder_mix(series)
    if mix and kind != "uid":
        # not "choose it with uid:": series_select is one rule for every DICOM subject,
        # and one subject's SeriesInstanceUID rejects every other subject's series
        raise DicomSeriesError(f"the folder mixes {_mix_text(mix)}; split it into one "
                               "folder a study, or remove the other patient's files")
    judged = _judged(series, min_slices, max_gap_factor)
    rejected: dict[str, str] = {s.series_uid: s.problem for s in judged if s.problem}
    usable = [s for s in judged if not s.problem]
    if kind == "description":
        for s in usable:
            if not arg.search(s.description):
                rejected[s.series_uid] = f"description does not match {arg.pattern!r}"
        usable = [s for s in usable if arg.search(s.description)]
    elif kind == "uid":
        for s in usable:
            if s.series_uid != arg:
                rejected[s.series_uid] = "not the requested UID"
        usable = [s for s in usable if s.series_uid == arg]
    if not usable:
        why = "; ".join(f"{s.label()}: {rejected[s.series_uid]}" for s in judged)
        if kind == "uid" and arg not in {s.series_uid for s in judged}:
            why = f"no series has UID {arg}; found {why}"
        raise DicomSeriesError(f"no usable series for rule {rule!r} among {len(judged)} series: "
                               f"{why}")
    chosen = min(usable, key=_rank(kind))
    if (above := _unreadable_above(judged, chosen, kind, arg, min_slices)) is not None \
            and _no_stand_in(above, chosen):
        raise DicomSeriesError(
            f"{above.label()} is the series {rule!r} ranks first, and it is refused: "
            f"{above.problem}; {chosen.short_label()} {chosen.description!r} "
            f"({_kind_text(chosen)}) is not converted in its place")
    broken = [f for f in chosen.files if f in chosen.unreadable] + chosen.header_broken
    if broken:
        named = "; ".join(f"{f.name}: {chosen.unreadable[f][1]}" for f in broken[:NOTE_FILES])
        more = f"; and {len(broken) - NOTE_FILES} more" if len(broken) > NOTE_FILES else ""
        raise _IncompleteSeriesError(f"{chosen.label()} is incomplete: {len(broken)} of its "
                                     f"slices cannot be read ({named}{more})", broken)
    return chosen


# --------------------------------------------------------------------------- reading


def read_dicom_series(folder: str | Path, rule: str = "most_slices", min_slices: int = 3,
                      max_gap_factor: float = 1.5):
    """Read the series ``rule`` selects as a 3-D SimpleITK image.

    Returns ``(image, info)``. The files are read in our order (along the slice
    normal); origin = first position, direction = (row, column, normal) cosines,
    spacing = (column spacing, row spacing, measured slice spacing), all in
    DICOM's LPS frame as SimpleITK expects; a missing slice that ``max_gap_factor``
    lets through is interpolated (``info.interpolated``). Rescale slope/intercept are applied
    by the reader, so CT comes out in HU; a series whose files differ in them, or in
    PixelRepresentation or BitsStored, is read as float32, each slice with its own.
    """
    image, info, _ = _read(Path(folder), rule, min_slices, max_gap_factor)
    return image, info


def _read(folder: Path, rule: str, min_slices: int, max_gap_factor: float):
    """:func:`read_dicom_series`, also returning the folder's scan."""
    import SimpleITK as sitk

    _parse_rule(rule)
    scan = scan_folder(folder, min_slices, max_gap_factor)
    series = scan.series
    try:
        info = select_series(series, rule, min_slices, max_gap_factor)
    except DicomSeriesError as err:
        named = tuple(getattr(err, "files", ()))
        raise _folder_error(err.reason, scan, folder, named) from None
    if info.repeats:
        log.warning("%s: %s: %s", folder, info.label(), info.repeats)
    others = [s for s in series if s.series_uid != info.series_uid]
    if others:
        log.info("%s: chose %s by rule %r over %d other series", folder, info.label(), rule,
                 len(others))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in info.files])
    if len(info.rescales) > 1 or len(info.storages) > 1:
        # the reader takes the pixel type from the first file: a later slice whose own
        # slope/intercept, PixelRepresentation or BitsStored (PS3.3 C.7.6.3.1) gives values
        # outside it (-24 HU in uint16, a signed -999 or a 16-bit 40000 after 12-bit slices)
        # would wrap; float32 holds every value of up to 24 stored bits exactly
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
        if image.GetDimension() == 2:
            image = sitk.JoinSeries(image)
    except RuntimeError as err:
        raise _folder_error(f"SimpleITK cannot read {info.label()}: {_sitk_message(err)}"
                            f"{_culprit(info.files)}", scan, folder) from err
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetSize()[2] != info.n_slices:
        raise _folder_error(f"SimpleITK read {image.GetSize()} x "
                            f"{image.GetNumberOfComponentsPerPixel()} components from "
                            f"{info.label()}; expected one grey value per voxel and "
                            f"{info.n_slices} slices", scan, folder)
    image = _fill_missing_slices(image, info)
    slice_spacing = info.slice_spacing
    if info.n_slices == 1:
        slice_spacing = info.slice_thickness or 1.0
        log.warning("%s: single-slice series; using SliceThickness %.3g mm as the z spacing",
                    folder, slice_spacing)
    direction = np.column_stack(info.axes())
    try:
        image.SetOrigin(tuple(float(v) for v in info.positions[0]))
        # PixelSpacing is (distance between rows, between columns): x (along a row) comes second
        image.SetSpacing((float(info.pixel_spacing[1]), float(info.pixel_spacing[0]),
                          float(slice_spacing)))
        image.SetDirection(tuple(float(v) for v in direction.ravel()))
    except RuntimeError as err:  # e.g. a SliceThickness of a single slice that is <= 0
        raise _folder_error(f"SimpleITK refuses the geometry of {info.label()}: "
                            f"{_sitk_message(err)}", scan, folder) from err
    return image, info, scan


def _fill_missing_slices(image, info: SeriesInfo):
    """``image`` on the series' regular grid: a slice missing there (a gap that
    ``max_gap_factor`` lets through, always a whole number of spacings) is the linear
    interpolation of its two neighbours, and ``info.interpolated`` says where.

    One spacing over the slices as read would put every slice after the gap one
    spacing too close to the first.
    """
    import SimpleITK as sitk

    along = info.positions @ info.normal
    if len(along) < 2:
        return image
    whole = _whole_spacings(np.diff(along), info.slice_spacing)
    grid = np.concatenate([[0], np.cumsum(whole)])  # index of each read slice on the grid
    if grid[-1] == len(along) - 1:
        return image
    arr = sitk.GetArrayFromImage(image)  # (z, y, x)
    out = np.empty((grid[-1] + 1, *arr.shape[1:]), dtype=arr.dtype)
    out[grid] = arr
    missing = []
    for k in np.flatnonzero(whole > 1):
        a, b = grid[k], grid[k + 1]
        for j in range(a + 1, b):
            w = (j - a) / (b - a)
            mixed = (1 - w) * arr[k].astype(np.float64) + w * arr[k + 1]
            # a weighted mean of two values of the type fits it: an integer volume stays one
            out[j] = np.rint(mixed) if np.issubdtype(arr.dtype, np.integer) else mixed
            missing.append(float(along[0] + j * info.slice_spacing))
    info.interpolated = tuple(missing)
    log.warning("%s: %s", info.label(), info.interpolated_note())
    return sitk.GetImageFromArray(out)


def _culprit(files: list[Path]) -> str:
    """``"; first failing file: IM2.dcm (JPEG Baseline (Process 1)): ..."`` when one file of
    a series that SimpleITK could not read fails on its own, else ``""``. A compressed
    slice cut short, or a transfer syntax without a decoder, fails the series read with
    a message that names neither the file nor the syntax (the truncation check above
    counts native pixels only)."""
    import pydicom
    import SimpleITK as sitk

    start = time.perf_counter()
    for n, path in enumerate(files):
        if n and time.perf_counter() - start > CULPRIT_SECONDS:
            # a 1000-slice RLE series decodes at ~40 ms a slice: the error is not held up
            return f"; no single file failed among the first {n} read alone"
        try:
            sitk.ReadImage(str(path))
        except RuntimeError as err:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                syntax = _syntax(ds)
                shown = f" ({syntax.name}, {syntax})" if syntax is not None else ""
            except Exception:  # the header read before; the culprit is named regardless
                shown = ""
            return f"; first failing file: {path.name}{shown}: {_sitk_message(err)}"
    return ""


def _judged(series: list[SeriesInfo], min_slices: int, max_gap_factor: float
            ) -> list[SeriesInfo]:
    """Each series with its :func:`check_series` problem under these thresholds."""
    return [dataclasses.replace(s, problem=check_series(s, min_slices, max_gap_factor))
            for s in series]


def _rank(kind: str):
    """The order a guessing rule chooses in (the least first)."""
    if kind == "first":
        return _number_key
    # an acquired series before a derived one (a coronal reformat, a MIP) or a localizer,
    # then more slices: by count alone an MPR of a study's axial CT was chosen
    return lambda s: (s.derived or s.localizer, -s.n_images, *_number_key(s))


def _unreadable_above(judged: list[SeriesInfo], chosen: SeriesInfo, kind: str, arg: Any,
                      min_slices: int) -> SeriesInfo | None:
    """The series a guessing rule (``most_slices``, ``first``, and ``description:``
    among the series it matches, which it ranks as ``most_slices``) ranks above
    ``chosen`` that a problem refused, of ``min_slices`` or more (a scout of fewer is no
    candidate either way), the first by the rule; None when none. The rule chose
    ``chosen`` only because that one was refused: the axial CT with one file never
    downloaded made a scout or a reformat the subject's CT, with nothing said. ``kind``,
    ``arg``: the rule, parsed (:func:`_parse_rule`)."""
    if kind == "description":
        judged = [s for s in judged if arg.search(s.description)]
    elif kind not in ("most_slices", "first"):
        return None
    rank = _rank(kind)
    # a scout is never the series meant, nor a reformat in an acquired one's place: a
    # refused 3-plane localizer ranked first (every MR study's) noted nearly every
    # subject's series as a stand-in, and hid an acquired volume refused after it
    above = [s for s in judged if s.problem and s.series_uid != chosen.series_uid
             and s.n_images >= min_slices and rank(s) < rank(chosen) and not s.localizer
             and not s.mosaic
             and (not s.derived or chosen.derived or chosen.localizer)]
    return min(above, key=rank) if above else None


def _no_stand_in(above: SeriesInfo, chosen: SeriesInfo) -> bool:
    """Whether ``chosen`` is no stand-in for the refused ``above``: a reformat or a scout
    for an acquired volume. Another acquired series is converted, the note saying which it
    replaces: of another Modality too (a PET/CT folder, where the guessing rules cannot
    know which the modality is: the PET would have been chosen usable, and the CT chosen
    where the PET is refused may be the one meant)."""
    return (chosen.derived or chosen.localizer) and not (above.derived or above.localizer)


def _kind_text(s: SeriesInfo) -> str:
    return (f"{s.modality or 'no Modality'}{', derived' if s.derived else ''}"
            f"{', localizer' if s.localizer else ''}, "
            + (f"{s.frames} positions of multi-frame files" if s.frames
               else f"{s.n_slices} slices"))


def _passed_over_text(chosen: SeriesInfo, others: list[SeriesInfo], rule: str) -> str:
    def what(s: SeriesInfo) -> str:
        return f"{s.short_label()} {s.description!r} ({_kind_text(s)})"

    shown = "; ".join(what(s) for s in others[:NOTE_FILES])
    more = f"; and {len(others) - NOTE_FILES} more" if len(others) > NOTE_FILES else ""
    return (f"{what(chosen)} chosen by {rule!r} over {len(others)} other usable "
            f"series: {shown}{more}")


def _sitk_message(err: RuntimeError) -> str:
    """The last line of a SimpleITK error (the lines before it are its C++ source)."""
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else type(err).__name__


def dicom_to_nifti(folder: str | Path, out_path: str | Path, rule: str = "most_slices",
                   min_slices: int = 3, max_gap_factor: float = 1.5) -> dict:
    """Convert the selected series of ``folder`` to NIfTI at ``out_path``, atomically.

    The volume is written to a temporary sibling and renamed into place, so a
    killed job never leaves a half-written file under the final name. Returns a
    JSON-able summary for the QC record: the chosen series, the other series found
    (``other_series``, each with its ``problem`` or None when it was usable but not
    chosen), every skipped file (``skipped``: file, short reason, full reason), the
    patients/studies of a mixed folder converted by ``uid:`` (``folder_mix``), and
    ``note``: one short line saying what to know about this conversion ("" when
    nothing), which the shard's QC row carries as its reason.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    out_path = Path(out_path)
    image, info, scan = _read(folder, rule, min_slices, max_gap_factor)
    suffix = ".nii.gz" if out_path.name.endswith(".nii.gz") else out_path.suffix
    if suffix not in (".nii.gz", ".nii"):
        raise ValueError(f"{out_path}: expected a .nii.gz or .nii output path")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # the suffix stays last: SimpleITK picks the writer from it
    tmp = tmp_keeping_suffix(out_path, suffix)
    try:
        sitk.WriteImage(image, str(tmp), useCompression=suffix == ".nii.gz")
        check_nifti_written(tmp)  # the writer returns as usual from a short write
        os.replace(tmp, out_path)
    except BaseException:  # a write that fails (disk full) fails the job: no subject's fault
        tmp.unlink(missing_ok=True)
        raise
    skipped = scan.all_skipped()
    mix = folder_mix(scan.series)  # only a uid: rule gets this far with a mixed folder
    notes = []
    if mix:
        notes.append(f"series chosen by uid from a folder that mixes {_mix_text(mix)}")
    # which of a study's series is the modality is the rule's guess: one it passed over
    # that could as well be it (another Modality, as many slices or more) is said, so that
    # a PET of a PET/CT, or a reformat, chosen for a CT modality shows in the QC (not a
    # scout of fewer slices; nor under uid:, a choice by name); under description:, the
    # other series it matches (pre- and post-contrast under "t1"), chosen between by
    # most_slices
    kind, arg = _parse_rule(rule)
    judged = _judged(scan.series, min_slices, max_gap_factor)
    passed_over = [s for s in judged if s.series_uid != info.series_uid and s.problem is None
                   and ((kind in ("most_slices", "first")
                         and (s.modality != info.modality or s.n_slices >= info.n_slices))
                        or (kind == "description" and arg.search(s.description)))]
    if passed_over:
        notes.append(_passed_over_text(info, passed_over, rule))
    if (above := _unreadable_above(judged, info, kind, arg, min_slices)):
        notes.append(f"converted in place of {above.short_label()} {above.description!r} "
                     f"({_kind_text(above)}), which {rule!r} ranks first and is refused: "
                     f"{above.problem}")
    if skipped:
        notes.append(_skipped_text(skipped, scan.n_files, folder))
    if info.repeats:
        notes.append(info.repeats)
    if info.interpolated:
        notes.append(info.interpolated_note())
    if info.n_slices == 1 and not info.slice_thickness:
        notes.append("one slice without SliceThickness: its z spacing of 1 mm is assumed")
    summary = {
        "series_uid": info.series_uid,
        "series_number": info.series_number,
        "description": info.description,
        "modality": info.modality,
        "rule": rule,
        "n_slices": info.n_slices,
        "n_files_total": info.n_files_total,
        "n_duplicates_dropped": info.n_duplicates_dropped,
        "interpolated_slices": list(info.interpolated),
        "spacing": [float(v) for v in image.GetSpacing()],
        "size": [int(v) for v in image.GetSize()],
        "origin": [float(v) for v in image.GetOrigin()],
        "patient_id": info.patient_ids[0] if info.patient_ids else None,
        "study_uid": info.study_uids[0] if info.study_uids else None,
        "n_files_in_folder": scan.n_files,
        "skipped": [f.to_json(folder) for f in skipped],
        "other_series": [s.to_json() for s in scan.series if s.series_uid != info.series_uid],
        "folder_mix": mix or None,
        "note": "converted; " + "; ".join(notes) if notes else "",
    }
    json.dumps(summary)  # the QC record stores it as JSON: fail here, not there
    return summary
