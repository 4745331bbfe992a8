"""Input, store and output on an S3-compatible object store (a real server on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
import rasterio

from conftest import S3_SECRET

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def test_scene_on_object_storage_matches_local_and_never_leaks_credentials(make_raster, tmp_path, cli_env,
                                                                           s3_server, monkeypatch):
    env = {**cli_env, **s3_server}
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    source = make_raster(90, 70, bands=3, dtype="uint16", nodata=0)
    fs = fsspec.filesystem("s3")
    fs.put_file(str(source), "sr-geo/in/scene.tif")
    args = ["--model", "bicubic", "--scale", "2", "--tile", "32", "--keep-store"]

    remote = _cli("run", "s3://sr-geo/in/scene.tif", "-o", "s3://sr-geo/out/scene_x2.tif",
                  "--workdir", "s3://sr-geo/work", *args, env=env)
    assert remote.returncode == 0, remote.stderr
    local = _cli("run", str(source), "-o", str(tmp_path / "local.tif"), *args, env=env)
    assert local.returncode == 0, local.stderr

    fs.get_file("sr-geo/out/scene_x2.tif", str(tmp_path / "remote.tif"))
    with rasterio.open(tmp_path / "remote.tif") as a, rasterio.open(tmp_path / "local.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.bounds == b.bounds and a.crs == b.crs
        tags = json.dumps(a.tags())
    stores = fs.glob("sr-geo/work/*.zarr")
    assert len(stores) == 1 and fs.exists(f"{stores[0]}/output/zarr.json")  # the store lived on S3
    attrs = fs.cat_file(f"{stores[0]}/zarr.json").decode()

    missing = _cli("run", "s3://sr-geo/in/nope.tif", "-o", "s3://sr-geo/out/nope.tif", *args, env=env)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert not fs.exists("sr-geo/out/nope.tif")

    prefect_db = b"".join(p.read_bytes() for p in Path(cli_env["PREFECT_HOME"]).rglob("*") if p.is_file())
    for text in (remote.stdout, remote.stderr, missing.stdout, missing.stderr, tags, attrs):
        assert S3_SECRET not in text
    assert S3_SECRET.encode() not in prefect_db
