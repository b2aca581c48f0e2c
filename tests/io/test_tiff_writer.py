"""The pyramidal TIFF writer produces files OpenSlide opens as multi-level slides with mpp."""

from __future__ import annotations

import logging

import numpy as np
import pytest

openslide = pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")

from mmpipe.io import tiff_writer  # noqa: E402
from mmpipe.io.tiff_writer import write_pyramidal_tiff  # noqa: E402


def _image(height: int = 600, width: int = 1000) -> np.ndarray:
    rgb = np.full((height, width, 3), 255, np.uint8)
    rgb[100:400, 200:700] = (210, 120, 190)
    rgb[300:550, 600:900] = (120, 60, 150)
    return rgb


@pytest.mark.parametrize("compression", ["deflate", "jpeg"])
def test_openslide_reads_levels_mpp_and_pixels(tmp_path, compression):
    rgb = _image()
    path = write_pyramidal_tiff(tmp_path / "s.tiff", rgb, mpp=0.25, tile=256, n_levels=3,
                                compression=compression)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.level_count == 3
        assert slide.level_dimensions == ((1000, 600), (500, 300), (250, 150))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25, rel=1e-6)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.25, rel=1e-6)
        level0 = np.asarray(slide.read_region((0, 0), 0, (1000, 600)))
        level2 = np.asarray(slide.read_region((0, 0), 2, (250, 150)))
    assert (level0[..., 3] == 255).all()
    err = np.abs(level0[..., :3].astype(int) - rgb)
    assert err.mean() < 2 and np.median(err) == 0
    # Level 2 is a 4x box reduction: the blob centres keep their colour.
    assert np.abs(level2[60, 100, :3].astype(int) - (210, 120, 190)).max() <= 6
    assert np.abs(level2[110, 190, :3].astype(int) - (120, 60, 150)).max() <= 6
    assert (level2[5, 5, :3] >= 250).all()


def test_pages_are_tiled_top_level_and_marked_reduced(tmp_path):
    path = write_pyramidal_tiff(tmp_path / "s.tiff", _image(), mpp=0.5, tile=128, n_levels=3,
                                compression="deflate")
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert len(pages) == 3
        assert [p.subfiletype for p in pages] == [0, 1, 1]
        assert all(p.is_tiled and (p.tilewidth, p.tilelength) == (128, 128) for p in pages)
        assert [p.tags["ResolutionUnit"].value for p in pages] == [3, 3, 3]  # centimetre
        xres = [p.tags["XResolution"].value for p in pages]
        # 0.5 um/px = 20000 px/cm, halved per level.
        assert [num / den for num, den in xres] == pytest.approx([20000, 10000, 5000])
        assert not any(p.subifds for p in pages)


def test_odd_sizes_and_single_level(tmp_path):
    rgb = _image(301, 403)
    path = write_pyramidal_tiff(tmp_path / "odd.tiff", rgb, mpp=1.0, n_levels=3,
                                compression="deflate")
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == ((403, 301), (202, 151), (101, 76))
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(1.0, rel=1e-6)
    one = write_pyramidal_tiff(tmp_path / "one.tiff", rgb, mpp=1.0, n_levels=1,
                               compression="deflate")
    with openslide.OpenSlide(str(one)) as slide:
        assert slide.level_count == 1


def test_missing_codec_falls_back_to_deflate_loudly(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tiff_writer, "_codec_available", lambda name: name != "jpeg")
    with caplog.at_level(logging.WARNING, logger="mmpipe.io.tiff_writer"):
        path = write_pyramidal_tiff(tmp_path / "s.tiff", _image(), mpp=0.25, compression="jpeg")
    assert any("FALLING BACK" in r.getMessage() for r in caplog.records)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_count == 3


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """A write that fails after its first page leaves no file under either name (the
    failure used to come while building the pyramid, before the file was opened, so a
    writer straight to the final name passed too)."""
    target = tmp_path / "s.tiff"
    real, pages = tifffile.TiffWriter.write, []

    def second_page_fails(self, *args, **kwargs):
        pages.append(1)
        if len(pages) == 2:
            raise RuntimeError("killed mid-write")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffWriter, "write", second_page_fails)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_pyramidal_tiff(target, _image(), mpp=0.25, compression="deflate")
    assert len(pages) == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [
    {"rgb": np.zeros((10, 10), np.uint8)},
    {"rgb": np.zeros((10, 10, 3), np.float32)},
    {"mpp": 0.0},
    {"tile": 100},
    {"n_levels": 0},
    {"compression": "webp2000"},
])
def test_rejects_bad_arguments(tmp_path, kwargs):
    args = {"rgb": _image(64, 64), "mpp": 0.5, **kwargs}
    with pytest.raises(ValueError):
        write_pyramidal_tiff(tmp_path / "x.tiff", **args)
