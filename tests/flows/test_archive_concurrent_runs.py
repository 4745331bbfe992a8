"""Two `sr-geo run` processes on the same input and output at the same time (two schedulers, or an
archive run racing a manual one). They share one run store (same run key) and one output path:
both succeed or one fails cleanly, and the output equals a clean run's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from prefect.settings import PREFECT_API_URL

from conftest import smooth_texture, write_raster
from flows.scene import super_resolve_scene

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
OPTIONS = {"model": "bicubic", "scale": 2, "tile": 32}


@pytest.fixture(scope="module")
def race(tmp_path_factory, cli_env, ray_cluster, prefect_harness):
    """(source, destination, [(returncode, stderr)] of both runs), started together."""
    tmp = tmp_path_factory.mktemp("race")
    source = write_raster(tmp / "scene.tif", (1 + smooth_texture((3, 120, 100), 8) * 1000).astype("uint16"))
    destination = tmp / "out" / "scene.tif"
    flags = [arg for key, value in OPTIONS.items() for arg in (f"--{key}", str(value))]
    command = [sys.executable, "-m", "flows.cli", "run", str(source), "-o", str(destination), *flags]
    env = {**cli_env, "PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's server: no start-up per run
    runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    return source, destination, [(run.returncode, err) for run, err in zip(runs, errors, strict=True)]


def test_raced_output_is_a_clean_runs_or_absent(race, tmp_path):
    """Whatever the race did, it never leaves a wrong or partial output behind."""
    source, destination, results = race
    super_resolve_scene(str(source), str(tmp_path / "clean.tif"), workdir=str(tmp_path / "work"), **OPTIONS)
    assert destination.exists() == any(code == 0 for code, _ in results)
    if destination.exists():
        with rasterio.open(destination) as raced, rasterio.open(tmp_path / "clean.tif") as clean:
            np.testing.assert_array_equal(raced.read(), clean.read())
            assert raced.tags()["SR_GEO_RUN_KEY"] == clean.tags()["SR_GEO_RUN_KEY"]
    assert [p.name for p in destination.parent.glob(".*.partial")] == []


def test_one_raced_run_succeeds_and_a_loser_fails_in_one_line(race):
    _, _, results = race
    assert any(code == 0 for code, _ in results)
    for code, err in results:
        if code != 0:
            assert err.strip().splitlines()[-1].startswith("sr-geo: error:") and "Traceback" not in err, err[-3000:]
