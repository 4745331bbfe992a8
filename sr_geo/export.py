"""Write the store's output as a Cloud Optimized GeoTIFF with the input's georeferencing.

Tile cores are stitched into an uncompressed tiled GeoTIFF in the work dir, a few at a time on every core
(bounded memory); GDAL averages its overviews into it, and the COG driver copies both into the final
layout. The COG is written under a hidden temporary name beside the target and renamed into place,
so a killed run never leaves a partial file at the output path.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window
from zarr.core.buffer.cpu import NDBuffer

from sr_geo.config import COMPRESSIONS
from sr_geo.errors import InvalidRequestError
from sr_geo.memory import release_freed_memory
from sr_geo.models.registry import ARCHITECTURES
from sr_geo.parallel import for_each_tile
from sr_geo.scene import SceneInfo
from sr_geo.stack import clearest_frame
from sr_geo.storage import configure_gdal, is_remote, publish
from sr_geo.store import TileStore

BLOCK = 512
# GDAL's overview pass reads full-width rows of the stitched file in chunks that grow with the
# output's width: the pass peaked at 433–445 MiB for a 67-megapixel output (8192 wide) against 370
# for 4 megapixels; with 4 MB chunks at 377–392, no slower. A Sentinel-2 tile at ×4 is 5× wider.
OVERVIEW_CHUNK_BYTES = 4_000_000
# Level 1 for both codecs, not GDAL's defaults (DEFLATE 6, ZSTD 9), measured on ×4 outputs, one thread:
# DEFLATE 1 writes a Sentinel-2 uint16 output 1.7× faster than DEFLATE 6 at the same size (57.8 vs
# 58.2 MB), float32 1.3× (same size), uint8 aerial imagery 2.6× at 9 % more bytes; ZSTD 3 took 2.4×
# the time of ZSTD 1 for 5 % fewer bytes. Export, not the GPU, bounds a GPU node.
CODEC_OPTIONS = {name: {"COMPRESS": name.upper(), "LEVEL": 1} for name in COMPRESSIONS}


def to_dtype(values: np.ndarray, valid: np.ndarray, dtype: str, nodata: float | None,
             out: np.ndarray | None = None) -> np.ndarray:
    """Round and clip float output into `dtype`; masked pixels become nodata, valid ones never do.

    A valid pixel that would round onto the nodata value is moved one step away from it, otherwise
    every reader would take it for a hole. A float raster without nodata gets NaN in its holes, as
    it had them in the input (`sr_geo.scene.finite`). Given `out` (of `dtype`, shaped like `values`),
    the result goes there and `values` is rounded in place: export reuses both from tile to tile.
    """
    if out is None:  # the caller's values stay as they are
        values, out = values.copy(), np.empty(values.shape, dtype)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        np.copyto(out, np.clip(np.rint(values, out=values), info.min, info.max, out=values), casting="unsafe")
        if nodata is not None:
            step = -1 if nodata == info.max else 1
            out[(out == nodata) & valid] = np.array(nodata + step).astype(dtype)
    else:
        np.copyto(out, values, casting="unsafe")
        if nodata is None:
            out[:, ~valid] = np.nan
    if nodata is not None:
        out[:, ~valid] = np.array(nodata).astype(dtype)
    return out


def provenance_tags(store: TileStore) -> dict[str, str]:
    attrs = store.attrs
    return {
        "SR_GEO_VERSION": attrs["version"],
        "SR_GEO_MODEL": attrs["model"]["name"],
        "SR_GEO_WEIGHTS_SHA256": attrs["model"]["weights_sha256"],
        "SR_GEO_SCALE": str(store.plan.scale),
        "SR_GEO_HALO": str(store.plan.halo),
        "SR_GEO_TILE": f"{store.plan.tile_height}x{store.plan.tile_width}",
        "SR_GEO_INFERENCE": json.dumps(attrs.get("inference", {}), sort_keys=True),
        "SR_GEO_SOURCE": os.path.basename(attrs["source"]["path"]),
        "SR_GEO_SOURCE_SIZE": str(attrs["source"]["size"]),
        "SR_GEO_RUN_KEY": attrs["run_key"],
    } | ({"SR_GEO_PRECISION": attrs["precision"]} if "precision" in attrs else {})


@dataclass(frozen=True)
class Layer:
    """How one store array becomes a raster: its data type, nodata and whether it gets a mask."""

    array: str
    dtype: str
    nodata: float | None
    mask: bool
    offsets: tuple[float, ...]
    description: str

    @classmethod
    def for_store(cls, array: str, scene: SceneInfo) -> Layer:
        if array == "output":
            return cls("output", scene.dtype, scene.nodata, scene.has_mask and scene.nodata is None,
                       scene.offsets, "super-resolved image")
        # A spread is a float in data units: the band scale applies to it, the offset does not.
        return cls(array, "float32", float("nan"), False, (0.0,) * scene.count,
                   "per-pixel standard deviation over the 8 dihedral transforms, in data units")


def _frames_seen(store: TileStore) -> list[int]:
    """The frames the model saw: all of a stack for a temporal model (a pixel is valid where any
    frame observed it), else the clearest frame, which is the one single-image models are given."""
    if ARCHITECTURES[store.attrs["model"]["name"]].temporal:
        return list(range(store.frames))
    return [clearest_frame(store.group["stats"][:, :, 0, 0].sum(axis=0))]


class _TileBuffers(threading.local):
    """Each stitching thread's arrays for one tile core, read into and converted into tile after tile.

    Fresh arrays per tile (~60 MB for 4 bands at tile 256, ×4) piled up in glibc's per-thread arenas:
    the stitching stage of a 67-megapixel export peaked at 410–437 MiB with them, 355–363 without.
    """

    def __init__(self, shape: tuple[int, int, int], dtype: str) -> None:
        self.floats = np.empty(shape, "float32")
        self.converted = np.empty(shape, dtype)

    def get(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        return self.floats[:, :height, :width], self.converted[:, :height, :width]


def _write_tiles(store: TileStore, scene: SceneInfo, layer: Layer, path: Path, workers: int,
                 on_tile: Callable[[int], None] | None) -> None:
    """Stitch the tile cores into a tiled GeoTIFF, `workers` tiles at a time.

    Reading a core from the store, converting it and building its mask run in parallel; GDAL writes
    one tile at a time (a dataset handle is not thread-safe). The file is not compressed: it is
    written once and read twice on local disk, and ZSTD there made the whole export 1.15–1.35× slower
    (real Sentinel-2 ×4 output, 1 and 2 threads) to save a third of a uint16 file and almost nothing
    of a float32 one, whose mantissas are near noise.
    """
    plan, s = store.plan, store.plan.scale
    height, width = plan.output_shape
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": scene.count, "dtype": layer.dtype,
        "crs": scene.grid.crs, "transform": scene.grid.transform * Affine.scale(1 / s),
        "nodata": layer.nodata, "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK,
        "bigtiff": "if_safer",
        # Band by band: the overview pass took twice as long on a pixel-interleaved file (the COG
        # itself is pixel-interleaved) and held more memory.
        "interleave": "band",
    }
    values_array, valid = store.group[layer.array], store.group["valid"]
    frames = _frames_seen(store)
    write_lock = threading.Lock()
    buffers = _TileBuffers((scene.count, *plan.output_chunk), layer.dtype)
    with rasterio.open(path, "w", **profile) as dst:

        def stitch(tile_id: int) -> int:
            tile = plan.tile(tile_id)
            (r0, c0), h, w = tile.pad_before, int(tile.core.height), int(tile.core.width)
            core_valid = valid[tile.id, frames, r0 : r0 + h, c0 : c0 + w].any(axis=0)
            up_valid = np.repeat(np.repeat(core_valid, s, axis=0), s, axis=1)
            y0, x0 = int(tile.core.row_off) * s, int(tile.core.col_off) * s
            floats, converted = buffers.get(h * s, w * s)
            values_array.get_basic_selection(
                (slice(None), slice(y0, y0 + h * s), slice(x0, x0 + w * s)), out=NDBuffer.from_numpy_array(floats))
            values = to_dtype(floats, up_valid, layer.dtype, layer.nodata, out=converted)
            mask = (up_valid * 255).astype("uint8") if layer.mask else None
            window = Window(x0, y0, w * s, h * s)
            with write_lock:  # only GDAL's write under the lock: conversions run in parallel
                dst.write(values, window=window)
                if mask is not None:
                    dst.write_mask(mask, window=window)
            return tile_id

        for_each_tile(stitch, list(range(plan.n_tiles)), workers=workers, on_tile=on_tile)
        dst.descriptions = scene.descriptions
        dst.colorinterp = [ColorInterp[name] for name in scene.colorinterp]
        dst.units = scene.units
        dst.scales, dst.offsets = scene.scales, layer.offsets
        dst.update_tags(**dict(scene.tags) | provenance_tags(store) | {"SR_GEO_LAYER": layer.description})


def overview_factors(height: int, width: int, block: int = BLOCK) -> list[int]:
    """The COG driver's own choice: halve until the coarsest overview fits in one block."""
    factors: list[int] = []
    while -(-max(height, width) // 2 ** len(factors)) > block:
        factors.append(2 ** (len(factors) + 1))
    return factors


def _build_overviews(path: Path, threads: int) -> None:
    """Average the stitched file's overviews into it before the COG copy.

    The same overviews, pixel for pixel, as the COG driver computes on its own, but GDAL's
    BuildOverviews runs on `threads` threads and keeps them in the scratch file (uncompressed, as
    the file), where the COG driver would stage them DEFLATE-compressed in a file of its own: export on a
    Sentinel-2 ×4 output took 1.5× less time on one thread, 1.3× on two. GDAL reads the full-width
    rows it averages in chunks of at most OVERVIEW_CHUNK_BYTES.
    """
    with rasterio.Env(GDAL_NUM_THREADS=str(threads), COMPRESS_OVERVIEW="NONE",
                      GDAL_OVR_CHUNK_MAX_SIZE=str(OVERVIEW_CHUNK_BYTES)):
        with rasterio.open(path, "r+") as ds:
            factors = overview_factors(ds.height, ds.width)
            if factors:
                ds.build_overviews(factors, Resampling.average)


def export_cog(
    store: TileStore,
    destination: str | Path,
    scratch_dir: str | Path,
    *,
    layer: str = "output",
    on_tile: Callable[[int], None] | None = None,
    threads: int | None = None,
    compression: str = "deflate",
) -> str | Path:
    """Write store array `layer` to `destination` (a path or object-store URL) from a fully inferred store.

    `scratch_dir` is a local directory for the intermediate GeoTIFF. A local COG is finished under a
    hidden name beside the target (same file system, so the rename is atomic); a remote one in the
    scratch directory, then uploaded in one piece. The scratch file is uncompressed: plan for the
    output's raw size plus a third for overviews there. Stitching and compression use `threads` threads
    (default: every core); `compression` is one of `sr_geo.config.COMPRESSIONS`.
    """
    if compression not in CODEC_OPTIONS:
        raise InvalidRequestError(f"compression {compression!r} is not one of {', '.join(CODEC_OPTIONS)}")
    scene = SceneInfo.from_attrs(store.attrs["scene"])
    token = uuid.uuid4().hex[:12]  # concurrent runs never share a temporary file
    target = str(destination)
    name = target.rsplit("/", 1)[-1]
    scratch = Path(scratch_dir) / f"{Path(name).stem}.{token}.stitched.tif"
    beside = Path(scratch_dir) if is_remote(target) else Path(target).parent
    partial = beside / f".{name}.{token}.partial"
    threads = threads or os.cpu_count() or 1
    configure_gdal()
    try:
        _write_tiles(store, scene, Layer.for_store(layer, scene), scratch, threads, on_tile)
        _build_overviews(scratch, threads)
        # The COG driver takes the scratch file's overviews as they are (OVERVIEWS=AUTO).
        # PREDICTOR=YES: horizontal differencing for integers, floating-point predictor for floats.
        rasterio.shutil.copy(
            scratch, partial, driver="COG", BLOCKSIZE=BLOCK, **CODEC_OPTIONS[compression], PREDICTOR="YES",
            OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE", NUM_THREADS=str(threads), BIGTIFF="IF_SAFER",
        )
        publish(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        scratch.unlink(missing_ok=True)
        release_freed_memory()
    return destination
