"""Self-supervised training: sources, normalisation, the location split, batches, and the loop itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from safetensors.torch import load_file

from conftest import UTM_TRANSFORM, smooth_texture, write_raster
from sr_geo.degrade import DegradationRanges
from sr_geo.errors import InvalidRequestError
from sr_geo.grid import area_downsample
from sr_geo.models.header import read_metadata
from sr_geo.models.weights import load_weights
from sr_geo.training.config import TrainConfig
from sr_geo.training.data import PatchSampler, degradation_margin
from sr_geo.training.loop import train
from sr_geo.training.schedule import learning_rate
from sr_geo.training.sources import load_rasters
from sr_geo.training.split import split_rasters
from sr_geo.training.steps import Trainer

RANGES = DegradationRanges()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def uint16(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return (1 + smooth_texture(shape, seed) * 9000).astype("uint16")


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    """Two dates of one 3-band scene (same grid), a 1-band scene elsewhere in the same CRS, and a small
    2-band scene in another CRS."""
    for date in (1, 2):
        write_raster(tmp_path / f"place_a_{date}.tif", uint16((3, 256, 256), date))
    far = Affine(10.0, 0.0, 535730.0, 0.0, -10.0, 4179460.0)
    write_raster(tmp_path / "place_b.tif", uint16((1, 256, 224), 9), transform=far)
    write_raster(tmp_path / "place_c.tif", uint16((2, 96, 96), 8), crs="EPSG:32633")
    return tmp_path


def tiny_config(sources: tuple[str, ...], **overrides) -> TrainConfig:
    options = dict(model="cnn", scale=2, sources=sources, steps=40, batch_size=4, patch=32, lr=5e-3, feats=8,
                   blocks=2, val_patches=8, eval_every=20, log_every=10, checkpoint_every=10, split_cell=2,
                   val_fraction=0.1)
    return TrainConfig(**{**options, **overrides})


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_sources_accept_files_folders_globs_stacks_band_labels_and_plain_pngs(tmp_path: Path) -> None:
    write_raster(tmp_path / "s2_B02.tif", uint16((1, 40, 40), 1))
    write_raster(tmp_path / "s2_B03.tif", uint16((1, 40, 40), 2))
    with rasterio.open(tmp_path / "photo.png", "w", driver="PNG", width=40, height=32, count=3, dtype="uint8") as dst:
        dst.write((smooth_texture((3, 32, 40), 3) * 255).astype("uint8"))
    rasters = load_rasters(
        (str(tmp_path / "photo.png@red=1,blue=3"), str(tmp_path / "s2_B0?.tif")),
        (str(tmp_path / "s2_B0*.tif@blue=s2_B02,green=2"),),
        scale=2,
    )
    assert [r.band_names for r in rasters] == [("red", "blue"), ("s2_B02",), ("s2_B03",), ("blue", "green")]
    assert rasters[0].place.endswith("photo.png") and rasters[0].transform == Affine.identity()
    assert rasters[1].transform == UTM_TRANSFORM and rasters[1].place == rasters[3].place
    assert len(load_rasters((str(tmp_path),), (), 2)) == 3  # a folder: every raster in it
    with pytest.raises(InvalidRequestError, match="matches no raster"):
        load_rasters((str(tmp_path / "none*.tif"),), (), 2)
    with pytest.raises(InvalidRequestError, match="no band 'nir'"):
        load_rasters((str(tmp_path / "photo.png@nir"),), (), 2)


def test_an_alpha_band_is_the_training_rasters_mask_not_a_band(tmp_path: Path) -> None:
    rgba = np.concatenate([uint16((3, 40, 40), 4) // 256, np.full((1, 40, 40), 255)]).astype("uint8")
    rgba[3, :10] = 0
    write_raster(tmp_path / "ortho.tif", rgba, photometric="RGB", alpha="YES")
    (raster,) = load_rasters((str(tmp_path / "ortho.tif"),), (), 2)
    assert raster.band_names == ("ortho_1", "ortho_2", "ortho_3") and raster.pixels.shape[0] == 3
    np.testing.assert_array_equal(raster.valid, rgba[3] > 0)


def test_standardised_with_the_statistics_of_the_low_resolution_scene(tmp_path: Path) -> None:
    data = uint16((2, 64, 64), 4)
    data[:, :8, :] = 0
    write_raster(tmp_path / "masked.tif", data, nodata=0)
    (raster,) = load_rasters((str(tmp_path / "masked.tif"),), (), 4)
    lr = area_downsample(raster.pixels.astype(np.float64), 4)[:, 2:, :]  # rows 0-7 are nodata
    np.testing.assert_allclose(lr.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(lr.std(axis=(1, 2)), 1, atol=1e-5)
    assert not raster.valid[:8].any() and (raster.pixels[:, :8] == 0).all()


def test_split_holds_out_the_same_ground_in_every_date_with_a_guard_band(scenes: Path) -> None:
    rasters = load_rasters((str(scenes / "*.tif"),), (), 2)
    footprint = 32 + 2 * degradation_margin(2, RANGES)
    split = split_rasters(rasters, footprint, cell_patches=2, val_fraction=0.25, seed=0)
    a1, a2, b, c = range(4)
    np.testing.assert_array_equal(split.val[a1], split.val[a2])
    np.testing.assert_array_equal(split.train[a1], split.train[a2])
    for train_corners, val_corners in ((split.train[a1], split.val[a2]), (split.train[b], split.val[b])):
        assert len(train_corners) and len(val_corners)
        gap = np.abs(train_corners[:, None, :] - val_corners[None, :, :]).max(axis=2)
        assert gap.min() >= 2 * footprint  # one footprint of window, one of guard band
    assert len(split.val[c]) == 0 and len(split.train[c]) > 0  # too small to give up a cell: trains whole


def test_batches_depend_only_on_the_step(scenes: Path) -> None:
    rasters = load_rasters((str(scenes / "*.tif"),), (), 2)
    split = split_rasters(rasters, 32 + 2 * degradation_margin(2, RANGES), 2, 0.25, seed=0)
    sampler = PatchSampler(rasters, split, 2, 32, RANGES, seed=0)
    first, again, other = sampler.batch(7, 4), sampler.batch(7, 4), sampler.batch(8, 4)
    torch.testing.assert_close(first.lr, again.lr)
    torch.testing.assert_close(first.hr, again.hr)
    assert first.lr.shape[2:] == (16, 16) and first.hr.shape[2:] == (32, 32)
    counts = {sampler.batch(step, 1).hr.shape[1] for step in range(30)}
    assert counts == {1, 2, 3}  # random band subsets: the models see every count up to the largest
    assert not torch.equal(first.hr, other.hr)


def test_learning_rate_warms_up_then_decays_per_phase() -> None:
    config = tiny_config(("x",), model="gan", steps=300, pretrain_steps=200, lr=1e-3, gan_lr=1e-4)
    rates = [learning_rate(config, step) for step in range(300)]
    assert rates[0] < rates[9] == pytest.approx(1e-3, rel=0.01)
    assert rates[199] < 1e-4 and rates[200] == pytest.approx(1e-4)
    assert rates[299] == pytest.approx(5e-6, rel=0.05)


def test_training_lowers_the_loss_and_beats_bicubic(scenes: Path, tmp_path: Path) -> None:
    result = train(tiny_config((str(scenes / "place_a_*.tif"),)), tmp_path / "run", progress_bar=False)
    history = json.loads((tmp_path / "run" / "progress.json").read_text())["history"]
    losses = [h["l1"] for h in history if h["kind"] == "train"]
    assert losses[-1] < 0.9 * losses[0]
    assert result.validation["psnr"] > result.validation["bicubic_psnr"] + 0.5
    assert result.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = load_weights(result.weights)
    meta = read_metadata(result.weights)
    assert model.effective_radius == int(meta["effective_radius"]) <= model.theoretical_radius
    assert json.loads(meta["training"])["steps"] == 40


def test_training_in_bfloat16_lowers_the_loss_and_beats_bicubic_too(scenes: Path, tmp_path: Path) -> None:
    """bfloat16 autocast with float32 weights learns as float32 does; the card says how the weights were made."""
    result = train(tiny_config((str(scenes / "place_a_*.tif"),), precision="bfloat16"), tmp_path / "run",
                   progress_bar=False)
    history = json.loads((tmp_path / "run" / "progress.json").read_text())["history"]
    losses = [h["l1"] for h in history if h["kind"] == "train"]
    assert losses[-1] < 0.9 * losses[0]
    assert result.validation["psnr"] > result.validation["bicubic_psnr"] + 0.5
    assert json.loads(read_metadata(result.weights)["training"])["precision"] == "bfloat16"
    assert load_weights(result.weights).head.weight.dtype == torch.float32


def test_adversarial_training_in_bfloat16_keeps_every_term_finite(scenes: Path, tmp_path: Path) -> None:
    """The spectral terms' FFTs and the discriminator's losses take the networks' bfloat16 outputs in float32."""
    config = tiny_config((str(scenes / "place_a_1.tif"),), model="gan", blocks=1, steps=4, pretrain_steps=2,
                         batch_size=2, log_every=1, eval_every=4, checkpoint_every=4, precision="bfloat16")
    train(config, tmp_path / "run", progress_bar=False)
    history = [h for h in json.loads((tmp_path / "run" / "progress.json").read_text())["history"] if h["kind"] == "train"]
    assert {"adversarial", "feature_matching", "frequency", "hf_energy", "chroma", "discriminator"} <= set(history[-1])
    assert all(np.isfinite(value) for h in history for name, value in h.items() if name not in ("kind", "step"))


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_a_stopped_run_resumes_exactly_where_it_stopped(scenes: Path, tmp_path: Path, monkeypatch,
                                                        ema_decay: float) -> None:
    config = tiny_config((str(scenes / "place_a_1.tif"),), steps=20, ema_decay=ema_decay)
    whole = train(config, tmp_path / "whole", progress_bar=False)
    batch = PatchSampler.batch

    def stop_at_13(self: PatchSampler, step: int, size: int):
        if step == 13:
            raise KeyboardInterrupt
        return batch(self, step, size)

    monkeypatch.setattr(PatchSampler, "batch", stop_at_13)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", progress_bar=False)
    assert json.loads((tmp_path / "stopped" / "progress.json").read_text())["step"] == 13
    monkeypatch.setattr(PatchSampler, "batch", batch)
    resumed = train(config, tmp_path / "stopped", progress_bar=False)
    assert resumed.steps == 20
    expected = load_file(str(whole.weights))
    for name, tensor in load_file(str(resumed.weights)).items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    optimizers = torch.load(tmp_path / "stopped" / "checkpoint" / "optimizers-20.pt", weights_only=True)
    assert set(optimizers) == {"generator"}


