"""The Prefect scene flow for real: local Ray actors, a real Prefect server, values checked."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from conftest import smooth_texture, write_raster
from flows.scene import super_resolve_scene
from sr_geo.hardware import cpu_description
from sr_geo.inference import Normalisation, predict_whole
from sr_geo.models.registry import ModelSpec, build_model
from sr_geo.store import TileStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster", "prefect_harness")]


def _whole_image_reference(source, store: TileStore, spec: ModelSpec) -> np.ndarray:
    with rasterio.open(source) as ds:
        pixels, valid = ds.read(), ds.dataset_mask() > 0
    mean, std = store.band_statistics()
    model = build_model(spec, pixels.shape[0])
    return predict_whole(model, pixels, valid, store.plan.halo, Normalisation(mean, std), torch.device("cpu"))


@pytest.mark.parametrize("tile", [48, 64])
@pytest.mark.parametrize("model", ["bicubic", "cnn"])
def test_tiled_pipeline_equals_whole_image_inference(make_raster, random_cnn_weights, tmp_path, tile, model):
    """Tiles, actors and stitching add nothing: no seams, to float precision."""
    source = make_raster(150, 131, bands=3, dtype="float32", seed=1)
    with rasterio.open(source, "r+") as ds:  # values in ~[0, 255], where float32 keeps 1e-4 absolute
        ds.write(ds.read() * 255)
    weights = str(random_cnn_weights(scale=2)) if model == "cnn" else None
    summary = super_resolve_scene(str(source), str(tmp_path / "out.tif"), model=model, scale=2, weights=weights,
                                  tile=tile, keep_store=True, workdir=str(tmp_path / "work"))
    store = TileStore.open(summary["store"], mode="r")
    tiled = store.group["output"][:]
    reference = _whole_image_reference(source, store, ModelSpec(model, 2, weights))
    assert summary["tiles"] == store.plan.n_tiles > 4
    assert summary["halo"] == build_model(ModelSpec(model, 2, weights), 3).receptive_radius
    assert tiled.shape == reference.shape == (3, 300, 262)
    assert np.abs(tiled - reference).max() <= 1e-4


@pytest.mark.parametrize("shape", [(5, 7), (3, 200), (1, 1)])
def test_small_rasters_are_processed(make_raster, tmp_path, shape):
    source = make_raster(*shape, bands=2, dtype="uint16")
    destination = tmp_path / "out.tif"
    summary = super_resolve_scene(str(source), str(destination), model="bicubic", scale=4, tile=64)
    with rasterio.open(source) as src, rasterio.open(destination) as out:
        assert (out.height, out.width) == (shape[0] * 4, shape[1] * 4)
        assert out.bounds == src.bounds
        assert out.read().max() > 0
    assert summary["tiles"] == 1 + (shape[1] > 64) * 3


def test_report_checks_consistency_and_alignment(make_raster, tmp_path):
    """The run report's self-check: block-averaged output matches the input, with no shift."""
    source = make_raster(120, 100, bands=3, dtype="uint16", seed=3)
    summary = super_resolve_scene(str(source), str(tmp_path / "out.tif"), model="bicubic", scale=4, tile=48,
                                  quicklook=str(tmp_path / "quicklook.png"))
    check = summary["consistency"]
    assert min(check["psnr"]) > 40
    assert abs(check["shift_y"]) < 0.05 and abs(check["shift_x"]) < 0.05
    assert (tmp_path / "quicklook.png").stat().st_size > 1000
    assert set(summary["seconds"]) == {"inspect", "plan", "tile", "infer", "export"}
    assert not (tmp_path / ".sr-geo-work").exists()  # the store and its default work dir are removed


