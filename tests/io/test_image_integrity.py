"""Whole-file checks of a 2-D image: what the decoders read without an error, wrong."""

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from mmpipe.errors import InputError
from mmpipe.io.image_integrity import check_image_file, jpeg_reaches_its_end
from mmpipe.io.images import read_image
from mmpipe.preprocess.images import ImageTransform


def _jpeg(**options) -> bytes:
    rgb = np.random.default_rng(0).integers(50, 255, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _with_thumbnail(data: bytes) -> bytes:
    """An APP1 segment holding a small JPEG, end marker and all, as an EXIF thumbnail."""
    thumb = _jpeg()[:2] + b"thumbnail" + b"\xff\xd9"
    payload = b"Exif\x00\x00" + thumb
    return data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"restart_marker_rows": 1}],
                         ids=["baseline", "progressive", "restarts"])
def test_a_whole_jpeg_passes_and_one_with_its_tail_zeroed_does_not(tmp_path, options):
    """A baseline JPEG whose tail was zeroed (an interrupted preallocated download)
    decoded without an error, its lower part grey noise."""
    data = _jpeg(**options)
    assert jpeg_reaches_its_end(data)
    assert jpeg_reaches_its_end(_with_thumbnail(data))
    assert jpeg_reaches_its_end(data + b"camera trailer")
    assert jpeg_reaches_its_end(data + bytes(100))
    zeroed = data[:len(data) // 2] + bytes(len(data) - len(data) // 2)
    assert not jpeg_reaches_its_end(zeroed)
    # the thumbnail's own end marker does not stand in for the image's
    assert not jpeg_reaches_its_end(_with_thumbnail(zeroed))
    assert not jpeg_reaches_its_end(data[:-2])
    path = tmp_path / "field.jpg"
    path.write_bytes(_with_thumbnail(zeroed))
    with pytest.raises(InputError, match="without its end-of-image marker") as err:
        ImageTransform()(path)
    assert err.value.path == str(path)


def test_jpegs_the_decoder_reads_whole_pass(tmp_path):
    """A PNG under a .jpg name (a scraped set's) and bytes between two segments, which
    libjpeg skips with a warning, decode to the whole image: the first version refused
    both as cut (diff review)."""
    png = tmp_path / "field.jpg"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(png, "PNG")
    data = _jpeg()
    dqt = data.index(b"\xff\xdb")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(data[:dqt] + b"\x00\x00" + data[dqt:])
    for path in (png, junk):
        check_image_file(path)
        assert ImageTransform()(path).shape == (3, 224, 224)


def test_the_zeroed_jpeg_is_one_the_decoder_reads():
    """The check is not the decoder's: Pillow reads the baseline one without an error."""
    data = _jpeg()
    zeroed = data[:len(data) // 2] + bytes(len(data) - len(data) // 2)
    with Image.open(io.BytesIO(zeroed)) as img:
        img.load()
        assert img.size == (256, 256)


def test_a_tiff_of_several_full_images_is_refused_and_a_pyramid_is_not(tmp_path):
    """An ImageJ file's three channels read as channel 0, grey; a file of two fields as
    its first."""
    channels = np.stack([np.full((16, 16), v, np.uint8) for v in (30, 180, 90)])
    imagej = tmp_path / "imagej.tif"
    tifffile.imwrite(imagej, channels, imagej=True, metadata={"axes": "CYX"})
    assert read_image(imagej)[0, 0].tolist() == [30, 30, 30]  # what was read before
    fields = tmp_path / "fields.tif"
    with tifffile.TiffWriter(fields) as tif:
        for value in (10, 200):
            tif.write(np.full((8, 8, 3), value, np.uint8), photometric="rgb")
    for path, pages in ((imagej, 3), (fields, 2)):
        with pytest.raises(InputError, match=f"TIFF of {pages} full-resolution pages"):
            ImageTransform()(path)
    pyramid = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(np.full((32, 32, 3), 90, np.uint8), photometric="rgb")
        tif.write(np.full((16, 16, 3), 90, np.uint8), photometric="rgb", subfiletype=1)
    # levels, a thumbnail and a transparency mask not marked reduced are no images of
    # their own: smaller, or marked a mask (the first version refused them, diff review)
    unmarked = tmp_path / "unmarked.tif"
    with tifffile.TiffWriter(unmarked) as tif:
        tif.write(np.full((32, 32, 3), 90, np.uint8), photometric="rgb")
        tif.write(np.full((16, 16, 3), 90, np.uint8), photometric="rgb")
        tif.write(np.full((8, 8, 3), 90, np.uint8), photometric="rgb")
    masked = tmp_path / "masked.tif"
    with tifffile.TiffWriter(masked) as tif:
        tif.write(np.full((32, 32, 3), 90, np.uint8), photometric="rgb")
        tif.write(np.ones((32, 32), bool), subfiletype=4)
    for path in (pyramid, unmarked, masked):
        check_image_file(path)
        assert ImageTransform()(path).shape == (3, 224, 224)


def test_a_file_that_is_no_tiff_names_itself(tmp_path):
    path = tmp_path / "x.tif"
    path.write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="cannot read the image") as err:
        check_image_file(path)
    assert err.value.path == str(path)
