"""The per-run Zarr 3 store: input tiles, their statistics, the output image and completion markers.

Layout (one group per run, at a local path or any fsspec URL):

- `input`  (tile, time, band, y, x), source dtype, one chunk per tile (the padded tile region);
- `valid`  (tile, time, y, x), bool, one chunk per tile;
- `stats`  (tile, time, band, 3) float64: count, sum and sum of squares of the tile core's valid
  pixels, from which scene statistics for normalisation are reduced without another pass;
- `output` (band, y, x) float32 on the output grid, chunked so each tile core is exactly one chunk;
- `tiled`, `done` (tile,) uint8 markers, one chunk per tile.

Zarr's unit of writing is the chunk (the shard, with sharding), so every writer owns whole chunks:
a tile writes its own input/valid/stats/output chunks, then its own marker chunk. Many processes can
therefore work on one store at once, and a marker set means the tile's data is complete, which is
what makes retries and resumes safe. Sharding is deliberately off for the same reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import zarr
import zarr.codecs

from sr_geo import __version__
from sr_geo.plan import Tile, TilePlan
from sr_geo.scene import SceneInfo
from sr_geo.storage import configure_zarr

FORMAT = "sr-geo-store/1"
# LZ4 with byte shuffle for every array. Measured on cnn ×4 outputs of real Sentinel-2 crops, against
# bit shuffle: float32 chunks of 640² written 1.03–1.26× and read 1.18–1.37× faster (two runs of
# `python -m benchmarks.run --case store-codecs`) for 3 % more bytes, chunks of 1024² 2× and 4×.
# Near-noise float mantissas barely compress whatever the codec (ratio 1.34 vs 1.38; ZSTD 1.35), so
# speed decides. The output is the bulk of a run's I/O (31 GB for a Sentinel-2 tile at ×4): actors
# write it, export reads it back.
CODEC = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


@dataclass(frozen=True)
class RunKey:
    """Everything that determines the output; a store is reused only when all of it matches."""

    source_path: str
    source_size: int
    source_mtime: float
    model: str
    weights_sha256: str
    scale: int
    tile: int
    halo: int
    inference: str = "{}"  # InferenceOptions as sorted JSON: they change the output too

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def _open_group(url: str, mode: str, storage_options: dict | None) -> zarr.Group:
    configure_zarr()  # before the process's first zarr call, which sizes zarr's thread pool
    return zarr.open_group(url, mode=mode, storage_options=storage_options)


class TileStore:
    """Typed access to one run's Zarr group; opened by path/URL in every process that needs it."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        self.attrs = dict(group.attrs)["sr_geo"]
        self.plan = TilePlan(**self.attrs["plan"])
        self.frames = int(self.attrs["frames"])

    # -- creation and opening -------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        url: str,
        *,
        scene: SceneInfo,
        plan: TilePlan,
        key: RunKey,
        model_attrs: dict,
        frames: int = 1,
        inference: dict | None = None,
        storage_options: dict | None = None,
    ) -> TileStore:
        """Create the arrays, then the attributes: a store without attributes is an aborted create."""
        group = _open_group(url, "w", storage_options)
        n, bands = plan.n_tiles, scene.count
        rh, rw = plan.region_shape
        group.create_array(
            "input", shape=(n, frames, bands, rh, rw), chunks=(1, frames, bands, rh, rw),
            dtype=scene.dtype, compressors=CODEC, fill_value=0,
            dimension_names=("tile", "time", "band", "y", "x"),
        )
        group.create_array(
            "valid", shape=(n, frames, rh, rw), chunks=(1, frames, rh, rw), dtype="bool",
            compressors=CODEC, fill_value=False, dimension_names=("tile", "time", "y", "x"),
        )
        group.create_array(
            "stats", shape=(n, frames, bands, 3), chunks=(1, frames, bands, 3), dtype="float64",
            fill_value=0.0, dimension_names=("tile", "time", "band", "stat"),
        )
        inference = inference or {}
        for layer in ("output", "uncertainty") if inference.get("uncertainty") else ("output",):
            group.create_array(
                layer, shape=(bands, *plan.output_shape), chunks=(bands, *plan.output_chunk),
                dtype="float32", compressors=CODEC, fill_value=np.nan, dimension_names=("band", "y", "x"),
            )
        for marker in ("tiled", "done"):
            group.create_array(marker, shape=(n,), chunks=(1,), dtype="uint8", fill_value=0,
                               dimension_names=("tile",))
        group.attrs["sr_geo"] = {
            "format": FORMAT,
            "version": __version__,
            "run_key": key.digest(),
            "frames": frames,
            "plan": plan.to_attrs(),
            "scene": scene.to_attrs(),
            "crs_wkt": scene.grid.crs,
            "transform": list(scene.grid.transform)[:6],
            "output_transform": list(scene.grid.zoom_in(plan.scale).transform)[:6],
            "band_names": list(scene.band_names),
            "nodata": scene.nodata,
            "dtype": scene.dtype,
            "model": model_attrs,
            "inference": inference,
            "source": {"path": key.source_path, "size": key.source_size, "mtime": key.source_mtime},
        }
        return cls(group)

    @classmethod
    def open(cls, url: str, storage_options: dict | None = None, mode: str = "r+") -> TileStore:
        return cls(_open_group(url, mode, storage_options))

    @classmethod
    def open_or_create(cls, url: str, *, key: RunKey, storage_options: dict | None = None, **create) -> TileStore:
        """Reuse a finished-creating store with the same run key (resume); otherwise start afresh."""
        try:
            group = _open_group(url, "r+", storage_options)
            attrs = dict(group.attrs).get("sr_geo", {})
            if attrs.get("format") == FORMAT and attrs.get("run_key") == key.digest():
                return cls(group)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
            pass
        return cls.create(url, key=key, storage_options=storage_options, **create)

    def claim_precision(self, precision: str) -> int:
        """Record the arithmetic this run's tiles are inferred in; returns how many finished tiles had to be
        redone for it (their done markers cleared).

        Not part of the run key, because "auto" is only resolved once the cluster is known (bfloat16 on a
        GPU, float32 on CPUs); but tiles of two precisions differ by a few hundredths of the output's std,
        which would show as seams, so a run resumed in another precision (a GPU run finished on CPUs)
        redoes its finished tiles. A store from before this record keeps them."""
        before = self.attrs.get("precision")
        if before == precision:
            return 0
        redone = 0 if before is None else self.plan.n_tiles - len(self.pending("done"))
        if redone:
            self.group["done"][:] = 0
        self.attrs = {**self.attrs, "precision": precision}
        self.group.attrs["sr_geo"] = self.attrs
        return redone

    # -- markers --------------------------------------------------------------------------------

    def pending(self, marker: str) -> list[int]:
        """Tile ids whose `marker` ('tiled' or 'done') is not set yet."""
        return np.flatnonzero(self.group[marker][:] == 0).tolist()

    def mark(self, marker: str, tile_id: int) -> None:
        self.group[marker][tile_id] = 1

    # -- tiles ----------------------------------------------------------------------------------

    def write_input(self, tile_id: int, frame: int, data: np.ndarray, valid: np.ndarray, stats: np.ndarray) -> None:
        self.group["input"][tile_id, frame] = data
        self.group["valid"][tile_id, frame] = valid
        self.group["stats"][tile_id, frame] = stats

    def read_inputs(self, tile_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(N, T, B, h, w) pixels and (N, T, h, w) validity for a batch of tiles."""
        index = np.asarray(tile_ids)
        return (
            self.group["input"].get_orthogonal_selection((index,)),
            self.group["valid"].get_orthogonal_selection((index,)),
        )

    def write_output(self, tile: Tile, core: np.ndarray, array: str = "output") -> None:
        """Write a tile's core at output resolution into its own chunk of `array`."""
        s = self.plan.scale
        y0, x0 = int(tile.core.row_off) * s, int(tile.core.col_off) * s
        self.group[array][:, y0 : y0 + core.shape[-2], x0 : x0 + core.shape[-1]] = core

    def band_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band mean and std over every valid core pixel of every frame.

        Computed from the per-tile sums, so it is exact and costs one small read.
        """
        sums = self.group["stats"][:].sum(axis=(0, 1))  # (band, 3)
        count = np.maximum(sums[:, 0], 1.0)
        mean = sums[:, 1] / count
        var = np.maximum(sums[:, 2] / count - mean**2, 0.0)
        std = np.sqrt(var)
        return mean, np.where(std > 0, std, 1.0)

    def valid_pixel_count(self) -> int:
        return int(self.group["stats"][:, :, 0, 0].sum())
