"""Opening slides: resolution from metadata (or refused), clear errors, white background."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")

from mmpipe.errors import SlideError  # noqa: E402
from mmpipe.io.slide import (  # noqa: E402
    MPP_SOURCE_CONFIG,
    MPP_SOURCE_PROPERTY,
    MPP_SOURCE_TIFF,
    open_slide,
    rgba_to_rgb_on_white,
)
from mmpipe.io.tiff_writer import write_pyramidal_tiff  # noqa: E402


@pytest.fixture()
def small_slide(tmp_path):
    rgb = np.full((512, 768, 3), 255, np.uint8)
    rgb[100:300, 200:500] = (200, 90, 170)
    return write_pyramidal_tiff(tmp_path / "small.tiff", rgb, mpp=0.25, n_levels=3,
                                compression="deflate"), rgb


def require(path):
    if not path.exists():
        pytest.skip(f"real data file not found: {path}")
    return path


def _plain_tiff(path, resolution, unit, tiled=True):
    """A TIFF OpenSlide opens (tiled), or one it refuses and mmpipe reads as a plain image
    (stripped)."""
    rgb = np.full((256, 256, 3), 200, np.uint8)
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(256, 256) if tiled else None,
                     compression="zlib", resolution=resolution, resolutionunit=unit,
                     metadata=None)
    return path


# -- real slides -----------------------------------------------------------------------

def test_svs_with_mpp(shared_data):
    path = require(shared_data / "slides" / "cmu-1-small-region.svs")
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert slide.mpp_source == MPP_SOURCE_PROPERTY
        assert slide.level_count == 1
        assert slide.level_dimensions == ((2220, 2967),)
        assert slide.level_mpp(0) == pytest.approx(0.499)
        region = slide.read_region((1000, 1500), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8
        # Stained tissue there, not glass.
        assert region.mean() < 230


def test_svs_without_mpp_is_refused_unless_configured(shared_data, caplog):
    path = require(shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs")
    with pytest.raises(SlideError) as info:
        open_slide(path)
    assert "mpp_when_missing" in info.value.reason and "microns-per-pixel" in info.value.reason
    assert info.value.path == str(path)
    with caplog.at_level(logging.WARNING, logger="mmpipe.io.slide"):
        with open_slide(path, mpp_when_missing=0.25) as slide:
            assert slide.mpp == 0.25 and slide.mpp_source == MPP_SOURCE_CONFIG
            assert slide.level_count == 2
            assert slide.level_mpp(1) == pytest.approx(0.25 * 4443 / 2221, rel=1e-3)
    assert any("ASSUMING" in r.getMessage() for r in caplog.records)


def test_broken_svs(shared_data):
    path = require(shared_data / "slides" / "broken.svs")
    with pytest.raises(SlideError) as info:
        open_slide(path)
    assert info.value.path == str(path)
    assert "OpenSlide cannot open it" in info.value.reason
    assert str(path) in str(info.value)


# -- synthetic ---------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(SlideError, match="not found") as info:
        open_slide(tmp_path / "nope.svs")
    assert info.value.path == str(tmp_path / "nope.svs")


def test_non_slide_file(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("not a slide")
    with pytest.raises(SlideError, match="OpenSlide cannot open it"):
        open_slide(path)


def test_generic_tiff_levels_and_pixels(small_slide):
    path, rgb = small_slide
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25) and slide.mpp_source == MPP_SOURCE_PROPERTY
        assert slide.level_dimensions == ((768, 512), (384, 256), (192, 128))
        assert [slide.level_mpp(lvl) for lvl in range(3)] == pytest.approx([0.25, 0.5, 1.0])
        assert np.array_equal(slide.read_region((0, 0), 0, (768, 512)), rgb)
        thumb = slide.thumbnail_at(2)
        assert thumb.shape == (128, 192, 3)
        assert np.abs(thumb[50, 85].astype(int) - (200, 90, 170)).max() <= 2
        with pytest.raises(ValueError):
            slide.level_mpp(3)


def test_outside_the_slide_reads_white(small_slide):
    path, _ = small_slide
    with open_slide(path) as slide:
        region = slide.read_region((700, 450), 0, (128, 128))
    # Top-left 68x62 lie on the slide (white glass here), the rest past its edge.
    assert region.shape == (128, 128, 3)
    assert (region == 255).all()


def test_rgba_composited_on_white():
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], np.uint8)
    rgb = rgba_to_rgb_on_white(rgba)
    assert rgb.tolist() == [[[255, 255, 255], [10, 20, 30], [127, 127, 127]]]


def test_openslide_mpp_from_inch_resolution(tmp_path):
    # 50800 px/inch = 0.5 um/px; OpenSlide 4 turns it into openslide.mpp-x itself.
    path = _plain_tiff(tmp_path / "inch.tiff", (50800, 50800), "INCH")
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.5)


class _FakeHandle:
    """An OpenSlide handle whose properties lack openslide.mpp-x (as some vendors' do)."""

    level_count = 1
    level_dimensions = ((100, 100),)
    level_downsamples = (1.0,)

    def __init__(self, props):
        self.properties = props
        self.closed = False

    def close(self):
        self.closed = True


@pytest.mark.parametrize(("props", "mpp"), [
    ({"tiff.XResolution": "20000", "tiff.ResolutionUnit": "centimeter"}, 0.5),
    ({"tiff.XResolution": "101600", "tiff.ResolutionUnit": "inch"}, 0.25),
    ({"tiff.XResolution": "72", "tiff.ResolutionUnit": "none"}, None),
    ({"tiff.XResolution": "72"}, None),
    ({"openslide.mpp-x": "0.26", "openslide.mpp-y": "0.26", "tiff.XResolution": "20000",
      "tiff.ResolutionUnit": "centimeter"}, 0.26),
])
def test_mpp_fallback_order(tmp_path, monkeypatch, props, mpp):
    import openslide

    path = tmp_path / "fake.svs"
    path.write_bytes(b"")
    handles = []

    def fake_open(_):
        handles.append(_FakeHandle(props))
        return handles[-1]

    monkeypatch.setattr(openslide, "OpenSlide", fake_open)
    if mpp is None:
        with pytest.raises(SlideError, match="microns-per-pixel"):
            open_slide(path)
        assert handles[-1].closed
        return
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(mpp)
        expected = MPP_SOURCE_PROPERTY if "openslide.mpp-x" in props else MPP_SOURCE_TIFF
        assert slide.mpp_source == expected
    assert handles[-1].closed


def _aperio(path, fields: bytes):
    """A 512-px tiled SVS whose Aperio description holds ``fields``."""
    description = (b"Aperio Image Library v10.0.51\r\n512x512 [0,0 512x512] (256x256) "
                   b"JPEG/RGB Q=30|" + fields)
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), photometric="rgb",
                     tile=(256, 256), compression="zlib", description=description,
                     metadata=None)
    return path


