"""The recurrent fusion model: shapes for any bands and frame counts, masking, its untrained identity,
and a receptive radius computed from the network that holds for every frame count."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import smooth_texture
from sr_geo.degrade import SensorModel
from sr_geo.grid import area_downsample
from sr_geo.models.bicubic import bicubic_upsample
from sr_geo.models.registry import ARCHITECTURES, ModelSpec, build_model
from sr_geo.models.rnn import RNN, SHIFT_LATTICE, SHIFT_REACH, lattice_weights
from sr_geo.models.temporal import (
    ALIGN_RADIUS, OUTLIER_THRESHOLD, SingleImageView, align_frames, masked_mean, masked_median, screen_outliers,
)
from sr_geo.models.weights import save_weights
from sr_geo.training.temporal import StackSynthesis, shifted_blur


def small_rnn(scale: int = 2, seed: int = 0) -> RNN:
    """An untrained small RNN with its zero-initialised tails randomised, so every layer matters."""
    torch.manual_seed(seed)
    model = RNN(scale, feats=8, blocks=2, encoder_blocks=1, base_feats=8, base_blocks=1)
    with torch.no_grad():
        model.tail.weight.normal_(0.0, 0.1)
        model.base.tail.weight.normal_(0.0, 0.1)
        model.shift_kernels.kernels.normal_(0.0, 0.1)
    return model.eval()


def stack(n: int, frames: int, bands: int, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    valid = torch.rand((n, frames, size, size), generator=generator) > 0.3
    x = torch.randn((n, frames, bands, size, size), generator=generator)
    return torch.where(valid.unsqueeze(2), x, 0.0), valid


@pytest.mark.parametrize("frames, bands", [(1, 1), (3, 4), (16, 2)])
def test_any_frame_and_band_count(frames, bands):
    x, valid = stack(2, frames, bands)
    with torch.no_grad():
        y = small_rnn(4)(x, valid)
    assert y.shape == (2, bands, 48, 48) and torch.isfinite(y).all()


def test_bands_are_exchangeable():
    x, valid = stack(1, 4, 3)
    order = [2, 0, 1]
    model = small_rnn()
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, :, order], valid), model(x, valid)[:, order])


def test_invalid_pixels_and_fully_masked_frames_change_nothing():
    model = small_rnn()
    x, valid = stack(1, 4, 2)
    with torch.no_grad():
        y = model(x, valid)
        noisy = torch.where(valid.unsqueeze(2), x, torch.randn(x.shape) * 100)  # clouds: any values
        torch.testing.assert_close(model(noisy, valid), y)
        gap = torch.zeros_like(valid[:, :1])  # a missing acquisition between frames 1 and 2
        with_gap = model(torch.cat([x[:, :2], torch.randn_like(x[:, :1]), x[:, 2:]], 1),
                         torch.cat([valid[:, :2], gap, valid[:, 2:]], 1))
        torch.testing.assert_close(with_gap, y)


def test_untrained_model_is_bicubic_of_the_mean_composite():
    x, valid = stack(2, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(RNN(4, outlier_threshold=None)(x, valid), bicubic_upsample(masked_mean(x, valid), 4))
        screened = screen_outliers(x, valid)
        assert 0 < (valid & ~screened).sum() < 0.2 * valid.sum()  # random frames: a few outliers
        torch.testing.assert_close(RNN(4)(x, valid), bicubic_upsample(masked_mean(x, screened), 4))
    x, valid = torch.tensor([1.0, 5.0, 2.0, 12.0]).reshape(1, 4, 1, 1, 1), torch.tensor([True, True, False, True])
    valid = valid.reshape(1, 4, 1, 1)
    assert masked_median(x, valid).item() == 5.0 and masked_mean(x, valid).item() == 6.0  # the invalid 2 left out
    assert masked_median(x, torch.zeros_like(valid)).item() == masked_mean(x, torch.zeros_like(valid)).item() == 0.0


def test_the_base_is_the_single_image_cnn_on_the_mean_composite():
    """With its fusion detail zeroed, the rnn is exactly its CNN on the mean of the screened frames: one frame
    in, the CNN's own output out."""
    model = small_rnn(4)
    with torch.no_grad():
        model.tail.weight.zero_()
        x, valid = stack(1, 1, 2)
        torch.testing.assert_close(model(x, valid), model.base(x[:, 0]))


