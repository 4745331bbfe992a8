"""The recurrent fusion model: shapes for any bands and frame counts, masking, its untrained identity,
and a receptive radius computed from the network that holds for every frame count."""

from __future__ import annotations

import copy

import pytest
import torch

from sr_geo.models.registry import ARCHITECTURES, ModelSpec, build_model
from sr_geo.models.rnn import RNN
from sr_geo.models.temporal import MedianBicubic, SingleImageView, masked_median
from sr_geo.models.weights import save_weights


def small_rnn(scale: int = 2, seed: int = 0) -> RNN:
    """An untrained small RNN with its zero-initialised tail randomised, so every layer matters."""
    torch.manual_seed(seed)
    model = RNN(scale, feats=8, blocks=2, encoder_blocks=1)
    with torch.no_grad():
        model.tail.weight.normal_(0.0, 0.1)
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


def test_untrained_model_is_bicubic_of_the_median_composite():
    x, valid = stack(2, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(RNN(4)(x, valid), MedianBicubic(4)(x, valid))
    x, valid = torch.tensor([[[1.0], [5.0], [2.0], [9.0]]]).reshape(1, 4, 1, 1, 1), torch.tensor([True, True, False, True])
    valid = valid.reshape(1, 4, 1, 1)
    assert masked_median(x, valid).item() == 5.0  # of 1, 5, 9; the invalid 2 is left out
    assert masked_median(x, torch.zeros_like(valid)).item() == 0.0  # no valid frame


def gradient_support(model: RNN, frames: int, size: int = 41) -> int:
    """Farthest input pixel, over all frames, that the centre output block depends on (positive weights)."""
    probe = copy.deepcopy(model).double()
    with torch.no_grad():
        for param in probe.parameters():
            param.copy_(torch.rand(param.shape, dtype=torch.float64) * 0.1 + 0.01)
    centre, s = size // 2, model.scale
    generator = torch.Generator().manual_seed(1)
    x = (torch.rand((1, frames, 2, size, size), generator=generator, dtype=torch.float64) + 0.5).requires_grad_(True)
    valid = torch.rand((1, frames, size, size), generator=generator) > 0.2
    valid[:, :, centre - 1 : centre + 2, centre - 1 : centre + 2] = True
    probe(x, valid)[..., centre * s : (centre + 1) * s, centre * s : (centre + 1) * s].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)) > 0, as_tuple=True)
    return int(max((rows - centre).abs().max(), (cols - centre).abs().max()))


def test_theoretical_radius_is_computed_from_the_network_and_holds_for_any_frame_count():
    model = small_rnn()
    radius = model.theoretical_radius
    assert radius == SingleImageView(model, frames=5).theoretical_radius
    assert gradient_support(model, 1) == gradient_support(model, 6) == radius


def test_weights_round_trip_through_the_registry(tmp_path):
    model = small_rnn()
    model.effective_radius = 3
    path = tmp_path / "rnn.safetensors"
    save_weights(model, path)
    rebuilt = build_model(ModelSpec("rnn", 2, str(path)), bands=3)
    assert ARCHITECTURES["rnn"] is RNN and rebuilt.temporal
    assert (rebuilt.receptive_radius, rebuilt.theoretical_radius) == (3, model.theoretical_radius)
    x, valid = stack(1, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, valid), model(x, valid))
