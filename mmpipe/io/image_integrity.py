"""Whole-file checks of a 2-D image, for what the decoders read without an error, wrong.

- **A JPEG that does not reach its end-of-image marker** (``FF D9``). A download
  preallocated and interrupted, or a failed copy, leaves the file's tail zeroed; libjpeg
  reads zeros as image data, and Pillow gave an image whose lower part was grey noise,
  without a word (a truncated file is refused by the decoder itself). The file's
  segments are followed to the marker after its last scan: an EXIF thumbnail's own
  marker, inside its segment, does not count, and bytes after the marker (a camera's
  trailer) are allowed.
- **A TIFF of more than one full-resolution page**: an ImageJ or OME file's channels or
  planes, or several fields of one size in one file. :func:`mmpipe.io.images.read_image`
  reads one image a file, so channel 0 was read as a grey image, or one field of
  several, without a word. A pyramid's levels, a thumbnail and a transparency mask are
  not images of their own (marked so, or smaller than the first image).

Both are :class:`~mmpipe.errors.InputError` naming the file. They run where a subject's
image set is read (:mod:`mmpipe.preprocess.images`).
"""

from __future__ import annotations

from pathlib import Path

from mmpipe.errors import InputError, shared_cause

_EOI, _SOS = 0xD9, 0xDA
# markers without a length field: restart markers and the temporary TEM
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def jpeg_reaches_its_end(data: bytes) -> bool:
    """Whether a JPEG's segments and scans (``data`` from its start-of-image marker on)
    run to an end-of-image marker."""
    pos = 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            # bytes between segments, which libjpeg skips with a warning and decodes
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return False
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill bytes before a marker
            pos += 1
            continue
        if marker == _EOI:
            return True
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 3 >= len(data):
            return False
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        pos += 2 + length
        if marker != _SOS:
            continue
        # entropy-coded data: ends at the first marker that is neither a stuffed 0xFF
        # (FF 00) nor a restart (FF D0..D7)
        while True:
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= len(data):
                return False
            following = data[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                pos += 1 if following == 0xFF else 2
                continue
            break
    return False


def full_resolution_pages(path: Path) -> int:
    """The pages of a TIFF that are images of the size of its first: not marked a
    reduced-resolution page or a transparency mask (NewSubfileType bits 0 and 2), and of
    its first such page's width and height (a pyramid's levels and a thumbnail not
    marked reduced are smaller)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        sizes = [(page.imagewidth, page.imagelength) for page in tif.pages
                 if not int(getattr(page, "subfiletype", 0) or 0) & 0b101]
    return sum(1 for size in sizes if size == sizes[0]) if sizes else 0


def check_image_file(path: str | Path) -> None:
    """Refuse a JPEG that does not reach its end or a TIFF of several full images."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".jpg", ".jpeg"):
            data = path.read_bytes()
            # another format under a .jpg name (a PNG of a scraped set) is the decoder's
            if data[:2] == b"\xff\xd8" and not jpeg_reaches_its_end(data):
                raise InputError("JPEG without its end-of-image marker: the file is cut or "
                                 "its tail overwritten (an interrupted download or copy); "
                                 "fetch it again", path=path)
        elif suffix in (".tif", ".tiff"):
            pages = full_resolution_pages(path)
            if pages > 1:
                raise InputError(f"TIFF of {pages} full-resolution pages (the channels or "
                                 "planes of an ImageJ or OME file, or several fields): one "
                                 "image a file is read; save each image as a file of its "
                                 "own", path=path)
    except InputError:
        raise
    except Exception as err:  # the decoder names what is wrong with a damaged file
        if shared_cause(err):  # a mount that dropped, memory: the job's, not the image's
            raise
        raise InputError(f"cannot read the image: {type(err).__name__}: {err}",
                         path=path) from err
