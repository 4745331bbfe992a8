"""Handing memory that a finished stage freed back to the operating system.

glibc keeps freed blocks in its arenas (one per thread that allocated) instead of returning them,
and raises its mmap threshold after each large free, so later large arrays come from those arenas
too. A process then keeps the peak of every stage it ran: the driver began exporting at tiling's
peak and reporting at export's, so its peak grew with the scene. Trimming when a stage ends costs
milliseconds (a fixed mmap threshold, the other cure, cost 40 % more CPU in export).

A predictor actor has no stage ends: it allocates batch buffers of the same few sizes for its whole
life. There a fixed mmap threshold is the cure: each buffer of 4 MiB or more (a batch's output
tiles) is mapped on allocation and unmapped on free, so nothing accumulates. Measured on the CNN's
forward pass: a 4 MiB threshold costs under 1 % (1 MiB: 3 %, mapping the convolutions' temporaries
too); trimming after every batch, the alternative, cost 15–20 % more CPU.
"""

from __future__ import annotations

import ctypes

_LIBC = ctypes.CDLL(None)  # the C library this process already runs on
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def release_freed_memory() -> None:
    """Return the free pages of every malloc arena to the OS (glibc's malloc_trim; elsewhere nothing)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def map_large_blocks(threshold: int = 4 << 20) -> None:
    """From now on, serve every allocation of `threshold` bytes or more with its own mapping, returned to
    the OS when freed (glibc's mallopt; elsewhere nothing). Also stops glibc raising the threshold."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, threshold)
