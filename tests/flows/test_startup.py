"""`flows.startup.run_services`: Ray and Prefect's temporary server started side by side, and stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, socket
import ray
import sys
from prefect import flow
from prefect.server.api.server import SubprocessASGIServer
from flows.startup import run_services

@flow
def answer() -> int:
    return 42

with run_services(None, None, preload="sr_geo.export"):
    server = SubprocessASGIServer()
    seen = {"url": server.api_url, "running": server.running, "ray": ray.is_initialized(),
            "preloaded": "sr_geo.export" in sys.modules, "flow": answer()}
    seen["same_server"] = SubprocessASGIServer().api_url == seen["url"]
port = int(seen["url"].split(":")[2].split("/")[0])
with socket.socket() as probe:
    seen["server_gone"] = probe.connect_ex(("127.0.0.1", port)) != 0
seen["ray_after"] = ray.is_initialized()
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_run_services_starts_ray_and_a_temporary_prefect_server_then_stops_both(cli_env) -> None:
    """No Prefect API and no Ray address configured: both are started here, a flow runs against the
    temporary server Prefect's client reuses (no second one), and nothing is left running afterwards."""
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["url"].startswith("http://127.0.0.1:") and seen["url"].endswith("/api")
    assert seen["running"] and seen["same_server"]
    assert seen["ray"] and seen["preloaded"] and seen["flow"] == 42
    assert seen["server_gone"] and not seen["ray_after"]


@pytest.mark.slow
def test_a_configured_prefect_api_is_used_as_is(cli_env) -> None:
    """A running server given by URL is talked to; no temporary one is started beside it."""
    probe = ("import socket\n"
             "from flows.startup import run_services\n"
             "from prefect.settings import PREFECT_API_URL\n"
             "from prefect.server.api.server import SubprocessASGIServer\n"
             "with socket.socket() as free:\n"
             "    free.bind(('127.0.0.1', 0))\n"
             "    port = free.getsockname()[1]\n"
             "with SubprocessASGIServer(port=port) as running:  # a server of its own, not the temporary one\n"
             "    url = running.api_url\n"
             "    with run_services(None, url, preload='json'):\n"
             "        print(SubprocessASGIServer().running, PREFECT_API_URL.value() == url)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False True"
