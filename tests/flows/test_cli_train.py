"""`sr-geo train` as a user runs it: a tiny training end to end, resuming, and one-line refusals."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from flows.cli import main
from sr_geo.models.registry import ARCHITECTURES
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
    model = load_weights(weights, ARCHITECTURES)
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
