from __future__ import annotations

import math

import numpy as np
import pytest

from sr_geo.metrics import cpsnr, ergas, high_frequency_energy, phase_correlation_shift, psnr, sam, ssim


def smooth_texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 2.0) -> np.ndarray:
    """White noise low-passed with a Gaussian of `sigma` pixels (via FFT), on the last two axes."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[-2])[:, None]
    fx = np.fft.fftfreq(shape[-1])[None, :]
    transfer = np.exp(-2 * np.pi**2 * sigma**2 * (fy**2 + fx**2))
    return np.fft.ifft2(np.fft.fft2(noise) * transfer).real


def fourier_shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """moving[y, x] = img[y - dy, x - dx] (circular), exact for band-limited content."""
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (fy * dy + fx * dx))).real


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return 0.5 + 0.1 * smooth_texture(rng, (3, 48, 48))


def test_identical_images_score_perfectly(image: np.ndarray) -> None:
    assert np.all(np.isinf(psnr(image, image, 1.0)))
    np.testing.assert_array_equal(ssim(image, image, 1.0), 1.0)
    assert np.all(np.isinf(cpsnr(image, image, 1.0)))
    assert sam(image, image) == 0.0
    assert ergas(image, image, 4) == 0.0


def test_psnr_hand_computed_with_per_band_range() -> None:
    ref = np.zeros((2, 4, 4))
    pred = ref + 0.1  # MSE 0.01 in both bands
    np.testing.assert_allclose(psnr(pred, ref, 1.0), [20.0, 20.0])
    np.testing.assert_allclose(psnr(pred, ref, np.array([1.0, 10.0])), [20.0, 40.0])


def test_ssim_of_constant_images_matches_luminance_formula() -> None:
    # Flat windows have zero variance, so SSIM reduces to (2 μx μy + C1) / (μx² + μy² + C1).
    ref = np.full((1, 16, 16), 0.5)
    pred = np.full((1, 16, 16), 0.4)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.4 * 0.5 + c1) / (0.4**2 + 0.5**2 + c1)
    np.testing.assert_allclose(ssim(pred, ref, 1.0), [expected], rtol=1e-12)


def test_ssim_matches_direct_window_computation(image: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    ref = image[:1, :14, :15]
    pred = ref + 0.05 * rng.standard_normal(ref.shape)
    taps = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 1.5**2))
    window = np.outer(taps, taps) / np.outer(taps, taps).sum()
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    scores = []
    for y in range(ref.shape[1] - 10):
        for x in range(ref.shape[2] - 10):
            a = pred[0, y : y + 11, x : x + 11]
            b = ref[0, y : y + 11, x : x + 11]
            ma, mb = (window * a).sum(), (window * b).sum()
            va, vb = (window * (a - ma) ** 2).sum(), (window * (b - mb) ** 2).sum()
            cov = (window * (a - ma) * (b - mb)).sum()
            scores.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    np.testing.assert_allclose(ssim(pred, ref, 2.0), [np.mean(scores)], rtol=1e-10)


def test_constant_offset_lowers_psnr_but_not_cpsnr(image: np.ndarray) -> None:
    pred = image + 0.05
    np.testing.assert_allclose(psnr(pred, image, 1.0), 10 * np.log10(1 / 0.05**2))
    assert np.all(cpsnr(pred, image, 1.0) >= 80.0)


def test_cpsnr_recovers_integer_shift(image: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    big = smooth_texture(rng, (2, 60, 60))
    ref = big[:, 5:53, 5:53]
    pred = big[:, 3:51, 6:54]  # pred[y, x] = ref[y - 2, x + 1]
    assert np.all(psnr(pred, ref, 1.0) < 40.0)
    assert np.all(np.isinf(cpsnr(pred, ref, 1.0, max_shift=3)))
    assert np.all(np.isfinite(cpsnr(pred, ref, 1.0, max_shift=1)))


def test_sam_of_planar_rotation_is_the_rotation_angle(image: np.ndarray) -> None:
    theta = math.radians(7.5)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    ref = image[:2]
    pred = np.einsum("ij,jhw->ihw", rotation, ref)
    assert sam(pred, ref) == pytest.approx(7.5, abs=1e-6)


def test_sam_of_rotation_in_many_bands_ignores_brightness() -> None:
    # Rotate every 4-band vector by θ towards a random orthogonal direction, and rescale it.
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.1, 1.0, (4, 8, 8))
    unit = ref / np.linalg.norm(ref, axis=0)
    other = rng.standard_normal(ref.shape)
    other -= (other * unit).sum(axis=0) * unit
    other /= np.linalg.norm(other, axis=0)
    theta = math.radians(20.0)
    pred = rng.uniform(0.5, 2.0, (8, 8)) * (math.cos(theta) * unit + math.sin(theta) * other)
    assert sam(pred, ref) == pytest.approx(20.0, abs=1e-6)


def test_ergas_hand_computed() -> None:
    ref = np.stack([np.full((4, 4), 100.0), np.full((4, 4), 50.0)])
    checker = np.where(np.indices((4, 4)).sum(axis=0) % 2 == 0, 1.0, -1.0)
    pred = ref + np.stack([2.0 * checker, 3.0 * checker])  # RMSE 2 and 3
    expected = 100 / 4 * math.sqrt(((2 / 100) ** 2 + (3 / 50) ** 2) / 2)
    assert ergas(pred, ref, 4) == pytest.approx(expected, rel=1e-12)


def test_valid_mask_excludes_corrupted_region(image: np.ndarray) -> None:
    pred = image.copy()
    pred[:, 10:20, 30:40] = np.nan
    pred[:, 0:3, 0:3] = 7.0
    valid = np.ones(image.shape[1:], dtype=bool)
    valid[10:20, 30:40] = False
    valid[0:3, 0:3] = False
    assert np.all(np.isinf(psnr(pred, image, 1.0, valid)))
    np.testing.assert_array_equal(ssim(pred, image, 1.0, valid), 1.0)
    assert np.all(np.isinf(cpsnr(pred, image, 1.0, valid)))
    assert sam(pred, image, valid) == 0.0
    assert ergas(pred, image, 4, valid) == 0.0
    assert np.all(np.isnan(psnr(pred, image, 1.0)))


@pytest.mark.parametrize(
    ("shift", "tolerance"),
    # The Hann window, fixed in the frame, pulls large shifts ~1 % towards zero.
    [((0.3, -0.7), 0.05), ((1.25, 0.5), 0.05), ((0.0, 0.0), 0.005), ((-3.0, 5.0), 0.1)],
)
def test_phase_correlation_recovers_known_shift(shift: tuple[float, float], tolerance: float) -> None:
    ref = smooth_texture(np.random.default_rng(0), (128, 128))
    moving = fourier_shift(ref, *shift)
    dy, dx = phase_correlation_shift(moving, ref)
    assert abs(dy - shift[0]) <= tolerance and abs(dx - shift[1]) <= tolerance


def test_phase_correlation_sign_convention_matches_roll() -> None:
    ref = smooth_texture(np.random.default_rng(0), (128, 128))
    moving = np.roll(ref, (2, -3), axis=(0, 1))  # moving[y, x] = ref[y - 2, x + 3]
    dy, dx = phase_correlation_shift(moving, ref)
    assert (dy, dx) == pytest.approx((2.0, -3.0), abs=0.05)


def test_phase_correlation_of_shifted_crops_of_a_larger_scene() -> None:
    # Not circular: the two images see different content at their borders, as real tiles do.
    scene = smooth_texture(np.random.default_rng(2), (160, 160), sigma=1.5)
    ref = scene[16:144, 16:144]
    moving = scene[15:143, 17:145]  # moving[y, x] = ref[y - 1, x + 1]
    dy, dx = phase_correlation_shift(moving, ref)
    assert (dy, dx) == pytest.approx((1.0, -1.0), abs=0.05)


def test_high_frequency_energy_separates_noise_from_smooth_and_flat() -> None:
    rng = np.random.default_rng(0)
    white = rng.standard_normal((2, 64, 64))
    # A flat spectrum weighs every ring alike: half the rings lie above Nyquist / 2.
    assert high_frequency_energy(white) == pytest.approx(0.5, abs=0.05)
    assert high_frequency_energy(smooth_texture(rng, (2, 64, 64))) < 0.01
    assert high_frequency_energy(np.ones((1, 16, 16))) == 0.0
