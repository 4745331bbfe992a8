"""The validation split, by location: no place contributes to both training and validation.

Each raster's ground is cut into square cells on a lattice fixed in its place's coordinates (the
CRS, or the file itself when it has no georeferencing). Every raster of a place shares the lattice
and the cell size (`cell_patches` patch footprints of the place's coarsest pixel), so all dates of a
time series and all resolutions of one scene (a 15 m pan band and the 30 m bands) hold out the same
ground. Per place, of the cells at least half covered by a raster, those with the lowest seeded hash
are held out, `val_fraction` of them and at least one; a place of fewer than MIN_CELLS such cells is
too small to give up a cell and trains whole.
Training windows keep a guard band of one patch footprint from every held-out cell, which also
absorbs sub-pixel misregistration between dates; validation windows lie wholly inside held-out cells.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from sr_geo.training.sources import Raster

MIN_CELLS = 4
# Training windows are considered every STRIDE pixels: plenty of distinct patches, a small index.
STRIDE = 2


@dataclass(frozen=True)
class Split:
    """Per raster: top-left corners, (n, 2) int32 (row, col), of training and of validation windows."""

    train: list[np.ndarray]
    val: list[np.ndarray]


def split_rasters(rasters: list[Raster], footprint: int, cell_patches: int, val_fraction: float, seed: int) -> Split:
    """Windows of `footprint` × `footprint` pixels, all valid, on the two sides of a location split."""
    coarsest: dict[str, float] = defaultdict(float)
    for raster in rasters:
        coarsest[raster.place] = max(coarsest[raster.place], raster.pixel_size)
    cell_size = {place: cell_patches * footprint * size for place, size in coarsest.items()}
    lattices = [_cell_indices(raster, cell_size[raster.place]) for raster in rasters]
    covered: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for raster, (rows, cols) in zip(rasters, lattices, strict=True):
        covered[raster.place] |= _mostly_covered(rows, cols, cell_size[raster.place] / raster.pixel_size)
    held = {place: _held_out(place, cells, val_fraction, seed) for place, cells in covered.items()}

    train, val = [], []
    for raster, (rows, cols) in zip(rasters, lattices, strict=True):
        held_out = _lookup(held[raster.place], rows, cols)
        invalid = _window_sums(~raster.valid, footprint)
        near_val = _window_sums(np.pad(held_out, footprint), 3 * footprint)
        inside_val = _window_sums(held_out, footprint) == footprint * footprint
        train.append(_corners((invalid == 0) & (near_val == 0), STRIDE))
        val.append(_disjoint(_corners((invalid == 0) & inside_val, STRIDE), footprint))
    return Split(train, val)


def _cell_indices(raster: Raster, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice row of every pixel row and lattice column of every pixel column (by pixel centre)."""
    height, width = raster.valid.shape
    t = raster.transform
    cols = np.floor((t.c + (np.arange(width) + 0.5) * t.a) / cell).astype(np.int64)
    rows = np.floor((t.f + (np.arange(height) + 0.5) * t.e) / cell).astype(np.int64)
    return rows, cols


def _mostly_covered(rows: np.ndarray, cols: np.ndarray, cell_pixels: float) -> set[tuple[int, int]]:
    """Cells at least half inside the raster: a sliver at the edge would cost a guard band and hold
    no validation window, so only these are candidates for holding out."""
    urows, row_counts = np.unique(rows, return_counts=True)
    ucols, col_counts = np.unique(cols, return_counts=True)
    return {
        (r, c)
        for r, nr in zip(urows.tolist(), row_counts.tolist(), strict=True)
        for c, nc in zip(ucols.tolist(), col_counts.tolist(), strict=True)
        if nr * nc >= 0.5 * cell_pixels**2
    }


def _held_out(place: str, cells: set[tuple[int, int]], val_fraction: float, seed: int) -> set[tuple[int, int]]:
    if len(cells) < MIN_CELLS:
        return set()
    ranked = sorted(cells, key=lambda cell: hashlib.sha256(f"{seed}|{place}|{cell}".encode()).digest())
    return set(ranked[: max(1, round(val_fraction * len(cells)))])


def _lookup(held: set[tuple[int, int]], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose cell is held out."""
    urows, row_index = np.unique(rows, return_inverse=True)
    ucols, col_index = np.unique(cols, return_inverse=True)
    table = np.array([[(r, c) in held for c in ucols.tolist()] for r in urows.tolist()], dtype=bool)
    return table[row_index[:, None], col_index[None, :]]


def _window_sums(mask: np.ndarray, size: int) -> np.ndarray:
    """Count of True in every size × size window, indexed by the window's top-left corner."""
    if mask.shape[0] < size or mask.shape[1] < size:
        return np.zeros((0, 0), dtype=np.int64)
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = mask.cumsum(0).cumsum(1)
    return table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]


def _disjoint(corners: np.ndarray, size: int) -> np.ndarray:
    """Corners of non-overlapping windows, greedily in raster order: validation patches count once."""
    kept: list[tuple[int, int]] = []
    for row, col in corners.tolist():
        if all(abs(row - r) >= size or abs(col - c) >= size for r, c in kept):
            kept.append((row, col))
    return np.array(kept, dtype=np.int32).reshape(-1, 2)


def _corners(allowed: np.ndarray, stride: int) -> np.ndarray:
    rows, cols = np.nonzero(allowed[::stride, ::stride])
    return np.stack([rows * stride, cols * stride], axis=1).astype(np.int32)
