"""`sr_geo.storage.output_lock`: one run per output, locally (flock) and on an object store (lease), and
a killed holder never blocks its rerun for long."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

from sr_geo import storage
from sr_geo.errors import InvalidRequestError

REPO = Path(__file__).resolve().parents[2]
CONTENDER = """
import sys
from sr_geo.errors import InvalidRequestError
from sr_geo.storage import output_lock
try:
    with output_lock(sys.argv[1]):
        print("acquired")
except InvalidRequestError as exc:
    print(exc)
"""


def _contend(destination: str, env: dict | None = None) -> str:
    """Another process trying the same output now: what it reports."""
    done = subprocess.run([sys.executable, "-c", CONTENDER, destination], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_local_output_is_claimed_by_one_run_at_a_time(tmp_path, cli_env):
    destination = str(tmp_path / "out" / "scene.tif")
    with storage.output_lock(destination):
        with storage.output_lock(destination):  # re-entrant in the holding process
            assert "another sr-geo run is writing this output" in _contend(destination, cli_env)
    assert _contend(destination, cli_env) == "acquired"
    assert list((tmp_path / "out").iterdir()) == []  # nothing left beside the output


@pytest.fixture
def s3_env(s3_server, cli_env, monkeypatch) -> dict[str, str]:
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    return {**cli_env, **s3_server}


def test_an_object_store_output_is_claimed_by_a_renewed_lease(s3_env, monkeypatch):
    monkeypatch.setattr(storage, "LEASE_SECONDS", 2.0)
    destination = "s3://sr-geo/lease/scene.tif"
    lock = "sr-geo/lease/.scene.tif.sr-geo.lock"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    with storage.output_lock(destination):
        first = json.loads(fs.cat_file(lock))
        assert "another sr-geo run is writing this output" in _contend(destination, s3_env)
        time.sleep(1.5)  # past a renewal (every LEASE_SECONDS / 4)
        assert json.loads(fs.cat_file(lock))["expires"] > first["expires"]
    assert not fs.exists(lock)
    assert _contend(destination, s3_env) == "acquired"


def test_a_killed_runs_lease_is_taken_over_once_expired(s3_env):
    destination = "s3://sr-geo/lease/killed.tif"
    lock = "sr-geo/lease/.killed.tif.sr-geo.lock"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe_file(lock, json.dumps({"owner": "killed", "expires": time.time() + 60}).encode())
    with pytest.raises(InvalidRequestError, match=r"its lease runs \d+ s more"):
        with storage.output_lock(destination):
            pass
    fs.pipe_file(lock, json.dumps({"owner": "killed", "expires": time.time() - 1}).encode())
    with storage.output_lock(destination):
        assert json.loads(fs.cat_file(lock))["owner"] != "killed"
    assert not fs.exists(lock)
