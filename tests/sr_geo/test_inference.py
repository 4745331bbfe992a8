"""Tiled inference equals whole-image inference (no seams), tested without Ray."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from conftest import write_raster, smooth_texture
from sr_geo.errors import InvalidRequestError
from sr_geo.inference import (
    CALL_MEMORY_FRACTION,
    Normalisation,
    TilePredictor,
    call_memory_budget,
    check_tile_fits,
    predict_whole,
    run_model,
    tile_bytes,
)
from sr_geo.inference_options import InferenceOptions
from sr_geo.models.base import SRModel
from sr_geo.models.registry import ARCHITECTURES, ModelSpec, build_model
from sr_geo.plan import plan_tiles
from sr_geo.scene import inspect_scene
from sr_geo.store import RunKey, TileStore
from sr_geo.tiler import tile_scene

CPU = torch.device("cpu")
SEAM_TOLERANCE = 1e-4


@functools.cache
def make_model(name: str, scale: int, bands: int) -> SRModel:
    """Bicubic/Lanczos from the registry; a small untrained CNN with its zero-initialised tail randomised.

    Cached: models are used in eval mode only, and the CNN's theoretical radius is costly to compute.
    """
    if name != "cnn":
        return build_model(ModelSpec(name, scale), bands)
    cls = ARCHITECTURES["cnn"].load()
    kwargs = {"scale": scale, "feats": 8, "blocks": 2}
    if "bands" in inspect.signature(cls).parameters:  # older, band-specific constructor
        kwargs["bands"] = bands
    torch.manual_seed(0)
    model = cls(**kwargs)
    with torch.no_grad():
        model.tail.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
        model.tail.bias.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(2))
    return model.eval()


def scene_raster(tmp_path: Path, height: int = 75, width: int = 90, bands: int = 3
                 ) -> tuple[Path, np.ndarray, np.ndarray]:
    """float32 texture in ~[0, 255] with white detail (so seams would show) and a masked-out block."""
    rng = np.random.default_rng(7)
    data = (230 * smooth_texture((bands, height, width), seed=7) + rng.uniform(0, 25, (bands, height, width)))
    data = data.astype("float32")
    mask = np.ones((height, width), dtype=bool)
    mask[20:31, 40:47] = False
    path = write_raster(tmp_path / "scene.tif", data, mask=mask)
    return path, data, mask


def tiled_store(path: Path, url: Path, *, tile: int, halo: int, scale: int, name: str) -> TileStore:
    scene = inspect_scene(str(path))
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=tile, halo=halo, scale=scale)
    key = RunKey(scene.path, scene.size_bytes, scene.mtime, name, "none", scale, tile, halo)
    TileStore.create(str(url), scene=scene, plan=plan, key=key,
                     model_attrs={"name": name, "weights_sha256": "none", "receptive_radius": halo})
    tile_scene(str(url), str(path), workers=2)
    return TileStore.open(str(url))


def tiled_and_whole(tmp_path: Path, model: SRModel, *, tile: int, halo: int
                    ) -> tuple[np.ndarray, np.ndarray, TileStore]:
    path, data, mask = scene_raster(tmp_path)
    store = tiled_store(path, tmp_path / "run.zarr", tile=tile, halo=halo, scale=model.scale, name=model.arch)
    predictor = TilePredictor(str(tmp_path / "run.zarr"), model, CPU)
    ids = list(range(store.plan.n_tiles))
    for start in range(0, len(ids), 5):  # uneven batches, the last one short
        assert predictor.predict(ids[start : start + 5]) == ids[start : start + 5]
    tiled = store.group["output"][:]
    whole = predict_whole(model, data, mask, halo, predictor.norm, CPU)
    return tiled, whole, store


SEAM_CASES = [
    (name, scale, tile)
    for name, scale in [("bicubic", 2), ("bicubic", 4), ("lanczos", 2), ("lanczos", 4), ("cnn", 2)]
    for tile in (20, 36)
] + [("cnn", 4, 36)]  # the ×4 CNN costs the most: one tile size is enough there


@pytest.mark.parametrize(("name", "scale", "tile"), SEAM_CASES)
def test_tiled_inference_equals_whole_image_inference(tmp_path: Path, name: str, scale: int, tile: int) -> None:
    model = make_model(name, scale, bands=3)
    halo = model.theoretical_radius
    tiled, whole, store = tiled_and_whole(tmp_path, model, tile=tile, halo=halo)
    assert 75 % tile and 90 % tile and store.plan.n_tiles > 4  # edge tiles are partial
    assert tiled.shape == whole.shape == (3, 75 * scale, 90 * scale)
    assert not np.isnan(tiled).any()  # every chunk written
    assert np.abs(tiled - whole).max() <= SEAM_TOLERANCE
    assert store.pending("done") == []


def test_randomised_cnn_is_not_bicubic(tmp_path: Path) -> None:
    """Guard for the seam test: with its tail randomised the CNN's whole receptive field matters."""
    path, data, mask = scene_raster(tmp_path)
    norm = Normalisation(np.full(3, 120.0), np.full(3, 60.0))
    cnn = make_model("cnn", 2, bands=3)
    bicubic = make_model("bicubic", 2, bands=3)
    assert cnn.theoretical_radius > bicubic.theoretical_radius
    diff = predict_whole(cnn, data, mask, 8, norm, CPU) - predict_whole(bicubic, data, mask, 8, norm, CPU)
    assert np.abs(diff).max() > 1.0


