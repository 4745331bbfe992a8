from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from conftest import UTM_TRANSFORM, smooth_texture, write_raster
from sr_geo.degrade import SensorModel
from sr_geo.evaluation import EvalConfig, EvalRow, make_lr, model_order, prepare_hr, score, write_table

SENSOR = SensorModel(4)


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask() > 0, ds.profile, ds.bounds


def test_make_lr_keeps_georeferencing_and_the_validity_rule(make_raster, tmp_path):
    mask = np.ones((70, 54), dtype=bool)
    mask[9, 30] = False  # one invalid HR pixel invalidates exactly its LR pixel (2, 7)
    mask[40:, :5] = False
    hr = make_raster(70, 54, bands=3, dtype="uint16", mask=mask)
    lr = make_lr(str(hr), str(tmp_path / "lr.tif"), SENSOR)

    _, lr_valid, profile, bounds = _read(lr)
    assert (profile["height"], profile["width"]) == (17, 13)  # HR cut to 68 × 52 first
    assert profile["transform"] == UTM_TRANSFORM * Affine.scale(4)
    assert profile["dtype"] == "uint16" and profile["crs"] == "EPSG:32618"
    left, top = UTM_TRANSFORM.c, UTM_TRANSFORM.f
    assert tuple(bounds) == pytest.approx((left, top - 680, left + 520, top))  # the cut HR raster's bounds
    expected = mask[:68, :52].reshape(17, 4, 13, 4).all(axis=(1, 3))
    np.testing.assert_array_equal(lr_valid, expected)
    assert not lr_valid[2, 7] and lr_valid[2, 6] and lr_valid[1, 7]


def test_make_lr_is_the_sensor_model_where_the_footprint_is_valid(tmp_path):
    hr_values = smooth_texture((2, 64, 64), seed=4) * 1000
    mask = np.ones((64, 64), dtype=bool)
    mask[:, 48:] = False
    hr_values[:, ~mask] = 1e6  # fill that must never reach a valid LR pixel
    hr = write_raster(tmp_path / "hr.tif", hr_values, mask=mask)
    lr, lr_valid, _, _ = _read(make_lr(str(hr), str(tmp_path / "lr.tif"), SENSOR))

    reference = SENSOR.degrade(torch.from_numpy(hr_values)[None])[0].numpy()
    # The PSF reaches ceil(4σ) = 8 HR px = 2 LR px: columns 0-9 never see the invalid half.
    np.testing.assert_allclose(lr[:, :, :10], reference[:, :, :10], rtol=1e-12)
    assert lr_valid[:, :12].all() and not lr_valid[:, 12:].any()
    # Next to the invalid half the PSF is renormalised over the valid pixels.
    assert np.all(lr[:, :, 10:12] <= 1000) and np.all(lr[:, :, 10:12] >= 0)


def test_make_lr_keeps_nodata_and_never_writes_it_on_valid_pixels(tmp_path):
    data = (smooth_texture((3, 48, 48), seed=2) * 200).astype("uint8")  # has true zeros
    data[:, :16, :16] = 0
    hr = write_raster(tmp_path / "hr.tif", data, nodata=0)
    lr, lr_valid, profile, _ = _read(make_lr(str(hr), str(tmp_path / "lr.tif"), SENSOR))
    assert profile["nodata"] == 0 and profile["dtype"] == "uint8"
    assert not lr_valid[:4, :4].any() and lr_valid[4:, 4:].all()
    assert np.all(lr[:, ~lr_valid] == 0) and np.all(lr[:, lr_valid] > 0)


def test_prepare_hr_crops_centrally_and_marks_undeclared_zero_fill(make_raster, tmp_path):
    hr = make_raster(90, 70, bands=3, dtype="uint16")
    with rasterio.open(hr, "r+") as ds:  # a zero collar, declared nowhere
        data = ds.read()
        data[:, :, :20] = 0
        ds.write(data)

    out, valid, profile, _ = _read(prepare_hr(str(hr), str(tmp_path / "hr.tif"), 4, crop=42))
    assert (profile["height"], profile["width"]) == (40, 40)
    assert profile["transform"] == UTM_TRANSFORM * Affine.translation(15, 25)  # centred
    np.testing.assert_array_equal(valid, (data[:, 25:65, 15:55] != 0).any(axis=0))
    assert not valid[:, :5].any() and valid[:, 5:].all()
    np.testing.assert_array_equal(out, data[:, 25:65, 15:55])

    _, valid, _, _ = _read(prepare_hr(str(hr), str(tmp_path / "kept.tif"), 4, zero_fill=False))
    assert valid.all()


def test_score_of_the_reference_itself_is_perfect(make_raster, tmp_path):
    hr = make_raster(64, 48, bands=4, dtype="uint16", seed=5)
    lr = make_lr(str(hr), str(tmp_path / "lr.tif"), SENSOR)
    scores = score(str(hr), str(hr), lr, SENSOR)
    assert math.isinf(scores["psnr"]) and math.isinf(scores["cpsnr"])
    assert scores["ssim"] == 1.0 and scores["sam"] == 0.0 and scores["ergas"] == 0.0
    assert scores["hf_ratio"] == 1.0
    assert 80 < scores["lr_psnr"] < math.inf  # only the LR's rounding to uint16 separates them


def test_score_finds_a_shift_with_cpsnr_and_rejects_another_grid(tmp_path):
    values = smooth_texture((3, 64, 64), seed=6)
    hr = write_raster(tmp_path / "hr.tif", values)
    lr = make_lr(str(hr), str(tmp_path / "lr.tif"), SENSOR)
    shifted = write_raster(tmp_path / "shifted.tif", np.roll(values, 1, axis=2) + 0.05)
    scores = score(str(shifted), str(hr), lr, SENSOR)
    assert scores["cpsnr"] > scores["psnr"] + 10  # shift and bias are not SR errors
    assert scores["hf_ratio"] == pytest.approx(1.0, abs=0.05)

    moved = write_raster(tmp_path / "moved.tif", values, transform=UTM_TRANSFORM * Affine.translation(0.5, 0))
    with pytest.raises(ValueError, match="grid"):
        score(str(moved), str(hr), lr, SENSOR)


def test_write_table_formats_markdown_and_csv(tmp_path):
    metrics = dict(psnr=30.0, ssim=0.9, cpsnr=31.0, sam=1.5, ergas=2.0, lr_psnr=45.0, hf_ratio=math.nan, seconds=1.0)
    rows = [EvalRow(raster=r, model=m, **{**metrics, "psnr": p})
            for r, m, p in [("a", "bicubic", 30.0), ("b", "bicubic", 32.0), ("a", "lanczos", math.inf)]]
    text = write_table(rows, str(tmp_path / "t.md"), str(tmp_path / "t.csv"), EvalConfig(scale=4, crop=64))
    assert text == (tmp_path / "t.md").read_text()
    assert "data_range = per-band HR valid-pixel range" in text and "mtf_nyquist=0.3" in text
    assert "| a | lanczos | ∞ |" in text and "n/a" in text
    assert "| **mean** | bicubic | 31.00 |" in text
    with open(tmp_path / "t.csv") as handle:
        read = list(csv.DictReader(handle))
    assert [r["model"] for r in read] == ["bicubic", "bicubic", "lanczos"]
    assert float(read[2]["psnr"]) == math.inf and math.isnan(float(read[0]["hf_ratio"]))


def test_baselines_always_come_first():
    assert model_order(["cnn", "lanczos", "gan", "cnn"]) == ("bicubic", "lanczos", "cnn", "gan")
