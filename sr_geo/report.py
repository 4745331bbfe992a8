"""A self-check of every run: is the output consistent with, and aligned to, its input?

The output is degraded back onto the input grid (exact block mean: each output pixel belongs to
exactly one input pixel) and compared with the input: PSNR per band says whether the model kept
the radiometry, and the phase-correlation shift says whether the georeferencing moved. A correct run
has a high PSNR and a shift of a few hundredths of a pixel; a half-pixel bug shows up at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import rasterio
from rasterio.windows import Window

from sr_geo.degrade import area_downsample
from sr_geo.metrics import phase_correlation_shift

BLOCK = 512
SHIFT_CROP = 512


@dataclass(frozen=True)
class ConsistencyCheck:
    """PSNR (dB) per band of the block-averaged output against the input, and its shift (input px)."""

    psnr: tuple[float, ...]
    shift_y: float
    shift_x: float

    def to_dict(self) -> dict:
        return asdict(self)


def _blocks(height: int, width: int, block: int):
    for row in range(0, height, block):
        for col in range(0, width, block):
            yield Window(col, row, min(block, width - col), min(block, height - row))


def consistency_check(source: str, output: str, scale: int) -> ConsistencyCheck:
    """Stream both rasters in blocks (bounded memory) and compare on the input grid."""
    with rasterio.open(source) as src, rasterio.open(output) as out:
        bands = src.count
        sse = np.zeros(bands)
        count = 0
        lo, hi = np.full(bands, np.inf), np.full(bands, -np.inf)
        for window in _blocks(src.height, src.width, BLOCK):
            ref = src.read(window=window).astype(np.float64)
            valid = src.dataset_mask(window=window) > 0
            if not valid.any():
                continue
            up = Window(window.col_off * scale, window.row_off * scale, window.width * scale, window.height * scale)
            degraded = area_downsample(out.read(window=up).astype(np.float64), scale)
            diff = (degraded - ref)[:, valid]
            sse += (diff**2).sum(axis=1)
            count += int(valid.sum())
            lo, hi = np.minimum(lo, ref[:, valid].min(axis=1)), np.maximum(hi, ref[:, valid].max(axis=1))
        data_range = np.where(hi > lo, hi - lo, 1.0)
        mse = sse / max(count, 1)
        psnr = tuple(float(v) for v in np.where(mse > 0, 10 * np.log10(data_range**2 / np.maximum(mse, 1e-300)), np.inf))
        crop = _central_window(src.height, src.width, SHIFT_CROP)
        ref = src.read(window=crop).astype(np.float64).mean(axis=0)
        valid = src.dataset_mask(window=crop) > 0
        up = Window(crop.col_off * scale, crop.row_off * scale, crop.width * scale, crop.height * scale)
        degraded = area_downsample(out.read(window=up).astype(np.float64), scale).mean(axis=0)
        dy, dx = 0.0, 0.0
        if min(ref.shape) >= 8 and valid.any():
            # Holes would poison (NaN) or dominate (-9999 edges, aligned by construction) the
            # correlation: fill them with each image's valid mean, which the correlation removes.
            ref = np.where(valid, ref, ref[valid].mean())
            degraded = np.where(valid, degraded, degraded[valid].mean())
            dy, dx = phase_correlation_shift(degraded, ref)
    return ConsistencyCheck(psnr=psnr, shift_y=float(dy), shift_x=float(dx))


def _central_window(height: int, width: int, size: int) -> Window:
    h, w = min(height, size), min(width, size)
    return Window((width - w) // 2, (height - h) // 2, w, h)