@pytest.mark.parametrize("name", ["bicubic", "cnn"])
def test_too_small_halo_shows_seams(tmp_path: Path, name: str) -> None:
    """The seam comparison is sensitive: without the halo, tile borders differ from the whole image."""
    model = make_model(name, 2, bands=3)
    tiled, whole, _ = tiled_and_whole(tmp_path, model, tile=20, halo=max(0, model.theoretical_radius // 2 - 1))
    assert np.abs(tiled - whole).max() > 100 * SEAM_TOLERANCE


def test_prediction_is_idempotent_and_independent_of_batching(tmp_path: Path) -> None:
    model = make_model("lanczos", 2, bands=3)
    path, _, _ = scene_raster(tmp_path)
    store = tiled_store(path, tmp_path / "run.zarr", tile=20, halo=model.theoretical_radius, scale=2, name="lanczos")
    predictor = TilePredictor(str(tmp_path / "run.zarr"), model, CPU)
    ids = list(range(store.plan.n_tiles))
    predictor.predict(ids)
    all_at_once = store.group["output"][:]
    for tile_id in reversed(ids):  # one by one, in another order, over the written output
        predictor.predict([tile_id])
    np.testing.assert_array_equal(store.group["output"][:], all_at_once)


def test_model_calls_hold_whole_tiles_up_to_the_band_image_and_memory_budgets(tmp_path: Path) -> None:
    """Models fold bands into the batch: a batch is cut into calls of at most `batch_size × 4` band
    images and of at most the memory budget (whole tiles, one at least), and the output does not depend
    on the cut."""
    model = make_model("cnn", 2, bands=3)
    path, _, _ = scene_raster(tmp_path)
    url = str(tmp_path / "run.zarr")
    store = tiled_store(path, Path(url), tile=36, halo=model.theoretical_radius, scale=2, name="cnn")
    ids = list(range(store.plan.n_tiles))
    one_tile = tile_bytes(model, 3, 1, store.plan.region_shape)
    assert one_tile == 10 * model.feats * 3 * store.plan.region_shape[0] * store.plan.region_shape[1] * 4
    calls: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(lambda _, args: calls.append(tuple(args[0].shape[:2])))
    try:
        TilePredictor(url, model, CPU).predict(ids)  # default: 16 band images, 5 three-band tiles
        whole_batches = store.group["output"][:]
        assert calls == [(5, 3), (4, 3)]
        calls.clear()
        TilePredictor(url, model, CPU, memory_budget=2.5 * one_tile).predict(ids)
        assert calls == [(2, 3)] * 4 + [(1, 3)]
        calls.clear()
        TilePredictor(url, model, CPU, batch_size=1).predict(ids[:2])  # fewer band images than a tile has: one tile
        assert calls == [(1, 3)] * 2
        calls.clear()
        TilePredictor(url, model, CPU, memory_budget=0.5 * one_tile).predict(ids[:2])  # never less than a tile
        assert calls == [(1, 3)] * 2
    finally:
        hook.remove()
    np.testing.assert_array_equal(store.group["output"][:], whole_batches)


def test_temporal_models_count_frames_in_a_tiles_memory() -> None:
    from sr_geo.models.cnn import CNN
    from sr_geo.models.rnn import RNN

    rnn, cnn = RNN(4), CNN(4)  # the shipped sizes
    assert tile_bytes(rnn, 4, 8, (10, 10)) > tile_bytes(rnn, 4, 1, (10, 10)) > tile_bytes(cnn, 4, 8, (10, 10))
    assert tile_bytes(cnn, 4, 8, (10, 10)) == tile_bytes(cnn, 4, 1, (10, 10)) == 320 * 4 * 1600  # frames: not its


def test_model_calls_take_a_share_of_the_actors_host_memory() -> None:
    assert call_memory_budget(CPU, 2**30, 0.0) == CALL_MEMORY_FRACTION * 2**30


def test_a_tile_larger_than_an_actor_can_hold_is_refused_with_a_tile_that_fits() -> None:
    from sr_geo.models.cnn import CNN

    cnn = CNN(4)  # the shipped size
    budget = 8 * 2**30
    check_tile_fits(cnn, 4, 1, plan_tiles(5000, 5000, tile=256, halo=10, scale=4), budget)  # 1.6 GiB
    with pytest.raises(InvalidRequestError) as info:
        check_tile_fits(cnn, 4, 1, plan_tiles(5000, 5000, tile=2048, halo=10, scale=4), budget)  # 82 GiB
    message = str(info.value)
    assert "\n" not in message and "8.0 GiB" in message and "81.6 GiB" in message
    suggested = int(message.split("--tile ")[-1].split(" ")[0])
    assert 256 < suggested < 2048
    check_tile_fits(cnn, 4, 1, plan_tiles(5000, 5000, tile=suggested, halo=10, scale=4), budget)
    with pytest.raises(InvalidRequestError, match="lower --halo"):
        check_tile_fits(cnn, 4, 1, plan_tiles(5000, 5000, tile=8, halo=1024, scale=4), budget)


def test_predictor_normalises_with_the_store_statistics(tmp_path: Path) -> None:
    path, data, mask = scene_raster(tmp_path)
    tiled_store(path, tmp_path / "run.zarr", tile=32, halo=2, scale=2, name="bicubic")
    predictor = TilePredictor(str(tmp_path / "run.zarr"), make_model("bicubic", 2, 3), CPU)
    valid = data[:, mask].astype(np.float64)
    np.testing.assert_allclose(predictor.norm.mean, valid.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(predictor.norm.std, valid.std(axis=1), rtol=1e-8)


def test_normalisation_round_trips_valid_pixels_and_zeroes_invalid_ones() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 10000, size=(2, 3, 8, 9)).astype("uint16")
    valid = rng.random((2, 8, 9)) > 0.3
    norm = Normalisation(np.array([5000.0, 100.0, 7.0]), np.array([2000.0, 10.0, 1.0]))
    x = norm.apply(pixels, valid)
    assert x.dtype == np.float32 and x.shape == pixels.shape
    np.testing.assert_array_equal(np.broadcast_to(~valid[:, None], x.shape) & (x != 0), False)
    expected = (pixels.astype(np.float64) - norm.mean[:, None, None]) / norm.std[:, None, None]
    np.testing.assert_allclose(x[np.broadcast_to(valid[:, None], x.shape)],
                               expected[np.broadcast_to(valid[:, None], x.shape)], rtol=1e-6, atol=1e-6)
    back = norm.invert(x)
    np.testing.assert_allclose(np.where(valid[:, None], back, pixels), pixels, rtol=1e-6, atol=1e-3)
    # An invalid pixel is shown to the model as the band mean.
    hidden = back[0][:, ~valid[0]]  # (bands, invalid pixels of the first image)
    np.testing.assert_allclose(hidden, np.broadcast_to(norm.mean[:, None], hidden.shape), rtol=1e-6)


def test_predict_whole_of_a_constant_image_is_that_constant(tmp_path: Path) -> None:
    pixels = np.full((2, 20, 24), 321.0, dtype=np.float32)
    valid = np.ones((20, 24), dtype=bool)
    norm = Normalisation(np.array([300.0, 400.0]), np.array([20.0, 50.0]))
    for name in ("bicubic", "lanczos"):
        out = predict_whole(make_model(name, 4, 2), pixels, valid, 3, norm, CPU)
        assert out.shape == (2, 80, 96)
        np.testing.assert_allclose(out, 321.0, atol=1e-3)


def test_source_raster_round_trip(tmp_path: Path) -> None:
    """The helper raster really is float32 in ~[0, 255] with a mask (what the seam tests claim)."""
    path, data, mask = scene_raster(tmp_path)
    with rasterio.open(path) as ds:
        assert ds.dtypes[0] == "float32"
        np.testing.assert_array_equal(ds.read(), data)
        np.testing.assert_array_equal(ds.dataset_mask() > 0, mask)
    assert 0 <= data.min() and data.max() <= 256


@pytest.mark.parametrize("name", ["cnn", "gan", "rnn"])
def test_bfloat16_stays_close_to_float32_and_auto_is_float32_on_cpu(name: str) -> None:
    """The shipped weights in bfloat16 (the GPU default, and an option on CPUs with native support) within
    a few hundredths of a band's std of float32 on a smooth scene; auto on a CPU is float32 exactly."""
    model = build_model(ModelSpec(name, 4), 3)
    texture = smooth_texture((3, 40, 40), seed=3).astype(np.float32)
    x = ((texture - texture.mean()) / texture.std())[None]
    valid = np.ones((1, 40, 40), dtype=bool)
    shifts = None
    if model.temporal:
        x, valid = np.repeat(x[:, None], 3, axis=1), np.ones((1, 3, 40, 40), dtype=bool)
        shifts = np.array([[0.0, 0.0], [0.25, -0.25], [-0.25, 0.25]], dtype=np.float32)
    reference, _ = run_model(model, x, valid, CPU, InferenceOptions(), shifts, precision="float32")
    auto, _ = run_model(model, x, valid, CPU, InferenceOptions(), shifts)
    half, _ = run_model(model, x, valid, CPU, InferenceOptions(), shifts, precision="bfloat16")
    np.testing.assert_array_equal(auto, reference)
    assert half.dtype == np.float32
    difference = np.abs(half - reference)
    assert 0 < difference.mean() < 0.03 and difference.max() < 0.5


@pytest.mark.parametrize(("name", "bound"), [("cnn", 0.03), ("gan", 0.1)])
def test_tiling_in_bfloat16_stays_close_to_the_whole_image(tmp_path: Path, name: str, bound: float) -> None:
    """Exact tiling is a float32 property: in bfloat16 each layer's rounding follows how the convolution
    ordered its sums, which varies with the input's size (measured 0.013 and 0.042 of the output's std).
    A small scene: on a CPU without native bfloat16 it is emulated, about ten times slower."""
    model = build_model(ModelSpec(name, 4), 3)
    path, data, mask = scene_raster(tmp_path, height=48, width=60)
    halo = model.receptive_radius
    store = tiled_store(path, tmp_path / "run.zarr", tile=24, halo=halo, scale=4, name=name)
    predictor = TilePredictor(str(tmp_path / "run.zarr"), model, CPU, precision="bfloat16")
    predictor.predict(list(range(store.plan.n_tiles)))
    tiled = store.group["output"][:]
    whole = predict_whole(model, data, mask, halo, predictor.norm, CPU, precision="bfloat16")
    both = np.isfinite(tiled) & np.isfinite(whole)
    error = np.abs(tiled - whole)[both].max() / whole[both].std()
    assert error < bound
