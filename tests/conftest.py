"""Shared fixtures: tiny synthetic rasters on an explicit UTM grid, and real local Ray and Prefect.

Rasters are made by the tests themselves (fixed seeds), so the suite runs on a fresh clone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from flows.ports import free_port

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GDAL_PAM_ENABLED", "NO")

UTM_CRS = "EPSG:32618"
# 10 m pixels, upper-left corner at (435730 E, 4179460 N): a Sentinel-2 10 m grid in UTM 18N.
UTM_TRANSFORM = Affine(10.0, 0.0, 435730.0, 0.0, -10.0, 4179460.0)


def smooth_texture(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Band-limited random texture in [0, 1]: image-like, so models and metrics behave as on real data."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[-2])[:, None]
    fx = np.fft.fftfreq(shape[-1])[None, :]
    spectrum = np.fft.fft2(noise) / (1.0 + (np.hypot(fy, fx) * 12) ** 2)
    img = np.real(np.fft.ifft2(spectrum))
    lo = img.min(axis=(-2, -1), keepdims=True)
    hi = img.max(axis=(-2, -1), keepdims=True)
    return (img - lo) / np.maximum(hi - lo, 1e-12)


def write_raster(path: Path, data: np.ndarray, *, nodata: float | None = None, mask: np.ndarray | None = None,
                 transform: Affine = UTM_TRANSFORM, crs: str | None = UTM_CRS, **extra) -> Path:
    """Write (bands, H, W) `data` as a GeoTIFF; `mask` (H, W) bool is written as an internal mask."""
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata, **extra}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if mask is not None:
                dst.write_mask(mask.astype("uint8") * 255)
    return path


@pytest.fixture
def one_torch_thread():
    """Small networks gain nothing from threads, and on a busy machine a second thread costs 4× in waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_raster(height, width, bands=3, dtype='uint16', seed=0, name=..., **write_raster kwargs)."""

    def make(height: int, width: int, bands: int = 3, dtype: str = "uint16", seed: int = 0,
             name: str = "scene.tif", **kwargs) -> Path:
        texture = smooth_texture((bands, height, width), seed)
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            lo, hi = max(info.min, 0) + 1, min(info.max, 10000)
            data = (lo + texture * (hi - lo)).round().astype(dtype)
        else:
            data = texture.astype(dtype)
        return write_raster(tmp_path / name, data, **kwargs)

    return make


@pytest.fixture(scope="session")
def ray_cluster():
    """A private local Ray for the whole session (never attaches to another cluster on the machine)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    """A real temporary Prefect server with its own database, shared by the session's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def random_cnn_weights(tmp_path: Path) -> Callable[[int], Path]:
    """Factory: weights of an untrained CNN whose zero-initialised tail is randomised (fixed seed).

    An untrained CNN is exactly bicubic; randomising the tail makes every layer matter, so the
    seam tests exercise the network's full receptive field.
    """
    import torch

    from sr_geo.models.registry import ARCHITECTURES
    from sr_geo.models.weights import save_weights

    def make(scale: int = 4) -> Path:
        torch.manual_seed(0)
        model = ARCHITECTURES["cnn"].load()(scale=scale)
        with torch.no_grad():
            model.tail.weight.normal_(0, 0.05)
        path = tmp_path / f"cnn_random_x{scale}.safetensors"
        save_weights(model, path)
        return path

    return make


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """Environment for `sr-geo` subprocesses: Prefect without a server (ephemeral), isolated home."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1")
    return env


def predicted_store(source: Path, work: Path, *, scale: int, tile: int, halo: int = 2, model: str = "bicubic") -> str:
    """The library path of one run without Ray or Prefect: store → tile → predict; returns the store URL."""
    import torch

    from sr_geo.inference import TilePredictor
    from sr_geo.models.registry import ModelSpec, build_model
    from sr_geo.plan import plan_tiles
    from sr_geo.scene import inspect_scene
    from sr_geo.store import RunKey, TileStore
    from sr_geo.tiler import tile_scene

    scene = inspect_scene(str(source))
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=tile, halo=halo, scale=scale)
    key = RunKey(scene.path, scene.size_bytes, scene.mtime, model, "none", scale, tile, halo)
    url = str(work / "run.zarr")
    TileStore.create(url, scene=scene, plan=plan, key=key,
                     model_attrs={"name": model, "weights_sha256": "none", "receptive_radius": halo})
    tile_scene(url, str(source), workers=2)
    TilePredictor(url, build_model(ModelSpec(model, scale), scene.count), torch.device("cpu")).predict(
        list(range(plan.n_tiles)))
    return url


def bicubic_cog(source: Path, work: Path, *, scale: int, tile: int = 32, halo: int = 2) -> Path:
    """A bicubic COG of `source` made by the library path (no Ray, no Prefect)."""
    from sr_geo.export import export_cog
    from sr_geo.store import TileStore

    url = predicted_store(source, work, scale=scale, tile=tile, halo=halo)
    return export_cog(TileStore.open(url, mode="r"), work / "sr.tif", work, threads=2)


S3_SECRET = "SRGEO-TEST-SECRET-7f3a9c"  # recognisable, so a leak is found by a plain search


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> dict[str, str]:
    """A real S3-compatible server (moto) on 127.0.0.1 with a bucket; returns the client environment."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "srgeo-test-key", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
           "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=S3_SECRET, region_name="us-east-1").create_bucket(Bucket="sr-geo")
    yield env
    process.terminate()
    process.wait(timeout=10)
