"""Scheduled runs for real: a Prefect server on 127.0.0.1 with its own home and database, the
deployments of prefect.yaml, and `python -m flows.serve` firing a scheduled archive run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from conftest import free_port, smooth_texture, write_raster

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent



def _stop(process: subprocess.Popen) -> None:
    """End the process group this test started: politely, then for sure."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """(API URL, environment for clients) of a fresh Prefect server; stopped after the module."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    log = home / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url, {**env, "PREFECT_API_URL": url}
    finally:
        _stop(server)


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _client(url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return get_client(sync_client=True)


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """`python -m flows.serve` with an archive every 5 s: (source, destination, process, log)."""
    url, env = prefect_server
    tmp = tmp_path_factory.mktemp("served")
    src, dest = tmp / "src", tmp / "dest"
    src.mkdir()
    write_raster(src / "scene.tif", (1 + smooth_texture((2, 24, 20), 5) * 1000).astype("uint16"))
    ray_tmp = tempfile.mkdtemp(prefix="srg-", dir="/tmp")  # short enough for Ray's unix socket paths
    command = [sys.executable, "-m", "flows.serve", "--archive-source", str(src), "--archive-destination", str(dest),
               "--archive-interval", "5", "--model", "bicubic", "--scale", "2", "--tile", "32"]
    log = tmp / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen(command, cwd=REPO, env={**env, "RAY_TMPDIR": ray_tmp}, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield src, dest, serve, log
    finally:
        _stop(serve)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.usefixtures("served")  # deploys while the served flow waits for its first scheduled run
def test_prefect_yaml_deploys_to_the_pools_of_the_setup_script(prefect_server):
    url, env = prefect_server
    for command in (["bash", "infra/prefect/work-pools.sh"], [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"]):
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    declared = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    with _client(url) as client:
        deployed = {d.name: d for d in client.read_deployments() if d.name in declared}
        pools = {p.name: p.type for p in client.read_work_pools() if p.name.startswith("sr-geo")}
    assert set(deployed) == set(declared)
    assert pools == {"sr-geo": "process", "sr-geo-k8s": "kubernetes"}
    for name, spec in declared.items():
        deployment = deployed[name]
        assert deployment.entrypoint == spec["entrypoint"] and deployment.work_pool_name == spec["work_pool"]["name"]
        assert deployment.parameters == spec["parameters"]
        assert [s.schedule.cron for s in deployment.schedules] == [s["cron"] for s in spec.get("schedules", [])]


def test_served_archive_runs_on_its_interval_schedule(prefect_server, served):
    url, _ = prefect_server
    src, dest, serve, log = served
    run = _first_completed_scheduled_run(url, serve, log, deadline=time.monotonic() + 150)
    assert run.auto_scheduled and run.parameters["source"] == str(src)
    with rasterio.open(src / "scene.tif") as inp, rasterio.open(dest / "scene.tif") as out:
        assert out.bounds == inp.bounds and (out.height, out.width) == (48, 40)
        assert out.tags()["SR_GEO_MODEL"] == "bicubic" and np.ptp(out.read()) > 0
    assert (dest / "item-collection.json").exists()


def _first_completed_scheduled_run(url: str, serve: subprocess.Popen, log: Path, deadline: float):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    only_archive = DeploymentFilter(name=DeploymentFilterName(any_=["local"]))
    while True:
        with _client(url) as client:
            runs = client.read_flow_runs(deployment_filter=only_archive)
        assert not [r for r in runs if r.state and r.state.is_final() and not r.state.is_completed()], \
            log.read_text()[-4000:]
        done = [r for r in runs if r.state and r.state.is_completed()]
        if done:
            return done[0]
        assert serve.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(1)
