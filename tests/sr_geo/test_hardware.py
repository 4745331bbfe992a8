from pathlib import Path

import pytest

from sr_geo.hardware import cpu_description, device_description, emulated_bfloat16

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


@pytest.mark.parametrize(("precision", "hardware", "expected"), [
    ("bfloat16", ["AMD EPYC (no native bfloat16)"], True),
    ("bfloat16", ["Intel(R) Xeon(R) Platinum 8480C (bfloat16: amx_bf16)", "AMD EPYC (no native bfloat16)"], True),
    ("bfloat16", ["Intel(R) Xeon(R) Platinum 8480C (bfloat16: amx_bf16)", "NVIDIA H100 80GB HBM3"], False),
    ("float32", ["AMD EPYC (no native bfloat16)"], False),
])
def test_bfloat16_is_flagged_where_a_cpu_only_emulates_it(precision: str, hardware: list[str], expected: bool) -> None:
    assert emulated_bfloat16(precision, hardware) is expected
