"""2-D images (microscopy fields, photographs, exported slices): a subject's set, read.

A modality of kind ``image`` gives each subject one path: an image file, or a folder
whose image files (by suffix, sorted by name; subfolders and hidden files are not read:
macOS leaves a ``._<name>.png`` of metadata beside each file it copies) are the
subject's set, as BreakHis keeps a patient's fields of one magnification (the store's
note names a folder's other entries: :func:`entries_not_read`). PNG, JPEG and BMP are
read with Pillow, TIFF with tifffile (a multi-page TIFF's first page that is not a
thumbnail, :func:`image_page`; a subject's image set refuses a TIFF of several full
images beforehand, :mod:`mmpipe.io.image_integrity`; grey, RGB, palette
or JPEG-compressed YCbCr, within Pillow's pixel limit); a 16-bit colour PNG's samples by
libpng through imagecodecs, as Pillow keeps only their high byte. Every
image becomes RGB ``uint8 [H, W, 3]``: grey is replicated, an alpha channel composited
on white (transparent is background, as in a slide),
samples of more than 8 bits (16-bit, 32-bit, float) scaled to 8 bits by the image's
own maximum value. An image is turned upright by its EXIF
or TIFF Orientation, and a MINISWHITE TIFF inverted, as viewers show them. A file that cannot
be read is an :class:`InputError` naming it and why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mmpipe.errors import InputError, shared_cause
from mmpipe.io.links import DANGLING_LINK

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_files(path: str | Path) -> list[Path]:
    """The images of one subject: ``path`` itself, or the image files of the folder (not
    its hidden files: a ``._`` file is macOS metadata, not an image)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError("image file or folder not found"
                         + (f": {DANGLING_LINK}" if path.is_symlink() else ""), path=path)
    try:
        images = sorted(p for p in path.iterdir() if not p.name.startswith(".")
                        and p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    except OSError as err:  # a folder one cannot list: its subject's, not the whole job's
        if shared_cause(err):  # unless a network mount's error: the job's
            raise
        raise InputError(f"cannot list the folder: {err.strerror or err}", path=path) from err
    # a link to nothing (a DataLad or git-annex image not fetched): left out, the set
    # would have lost an image without a word
    for p in images:
        if not p.is_file():
            raise InputError(f"image {p.name}: not a file"
                             + (f": {DANGLING_LINK}" if p.is_symlink() else ""), path=path)
    return images


def entries_not_read(path: str | Path) -> list[str]:
    """The entries of a subject's folder that :func:`image_files` leaves out and that may
    be images all the same (another suffix such as ``.webp`` or ``.jp2``, a subfolder):
    not hidden files, which are metadata. Empty for a file. Their names, a subfolder's
    with a trailing ``/``, in name order."""
    path = Path(path)
    if not path.is_dir():
        return []
    try:
        return sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()
                      if not p.name.startswith(".")
                      and (p.is_dir() or p.suffix.lower() not in IMAGE_SUFFIXES))
    except OSError:
        return []  # image_files names a folder it cannot list


def _to_rgb8(array: np.ndarray, path: Path, alpha: str | None = "straight",
             alpha_max: float | None = None, planar: bool = False) -> np.ndarray:
    """``alpha``: what the extra channel of a 2- or 4-channel image is: "straight" alpha
    (PNG's, a TIFF's unassociated alpha), "premultiplied" (a TIFF's associated alpha),
    or None (a TIFF's unspecified extra sample, e.g. RGBX: no opacity, dropped).
    ``planar``: the array is channels first (a TIFF whose PlanarConfiguration keeps each
    sample in its own plane; guessed from the shape, an image 3 or 4 pixels tall was
    taken for one and came out transposed)."""
    a = np.asarray(array)
    if planar and a.ndim == 3:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"not a 2-D grey or colour image: array of shape {a.shape}", path=path)
    if a.shape[-1] in (2, 4):  # grey or colour with an extra channel
        a = a[..., :-1] if alpha is None else _on_white(a, alpha, alpha_max, path)
    if a.dtype.kind == "b":
        a = a.astype(np.uint8) * np.uint8(255)
    elif a.dtype != np.uint8:
        a = _scaled_to_uint8(a, path)  # grey before it is repeated: a third of the work
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


# rows scaled at a time: a plain-image slide of 16 bits is never whole in float64 (8 bytes
# a value, 45 GB for 600 megapixels of colour), only this many of its rows
_SCALED_ROWS = 512


