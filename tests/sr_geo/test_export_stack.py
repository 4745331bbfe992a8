"""Which output pixels of a time stack are valid: the frames the model saw decide (`sr_geo.export`).

A temporal model fuses every frame, so its output is valid wherever any frame observed the ground and
nodata only where none did; a single-image model sees only the clearest frame, so its output is valid
exactly where that frame is. Library path (no Ray, no Prefect), tiny synthetic frames on one UTM grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from conftest import smooth_texture, write_raster
from sr_geo.export import export_cog
from sr_geo.inference import TilePredictor
from sr_geo.models.bicubic import Bicubic
from sr_geo.models.rnn import RNN
from sr_geo.plan import plan_tiles
from sr_geo.stack import inspect_stack, record_stack
from sr_geo.store import TileStore
from sr_geo.tiler import tile_stack

# 20 m pixels, upper-left corner at (600000 E, 5000000 N), UTM 33N.
CRS = "EPSG:32633"
TRANSFORM = Affine(20.0, 0.0, 600000.0, 0.0, -20.0, 5000000.0)
HEIGHT, WIDTH, SCALE = 40, 48, 2
# Each frame's own hole (row and column slices), disjoint from the others; frame 1 has the smallest,
# so it is the clearest (and not the first, which is what export used to take).
HOLES = [
    (slice(2, 16), slice(2, 20)),
    (slice(18, 24), slice(22, 30)),
    (slice(26, 36), slice(32, 44)),
]
EVERY_FRAME_MISSING = (slice(34, 40), slice(0, 6))  # a corner no acquisition saw


def frame_validity() -> np.ndarray:
    """(frames, H, W): what each synthetic acquisition observed."""
    valid = np.ones((len(HOLES), HEIGHT, WIDTH), bool)
    for frame, hole in enumerate(HOLES):
        valid[(frame, *hole)] = False
        valid[(frame, *EVERY_FRAME_MISSING)] = False
    return valid


def write_frames(folder: Path, encoding: str) -> list[str]:
    """Three dated frames whose invalid pixels are a nodata value (uint16) or an internal mask (float32)."""
    paths = []
    for frame, valid in enumerate(frame_validity()):
        data = 100 + 3000 * smooth_texture((2, HEIGHT, WIDTH), seed=10 + frame)
        path = folder / f"frame_2021010{frame + 1}.tif"
        if encoding == "nodata":
            data = np.where(valid, data.round(), 0).astype("uint16")
            write_raster(path, data, nodata=0, transform=TRANSFORM, crs=CRS)
        else:
            write_raster(path, data.astype("float32"), mask=valid, transform=TRANSFORM, crs=CRS)
        paths.append(str(path))
    return paths


def exported(paths: list[str], work: Path, model_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile, predict and export the stack with `model_name`: (COG pixels, COG validity, store output)."""
    stack = inspect_stack(paths)
    plan = plan_tiles(HEIGHT, WIDTH, tile=16, halo=4, scale=SCALE)
    url = str(work / f"{model_name}.zarr")
    store = TileStore.create(url, scene=stack.scene, plan=plan,
                             key=stack.run_key(model_name, "none", SCALE, 16, 4, "{}"),
                             model_attrs={"name": model_name, "weights_sha256": "none", "receptive_radius": 4},
                             frames=len(stack.frames))
    record_stack(store, stack)
    tile_stack(url, workers=1)
    torch.manual_seed(0)
    model = RNN(SCALE, feats=8, blocks=1, encoder_blocks=1) if model_name == "rnn" else Bicubic(SCALE)
    TilePredictor(url, model.eval(), torch.device("cpu")).predict(list(range(plan.n_tiles)))
    store = TileStore.open(url, mode="r")
    cog = export_cog(store, work / f"{model_name}.tif", work, threads=1)
    with rasterio.open(cog) as out:
        assert out.transform == TRANSFORM * Affine.scale(1 / SCALE) and out.crs == CRS
        return out.read(), out.dataset_mask() > 0, store.group["output"][:]


def upsampled(mask: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(mask, SCALE, axis=0), SCALE, axis=1)


@pytest.mark.parametrize("encoding", ["nodata", "mask"])
def test_temporal_output_is_valid_wherever_any_frame_is(tmp_path, encoding):
    values, valid, fused = exported(write_frames(tmp_path, encoding), tmp_path, "rnn")
    union = frame_validity().any(axis=0)
    assert union.sum() == HEIGHT * WIDTH - 36  # only the corner is missing everywhere
    np.testing.assert_array_equal(valid, upsampled(union))
    # Where only some frames saw the ground (each frame's own hole, the earliest frame's included),
    # the fused values are written, not nodata.
    for hole in HOLES:
        rows, cols = (slice(s.start * SCALE, s.stop * SCALE) for s in hole)
        assert valid[rows, cols].all()
        expected = np.rint(fused[:, rows, cols]) if encoding == "nodata" else fused[:, rows, cols]
        np.testing.assert_array_equal(values[:, rows, cols], expected.astype(values.dtype))
    if encoding == "nodata":
        assert (values[:, ~valid] == 0).all() and (values[:, valid] != 0).all()


@pytest.mark.parametrize("encoding", ["nodata", "mask"])
def test_single_image_output_is_valid_where_the_clearest_frame_is(tmp_path, encoding):
    values, valid, _ = exported(write_frames(tmp_path, encoding), tmp_path, "bicubic")
    clearest = frame_validity()[1]
    np.testing.assert_array_equal(valid, upsampled(clearest))
    if encoding == "nodata":
        assert (values[:, ~valid] == 0).all() and (values[:, valid] != 0).all()
