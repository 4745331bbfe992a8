from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import UTM_CRS, UTM_TRANSFORM, write_raster
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from sr_geo.errors import InvalidRasterError, InvalidRequestError
from sr_geo.models.registry import ModelSpec
from sr_geo.preflight import validate_request
from sr_geo.scene import (
    SceneInfo,
    check_has_valid_pixels,
    data_bands,
    inspect_scene,
    read_valid,
)

BICUBIC = ModelSpec("bicubic", 2)


def assert_one_line_naming(exc: pytest.ExceptionInfo, path: Path | str, *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    assert str(path) in message
    for word in words:
        assert word in message, message


def refuse(path: Path, *words: str) -> None:
    """`path` is refused by inspect_scene and by validate_request, with one line naming it."""
    with pytest.raises(InvalidRasterError) as info:
        inspect_scene(str(path))
    assert_one_line_naming(info, path, *words)
    with pytest.raises(InvalidRasterError) as info:
        validate_request(str(path), str(path.parent / "out" / "sr.tif"), BICUBIC)
    assert_one_line_naming(info, path, *words)


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"tiled": True, "blockxsize": 64, "blockysize": 64},
        {"compress": "deflate"},
        {"compress": "deflate", "tiled": True, "blockxsize": 64, "blockysize": 64},
        {"interleave": "band"},
    ],
    ids=["strips", "tiles", "deflate-strips", "deflate-tiles", "band-interleaved"],
)
def test_truncated_geotiff_is_refused(make_raster, layout: dict) -> None:
    path = make_raster(200, 190, **layout)
    inspect_scene(str(path))  # valid before truncation
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refuse(path)


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("this is not a raster\n" * 20)
    refuse(path, "not a readable raster")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    path.touch()
    refuse(path, "empty")


def test_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scene.tif"
    path.mkdir()
    refuse(path, "directory")


def test_missing_path_is_refused(tmp_path: Path) -> None:
    refuse(tmp_path / "nope.tif", "no such file")


def test_raster_without_crs_is_refused(make_raster) -> None:
    refuse(make_raster(16, 16, crs=None), "no CRS")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_raster_without_geotransform_is_refused(make_raster) -> None:
    refuse(make_raster(16, 16, transform=Affine.identity()), "no geotransform")


def test_rotated_raster_is_refused(make_raster) -> None:
    refuse(make_raster(16, 16, transform=UTM_TRANSFORM * Affine.rotation(12)), "rotated")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_gcp_only_raster_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gcps.tif"
    gcps = [
        GroundControlPoint(row=0, col=0, x=435730.0, y=4179460.0, id="ul"),
        GroundControlPoint(row=0, col=32, x=436050.0, y=4179460.0, id="ur"),
        GroundControlPoint(row=32, col=0, x=435730.0, y=4179140.0, id="ll"),
    ]
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint16") as dst:
        dst.write(np.ones((1, 32, 32), dtype="uint16"))
        dst.gcps = (gcps, CRS.from_string(UTM_CRS))
    with rasterio.open(path) as ds:
        assert ds.crs is None and len(ds.gcps[0]) == 3  # the file really is GCP-only
    refuse(path, "GCPs")


def test_all_nodata_raster_is_refused(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "void.tif", np.zeros((2, 40, 30), dtype="uint16"), nodata=0)
    inspect_scene(str(path))  # the header is fine ...
    with pytest.raises(InvalidRasterError) as info:  # ... but there is nothing to super-resolve
        check_has_valid_pixels(str(path))
    assert_one_line_naming(info, path, "nodata")
    with pytest.raises(InvalidRasterError):
        validate_request(str(path), str(tmp_path / "sr.tif"), BICUBIC)


def test_all_masked_raster_is_refused(tmp_path: Path) -> None:
    data = np.full((1, 40, 30), 7, dtype="uint8")
    path = write_raster(tmp_path / "masked.tif", data, mask=np.zeros((40, 30), dtype=bool))
    with pytest.raises(InvalidRasterError) as info:
        check_has_valid_pixels(str(path))
    assert_one_line_naming(info, path, "masked")


def test_palette_raster_is_refused(make_raster) -> None:
    path = make_raster(20, 30, bands=1, dtype="uint8")
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 255), 255: (255, 0, 0, 255)})
    refuse(path, "palette", "gdal_translate -expand rgb")


def test_raster_of_only_an_alpha_band_is_refused(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "alpha.tif", np.full((1, 20, 30), 255, dtype="uint8"))
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.alpha]
    refuse(path, "alpha")


def test_float_raster_of_undeclared_nans_is_refused(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "nans.tif", np.full((2, 40, 30), np.nan, dtype="float32"))
    with pytest.raises(InvalidRasterError) as info:
        check_has_valid_pixels(str(path))
    assert_one_line_naming(info, path, "nodata")


def test_one_valid_pixel_in_a_large_masked_raster_is_found(tmp_path: Path) -> None:
    """The decimated first look misses a single pixel; the block-by-block pass must find it."""
    mask = np.zeros((300, 260), dtype=bool)
    mask[211, 187] = True
    path = write_raster(tmp_path / "speck.tif", np.full((1, 300, 260), 5, dtype="uint8"), mask=mask)
    check_has_valid_pixels(str(path), block=64)


@pytest.mark.parametrize(("name", "scale", "words"), [("esrgan", 2, "unknown model"), ("bicubic", 3, "scale"),
                                                      ("cnn", 8, "scale"), ("lanczos", 1, "scale")])
