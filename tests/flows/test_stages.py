"""How the settings size the predictor pool, for clusters this machine does not have (GPUs, many nodes)."""

from __future__ import annotations

import pytest

from flows.stages import pool_config
from sr_geo.config import Config


@pytest.mark.parametrize(("config", "device", "cluster", "expected"), [
    # (cpus, CPUs of the largest node, gpus) → (actors, threads, gpus_per_actor, device)
    (Config(), "auto", (2, 2, 0), (1, 2, 0.0, "cpu")),
    (Config(), "auto", (32, 16, 0), (2, 16, 0.0, "cpu")),  # one actor per node's worth of threads
    (Config(actors=2), "auto", (2, 2, 0), (2, 1, 0.0, "cpu")),  # the CPUs shared between the actors
    (Config(actors=2, threads=2), "auto", (8, 8, 0), (2, 2, 0.0, "cpu")),
    (Config(gpus_per_actor=0.5), "auto", (2, 2, 0), (1, 2, 0.0, "cpu")),  # no GPU: no share asked of Ray
    (Config(), "auto", (16, 8, 2), (2, 8, 1.0, "cuda")),
    (Config(gpus_per_actor=0.5), "auto", (16, 8, 2), (4, 4, 0.5, "cuda")),  # two actors on each GPU
    (Config(gpus_per_actor=0.3), "auto", (16, 16, 1), (3, 5, 0.3, "cuda")),
    (Config(actors=1, threads=3, batch_size=8), "cuda", (16, 16, 2), (1, 3, 1.0, "cuda")),
    (Config(gpus_per_actor=0.5), "cpu", (16, 8, 2), (2, 8, 0.0, "cpu")),  # --device cpu keeps off the GPUs
])
def test_settings_fix_the_pool_and_the_cluster_sizes_the_rest(config, device, cluster, expected):
    pool = pool_config(config, device, *cluster)
    assert (pool.actors, pool.threads, pool.gpus_per_actor, pool.device) == expected
    assert pool.batch_size == config.batch_size
