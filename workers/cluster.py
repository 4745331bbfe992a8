"""Connecting to Ray: a private local cluster by default, a configured one when given an address."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from sr_geo.errors import InvalidRequestError


class _DefaultAuthNotice(logging.Filter):
    """Drops the line Ray logs on every local start to say it turned token authentication on, as it
    does by default (the cluster stays token-protected): sr-geo's output and one-line errors stay clean."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_DEFAULT_AUTH_NOTICE = _DefaultAuthNotice()


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use an already connected Ray, else connect to `address` (or $RAY_ADDRESS), else start one locally.

    Only a connection made here is closed here, so a flow can run inside a Ray job or a test cluster.
    """
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    with _caller_keeps_sigterm():
        if address:
            _check_reachable(address)
            try:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            except ConnectionError as exc:
                raise InvalidRequestError(f"cannot connect to the Ray cluster at {address}: {_why(exc)}") from exc
        else:
            logging.getLogger(_AUTH_LOGGER).addFilter(_DEFAULT_AUTH_NOTICE)
            # "local" never attaches to a stale cluster address left on the machine.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield
    finally:
        if not address:
            _stop_autoscaler_monitor()
        ray.shutdown()


def _stop_autoscaler_monitor() -> None:
    """Stop the local cluster's autoscaler monitor before `ray.shutdown`, which stops the GCS before it:
    the monitor's SIGTERM handler then reports to the dead GCS until Ray kills it a second later, 1.0
    of the 1.35 s that the shutdown took on every local run. A one-node cluster has nothing to scale."""
    node = ray._private.worker._global_node
    if node is not None:
        node.kill_monitor(check_alive=False)


@contextmanager
def _caller_keeps_sigterm() -> Iterator[None]:
    """`ray.init` installs a SIGTERM handler that exits with code 15 wherever the signal lands; a caller
    that handles SIGTERM itself (the CLI unwinds the run and says so in one line) keeps its own, for a
    SIGTERM that arrives while Ray starts too."""
    handler = signal.getsignal(signal.SIGTERM)
    if not callable(handler) or threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        yield
    except SystemExit as exc:
        if exc.code == signal.SIGTERM:
            handler(signal.SIGTERM, None)
        raise
    finally:
        signal.signal(signal.SIGTERM, handler)


def _check_reachable(address: str) -> None:
    """Ray retries an address where nothing listens for minutes; a refused TCP connection fails at once."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if "/" in target or not (host and port.isdigit()):
        return  # "auto", URLs and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise InvalidRequestError(
            f"cannot connect to the Ray cluster at {address}: nothing answers there ({exc.strerror or exc}); "
            "check --ray-address or RAY_ADDRESS") from exc


def _why(exc: BaseException | None) -> str:
    """What to check, from the exception chain of a failed `ray.init`: Ray keeps the cause of its last
    attempt only as traceback text inside a RuntimeError a few levels down."""
    while exc is not None:
        if isinstance(exc, ray.exceptions.AuthenticationError) or "AuthenticationError" in str(exc):
            return ("it refused our authentication; a token-protected cluster (`ray start`'s default) needs "
                    "RAY_AUTH_MODE=token here and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")
        exc = exc.__cause__ or exc.__context__
    return "it did not answer as a Ray cluster; check --ray-address or RAY_ADDRESS"


def cluster_resources() -> tuple[int, int, int, float]:
    """(CPUs, CPUs of the largest node, GPUs, memory of the largest node in bytes) Ray can schedule on:
    an actor must fit on one node."""
    resources = ray.cluster_resources()
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    node_cpus = max((int(node.get("CPU", 0)) for node in nodes), default=1)
    node_memory = max((float(node.get("memory", 0)) for node in nodes), default=0.0)
    return int(resources.get("CPU", 1)), max(1, node_cpus), int(resources.get("GPU", 0)), node_memory