def test_a_property_name_that_is_not_utf8_is_the_slides_rejection(tmp_path):
    """openslide-python decodes every property name as UTF-8: one Latin-1 byte in a key of
    an Aperio description raised a bare KeyError, which no shard caught."""
    path = _aperio(tmp_path / "latin1.svs", b"AppMag = 20|MPP = 0.5|Sc\xb5nScope ID = SS1234")
    with pytest.raises(SlideError, match=r"latin1\.svs: its metadata cannot be read"):
        open_slide(path)


@pytest.mark.parametrize("assumed, refused", [(0.5, True), (0.25, False), (0.3, False)])
def test_an_assumed_mpp_the_slides_objective_power_contradicts_is_refused(tmp_path, assumed,
                                                                           refused):
    """An Aperio slide that says AppMag = 40 and no MPP was tiled at a cohort's assumed
    0.5 um/px (20x): twice its field of view, with only the usual warning."""
    path = _aperio(tmp_path / "forty.svs", b"AppMag = 40|ScanScope ID = SS1234")
    if refused:
        with pytest.raises(SlideError, match=r"states a 40x objective \(about 0.25 um/px.*"
                                             r"mpp_when_missing of 0.5 um/px contradicts"):
            open_slide(path, mpp_when_missing=assumed)
        return
    with open_slide(path, mpp_when_missing=assumed) as slide:
        assert slide.mpp == assumed and slide.mpp_source == MPP_SOURCE_CONFIG