def test_the_shipped_weights_are_the_moving_average_of_the_generators(scenes: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    after_each_step = []
    step = Trainer.step

    def recording(self: Trainer, *args, **kwargs):
        terms = step(self, *args, **kwargs)
        after_each_step.append({k: v.detach().clone() for k, v in self.generator.state_dict().items()})
        return terms

    monkeypatch.setattr(Trainer, "step", recording)
    result = train(tiny_config((str(scenes / "place_a_1.tif"),), steps=5, ema_decay=0.75), tmp_path / "run",
                   progress_bar=False)
    expected = dict(after_each_step[0])  # the average starts at the first step's weights
    for weights in after_each_step[1:]:
        expected = {k: 0.75 * expected[k] + 0.25 * weights[k] for k in expected}
    shipped = load_file(str(result.weights))
    assert set(shipped) == set(expected)
    for name, tensor in shipped.items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-7)
    assert not torch.equal(shipped[name], after_each_step[-1][name])
    assert json.loads(read_metadata(result.weights)["training"])["ema_decay"] == 0.75


def test_resume_refuses_other_settings(scenes: Path, tmp_path: Path) -> None:
    sources = (str(scenes / "place_a_1.tif"),)
    train(tiny_config(sources, steps=10), tmp_path / "run", progress_bar=False)
    with pytest.raises(InvalidRequestError, match="different settings \\(lr\\)"):
        train(tiny_config(sources, steps=10, lr=1e-3), tmp_path / "run", progress_bar=False)