def gradient_support(model: RNN, frames: int, size: int = 41) -> int:
    """Farthest input pixel, over all frames, that the centre output block depends on (positive weights), at
    sub-pixel shifts of both signs, so aligning the frames reaches as far as it can."""
    probe = copy.deepcopy(model).double()
    with torch.no_grad():
        for param in probe.parameters():
            param.copy_(torch.rand(param.shape, dtype=torch.float64) * 0.1 + 0.01)
    centre, s = size // 2, model.scale
    generator = torch.Generator().manual_seed(1)
    x = (torch.rand((1, frames, 2, size, size), generator=generator, dtype=torch.float64) + 0.5).requires_grad_(True)
    valid = torch.rand((1, frames, size, size), generator=generator) > 0.2
    valid[:, :, centre - 1 : centre + 2, centre - 1 : centre + 2] = True
    shifts = torch.tensor([0.4, -0.3], dtype=torch.float64) * (-1) ** torch.arange(frames).reshape(1, -1, 1)
    probe(x, valid, shifts)[..., centre * s : (centre + 1) * s, centre * s : (centre + 1) * s].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)) > 0, as_tuple=True)
    return int(max((rows - centre).abs().max(), (cols - centre).abs().max()))


def test_theoretical_radius_is_computed_from_the_network_and_holds_for_any_frame_count():
    model = small_rnn()
    radius = model.theoretical_radius
    assert radius == SingleImageView(model, frames=5).theoretical_radius
    assert gradient_support(model, 2) == gradient_support(model, 6) == radius
    assert gradient_support(model, 1) == radius - ALIGN_RADIUS  # one frame is at its own centroid: not resampled


def test_weights_round_trip_through_the_registry(tmp_path):
    model = small_rnn()
    model.effective_radius = 3
    path = tmp_path / "rnn.safetensors"
    save_weights(model, path)
    rebuilt = build_model(ModelSpec("rnn", 2, str(path)), bands=3)
    assert ARCHITECTURES["rnn"].load() is RNN and rebuilt.temporal
    assert (rebuilt.receptive_radius, rebuilt.theoretical_radius) == (3, model.theoretical_radius)
    x, valid = stack(1, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, valid), model(x, valid))


def test_outliers_are_screened_per_pixel_against_the_median_brightness_of_its_frames():
    brightness = torch.tensor([0.1, -0.2, 3.0, 0.0, -1.5])  # an unmasked cloud (+3) and a shadow (-1.5)
    x = brightness.reshape(1, 5, 1, 1, 1) + torch.tensor([0.4, -0.4]).reshape(1, 1, 2, 1, 1)  # 2 bands, same mean
    valid = torch.ones((1, 5, 1, 1), dtype=torch.bool)
    assert screen_outliers(x, valid)[0, :, 0, 0].tolist() == [True, True, False, True, False]
    spectral_change = x.clone()
    spectral_change[0, 2] = torch.tensor([2.0, -2.0]).reshape(2, 1, 1)  # NIR up, red down: no brightness change
    assert screen_outliers(spectral_change, valid)[0, 2].all()  # the shadow stays screened
    two = valid.clone()
    two[0, 2:] = False
    assert torch.equal(screen_outliers(x, two), two)  # two frames have no majority: nothing screened
    edge = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]).reshape(1, 5, 1, 1, 1).expand(1, 5, 2, 1, 1)
    pixels = torch.cat([x, edge], dim=4)  # a second pixel: a sharp edge every frame samples elsewhere
    screened = screen_outliers(pixels, torch.ones((1, 5, 1, 2), dtype=torch.bool))[0, :, 0]
    assert screened[:, 0].tolist() == [True, True, False, True, False] and screened[:, 1].all()  # spread: kept


