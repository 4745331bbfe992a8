"""`flows.startup.run_services`: Ray and a temporary Prefect server started side by side, and stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SERVER_CHILDREN = """
def server_children():
    import os
    from pathlib import Path
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields, cmdline = stat.read_text(), (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"prefect_server:create_app" in cmdline:
            found.append(int(stat.parent.name))
    return found
"""

PROBE = SERVER_CHILDREN + """
import json, socket
import httpx
import ray
import sys
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from flows.startup import run_services

@flow
def answer() -> int:
    return 42

with run_services(None, None, preload="sr_geo.export"):
    url = PREFECT_API_URL.value()
    seen = {"url": url, "health": httpx.get(url + "/health").json(), "servers": len(server_children()),
            "ray": ray.is_initialized(), "preloaded": "sr_geo.export" in sys.modules, "flow": answer()}
    with get_client(sync_client=True) as client:
        seen["runs_on_server"] = [run.name for run in client.read_flow_runs()] != []
    seen["server_module_here"] = "prefect.server.api.server" in sys.modules
port = int(seen["url"].split(":")[2].split("/")[0])
with socket.socket() as probe:
    seen["server_gone"] = probe.connect_ex(("127.0.0.1", port)) != 0
seen["servers_after"] = len(server_children())
seen["ray_after"] = ray.is_initialized()
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_run_services_starts_ray_and_a_temporary_prefect_server_then_stops_both(cli_env) -> None:
    """No Prefect API and no Ray address configured: both are started here, a flow reports to the one
    temporary server, whose package never loads into the run's process, and nothing is left running
    afterwards."""
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["url"].startswith("http://127.0.0.1:") and seen["url"].endswith("/api")
    assert seen["health"] is True and seen["servers"] == 1 and seen["runs_on_server"]
    assert seen["ray"] and seen["preloaded"] and seen["flow"] == 42
    assert not seen["server_module_here"]
    assert seen["server_gone"] and seen["servers_after"] == 0 and not seen["ray_after"]


LAST_WORDS = """
import asyncio, os
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from flows.prefect_server import TemporaryServer
from flows.startup import run_services, using_prefect_api

@flow
def speaks() -> str:
    get_run_logger().warning("last words")
    from prefect.runtime import flow_run
    return flow_run.id

with run_services(None, None, preload="json"):
    run_id = speaks()
server = TemporaryServer()  # the same database, read back through a second server
try:
    server.wait_until_up(60)
    with using_prefect_api(server.url), get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    print(sorted(log.message for log in logs))
finally:
    server.stop()
"""


@pytest.mark.slow
def test_a_runs_last_logs_reach_the_temporary_server_before_it_stops(cli_env) -> None:
    """Prefect batches logs (here every 60 s): those still queued when the run ends are sent before
    the server stops, not lost with an error at exit."""
    env = {**cli_env, "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "60"}
    done = subprocess.run([sys.executable, "-c", LAST_WORDS], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "last words" in done.stdout.strip().splitlines()[-1]
    assert "Error logging to API" not in done.stderr


@pytest.mark.slow
def test_a_configured_prefect_api_is_used_as_is(cli_env) -> None:
    """A running server given by URL is talked to; no temporary one is started beside it."""
    probe = SERVER_CHILDREN + (
        "from flows.startup import run_services\n"
        "from prefect.settings import PREFECT_API_URL\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "with SubprocessASGIServer() as running:  # a server started apart, by Prefect's own class\n"
        "    url = running.api_url\n"
        "    with run_services(None, url, preload='json'):\n"
        "        print(len(server_children()), PREFECT_API_URL.value() == url)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 True"


@pytest.mark.slow
def test_a_temporary_server_that_does_not_come_up_fails_the_run_in_one_line(cli_env, make_raster, tmp_path) -> None:
    """Prefect's own start-up timeout applies; the run stops before any work, leaves nothing at the
    output path and no server behind."""
    scene, out = make_raster(64, 64), tmp_path / "out.tif"
    marker = f"run-{uuid.uuid4().hex}"
    env = {**cli_env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0", "SR_GEO_TEST_MARKER": marker}
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(scene), "-o", str(out), "--model", "bicubic"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sr-geo: error: the temporary Prefect server at http://127.0.0.1:")
    assert "did not answer within 0 s" in last
    assert not out.exists()
    assert not _servers_started_with(marker)


@pytest.mark.slow
def test_a_run_terminated_while_its_services_start_stops_them_and_says_so(cli_env, make_raster, tmp_path) -> None:
    """SIGTERM as soon as the temporary server exists (Ray is starting or just up) unwinds the run like one
    terminated mid-work: exit 143, one line, no server left behind, nothing at the output path."""
    scene, out = make_raster(64, 64), tmp_path / "out.tif"
    marker = f"run-{uuid.uuid4().hex}"
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(scene), "-o", str(out), "--model", "bicubic"],
                           cwd=REPO, env={**cli_env, "SR_GEO_TEST_MARKER": marker}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _servers_started_with(marker) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == "sr-geo: terminated; rerun the same command to resume"
    assert not out.exists()
    assert not _servers_started_with(marker)


@pytest.mark.slow
def test_a_run_killed_outright_leaves_no_temporary_server_behind(cli_env, make_raster, tmp_path) -> None:
    """SIGKILL (the OOM killer, a scheduler's last resort) gives the run no chance to stop its server;
    the server notices and stops itself."""
    marker = f"run-{uuid.uuid4().hex}"
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(make_raster(64, 64)), "-o",
                            str(tmp_path / "out.tif"), "--model", "bicubic"],
                           cwd=REPO, env={**cli_env, "SR_GEO_TEST_MARKER": marker}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _servers_started_with(marker) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.02)
    assert _servers_started_with(marker), "the run ended before its server started"
    run.kill()
    run.wait()
    deadline = time.monotonic() + 60
    while _servers_started_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _servers_started_with(marker)


@pytest.mark.slow
def test_a_refused_run_ends_the_server_it_started_early(cli_env, tmp_path) -> None:
    """The temporary server starts with the command, before the request is checked; a refusal ends it at
    once instead of waiting for it to come up."""
    marker = f"run-{uuid.uuid4().hex}"
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(tmp_path / "missing.tif"), "-o",
                           str(tmp_path / "out.tif")], cwd=REPO, env={**cli_env, "SR_GEO_TEST_MARKER": marker},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"sr-geo: error: {tmp_path / 'missing.tif'}: no such file"]
    assert not _servers_started_with(marker)


