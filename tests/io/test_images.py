"""2-D images read as RGB uint8 whatever their file: grey, alpha, 16-bit, TIFF; a broken
file is an InputError naming it."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from mmpipe.errors import InputError
from mmpipe.io.images import image_files, read_image


def test_formats_become_rgb_uint8(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((9, 7), 255, np.uint8)])).save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "b.tif", rgb)
    tifffile.imwrite(tmp_path / "deep.tiff", (rgb[..., 0].astype(np.uint16) * 200))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif"), rgb)
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (9, 7, 3) and (grey[..., 0] == grey[..., 2]).all()
    deep = read_image(tmp_path / "deep.tiff")
    assert deep.dtype == np.uint8 and deep.max() == 255
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS metadata, not an image
    assert [p.name for p in image_files(tmp_path)] == ["a.png", "b.tif", "deep.tiff",
                                                       "grey.png", "rgba.png"]


def test_broken_and_missing_files_name_themselves(tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "x.png").read_bytes()[:40])
    with pytest.raises(InputError, match="cut.png.*cannot read the image"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match="not found"):
        image_files(tmp_path / "nope")
    with pytest.raises(InputError, match="not an image file"):
        read_image(tmp_path / "x.txt")


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png"])
def test_exif_orientation_is_applied(tmp_path, name):
    # a camera's sensor rows: 24 x 40, with Orientation 6 (turn 90 degrees clockwise to view)
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[:, :16] = 255  # the left columns become the top rows once upright
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / name, exif=exif)
    upright = read_image(tmp_path / name)
    assert upright.shape == (40, 24, 3)
    diff = np.abs(upright.astype(int) - np.rot90(stored, k=-1))
    assert diff.max() == 0 if name.endswith(".png") else diff.mean() < 3  # JPEG is lossy


@pytest.mark.parametrize("orientation", range(1, 10))
def test_a_tiff_s_orientation_tag_is_applied_as_pillow_applies_exif(tmp_path, caplog,
                                                                    orientation):
    """The TIFF Orientation tag was ignored: a field stored sideways reached the encoder
    sideways (and mirrored for 2, 4, 5, 7); 9 is undefined, read as stored."""
    stored = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, stored, photometric="rgb", extratags=[(274, "H", 1, orientation,
                                                                  True)])
    from PIL import ImageOps

    with Image.open(path) as img:
        shown = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), shown)
    assert ("not one of 1..8" in caplog.text) == (orientation == 9)


def test_a_palette_tiff_reads_as_its_colours(tmp_path):
    """The colour map was not applied: red, green, blue and white read as grey levels 0, 1,
    2, 3 (near black). Pillow's palette TIFF (an 8-bit map written as 16-bit) and one with
    a full 16-bit map read as Pillow reads them."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    indices = np.tile(np.arange(4, dtype=np.uint8), (3, 2))
    img = Image.fromarray(indices, mode="P")
    img.putpalette(colours.ravel().tolist())
    img.save(tmp_path / "pil.tif")
    with Image.open(tmp_path / "pil.tif") as back:
        shown = np.asarray(back.convert("RGB"))
    np.testing.assert_array_equal(shown, colours[indices])
    np.testing.assert_array_equal(read_image(tmp_path / "pil.tif"), shown)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :4] = colours.T.astype(np.uint16) * 257  # 255 -> 65535
    tifffile.imwrite(tmp_path / "deep.tif", indices, photometric="palette", colormap=cmap)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.tif"), colours[indices])


def test_miniswhite_tiff_reads_as_displayed(tmp_path):
    stored = np.zeros((8, 8), np.uint8)
    stored[:, :4] = 200
    tifffile.imwrite(tmp_path / "mw.tif", stored, photometric="miniswhite")
    with Image.open(tmp_path / "mw.tif") as img:
        shown = np.asarray(img.convert("L"))
    np.testing.assert_array_equal(shown[:, :5], [[55, 55, 55, 55, 255]] * 8)
    np.testing.assert_array_equal(read_image(tmp_path / "mw.tif"), np.dstack([shown] * 3))
    tifffile.imwrite(tmp_path / "float.tif", stored.astype(np.float32), photometric="miniswhite")
    with pytest.raises(InputError, match="float.tif.*MINISWHITE TIFF with float32 samples"):
        read_image(tmp_path / "float.tif")



