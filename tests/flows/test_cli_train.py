"""`sr-geo train` as a user runs it: a tiny training end to end, resuming, and one-line refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from flows.cli import main
from sr_geo.models.weights import load_weights


@pytest.fixture(autouse=True)
def restore_threads():
    """`--threads` sets torch's thread count for the whole process; give the next test its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_writes_weights_and_curves_and_resumes(make_raster, tmp_path) -> None:
    make_raster(256, 256, bands=4, dtype="uint16", name="scene.tif")
    run_dir = tmp_path / "run"
    args = ["train", f"{tmp_path}/scene*.tif@red=3,green=2,blue=1", "-o", str(run_dir), "--model", "cnn",
            "--scale", "2", "--steps", "6", "--patch", "32", "--batch-size", "2", "--feats", "8", "--blocks", "1",
            "--val-patches", "4", "--eval-every", "3", "--threads", "1"]
    runner = CliRunner()
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "after 6 steps" in first.output and "validation on" in first.output and "bicubic" in first.output
    weights = run_dir / "cnn_x2.safetensors"
    model = load_weights(weights)
    assert model.scale == 2 and model.effective_radius is not None
    assert (run_dir / "curves.png").is_file()

    again = runner.invoke(main, args)  # already finished: resumes at step 6 and only rewrites the artefacts
    assert again.exit_code == 0, again.output
    assert "after 6 steps" in again.output

    changed = runner.invoke(main, [*args, "--lr", "0.1"])
    assert changed.exit_code == 2
    assert changed.output.strip().splitlines()[-1].startswith("sr-geo: error:")
    assert "different settings (lr)" in changed.output and "--fresh" in changed.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["nothing*.tif"], "matches no raster"),
        (["--model", "bicubic", "x.tif"], "bicubic"),
        (["--scale", "3", "x.tif"], "3"),
        (["--patch", "30", "--scale", "4", "x.tif"], "multiple of scale"),
        ([], "at least one source"),
    ],
)
def test_train_refuses_bad_requests_in_one_line(args, fragment, tmp_path) -> None:
    result = CliRunner().invoke(main, ["train", "-o", str(tmp_path / "run"), *[
        str(tmp_path / a) if a.endswith(".tif") else a for a in args]])
    assert result.exit_code == 2
    assert fragment in result.output
    assert result.output.strip().splitlines()[-1].startswith("sr-geo: error:")


@pytest.mark.slow
def test_a_terminated_training_saves_its_checkpoint(make_raster, tmp_path, cli_env) -> None:
    """SIGTERM (a scheduler preempting the job) stops training like Ctrl-C: the steps done so far are
    checkpointed, so the rerun resumes from them instead of from the last periodic checkpoint."""
    make_raster(256, 256, bands=3, dtype="uint16", name="scene.tif")
    run_dir = tmp_path / "run"
    train = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "train", f"{tmp_path}/scene.tif", "-o", str(run_dir), "--model", "cnn",
         "--scale", "2", "--steps", "100000", "--patch", "32", "--batch-size", "2", "--feats", "8", "--blocks", "1",
         "--val-patches", "2", "--eval-every", "2", "--threads", "1"],
        cwd=Path(__file__).resolve().parents[2], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in train.stdout:  # validation lines: the run is past its first steps
        if line.startswith("step 4:"):
            break
    train.send_signal(signal.SIGTERM)
    _, stderr = train.communicate(timeout=120)
    assert train.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == "sr-geo: terminated; rerun the same command to resume"
    assert json.loads((run_dir / "progress.json").read_text())["step"] >= 4
