"""STAC Items for output COGs, filled from the files themselves rather than from what was asked for.

Each Item carries the `proj` extension (code or WKT2, transform, shape and bbox in the output CRS)
and, on its asset, the `raster` extension (per band: data type, nodata, resolution, unit, scale and
offset), so a reader can plan windowed reads without opening the file. Provenance (model, weights,
scale, run key, source and its SHA-256; every frame of a fused time stack) is in `sr_geo:*`
properties; sources that came from STAC are linked with `derived_from`. Outputs and the collection
may be local files or object-store URLs.

`datetime` is the (latest) source item's acquisition time when the source came from STAC; otherwise
it is unknown to sr-geo and the output's modification time stands in (also given as `created`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence

import pystac
import rasterio
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.warp import transform_bounds

from sr_geo import storage
from sr_geo.catalog import SourceIdentity, SourceRef


def _footprint(bounds: tuple[float, float, float, float]) -> dict:
    west, south, east, north = bounds
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def output_item(cog: str, item_id: str, sources: Sequence[SourceRef], identities: Sequence[SourceIdentity]
                ) -> pystac.Item:
    """The STAC Item describing one output COG and where it came from: one source, or the frames of a
    time stack (oldest first; the output is on the latest one's grid)."""
    storage.configure_gdal()
    source, sha256 = sources[-1], identities[-1].sha256
    with rasterio.open(cog) as ds:
        tags, crs, transform, shape = ds.tags(), ds.crs, ds.transform, (ds.height, ds.width)
        native_bounds = tuple(ds.bounds)
        bands = [
            RasterBand.create(data_type=DataType(dtype), nodata=ds.nodata, spatial_resolution=ds.res[0],
                              unit=unit or None, scale=scale, offset=offset)
            for dtype, unit, scale, offset in zip(ds.dtypes, ds.units, ds.scales, ds.offsets, strict=True)
        ]
    bbox = transform_bounds(crs, "EPSG:4326", *native_bounds, densify_pts=21)
    created = dt.datetime.fromtimestamp(storage.identity(cog)[1], dt.timezone.utc)
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
            "sr_geo:source_sha256": sha256,
        },
    )
    if len(sources) > 1:
        item.properties["sr_geo:frames"] = [{"href": ref.href, "sha256": identity.sha256}
                                            for ref, identity in zip(sources, identities, strict=True)]
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    proj.epsg = epsg
    proj.wkt2 = None if epsg else crs.to_wkt(version="WKT2_2019")
    proj.transform = list(transform)[:6]
    proj.shape = list(shape)
    proj.bbox = list(native_bounds)
    asset = pystac.Asset(href=cog, media_type=pystac.MediaType.COG, roles=["data"],
                         title="super-resolved image")
    item.add_asset("data", asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = bands
    for item_href in dict.fromkeys(ref.item_href for ref in sources if ref.item_href):
        item.add_link(pystac.Link("derived_from", item_href, media_type=pystac.MediaType.JSON))
    return item


def write_item_collection(items: Iterable[pystac.Item], path: str) -> str:
    """Write the ItemCollection whole: readers see the previous collection or the new one."""
    storage.publish_text(json.dumps(pystac.ItemCollection(list(items)).to_dict(), indent=2), path)
    return path
