"""Peak resident memory of the driver and of every process it starts (Ray workers included).

The kernel's high-water mark (VmHWM) is exact for a live process; a sampler thread records it for
each descendant while it lives, so processes that end before the measurement still count.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _status(pid: int) -> tuple[str, int, int] | None:
    """(command, parent pid, VmHWM in kB) of `pid`, or None if it is gone."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        return cmd, int(fields["PPid"]), int(fields.get("VmHWM", "0 kB").split()[0])
    except (OSError, KeyError, ValueError):
        return None


def role(cmd: str) -> str:
    if "ray::PredictorActor" in cmd:
        return "predictor actor"
    if any(part in cmd for part in ("raylet", "gcs_server", "dashboard", "monitor.py", "Agent", "runtime_env")):
        return "ray system"
    if "ray::" in cmd or "default_worker.py" in cmd:
        return "ray worker (idle)"
    if "uvicorn" in cmd or "prefect" in cmd:
        return "prefect server"
    return "other"


class PeakMemory:
    """Samples the process tree under this process; `peaks()` gives MiB per role (max over processes)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.hwm: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        me = os.getpid()
        table = {int(p.name): _status(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
        table = {pid: s for pid, s in table.items() if s is not None}
        for pid, (cmd, _, hwm) in table.items():
            ancestor = pid
            while ancestor in table and ancestor != me:
                ancestor = table[ancestor][1]
            if ancestor == me:
                old_role, old_hwm = self.hwm.get(pid, ("other", 0))
                new_role = "driver" if pid == me else role(cmd)
                # A process exiting loses its title; keep the most specific role it was seen with.
                self.hwm[pid] = (old_role if new_role == "other" else new_role, max(old_hwm, hwm))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def peaks(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, kb in self.hwm.values():
            out[name] = max(out.get(name, 0.0), kb / 1024)
        return out
