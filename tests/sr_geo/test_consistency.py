"""Back-projection: outputs reproduce their inputs under the sensor model, and tiles stay seam-free."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smooth_texture
from sr_geo.consistency import BackProjection
from sr_geo.degrade import SensorModel
from sr_geo.grid import area_downsample
from sr_geo.inference import Normalisation, TilePredictor, predict_whole
from sr_geo.inference_options import InferenceOptions
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


# Stacks: every frame at its own shift (`BackProjection.project_frames`).

SHIFTS = torch.tensor([[[0.0, 0.0], [0.5, -0.25], [-0.25, 0.5], [0.25, 0.25]]])  # (1, T, 2) LR pixels


def _frames(hr: torch.Tensor, sensor: SensorModel, shifts: torch.Tensor) -> torch.Tensor:
    """The frames the training synthesis makes of `hr` (1, C, sH, sW): the PSF centred at each shift
    from the frames' mean, then the block mean (not the projection's own strided sampler)."""
    from sr_geo.training.temporal import shifted_blur

    relative = (shifts[0] - shifts[0].mean(dim=0)) * sensor.scale
    return area_downsample(shifted_blur(hr[0].double(), sensor.psf_sigma, relative.double()), sensor.scale)[None].float()


def test_the_frames_sampler_and_its_spread_are_adjoint():
    from sr_geo.consistency import _footprint_taps, _sample, _spread

    taps = _footprint_taps(SensorModel(4).psf_sigma, SHIFTS.double() * 4, 4)
    generator = torch.Generator().manual_seed(0)
    y = torch.zeros(1, 2, 160, 160, dtype=torch.float64)
    y[..., 48:112, 48:112] = torch.randn(1, 2, 64, 64, generator=generator, dtype=torch.float64)
    r = torch.zeros(1, 4, 2, 40, 40, dtype=torch.float64)
    r[..., 12:28, 12:28] = torch.randn(1, 4, 2, 16, 16, generator=generator, dtype=torch.float64)
    assert float((_sample(y, taps, 4) * r).sum()) == pytest.approx(float((y * _spread(r, taps, 4)).sum()), rel=1e-12)


def test_the_frames_sampler_is_the_sensor_model_at_each_shift():
    from sr_geo.consistency import _footprint_taps, _sample

    sensor = SensorModel(4)
    hr = torch.from_numpy(smooth_texture((1, 2, 128, 128), seed=4)).float()
    taps = _footprint_taps(sensor.psf_sigma, (SHIFTS - SHIFTS.mean(dim=1, keepdim=True)) * 4, 4)
    inner = (..., slice(4, -4), slice(4, -4))  # away from the reflected border
    assert torch.allclose(_sample(hr, taps, 4)[inner], _frames(hr, sensor, SHIFTS)[inner], atol=1e-5)


def test_projecting_onto_shifted_frames_recovers_detail_no_single_frame_holds():
    """Noise-free frames at four shifts under the PSF the projection assumes: starting from bicubic of
    their mean, the output comes closer to the ground than any one frame allows and agrees with every frame."""
    sensor = SensorModel(4)
    hr = torch.from_numpy(4 * smooth_texture((1, 1, 192, 192), seed=5)).float()
    frames = _frames(hr, sensor, SHIFTS)
    valid = torch.ones(1, 4, 48, 48, dtype=torch.bool)
    start = bicubic_upsample(frames.mean(dim=1), 4)
    single = BackProjection(sensor, 50).project(bicubic_upsample(frames[:, 0], 4), frames[:, 0], valid[:, 0])
    fused = BackProjection(sensor, 50).project_frames(start, frames, valid, SHIFTS)
    inner = (..., slice(32, -32), slice(32, -32))

    def rmse(a):
        return float((a[inner] - hr[inner]).pow(2).mean().sqrt())

    def residual(y):
        return float((_frames(y, sensor, SHIFTS) - frames)[..., 8:-8, 8:-8].pow(2).mean().sqrt())

    assert rmse(fused) < 0.8 * rmse(single) and rmse(fused) < 0.7 * rmse(start)
    assert residual(fused) < residual(start) / 5


def test_invalid_frame_pixels_exert_no_pull():
    sensor = SensorModel(2)
    frames = torch.zeros(1, 3, 1, 20, 20)
    valid = torch.ones(1, 3, 20, 20, dtype=torch.bool)
    valid[0, :, 10, 10] = False
    valid[0, 1] = False  # a frame entirely cloudy
    filled = frames.clone()
    filled[0, :, :, 10, 10] = 100.0
    filled[0, 1] = -50.0
    y = torch.zeros(1, 1, 40, 40)
    shifts = torch.tensor([[[0.0, 0.0], [0.3, 0.1], [-0.2, 0.4]]])
    projection = BackProjection(sensor, 4)
    assert torch.equal(projection.project_frames(y, filled, valid, shifts), projection.project_frames(y, frames, valid, shifts))


def test_content_beyond_the_frames_radius_moves_the_centre_less_than_the_seam_tolerance():
    """Cutting the stack to the window of `frames_radius` around a pixel, as a tile boundary does, changes
    its output by less than the tolerance, on probes of PROBE_STD contrast; half the radius does not."""
    from sr_geo.models.receptive import PROBE_STD, SEAM_TOLERANCE

    sensor, scale = SensorModel(4), 4
    projection = BackProjection(sensor, 20)
    radius = projection.frames_radius
    size = 4 * radius + 1
    generator = torch.Generator().manual_seed(1)
    frames = PROBE_STD * torch.randn(1, 4, 1, size, size, generator=generator)
    start = PROBE_STD * torch.randn(1, 1, scale * size, scale * size, generator=generator)
    valid = torch.ones(1, 4, size, size, dtype=torch.bool)
    centre = 2 * radius

    def block(at):
        return slice(scale * at, scale * (at + 1))

    def cut(r):
        window, hr_window = slice(centre - r, centre + r + 1), slice(scale * (centre - r), scale * (centre + r + 1))
        out = projection.project_frames(start[..., hr_window, hr_window], frames[..., window, window],
                                        valid[..., window, window], SHIFTS)
        return out[..., block(r), block(r)]

    full = projection.project_frames(start, frames, valid, SHIFTS)[..., block(centre), block(centre)]
    assert float((cut(radius) - full).abs().max()) < SEAM_TOLERANCE
    assert float((cut(radius // 2) - full).abs().max()) > SEAM_TOLERANCE