def test_consistent_run_is_seam_free_and_reproduces_the_input(make_raster, tmp_path):
    """--consistent: the halo grows by the back-projection radius, tiles stay exact, and the output
    degraded by the sensor model is much closer to the input than without it."""
    from sr_geo.degrade import SensorModel
    from sr_geo.inference_options import InferenceOptions

    source = make_raster(96, 88, bands=2, dtype="float32", seed=11)
    runs = {}
    for consistent in (False, True):
        summary = super_resolve_scene(str(source), str(tmp_path / f"out{consistent}.tif"), model="bicubic", scale=2,
                                      tile=40, keep_store=True, consistent=consistent,
                                      sensor_mtf=0.2 if consistent else None, workdir=str(tmp_path / f"work{consistent}"))
        runs[consistent] = (summary, TileStore.open(summary["store"], mode="r"))
    summary, store = runs[True]
    options = InferenceOptions(**store.attrs["inference"])
    assert options.consistency_mtf == 0.2 and summary["halo"] == 2 + options.extra_radius(2)
    with rasterio.open(source) as ds:
        pixels, valid = ds.read(), ds.dataset_mask() > 0
    whole = predict_whole(build_model(ModelSpec("bicubic", 2), 2), pixels, valid, store.plan.halo,
                          Normalisation(*store.band_statistics()), torch.device("cpu"), options)
    assert np.abs(store.group["output"][:] - whole).max() <= 1e-4
    sensor = SensorModel(2, options.consistency_mtf)
    errors = {c: float(torch.mean((sensor.degrade(torch.from_numpy(s.group["output"][:][None]))[0] - torch.from_numpy(pixels)) ** 2))
              for c, (_, s) in runs.items()}
    assert errors[True] < errors[False] / 10


def test_uncertainty_layer_is_written_beside_the_output(make_raster, random_cnn_weights, tmp_path):
    mask = np.ones((80, 70), dtype=bool)
    mask[:10, :20] = False
    source = make_raster(80, 70, bands=2, dtype="uint16", mask=mask)
    weights = str(random_cnn_weights(scale=2))
    plain = super_resolve_scene(str(source), str(tmp_path / "plain.tif"), model="cnn", scale=2, weights=weights, tile=32)
    summary = super_resolve_scene(str(source), str(tmp_path / "sr.tif"), model="cnn", scale=2, weights=weights,
                                  tile=32, uncertainty=True)
    assert summary["layers"]["uncertainty"] == str(tmp_path / "sr_uncertainty.tif")
    with rasterio.open(tmp_path / "sr.tif") as out, rasterio.open(tmp_path / "sr_uncertainty.tif") as unc, \
            rasterio.open(plain["destination"]) as ref:
        assert unc.dtypes == ("float32", "float32") and unc.bounds == out.bounds and unc.crs == out.crs
        np.testing.assert_array_equal(out.read(), ref.read())  # the uncertainty run's image is unchanged
        spread = unc.read()
        assert np.isnan(spread[:, :20, :40]).all()  # masked input blocks
        assert np.isfinite(spread[:, 20:, 40:]).all() and spread[:, 20:, 40:].max() > 0
        assert "dihedral" in unc.tags()["SR_GEO_LAYER"]


def test_config_file_and_given_settings_size_the_predictor_pool(make_raster, tmp_path, monkeypatch):
    """A deployment's run: the file named by SR_GEO_CONFIG, under the settings the flow is given; the
    pool it ran with is in the summary and the report artifact."""
    from prefect.artifacts import Artifact

    config = tmp_path / "sr-geo.toml"
    config.write_text("actors = 2\nbatch_size = 3\nthreads = 2\n")
    monkeypatch.setenv("SR_GEO_CONFIG", str(config))
    source = make_raster(60, 50, bands=2, dtype="uint16", seed=4)
    summary = super_resolve_scene(str(source), str(tmp_path / "out.tif"), model="bicubic", scale=2, tile=16,
                                  threads=1)
    import ray

    node_memory = max(node["Resources"]["memory"] for node in ray.nodes() if node["Alive"])
    assert summary["pool"] == {"actors": 2, "threads": 1, "gpus_per_actor": 0.0, "batch_size": 3, "device": "cpu",
                               "precision": "float32", "placement_timeout": 600.0, "host_memory": node_memory / 2}
    assert summary["tiles_inferred"] == summary["tiles"] == 16
    assert summary["hardware"] == [cpu_description()]  # as the actors found it
    report = Artifact.get("sr-geo-scene-report").data
    assert f"Inference: 2 actors × 1 threads on {cpu_description()} in float32, batches of 3 tiles." in report