def test_resolution_without_unit_is_ignored(tmp_path):
    path = _plain_tiff(tmp_path / "none.tiff", (1, 1), "NONE")
    with pytest.raises(SlideError, match="microns-per-pixel"):
        open_slide(path)
    with open_slide(path, mpp_when_missing=0.3) as slide:
        assert slide.mpp == 0.3 and slide.mpp_source == MPP_SOURCE_CONFIG


@pytest.mark.parametrize(("resolution", "unit", "says"), [
    ((72, 72), "INCH", "72 dpi"),  # a screen default
    ((300, 300), "INCH", "300 dpi"),  # a print default
    ((10, 10), "CENTIMETER", "1000 um/px"),  # libvips' 1 px/mm, tiling a JPEG without one
    # a unit slipped: 0.0128 um/px tiled a field a hundredth of the intended one
    ((781250, 781250), "CENTIMETER", "0.0128 um/px .*finer than any scanner"),
])
def test_a_placeholder_resolution_is_no_resolution(tmp_path, caplog, resolution, unit, says):
    """A tiled TIFF made from a JPEG carries a converter's default resolution; read as
    the slide's, it set hundreds of um a pixel instead of the configured one."""
    path = _plain_tiff(tmp_path / "converted.tiff", resolution, unit)
    with pytest.raises(SlideError, match=f"{says}.*mpp_when_missing"):
        open_slide(path)
    with caplog.at_level(logging.WARNING, logger="mmpipe.io.slide"):
        with open_slide(path, mpp_when_missing=0.46) as slide:
            assert slide.mpp == 0.46 and slide.mpp_source == MPP_SOURCE_CONFIG
    assert any("not a scanner" in r.getMessage() or "unit slipped" in r.getMessage()
               for r in caplog.records)


def test_anisotropic_mpp_is_averaged_with_a_warning(tmp_path, caplog):
    path = _plain_tiff(tmp_path / "aniso.tiff", (20000, 18000), "CENTIMETER")
    with caplog.at_level(logging.WARNING, logger="mmpipe.io.slide"):
        with open_slide(path) as slide:
            assert slide.mpp == pytest.approx((0.5 + 1e4 / 18000) / 2)
    assert any("differ" in r.getMessage() for r in caplog.records)


def test_mpp_x_and_y_far_apart_are_refused(tmp_path):
    """0.25 and 0.5 um/px were averaged to 0.375, "slightly anisotropic": each tile
    covered 85 x 171 um instead of 128 x 128. A placeholder's two axes (72 by 96 dpi) are
    no resolution, far apart or not: the configured one stands."""
    for tiled in (True, False):  # a stripped TIFF passed its XResolution alone
        path = _plain_tiff(tmp_path / f"stretched{tiled}.tiff", (40000, 20000), "CENTIMETER",
                           tiled)
        with pytest.raises(SlideError, match="mpp-x 0.25 and mpp-y 0.5 differ by more "
                                             "than 15 %"):
            open_slide(path)
    with open_slide(_plain_tiff(tmp_path / "square.tiff", (20000, 20000), "CENTIMETER",
                                tiled=False)) as slide:
        assert slide.mpp == pytest.approx(0.5)
    screen = _plain_tiff(tmp_path / "screen.tiff", (72, 96), "INCH")
    with open_slide(screen, mpp_when_missing=0.5) as slide:
        assert slide.mpp == 0.5 and slide.mpp_source == MPP_SOURCE_CONFIG


def test_bad_mpp_when_missing(tmp_path):
    path = _plain_tiff(tmp_path / "none.tiff", (1, 1), "NONE")
    with pytest.raises(SlideError, match="positive"):
        open_slide(path, mpp_when_missing=-1.0)


def _plain(tmp_path, name, rgb):
    from PIL import Image

    Image.fromarray(rgb).save(tmp_path / name, **({"quality": 95} if name.endswith(".jpg") else {}))
    return tmp_path / name


@pytest.mark.parametrize("name", ["core.jpg", "core.png", "flat.tif"])
def test_a_plain_image_slide_opens_at_the_configured_resolution(tmp_path, name):
    """BCNB ships its slides as large JPEGs: OpenSlide cannot open them, so they are read
    as one level at the resolution the config gives, and refused without one."""
    rgb = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    path = _plain(tmp_path, name, rgb)
    with pytest.raises(SlideError, match="no microns-per-pixel"):
        open_slide(path)
    with open_slide(path, mpp_when_missing=0.5) as slide:
        assert slide.level_dimensions == ((90, 60),) and slide.mpp == 0.5
        assert slide.mpp_source == "config mpp_when_missing"
        region = slide.read_region((80, 50), 0, (20, 20))
        exact = name != "core.jpg"
        if exact:
            np.testing.assert_array_equal(region[:10, :10], rgb[50:, 80:])
        assert (region[10:, :] == 255).all() and (region[:, 10:] == 255).all()  # outside: white


def test_a_broken_plain_image_names_both_readers(tmp_path):
    path = _plain(tmp_path, "core.jpg", np.zeros((40, 40, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(SlideError, match="OpenSlide cannot open it.*nor can it be read as a "
                                         "plain image") as err:
        open_slide(path, mpp_when_missing=0.5)
    # the file is named once, by the error, not again inside its reason: a QC reason with
    # an absolute path differed between two runs of one cohort in two folders
    assert str(tmp_path) not in err.value.reason and "cannot read the image" in err.value.reason


def test_a_plain_image_larger_than_the_machine_is_its_subjects_rejection(tmp_path,
                                                                         monkeypatch):
    """A plain image is decoded whole: one larger than the machine's memory raised a
    MemoryError, the machine's fault, which failed its whole shard on every retry with
    more memory. Its header's size now rejects it by name, before any decoding."""
    import mmpipe.io.slide as slide_module

    path = _plain(tmp_path, "huge.png", np.zeros((40, 60, 3), np.uint8))
    # decoding RGB peaks near 10 bytes a pixel (the decoded image alone is 3, Pillow's 4)
    monkeypatch.setattr(slide_module, "physical_memory_bytes", lambda: 40 * 60 * 11 - 1)
    with pytest.raises(SlideError, match=r"nor can it be read as a plain image \(a plain "
                                         r"image of 60x40 pixels \(RGB\).*more than this "
                                         r"machine's memory.*pyramidal TIFF"):
        open_slide(path, mpp_when_missing=0.5)
    monkeypatch.setattr(slide_module, "physical_memory_bytes", lambda: 40 * 60 * 11)
    with open_slide(path, mpp_when_missing=0.5) as slide:
        assert slide.level_dimensions == ((60, 40),)
    rgba = _plain(tmp_path, "huge_alpha.png", np.zeros((40, 60, 4), np.uint8))
    with pytest.raises(SlideError, match=r"\(RGBA\)"):   # 25 bytes a pixel at its peak
        open_slide(rgba, mpp_when_missing=0.5)
    # a colour key becomes an alpha (33): it was sized as the RGB it is stored as
    from PIL import Image

    keyed = tmp_path / "keyed.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(keyed, transparency=(1, 2, 3))
    with pytest.raises(SlideError, match=r"\(RGB with a transparent colour\)"):
        open_slide(keyed, mpp_when_missing=0.5)
    # a 16-bit colour TIFF, which Pillow calls RGB, peaks near 25 bytes a pixel
    import tifffile

    deep = tmp_path / "deep.tif"
    tifffile.imwrite(deep, np.zeros((40, 60, 3), np.uint16), photometric="rgb")
    monkeypatch.setattr(slide_module, "physical_memory_bytes", lambda: 40 * 60 * 25 - 1)
    with pytest.raises(SlideError, match="more than this machine's memory"):
        open_slide(deep, mpp_when_missing=0.5)
    # so does a 16-bit colour PNG, decoded by libpng: Pillow calls it RGB
    import zlib

    import imagecodecs

    deep_png = tmp_path / "deep.png"
    deep_png.write_bytes(imagecodecs.png_encode(np.zeros((40, 60, 3), np.uint16)))
    with pytest.raises(SlideError, match=r"\(3 samples of 16 bits\).*more than this machine"):
        open_slide(deep_png, mpp_when_missing=0.5)
    # ... whose colour key libpng gives as a fourth sample, an alpha (78)
    keyed_png = tmp_path / "keyed16.png"
    data = deep_png.read_bytes()
    trns = b"tRNS" + bytes(6)
    keyed_png.write_bytes(data[:33] + (6).to_bytes(4, "big") + trns
                          + zlib.crc32(trns).to_bytes(4, "big") + data[33:])
    with pytest.raises(SlideError, match=r"\(4 samples of 16 bits\)"):
        open_slide(keyed_png, mpp_when_missing=0.5)
    # a TIFF that Pillow cannot open (JPEG 2000, JPEG-XL, PNG inside) went on to be
    # decoded whole, unchecked: tifffile, which reads it, sizes it
    j2k = tmp_path / "j2k.tif"
    tifffile.imwrite(j2k, np.zeros((40, 60, 3), np.uint8), photometric="rgb",
                     compression="jpeg2000")
    monkeypatch.setattr(slide_module, "physical_memory_bytes", lambda: 40 * 60 * 11 - 1)
    with pytest.raises(SlideError, match=r"\(3 samples of 8 bits, JPEG2000\).*more than"):
        open_slide(j2k, mpp_when_missing=0.5)
    monkeypatch.setattr(slide_module, "physical_memory_bytes", lambda: 40 * 60 * 11)
    with open_slide(j2k, mpp_when_missing=0.5) as slide:
        assert slide.level_dimensions == ((60, 40),)


def test_a_flat_tiff_read_as_a_plain_image_keeps_its_own_resolution(tmp_path):
    """OpenSlide refuses a striped TIFF; read as a plain image, its resolution tags were
    dropped and the config's mpp_when_missing assumed in their place."""
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, rgb, resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    with open_slide(path, mpp_when_missing=0.5) as slide:
        assert slide.properties["mmpipe.reader"] == "plain image (no pyramid)"
        assert slide.mpp == pytest.approx(0.25) and slide.mpp_source == "tiff resolution"


def test_a_flat_tiff_whose_first_page_is_a_thumbnail_is_its_full_image(tmp_path):
    """The thumbnail first (NewSubfileType 1), without resolution tags, then the full
    image at 0.5 um/px: the thumbnail was tiled as the slide, at the assumed mpp."""
    import tifffile

    full = np.random.default_rng(0).integers(0, 256, (1000, 1500, 3), dtype=np.uint8)
    path = tmp_path / "thumb_first.tif"
    tifffile.imwrite(path, full[::10, ::10], photometric="rgb", subfiletype=1, metadata=None)
    tifffile.imwrite(path, full, photometric="rgb", append=True, metadata=None,
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    with open_slide(path, mpp_when_missing=0.25) as slide:
        assert slide.dimensions == (1500, 1000)
        assert slide.mpp == pytest.approx(0.5) and slide.mpp_source == "tiff resolution"


def test_a_flat_tiff_turned_upright_by_a_transpose_swaps_its_resolutions(tmp_path):
    """Orientation 6 (turn 90 degrees to view): the stored rows become columns, so the
    stored XResolution is the upright image's y; the detail's mpp-x and mpp-y were
    swapped."""
    import tifffile

    path = tmp_path / "turned.tif"
    tifffile.imwrite(path, np.zeros((40, 60, 3), np.uint8), photometric="rgb",
                     resolution=(2e4, 2.04e4), resolutionunit="CENTIMETER",
                     extratags=[(274, "H", 1, 6, True)], metadata=None)
    with open_slide(path) as slide:
        assert slide.dimensions == (40, 60)
        assert slide.mpp_xy == pytest.approx((1e4 / 2.04e4, 0.5))


@pytest.mark.parametrize("kept, page", [(0.9, 1), (0.5, 0)])
def test_a_truncated_pyramidal_tiff_is_refused_not_read_from_its_first_page(tmp_path, kept,
                                                                             page):
    """Cut short, a scanner's TIFF is refused by OpenSlide, and its intact first page
    decoded as a plain image: it was tiled at the config's assumed mpp, the truncation
    unsaid (and without mpp_when_missing refused for a resolution it has)."""
    rgb = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    path = write_pyramidal_tiff(tmp_path / "cut.tif", rgb, mpp=0.25, tile=128, n_levels=2,
                                compression="none")
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * kept)])
    with pytest.raises(SlideError, match=rf"truncated: its page {page} holds data up to "
                                         rf"byte \d+ of a {path.stat().st_size}-byte file"):
        open_slide(path, mpp_when_missing=0.5)


def _first_ifd(data: bytes) -> tuple[int, int]:
    """(offset, entry count) of a little-endian classic TIFF's first directory."""
    import struct

    ifd = struct.unpack_from("<I", data, 4)[0]
    return ifd, struct.unpack_from("<H", data, ifd)[0]


def test_a_flat_tiff_whose_directory_chain_runs_past_its_end_is_refused(tmp_path):
    """Its first page decodes, but the file was cut after it: the next directory it
    points to is past the end."""
    import struct

    import tifffile

    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.zeros((30, 40, 3), np.uint8) + 90)
    data = bytearray(path.read_bytes())
    ifd, n = _first_ifd(data)
    struct.pack_into("<I", data, ifd + 2 + 12 * n, len(data) + 4096)
    path.write_bytes(bytes(data))
    with pytest.raises(SlideError, match=rf"directory chain points to byte {len(data) + 4096} "
                                         rf"of a {len(data)}-byte file"):
        open_slide(path, mpp_when_missing=0.5)


