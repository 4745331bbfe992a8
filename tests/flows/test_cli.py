"""The `sr-geo` command as a user runs it: real processes, exit codes, files on disk."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from conftest import free_port, write_raster
from sr_geo.hardware import cpu_description

SR_GEO = [sys.executable, "-m", "flows.cli"]


def sr_geo(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*SR_GEO, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])


def _bad_inputs(tmp: Path, make_raster) -> dict[str, tuple[list[str], str]]:
    """name → (CLI args after `run`, a fragment the one-line error must contain)."""
    good = make_raster(40, 40, name="good.tif")
    truncated = tmp / "truncated.tif"
    truncated.write_bytes(make_raster(300, 300, name="whole.tif").read_bytes()[:40_000])
    text = tmp / "notes.tif"
    text.write_text("this is not a raster\n")
    empty = tmp / "empty.tif"
    empty.touch()
    no_crs = make_raster(40, 40, name="nocrs.tif", crs=None)
    rotated = make_raster(40, 40, name="rotated.tif", transform=Affine.rotation(20) * Affine(10, 0, 0, 0, -10, 0))
    all_nodata = write_raster(tmp / "allnodata.tif", np.zeros((2, 40, 40), "uint16"), nodata=0)
    palette = make_raster(40, 40, bands=1, dtype="uint8", name="palette.tif")
    with rasterio.open(palette, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 255), 255: (255, 255, 255, 255)})
    huge_tile = write_raster(tmp / "wide.tif", np.ones((1, 4096, 4096), "uint8"))  # its one tile: ~190 GB of CNN
    cnn_x4 = Path(__file__).resolve().parents[2] / "sr_geo" / "weights" / "cnn_x4.safetensors"
    return {
        "truncated": ([str(truncated)], "truncated.tif"),
        "text file": ([str(text)], "not a readable raster"),
        "empty file": ([str(empty)], "empty"),
        "directory": ([str(tmp)], "directory"),
        "missing": ([str(tmp / "nope.tif")], "no such file"),
        "no crs": ([str(no_crs)], "no CRS"),
        "rotated": ([str(rotated)], "rotated"),
        "all nodata": ([str(all_nodata)], "nodata"),
        "unknown model": ([str(good), "--model", "srgan9000"], "srgan9000"),
        "unsupported scale": ([str(good), "--scale", "3"], "3"),
        "output is input": ([str(good), "-o", str(good)], "input"),
        "palette": ([str(palette)], "palette"),
        "not weights": ([str(good), "--model", "cnn", "--weights", str(text)], "not a safetensors"),
        "weights of another scale": ([str(good), "--model", "cnn", "--scale", "2", "--weights", str(cnn_x4)], "×4"),
        "output under a file": ([str(good), "-o", str(good / "sr.tif")], "output folder"),
        "output not a tiff": ([str(good), "-o", str(tmp / "sr.png")], ".tif or .tiff"),
        "a tile no actor holds": ([str(huge_tile), "--model", "cnn", "--tile", "4096", "--halo", "1024"], "GiB"),
        "no ray there": ([str(good), "--ray-address", f"127.0.0.1:{free_port()}"], "Ray cluster"),
        "no prefect there": ([str(good), "--prefect-api-url", f"http://127.0.0.1:{free_port()}/api"], "Prefect API"),
    }


def test_bad_input_gives_one_line_error_and_no_output(make_raster, tmp_path, cli_env):
    cases = _bad_inputs(tmp_path, make_raster)
    for name, (args, fragment) in cases.items():
        destination = tmp_path / f"out-{name.replace(' ', '-')}.tif"
        model = [] if "--model" in args else ["--model", "bicubic"]
        argv = ["run", *args, *model] if "-o" in args else ["run", *args, *model, "-o", str(destination)]
        result = sr_geo(*argv, env=cli_env, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0, name
        assert "Traceback" not in result.stderr + result.stdout, name
        assert len(lines) == 1 and fragment.lower() in lines[0].lower(), (name, result.stderr)
        assert not destination.exists(), name
    assert (tmp_path / "good.tif").stat().st_size > 0  # the input is never overwritten


def test_inspect_prints_grid_and_plan(make_raster, cli_env):
    source = make_raster(300, 200, bands=4, dtype="uint16", nodata=0)
    result = sr_geo("inspect", str(source), "--model", "bicubic", "--tile", "128", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "EPSG:32618" in result.stdout
    assert "200 x 300 px, 4 bands, uint16" in result.stdout
    assert "3 x 2 = 6 tiles" in result.stdout and "halo 2" in result.stdout
    assert "800 x 1200 px, pixel size 2.5 x 2.5" in result.stdout
    assert "0.03 GiB of model working memory per tile" in result.stdout  # 32 B × 4 bands × 132² × 16


@pytest.mark.slow
def test_run_writes_georeferenced_cog(make_raster, tmp_path, cli_env):
    """Also: the --config file's settings, under the flags given, are the ones the run uses (pool, codec)."""
    source = make_raster(100, 90, bands=3, dtype="uint8", nodata=0)
    destination = tmp_path / "sub" / "out.tif"
    (tmp_path / "sr-geo.toml").write_text("actors = 2\nbatch_size = 3\nthreads = 2\n")
    result = sr_geo("run", str(source), "-o", str(destination), "--model", "bicubic", "--scale", "2",
                    "--tile", "64", "--config", str(tmp_path / "sr-geo.toml"), "--threads", "1",
                    "--compression", "zstd", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "consistency PSNR" in result.stdout
    assert f"inference: 2 actors × 1 threads on {cpu_description()} in float32, batches of 3 tiles" in result.stdout
    with rasterio.open(source) as src, rasterio.open(destination) as out:
        assert out.crs == src.crs and out.bounds == src.bounds and out.res == (5.0, 5.0)
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert out.tags()["SR_GEO_MODEL"] == "bicubic" and out.compression.name == "zstd"
        assert out.tags()["SR_GEO_PRECISION"] == "float32"
    assert not list(destination.parent.glob(".*.partial"))


def _done_markers(workdir: Path) -> int:
    return len(glob.glob(str(workdir / "*.zarr" / "done" / "c" / "*")))


def _settled_markers(workdir: Path, quiet: float = 3.0, limit: float = 60.0) -> int:
    """Markers once none has appeared for `quiet` s: an actor may still finish its in-flight batches
    after the driver is killed (finished work is kept, as it should be)."""
    count, changed, start = _done_markers(workdir), time.monotonic(), time.monotonic()
    while time.monotonic() - changed < quiet and time.monotonic() - start < limit:
        time.sleep(0.2)
        if (now := _done_markers(workdir)) != count:
            count, changed = now, time.monotonic()
    return count


@pytest.mark.slow
def test_killed_run_resumes_only_missing_tiles(make_raster, random_cnn_weights, tmp_path, cli_env):
    """SIGKILL the whole run mid-inference; the rerun infers only unfinished tiles, same output."""
    source = make_raster(192, 160, bands=3, dtype="uint16", seed=5)
    weights = random_cnn_weights(scale=2)
    common = ["--model", "cnn", "--scale", "2", "--weights", str(weights), "--tile", "24", "--batch-size", "1"]
    work = tmp_path / "work"
    destination = tmp_path / "resumed.tif"
    run = [*SR_GEO, "run", str(source), "-o", str(destination), "--workdir", str(work), *common]
    process = subprocess.Popen(run, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True, cwd=Path(__file__).resolve().parents[2])
    n_tiles = 8 * 7
    deadline = time.monotonic() + 240
    while _done_markers(work) < n_tiles // 4 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = _settled_markers(work)
    assert 0 < done_before < n_tiles, "the run was not caught mid-inference"
    assert not destination.exists()

    resumed = sr_geo("run", str(source), "-o", str(destination), "--workdir", str(work), *common, env=cli_env)
    assert resumed.returncode == 0, resumed.stderr
    inferred_now = int(re.search(r"\((\d+) inferred now\)", resumed.stdout).group(1))
    assert inferred_now == n_tiles - done_before

    clean = sr_geo("run", str(source), "-o", str(tmp_path / "clean.tif"), "--workdir", str(tmp_path / "w2"),
                   *common, env=cli_env)
    assert clean.returncode == 0, clean.stderr
    with rasterio.open(destination) as a, rasterio.open(tmp_path / "clean.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


@pytest.mark.slow
def test_sigterm_stops_the_run_instead_of_retrying_it(make_raster, random_cnn_weights, tmp_path, cli_env):
    """SIGTERM (a scheduler cancelling, `kill`) mid-inference ends the run with the shell's exit code for
    it, one line saying how to resume, no output, and its finished tiles kept; it used to surface from
    Ray's wait as an ordinary error that the infer task's retry swallowed, so the run went on to finish."""
    source = make_raster(384, 384, bands=3, dtype="uint16", seed=5)
    weights = random_cnn_weights(scale=2)
    work, destination = tmp_path / "work", tmp_path / "out.tif"
    run = [*SR_GEO, "run", str(source), "-o", str(destination), "--workdir", str(work), "--model", "cnn", "--scale",
           "2", "--weights", str(weights), "--tile", "96", "--batch-size", "2"]
    process = subprocess.Popen(run, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 240
    while _done_markers(work) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.decode().strip().splitlines()[-1] == "sr-geo: terminated; rerun the same command to resume"
    assert not destination.exists()
    assert 0 < _settled_markers(work) < 4 * 4


@pytest.mark.slow
def test_demo_runs_on_bundled_scene(tmp_path, cli_env):
    result = sr_geo("demo", "-o", str(tmp_path), "--model", "bicubic", env=cli_env)
    assert result.returncode == 0, result.stderr
    cog = tmp_path / "s2_virginia_demo_bicubic_x4.tif"
    with rasterio.open(cog) as out:
        assert (out.width, out.height, out.count) == (1280, 1280, 4)
    assert (tmp_path / "s2_virginia_demo_bicubic_x4_quicklook.png").stat().st_size > 10_000


@pytest.mark.parametrize("command", ["run", "run-stack", "archive"])
def test_inference_flags_a_model_cannot_honour_are_refused_before_anything_starts(make_raster, tmp_path, command):
    from click.testing import CliRunner

    from flows.cli import main

    scene = make_raster(32, 32)
    target = ["-o", str(tmp_path / ("dest" if command == "archive" else "out.tif"))]
    for flags, message in [(["--sensor-mtf", "0.2"], "--sensor-mtf sets what --consistent assumes"),
                           (["--model", "rnn", "--uncertainty"], "--uncertainty is not supported for the temporal model")]:
        result = CliRunner().invoke(main, [command, str(scene), *target, *flags])
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.glob("out*")) and not (tmp_path / "dest").exists()
