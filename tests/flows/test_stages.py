"""`flows.stages.describe_pool`: the one line that says how a run's inference ran."""

from __future__ import annotations

import pytest

from flows.stages import describe_pool

POOL = {"actors": 2, "threads": 4, "gpus_per_actor": 0.0, "batch_size": 8, "device": "cpu", "precision": "float32"}


@pytest.mark.parametrize(("pool", "hardware", "expected"), [
    (POOL, ["AMD EPYC (no native bfloat16)"],
     "2 actors × 4 threads on AMD EPYC (no native bfloat16) in float32, batches of 8 tiles"),
    ({**POOL, "actors": 1, "gpus_per_actor": 0.5, "device": "cuda", "precision": "bfloat16"}, ["NVIDIA H100 80GB HBM3"],
     "1 actor × 4 threads, 0.5 GPU each on NVIDIA H100 80GB HBM3 in bfloat16, batches of 8 tiles"),
    ({**POOL, "precision": "bfloat16"}, ["AMD EPYC (no native bfloat16)", "Intel(R) Xeon(R) (bfloat16: amx_bf16)"],
     "2 actors × 4 threads on AMD EPYC (no native bfloat16); Intel(R) Xeon(R) (bfloat16: amx_bf16) in bfloat16 "
     "(emulated where a CPU lacks it: several times slower than float32), batches of 8 tiles"),
    (POOL, [], "2 actors × 4 threads on cpu in float32, batches of 8 tiles"),  # no tile was left to infer
])
def test_the_pool_is_named_with_what_its_actors_ran_on(pool: dict, hardware: list[str], expected: str) -> None:
    assert describe_pool(pool, hardware) == expected