def test_shipped_weights_load_with_screening_on_and_an_unmasked_cloud_is_fused_as_if_masked():
    """Training only ever showed masked clouds: an unmasked cloud (3 scene standard deviations bright) in one
    of five clear frames pulls the fused output towards it. Screened, it is exactly as if it had been masked,
    and the error is back to that of the cloud-free stack."""
    model = build_model(ModelSpec("rnn", 4), bands=3)
    assert model.outlier_threshold == OUTLIER_THRESHOLD
    sensor = SensorModel(4, mtf_nyquist=0.3, noise_std=0.015)
    synthesis = StackSynthesis(clear=1.0, missing=0.0)
    margin = 4 * math.ceil(synthesis.kernel_radius(sensor) / 4)
    hr = torch.from_numpy(smooth_texture((3, 96 + 2 * margin, 96 + 2 * margin), seed=3))
    hr = (hr - hr.mean(dim=(1, 2), keepdim=True)) / hr.std(dim=(1, 2), keepdim=True)  # in scene standard deviations
    frames, valid, _ = synthesis.frames(hr, 5, sensor, margin, torch.Generator().manual_seed(0))
    rows, cols = torch.meshgrid(torch.arange(24), torch.arange(24), indexing="ij")
    cloud = (rows - 10) ** 2 + (cols - 13) ** 2 < 8**2  # a third of the frame
    cloudy = frames.clone()
    cloudy[2][:, cloud] = 3.0
    masked = valid.clone()
    masked[2] &= ~cloud
    truth = hr[:, margin:-margin, margin:-margin]

    def fused(x: torch.Tensor, frame_valid: torch.Tensor, threshold: float | None) -> torch.Tensor:
        """As the pipeline runs it: standardised by the stack's statistics, back to data units after."""
        mean, std = x.mean(dim=(0, 2, 3)).reshape(-1, 1, 1), x.std(dim=(0, 2, 3)).reshape(-1, 1, 1)
        model.outlier_threshold = threshold
        with torch.no_grad():
            return model(((x - mean) / std).float()[None], frame_valid[None])[0].double() * std + mean

    def error(y: torch.Tensor) -> float:
        return float(((y - truth) ** 2).mean().sqrt())

    screened = fused(cloudy, valid, OUTLIER_THRESHOLD)
    assert torch.equal(screened, fused(cloudy, masked, OUTLIER_THRESHOLD))
    assert torch.equal(screened, fused(cloudy, masked, None))
    clean, unscreened = error(fused(frames, valid, OUTLIER_THRESHOLD)), error(fused(cloudy, valid, None))
    assert unscreened > 1.1 * clean and error(screened) < 1.01 * clean


def test_shift_kernels_start_silent_and_then_place_each_frame_by_its_shift():
    """Zero-initialised: an untrained network (or one started from weights without them) changes with shifts
    only through the aligned composites. Trained: each frame's shift matters through its kernel too, a shift
    common to all frames does not (shifts are centred on the stack), and no shifts is the same as all frames
    aligned."""
    x, valid = stack(2, 4, 3)
    shifts = torch.rand((2, 4, 2), generator=torch.Generator().manual_seed(1)) - 0.5
    assert not RNN(2).shift_kernels.kernels.any()
    with torch.no_grad():
        model = small_rnn()
        unkernelled = copy.deepcopy(model)
        unkernelled.shift_kernels.kernels.zero_()
        assert (model(x, valid, shifts) - unkernelled(x, valid, shifts)).abs().max() > 1e-3
        torch.testing.assert_close(model(x, valid, shifts + torch.tensor([0.3, -0.7])), model(x, valid, shifts))
        torch.testing.assert_close(model(x, valid, torch.zeros_like(shifts)), model(x, valid))