def test_a_flat_tiff_with_a_tag_tifffile_cannot_decode_still_opens(tmp_path):
    """tifffile logs a private tag of an unknown type and skips it; the image reads."""
    import struct

    import tifffile

    path = tmp_path / "tag.tif"
    tifffile.imwrite(path, np.zeros((30, 40, 3), np.uint8) + 90,
                     extratags=[(65000, "s", 0, "private", True)])
    data = bytearray(path.read_bytes())
    ifd, n = _first_ifd(data)
    for k in range(n):
        if struct.unpack_from("<H", data, ifd + 2 + 12 * k)[0] == 65000:
            struct.pack_into("<H", data, ifd + 2 + 12 * k + 2, 99)
    path.write_bytes(bytes(data))
    with open_slide(path, mpp_when_missing=0.5) as slide:
        assert slide.level_dimensions == ((40, 30),)


def test_a_plain_image_slide_is_turned_upright_by_its_exif_orientation(tmp_path):
    from PIL import Image

    stored = np.full((60, 90, 3), 255, np.uint8)
    stored[:, :30] = (200, 90, 170)  # the left columns become the top rows once upright
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    img.save(tmp_path / "photo.png", exif=exif)
    with open_slide(tmp_path / "photo.png", mpp_when_missing=0.5) as slide:
        assert slide.level_dimensions == ((60, 90),)
        region = slide.read_region((0, 0), 0, (60, 90))
    np.testing.assert_array_equal(region, np.rot90(stored, k=-1))


