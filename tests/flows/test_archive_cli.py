"""`sr-geo archive` refuses a bad request in one line, before Prefect or Ray start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "config", "fragment"), [
    (["nowhere"], None, "nowhere: no such file or folder"),
    (["{src}"], "scenes_in_flight = 0\n", "scenes_in_flight = 0 is out of range"),
    (["{src}"], "scenes = 2\n", "unknown settings scenes"),
    (["{src}", "--model", "cnn", "--weights", "{src}/missing.safetensors"], None, "missing.safetensors"),
])
def test_bad_request_is_one_line_and_writes_nothing(tmp_path, cli_env, args, config, fragment):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    env = dict(cli_env)
    if config is not None:
        (tmp_path / "sr-geo.toml").write_text(config)
        env["SR_GEO_CONFIG"] = str(tmp_path / "sr-geo.toml")
    argv = [a.format(src=src) for a in args]
    result = subprocess.run([sys.executable, "-m", "flows.cli", "archive", *argv, "-o", str(dest)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sr-geo: error:") and fragment in lines[0], result.stderr
    assert not dest.exists()
