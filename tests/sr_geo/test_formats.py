"""Input formats other than plain GeoTIFF: JPEG2000, VRT and COG go through the same path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from conftest import predicted_store
from sr_geo.scene import inspect_scene
from sr_geo.store import TileStore


def _as_vrt(source: Path, path: Path) -> Path:
    """A VRT that mosaics nothing but re-exposes `source`: the simplest real VRT."""
    with rasterio.open(source) as src:
        bands = "".join(
            f'<VRTRasterBand dataType="{src.dtypes[0].capitalize() if src.dtypes[0] != "uint16" else "UInt16"}" band="{b}">'
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{source}</SourceFilename><SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{src.width}" ySize="{src.height}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{src.width}" ySize="{src.height}"/></SimpleSource></VRTRasterBand>'
            for b in src.indexes
        )
        transform = ", ".join(str(v) for v in src.transform.to_gdal())
        path.write_text(
            f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}"><SRS>{src.crs.to_wkt()}</SRS>'
            f"<GeoTransform>{transform}</GeoTransform>{bands}</VRTDataset>"
        )
    return path


@pytest.mark.parametrize("driver", ["JP2OpenJPEG", "VRT", "COG"])
def test_formats_tile_exactly_like_the_geotiff(make_raster, tmp_path, driver):
    source = make_raster(70, 90, bands=3, dtype="uint16")
    other = tmp_path / {"JP2OpenJPEG": "scene.jp2", "VRT": "scene.vrt", "COG": "scene_cog.tif"}[driver]
    if driver == "VRT":
        _as_vrt(source, other)
    elif driver == "JP2OpenJPEG":
        rasterio.shutil.copy(source, other, driver=driver, QUALITY=100, REVERSIBLE="YES")
    else:
        rasterio.shutil.copy(source, other, driver=driver)
    scene, reference = inspect_scene(str(other)), inspect_scene(str(source))
    assert scene.grid == reference.grid and scene.count == 3 and scene.dtype == "uint16"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tiled = TileStore.open(predicted_store(other, tmp_path / "a", scale=2, tile=32), mode="r")
    expected = TileStore.open(predicted_store(source, tmp_path / "b", scale=2, tile=32), mode="r")
    np.testing.assert_array_equal(tiled.group["input"][:], expected.group["input"][:])
    np.testing.assert_array_equal(tiled.group["output"][:], expected.group["output"][:])
