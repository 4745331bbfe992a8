"""Input, store and output, and an archive's destination, on an S3-compatible object store (a real
server on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
import rasterio
from affine import Affine

from conftest import S3_SECRET, UTM_TRANSFORM, smooth_texture, write_raster

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


def test_archive_to_object_storage_skips_current_outputs_on_rerun(tmp_path, cli_env, s3_server, monkeypatch):
    """COGs, manifest and ItemCollection under an s3:// prefix; the rerun reads the outputs' provenance
    back from the store and skips both scenes. No credential reaches the output, the logs or Prefect."""
    env = {**cli_env, **s3_server}
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_raster(src / "a.tif", (1 + smooth_texture((2, 30, 26), 1) * 1000).astype("uint16"))
    write_raster(src / "sub" / "b.tif", (1 + smooth_texture((2, 22, 30), 2) * 1000).astype("uint16"),
                 transform=UTM_TRANSFORM * Affine.translation(900, 0))
    dest = "s3://sr-geo/archive"
    args = ["archive", str(src), "-o", dest, "--model", "bicubic", "--scale", "2", "--tile", "32"]

    first = _cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "2 done, 0 skipped, 0 failed" in first.stdout, first.stdout
    fs = fsspec.filesystem("s3")
    fs.get_file("sr-geo/archive/sub/b.tif", str(tmp_path / "b_x2.tif"))
    with rasterio.open(src / "sub" / "b.tif") as inp, rasterio.open(tmp_path / "b_x2.tif") as out:
        assert out.bounds == inp.bounds and (out.height, out.width) == (44, 60)
        assert out.tags()["SR_GEO_MODEL"] == "bicubic"
    items = json.loads(fs.cat_file("sr-geo/archive/item-collection.json"))
    assert sorted(f["assets"]["data"]["href"] for f in items["features"]) == [f"{dest}/a.tif", f"{dest}/sub/b.tif"]
    manifest = fs.cat_file("sr-geo/archive/.sr-geo/manifest.json").decode()
    assert fs.find("sr-geo/archive/.sr-geo/work") == []  # no run store is left behind

    second = _cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "0 done, 2 skipped, 0 failed" in second.stdout, second.stdout

    prefect_db = b"".join(p.read_bytes() for p in Path(cli_env["PREFECT_HOME"]).rglob("*") if p.is_file())
    for text in (first.stdout, first.stderr, second.stdout, second.stderr, json.dumps(items), manifest):
        assert S3_SECRET not in text
    assert S3_SECRET.encode() not in prefect_db
