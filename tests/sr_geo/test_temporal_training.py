"""Synthetic training stacks (jitter, radiometry, noise, clouds under one sensor model) and `train --model rnn`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import smooth_texture, write_raster
from sr_geo.degrade import DegradationRanges, SensorModel
from sr_geo.errors import InvalidRequestError
from sr_geo.evaluation import STACK_SYNTHESIS
from sr_geo.metrics import phase_correlation_shift
from sr_geo.models.cnn import CNN
from sr_geo.models.gan import RRDBNet
from sr_geo.models.header import read_metadata
from sr_geo.models.weights import load_weights, save_weights
from sr_geo.training.config import TrainConfig
from sr_geo.training.data import degradation_margin
from sr_geo.training.loop import train
from sr_geo.training.sources import load_rasters
from sr_geo.training.split import split_rasters
from sr_geo.training.temporal import MAX_FRAMES, StackSynthesis, TemporalSampler

STILL = StackSynthesis(jitter=0.0, gain=(1.0, 1.0), offset=0.0, clear=1.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def window(size: int = 96, bands: int = 2) -> torch.Tensor:
    return torch.from_numpy(smooth_texture((bands, size, size), 3).astype("float32") * 4)


def test_a_still_clear_frame_is_exactly_the_sensor_model():
    sensor, margin = SensorModel(4, 0.3), 12
    hr = window()
    lr, valid, shifts = STILL.frames(hr, 3, sensor, margin, torch.Generator().manual_seed(0))
    assert shifts.abs().max() < 5 * STILL.registration_error  # no jitter: only the registration error
    reference = sensor.degrade(hr[None])[0][:, 3:-3, 3:-3]
    assert lr.shape == (3, 2, 18, 18) and valid.all()
    torch.testing.assert_close(lr, reference.expand_as(lr), atol=1e-5, rtol=0)


def test_frames_are_jittered_by_sub_pixel_shifts_within_the_range():
    sensor, margin = SensorModel(4, 0.3), 12
    lr, _, measured = StackSynthesis(gain=(1.0, 1.0), offset=0.0, clear=1.0, registration_error=0.0).frames(
        window(160, 1), 6, sensor, margin, torch.Generator().manual_seed(1))
    shifts = np.array([phase_correlation_shift(lr[t, 0].numpy(), lr[0, 0].numpy()) for t in range(6)])
    assert np.abs(shifts).max() <= 1.0 + 0.05  # two frames each within ±0.5 LR px
    assert np.abs(shifts[1:]).max() > 0.05 and np.any(np.abs(shifts[1:] - np.round(shifts[1:])) > 0.05)
    # the shifts the model is told are the frames' own: pixel i samples the scene at i + shift
    relative = (measured - measured[0]).numpy()
    np.testing.assert_allclose(-shifts, relative, atol=0.05)


def test_training_stacks_put_the_target_at_the_frames_centroid_and_evaluation_stacks_do_not():
    """Registration tells a model only the frames' differences, so training centres the shifts: the HR target
    lies at the frames' centroid, where the rnn puts its output, and one frame is exactly on its lattice.
    Evaluation draws each acquisition's jitter independently, as real ones are."""
    sensor, margin = SensorModel(4, 0.3), 12
    centred = StackSynthesis(centred=True, registration_error=0.0)
    assert TemporalSampler.synthesis.centred and not STACK_SYNTHESIS.centred
    for count, seed in [(1, 0), (2, 1), (8, 2), (8, 3)]:
        _, _, shifts = centred.frames(window(), count, sensor, margin, torch.Generator().manual_seed(seed))
        assert shifts.mean(dim=0).abs().max() < 0.05 and shifts.abs().max() <= centred.jitter
        if count == 1:
            assert shifts.abs().max() == 0.0
    _, _, drawn = replace(centred, centred=False).frames(window(), 8, sensor, margin, torch.Generator().manual_seed(2))
    assert drawn.mean(dim=0).abs().max() > 0.05  # the same draws, not centred


def test_clouds_cover_what_they_claim_and_some_frames_are_missing():
    synthesis = StackSynthesis(clear=0.2, missing=0.2, cover=(0.3, 0.3))
    generator = torch.Generator().manual_seed(2)
    masks = torch.stack([synthesis.clouds(torch.Size((40, 40)), generator) for _ in range(200)])
    cover = 1 - masks.float().mean(dim=(1, 2))
    assert (cover == 0).float().mean() == pytest.approx(0.2, abs=0.08)
    assert (cover == 1).float().mean() == pytest.approx(0.2, abs=0.08)
    partial = cover[(cover > 0) & (cover < 1)]
    assert torch.allclose(partial, torch.full_like(partial, 0.3), atol=0.01)


@pytest.fixture
def rasters(tmp_path: Path) -> Path:
    write_raster(tmp_path / "a.tif", (1 + smooth_texture((3, 192, 192), 1) * 9000).astype("uint16"))
    write_raster(tmp_path / "b.tif", (1 + smooth_texture((1, 160, 192), 2) * 9000).astype("uint16"))
    return tmp_path


