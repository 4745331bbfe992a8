from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

from conftest import UTM_TRANSFORM, bicubic_cog, smooth_texture, write_raster
from sr_geo.quicklook import rgb_bands, write_quicklook


def stretch(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    scaled = (values.astype(np.float64) - lo[:, None, None]) / (hi - lo)[:, None, None]
    return (np.clip(scaled, 0, 1) * 255).astype("uint8")


def read_png(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            assert ds.driver == "PNG" and ds.count == 3 and ds.dtypes == ("uint8",) * 3
            return ds.read()


@pytest.mark.parametrize(("height", "width", "scale", "patch"),
                         [(100, 120, 2, 128), (100, 120, 4, 32), (50, 20, 4, 40)])
def test_quicklook_png_has_the_expected_size(tmp_path: Path, height: int, width: int, scale: int, patch: int) -> None:
    data = (100 + 5000 * smooth_texture((3, height, width), seed=1)).round().astype("uint16")
    source = write_raster(tmp_path / "scene.tif", data)
    output = bicubic_cog(source, tmp_path, scale=scale)
    png = write_quicklook(str(source), str(output), scale, str(tmp_path / "ql.png"), patch=patch)
    assert png == str(tmp_path / "ql.png")
    picture = read_png(tmp_path / "ql.png")
    h, w = min(patch, height), min(patch, width)
    gap = max(4, scale)
    assert picture.shape == (3, h * scale, 2 * w * scale + gap)
    assert (picture[:, :, w * scale : w * scale + gap] == 255).all()
    # Left: the central input patch, pixel-replicated and stretched between its 2nd and 98th percentiles.
    r0, c0 = (height - h) // 2, (width - w) // 2
    before = data[:, r0 : r0 + h, c0 : c0 + w].astype(np.float64)
    lo = np.percentile(before.reshape(3, -1), 2, axis=1)
    hi = np.percentile(before.reshape(3, -1), 98, axis=1)
    expected = stretch(np.repeat(np.repeat(before, scale, axis=1), scale, axis=2), lo, hi)
    np.testing.assert_array_equal(picture[:, :, : w * scale], expected)
    # Right: the same patch of the output, stretched alike; bicubic stays close to the input.
    right = picture[:, :, w * scale + gap :].astype(int)
    assert np.abs(right - expected.astype(int)).mean() < 12
    assert len(np.unique(right)) > 50


def test_quicklook_halves_agree_for_a_pixel_replicated_output(tmp_path: Path) -> None:
    data = (50 + 150 * smooth_texture((3, 30, 40), seed=9)).round().astype("uint8")
    source = write_raster(tmp_path / "scene.tif", data)
    output = write_raster(tmp_path / "sr.tif", np.repeat(np.repeat(data, 2, axis=1), 2, axis=2),
                          transform=UTM_TRANSFORM * UTM_TRANSFORM.scale(0.5))
    picture = read_png(Path(write_quicklook(str(source), str(output), 2, str(tmp_path / "ql.png"))))
    np.testing.assert_array_equal(picture[:, :, :80], picture[:, :, 84:])


def test_rgb_bands_follow_colour_interpretation(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "bgrn.tif", np.zeros((4, 8, 8), dtype="uint8"))
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    with rasterio.open(path) as ds:
        assert rgb_bands(ds) == [3, 2, 1]


def test_rgb_bands_follow_sentinel2_band_names(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "s2.tif", np.zeros((5, 8, 8), dtype="uint16"))
    with rasterio.open(path, "r+") as ds:
        ds.descriptions = ("B08", "B02", "B03", "B04", "B11")
    with rasterio.open(path) as ds:
        assert rgb_bands(ds) == [4, 3, 2]


@pytest.mark.parametrize(("bands", "expected"), [(1, [1]), (2, [1]), (3, [1, 2, 3]), (6, [1, 2, 3])])
def test_rgb_bands_fallback(tmp_path: Path, bands: int, expected: list[int]) -> None:
    path = write_raster(tmp_path / "plain.tif", np.zeros((bands, 8, 8), dtype="uint16"))
    with rasterio.open(path) as ds:
        assert rgb_bands(ds) == expected


def test_single_band_quicklook_is_grey(tmp_path: Path) -> None:
    data = (1000 * smooth_texture((1, 24, 24), seed=3)).astype("float32")
    source = write_raster(tmp_path / "scene.tif", data)
    output = write_raster(tmp_path / "sr.tif", np.repeat(np.repeat(data, 2, axis=1), 2, axis=2),
                          transform=UTM_TRANSFORM * UTM_TRANSFORM.scale(0.5))
    picture = read_png(Path(write_quicklook(str(source), str(output), 2, str(tmp_path / "ql.png"))))
    assert picture.shape == (3, 48, 2 * 48 + 4)
    np.testing.assert_array_equal(picture[0], picture[1])
    np.testing.assert_array_equal(picture[0], picture[2])
    assert picture[0, :, :48].min() == 0 and picture[0, :, :48].max() == 255  # stretched past 2/98 %


@pytest.mark.parametrize("nodata", [-9999.0, 0.0])
def test_nodata_does_not_drive_the_stretch(tmp_path: Path, nodata: float) -> None:
    """A nodata border in the patch must not set the 2 % point: the valid pixels keep their contrast."""
    data = (200 + 800 * smooth_texture((1, 40, 40), seed=6)).astype("float32")
    data[:, :, :8] = nodata  # a fifth of the patch is nodata
    source = write_raster(tmp_path / "scene.tif", data, nodata=nodata)
    output = write_raster(tmp_path / "sr.tif", np.repeat(np.repeat(data, 2, axis=1), 2, axis=2), nodata=nodata,
                          transform=UTM_TRANSFORM * UTM_TRANSFORM.scale(0.5))
    picture = read_png(Path(write_quicklook(str(source), str(output), 2, str(tmp_path / "ql.png"))))
    valid = data[0, :, 8:].astype(np.float64)
    lo, hi = np.percentile(valid, 2), np.percentile(valid, 98)
    expected = stretch(np.repeat(np.repeat(valid[None], 2, axis=1), 2, axis=2), np.array([lo]), np.array([hi]))
    np.testing.assert_array_equal(picture[0, :, 16:80], expected[0])
    assert picture[0, :, 16:80].min() == 0 and picture[0, :, 16:80].max() == 255