def test_a_16_bit_grey_png_with_a_colour_key_keeps_its_grey_levels(tmp_path):
    """Pillow's RGBA of a 16-bit grey clips every value above 255: with a transparent
    colour key the whole image came out white."""
    grey = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "keyed.png", transparency=0)
    Image.fromarray(grey).save(tmp_path / "plain.png")
    keyed, plain = read_image(tmp_path / "keyed.png"), read_image(tmp_path / "plain.png")
    assert keyed[0, 0].tolist() == [255, 255, 255]  # the key: transparent, on white
    np.testing.assert_array_equal(keyed.reshape(-1, 3)[1:], plain.reshape(-1, 3)[1:])
    assert len(np.unique(keyed.reshape(-1, 3)[1:, 0])) == 63  # one level a pixel
    # 4 pixels tall: its grey and alpha were taken for a planar TIFF's channels
    short = (np.arange(24).reshape(4, 6) * 1000).astype(np.uint16)
    Image.fromarray(short).save(tmp_path / "short.png", transparency=7000)
    image = read_image(tmp_path / "short.png")
    assert image.shape == (4, 6, 3)
    assert image[1, 1].tolist() == [255] * 3 and image[0, 1].tolist() == [11] * 3


def _png16(path, samples, *chunks):
    """A 16-bit PNG as libpng writes it (imagecodecs), with ``chunks`` (type, data)
    after its header: Pillow cannot write 16-bit colour."""
    import struct
    import zlib

    import imagecodecs

    data = imagecodecs.png_encode(samples)
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes, its CRC
    extra = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
                     for t, d in chunks)
    path.write_bytes(data[:ihdr_end] + extra + data[ihdr_end:])
    return path


def test_a_16_bit_colour_png_keeps_its_bits(tmp_path):
    """Pillow opens a 16-bit colour PNG as 8-bit RGB by keeping each sample's high byte:
    a camera's 12-bit values (0..4095) read as 0..15, near black, not scaled by their
    maximum as every other 16-bit image is."""
    rgb = np.random.default_rng(0).integers(0, 4096, (9, 7, 3)).astype(np.uint16)
    rgb[0, 0] = (1, 2, 3)
    scaled = np.rint(rgb / rgb.max() * 255).astype(np.uint8)
    opaque = np.full((9, 7, 1), 65535, np.uint16)
    np.testing.assert_array_equal(read_image(_png16(tmp_path / "rgb.png", rgb)), scaled)
    np.testing.assert_array_equal(
        read_image(_png16(tmp_path / "rgba.png", np.concatenate([rgb, opaque], -1))), scaled)
    grey = read_image(_png16(tmp_path / "la.png", np.concatenate([rgb[..., :1], opaque], -1)))
    np.testing.assert_array_equal(grey[..., 1], np.rint(rgb[..., 0] / rgb[..., 0].max() * 255))
    # a colour key (tRNS) is transparent: white, the rest as without it
    keyed = read_image(_png16(tmp_path / "keyed.png", rgb, (b"tRNS", bytes([0, 1, 0, 2, 0, 3]))))
    assert keyed[0, 0].tolist() == [255] * 3
    np.testing.assert_array_equal(keyed.reshape(-1, 3)[1:], scaled.reshape(-1, 3)[1:])
    # its EXIF orientation is applied, as an 8-bit PNG's is
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = read_image(_png16(tmp_path / "exif.png", rgb, (b"eXIf", exif.tobytes()[6:])))
    np.testing.assert_array_equal(turned, np.rot90(scaled, k=-1))


def test_a_tiff_is_channels_first_only_when_its_planar_configuration_says_so(tmp_path):
    """The layout was guessed from the shape: a grey and alpha TIFF 3 pixels tall came
    out transposed, a separate-plane RGB 3 pixels wide was read as contiguous, and a
    separate-plane grey and alpha was refused."""
    grey_alpha = np.zeros((3, 10, 2), np.uint8)
    grey_alpha[..., 0], grey_alpha[..., 1] = 100, 255
    tifffile.imwrite(tmp_path / "ga.tif", grey_alpha, photometric="minisblack",
                     extrasamples=["unassalpha"], planarconfig="contig")
    assert read_image(tmp_path / "ga.tif").tolist() == [[[100] * 3] * 10] * 3
    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[0] = 200  # the red plane
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", planarconfig="separate")
    assert read_image(tmp_path / "rgb.tif").tolist() == [[[200, 0, 0]] * 3] * 5
    planes = np.stack([np.full((6, 10), 80, np.uint8), np.full((6, 10), 255, np.uint8)])
    tifffile.imwrite(tmp_path / "gap.tif", planes, photometric="minisblack",
                     extrasamples=["unassalpha"], planarconfig="separate")
    assert read_image(tmp_path / "gap.tif").tolist() == [[[80] * 3] * 10] * 6


