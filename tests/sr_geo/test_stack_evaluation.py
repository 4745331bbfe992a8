"""`sr-geo eval --stack`: synthetic frames of a held-out raster, the median baseline, common-pixel scores,
and the stack evaluation flow on a tiny raster."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio

from conftest import smooth_texture, write_raster
from sr_geo.evaluation import (
    MEDIAN_BICUBIC,
    StackEvalConfig,
    StackRow,
    clearest_frame_path,
    make_stack,
    median_composite,
    prepare_hr,
    score_common,
    write_stack_table,
)
from sr_geo.errors import InvalidRequestError
from sr_geo.stack import inspect_stack


@pytest.fixture
def hr(tmp_path):
    mask = np.ones((96, 104), bool)
    mask[:8, :16] = False
    source = write_raster(tmp_path / "hr_source.tif", (100 + 5000 * smooth_texture((3, 96, 104), 4)).astype("uint16"),
                          mask=mask)
    return prepare_hr(str(source), str(tmp_path / "hr.tif"), 4)


def test_synthetic_frames_are_a_dated_cloudy_stack_on_the_lr_grid(hr, tmp_path):
    config = StackEvalConfig(scale=4, frames=(1, 2, 4))
    paths = make_stack(hr, str(tmp_path), "x", config)
    assert len(paths) == 4
    stack = inspect_stack(paths)
    assert [f.path for f in stack.frames] == paths and {f.read.kind for f in stack.frames} == {"read"}
    with rasterio.open(hr) as h, rasterio.open(paths[0]) as f:
        assert f.bounds == h.bounds and (f.width, f.height) == (h.width // 4, h.height // 4) and f.dtypes == h.dtypes
    covers = []
    for path in paths:
        with rasterio.open(path) as f:
            valid = f.dataset_mask() > 0
            assert not valid[:2, :4].any()  # blocks with an invalid HR pixel
            covers.append(valid.mean())
    assert max(covers) > min(covers)  # clouds differ from frame to frame
    assert clearest_frame_path(paths) == paths[int(np.argmax(covers))]


def test_median_composite_and_common_pixel_scores(tmp_path):
    a = np.full((1, 12, 12), 10, "uint16")
    b = np.full((1, 12, 12), 30, "uint16")
    c = np.full((1, 12, 12), 20, "uint16")
    holes = np.ones((12, 12), bool)
    holes[:6] = False
    paths = [str(write_raster(tmp_path / f"{n}.tif", d, mask=holes if n == "b" else None)) for n, d in zip("abc", (a, b, c))]
    with rasterio.open(median_composite(paths, str(tmp_path / "median.tif"))) as ds:
        values = ds.read(1)
    assert (values[6:] == 20).all() and (values[:6] == 10).all()  # lower median of 10, 20 where b is cloudy

    texture = (1000 * smooth_texture((2, 40, 40), 1)).astype("float32")
    reference = write_raster(tmp_path / "hr.tif", texture)
    cloudy = np.ones((40, 40), bool)
    cloudy[:20] = False
    outputs = {"same": str(write_raster(tmp_path / "same.tif", texture, mask=cloudy)),
               "noisy": str(write_raster(tmp_path / "noisy.tif", texture + np.random.default_rng(0).normal(0, 20, texture.shape).astype("float32")))}
    scores = score_common(outputs, str(reference))
    assert scores["same"]["cpsnr"] == np.inf and scores["noisy"]["cpsnr"] < 40
    assert scores["same"]["coverage"] == scores["noisy"]["coverage"] == 0.5  # both scored on the clear half


def test_stack_table_shows_gains_per_frame_count(tmp_path):
    config = StackEvalConfig(scale=4, frames=(1, 8))
    rows = [StackRow(raster, k, model, cpsnr, 0.9, 0.8, 1.0)
            for raster in ("a", "b") for k in (1, 8)
            for model, cpsnr in (("rnn", 30.0 + k / 4), ("cnn (clearest frame)", 30.0), (MEDIAN_BICUBIC, 28.0))]
    text = write_stack_table(rows, str(tmp_path / "t.md"), str(tmp_path / "t.csv"), config)
    assert "| **mean** | 8 | 32.00 | 30.00 | 28.00 | +2.00 | +4.00 |" in text
    assert "rnn − cnn (clearest frame) dB" in text
    with open(tmp_path / "t.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 12


def test_bad_frame_counts_are_refused():
    with pytest.raises(InvalidRequestError, match="increasing positive"):
        StackEvalConfig(scale=4, frames=(4, 2))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_stack_evaluation_through_the_real_flows(hr, tmp_path):
    from flows.evaluate import evaluate_stacks
    from sr_geo.models.rnn import RNN
    from sr_geo.models.weights import save_weights

    untrained = RNN(4, feats=8, blocks=1, encoder_blocks=1, base_feats=8, base_blocks=1)  # bicubic of the mean composite
    save_weights(untrained, tmp_path / "rnn.safetensors")
    result = evaluate_stacks([hr], ["lanczos", "rnn"], 4, str(tmp_path / "eval"), frames=(3,),
                             weights={"rnn": str(tmp_path / "rnn.safetensors")}, tile=16)
    scores = {row["model"]: row for row in result["rows"]}
    assert list(scores) == ["rnn", "lanczos (clearest frame)", MEDIAN_BICUBIC]
    assert abs(scores["rnn"]["cpsnr"] - scores[MEDIAN_BICUBIC]["cpsnr"]) < 0.3  # mean vs median composite, 3 frames
    assert 0.3 < scores["rnn"]["coverage"] < 1 and all(np.isfinite(r["cpsnr"]) for r in result["rows"])
    assert "| hr | 3 |" in (tmp_path / "eval" / "eval_stack_x4.md").read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_consistent_stack_evaluation_back_projects_the_models_not_the_baseline(hr, tmp_path):
    """The evaluation's sensor is the one back-projection assumes: agreeing with three shifted frames beats
    the untrained rnn's bicubic of their mean, and the baseline is the same as in a plain evaluation."""
    from flows.evaluate import evaluate_stacks
    from sr_geo.models.rnn import RNN
    from sr_geo.models.weights import save_weights

    untrained = RNN(4, feats=8, blocks=1, encoder_blocks=1, base_feats=8, base_blocks=1)
    save_weights(untrained, tmp_path / "rnn.safetensors")
    runs = {
        consistent: {row["model"]: row for row in evaluate_stacks(
            [hr], ["rnn"], 4, str(tmp_path / f"eval{consistent}"), frames=(3,), tile=16, consistent=consistent,
            weights={"rnn": str(tmp_path / "rnn.safetensors")})["rows"]}
        for consistent in (False, True)
    }
    assert list(runs[True]) == ["rnn consistent", MEDIAN_BICUBIC]
    assert runs[True]["rnn consistent"]["cpsnr"] > runs[False]["rnn"]["cpsnr"] + 0.5
    assert runs[True][MEDIAN_BICUBIC]["cpsnr"] == pytest.approx(runs[False][MEDIAN_BICUBIC]["cpsnr"])
    assert "Models ran with `--consistent`" in (tmp_path / "evalTrue" / "eval_stack_x4.md").read_text()
