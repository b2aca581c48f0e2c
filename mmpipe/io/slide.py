"""Whole-slide images through OpenSlide, with their resolution always known.

Every reader in mmpipe returns pixels together with their geometry (nnU-Net
style); for a slide that geometry is the microns per pixel (mpp) of each
pyramid level. Tiling at a physical resolution (CLAM: 20x, about 0.5 um/px) is
meaningless without it, so :func:`open_slide` refuses a slide whose mpp cannot
be found unless the config names one explicitly (``mpp_when_missing``), and
then says so loudly.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np

from mmpipe.errors import InputError, SlideError
from mmpipe.io.images import composite_uint8_on_white, image_page

log = logging.getLogger(__name__)

MPP_SOURCE_PROPERTY = "openslide.mpp-x"
MPP_SOURCE_TIFF = "tiff resolution"
MPP_SOURCE_CONFIG = "config mpp_when_missing"

# µm per ResolutionUnit for the TIFF units OpenSlide reports as `tiff.ResolutionUnit`.
_MICRONS_PER_UNIT = {"centimeter": 1e4, "inch": 25400.0}

# No slide scanner writes a level 0 coarser than this (a 1x objective's overview is ~10
# um/px). A coarser resolution is a screen or print default some converter wrote into the
# tags: 72, 96 or 300 dpi (353, 265, 85 um/px), or libvips' 1 px/mm (1000 um/px) when it
# tiles a JPEG that had none, and it would silently set the tile scale.
COARSEST_SCAN_MPP = 20.0
# ... nor finer than this (a 100x oil objective on a camera of 3.45 um pixels scans at
# about 0.035 um/px): a finer one is a unit slipped (mm written as um), which would tile a
# field of view a hundredth of the intended one and read tiles of gigabytes
FINEST_SCAN_MPP = 0.02

# mpp-x and mpp-y of a scanner agree to well under a percent; more than this is worth a
# look (a warning, and the slide's QC note), and more than the second is no scanner's
# square pixel: tiles would be stretched
MPP_XY_TOLERANCE = 0.01
_MPP_XY_REFUSED = 0.15


def _openslide() -> types.ModuleType:
    """Import openslide lazily: only slide work needs it, and its C library may be absent."""
    try:
        import openslide
    except (ImportError, OSError) as err:
        raise ImportError(
            "reading whole-slide images needs OpenSlide: `pip install openslide-python "
            f"openslide-bin` (import failed: {err})"
        ) from err
    return openslide


def rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite non-premultiplied RGBA on white.

    OpenSlide returns transparent pixels outside the scanned region (and past the
    slide's edge); they are glass, i.e. background, so they must look white to the
    tissue detector and the encoder rather than black. CLAM reads them with
    ``.convert('RGB')``, black: a tile hanging past the slide's edge is encoded otherwise
    than CLAM encodes it (its features differ by up to a fifth), an interior tile alike.
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) image, got shape {rgba.shape}")
    if rgba.shape[2] == 3:
        return np.ascontiguousarray(rgba, dtype=np.uint8)
    if rgba[..., 3].min() == 255:
        return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)
    return composite_uint8_on_white(rgba[..., :3], rgba[..., 3:4])


class Slide:
    """An open whole-slide image and its resolution; use as a context manager.

    Coordinates follow OpenSlide: ``location`` is (x, y) in level-0 pixels,
    ``size`` is (width, height) in pixels of the requested level.
    """

    def __init__(self, handle: Any, path: str | Path, mpp: float, mpp_source: str,
                 mpp_xy: tuple[float, float] | None = None, mpp_ignored: str | None = None):
        self._handle = handle
        self.path = Path(path)
        self.mpp = float(mpp)
        self.mpp_source = mpp_source
        # the slide's own mpp-x and mpp-y, whose mean is ``mpp`` (None: assumed from config)
        self.mpp_xy = mpp_xy
        # why its metadata's value was not used, where one was and mpp is assumed
        self.mpp_ignored = mpp_ignored

    @property
    def anisotropy(self) -> float:
        """:func:`anisotropy` of the slide's mpp-x and mpp-y (0 for an assumed mpp)."""
        return 0.0 if self.mpp_xy is None else anisotropy(self.mpp_xy)

    # -- geometry ---------------------------------------------------------------
    @property
    def level_count(self) -> int:
        return int(self._handle.level_count)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of each level, level 0 first."""
        return tuple((int(w), int(h)) for w, h in self._handle.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._handle.level_downsamples)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._handle.properties)

    def level_mpp(self, level: int) -> float:
        """µm per pixel of ``level`` (level-0 mpp times OpenSlide's downsample)."""
        self._check_level(level)
        return self.mpp * self.level_downsamples[level]

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range: {self.path} has {self.level_count}")

    # -- pixels -----------------------------------------------------------------
    def read_region(self, location: tuple[int, int], level: int,
                    size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` = (w, h) pixels of ``level`` at level-0 ``location`` = (x, y).

        Returns uint8 RGB (h, w, 3); areas outside the scan are white.
        """
        self._check_level(level)
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        openslide = _openslide()
        try:
            region = self._handle.read_region((x, y), level, (w, h))
        except openslide.OpenSlideError as err:
            raise SlideError(reason=f"OpenSlide cannot read region {(x, y, w, h)} at level "
                                    f"{level}: {err}", path=self.path) from err
        return rgba_to_rgb_on_white(np.asarray(region))

    def thumbnail_at(self, level: int) -> np.ndarray:
        """The whole of ``level`` as uint8 RGB (h, w, 3); mind the memory on fine levels."""
        self._check_level(level)
        w, h = self.level_dimensions[level]
        return self.read_region((0, 0), level, (w, h))

    # -- lifetime ---------------------------------------------------------------
    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Slide({str(self.path)!r}, mpp={self.mpp:.4g} [{self.mpp_source}], "
                f"levels={self.level_dimensions})")


def _positive_float(value: str | None) -> float | None:
    try:
        out = float(value) if value is not None else None
    except ValueError:
        return None
    return out if out is not None and math.isfinite(out) and out > 0 else None


def _mpp_from_properties(props: dict[str, str]) -> tuple[float, float] | None:
    """(mpp-x, mpp-y) of OpenSlide's properties (one standing for both when the other is
    missing), or None."""
    mpp_x = _positive_float(props.get("openslide.mpp-x"))
    mpp_y = _positive_float(props.get("openslide.mpp-y"))
    if mpp_x is None and mpp_y is None:
        return None
    return (mpp_x or mpp_y, mpp_y or mpp_x)  # type: ignore[return-value]


def anisotropy(mpp_xy: tuple[float, float]) -> float:
    """How far mpp-x and mpp-y lie apart, relative to the larger: square tiles of such
    pixels are stretched by as much."""
    return abs(mpp_xy[0] - mpp_xy[1]) / max(mpp_xy)


def _square_mpp(mpp_xy: tuple[float, float], path: Path) -> float:
    """The mean of a kept mpp-x and mpp-y; refused when they are far apart."""
    mpp_x, mpp_y = mpp_xy
    if anisotropy(mpp_xy) > _MPP_XY_REFUSED:
        raise SlideError(reason=f"its mpp-x {mpp_x:.5g} and mpp-y {mpp_y:.5g} differ by more "
                                f"than {100 * _MPP_XY_REFUSED:.0f} %: square tiles of its pixels "
                                "would cover a stretched field", path=path)
    if anisotropy(mpp_xy) > MPP_XY_TOLERANCE:
        log.warning("slide %s: mpp-x %.5g and mpp-y %.5g differ by more than %.0f %%; "
                    "using their mean (tiles will be slightly anisotropic)",
                    path, mpp_x, mpp_y, 100 * MPP_XY_TOLERANCE)
    return (mpp_x + mpp_y) / 2


def _tiff_resolution_xy(props: dict[str, str]) -> tuple[float, float] | None:
    """(mpp-x, mpp-y) of the TIFF tags: XResolution and YResolution are pixels per
    ResolutionUnit (YResolution absent: XResolution's); unit 'none' (or absent) carries
    no size.

    OpenSlide 4 already turns these tags into ``openslide.mpp-x`` for generic TIFFs;
    this catches vendor drivers that expose the tags but set no mpp.
    """
    unit = (props.get("tiff.ResolutionUnit") or "").strip().lower()
    xres = _positive_float(props.get("tiff.XResolution"))
    if unit not in _MICRONS_PER_UNIT or xres is None:
        return None
    yres = _positive_float(props.get("tiff.YResolution")) or xres
    return _MICRONS_PER_UNIT[unit] / xres, _MICRONS_PER_UNIT[unit] / yres


# What a file that OpenSlide refuses really holds, by its first bytes (its name may lie).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"II*\x00", "a TIFF"),
    (b"MM\x00*", "a TIFF"),
    (b"II+\x00", "a BigTIFF"),
    (b"MM\x00+", "a BigTIFF"),
)


def _content_hint(path: Path) -> str:
    """``" (the file is ...)"`` when its first bytes say what it is, else ``""``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return ""
    if not head:
        return " (the file is empty: 0 bytes)"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            if "TIFF" in what:
                return (f" (the file is {what}, {path.stat().st_size} bytes: truncated, or "
                        "without the tiled pyramid a slide needs?)")
            return f" (the file is {what}, not a whole-slide image, whatever its name says)"
    return ""


PLAIN_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
PLAIN_IMAGE = "plain image (no pyramid)"


_PILLOW_LIMIT = threading.Lock()
# tifffile's TIFF ResolutionUnit codes, as OpenSlide names them in ``tiff.ResolutionUnit``
_TIFF_UNITS = {2: "inch", 3: "centimeter"}


class _PageOffsets(logging.Handler):
    """The page offsets tifffile logs as invalid instead of raising: one past the file's
    end is a directory chain cut short (other errors it logs, such as a private tag it
    cannot decode, leave a readable image and are not heard)."""

    _OFFSET = re.compile(r"invalid page offset (\d+)")

    def __init__(self):
        super().__init__(logging.ERROR)
        self.offsets: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if found := self._OFFSET.search(record.getMessage()):
            self.offsets.append(int(found.group(1)))


def _tiff_properties(path: Path) -> dict[str, str]:
    """A TIFF that OpenSlide refused, before it is read as a plain image: its first page's
    resolution tags as OpenSlide names them, so the slide keeps its own scale rather than
    the config's ``mpp_when_missing``; and a refusal when its directories place a page or
    its data past the file's end. A truncated pyramidal TIFF decoded from its intact first
    page and was tiled at the assumed scale, the truncation unsaid. Called under
    ``_PILLOW_LIMIT``: the log handler that hears tifffile sees one file at a time."""
    import tifffile

    size = path.stat().st_size
    heard = _PageOffsets()
    tifffile_log = logging.getLogger("tifffile")
    tifffile_log.addHandler(heard)
    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)
            for k, page in enumerate(pages):
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts,
                                              strict=True) if n]
                if ends and max(ends) > size:
                    raise SlideError(reason=f"truncated: its page {k} holds data up to byte "
                                            f"{max(ends)} of a {size}-byte file", path=path)
            if past := [o for o in heard.offsets if o >= size]:
                raise SlideError(reason=f"truncated: its directory chain points to byte "
                                        f"{past[0]} of a {size}-byte file", path=path)
            tags = image_page(tif).tags  # the page read_image reads
            unit = tags.get("ResolutionUnit")
            res = {axis: tags.get(f"{axis}Resolution") for axis in ("X", "Y")}
            if tags.valueof(274, 1) in (5, 6, 7, 8):
                # read_image turns it upright by transposing: its columns become rows
                res = {"X": res["Y"], "Y": res["X"]}
    except tifffile.TiffFileError:
        return {}  # not a TIFF tifffile reads: Pillow's reading says what it is
    finally:
        tifffile_log.removeHandler(heard)
    # both axes: with YResolution left out, a 0.5 x 1.0 um/px image passed for square
    # pixels, where one OpenSlide opens is refused (_square_mpp)
    values = {f"tiff.{axis}Resolution": v for axis, tag in res.items()
              if tag is not None and (v := _rational(tag)) is not None}
    if unit is None or int(unit.value) not in _TIFF_UNITS or "tiff.XResolution" not in values:
        return {}
    return {"tiff.ResolutionUnit": _TIFF_UNITS[int(unit.value)], **values}


def _rational(tag) -> str | None:
    """A TIFF RATIONAL tag's value as OpenSlide writes it, None for a zero denominator."""
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    return repr(num / den) if den else None


def physical_memory_bytes() -> int:
    """This machine's memory, which no retry with a larger allocation can exceed."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# What reading a plain image whole peaks at, bytes a pixel: its file's bytes, the decoded
# samples and their conversion to 8-bit RGB, measured on 4-54 megapixels (noise, which
# does not compress, and H&E-like JPEGs). By Pillow's mode for a JPEG, PNG or BMP: Pillow
# holds RGB at 4 bytes a pixel and numpy's copy goes through 3 more (10 measured); a
# colour key or a palette's transparency becomes an alpha (29-33 measured)
_DECODE_PEAK_BYTES = {"L": 6, "RGBA": 25, "LA": 25, "PA": 25, "RGBa": 25, "I;16": 16,
                      "I;16B": 16, "I;16L": 16, "I": 16, "F": 16}
_PILLOW_PEAK_BYTES, _KEYED_PEAK_BYTES, _KEYED_WIDE_PEAK_BYTES = 11, 33, 35
# ... and by (bits, samples) a pixel where Pillow's mode does not say it: a TIFF, which
# tifffile decodes, and a 16-bit colour or grey-and-alpha PNG, which Pillow calls RGB or
# RGBA (libpng gives a colour key as a fourth sample)
_WIDE_PEAK_BYTES = {(16, 2): 36, (16, 3): 25, (16, 4): 78}
# a TIFF's otherwise: 9-10 measured for 8-bit RGB deflated or JPEG 2000, 7 for 16-bit and
# 10 for float grey, 26 for 8-bit RGBA, 37 and 80 for float grey and RGB with alpha (an
# alpha wider than 8 bits is laid on white in float64), 17 for 4-bit grey (scaled to 8
# bits in float64); an unmeasured kind its file's and its decoded samples' bytes and the
# RGB made of them
_TIFF_PEAK_BYTES, _TIFF_ALPHA_PEAK_BYTES = 11, 26


def _tiff_peak_bytes(bits: int, samples: int) -> int:
    if (bits, samples) in _WIDE_PEAK_BYTES:
        return _WIDE_PEAK_BYTES[bits, samples]
    if samples in (2, 4):
        return _TIFF_ALPHA_PEAK_BYTES if bits <= 8 else 20 * samples
    if bits < 8:
        return 16 * samples + 3
    return max(_TIFF_PEAK_BYTES, 2 * samples * math.ceil(bits / 8) + 3)


def _samples(n: int) -> str:
    return f"{n} sample" + ("s" if n != 1 else "")


def _decode_peak(path: Path) -> tuple[int, int, str, int] | None:
    """A plain image's width, height, what its pixels are (for a message) and the bytes
    a pixel that reading it whole peaks at, from its header; None for a header that
    cannot be read (the decoder names what is wrong with it). A TIFF is sized by
    tifffile, which reads it: Pillow cannot open one compressed with JPEG 2000, JPEG-XL
    or PNG, and such a file went on to be decoded whole, unchecked."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                page = image_page(tif)
                width, height = int(page.imagewidth), int(page.imagelength)
                bits, samples = int(page.bitspersample), int(page.samplesperpixel)
                compression = getattr(page.compression, "name", page.compression)
        except Exception:
            return None
        return (width, height, f"{_samples(samples)} of {bits} bits, {compression}",
                _tiff_peak_bytes(bits, samples))
    from PIL import Image

    from mmpipe.io.images import wide_png_samples

    try:
        with Image.open(path) as probe:
            (width, height), mode = probe.size, probe.mode
            samples = wide_png_samples(probe)
            keyed = "transparency" in probe.info
    except Exception:
        return None
    if samples is not None:
        samples = 4 if keyed and samples == 3 else samples
        return width, height, f"{_samples(samples)} of 16 bits", _WIDE_PEAK_BYTES[(16, samples)]
    if keyed:
        wide = _DECODE_PEAK_BYTES.get(mode) == 16  # a 16-bit or float grey
        peak = _KEYED_WIDE_PEAK_BYTES if wide else _KEYED_PEAK_BYTES
        return width, height, f"{mode} with a transparent colour", peak
    return width, height, mode, _DECODE_PEAK_BYTES.get(mode, _PILLOW_PEAK_BYTES)


def _check_fits_in_memory(path: Path) -> None:
    """Refuse, as its subject's own fault, a plain image whose decoding would peak above
    the machine's memory: it failed with a MemoryError, which counts as the machine's
    (the job fails and is retried with more memory), so it failed its whole shard on
    every retry. Its header gives its size without decoding; one the header reader
    cannot size is left to the decoder's own error."""
    header = _decode_peak(path)
    if header is None:
        return
    width, height, pixels, per_pixel = header
    need, have = width * height * per_pixel, physical_memory_bytes()
    if need > have:
        raise SlideError(reason=f"a plain image of {width}x{height} pixels ({pixels}), "
                                f"decoded whole (about {need / 2**30:.1f} GiB at its peak), "
                                f"is more than this machine's memory ({have / 2**30:.1f} "
                                "GiB): convert it to a tiled pyramidal TIFF, which OpenSlide "
                                "reads a region at a time", path=path)


class _PlainImageHandle:
    """A large JPEG, PNG or flat TIFF that OpenSlide cannot open (BCNB ships its slides so),
    read whole by :func:`mmpipe.io.images.read_image` (upright by its orientation, alpha on
    white, 16 bits scaled, as any 2-D image) behind OpenSlide's handle API: one level,
    ``read_region`` returning RGBA with transparent pixels outside the image, as OpenSlide
    does. The decoded image stays in memory (3 bytes a pixel: 1.8 GB for 600 megapixels);
    decoding peaks near 10 bytes a pixel for RGB, 25 for 8-bit RGBA and 25–78 for 16-bit
    colour (:data:`_DECODE_PEAK_BYTES`, :data:`_WIDE_PEAK_BYTES`), checked before
    decoding.
    A JPEG or PNG carries no trusted resolution, so its mpp comes from the config; a
    TIFF's own resolution tags count as OpenSlide's would (:func:`_tiff_properties`)."""

    def __init__(self, path: Path):
        from PIL import Image

        from mmpipe.io.images import read_image

        # a slide is a "decompression bomb" by Pillow's measure: lift its limit for this
        # file only, not for every image the process reads afterwards; the limit is
        # Pillow's global, which reader threads opening slides at once would restore
        # under each other: one plain slide decoded at a time (each holds ~2 GB too)
        with _PILLOW_LIMIT:
            tiff = (_tiff_properties(path) if path.suffix.lower() in (".tif", ".tiff")
                    else {})
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                _check_fits_in_memory(path)
                self._rgb = read_image(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        h, w = self._rgb.shape[:2]
        self.level_count = 1
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.properties = {"mmpipe.reader": PLAIN_IMAGE, **tiff}

    def read_region(self, location, level, size) -> np.ndarray:
        (x, y), (w, h) = location, size
        out = np.zeros((h, w, 4), np.uint8)
        ih, iw = self._rgb.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
        if x0 < x1 and y0 < y1:
            out[y0 - y:y1 - y, x0 - x:x1 - x, :3] = self._rgb[y0:y1, x0:x1]
            out[y0 - y:y1 - y, x0 - x:x1 - x, 3] = 255
        return out

    def close(self) -> None:
        self._rgb = None


# how far an assumed level-0 resolution may lie from the one the slide's stated objective
# power implies (10 / power um/px: 0.25 at 40x, 0.5 at 20x; scanners differ by ~10 %)
OBJECTIVE_POWER_TOLERANCE = 1.5


def _check_objective_power(props: dict[str, str], mpp: float, path: Path) -> None:
    """Refuse an assumed mpp that the slide's own objective power contradicts: a 40x slide
    without a resolution, in a cohort assumed to be scanned at 20x (0.5 um/px), was tiled
    at twice its field of view."""
    power = _positive_float(props.get("openslide.objective-power"))
    if power is None:
        return
    implied = 10.0 / power
    if not 1 / OBJECTIVE_POWER_TOLERANCE <= mpp / implied <= OBJECTIVE_POWER_TOLERANCE:
        raise SlideError(reason=f"its metadata states a {power:g}x objective (about "
                                f"{implied:.2g} um/px at level 0), which the config's "
                                f"mpp_when_missing of {mpp:g} um/px contradicts: set it to "
                                "this cohort's scan resolution", path=path)


def open_slide(path: str | Path, mpp_when_missing: float | None = None) -> Slide:
    """Open a whole-slide image and find its level-0 microns per pixel.

    The mpp comes from, in order: OpenSlide's ``openslide.mpp-x``/``-y`` (their mean),
    the TIFF resolution tags (centimetre or inch units only), ``mpp_when_missing``
    (logged as a warning, since a wrong value silently changes the tile scale; refused
    when the slide's stated objective power contradicts it, :func:`_check_objective_power`).
    A metadata resolution coarser than :data:`COARSEST_SCAN_MPP` is a converter's
    screen or print default, not a scanner's, and one finer than
    :data:`FINEST_SCAN_MPP` a unit slipped: either counts as none (logged). mpp-x and
    mpp-y more than 15 % apart are refused.
    Without any of them, or when OpenSlide cannot read the file, raise
    :class:`~mmpipe.errors.SlideError` naming the file and why. A JPEG, PNG or TIFF
    that OpenSlide cannot open is read as a plain image without a pyramid
    (:class:`_PlainImageHandle`, logged), at the ``mpp_when_missing`` resolution.
    """
    path = Path(path)
    openslide = _openslide()
    if not path.is_file():
        raise SlideError(reason="slide file not found" if not path.exists()
                         else "not a regular file", path=path)
    try:
        handle = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as err:
        # OpenSlideUnsupportedFormatError subclasses OpenSlideError in openslide-python>=1.2.
        reason = (str(err) or type(err).__name__) + _content_hint(path)
        if path.suffix.lower() not in PLAIN_IMAGE_SUFFIXES:
            raise SlideError(reason=f"OpenSlide cannot open it: {reason}", path=path) from err
        try:
            handle = _PlainImageHandle(path)
        except Exception as plain_err:  # Pillow raises many types for a broken file
            # an InputError names the file again: its reason alone (the slide's error names
            # the file once, and a QC reason then holds no absolute path)
            why = (plain_err.reason if isinstance(plain_err, InputError)
                   else f"{type(plain_err).__name__}: {plain_err}")
            raise SlideError(reason=f"OpenSlide cannot open it ({reason}), nor can it be "
                                    f"read as a plain image ({why})", path=path) from plain_err
        log.info("slide %s: OpenSlide cannot open it; read as a %s", path, PLAIN_IMAGE)
    try:
        try:
            props = dict(handle.properties)
        except (KeyError, UnicodeDecodeError, openslide.OpenSlideError) as err:
            # openslide-python decodes every property name as UTF-8: one Latin-1 byte in
            # an Aperio description's key raised a bare KeyError
            raise SlideError(reason=f"its metadata cannot be read ({type(err).__name__}: "
                                    f"{err})", path=path) from err
        mpp_xy = _mpp_from_properties(props)
        source = MPP_SOURCE_PROPERTY
        if mpp_xy is None:
            mpp_xy, source = _tiff_resolution_xy(props), MPP_SOURCE_TIFF
        # the mean decides whether it is a scanner's at all; a placeholder's two axes (72 by
        # 96 dpi) say nothing of the slide's pixels
        mpp = None if mpp_xy is None else sum(mpp_xy) / 2
        placeholder = None
        if mpp is not None and mpp > COARSEST_SCAN_MPP:
            placeholder = (f"its metadata says {mpp:.4g} um/px ({25400 / mpp:.4g} dpi, from "
                           f"{source}), a screen or print default, not a scanner's resolution")
            mpp = None
        elif mpp is not None and mpp < FINEST_SCAN_MPP:
            placeholder = (f"its metadata says {mpp:.4g} um/px (from {source}), finer than "
                           f"any scanner's ({FINEST_SCAN_MPP:g}): a unit slipped")
            mpp = None
        if mpp is not None:
            mpp = _square_mpp(mpp_xy, path)
        if mpp is None and mpp_when_missing is not None:
            if not (math.isfinite(mpp_when_missing) and mpp_when_missing > 0):
                raise SlideError(reason=f"mpp_when_missing must be a positive number, got "
                                        f"{mpp_when_missing!r}", path=path)
            mpp, source = float(mpp_when_missing), MPP_SOURCE_CONFIG
            _check_objective_power(props, mpp, path)
            log.warning("slide %s: %s; ASSUMING %.4g um/px from config "
                        "preprocess.slide.mpp_when_missing", path,
                        placeholder or "no microns-per-pixel in its metadata", mpp)
        if mpp is None:
            missing = placeholder or "no microns-per-pixel in the slide's metadata"
            raise SlideError(reason=f"{missing}; set preprocess.slide.mpp_when_missing in "
                                    "config", path=path)
    except BaseException:
        handle.close()
        raise
    return Slide(handle, path, mpp, source,
                 None if source == MPP_SOURCE_CONFIG else tuple(map(float, mpp_xy)),
                 placeholder)  # set only where the config's value replaced it
