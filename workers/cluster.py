"""Connecting to Ray: a private local cluster by default, a configured one when given an address."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray


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
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        # "local" never attaches to a stale cluster address left on the machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def cluster_resources() -> tuple[int, int, int]:
    """(CPUs, CPUs of the largest node, GPUs) Ray can schedule on: an actor must fit on one node."""
    resources = ray.cluster_resources()
    node_cpus = max((int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")), default=1)
    return int(resources.get("CPU", 1)), max(1, node_cpus), int(resources.get("GPU", 0))