def _scaled_to_uint8(a: np.ndarray, path: Path) -> np.ndarray:
    """A 16-bit, integer or float image as 8 bits, scaled by its maximum value."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError("image holds NaN or inf values", path=path)
    low, top = a.min(), a.max()
    if low < 0:
        raise InputError(f"image values {low:g}..{top:g}: not a non-negative image",
                         path=path)
    if top == 0:  # black, as the same image in 8 bits reads (it had been refused)
        return np.zeros(a.shape, np.uint8)
    out = np.empty(a.shape, np.uint8)
    for r in range(0, a.shape[0], _SCALED_ROWS):
        out[r:r + _SCALED_ROWS] = np.rint(a[r:r + _SCALED_ROWS] / float(top) * 255.0)
    return out


def composite_uint8_on_white(colour: np.ndarray, alpha: np.ndarray,
                             premultiplied: bool = False) -> np.ndarray:
    """8-bit colour (any number of channels) over white by an 8-bit alpha ``[..., 1]``,
    in integers (2 bytes a value, where floats took 8): ``c·a/255 + 255 − a`` rounded,
    or ``c + 255 − a`` for premultiplied colour."""
    alpha = alpha.astype(np.uint16)
    colour = colour.astype(np.uint16)
    if premultiplied:
        return np.minimum(colour + (255 - alpha), 255).astype(np.uint8)
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _on_white(a: np.ndarray, kind: str, alpha_max: float | None, path: Path) -> np.ndarray:
    """An image with alpha composited on white, as OpenSlide's transparent glass is read
    (:func:`mmpipe.io.slide.rgba_to_rgb_on_white`): dropping the alpha left whatever the
    transparent pixels held, black in most files, where the encoder sees background.
    ``alpha_max`` is the alpha's full opacity (a 12-bit alpha in uint16: 4095); by
    default the dtype's (1 for floats)."""
    colour, alpha = a[..., :-1], a[..., -1:]
    if a.dtype.kind == "b":
        return np.where(alpha, colour, True)
    if a.dtype == np.uint8 and alpha_max in (None, 255.0):
        if not alpha.any():
            raise InputError("image is fully transparent", path=path)
        return composite_uint8_on_white(colour, alpha, kind == "premultiplied")
    if alpha_max is None:
        alpha_max = float(np.iinfo(a.dtype).max) if a.dtype.kind in "ui" else 1.0
    frac = np.clip(alpha.astype(np.float64) / alpha_max, 0.0, 1.0)
    if not frac.any():
        raise InputError("image is fully transparent", path=path)
    # white: 255 for 8 bits, else the brightest visible colour value, which the scaling
    # in _to_rgb8 maps to 255
    white = 255.0 if a.dtype == np.uint8 else float(colour[(frac > 0)[..., 0]].max())
    base = colour if kind == "premultiplied" else colour * frac
    out = base + white * (1 - frac)
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8) if a.dtype == np.uint8 else out


def _white_is_zero(array: np.ndarray, bits: int, path: Path, extra: int = 0,
                   planar: bool = False) -> np.ndarray:
    """A MINISWHITE page as the usual black-is-zero grey, as viewers show it. ``extra``
    samples (an alpha) after the grey are opacity, not grey, and keep their values: an
    opaque page had read as fully transparent. ``planar``: samples first."""
    if array.dtype.kind not in "bu":
        # a signed or float sample has no agreed white: guessing one would scale it silently
        raise InputError(f"MINISWHITE TIFF with {array.dtype} samples: no defined inversion",
                         path=path)
    out = array.copy()
    grey = out
    if extra and array.ndim == 3:
        grey = out[:-extra] if planar else out[..., :-extra]
    if array.dtype.kind == "b":
        grey[...] = ~grey
    else:
        # white is the top of the stored bits (4095 for 12-bit in uint16), not of the dtype
        grey[...] = ((1 << bits) - 1 - grey).astype(array.dtype)
    return out


def _palette_rgb(indices: np.ndarray, colormap: np.ndarray | None, path: Path) -> np.ndarray:
    """A palette TIFF's colours: ``asarray`` gives the indices, which were read as grey
    levels (red, green, blue, white as 0, 1, 2, 3: near black). The map is 16-bit; a map
    of values below 256 is an 8-bit one written as is (libtiff reads it so too), and a
    16-bit one keeps its high byte, as Pillow reads it."""
    if colormap is None or colormap.ndim != 2 or colormap.shape[0] != 3:
        raise InputError("palette TIFF without a ColorMap of three channels", path=path)
    if indices.ndim != 2 or int(indices.max(initial=0)) >= colormap.shape[1]:
        raise InputError(f"palette TIFF whose indices go past its {colormap.shape[1]}-entry "
                         "ColorMap", path=path)
    cmap = colormap if int(colormap.max()) < 256 else colormap >> 8
    return np.moveaxis(cmap[:, indices], 0, -1).astype(np.uint8)


def image_page(tif):
    """The page of a TIFF that is its image: the first that is not marked a
    reduced-resolution one (NewSubfileType bit 0: a thumbnail or a pyramid's level); the
    first page when every page is. A converter that writes its thumbnail first had the
    thumbnail read in the image's place, and a slide so read was tiled at the scale of
    the full image (its resolution tags, or the config's assumed mpp)."""
    pages = tif.pages
    for page in pages:
        if not int(getattr(page, "subfiletype", 0) or 0) & 1:
            return page
    return pages[0]


def _check_tiff_page(page, path: Path) -> None:
    """Refuse, before decoding, a TIFF page this reader would read wrong or could not hold.

    tifffile gives a page's stored samples: the values of a YCbCr page that is not
    JPEG-compressed (the JPEG decoder gives RGB), or of a CIELab one, were read as RGB,
    false colours without a word. And a TIFF had no size limit where Pillow holds PNG and
    JPEG to one: a 355 KB deflated 10000x10000 page took 3 GB to decode and resize, and
    a memory error is the machine's fault, so its whole job failed on every retry. The
    limit is Pillow's own (twice ``Image.MAX_IMAGE_PIXELS``, where Pillow refuses), lifted
    as Pillow's is: a plain-image slide lifts it (:mod:`mmpipe.io.slide`)."""
    import tifffile
    from PIL import Image

    kind = tifffile.PHOTOMETRIC
    jpeg = page.compression in (tifffile.COMPRESSION.JPEG, tifffile.COMPRESSION.OJPEG)
    if page.photometric == kind.SEPARATED:
        raise InputError("CMYK TIFF: export it as RGB", path=path)
    if page.photometric not in (kind.MINISWHITE, kind.MINISBLACK, kind.RGB, kind.PALETTE) \
            and not (page.photometric == kind.YCBCR and jpeg):
        name = getattr(page.photometric, "name", page.photometric)
        raise InputError(f"TIFF of photometric {name}: grey, RGB, palette and JPEG-compressed "
                         "YCbCr TIFFs are read; export it as RGB", path=path)
    limit = Image.MAX_IMAGE_PIXELS
    if limit and page.imagewidth * page.imagelength > 2 * limit:
        raise InputError(f"image of {page.imagewidth}x{page.imagelength} pixels, more than "
                         f"the {2 * limit} Pillow reads of a PNG or JPEG (a decompression "
                         "bomb, or a whole-slide image: give it a slide modality)", path=path)


# Pillow's grey modes wider than 8 bits (a 16-bit PNG opens as one of them)
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I", "F")

# the samples a pixel of a 16-bit colour or grey-and-alpha PNG by Pillow's raw mode: Pillow
# opens it as 8-bit RGB or RGBA by keeping each sample's high byte, so 12-bit data
# (0..4095) read as 0..15
_WIDE_PNG_SAMPLES = {"RGB;16B": 3, "RGBA;16B": 4, "LA;16B": 2}


def wide_png_samples(img) -> int | None:
    """The samples a pixel of a 16-bit colour or grey-and-alpha PNG, which Pillow would
    truncate to 8 bits, from a Pillow image opened and not yet loaded; None for any
    other image."""
    if img.format != "PNG" or not img.tile:
        return None
    args = img.tile[0].args
    return _WIDE_PNG_SAMPLES.get(args if isinstance(args, str) else args[0])


def _decode_wide_png(path: Path) -> np.ndarray:
    """A 16-bit colour PNG's samples, ``uint16 [H, W, C]``, by libpng (imagecodecs):
    a colour key (tRNS) comes as an alpha channel, transparent at the key."""
    import imagecodecs

    array = imagecodecs.png_decode(path.read_bytes())
    if array.dtype != np.uint16 or array.ndim != 3:
        raise InputError(f"16-bit PNG decoded as {array.dtype} {array.shape}: not its "
                         "16-bit samples", path=path)
    return array


