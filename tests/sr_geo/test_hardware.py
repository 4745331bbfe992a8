from pathlib import Path

import pytest

from sr_geo.hardware import cpu_description, device_description

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu sse2
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f
"""


@pytest.mark.parametrize(("text", "expected"), [
    (XEON, "Intel(R) Xeon(R) Platinum 8480C (bfloat16: amx_bf16, avx512_bf16)"),
    (EPYC, "AMD EPYC (no native bfloat16)"),
])
def test_the_cpu_is_named_with_its_bfloat16_support(tmp_path: Path, text: str, expected: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_description(cpuinfo) == expected


def test_without_cpuinfo_the_platform_names_the_cpu(tmp_path: Path) -> None:
    assert cpu_description(tmp_path / "missing")  # a name from `platform`, whatever the OS
    assert "bfloat16" not in cpu_description(tmp_path / "missing")


def test_a_cpu_device_is_described_by_its_cpu(tmp_path: Path) -> None:
    import torch

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(EPYC)
    assert device_description(torch.device("cpu"), cpuinfo) == "AMD EPYC (no native bfloat16)"
