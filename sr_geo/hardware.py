"""What CPU a measurement ran on, for benchmark reports and model cards.

Cloud machines of one kind may come with different CPUs (this project measured on an Intel Xeon with
AMX and on an AMD EPYC without native bfloat16), and speed figures, bfloat16's above all (2× faster with
AMX, several times slower emulated), mean nothing without the CPU they came from.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CPUINFO = Path("/proc/cpuinfo")
# CPU flags (Linux names) of native bfloat16 arithmetic; without them torch emulates it.
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
NO_NATIVE_BFLOAT16 = "no native bfloat16"


def cpu_description(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name and whether it computes bfloat16 natively, e.g. "AMD EPYC (no native bfloat16)"."""
    fields = _first_processor(cpuinfo)
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    if not flags:
        return name
    native = [flag for flag in BFLOAT16_FLAGS if flag in flags]
    return f"{name} ({'bfloat16: ' + ', '.join(native) if native else NO_NATIVE_BFLOAT16})"


def emulated_bfloat16(precision: str, hardware: Iterable[str]) -> bool:
    """Whether `precision` asks for bfloat16 where some of `hardware` (`device_description`s) only emulates
    it: several times slower than float32 there (a GAN training step 10–18 s against 2 s on an AMD EPYC)."""
    return precision == "bfloat16" and any(NO_NATIVE_BFLOAT16 in name for name in hardware)


def device_description(device: torch.device, cpuinfo: Path = CPUINFO) -> str:
    """What a model runs on: the GPU's name, or the CPU's (`cpu_description`). An actor reports it, since a
    cluster's nodes need not have the driver's hardware."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_description(cpuinfo)


def _first_processor(cpuinfo: Path) -> dict[str, str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields
