"""Starting what a run needs side by side instead of one after the other.

`sr-geo run` on a 64² scene spent most of its 16–26 s waiting, in turn, for the pipeline's imports,
Ray's local start and Prefect's temporary API server. Here the temporary server (`flows.prefect_server`)
starts first, or has started already with the command (`start_early`), unless the environment or the
settings name an API; a helper thread then reads Prefect's settings (0.85 s of imports), stops that
server if they name an API after all (a Prefect profile or `.env` file), and imports the flow's modules,
while Ray starts in the main thread: Ray ties the life of the processes it starts to the thread that
starts them.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flows.prefect_server import claim_early, start_early
from sr_geo.errors import InvalidRequestError
from workers.cluster import ray_session


def _prepare(prefect_api_url: str | None, preload: str, result: dict) -> None:
    """In a helper thread: check the configured Prefect API, or use the temporary server in `result`, then
    import `preload` while the server comes up. Puts the URL to report to in `result`."""
    try:
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        configured = prefect_api_url or PREFECT_API_URL.value()
        if configured:
            if "server" in result:  # started before Prefect's settings said an API is configured
                result.pop("server").discard()
            _check_prefect_api(configured)
        importlib.import_module(preload)
        if not configured:
            result["server"].wait_until_up(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        result["url"] = configured or result["server"].url
    except BaseException as exc:  # re-raised in the caller's thread
        result["error"] = exc


def _check_prefect_api(url: str) -> None:
    """Fail in one line, before any work, when the configured Prefect API does not answer (Prefect's
    client would otherwise raise from inside the flow's first call)."""
    from prefect.client.orchestration import get_client

    with using_prefect_api(url):
        try:
            with get_client(sync_client=True) as client:
                client.raise_for_api_version_mismatch()
        except Exception as exc:  # connection refused, timeout, version mismatch, bad credentials
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InvalidRequestError(
                f"cannot use the Prefect API at {url} ({reason}): start it (`prefect server start`), fix "
                "--prefect-api-url or PREFECT_API_URL, or unset both to run on a temporary local server") from exc


@contextmanager
def run_services(ray_address: str | None, prefect_api_url: str | None, preload: str) -> Iterator[None]:
    """Ray connected and Prefect's API reachable for the flows run inside, started together while the
    module `preload` (the flow's) is imported.

    A configured Ray address or Prefect API is used as is, once it answers; what is started here is
    stopped on exit.
    """
    # Started before Prefect's settings are read, so that the server's imports overlap everything else.
    if not prefect_api_url:
        start_early()  # a no-op when the command started it already, or the environment names an API
    server = claim_early()
    prepared: dict = {"server": server} if server else {}
    helper = threading.Thread(target=_prepare, args=(prefect_api_url, preload, prepared), daemon=True)
    helper.start()
    try:
        with ray_session(ray_address, num_cpus=os.cpu_count()):
            helper.join()
            if "error" in prepared:
                raise prepared["error"]
            with using_prefect_api(prepared["url"]):
                yield
    finally:
        helper.join()
        if "server" in prepared:
            _send_pending_logs()
            prepared["server"].stop()


def _send_pending_logs() -> None:
    """Prefect sends run logs in batches; the last of them (a crash, a cancellation) must reach the
    temporary server before it stops, or they are lost and Prefect reports failing to send them."""
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()


@contextmanager
def using_prefect_api(url: str | None) -> Iterator[None]:
    """Talk to the Prefect server at `url`; with None, whatever Prefect's own settings say."""
    if not url:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings  # Prefect loads only for a run

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield
