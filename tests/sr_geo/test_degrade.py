from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sr_geo.degrade import DegradationRanges, SensorModel, gaussian_psf_kernel
from sr_geo.grid import area_downsample


def kernel_mtf(kernel: torch.Tensor, frequency: float) -> float:
    """Discrete-time Fourier transform of a symmetric kernel at `frequency` cycles per pixel."""
    radius = len(kernel) // 2
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return float((kernel * torch.cos(2 * math.pi * frequency * taps)).sum())


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("mtf", [0.15, 0.3, 0.45])
def test_psf_mtf_at_lr_nyquist_matches_specification(scale: int, mtf: float) -> None:
    model = SensorModel(scale=scale, mtf_nyquist=mtf)
    realised = kernel_mtf(gaussian_psf_kernel(model.psf_sigma), 1 / (2 * scale))
    assert realised == pytest.approx(mtf, rel=0.02)


def test_psf_sigma_hand_computed() -> None:
    # σ = s · sqrt(-2 ln m) / π; for s = 4, m = exp(-π²/8): sqrt(π²/4) = π/2, so σ = 2.
    assert SensorModel(scale=4, mtf_nyquist=math.exp(-(math.pi**2) / 8)).psf_sigma == pytest.approx(2.0)


def test_gaussian_psf_kernel_is_normalised_and_symmetric() -> None:
    kernel = gaussian_psf_kernel(1.5)
    assert len(kernel) == 2 * 6 + 1
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-15)
    torch.testing.assert_close(kernel, kernel.flip(0))
    assert len(gaussian_psf_kernel(1.5, radius=2)) == 5


def test_degrade_shape_and_constant_preservation() -> None:
    hr = torch.full((2, 3, 32, 48), 0.7)
    lr = SensorModel(scale=4).degrade(hr)
    assert lr.shape == (2, 3, 8, 12)
    assert lr.dtype == hr.dtype
    torch.testing.assert_close(lr, torch.full((2, 3, 8, 12), 0.7))


def test_degrade_equals_blur_then_block_mean_in_the_interior() -> None:
    torch.manual_seed(0)
    hr = torch.rand(1, 1, 40, 40, dtype=torch.float64)
    model = SensorModel(scale=2, mtf_nyquist=0.3)
    kernel = gaussian_psf_kernel(model.psf_sigma)
    blurred = torch.nn.functional.conv2d(hr, torch.outer(kernel, kernel)[None, None])
    radius = len(kernel) // 2  # `blurred` starts at HR pixel `radius`, an even number here
    assert radius % 2 == 0
    expected = area_downsample(blurred, 2)
    lr = model.degrade(hr)
    offset = radius // 2
    torch.testing.assert_close(lr[..., offset : offset + expected.shape[-2], offset : offset + expected.shape[-1]], expected)


def test_degrade_noise_has_requested_std_and_is_reproducible() -> None:
    hr = torch.zeros(4, 2, 64, 64)
    model = SensorModel(scale=2, noise_std=0.05)
    first = model.degrade(hr, torch.Generator().manual_seed(0))
    second = model.degrade(hr, torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, second)
    assert float(first.std()) == pytest.approx(0.05, rel=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_degrade_on_cuda_matches_cpu_with_cpu_generator() -> None:
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = SensorModel(scale=4, mtf_nyquist=0.2, noise_std=0.01)
    cpu = model.degrade(hr, torch.Generator().manual_seed(1))
    gpu = model.degrade(hr.cuda(), torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)


def test_sensor_model_is_frozen_and_validated() -> None:
    model = SensorModel(scale=2)
    with pytest.raises(AttributeError):
        model.scale = 3  # type: ignore[misc]
    for bad in ({"scale": 1}, {"scale": 2, "mtf_nyquist": 1.0}, {"scale": 2, "noise_std": -0.1}):
        with pytest.raises(ValueError):
            SensorModel(**bad)


def test_degradation_ranges_sample_within_ranges_and_reproducibly() -> None:
    ranges = DegradationRanges()
    generator = torch.Generator().manual_seed(0)
    models = [ranges.sample(4, generator) for _ in range(200)]
    assert all(m.scale == 4 for m in models)
    mtfs = np.array([m.mtf_nyquist for m in models])
    noises = np.array([m.noise_std for m in models])
    assert mtfs.min() >= 0.15 and mtfs.max() <= 0.45 and mtfs.max() - mtfs.min() > 0.25
    assert noises.min() >= 0.0 and noises.max() <= 0.02 and noises.max() - noises.min() > 0.015
    assert ranges.sample(4, torch.Generator().manual_seed(0)) == models[0]