def test_gan_pretrains_on_l1_then_trains_adversarially(scenes: Path, tmp_path: Path) -> None:
    config = tiny_config((str(scenes / "place_a_1.tif"),), model="gan", blocks=1, steps=4, pretrain_steps=2, batch_size=2,
                         log_every=1, eval_every=4, checkpoint_every=4)
    result = train(config, tmp_path / "run", progress_bar=False)
    history = [h for h in json.loads((tmp_path / "run" / "progress.json").read_text())["history"] if h["kind"] == "train"]
    assert set(history[0]) == {"kind", "step", "lr", "l1"}
    assert {"adversarial", "feature_matching", "frequency", "discriminator"} <= set(history[-1])
    assert read_metadata(result.weights)["arch"] == "gan"
    assert (tmp_path / "run" / "checkpoint" / "discriminator-4.safetensors").is_file()


def test_fine_tuning_starts_from_the_weights_and_refuses_another_model(scenes: Path, tmp_path: Path) -> None:
    sources = (str(scenes / "place_a_1.tif"),)
    first = train(tiny_config(sources, steps=20), tmp_path / "first", progress_bar=False)
    # lr 0: the fine-tuned weights can only be the initial ones, so the copy itself is what is checked.
    tuned = train(tiny_config(sources, steps=2, lr=0.0, init_weights=str(first.weights)), tmp_path / "tuned",
                  progress_bar=False)
    expected = load_file(str(first.weights))
    for name, tensor in load_file(str(tuned.weights)).items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    assert tuned.validation["psnr"] == pytest.approx(first.validation["psnr"], abs=1e-6)
    record = json.loads((tmp_path / "tuned" / "progress.json").read_text())
    assert len(record["config"]["init_weights_sha256"]) == 64
    with pytest.raises(InvalidRequestError, match="not the cnn ×4"):
        train(tiny_config(sources, scale=4, init_weights=str(first.weights)), tmp_path / "x4", progress_bar=False)
    with pytest.raises(InvalidRequestError, match="layer sizes differ"):
        train(tiny_config(sources, feats=4, init_weights=str(first.weights)), tmp_path / "narrow", progress_bar=False)