def test_unknown_model_or_scale_is_refused(name: str, scale: int, words: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ModelSpec(name, scale)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_output_that_is_the_input_is_refused(make_raster, tmp_path: Path, monkeypatch) -> None:
    path = make_raster(16, 16)
    for destination in (str(path), f"{tmp_path}/./{path.name}", f"{tmp_path}/out/../{path.name}"):
        with pytest.raises(InvalidRequestError) as info:
            validate_request(str(path), destination, BICUBIC)
        assert_one_line_naming(info, destination, "input itself")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidRequestError):
        validate_request(str(path), path.name, BICUBIC)  # relative spelling of the same file
    link = tmp_path / "link.tif"
    link.symlink_to(path)
    with pytest.raises(InvalidRequestError):
        validate_request(str(path), str(link), BICUBIC)  # a symlink to it is the input too


def test_output_that_is_a_directory_is_refused(make_raster, tmp_path: Path) -> None:
    path = make_raster(16, 16)
    with pytest.raises(InvalidRequestError) as info:
        validate_request(str(path), str(tmp_path), BICUBIC)
    assert_one_line_naming(info, tmp_path, "directory")


def test_validate_request_returns_the_scene_and_creates_the_output_folder(make_raster, tmp_path: Path) -> None:
    path = make_raster(16, 20, bands=2)
    destination = tmp_path / "a" / "b" / "sr.tif"
    scene = validate_request(str(path), str(destination), ModelSpec("lanczos", 4))
    assert scene == inspect_scene(str(path))
    assert destination.parent.is_dir() and not destination.exists()


# -- valid inputs ----------------------------------------------------------------------------------

NODATA = {"uint8": 0, "uint16": 0, "int16": -32768, "float32": -9999.0}


@pytest.mark.parametrize("masking", ["none", "nodata", "mask", "nodata+mask"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_valid_rasters_are_described(make_raster, dtype: str, masking: str) -> None:
    mask = np.ones((24, 40), dtype=bool)
    mask[:5, :7] = False
    kwargs = {}
    if "nodata" in masking:
        kwargs["nodata"] = NODATA[dtype]
    if "mask" in masking.split("+") or masking == "mask":
        kwargs["mask"] = mask
    path = make_raster(24, 40, bands=3, dtype=dtype, **kwargs)
    scene = inspect_scene(str(path))
    check_has_valid_pixels(str(path))
    assert scene.path == str(path)
    assert scene.dtype == dtype and scene.count == 3
    assert scene.grid.transform == UTM_TRANSFORM
    assert CRS.from_wkt(scene.grid.crs) == CRS.from_string(UTM_CRS)
    assert scene.grid.shape == (24, 40)
    assert scene.nodata == kwargs.get("nodata")
    assert scene.has_mask == ("mask" in kwargs)
    assert scene.masked == (masking != "none")
    assert scene.size_bytes == os.path.getsize(path)
    assert scene.mtime == os.path.getmtime(path)
    assert scene.band_names == ("band_1", "band_2", "band_3")


def test_band_descriptions_scales_offsets_and_units_are_read(make_raster) -> None:
    path = make_raster(16, 16, bands=3)
    with rasterio.open(path, "r+") as ds:
        ds.descriptions = ("B04", "B03", None)
        ds.scales = (0.0001, 0.0002, 1.0)
        ds.offsets = (-0.1, 0.0, 5.0)
        ds.units = ("reflectance", "", "dn")
    scene = inspect_scene(str(path))
    assert scene.descriptions == ("B04", "B03", None)
    assert scene.band_names == ("B04", "B03", "band_3")
    assert scene.scales == (0.0001, 0.0002, 1.0)
    assert scene.offsets == (-0.1, 0.0, 5.0)
    assert scene.units == ("reflectance", "", "dn")


def test_scene_attrs_round_trip_through_json(make_raster) -> None:
    path = make_raster(16, 24, bands=2, nodata=0, mask=np.ones((16, 24), dtype=bool))
    scene = inspect_scene(str(path))
    attrs = json.loads(json.dumps(scene.to_attrs()))
    assert SceneInfo.from_attrs(attrs) == scene


def test_dataset_tags_are_kept_and_round_trip(make_raster) -> None:
    path = make_raster(16, 24, bands=2)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(ACQUISITION_DATE="2024-05-01", SENSOR="OLI")
    scene = inspect_scene(str(path))
    assert scene.tags == (("ACQUISITION_DATE", "2024-05-01"), ("SENSOR", "OLI"))  # not GDAL's AREA_OR_POINT
    assert SceneInfo.from_attrs(json.loads(json.dumps(scene.to_attrs()))) == scene


def test_alpha_band_is_the_mask_not_a_data_band(tmp_path: Path) -> None:
    data = np.full((4, 20, 30), 90, dtype="uint8")
    data[3] = 255
    data[3, :5] = 0
    path = write_raster(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    scene = inspect_scene(str(path))
    assert scene.count == 3 and scene.colorinterp == ("red", "green", "blue") and scene.has_mask
    with rasterio.open(path) as ds:
        assert data_bands(ds) == [1, 2, 3]
        pixels, valid = read_valid(ds, None)
    assert pixels.shape == (3, 20, 30)
    np.testing.assert_array_equal(valid, data[3] > 0)


def test_undeclared_nans_are_invalid_in_every_band(tmp_path: Path) -> None:
    """A float raster declares no nodata but holds NaN (one band) and inf: those pixels are holes."""
    data = np.ones((2, 12, 10), dtype="float32")
    data[0, 3, 4], data[1, 7, 2] = np.nan, np.inf
    path = write_raster(tmp_path / "nans.tif", data)
    with rasterio.open(path) as ds:
        _, valid = read_valid(ds, None)
    expected = np.ones((12, 10), dtype=bool)
    expected[3, 4] = expected[7, 2] = False
    np.testing.assert_array_equal(valid, expected)