def test_runs_of_one_scene_to_two_outputs_at_once_both_finish(make_raster, tmp_path):
    """Same scene, same work dir, two outputs, at the same time (two schedules): each run has its own
    store, so the first to finish cannot delete the other's; both outputs equal."""
    from concurrent.futures import ThreadPoolExecutor

    source = make_raster(96, 80, bands=2, dtype="uint16", seed=5)
    outputs = [tmp_path / "out" / "a.tif", tmp_path / "out" / "b.tif"]
    with ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(lambda out: super_resolve_scene(str(source), str(out), model="bicubic", scale=2,
                                                                  tile=32, keep_store=True), outputs))
    assert summaries[0]["store"] != summaries[1]["store"]
    with rasterio.open(outputs[0]) as a, rasterio.open(outputs[1]) as b:
        assert np.array_equal(a.read(), b.read())


def test_undeclared_nans_stay_holes_and_the_source_tags_are_kept(tmp_path):
    """A float raster with NaN where no nodata is declared: NaN reaches no model input, so the output
    is NaN exactly over the holes and finite everywhere else; the source's own tags carry over."""
    data = (smooth_texture((2, 60, 50), seed=4) * 100).astype("float32")
    data[:, 20:26, 10:18] = np.nan
    data[1, 40, 30] = np.nan  # one band only: the pixel is a hole in both
    source = write_raster(tmp_path / "nans.tif", data)
    with rasterio.open(source, "r+") as ds:
        ds.update_tags(ACQUISITION_DATE="2024-05-01")
    destination = tmp_path / "out.tif"
    super_resolve_scene(str(source), str(destination), model="bicubic", scale=2, tile=32)
    holes = np.repeat(np.repeat(np.isnan(data).any(axis=0), 2, axis=0), 2, axis=1)
    with rasterio.open(destination) as out:
        values = out.read()
        assert out.tags()["ACQUISITION_DATE"] == "2024-05-01" and out.tags()["SR_GEO_MODEL"] == "bicubic"
    np.testing.assert_array_equal(np.isnan(values), np.broadcast_to(holes, values.shape))
    assert np.isfinite(values[:, ~holes]).all()


def test_alpha_band_becomes_the_outputs_mask(tmp_path):
    """RGBA (drone orthomosaics, web exports): the alpha band is the mask, not a fourth band to super-resolve."""
    data = np.concatenate([(smooth_texture((3, 40, 44), seed=5) * 200 + 20).astype("uint8"),
                           np.full((1, 40, 44), 255, dtype="uint8")])
    data[3, 10:30, :12] = 0
    source = write_raster(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    destination = tmp_path / "out.tif"
    summary = super_resolve_scene(str(source), str(destination), model="bicubic", scale=2, tile=32)
    with rasterio.open(destination) as out:
        assert out.count == 3 and [ci.name for ci in out.colorinterp] == ["red", "green", "blue"]
        np.testing.assert_array_equal(out.dataset_mask() > 0, np.repeat(np.repeat(data[3] > 0, 2, axis=0), 2, axis=1))
    assert min(summary["consistency"]["psnr"]) > 35


def test_a_run_resumed_in_another_precision_redoes_its_finished_tiles(make_raster, random_cnn_weights, tmp_path):
    """bfloat16 tiles beside float32 ones would show as seams: a store's tiles all come from one precision."""
    source = make_raster(48, 40, bands=2, dtype="uint16", seed=2)
    weights = str(random_cnn_weights(scale=2))
    run = {"model": "cnn", "scale": 2, "weights": weights, "tile": 16, "keep_store": True,
           "workdir": str(tmp_path / "work")}
    first = super_resolve_scene(str(source), str(tmp_path / "a.tif"), precision="float32", **run)
    again = super_resolve_scene(str(source), str(tmp_path / "a.tif"), precision="float32", **run)
    other = super_resolve_scene(str(source), str(tmp_path / "a.tif"), precision="bfloat16", **run)
    assert (first["tiles_inferred"], again["tiles_inferred"], other["tiles_inferred"]) == (9, 0, 9)
    assert TileStore.open(other["store"], mode="r").attrs["precision"] == "bfloat16"
    with rasterio.open(tmp_path / "a.tif") as out:
        assert out.tags()["SR_GEO_PRECISION"] == "bfloat16"
