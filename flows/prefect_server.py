"""A temporary local Prefect API server, for runs with no Prefect server configured.

Prefect's client starts one itself on first use (`SubprocessASGIServer`), but reaching that class
imports Prefect's whole server package (FastAPI, SQLAlchemy, every API route) into the client's
process: 3.8 s on a 2-core machine, spent again by the server's own process and competing with
Ray's start for the same cores. Here only the server's process imports it; the run's process goes
on starting Ray and reports to the server's URL as it would to any configured server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flows.ports import free_port
from sr_geo.errors import InvalidRequestError


def create_app():
    """uvicorn's factory, called in the server's process: Prefect's API app as Prefect's own temporary
    server serves it (ephemeral: no UI, no background services; final: the only app of its process)."""
    from prefect.server.api.server import create_app as create_prefect_app

    threading.Thread(target=_stop_when_the_run_is_gone, daemon=True).start()
    return create_prefect_app(ephemeral=True, final=True)


def _stop_when_the_run_is_gone() -> None:
    """The server's stdin is a pipe that only the run holds open: end of file means the run closed it
    (`TemporaryServer.stop`) or died, even killed outright (SIGKILL, the OOM killer) with no chance to
    stop anything; either way the server shuts down as uvicorn does on SIGTERM instead of lingering."""
    sys.stdin.buffer.read()
    os.kill(os.getpid(), signal.SIGTERM)


class TemporaryServer:
    """Prefect's API under uvicorn on a free loopback port, from construction until `stop`.

    It uses the database of the Prefect settings it inherits (`PREFECT_HOME`, or
    `PREFECT_SERVER_DATABASE_CONNECTION_URL`), as Prefect's temporary server does.
    """

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        # --app-dir: this package, not a `flows` folder of the user's working directory, serves the app
        self._process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).resolve().parents[1]), "--factory",
             f"{__name__}:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
             "--lifespan", "on"], stdin=subprocess.PIPE)

    def wait_until_up(self, timeout: float) -> None:
        """Returns once the API answers its health check; fails in one line if the server exits or
        `timeout` passes (what to do is in the message)."""
        import httpx  # not among what `start_early` imports before the server starts

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise InvalidRequestError(
                        f"the temporary Prefect server at {self.url} exited with code {self._process.returncode} "
                        "before answering (its output is above); or set PREFECT_API_URL to a running server")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise InvalidRequestError(
            f"the temporary Prefect server at {self.url} did not answer within {timeout:g} s; raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a busy machine, or set PREFECT_API_URL to a running server")

    def discard(self) -> None:
        """Ends a server that served nothing at once: uvicorn holds a SIGTERM until the app has loaded
        (2–3 s on 2 cores), which a refused command should not wait for."""
        self._process.stdin.close()
        self._process.kill()
        self._process.wait()

    def stop(self) -> None:
        """Ends the server: SIGTERM lets uvicorn close the database; a server that hangs is killed."""
        self._process.stdin.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


_early: list[TemporaryServer] = []  # the one `start_early` started, until claimed or stopped


def start_early() -> None:
    """Start the temporary server now, unless one is started or the environment names a Prefect API. The
    CLI calls this before a command's own imports: the server's start (3 s of CPU, mostly imports) is the
    longest wait of a small run, and the run's imports (torch and the pipeline, 1.2 s on one core) leave
    the machine's other cores idle. A Prefect profile or `.env` file that names an API is only seen once
    Prefect's settings load; the run then discards this server (`flows.startup`)."""
    if not _early and not os.environ.get("PREFECT_API_URL"):
        _early.append(TemporaryServer())


def claim_early() -> TemporaryServer | None:
    """The server `start_early` started, now the caller's to stop; None if there is none."""
    return _early.pop() if _early else None


def discard_early() -> None:
    """End an early server nobody claimed (the command was refused, or only printed its help)."""
    while _early:
        _early.pop().discard()
