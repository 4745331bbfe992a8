"""Image quality metrics for super-resolved rasters, on numpy arrays shaped (bands, H, W).

Every metric takes an optional boolean `valid` mask shaped (H, W) (True = valid pixel) because real
scenes carry clouds, nodata borders and saturated pixels that would otherwise dominate the score;
invalid pixels never enter a sum, so they may hold anything, NaN included. Arrays are promoted to
float64 so that an 8-bit or float32 input cannot lose precision in the squared errors.
"""

from __future__ import annotations

import numpy as np

_SSIM_RADIUS = 5  # 11 × 11 window
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_UPSAMPLE_FACTOR = 100  # phase-correlation refinement step: 1/100 px
_MIN_CROSS_POWER = 1e-6  # relative to the strongest frequency; weaker ones carry no usable phase


def psnr(
    pred: np.ndarray, ref: np.ndarray, data_range: float | np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Peak signal-to-noise ratio per band in dB; inf where a band matches exactly.

    Per band, because bands differ in range and in how hard they are to super-resolve: averaging
    first would let one easy band hide a broken one. `data_range` may be per band for the same reason.
    """
    pred, ref, mask = _prepare(pred, ref, valid)
    mse = np.mean((pred[:, mask] - ref[:, mask]) ** 2, axis=1)
    return _psnr_from_mse(mse, _per_band(data_range, pred.shape[0]))


def ssim(
    pred: np.ndarray, ref: np.ndarray, data_range: float | np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Structural similarity per band (Wang et al. 2004): 11×11 Gaussian window, σ = 1.5, K = (0.01, 0.03).

    PSNR rewards blurry outputs that are right on average; SSIM compares local contrast and structure,
    which is what SR is meant to restore. Windows lie entirely inside the image (no padding, as in the
    reference MATLAB code, without its automatic downsampling) and a window counts only if all its
    pixels are valid, so a masked-out region cannot leak into its neighbours' scores.
    """
    pred, ref, mask = _prepare(pred, ref, valid)
    size = 2 * _SSIM_RADIUS + 1
    if min(pred.shape[1:]) < size:
        raise ValueError(f"ssim needs images of at least {size}×{size} pixels, got {pred.shape[1:]}")
    taps = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
    window = np.exp(-(taps**2) / (2 * _SSIM_SIGMA**2))
    window /= window.sum()
    pred = np.where(mask, pred, 0.0)
    ref = np.where(mask, ref, 0.0)

    mu_p = _filter_valid(pred, window)
    mu_r = _filter_valid(ref, window)
    var_p = _filter_valid(pred * pred, window) - mu_p**2
    var_r = _filter_valid(ref * ref, window) - mu_r**2
    cov = _filter_valid(pred * ref, window) - mu_p * mu_r

    L = _per_band(data_range, pred.shape[0])[:, None, None]
    c1 = (_SSIM_K1 * L) ** 2
    c2 = (_SSIM_K2 * L) ** 2
    ssim_map = ((2 * mu_p * mu_r + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_r**2 + c1) * (var_p + var_r + c2))
    window_valid = _filter_valid((~mask).astype(np.float64), np.ones(size)) == 0
    return ssim_map[:, window_valid].mean(axis=1)


def cpsnr(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: float | np.ndarray,
    valid: np.ndarray | None = None,
    max_shift: int = 3,
) -> np.ndarray:
    """Clear PSNR per band (PROBA-V challenge, Märtens et al. 2019): best PSNR over small shifts, bias removed.

    An LR input's georeferencing is only good to a fraction of an LR pixel, i.e. several HR pixels,
    and its radiometry may differ from the HR reference by a constant; neither is an SR error, so
    plain PSNR would punish the model for the data. For each integer shift (u, v) in
    [-max_shift, max_shift]², the reference interior (a `max_shift` border removed) is compared with
    `pred` displaced by (u, v) over the pixels valid in both, the mean difference is subtracted, and
    the smallest MSE wins; each band picks its own shift, as in the single-band original.
    """
    pred, ref, mask = _prepare(pred, ref, valid)
    height, width = ref.shape[1:]
    if max_shift < 0 or 2 * max_shift >= min(height, width):
        raise ValueError(f"max_shift must be in [0, {(min(height, width) - 1) // 2}], got {max_shift}")
    m = max_shift
    ref_crop = ref[:, m : height - m, m : width - m]
    ref_mask = mask[m : height - m, m : width - m]
    best = np.full(ref.shape[0], np.inf)
    for u in range(-m, m + 1):
        for v in range(-m, m + 1):
            pred_crop = pred[:, m + u : height - m + u, m + v : width - m + v]
            both = ref_mask & mask[m + u : height - m + u, m + v : width - m + v]
            diff = ref_crop[:, both] - pred_crop[:, both]
            bias = diff.mean(axis=1, keepdims=True)
            best = np.minimum(best, np.mean((diff - bias) ** 2, axis=1))
    return _psnr_from_mse(best, _per_band(data_range, ref.shape[0]))


def sam(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean spectral angle in degrees between the band vectors of `pred` and `ref` at each pixel.

    The angle ignores brightness (illumination, gain) and measures only whether SR distorted the
    spectral signature that downstream classification relies on. It is computed as
    2·atan2(|a − b|, |a + b|) on unit vectors, which unlike arccos of the dot product stays accurate
    for tiny angles. Pixels where either vector is zero have no direction and are skipped.
    """
    pred, ref, mask = _prepare(pred, ref, valid)
    p = pred[:, mask]
    r = ref[:, mask]
    p_norm = np.linalg.norm(p, axis=0)
    r_norm = np.linalg.norm(r, axis=0)
    keep = (p_norm > 0) & (r_norm > 0)
    p = p[:, keep] / p_norm[keep]
    r = r[:, keep] / r_norm[keep]
    angle = 2 * np.arctan2(np.linalg.norm(p - r, axis=0), np.linalg.norm(p + r, axis=0))
    return float(np.degrees(angle).mean())


def ergas(pred: np.ndarray, ref: np.ndarray, scale: float, valid: np.ndarray | None = None) -> float:
    """ERGAS (Wald 2002): 100/scale · sqrt(mean over bands of (RMSE_b / mean(ref_b))²).

    Relative errors make dark and bright bands count alike, and the 1/scale factor makes scores of
    different magnification factors comparable: the standard single number for pansharpening and SR.
    """
    pred, ref, mask = _prepare(pred, ref, valid)
    p = pred[:, mask]
    r = ref[:, mask]
    rmse = np.sqrt(np.mean((p - r) ** 2, axis=1))
    return float(100.0 / scale * np.sqrt(np.mean((rmse / r.mean(axis=1)) ** 2)))


def phase_correlation_shift(moving: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Sub-pixel translation (dy, dx) of `moving` relative to `ref`, both 2-D, in pixels.

    Convention: if moving[y, x] = ref[y - dy, x - dx] (content moved down by dy and right by dx),
    the result is (dy, dx). Used to measure whether SR output drifted off the reference grid, which
    no pixel-wise metric reports directly.

    Both images are mean-removed and Hann-windowed (so the image borders do not correlate as a
    strong false edge), and the cross-power spectrum is normalised to unit magnitude (so the peak is
    sharp whatever the texture). Frequencies whose cross-power is below `_MIN_CROSS_POWER` of the
    strongest are dropped: they hold only window leakage and rounding, and whitening would give
    their random phases the weight of real signal, which on smooth images moves the peak by tenths
    of a pixel. The integer peak is then refined to 1/100 px by evaluating the inverse DFT on a fine
    grid around it (Guizar-Sicairos et al. 2008, "Efficient subpixel image registration
    algorithms"); the real part is used because its peak is symmetric even with the unpaired Nyquist
    bin of even sizes. Because the window is fixed in the frame it pulls large shifts slightly
    towards zero: about 1 % of the shift on a 128 px smooth image.
    """
    moving = np.asarray(moving, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if moving.ndim != 2 or moving.shape != ref.shape:
        raise ValueError(f"expected two 2-D arrays of equal shape, got {moving.shape} and {ref.shape}")
    height, width = ref.shape
    hann = np.outer(np.hanning(height), np.hanning(width))
    f_moving = np.fft.fft2((moving - moving.mean()) * hann)
    f_ref = np.fft.fft2((ref - ref.mean()) * hann)
    cross = f_moving * np.conj(f_ref)
    power = np.abs(cross)
    keep = power > _MIN_CROSS_POWER * power.max()
    cross = np.where(keep, cross / np.where(keep, power, 1.0), 0.0)

    peak = np.unravel_index(np.argmax(np.fft.ifft2(cross).real), cross.shape)
    peak_y, peak_x = (p - n if p > n // 2 else p for p, n in zip(peak, cross.shape))

    size = int(np.ceil(1.5 * _UPSAMPLE_FACTOR))
    offsets = (np.arange(size) - size // 2) / _UPSAMPLE_FACTOR
    rows = np.exp(2j * np.pi * np.outer(peak_y + offsets, np.fft.fftfreq(height)))
    cols = np.exp(2j * np.pi * np.outer(peak_x + offsets, np.fft.fftfreq(width)))
    fine = (rows @ cross @ cols.T).real
    iy, ix = np.unravel_index(np.argmax(fine), fine.shape)
    return float(peak_y + offsets[iy]), float(peak_x + offsets[ix])


def frequency_rings(height: int, width: int, one_sided: bool = False) -> np.ndarray:
    """Ring number of every bin of an (H, W) spectrum (H, W // 2 + 1 when `one_sided`, as rfft2 gives):
    rings one frequency bin (1 / min(H, W) cycles per pixel) wide, 0 the DC bin, 1 .. min(H, W) // 2
    inside the Nyquist circle, larger beyond it (the corners hold diagonal frequencies only).

    The one definition of rings for `high_frequency_energy` and the GAN's spectrum loss, so training
    asks for the quantity the evaluation reports.
    """
    columns = np.fft.rfftfreq(width) if one_sided else np.fft.fftfreq(width)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), columns, indexing="ij"))
    return np.rint(radius * min(height, width)).astype(np.int64)


def high_rings(height: int, width: int, fraction: float = 0.5) -> np.ndarray:
    """Which of rings 1 .. min(H, W) // 2 (`frequency_rings`) lie above `fraction` of Nyquist: the
    high frequencies of `high_frequency_energy` and of the GAN's pooled high-frequency loss."""
    return np.arange(1, min(height, width) // 2 + 1) / min(height, width) > fraction * 0.5


def high_frequency_energy(img: np.ndarray, fraction: float = 0.5) -> float:
    """Share of the radially averaged power spectrum above `fraction` of Nyquist, mean over bands.

    PSNR and SSIM favour smooth outputs; comparing this number for an SR output and its HR reference
    tells whether the model produced fine detail (too low: blurry; too high: hallucinated texture or
    noise). The spectrum is averaged over rings one frequency bin wide (`frequency_rings`), so every
    spatial frequency radius weighs alike, and is limited to the circle inside Nyquist so that the
    corners of the 2-D spectrum do not bias it. The mean (DC) is excluded; a flat band scores 0.
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3:
        raise ValueError(f"expected an array shaped (bands, H, W), got shape {img.shape}")
    height, width = img.shape[1:]
    ring = frequency_rings(height, width)
    n_rings = min(height, width) // 2 + 1
    inside = ring < n_rings
    counts = np.bincount(ring[inside], minlength=n_rings)
    high = high_rings(height, width, fraction)

    shares = []
    for band in img:
        power = np.abs(np.fft.fft2(band - band.mean())) ** 2
        profile = np.bincount(ring[inside], weights=power[inside], minlength=n_rings)[1:] / counts[1:]
        total = profile.sum()
        shares.append(profile[high].sum() / total if total > 0 else 0.0)
    return float(np.mean(shares))


def _prepare(
    pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if pred.ndim != 3 or pred.shape != ref.shape:
        raise ValueError(f"expected two (bands, H, W) arrays of equal shape, got {pred.shape} and {ref.shape}")
    if valid is None:
        return pred, ref, np.ones(ref.shape[1:], dtype=bool)
    mask = np.asarray(valid, dtype=bool)
    if mask.shape != ref.shape[1:]:
        raise ValueError(f"valid mask shape {mask.shape} does not match image shape {ref.shape[1:]}")
    return pred, ref, mask


def _per_band(value: float | np.ndarray, bands: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (bands,))


def _psnr_from_mse(mse: np.ndarray, data_range: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable correlation of the last two axes with `taps` along each, keeping only full windows."""
    k = len(taps)
    height, width = x.shape[-2:]
    rows = sum(t * x[..., i : height - k + 1 + i, :] for i, t in enumerate(taps))
    return sum(t * rows[..., :, i : width - k + 1 + i] for i, t in enumerate(taps))
