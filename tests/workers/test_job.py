"""An archive submitted as a Ray job to a real two-node local cluster, through the job-submission API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import rasterio

from conftest import free_port, smooth_texture, write_raster

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent



class RayNodes:
    """A local Ray cluster made of `ray start --block` processes that this test owns.

    Each node is its own process group, so one node can be crashed alone (SIGKILL to the group) and
    teardown ends exactly these processes. `ray stop` is never used: it stops every Ray process of
    the user, other people's included. Token auth is off for server and clients alike (loopback only),
    unless an `auth_token` is given: then the nodes require it.
    """

    def __init__(self, auth_token: str | None = None) -> None:
        self.tmp = tempfile.mkdtemp(prefix="srg-", dir="/tmp")  # short: Ray's unix sockets live here
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_"))}
        self.env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                        PATH=f"{BIN}{os.pathsep}{self.env.get('PATH', '')}",  # a job's `python` is this venv's
                        # a crashed node is declared dead in ~2 s instead of ~30 s
                        RAY_health_check_period_ms="500", RAY_health_check_timeout_ms="1000",
                        RAY_health_check_failure_threshold="3")
        if auth_token:
            self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=auth_token)
        self.headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        # Each node its own temp dir, as on separate machines: nodes sharing one would garbage-collect
        # each other's copies of a job's working dir.
        temp = Path(self.tmp) / name
        temp.mkdir()
        log = open(Path(self.tmp) / f"{name}.log", "w")  # noqa: SIM115 - kept open for the process's life
        node = subprocess.Popen([str(BIN / "ray"), "start", *args, "--disable-usage-stats", "--block",
                                 f"--temp-dir={temp}", f"--dashboard-agent-listen-port={free_port()}"],
                                env={**self.env, "RAY_TMPDIR": str(temp)}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int) -> None:
        self._start(["--head", f"--port={self.port}", f"--num-cpus={num_cpus}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}"], "head")
        self._wait_for_nodes(1)

    def add_node(self, num_cpus: int) -> subprocess.Popen:
        node = self._start([f"--address={self.address}", f"--num-cpus={num_cpus}"], f"node{len(self.nodes)}")
        self._wait_for_nodes(len(self.nodes))
        return node

    def alive_nodes(self) -> list[dict]:
        request = urllib.request.Request(f"{self.dashboard}/api/v0/nodes?limit=100", headers=self.headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            nodes = json.load(response)["data"]["result"]["result"]
        return [n for n in nodes if n["state"] == "ALIVE"]

    def _wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert all(n.poll() is None for n in self.nodes), self.logs()
            try:
                if len(self.alive_nodes()) == count:
                    return
            except OSError:
                pass  # the dashboard is not up yet
            assert time.monotonic() < deadline, f"{count} nodes not alive in {timeout} s\n{self.logs()}"
            time.sleep(0.5)

    def crash(self, node: subprocess.Popen) -> None:
        """Kill a node's every process at once, as a lost machine would be."""
        _signal_group(node, signal.SIGKILL)
        node.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(Path(self.tmp).glob("*.log")))

    def stop(self) -> None:
        """SIGTERM every process of every node, then SIGKILL what is left after a few seconds
        (`ray start --block` alone takes ~30 s to wind down gracefully)."""
        for node in self.nodes:
            _signal_group(node, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for node in self.nodes:
            try:
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(node, signal.SIGKILL)
            node.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _signal_group(node: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(node.pid, signum)
    except ProcessLookupError:
        pass  # the whole group is gone already


@pytest.fixture
def ray_nodes():
    cluster = RayNodes()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_archive_job_runs_on_a_two_node_cluster(ray_nodes, tmp_path):
    """`ray job submit -- python -m workers.job archive ...`, through the job-submission API.

    The head takes no actors (num-cpus 0, as in infra/), so inference runs on the second node while
    the driver (discovery, tiling, export, Prefect) runs on the head.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    ray_nodes.start_head(num_cpus=0)
    ray_nodes.add_node(num_cpus=1)
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.tif", "sub/b.tif"]):
        write_raster(src / name, (1 + smooth_texture((2, 30, 36), i) * 1000).astype("uint16"))
    client = JobSubmissionClient(ray_nodes.dashboard)
    job = client.submit_job(
        entrypoint=f"python -m workers.job archive {src} -o {dest} --model bicubic --scale 2 --tile 32",
        runtime_env={"working_dir": str(REPO), "excludes": ["tests/", "docs/", "benchmarks/", "infra/", "*.zarr"],
                     "env_vars": {"PREFECT_HOME": str(tmp_path / "prefect"),
                                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}},
    )
    deadline = time.monotonic() + 240
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:] + ray_nodes.logs()
    assert "2 done, 0 skipped, 0 failed" in logs
    for name in ["a.tif", "sub/b.tif"]:
        with rasterio.open(dest / name) as out:
            assert (out.height, out.width) == (60, 72) and out.tags()["SR_GEO_MODEL"] == "bicubic"
    assert (dest / "item-collection.json").exists()