def test_the_output_lies_at_the_frames_centroid():
    """Three frames sampling the scene at 0, 1 and 2 LR pixels to the left of the reference (shifts 0, −1, −2
    in x) give the untrained rnn's output of the middle frame alone: the output lies at the frames' centroid,
    the best estimate of the ground's true position, with no half-pixel offset. A frame synthesised at a
    sub-pixel shift and aligned by it is far closer to the frame on the lattice than the frame as it is (what
    is left is the aliasing that tells the frames apart)."""
    x, _ = stack(1, 1, 2, size=16)
    frames = torch.cat([torch.cat([torch.zeros_like(x[..., :k]), x[..., : 16 - k]], dim=-1) for k in range(3)], dim=1)
    model = RNN(4, outlier_threshold=None).eval()
    with torch.no_grad():
        fused = model(frames, torch.ones((1, 3, 16, 16), dtype=torch.bool), torch.tensor([[[0.0, -float(k)] for k in range(3)]]))
        middle = model(frames[:, 1:2], torch.ones((1, 1, 16, 16), dtype=torch.bool))
    torch.testing.assert_close(fused[..., 12:-12, 12:-12], middle[..., 12:-12, 12:-12])  # bicubic reaches 2 LR px
    sensor = SensorModel(4, mtf_nyquist=0.3, noise_std=0.0)
    hr = torch.from_numpy(smooth_texture((1, 176, 176), seed=2))
    synthesis = StackSynthesis(gain=(1.0, 1.0), offset=0.0, clear=1.0, missing=0.0, registration_error=0.0)
    shifted, _, shifts = synthesis.frames(hr, 2, sensor, 24, torch.Generator().manual_seed(3))
    on_lattice = area_downsample(shifted_blur(hr, sensor.psf_sigma, torch.zeros((1, 2), dtype=torch.float64)), 4)
    on_lattice = on_lattice[0, :, 6:-6, 6:-6]
    aligned, aligned_valid = align_frames(shifted[None], torch.ones((1, 2, 32, 32), dtype=torch.bool), shifts[None])
    inner = (slice(None), slice(3, -3), slice(3, -3))
    for t in range(2):
        assert aligned_valid[0, t][3:-3, 3:-3].all()
        before = (shifted[t] - on_lattice).abs()[inner].mean()
        assert (aligned[0, t] - on_lattice).abs()[inner].mean() < 0.5 * before


def test_aligning_keeps_a_lattice_frame_and_a_cloud_edge_does_not_leak():
    x, valid = stack(1, 2, 2, size=10)
    aligned, aligned_valid = align_frames(x, valid, torch.zeros((1, 2, 2)))
    assert torch.equal(aligned, x) and torch.equal(aligned_valid, valid)
    valid = torch.ones((1, 1, 10, 10), dtype=torch.bool)
    valid[0, 0, :, 5] = False  # a column of cloud
    _, aligned_valid = align_frames(x[:, :1], valid, torch.tensor([[[0.0, 0.5]]]))
    # read at i - 0.5: taps i-2..i+1 (the tap at i+1 has a small negative weight); every pixel reading column 5
    assert aligned_valid[0, 0, 4].tolist() == [False, False, True, True, False, False, False, False, True, False]
    assert not aligned_valid[0, 0, :, 0].any()  # beyond the image edge is never valid


def test_lattice_weights_interpolate_bilinearly_and_clamp_beyond_the_reach():
    step = 2 * SHIFT_REACH / (SHIFT_LATTICE - 1)
    weights = lattice_weights(torch.tensor([[[0.0, 0.0], [step / 4, -step / 2], [5.0, -5.0]]]))[0]
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    centre = (SHIFT_LATTICE // 2) * SHIFT_LATTICE + SHIFT_LATTICE // 2
    assert weights[0, centre] == 1.0
    row, col = SHIFT_LATTICE // 2, SHIFT_LATTICE // 2
    expected = {(row, col - 1): 0.75 * 0.5, (row, col): 0.75 * 0.5, (row + 1, col - 1): 0.25 * 0.5, (row + 1, col): 0.25 * 0.5}
    for (r, c), value in expected.items():
        assert weights[1, r * SHIFT_LATTICE + c].item() == pytest.approx(value)
    assert weights[2, (SHIFT_LATTICE - 1) * SHIFT_LATTICE].item() == 1.0  # (+reach, -reach): the corner kernel
