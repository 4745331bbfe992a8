"""Back-projection: outputs reproduce their inputs under the sensor model, and tiles stay seam-free."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smooth_texture
from sr_geo.consistency import BackProjection
from sr_geo.degrade import SensorModel, area_downsample
from sr_geo.inference import InferenceOptions, Normalisation, TilePredictor, predict_whole
from sr_geo.models.bicubic import bicubic_upsample


def _residual_rms(projection: BackProjection, y: torch.Tensor, x: torch.Tensor) -> float:
    return float((x - projection.sensor.degrade(y)).pow(2).mean().sqrt())


@pytest.mark.parametrize("scale", [2, 4])
def test_each_iteration_brings_the_output_closer_to_the_input(scale):
    x = torch.from_numpy(smooth_texture((1, 3, 48, 40), seed=1)).float()
    y = bicubic_upsample(x, scale)
    valid = torch.ones(1, 48, 40, dtype=torch.bool)
    errors = [_residual_rms(BackProjection(SensorModel(scale), n), BackProjection(SensorModel(scale), n).project(y, x, valid), x)
              for n in (0, 1, 4, 16)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < errors[0] / 10


def test_under_a_block_mean_sensor_one_iteration_is_exact():
    """With (almost) no PSF, P = nearest-upsample is D's exact right inverse: one step suffices."""
    sensor = SensorModel(4, mtf_nyquist=0.999)
    x = torch.from_numpy(smooth_texture((1, 2, 16, 16), seed=2)).float()
    y = torch.rand(1, 2, 64, 64)
    projected = BackProjection(sensor, 1).project(y, x, torch.ones(1, 16, 16, dtype=torch.bool))
    assert torch.allclose(area_downsample(projected, 4), x, atol=1e-3)


def test_invalid_pixels_exert_no_pull():
    sensor = SensorModel(2)
    x = torch.zeros(1, 1, 20, 20)
    y = torch.zeros(1, 1, 40, 40)
    x[..., 10, 10] = 100.0  # a fill value, not an observation
    valid = torch.ones(1, 20, 20, dtype=torch.bool)
    valid[0, 10, 10] = False
    assert torch.equal(BackProjection(sensor, 4).project(y, x, valid), y)


@pytest.mark.parametrize(("scale", "tile"), [(2, 24), (4, 20)])
def test_tiled_back_projection_equals_whole_image(make_raster, tmp_path, scale, tile):
    """The halo grows by BackProjection.radius, and tiled output stays equal to whole-image output."""
    import rasterio

    from sr_geo.models.bicubic import Bicubic
    from sr_geo.plan import plan_tiles
    from sr_geo.scene import inspect_scene
    from sr_geo.store import RunKey, TileStore
    from sr_geo.tiler import tile_scene

    options = InferenceOptions(consistency_iterations=3)
    source = make_raster(67, 81, bands=2, dtype="float32", seed=3)
    scene = inspect_scene(str(source))
    model = Bicubic(scale)
    halo = model.receptive_radius + options.extra_radius(scale)
    plan = plan_tiles(67, 81, tile=tile, halo=halo, scale=scale)
    url = str(tmp_path / "run.zarr")
    key = RunKey(str(source), 0, 0.0, "bicubic", "none", scale, tile, halo)
    TileStore.create(url, scene=scene, plan=plan, key=key, model_attrs={"name": "bicubic"},
                     inference=options.to_attrs())
    tile_scene(url, str(source), workers=2)
    TilePredictor(url, model, torch.device("cpu")).predict(list(range(plan.n_tiles)))
    store = TileStore.open(url, mode="r")
    with rasterio.open(source) as ds:
        whole = predict_whole(model, ds.read(), ds.dataset_mask() > 0, halo, Normalisation(*store.band_statistics()),
                              torch.device("cpu"), options)
    tiled = store.group["output"][:]
    plain = predict_whole(model, *_read(source), halo, Normalisation(*store.band_statistics()), torch.device("cpu"))
    assert np.abs(tiled - whole).max() <= 1e-4
    assert np.abs(whole - plain).max() > 1e-3  # back-projection did change the output


def _read(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask() > 0