def test_stack_batches_depend_only_on_the_step_and_hide_invalid_pixels(rasters):
    loaded = load_rasters((str(rasters),), (), 2)
    ranges = DegradationRanges()
    split = split_rasters(loaded, 32 + 2 * degradation_margin(2, ranges), 2, 0.1, 0)
    sampler = TemporalSampler(loaded, split, 2, 32, ranges, seed=0)
    first, again = sampler.batch(7, 4), TemporalSampler(loaded, split, 2, 32, ranges, seed=0).batch(7, 4)
    n, frames, bands, h, w = first.lr.shape
    assert (n, h, w) == (4, 16, 16) and 1 <= frames <= MAX_FRAMES and first.hr.shape == (4, bands, 32, 32)
    assert first.valid.shape == (4, frames, 16, 16)
    assert torch.equal(first.lr, again.lr) and torch.equal(first.valid, again.valid)
    assert (first.lr.permute(2, 0, 1, 3, 4)[:, ~first.valid] == 0).all()
    assert {sampler.batch(step, 2).lr.shape[1] for step in range(40)} == set(range(1, MAX_FRAMES + 1))


def test_train_rnn_writes_weights_with_radius_and_temporal_card(rasters, tmp_path):
    config = TrainConfig(model="rnn", scale=2, sources=(str(rasters),), steps=6, batch_size=2, patch=32, lr=2e-3,
                         feats=8, blocks=1, val_patches=2, eval_every=6, log_every=3, checkpoint_every=6,
                         split_cell=2, val_fraction=0.1)
    result = train(config, tmp_path / "run", progress_bar=False)
    model = load_weights(result.weights)
    meta = read_metadata(result.weights)
    assert model.arch == "rnn" and model.temporal
    assert 0 <= model.effective_radius <= model.theoretical_radius == int(meta["theoretical_radius"])
    assert '"jitter": 0.5' in meta["temporal_synthesis"]
    assert result.validation["patches"] > 0 and np.isfinite(result.validation["psnr"])


def test_a_cnn_file_starts_the_rnn_base_and_another_model_is_refused(rasters, tmp_path):
    """Fusion refines a single-image prediction, so an rnn run starts its base from trained CNN weights."""
    cnn = CNN(2)
    with torch.no_grad():
        cnn.tail.weight.normal_(0.0, 0.1)
    save_weights(cnn, tmp_path / "cnn.safetensors")
    config = TrainConfig(model="rnn", scale=2, sources=(str(rasters),), steps=1, batch_size=1, patch=32, lr=0.0,
                         feats=8, blocks=1, val_patches=0, split_cell=2, val_fraction=0.1,
                         init_weights=str(tmp_path / "cnn.safetensors"))
    model = load_weights(train(config, tmp_path / "run", progress_bar=False).weights)
    for name, tensor in cnn.state_dict().items():
        torch.testing.assert_close(model.base.state_dict()[name], tensor, rtol=0, atol=0)
    save_weights(CNN(2, feats=8), tmp_path / "narrow.safetensors")
    with pytest.raises(InvalidRequestError, match="layer sizes differ"):
        train(replace(config, init_weights=str(tmp_path / "narrow.safetensors")), tmp_path / "narrow", progress_bar=False)
    save_weights(RRDBNet(2, feats=8, blocks=1), tmp_path / "gan.safetensors")
    with pytest.raises(InvalidRequestError, match="holds gan ×2, not the rnn ×2"):
        train(replace(config, init_weights=str(tmp_path / "gan.safetensors")), tmp_path / "gan", progress_bar=False)


def test_an_rnn_file_from_before_the_shift_kernels_starts_every_other_layer(rasters, tmp_path):
    """Weights of an earlier version of the architecture (same sizes, no shift kernels) start the run:
    the layers they hold are copied, the new zero-initialised ones start at zero."""
    from safetensors.torch import load_file, save_file

    from sr_geo.models.rnn import RNN

    old = RNN(2, feats=8, blocks=1)
    with torch.no_grad():
        old.tail.weight.normal_(0.0, 0.1)
    save_weights(old, tmp_path / "full.safetensors")
    tensors = {k: v for k, v in load_file(str(tmp_path / "full.safetensors")).items() if not k.startswith("shift_kernels")}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=read_metadata(tmp_path / "full.safetensors"))
    config = TrainConfig(model="rnn", scale=2, sources=(str(rasters),), steps=1, batch_size=1, patch=32, lr=0.0,
                         feats=8, blocks=1, val_patches=0, split_cell=2, val_fraction=0.1,
                         init_weights=str(tmp_path / "old.safetensors"))
    model = load_weights(train(config, tmp_path / "run", progress_bar=False).weights)
    for name, tensor in tensors.items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)
    assert model.shift_kernels.kernels.abs().max() == 0
