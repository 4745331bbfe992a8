"""`flows.ports.free_port`: a server's port that outgoing connections cannot take first."""

from __future__ import annotations

import socket
from pathlib import Path

from flows.ports import LOWEST, free_port


def _range(tmp_path: Path, low: int, high: int) -> Path:
    path = tmp_path / "ip_local_port_range"
    path.write_text(f"{low}\t{high}\n")
    return path


def test_a_port_below_the_ephemeral_range_that_a_server_can_bind(tmp_path: Path) -> None:
    ephemeral = _range(tmp_path, 32768, 60999)
    ports = {free_port(ephemeral_range=ephemeral) for _ in range(20)}
    assert all(LOWEST <= port < 32768 for port in ports) and len(ports) > 1  # drawn at random
    with socket.socket() as server:
        server.bind(("127.0.0.1", ports.pop()))


def test_a_port_a_server_holds_is_never_given(tmp_path: Path) -> None:
    ephemeral = _range(tmp_path, LOWEST + 1, 60999)  # one candidate only
    with socket.socket() as server:
        server.bind(("127.0.0.1", LOWEST))
        server.listen()
        port = free_port(ephemeral_range=ephemeral)
    assert port != LOWEST and port > 0  # the kernel's choice


def test_without_room_below_the_range_or_its_record_the_kernel_chooses(tmp_path: Path) -> None:
    for ephemeral in (_range(tmp_path, 1024, 65535), tmp_path / "missing"):
        with socket.socket() as server:
            server.bind(("127.0.0.1", free_port(ephemeral_range=ephemeral)))