def test_a_plain_image_slide_is_read_as_any_2d_image(tmp_path):
    """A plain slide was read by Pillow's convert("RGB"), unlike every other 2-D image:
    16-bit grey was clipped at 255 (all but the darkest pixels white) and a flat TIFF's
    Orientation tag ignored. It now goes through mmpipe.io.images.read_image."""
    from PIL import Image

    grey = np.linspace(0, 4000, 40 * 60).reshape(40, 60).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")  # a 16-bit PNG: mode I;16
    stored = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "sideways.tif", stored, photometric="rgb",
                     extratags=[(274, "H", 1, 6, True)])  # turn 90 degrees clockwise to view
    with open_slide(tmp_path / "deep.png", mpp_when_missing=0.5) as slide:
        region = slide.read_region((0, 0), 0, (60, 40))
    np.testing.assert_array_equal(region[..., 0], np.rint(grey / 4000 * 255).astype(np.uint8))
    with open_slide(tmp_path / "sideways.tif", mpp_when_missing=0.5) as slide:
        assert slide.level_dimensions == ((40, 60),)
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (40, 60)),
                                      np.rot90(stored, k=-1))


def test_a_plain_image_slide_s_transparent_pixels_are_glass(tmp_path):
    from PIL import Image

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:10, :, :3], rgba[:10, :, 3] = 120, 255
    Image.fromarray(rgba).save(tmp_path / "core.png")
    with open_slide(tmp_path / "core.png", mpp_when_missing=0.5) as slide:
        region = slide.read_region((0, 0), 0, (30, 20))
    assert (region[:10] == 120).all() and (region[10:] == 255).all()
