"""What sr-geo needs to know about an input raster, read once and validated up front.

Reading the header is cheap, and every later stage trusts it: a scene that passes `inspect_scene`
can be tiled. All refusals happen here, as one-line `InvalidRasterError`s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioIOError

from sr_geo.errors import InvalidRasterError
from sr_geo.grid import Grid, check_north_up
from sr_geo.storage import configure_gdal, identity, is_remote

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class SceneInfo:
    """Header facts of one input raster, plus the file identity used for provenance and resume."""

    path: str
    grid: Grid
    count: int
    dtype: str
    nodata: float | None
    has_mask: bool
    descriptions: tuple[str | None, ...]
    colorinterp: tuple[str, ...]
    units: tuple[str, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    size_bytes: int
    mtime: float
    tags: tuple[tuple[str, str], ...] = ()  # the dataset's own metadata (dates, sensor), which the output keeps

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(d or f"band_{i + 1}" for i, d in enumerate(self.descriptions))

    @property
    def masked(self) -> bool:
        """Whether some pixels may be invalid (a nodata value or an internal/external mask)."""
        return self.nodata is not None or self.has_mask

    def to_attrs(self) -> dict:
        """JSON-serialisable form for store attributes and provenance tags."""
        return {
            "path": self.path,
            "crs_wkt": self.grid.crs,
            "transform": list(self.grid.transform)[:6],
            "width": self.grid.width,
            "height": self.grid.height,
            "count": self.count,
            "dtype": self.dtype,
            "nodata": self.nodata,
            "has_mask": self.has_mask,
            "descriptions": list(self.descriptions),
            "colorinterp": list(self.colorinterp),
            "units": list(self.units),
            "scales": list(self.scales),
            "offsets": list(self.offsets),
            "size_bytes": self.size_bytes,
            "mtime": self.mtime,
            "tags": [list(tag) for tag in self.tags],
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> SceneInfo:
        grid = Grid(
            crs=attrs["crs_wkt"], transform=Affine(*attrs["transform"]), width=attrs["width"], height=attrs["height"]
        )
        fields = {k: v for k, v in attrs.items() if k not in ("crs_wkt", "transform", "width", "height")}
        fields["tags"] = tuple(tuple(tag) for tag in fields.get("tags", ()))
        return cls(grid=grid, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _open(path: str) -> rasterio.DatasetReader:
    configure_gdal()
    if not is_remote(path):
        if not os.path.exists(path):
            raise InvalidRasterError(f"{path}: no such file")
        if os.path.isdir(path):
            raise InvalidRasterError(f"{path}: is a directory, not a raster file")
        if os.path.getsize(path) == 0:
            raise InvalidRasterError(f"{path}: file is empty")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise InvalidRasterError(f"{path}: not a readable raster ({reason})") from None


def _has_mask(ds: rasterio.DatasetReader) -> bool:
    """An internal or external per-dataset mask, or alpha band (not a mere nodata value)."""
    return any(
        MaskFlags.per_dataset in flags or MaskFlags.alpha in flags for flags in ds.mask_flag_enums
    )


def inspect_scene(path: str) -> SceneInfo:
    """Open, validate and describe `path`; raise `InvalidRasterError` with a one-line reason."""
    with _open(path) as ds:
        if ds.crs is None:
            if ds.gcps[0]:
                raise InvalidRasterError(
                    f"{path}: raster is georeferenced by GCPs only (warp it to a grid first, "
                    "e.g. gdalwarp -t_srs EPSG:xxxx)"
                )
            raise InvalidRasterError(f"{path}: raster has no CRS (assign one, e.g. gdal_edit -a_srs)")
        check_north_up(ds.transform, path)
        if ColorInterp.palette in ds.colorinterp:
            raise InvalidRasterError(
                f"{path}: palette-indexed raster: its values are class codes, not intensities (expand it "
                "first, e.g. gdal_translate -expand rgb)"
            )
        bands = data_bands(ds)
        if not bands:
            raise InvalidRasterError(f"{path}: has only an alpha band, no data to super-resolve")
        dtypes = {ds.dtypes[i - 1] for i in bands}
        if len(dtypes) != 1:
            raise InvalidRasterError(f"{path}: bands have different data types {sorted(dtypes)}")
        dtype = dtypes.pop()
        if dtype not in SUPPORTED_DTYPES:
            raise InvalidRasterError(
                f"{path}: data type {dtype} is not supported (use one of {', '.join(SUPPORTED_DTYPES)})"
            )
        try:
            # A truncated file keeps a valid header: touch its first and last pixels, where the
            # data it lost would be.
            ds.read(window=((0, 1), (0, 1)))
            ds.read(window=((ds.height - 1, ds.height), (ds.width - 1, ds.width)))
        except RasterioIOError as exc:
            raise InvalidRasterError(f"{path}: pixel data cannot be read ({str(exc).splitlines()[0]})") from None
        size, mtime = identity(path)
        return SceneInfo(
            path=path,
            grid=Grid(crs=ds.crs.to_wkt(), transform=ds.transform, width=ds.width, height=ds.height),
            count=len(bands),
            dtype=dtype,
            nodata=None if ds.nodata is None else float(ds.nodata),
            has_mask=_has_mask(ds),
            descriptions=tuple(ds.descriptions[i - 1] for i in bands),
            colorinterp=tuple(ds.colorinterp[i - 1].name for i in bands),
            units=tuple(ds.units[i - 1] or "" for i in bands),
            scales=tuple(float(ds.scales[i - 1]) for i in bands),
            offsets=tuple(float(ds.offsets[i - 1]) for i in bands),
            size_bytes=size,
            mtime=mtime,
            tags=tuple(sorted((k, v) for k, v in ds.tags().items() if k != "AREA_OR_POINT")),
        )


def check_has_valid_pixels(path: str, block: int = 1024) -> None:
    """Refuse a raster whose every pixel is nodata/masked, before any work is scheduled.

    A decimated read answers almost every real scene at once; only a scene that looks empty at
    low resolution is read in full, block by block, so the check stays bounded in memory.
    """
    with _open(path) as ds:
        if _any_valid(ds, None, (min(ds.height, block), min(ds.width, block))):
            return
        for row in range(0, ds.height, block):
            for col in range(0, ds.width, block):
                if _any_valid(ds, ((row, min(row + block, ds.height)), (col, min(col + block, ds.width)))):
                    return
    raise InvalidRasterError(f"{path}: every pixel is nodata or masked; there is nothing to super-resolve")


def _any_valid(ds: rasterio.DatasetReader, window, out_shape: tuple[int, int] | None = None) -> bool:
    valid = ds.dataset_mask(window=window, out_shape=out_shape, resampling=Resampling.nearest) > 0
    if valid.any() and np.dtype(ds.dtypes[0]).kind == "f":  # pixel values matter only for finiteness
        bands = data_bands(ds)
        shape = None if out_shape is None else (len(bands), *out_shape)
        valid = finite(ds.read(bands, window=window, out_shape=shape, resampling=Resampling.nearest), valid)
    return bool(valid.any())


def data_bands(ds: rasterio.DatasetReader) -> list[int]:
    """The 1-based indexes of the bands that hold data: every band but an alpha band, which is the
    raster's mask (GDAL's dataset mask reads it), not a quantity to super-resolve."""
    return [i for i, ci in enumerate(ds.colorinterp, start=1) if ci != ColorInterp.alpha]


def read_valid(ds: rasterio.DatasetReader, window) -> tuple[np.ndarray, np.ndarray]:
    """The data bands of `window` and their validity: GDAL's dataset mask (nodata, internal or
    external mask, alpha; a pixel is valid where any band is), made `finite`."""
    data = ds.read(data_bands(ds), window=window)
    return data, finite(data, ds.dataset_mask(window=window) > 0)


def finite(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`valid` where every band of `data` (bands, h, w) is finite. Float rasters often hold NaN where
    no nodata is declared, and one NaN fed to a network spreads over its whole receptive field."""
    return valid & np.isfinite(data).all(axis=0) if data.dtype.kind == "f" else valid
