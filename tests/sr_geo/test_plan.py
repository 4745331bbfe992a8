from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from sr_geo.plan import BORDER, TilePlan, intersect, plan_tiles

SIZES = [(1, 1), (3, 500), (257, 300), (1000, 999)]
TILES = [64, 100, 256]
HALOS = [0, 1, 2, 7, 20]


def window_bounds(w: Window) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of a window, as ints."""
    r0, c0 = int(w.row_off), int(w.col_off)
    return r0, c0, r0 + int(w.height), c0 + int(w.width)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_cores_partition_the_raster_exactly(height: int, width: int, tile: int) -> None:
    for halo in HALOS:
        plan = plan_tiles(height, width, tile=tile, halo=halo, scale=2)
        coverage = np.zeros((height, width), dtype=np.int32)
        for t in plan.tiles():
            r0, c0, r1, c1 = window_bounds(t.core)
            assert 0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width, t
            coverage[r0:r1, c0:c1] += 1
        assert coverage.min() == 1 and coverage.max() == 1, (height, width, tile, halo)
        assert plan.n_tiles == plan.rows * plan.cols == -(-height // min(tile, height)) * -(-width // min(tile, width))


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_regions_have_one_shape_and_contain_core_plus_halo(height: int, width: int, tile: int) -> None:
    for halo in HALOS:
        plan = plan_tiles(height, width, tile=tile, halo=halo, scale=3)
        th, tw = min(tile, height), min(tile, width)
        assert (plan.tile_height, plan.tile_width) == (th, tw)
        assert plan.region_shape == (th + 2 * halo, tw + 2 * halo)
        for t in plan.tiles():
            assert (int(t.region.height), int(t.region.width)) == plan.region_shape
            cr0, cc0, cr1, cc1 = window_bounds(t.core)
            rr0, rc0, rr1, rc1 = window_bounds(t.region)
            # The core sits `halo` pixels inside the region's top-left corner ...
            assert (cr0 - rr0, cc0 - rc0) == (halo, halo) == t.pad_before
            # ... and at least `halo` pixels inside its bottom-right corner (more for the last row/column).
            assert rr1 - cr1 >= halo and rc1 - cc1 >= halo
            # Tiles are numbered row-major.
            assert t.id == t.row * plan.cols + t.col
            assert (cr0, cc0) == (t.row * th, t.col * tw)


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize(("height", "width", "tile"), [(257, 300, 64), (1000, 999, 256), (3, 500, 100), (1, 1, 64)])
def test_output_chunk_is_core_times_scale_and_each_core_owns_one_chunk(
    height: int, width: int, tile: int, scale: int
) -> None:
    plan = plan_tiles(height, width, tile=tile, halo=5, scale=scale)
    assert plan.output_shape == (height * scale, width * scale)
    assert plan.output_chunk == (plan.tile_height * scale, plan.tile_width * scale)
    ch, cw = plan.output_chunk
    owners = np.zeros((-(-plan.output_shape[0] // ch), -(-plan.output_shape[1] // cw)), dtype=np.int32)
    for t in plan.tiles():
        r0, c0, r1, c1 = (v * scale for v in window_bounds(t.core))
        # The output core starts on a chunk boundary and fills the chunk (clipped at the array edge).
        assert r0 % ch == 0 and c0 % cw == 0
        assert r1 == min(r0 + ch, plan.output_shape[0]) and c1 == min(c0 + cw, plan.output_shape[1])
        owners[r0 // ch, c0 // cw] += 1
    assert (owners == 1).all()


@pytest.mark.parametrize("halo", HALOS)
@pytest.mark.parametrize(("height", "width", "tile"), [(1, 1, 64), (3, 500, 64), (257, 300, 100), (1000, 999, 256)])
def test_intersect_padding_restores_the_region(height: int, width: int, tile: int, halo: int) -> None:
    """Padding the in-raster part by intersect's pads (BORDER) rebuilds the region of the padded raster.

    Checked on coordinate rasters, so a value is the (row, col) it came from: inside the halo band
    around the raster, the region must hold exactly what np.pad(raster, halo, BORDER) holds.
    """
    plan = plan_tiles(height, width, tile=tile, halo=halo, scale=2)
    rows = np.arange(height)
    cols = np.arange(width)
    padded_rows = np.pad(rows, halo, mode=BORDER)
    padded_cols = np.pad(cols, halo, mode=BORDER)
    for t in plan.tiles():
        inside, ((top, bottom), (left, right)) = intersect(t.region, height, width)
        ir0, ic0, ir1, ic1 = window_bounds(inside)
        rr0, rc0, rr1, rc1 = window_bounds(t.region)
        assert 0 <= ir0 <= ir1 <= height and 0 <= ic0 <= ic1 <= width
        assert min(top, bottom, left, right) >= 0
        assert (ir0 - top, ir1 + bottom, ic0 - left, ic1 + right) == (rr0, rr1, rc0, rc1)
        got_rows = np.pad(rows[ir0:ir1], (top, bottom), mode=BORDER)
        got_cols = np.pad(cols[ic0:ic1], (left, right), mode=BORDER)
        assert got_rows.shape == (plan.region_shape[0],) and got_cols.shape == (plan.region_shape[1],)
        # Compare where the region overlaps the halo band [-halo, size + halo) of the padded raster.
        r_lo, r_hi = max(rr0, -halo), min(rr1, height + halo)
        c_lo, c_hi = max(rc0, -halo), min(rc1, width + halo)
        np.testing.assert_array_equal(got_rows[r_lo - rr0 : r_hi - rr0], padded_rows[r_lo + halo : r_hi + halo])
        np.testing.assert_array_equal(got_cols[c_lo - rc0 : c_hi - rc0], padded_cols[c_lo + halo : c_hi + halo])


def test_intersect_of_interior_region_needs_no_padding() -> None:
    inside, pads = intersect(Window(10, 20, 30, 40), 100, 100)
    assert inside == Window(10, 20, 30, 40)
    assert pads == ((0, 0), (0, 0))


def test_intersect_hand_computed() -> None:
    # Region rows -3..7, cols 95..105 on a 50 × 100 raster.
    inside, pads = intersect(Window(95, -3, 10, 10), 50, 100)
    assert window_bounds(inside) == (0, 95, 7, 100)
    assert pads == ((3, 0), (0, 5))


def test_plan_shrinks_tile_to_small_rasters() -> None:
    plan = plan_tiles(3, 500, tile=64, halo=4, scale=2)
    assert (plan.tile_height, plan.tile_width) == (3, 64)
    assert (plan.rows, plan.cols) == (1, 8)
    assert plan.region_shape == (11, 72)
    last = plan.tile(plan.n_tiles - 1)
    assert window_bounds(last.core) == (0, 448, 3, 500)


def test_overhead_counts_halo_and_edge_padding() -> None:
    plan = plan_tiles(100, 100, tile=50, halo=5, scale=2)
    assert plan.overhead == pytest.approx(4 * 60 * 60 / (100 * 100))
    assert plan_tiles(64, 64, tile=64, halo=0, scale=4).overhead == 1.0


def test_to_attrs_round_trips() -> None:
    plan = plan_tiles(257, 300, tile=64, halo=7, scale=4)
    assert TilePlan(**plan.to_attrs()) == plan


def test_invalid_plans_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_tiles(10, 10, tile=0, halo=0, scale=2)
    with pytest.raises(ValueError):
        plan_tiles(10, 10, tile=4, halo=-1, scale=2)
    with pytest.raises(ValueError):
        plan_tiles(10, 10, tile=4, halo=0, scale=0)
    plan = plan_tiles(10, 10, tile=4, halo=0, scale=2)
    with pytest.raises(IndexError):
        plan.tile(plan.n_tiles)
    with pytest.raises(IndexError):
        plan.tile(-1)
