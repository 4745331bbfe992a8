"""The time-series flow for real (local Ray actors, a real Prefect server) and the `run-stack` command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window

from conftest import UTM_TRANSFORM, smooth_texture, write_raster
from sr_geo.hardware import cpu_description
from sr_geo.inference import Normalisation, predict_whole
from sr_geo.models.rnn import RNN
from sr_geo.models.weights import save_weights
from sr_geo.stack import Stack
from sr_geo.store import TileStore
from sr_geo.stack import read_on_grid
from sr_geo.tiler import _Readers

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def frames(tmp_path: Path) -> list[Path]:
    """Four dates: the reference (partly masked), one moved by whole pixels, one coarser on another
    lattice (warped), and one entirely nodata (a missing acquisition)."""
    texture = lambda seed, shape=(2, 70, 64): (1 + 250 * smooth_texture(shape, seed)).astype("float32")  # noqa: E731
    mask = np.ones((70, 64), bool)
    mask[5:25, 30:50] = False
    return [
        write_raster(tmp_path / "a_20200110.tif", texture(1), mask=mask),
        write_raster(tmp_path / "b_20200101.tif", texture(2), transform=UTM_TRANSFORM * Affine.translation(-3, 2)),
        write_raster(tmp_path / "c_20200120.tif", texture(3, (2, 40, 36)), nodata=0,
                     transform=UTM_TRANSFORM * Affine.scale(1.8) * Affine.translation(0.3, -0.2)),
        write_raster(tmp_path / "d_20200130.tif", np.zeros((2, 70, 64), "float32"), nodata=0),
    ]


@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_tiled_pipeline_equals_whole_stack_inference(tmp_path):
    """Tiles, actors and stitching add nothing for the recurrent model either: halo = its theoretical
    radius, output = one forward pass over the whole co-registered stack, to float precision."""
    from flows.timeseries import super_resolve_timeseries

    torch.manual_seed(0)
    model = RNN(2)
    with torch.no_grad():
        model.tail.weight.normal_(0.0, 0.05)
        model.base.tail.weight.normal_(0.0, 0.05)
        model.shift_kernels.kernels.normal_(0.0, 0.05)
    weights = tmp_path / "rnn_random.safetensors"
    save_weights(model, weights)
    paths = frames(tmp_path)
    summary = super_resolve_timeseries([str(p) for p in paths], str(tmp_path / "out.tif"), model="rnn", scale=2,
                                       weights=str(weights), tile=24, keep_store=True, workdir=str(tmp_path / "work"))
    store = TileStore.open(summary["store"], mode="r")
    stack = Stack.from_attrs(store.attrs["stack"])
    assert [Path(f["path"]).name for f in summary["frames"]] == [p.name for p in (paths[1], paths[0], paths[2], paths[3])]
    assert [f["read"] for f in summary["frames"]] == ["read", "read", "warp", "read"] and summary["reference"] == 1
    assert summary["halo"] == model.theoretical_radius and store.plan.n_tiles > 4
    grid = stack.scene.grid
    readers = [_Readers(f.path, f.read, grid) for f in stack.frames]
    whole = [read_on_grid(r.get(), Window(0, 0, grid.width, grid.height), f.read) for r, f in zip(readers, stack.frames)]
    for reader in readers:
        reader.close()
    reference = predict_whole(model, np.stack([p for p, _ in whole]), np.stack([v for _, v in whole]), store.plan.halo,
                              Normalisation(*store.band_statistics()), torch.device("cpu"), shifts=stack.shifts())
    assert np.abs(store.group["output"][:] - reference).max() <= 1e-4
    with rasterio.open(paths[0]) as src, rasterio.open(tmp_path / "out.tif") as out:
        assert out.bounds == src.bounds and out.crs == src.crs and (out.height, out.width) == (140, 128)


@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_consistent_stack_output_is_seam_free_at_the_projections_measured_radius(tmp_path):
    """--consistent on a stack projects onto every frame at its shift; its halo is the model's radius plus the
    projection's measured one, and tiles then differ from the whole stack by less than the seam tolerance."""
    from flows.timeseries import super_resolve_timeseries
    from sr_geo.inference_options import InferenceOptions
    from sr_geo.models.receptive import SEAM_TOLERANCE

    torch.manual_seed(0)
    model = RNN(2)
    weights = tmp_path / "rnn_random.safetensors"
    save_weights(model, weights)
    paths = frames(tmp_path)[:3]
    runs = {}
    for consistent in (False, True):
        runs[consistent] = super_resolve_timeseries(
            [str(p) for p in paths], str(tmp_path / f"out{consistent}.tif"), model="rnn", scale=2, weights=str(weights),
            tile=24, keep_store=True, consistent=consistent, workdir=str(tmp_path / f"work{consistent}"))
    store = TileStore.open(runs[True]["store"], mode="r")
    options = InferenceOptions(**store.attrs["inference"])
    assert options.consistency_iterations == 50
    assert runs[True]["halo"] == model.theoretical_radius + options.extra_radius(2, temporal=True) > runs[False]["halo"]
    stack = Stack.from_attrs(store.attrs["stack"])
    grid = stack.scene.grid
    readers = [_Readers(f.path, f.read, grid) for f in stack.frames]
    whole = [read_on_grid(r.get(), Window(0, 0, grid.width, grid.height), f.read) for r, f in zip(readers, stack.frames)]
    for reader in readers:
        reader.close()
    norm = Normalisation(*store.band_statistics())
    reference = predict_whole(model, np.stack([p for p, _ in whole]), np.stack([v for _, v in whole]), store.plan.halo,
                              norm, torch.device("cpu"), options, shifts=stack.shifts())
    tiled = store.group["output"][:]
    assert np.abs(tiled - reference).max() <= SEAM_TOLERANCE * norm.std.min()
    plain = TileStore.open(runs[False]["store"], mode="r").group["output"][:]
    assert np.abs(tiled - plain).max() > 100 * SEAM_TOLERANCE * norm.std.min()  # the projection did act