@pytest.mark.slow
def test_an_api_named_by_a_prefect_profile_replaces_the_early_server(cli_env, make_raster, tmp_path) -> None:
    """Only Prefect's settings know a profile's API URL; once read, the run uses that API (here one that does
    not answer: a one-line refusal) and the server started before them is gone."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text('active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    marker, out = f"run-{uuid.uuid4().hex}", tmp_path / "out.tif"
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(make_raster(32, 32)), "-o", str(out),
                           "--model", "bicubic"], cwd=REPO,
                          env={**cli_env, "PREFECT_HOME": str(home), "SR_GEO_TEST_MARKER": marker},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "sr-geo: error: cannot use the Prefect API at http://127.0.0.1:9/api (")
    assert not out.exists()
    assert not _servers_started_with(marker)


def test_a_request_is_checked_without_torch(make_raster, tmp_path) -> None:
    """Ray starts while torch and the networks load (1.2 s of imports) because nothing before it needs them:
    the commands' modules, the checks of a scene, a stack, the flags and the weights' headers run without
    torch, and a refusal comes before torch would have loaded."""
    scene, out = make_raster(32, 32), tmp_path / "out.tif"
    frames = [str(make_raster(32, 32, seed=seed, name=f"t{seed}.tif")) for seed in range(2)]
    x2 = REPO / "sr_geo" / "weights" / "cnn_x2.safetensors"
    probe = f"""
import sys
import flows.cli.run, flows.cli.run_stack, flows.cli.demo
from flows.cli.options import check_inference
from sr_geo.errors import InvalidRequestError
from sr_geo.models.registry import ModelSpec, weights_id
from sr_geo.preflight import validate_request
from sr_geo.stack import validate_stack_request

validate_request({str(scene)!r}, {str(out)!r}, ModelSpec("gan", 4))
validate_stack_request({frames!r}, {str(out)!r}, ModelSpec("rnn", 4))
check_inference(dict(model="rnn", uncertainty=False, consistent=True, sensor_mtf=0.25))
assert len(weights_id(ModelSpec("cnn", 4), 3)) == 64
for refused in (lambda: validate_request({str(scene)!r}, {str(out)!r}, ModelSpec("cnn", 4, {str(x2)!r})),
                lambda: check_inference(dict(model="rnn", uncertainty=True, consistent=False, sensor_mtf=None))):
    try:
        refused()
    except InvalidRequestError as exc:
        print(exc)
print("torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{x2}: weights are for ×2, not ×4",
                                        "--uncertainty is not supported for the temporal model 'rnn'; run without it",
                                        "False"]


@pytest.mark.slow
def test_the_driver_runs_a_scene_and_a_stack_without_torch(cli_env, make_raster, tmp_path) -> None:
    """Only the actors run models: the driver plans (the halo from the weights' header), tiles, exports and
    reports without torch, which would add 178 MiB and 1.4 CPU s to it."""
    scene = make_raster(32, 32)
    frames = [str(make_raster(32, 32, seed=seed, name=f"t{seed}.tif")) for seed in range(2)]
    probe = f"""
import sys
from flows.cli import main
for args in (["run", {str(scene)!r}, "-o", {str(tmp_path / "scene_x4.tif")!r}, "--model", "cnn"],
             ["run-stack", *{frames!r}, "-o", {str(tmp_path / "stack_x4.tif")!r}, "--model", "rnn"]):
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
print("torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False"
    assert (tmp_path / "scene_x4.tif").is_file() and (tmp_path / "stack_x4.tif").is_file()


def _servers_started_with(marker: str) -> list[int]:
    """Temporary Prefect servers still running whose environment holds `marker`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"prefect_server:create_app" in (proc / "cmdline").read_bytes() and marker.encode() in (
                    proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_flows_folder_in_the_working_directory_does_not_replace_the_server_app(cli_env, make_raster,
                                                                                tmp_path) -> None:
    """Prefect projects often hold a `flows` folder; `sr-geo run` from inside one still serves Prefect's API."""
    scene = make_raster(32, 32)
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("raise ImportError('the user project, not sr-geo')\n")
    done = subprocess.run([str(Path(sys.executable).parent / "sr-geo"), "run", str(scene), "-o",
                           str(tmp_path / "out.tif"), "--model", "bicubic"], cwd=tmp_path, env=cli_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.tif").is_file()
