"""Handing memory that a finished stage freed back to the operating system.

glibc keeps freed blocks in its arenas (one per thread that allocated) instead of returning them,
and raises its mmap threshold after each large free, so later large arrays come from those arenas
too. A process then keeps the peak of every stage it ran: the driver began exporting at tiling's
peak and reporting at export's, so its peak grew with the scene. Trimming when a stage ends costs
milliseconds (a fixed mmap threshold, the other cure, cost 40 % more CPU in export).
"""

from __future__ import annotations

import ctypes


def release_freed_memory() -> None:
    """Return the free pages of every malloc arena to the OS (glibc's malloc_trim; elsewhere nothing)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
