"""`workers.cluster.ray_session` against a cluster that is not what the configuration says."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import uuid

import pytest

from test_job import REPO, RayNodes

PROBE = """
import sys
from sr_geo.errors import SrGeoError
from workers.cluster import ray_session
try:
    with ray_session(sys.argv[1]):
        print("connected")
except SrGeoError as exc:
    print(exc)
"""


@pytest.mark.slow
def test_a_cluster_that_refuses_our_token_is_named_with_what_to_check() -> None:
    cluster = RayNodes(auth_token=uuid.uuid4().hex)
    try:
        cluster.start_head(num_cpus=1)
        # Ray retries a refused connection 20 times, a second apart; two are enough here.
        env = {**cluster.env, "RAY_AUTH_TOKEN": uuid.uuid4().hex, "RAY_NUM_REDIS_GET_RETRIES": "2"}
        wrong = subprocess.run([sys.executable, "-c", PROBE, cluster.address], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=120)
        right = subprocess.run([sys.executable, "-c", PROBE, cluster.address], cwd=REPO, env=cluster.env,
                               capture_output=True, text=True, timeout=120)
    finally:
        cluster.stop()
    assert wrong.stdout.strip().splitlines()[-1] == (
        f"cannot connect to the Ray cluster at {cluster.address}: it refused our authentication; a token-protected "
        "cluster (`ray start`'s default) needs RAY_AUTH_MODE=token here and its token (RAY_AUTH_TOKEN or "
        "~/.ray/auth_token)"), wrong.stderr
    assert right.stdout.strip().splitlines()[-1] == "connected", right.stderr


LOCAL_SESSION = """
import ray
from workers.cluster import ray_session
with ray_session(None, num_cpus=1):
    started = {kind: [info.process.pid for info in infos]
               for kind, infos in ray._private.worker._global_node.all_processes.items()}
print(started)
"""


@pytest.mark.slow
def test_a_local_session_leaves_no_ray_process_behind() -> None:
    """The run stops the autoscaler's monitor itself before `ray.shutdown` (which would wait a second for
    it): that and every other process the session started are gone when it ends."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", LOCAL_SESSION], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    started = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert {"monitor", "raylet", "gcs_server"} <= set(started)
    assert [pid for pids in started.values() for pid in pids if _running(pid)] == []


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