def _pillow_samples(img) -> tuple[np.ndarray, float | None]:
    """A loaded Pillow image's samples, with its transparency as an alpha channel, and
    that alpha's full opacity (None: its dtype's)."""
    if img.mode in _WIDE_GREY and "transparency" in img.info:
        # Pillow's RGBA of a 16-bit grey clips every value above 255 (the image turned
        # white): the colour key becomes an alpha here, and the grey keeps its bits
        grey = np.asarray(img)
        opaque = (grey != img.info["transparency"]).astype(grey.dtype)
        return np.stack([grey, opaque], axis=-1), 1.0
    if img.mode == "PA" or "transparency" in img.info:
        img = img.convert("RGBA")  # a palette or colour key: an alpha here
    elif img.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    return np.asarray(img), None


def read_image(path: str | Path) -> np.ndarray:
    """One image file as RGB ``uint8 [H, W, 3]``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"not an image file ({', '.join(IMAGE_SUFFIXES)})", path=path)
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = image_page(tif)
                _check_tiff_page(page, path)
                array = page.asarray()
                if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE:
                    array = _white_is_zero(
                        array, page.bitspersample, path, len(page.extrasamples or ()),
                        page.planarconfig == tifffile.PLANARCONFIG.SEPARATE)
                bits = page.bitspersample
                if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
                    array = _palette_rgb(array, page.colormap, path)
                elif array.dtype == np.uint8 and bits < 8:
                    # samples of fewer bits come unpacked with their own range (0..15 for
                    # 4 bits), which read as near black: full range, as libtiff shows them
                    array = np.rint(array * (255.0 / ((1 << bits) - 1))).astype(np.uint8)
                    bits = 8
                # ExtraSamples: 1 associated (premultiplied) alpha, 2 unassociated alpha,
                # 0 or none an unspecified sample (RGBX), which is no opacity
                extra = tuple(page.extrasamples or ())
                alpha = {1: "premultiplied", 2: "straight"}.get(extra[-1] if extra else 0)
                alpha_max = float(2 ** bits - 1) if array.dtype.kind == "u" else None
                planar = (page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
                          and page.samplesperpixel > 1)
                orientation = page.tags.valueof(274, 1)  # TIFF Orientation, EXIF's values
        else:
            from PIL import Image, ImageOps

            with Image.open(path) as img:
                wide = wide_png_samples(img) is not None
                img.load()
                alpha, alpha_max, orientation, planar = "straight", None, 1, False
                if wide:
                    # its samples are decoded below, once Pillow's 8-bit copy is closed;
                    # its EXIF orientation is applied as a TIFF's is
                    orientation = img.getexif().get(0x0112, 1)
                else:
                    # a camera stores its sensor's rows and says in EXIF how to turn them
                    # upright
                    ImageOps.exif_transpose(img, in_place=True)
                    array, alpha_max = _pillow_samples(img)
            if wide:
                array = _decode_wide_png(path)
    except InputError:
        raise
    except Exception as err:  # Pillow and tifffile raise many types for a broken file
        if shared_cause(err):  # a mount that dropped, memory: the job's, not the image's
            raise
        raise InputError(f"cannot read the image: {type(err).__name__}: {err}", path=path) from err
    if min(array.shape[:2]) < 1:
        raise InputError(f"empty image of shape {array.shape}", path=path)
    return _upright(_to_rgb8(array, path, alpha, alpha_max, planar), orientation, path)


# TIFF Orientation (tag 274; EXIF took its values) -> the turn that shows the stored rows
# upright, as Pillow's exif_transpose does for the other formats: 2 mirrored, 3 turned
# 180 degrees, 4 flipped, 5 transposed, 6 turned 90 clockwise to show, 7 transversed,
# 8 turned 90 counter-clockwise to show.
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, k=1),
}


def _upright(rgb: np.ndarray, orientation, path: Path) -> np.ndarray:
    turn = _UPRIGHT.get(orientation)
    if turn is None:  # libtiff and Pillow read an undefined value as stored, and so do we
        log.warning("%s: TIFF Orientation %r is not one of 1..8; read as stored", path,
                    orientation)
        return rgb
    return np.ascontiguousarray(turn(rgb))
