"""Starting what a run needs side by side instead of one after the other.

`sr-geo run` on a 64² scene took 21 s, mostly waiting: the pipeline's imports (3 s), Ray (3–6 s)
and Prefect's temporary API server (3.5 s, after 1.8 s importing Prefect's server code into the
CLI's own process), in turn. Here the server is spawned first as a plain subprocess, so the CLI
never imports the server code; the pipeline's modules load in a helper thread; and Ray starts
meanwhile in the main thread, because Ray ties its processes' lives to the thread that starts them
(a helper thread's end would kill them). A configured Prefect API or Ray address is used as is.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workers.cluster import ray_session


class TemporaryPrefectServer:
    """Prefect's API without the UI or background services, in a subprocess on a free local port:
    what Prefect itself starts when no API is configured, launched the same way."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"},
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float) -> str:
        """The API URL, once the server answers its health check."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1):
                    return self.api_url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise RuntimeError(f"the temporary Prefect server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _prepare(prefect_api_url: str | None, preload: str, result: dict) -> None:
    """In a helper thread: spawn a temporary Prefect server unless one is configured, then import `preload`."""
    try:
        from prefect.settings import PREFECT_API_URL

        if not (prefect_api_url or PREFECT_API_URL.value()):
            result["server"] = TemporaryPrefectServer()
        importlib.import_module(preload)
    except BaseException as exc:  # re-raised in the caller's thread
        result["error"] = exc


@contextmanager
def run_services(ray_address: str | None, prefect_api_url: str | None, preload: str = "flows.scene",
                 ) -> Iterator[str | None]:
    """Ray connected and a Prefect API up, started together while `preload` is imported.

    Yields the Prefect API URL the flow must use: `prefect_api_url`, else None when Prefect's own
    settings name a server, else a temporary server's, stopped on exit like the Ray started here.
    """
    prepared: dict = {}
    helper = threading.Thread(target=_prepare, args=(prefect_api_url, preload, prepared), daemon=True)
    helper.start()
    try:
        with ray_session(ray_address, num_cpus=os.cpu_count()):
            helper.join()
            if "error" in prepared:
                raise prepared["error"]
            if "server" in prepared:
                from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

                prefect_api_url = prepared["server"].wait_ready(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
            yield prefect_api_url
    finally:
        helper.join()
        if "server" in prepared:
            prepared["server"].stop()
