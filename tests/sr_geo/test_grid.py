from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS

from sr_geo.errors import InvalidRasterError
from sr_geo.grid import Grid, area_downsample, check_north_up

UTM_WKT = CRS.from_epsg(32618).to_wkt()
UTM_TRANSFORM = Affine(10.0, 0.0, 435730.0, 0.0, -10.0, 4179460.0)
# An awkward grid: non-integer, non-square pixels and an origin that is not a round number.
ODD_TRANSFORM = Affine(0.3, 0.0, -1234.567, 0.0, -0.7, 98765.4321)


@pytest.mark.parametrize("transform", [UTM_TRANSFORM, ODD_TRANSFORM])
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_zoom_in_keeps_bounds_exactly_and_divides_pixel_size(transform: Affine, scale: int) -> None:
    grid = Grid(crs=UTM_WKT, transform=transform, width=257, height=131)
    fine = grid.zoom_in(scale)
    assert fine.bounds == grid.bounds  # exact: scaling by a power of two is exact in binary
    assert fine.resolution == (grid.resolution[0] / scale, grid.resolution[1] / scale)
    assert fine.shape == (131 * scale, 257 * scale)
    assert fine.crs == grid.crs
    assert fine.transform == transform * Affine.scale(1 / scale)


def test_zoom_in_by_three_keeps_bounds() -> None:
    grid = Grid(crs=UTM_WKT, transform=ODD_TRANSFORM, width=100, height=37)
    fine = grid.zoom_in(3)
    assert fine.bounds == pytest.approx(grid.bounds, abs=1e-9)
    assert fine.resolution == pytest.approx((0.1, 0.7 / 3), rel=1e-12)


@pytest.mark.parametrize("scale", [2, 4])
def test_output_pixel_edges_lie_on_input_pixel_edges(scale: int) -> None:
    grid = Grid(crs=UTM_WKT, transform=UTM_TRANSFORM, width=20, height=10)
    fine = grid.zoom_in(scale)
    for row, col in [(0, 0), (3, 7), (9, 19), (10, 20)]:
        assert fine.transform * (col * scale, row * scale) == grid.transform * (col, row)
    # The centre of output pixel (0, 0) is a quarter (×2) / eighth (×4) of an input pixel from the corner.
    x, y = fine.transform * (0.5, 0.5)
    assert (x - 435730.0, 4179460.0 - y) == (10.0 / (2 * scale), 10.0 / (2 * scale))


def test_bounds_hand_computed() -> None:
    grid = Grid(crs=UTM_WKT, transform=UTM_TRANSFORM, width=100, height=50)
    assert grid.bounds == (435730.0, 4179460.0 - 500.0, 435730.0 + 1000.0, 4179460.0)
    assert grid.resolution == (10.0, 10.0)


def test_grid_is_immutable_and_zoom_returns_a_new_grid() -> None:
    grid = Grid(crs=UTM_WKT, transform=UTM_TRANSFORM, width=10, height=10)
    fine = grid.zoom_in(2)
    assert fine is not grid and grid.width == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.width = 20  # type: ignore[misc]


@pytest.mark.parametrize("scale", [0, -2])
def test_zoom_in_refuses_non_positive_scale(scale: int) -> None:
    grid = Grid(crs=UTM_WKT, transform=UTM_TRANSFORM, width=10, height=10)
    with pytest.raises(ValueError):
        grid.zoom_in(scale)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (-1, 5)])
def test_empty_grid_is_refused(width: int, height: int) -> None:
    with pytest.raises(InvalidRasterError):
        Grid(crs=UTM_WKT, transform=UTM_TRANSFORM, width=width, height=height)


def test_check_north_up_accepts_a_north_up_transform() -> None:
    check_north_up(UTM_TRANSFORM, "scene.tif")
    check_north_up(ODD_TRANSFORM, "scene.tif")


@pytest.mark.parametrize(
    ("transform", "words"),
    [
        (Affine.identity(), "no geotransform"),
        (UTM_TRANSFORM * Affine.rotation(15), "rotated"),
        (UTM_TRANSFORM * Affine.rotation(90), "rotated"),
        (UTM_TRANSFORM * Affine.shear(10, 0), "sheared"),
        (UTM_TRANSFORM * Affine.shear(0, 5), "sheared"),
        (Affine(10.0, 0.5, 435730.0, 0.0, -10.0, 4179460.0), "rotated"),
        (Affine(0.0, 0.0, 435730.0, 0.0, -10.0, 4179460.0), "zero pixel size"),
    ],
)
def test_check_north_up_refuses(transform: Affine, words: str) -> None:
    with pytest.raises(InvalidRasterError) as info:
        check_north_up(transform, "/data/scene.tif")
    message = str(info.value)
    assert words in message
    assert message.startswith("/data/scene.tif: ")
    assert "\n" not in message


def test_area_downsample_of_constant_is_constant() -> None:
    np.testing.assert_array_equal(area_downsample(np.full((2, 8, 12), 3.25), 4), np.full((2, 2, 3), 3.25))


def test_area_downsample_of_ramp_is_block_mean() -> None:
    ramp = np.arange(36, dtype=np.float64).reshape(1, 6, 6)  # value = 6y + x
    # Block (i, j) covers rows 3i..3i+2, cols 3j..3j+2: mean = 6(3i + 1) + (3j + 1).
    expected = np.array([[[7.0, 10.0], [25.0, 28.0]]])
    np.testing.assert_array_equal(area_downsample(ramp, 3), expected)
    torch.testing.assert_close(area_downsample(torch.from_numpy(ramp), 3), torch.from_numpy(expected))


def test_area_downsample_rejects_non_multiple() -> None:
    with pytest.raises(ValueError, match="multiple"):
        area_downsample(np.zeros((1, 7, 8)), 2)
