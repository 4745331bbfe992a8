"""STAC Items for output COGs, filled from the files themselves rather than from what was asked for.

Each Item carries the `proj` extension (code or WKT2, transform, shape and bbox in the output CRS)
and, on its asset, the `raster` extension (per band: data type, nodata, resolution, unit, scale and
offset), so a reader can plan windowed reads without opening the file. Provenance (model, weights,
scale, run key, source and its SHA-256) is in `sr_geo:*` properties; a source that came from STAC
is linked with `derived_from`.

`datetime` is the source item's acquisition time when the source came from STAC; otherwise it is
unknown to sr-geo and the output's modification time stands in (also given as `created`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

import pystac
import rasterio
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.warp import transform_bounds

from sr_geo.catalog import SourceRef


def _footprint(bounds: tuple[float, float, float, float]) -> dict:
    west, south, east, north = bounds
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def output_item(cog: str | Path, item_id: str, source: SourceRef, source_sha256: str) -> pystac.Item:
    """The STAC Item describing one output COG and where it came from."""
    with rasterio.open(cog) as ds:
        tags, crs, transform, shape = ds.tags(), ds.crs, ds.transform, (ds.height, ds.width)
        native_bounds = tuple(ds.bounds)
        bands = [
            RasterBand.create(data_type=DataType(dtype), nodata=ds.nodata, spatial_resolution=ds.res[0],
                              unit=unit or None, scale=scale, offset=offset)
            for dtype, unit, scale, offset in zip(ds.dtypes, ds.units, ds.scales, ds.offsets, strict=True)
        ]
    bbox = transform_bounds(crs, "EPSG:4326", *native_bounds, densify_pts=21)
    created = dt.datetime.fromtimestamp(os.path.getmtime(cog), dt.timezone.utc)
    when = dt.datetime.fromisoformat(source.datetime) if source.datetime else created
    item = pystac.Item(
        id=item_id, geometry=_footprint(bbox), bbox=list(bbox), datetime=when,
        properties={
            "created": created.isoformat(),
            "sr_geo:model": tags["SR_GEO_MODEL"],
            "sr_geo:weights_sha256": tags["SR_GEO_WEIGHTS_SHA256"],
            "sr_geo:scale": int(tags["SR_GEO_SCALE"]),
            "sr_geo:run_key": tags["SR_GEO_RUN_KEY"],
            "sr_geo:version": tags["SR_GEO_VERSION"],
            "sr_geo:source": source.href,
            "sr_geo:source_sha256": source_sha256,
        },
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    proj.epsg = epsg
    proj.wkt2 = None if epsg else crs.to_wkt(version="WKT2_2019")
    proj.transform = list(transform)[:6]
    proj.shape = list(shape)
    proj.bbox = list(native_bounds)
    asset = pystac.Asset(href=str(cog), media_type=pystac.MediaType.COG, roles=["data"],
                         title="super-resolved image")
    item.add_asset("data", asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = bands
    if source.item_href:
        item.add_link(pystac.Link("derived_from", source.item_href, media_type=pystac.MediaType.JSON))
    return item


def write_item_collection(items: Iterable[pystac.Item], path: str | Path) -> Path:
    """Write the ItemCollection atomically: readers see the previous collection or the new one."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    pystac.ItemCollection(list(items)).save_object(dest_href=str(partial))
    os.replace(partial, path)
    return path
