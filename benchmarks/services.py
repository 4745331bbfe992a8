"""A Ray head and a Prefect server kept running, as on a machine that runs scheduled jobs.

`sr-geo run` then connects to both (RAY_ADDRESS, PREFECT_API_URL) instead of starting them: the
start-up the benchmark reports beside the self-contained one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.ports import free_port

BIN = Path(sys.executable).parent


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait(ready, what: str, processes: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.2)


@contextmanager
def running_services(env: dict[str, str], tmp: Path) -> Iterator[dict[str, str]]:
    """Start both (each in its own process group, stopped by signal: `ray stop` would end every Ray
    process of the user); yields `env` plus the variables that point `sr-geo` at them."""
    ray_port, prefect_port, dashboard_agent = free_port(), free_port(), free_port()
    ray_temp = Path(tmp) / "ray"
    ray_temp.mkdir()
    common = {**env, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    started = [
        subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={ray_port}",
                          f"--num-cpus={os.cpu_count()}", "--include-dashboard=false", "--disable-usage-stats",
                          f"--temp-dir={ray_temp}", f"--dashboard-agent-listen-port={dashboard_agent}"],
                         env={**common, "RAY_TMPDIR": str(ray_temp)}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True),
        subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                         env=common, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
    ]
    try:
        _wait(lambda: _answers(f"http://127.0.0.1:{prefect_port}/api/health"), "the Prefect server", started)
        _wait(lambda: _listening(ray_port), "the Ray head", started)
        yield {**common, "RAY_ADDRESS": f"127.0.0.1:{ray_port}",
               "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api"}
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
