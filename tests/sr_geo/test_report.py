from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import UTM_TRANSFORM, bicubic_cog, smooth_texture, write_raster
from sr_geo.report import ConsistencyCheck, consistency_check


def write_output(path: Path, data: np.ndarray, scale: int) -> Path:
    return write_raster(path, data, transform=UTM_TRANSFORM * UTM_TRANSFORM.scale(1 / scale))


@pytest.fixture(scope="module")
def texture_scene(tmp_path_factory) -> tuple[Path, np.ndarray]:
    work = tmp_path_factory.mktemp("report")
    data = (200 + 9000 * smooth_texture((2, 96, 104), seed=4)).round().astype("uint16")
    return write_raster(work / "scene.tif", data), data


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_output_is_consistent_and_aligned(texture_scene, tmp_path: Path, scale: int) -> None:
    source, _ = texture_scene
    check = consistency_check(str(source), str(bicubic_cog(source, tmp_path, scale=scale)), scale)
    assert isinstance(check, ConsistencyCheck) and len(check.psnr) == 2
    assert min(check.psnr) > 40.0
    assert abs(check.shift_y) < 0.05 and abs(check.shift_x) < 0.05


def test_pixel_replicated_output_is_exact(texture_scene, tmp_path: Path) -> None:
    source, data = texture_scene
    output = write_output(tmp_path / "nearest.tif", np.repeat(np.repeat(data, 4, axis=1), 4, axis=2), 4)
    check = consistency_check(str(source), str(output), 4)
    assert check.psnr == (float("inf"), float("inf"))
    assert (check.shift_y, check.shift_x) == (0.0, 0.0)
    assert check.to_dict() == {"psnr": (float("inf"), float("inf")), "shift_y": 0.0, "shift_x": 0.0}


@pytest.mark.parametrize(("axis", "scale", "pixels"), [(1, 2, 1), (2, 2, 1), (1, 4, 2), (2, 4, 2)])
def test_shifted_output_is_detected(texture_scene, tmp_path: Path, axis: int, scale: int, pixels: int) -> None:
    """Content moved down (axis 1) or right (axis 2) by `pixels` output pixels is reported as such.

    Shifts of half an input pixel keep the block mean a symmetric (linear-phase) filter of the input,
    i.e. a pure translation, which is what phase correlation measures exactly; a quarter-pixel
    shift at ×4 is not (its block mean weighs the two neighbours 3:1).
    """
    source, data = texture_scene
    nearest = np.repeat(np.repeat(data, scale, axis=1), scale, axis=2)
    shifted = np.roll(nearest, pixels, axis=axis)
    check = consistency_check(str(source), str(write_output(tmp_path / "shifted.tif", shifted, scale)), scale)
    moved, still = (check.shift_y, check.shift_x) if axis == 1 else (check.shift_x, check.shift_y)
    assert moved == pytest.approx(pixels / scale, abs=0.05)  # in input pixels
    assert abs(still) < 0.02
    assert max(check.psnr) < 40.0


def test_masked_pixels_do_not_count(tmp_path: Path) -> None:
    data = (100 + 50 * smooth_texture((1, 40, 48), seed=2)).round().astype("uint8")
    valid = np.ones((40, 48), dtype=bool)
    valid[5:15, 10:30] = False
    source = write_raster(tmp_path / "scene.tif", data, mask=valid)
    output = np.repeat(np.repeat(data, 2, axis=1), 2, axis=2)
    output[:, 10:30, 20:60] = 255  # garbage where the input is masked
    check = consistency_check(str(source), str(write_output(tmp_path / "sr.tif", output, 2)), 2)
    assert check.psnr == (float("inf"),)
    output[:, 0, 0] = 0  # one valid pixel off: PSNR becomes finite
    check = consistency_check(str(source), str(write_output(tmp_path / "sr2.tif", output, 2)), 2)
    data_range = float(data[:, valid].max()) - float(data[:, valid].min())
    mse = (float(data[0, 0, 0]) - float(output[0, :2, :2].mean())) ** 2 / valid.sum()
    assert check.psnr[0] == pytest.approx(10 * np.log10(data_range**2 / mse), rel=1e-9)


@pytest.mark.parametrize("nodata", [float("nan"), -9999.0])
def test_nodata_in_the_centre_does_not_fake_or_hide_a_shift(tmp_path: Path, nodata: float) -> None:
    """Nodata pixels take no part in the shift: NaN must not poison it, -9999 edges must not pin it to 0."""
    data = (100 + 800 * smooth_texture((1, 64, 64), seed=8)).astype("float32")
    valid = np.ones((64, 64), dtype=bool)
    valid[24:36, 20:44] = False  # a hole in the middle of the central crop
    data[:, ~valid] = nodata
    source = write_raster(tmp_path / "scene.tif", data, nodata=nodata)
    check = consistency_check(str(source), str(bicubic_cog(source, tmp_path, scale=2, tile=24)), 2)
    assert np.isfinite(check.psnr).all() and min(check.psnr) > 35.0
    assert abs(check.shift_y) < 0.05 and abs(check.shift_x) < 0.05
    # Content shifted by one output pixel (half an input pixel), the hole left where it is (export
    # masks exactly the input's holes): the shift is reported, not pinned to 0 by the hole's edges.
    # The hole's borders are aligned in both images, so they still pull the estimate towards 0 a
    # little (about 0.4 instead of 0.5 here); what matters is that a half-pixel shift stands out.
    clean = (100 + 800 * smooth_texture((1, 64, 64), seed=8)).astype("float32")
    for axis in (1, 2):
        nearest = np.roll(np.repeat(np.repeat(clean, 2, axis=1), 2, axis=2), 1, axis=axis)
        nearest[:, ~np.repeat(np.repeat(valid, 2, axis=0), 2, axis=1)] = nodata
        shifted = write_raster(tmp_path / "shifted.tif", nearest, nodata=nodata,
                               transform=UTM_TRANSFORM * UTM_TRANSFORM.scale(0.5))
        check = consistency_check(str(source), str(shifted), 2)
        moved, still = (check.shift_y, check.shift_x) if axis == 1 else (check.shift_x, check.shift_y)
        assert 0.25 < moved <= 0.55
        assert abs(still) < 0.05
