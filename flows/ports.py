"""Loopback ports for servers a run or a test starts (the temporary Prefect server, and in tests Ray heads
and an S3 server).

A port from `bind(port 0)` is free when asked but lies in the kernel's ephemeral range, which every
outgoing connection draws from too: Ray alone opens hundreds while a run starts, and one of them may take
the port in the seconds before the server binds it (the server then exits with "address in use"). A
port below that range is taken only by a server that binds it on purpose.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Below the ephemeral range and above Ray's default worker ports (10002–19999).
LOWEST = 20000


def free_port(host: str = "127.0.0.1", ephemeral_range: Path = EPHEMERAL_RANGE) -> int:
    """A port on `host` that nothing listens on now, below the ephemeral range where there is room."""
    try:
        first_ephemeral = int(ephemeral_range.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = LOWEST
    candidates = range(LOWEST, first_ephemeral)
    for port in random.sample(candidates, min(len(candidates), 20)):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:  # no room below it (or all taken): the kernel's choice
        probe.bind((host, 0))
        return probe.getsockname()[1]