def test_transparent_pixels_are_white_not_what_they_hold(tmp_path):
    """An alpha channel was dropped: a transparent background (black underneath in most
    files) reached the encoder as black, where a slide's transparent glass reads white."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2, :, :3], rgba[:2, :, 3] = (200, 40, 90), 255     # opaque tissue
    rgba[2:, :, 3] = 0                                        # transparent, black beneath
    rgba[3, 0] = (0, 0, 0, 128)                               # half transparent black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert (image[:2] == (200, 40, 90)).all() and (image[2] == 255).all()
    assert (image[3, 0] == 127).all()
    deep = np.zeros((2, 2, 4), np.uint16)
    deep[0, :, :3], deep[0, :, 3] = 4000, 65535
    tifffile.imwrite(tmp_path / "deep.tif", deep)
    assert (read_image(tmp_path / "deep.tif")[1] == 255).all()   # white, at 4000's level



def test_a_tiff_s_extra_sample_is_read_as_its_tag_says(tmp_path):
    """Every 4th channel was taken for a straight 8- or 16-bit alpha: an RGBX TIFF whose
    X is 0 came out white, a 12-bit alpha nearly transparent, premultiplied edges
    darkened twice; a palette PNG's transparent index kept its colour (black)."""
    rgb = np.full((2, 2, 3), 100, np.uint8)
    x = np.dstack([rgb, np.zeros((2, 2), np.uint8)])
    tifffile.imwrite(tmp_path / "rgbx.tif", x, photometric="rgb", extrasamples=["unspecified"])
    np.testing.assert_array_equal(read_image(tmp_path / "rgbx.tif"), rgb)
    half = np.dstack([rgb // 2, np.full((2, 2), 128, np.uint8)])   # 50 % of 100, premultiplied
    tifffile.imwrite(tmp_path / "pre.tif", half, photometric="rgb", extrasamples=["assocalpha"])
    assert (read_image(tmp_path / "pre.tif") == 50 + 127).all()
    deep = np.zeros((2, 2, 4), np.uint16)
    deep[..., :3], deep[..., 3] = 4000, 4095                      # 12-bit, opaque
    deep[0, 0, :3] = 2000
    tifffile.imwrite(tmp_path / "deep12.tif", deep, photometric="rgb", bitspersample=12,
                     extrasamples=["unassalpha"])
    assert tifffile.TiffFile(tmp_path / "deep12.tif").pages[0].bitspersample == 12
    deep_read = read_image(tmp_path / "deep12.tif")
    assert (deep_read[0, 0] == 128).all() and (deep_read[1, 1] == 255).all()
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 40, 90])
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    image = read_image(tmp_path / "p.png")
    assert (image[0, 0] == 255).all() and (image[0, 1] == (200, 40, 90)).all()


@pytest.mark.parametrize("write, says", [
    # CMYK is print's colour model: read as RGB it would be four channels of nonsense
    (lambda p: tifffile.imwrite(p, np.zeros((8, 8, 4), np.uint8), photometric="separated"),
     "CMYK TIFF: export it as RGB"),
    # a float image with a NaN: scaled by its maximum, every pixel would be NaN
    (lambda p: tifffile.imwrite(p, np.array([[0.5, np.nan], [1.0, 0.2]], np.float32)),
     "image holds NaN or inf values"),
    # a signed image below zero has no agreed scaling to 8 bits
    (lambda p: tifffile.imwrite(p, np.array([[-3, 5], [2, 1]], np.int16)),
     "not a non-negative image"),
    # nothing visible: composited on white, every pixel would be white background
    (lambda p: Image.fromarray(np.zeros((6, 6, 4), np.uint8)).save(p),
     "image is fully transparent"),
])
def test_an_image_without_readable_pixels_is_refused_naming_why(tmp_path, write, says):
    path = tmp_path / ("x.png" if "transparent" in says else "x.tif")
    write(path)
    with pytest.raises(InputError, match=rf"x\.(png|tif).*{says}"):
        read_image(path)


@pytest.mark.parametrize("photometric, compression", [("ycbcr", None), ("cielab", None),
                                                     ("ycbcr", "adobe_deflate")])
def test_a_tiff_of_another_colour_model_is_refused_not_read_as_rgb(tmp_path, photometric,
                                                                   compression):
    """tifffile gives the stored YCbCr or Lab values, which were read as RGB: false
    colours (up to 241 levels off) without a word."""
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", rgb, photometric=photometric,
                     compression=compression,
                     **({"subsampling": (1, 1)} if photometric == "ycbcr" else {}))
    with pytest.raises(InputError, match=rf"x\.tif.*TIFF of photometric "
                                         rf"{photometric.upper()}.*export it as RGB"):
        read_image(tmp_path / "x.tif")


def test_a_jpeg_compressed_ycbcr_tiff_reads_as_its_rgb(tmp_path):
    """The JPEG decoder gives RGB: this YCbCr TIFF, the usual one (tifffile stores an RGB
    image so), reads as before."""
    rgb = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    tifffile.imwrite(tmp_path / "j.tif", rgb, photometric="rgb", compression="jpeg")
    assert tifffile.TiffFile(tmp_path / "j.tif").pages[0].photometric == 6  # YCbCr
    assert np.abs(read_image(tmp_path / "j.tif").astype(int) - rgb).max() <= 3


def test_a_tiff_past_pillow_s_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    """PNG and JPEG are held to Pillow's limit; a TIFF was not, and a small deflated file
    of 10000x10000 pixels took 3 GB to read, failing its whole job as out of memory.
    Lifted (a plain-image slide lifts it), the limit holds nothing back."""
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((30, 40), np.uint8),
                     compression="adobe_deflate")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(InputError, match=r"big\.tif.*40x30 pixels, more than the 1000"):
        read_image(tmp_path / "big.tif")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert read_image(tmp_path / "big.tif").shape == (30, 40, 3)


@pytest.mark.parametrize("bits", [2, 4])
def test_a_tiff_of_fewer_than_8_bits_reads_at_full_range(tmp_path, bits):
    """tifffile unpacks 4-bit samples into uint8 as 0..15, which read as near black: a
    viewer (Pillow, libtiff) shows them over the full range."""
    top = (1 << bits) - 1
    grey = (np.arange(16, dtype=np.uint8) % (top + 1)).reshape(4, 4)
    tifffile.imwrite(tmp_path / "g.tif", grey, bitspersample=bits, photometric="minisblack")
    with Image.open(tmp_path / "g.tif") as img:
        shown = np.asarray(img.convert("L"))
    np.testing.assert_array_equal(shown, np.rint(grey * (255 / top)).astype(np.uint8))
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif"), np.dstack([shown] * 3))
    # white is zero: inverted in its own bits, then the same range
    tifffile.imwrite(tmp_path / "w.tif", grey, bitspersample=bits, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "w.tif")[..., 0], 255 - shown)


def test_an_all_black_16_bit_image_is_black_not_refused(tmp_path):
    """Refused as 'not a non-negative image' where the same image in 8 bits reads."""
    Image.fromarray(np.zeros((6, 6), np.uint16)).save(tmp_path / "black.png")
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "black8.png")
    np.testing.assert_array_equal(read_image(tmp_path / "black.png"),
                                  read_image(tmp_path / "black8.png"))
    assert not read_image(tmp_path / "black.png").any()


@pytest.mark.parametrize("planar", [False, True])
def test_a_white_is_zero_tiff_keeps_its_alpha(tmp_path, planar):
    """Every sample was inverted, the alpha too: an opaque grey+alpha page read as fully
    transparent and was refused."""
    grey = np.tile(np.array([0, 100, 255], np.uint8), (3, 1))
    alpha = np.full_like(grey, 255)
    data = np.stack([grey, alpha], axis=0 if planar else -1)
    tifffile.imwrite(tmp_path / "mwa.tif", data, photometric="miniswhite", extrasamples=[2],
                     planarconfig="separate" if planar else "contig")
    np.testing.assert_array_equal(read_image(tmp_path / "mwa.tif")[..., 0], 255 - grey)


def test_a_tiff_whose_first_page_is_a_thumbnail_reads_its_full_image(tmp_path):
    """A converter that writes a reduced-resolution page (NewSubfileType 1) first had
    that thumbnail read in the image's place."""
    full = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    path = tmp_path / "thumb_first.tif"
    tifffile.imwrite(path, full[::10, ::10], photometric="rgb", subfiletype=1)
    tifffile.imwrite(path, full, photometric="rgb", append=True)
    np.testing.assert_array_equal(read_image(path), full)
    # every page reduced: the first is read, as before
    tifffile.imwrite(tmp_path / "all.tif", full, photometric="rgb", subfiletype=1)
    np.testing.assert_array_equal(read_image(tmp_path / "all.tif"), full)
