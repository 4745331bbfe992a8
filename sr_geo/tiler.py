"""Cut a raster into the store's padded tiles: parallel windowed reads with dask.

Each tile is one dask task that reads only its own window (GDAL decodes just the blocks it needs),
pads it by reflection to the common region shape, and writes its own chunks and marker. Nothing
passes through the caller but tile ids, and tiles already marked are skipped, so tiling resumes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import dask
from dask.callbacks import Callback
import numpy as np
import rasterio

from sr_geo.plan import TilePlan, intersect
from sr_geo.scene import valid_mask
from sr_geo.store import TileStore

class _Readers:
    """One open dataset per thread for one tiling call, all closed when the call ends.

    GDAL handles must not be shared across threads, and dask keeps its thread pools alive between
    calls: scoping the handles to the call means a rewritten file is never read through an old
    handle, and a long archive run never accumulates open files.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._opened: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()

    def get(self) -> rasterio.DatasetReader:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = self._local.ds = rasterio.open(self.path)
            with self._lock:
                self._opened.append(ds)
        return ds

    def close(self) -> None:
        for ds in self._opened:
            ds.close()


def read_region(ds: rasterio.DatasetReader, plan: TilePlan, tile_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The tile's region as (bands, h, w) pixels and (h, w) validity, reflect-padded outside the raster."""
    tile = plan.tile(tile_id)
    inside, pads = intersect(tile.region, plan.height, plan.width)
    data = ds.read(window=inside)
    valid = valid_mask(ds, inside)
    return np.pad(data, ((0, 0), *pads), mode="reflect"), np.pad(valid, pads, mode="reflect")


def core_statistics(data: np.ndarray, valid: np.ndarray, plan: TilePlan, tile_id: int) -> np.ndarray:
    """Count, sum and sum of squares per band over the core's valid pixels (cores never overlap)."""
    tile = plan.tile(tile_id)
    (r0, c0), (h, w) = tile.pad_before, (int(tile.core.height), int(tile.core.width))
    core = data[:, r0 : r0 + h, c0 : c0 + w].astype(np.float64)
    mask = valid[r0 : r0 + h, c0 : c0 + w]
    values = core[:, mask]
    return np.stack([np.full(len(values), values.shape[1], dtype=np.float64), values.sum(1), (values**2).sum(1)], axis=1)


def _tile_one(store: TileStore, readers: _Readers, tile_id: int, frame: int = 0) -> int:
    data, valid = read_region(readers.get(), store.plan, tile_id)
    store.write_input(tile_id, frame, data, valid, core_statistics(data, valid, store.plan, tile_id))
    store.mark("tiled", tile_id)
    return tile_id


def tile_scene(
    store_url: str,
    source: str,
    *,
    workers: int,
    storage_options: dict | None = None,
    on_tile: Callable[[int], None] | None = None,
    tile_ids: list[int] | None = None,
) -> int:
    """Tile `tile_ids` (default: every pending tile) of `store_url` from `source`; returns the count.

    Several processes may tile one store at once with disjoint `tile_ids`: each tile owns its chunks.
    """
    store = TileStore.open(store_url, storage_options)
    pending = store.pending("tiled") if tile_ids is None else tile_ids
    readers = _Readers(source)
    try:
        tasks = [dask.delayed(_tile_one)(store, readers, tid) for tid in pending]
        with _Progress(on_tile):
            dask.compute(*tasks, scheduler="threads", num_workers=workers)
    finally:
        readers.close()
    return len(pending)


class _Progress(Callback):
    """Reports each finished tile id to `on_tile` (dask's own callback mechanism)."""

    def __init__(self, on_tile: Callable[[int], None] | None) -> None:
        super().__init__()
        self.on_tile = on_tile

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if self.on_tile is not None and isinstance(result, int):
            self.on_tile(result)
