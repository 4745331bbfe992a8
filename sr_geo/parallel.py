"""Per-tile work on threads: one dask task per tile, each reporting its id when done.

Tiling and export both do the same thing to every tile (read a window, convert, write the tile's own
part of the result) and spend most of it in GDAL, Blosc and numpy, which release the GIL: threads
over the cores are enough, and dask's threaded scheduler runs them without a hand-made pool.
"""

from __future__ import annotations

from collections.abc import Callable

import dask
from dask.callbacks import Callback


def for_each_tile(
    work: Callable[[int], int],
    tile_ids: list[int],
    *,
    workers: int,
    on_tile: Callable[[int], None] | None = None,
) -> None:
    """Run `work(tile_id)` (which returns the id) for every tile on `workers` threads."""
    tasks = [dask.delayed(work)(tile_id) for tile_id in tile_ids]
    with _Progress(on_tile):
        dask.compute(*tasks, scheduler="threads", num_workers=workers)


class _Progress(Callback):
    """Reports each finished tile id to `on_tile` (dask's own callback mechanism)."""

    def __init__(self, on_tile: Callable[[int], None] | None) -> None:
        super().__init__()
        self.on_tile = on_tile

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if self.on_tile is not None and isinstance(result, int):
            self.on_tile(result)
