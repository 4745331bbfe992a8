"""`sr-geo eval` and its flow: the real pipeline on tiny rasters, and the refusals before any work."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import smooth_texture, write_raster
from flows.cli import main
from sr_geo.models import registry

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_eval_through_the_real_flow(make_raster, tmp_path):
    from prefect.artifacts import Artifact

    from flows.evaluate import evaluate_models

    mask = np.ones((96, 88), dtype=bool)
    mask[:20, :30] = False
    landsat_like = make_raster(96, 88, bands=3, dtype="uint16", seed=7, name="l8.tif", mask=mask)
    worldview_like = write_raster(tmp_path / "wv2.tif", 100 + 900 * smooth_texture((4, 64, 64), seed=8))  # float64

    out = tmp_path / "eval"
    result = evaluate_models([str(landsat_like), str(worldview_like)], ["lanczos"], 4, str(out), tile=16)

    assert [(r["raster"], r["model"]) for r in result["rows"]] == [
        ("l8", "bicubic"), ("l8", "lanczos"), ("wv2", "bicubic"), ("wv2", "lanczos")]
    with open(out / "eval_x4.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    for row in rows:
        assert 15 < float(row["psnr"]) < math.inf
        assert 0 < float(row["ssim"]) < 1 and float(row["cpsnr"]) >= float(row["psnr"]) - 0.5
        assert float(row["lr_psnr"]) > 30
        assert 0 < float(row["hf_ratio"]) < 1  # interpolation adds no fine detail
    table = (out / "eval_x4.md").read_text()
    assert table.count("| **mean** |") == 2 and "| wv2 | lanczos |" in table
    png = (out / "eval_x4_grid.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert Artifact.get("sr-geo-eval").data == table


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_consistent_eval_back_projects_the_models_not_the_baselines(make_raster, tmp_path):
    """The evaluation's sensor is what back-projection assumes by default: the back-projected CNN reproduces
    its LR input better than the plain one, and the baselines' rows are those of a plain evaluation."""
    from flows.evaluate import evaluate_models

    hr = make_raster(128, 128, bands=2, dtype="float32", seed=9, name="hr.tif")  # no rounding to cap LR-PSNR
    runs = {consistent: [row for row in evaluate_models([str(hr)], ["cnn"], 4, str(tmp_path / f"eval{consistent}"),
                                                        tile=32, consistent=consistent)["rows"]]
            for consistent in (False, True)}
    assert [row["model"] for row in runs[True]] == ["bicubic", "lanczos", "cnn consistent"]
    assert runs[True][2]["lr_psnr"] > runs[False][2]["lr_psnr"] + 3
    assert [row["psnr"] for row in runs[True][:2]] == pytest.approx([row["psnr"] for row in runs[False][:2]])
    assert "Models ran with `--consistent`" in (tmp_path / "evalTrue" / "eval_x4.md").read_text()


def test_eval_refuses_models_without_weights_in_one_line(make_raster, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")
    hr = make_raster(64, 64)
    result = CliRunner().invoke(main, ["eval", str(hr), "--models", "bicubic,cnn", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "sr-geo: error: model 'cnn' has no shipped weights at ×4: pass --weights cnn=FILE or leave it out of --models")
    assert not (tmp_path / "out" / "eval_x4.md").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--models", "nosuch"], "unknown model 'nosuch'"),
    (["--crop", "12"], "12 is not in the range x>=32"),
    (["--weights", "cnn"], "expected MODEL=FILE"),
    (["--weights", "cnn=missing.safetensors", "--models", "cnn"], "missing.safetensors: weights file"),
    (["--stack", "--sensor-mtf", "0.2"], "--sensor-mtf sets what --consistent assumes"),
])
def test_eval_refuses_bad_requests(make_raster, tmp_path, args, message):
    hr = make_raster(64, 64)
    result = CliRunner().invoke(main, ["eval", str(hr), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.stderr


def test_eval_refuses_a_glob_that_matches_nothing(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "*.tif"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "matches no file" in result.stderr


@pytest.mark.slow
def test_eval_command_starts_its_own_services(make_raster, tmp_path, cli_env):
    """`sr-geo eval` with nothing configured: Ray and a temporary Prefect server start for it, as for `run`."""
    hr = make_raster(64, 64, bands=2, seed=3, name="hr.tif")
    done = subprocess.run([sys.executable, "-m", "flows.cli", "eval", str(hr), "-o", str(tmp_path / "eval"),
                           "--tile", "16"], cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "eval" / "eval_x4.csv") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["bicubic", "lanczos"]
