"""`sr_geo.memory`: freed memory goes back to the operating system, measured on a process of its own."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A buffer freed after glibc raised its mmap threshold (as every large free does) stays in the heap;
# the probe frees an 8 MiB buffer after that and reports how much of it the process still holds.
PROBE = """
import ctypes, json, os, sys
from sr_geo.memory import map_large_blocks

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
page = os.sysconf("SC_PAGE_SIZE")

def resident() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * page

def churn(size: int) -> int:
    before = resident()
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    return resident() - before

churn(16 << 20)  # a large free raises glibc's dynamic threshold to 16 MiB
if sys.argv[1] == "map":
    map_large_blocks()
print(json.dumps(churn(8 << 20)))
"""


def _kept_mib(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) / 2**20


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt") or not Path("/proc/self/statm").exists(),
                    reason="glibc on Linux only")
def test_large_blocks_are_returned_once_mapped_and_kept_otherwise() -> None:
    assert _kept_mib("plain") >= 7.5  # the premise: glibc keeps the freed 8 MiB in its heap
    assert _kept_mib("map") < 0.5