def crops(files: list[Path], out: Path, window: Window) -> list[str]:
    """The same ground from each file (each on its own grid), written as small GeoTIFFs."""
    with rasterio.open(files[0]) as first:
        bounds = rasterio.windows.bounds(window, first.transform)
    written = []
    for path in files:
        with rasterio.open(path) as src:
            own = rasterio.windows.from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
            profile = {**src.profile, "width": int(own.width), "height": int(own.height), "photometric": "minisblack",
                       "transform": src.window_transform(own), "tiled": False, "compress": "deflate"}
            profile.pop("blockxsize", None), profile.pop("blockysize", None)
            target = out / path.name
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(src.read(window=own))
                dst.descriptions = src.descriptions
        written.append(str(target))
    return written


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real time series not available ({SHARED} is absent in a fresh clone)")
@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
@pytest.mark.parametrize("folder, pattern, window, reference", [
    ("naip-north-dakota-10-dates", "*_201[5-7]*.tif", Window(400, 300, 40, 36), 0),
    ("sentinel2-slovenia-5-dates", "frame_t*.tif", Window(30, 30, 32, 32), 2),  # t0, t1 are cloudy
])
def test_real_time_series_end_to_end(tmp_path, folder, pattern, window, reference):
    """NAIP (4 bands, dates in the names, grids < 1 px apart: warped) and Sentinel-2 (13 bands, no dates,
    two cloudy dates) through the shipped rnn; the output lies at the frames' centroid, reported in the
    summary, and stays within a fraction of a pixel of the (clear) reference frame (real dates differ by up
    to 0.8 px among themselves)."""
    from flows.timeseries import super_resolve_timeseries

    paths, scale = crops(sorted((SHARED / folder).glob(pattern)), tmp_path, window), 4
    summary = super_resolve_timeseries(paths, str(tmp_path / "sr.tif"), model="rnn", scale=scale, tile=32,
                                       reference=paths[reference], workdir=str(tmp_path / "work"))
    with rasterio.open(paths[reference]) as src, rasterio.open(tmp_path / "sr.tif") as out:
        assert out.bounds == src.bounds and out.count == src.count and out.dtypes == src.dtypes
        assert (out.height, out.width) == (src.height * scale, src.width * scale)
        assert np.isfinite(out.read().astype(np.float64)).all()
    acquired = [f["acquired"] for f in summary["frames"]]
    assert acquired == sorted(acquired) if all(acquired) else summary["order"].startswith("as given")
    check, centroid = summary["consistency"], summary["centroid"]
    assert len(centroid) == 2 and max(abs(c) for c in centroid) < 0.5
    assert abs(check["shift_y"]) < 0.5 and abs(check["shift_x"]) < 0.5


def run_stack(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(".venv/bin/sr-geo").resolve()), "run-stack", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_stack_takes_its_settings_from_the_config_file_and_flags(tmp_path, cli_env):
    paths = frames(tmp_path)[:2]
    (tmp_path / "sr-geo.toml").write_text("batch_size = 2\nactors = 1\n")
    env = {**cli_env, "SR_GEO_CONFIG": str(tmp_path / "sr-geo.toml"), "SR_GEO_BATCH_SIZE": "5"}
    result = run_stack([*map(str, paths), "-o", str(tmp_path / "out.tif"), "--scale", "4", "--tile", "32",
                        "--threads", "1"], env)
    assert result.returncode == 0, result.stderr
    assert f"inference: 1 actor × 1 threads on {cpu_description()} in float32, batches of 5 tiles" in result.stdout
    assert "(reference)" in result.stdout
    with rasterio.open(paths[0]) as src, rasterio.open(tmp_path / "out.tif") as out:
        assert out.bounds == src.bounds and (out.height, out.width) == (280, 256)
        assert out.tags()["SR_GEO_MODEL"] == "rnn"


@pytest.mark.parametrize("case, message", [
    ("bands", "has 1 band, the reference frame"),
    ("apart", "does not overlap the reference frame"),
])
def test_run_stack_refuses_incompatible_frames_in_one_line(tmp_path, cli_env, case, message):
    first = write_raster(tmp_path / "a.tif", (1 + 100 * smooth_texture((2, 30, 30), 1)).astype("float32"))
    second = write_raster(
        tmp_path / "b.tif", (1 + 100 * smooth_texture((1 if case == "bands" else 2, 30, 30), 2)).astype("float32"),
        transform=UTM_TRANSFORM * Affine.translation(1000 if case == "apart" else 0, 0))
    result = run_stack([str(first), str(second), "-o", str(tmp_path / "out.tif"), "--model", "bicubic"], cli_env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert not (tmp_path / "out.tif").exists()
