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

from sr_geo.grid import area_downsample
from sr_geo.metrics import phase_correlation_shift
from sr_geo.scene import data_bands, read_valid

# Output pixels per side of each window compared: the input window is this over the scale, so the
# check holds the same memory at every scale (1024² output pixels: 4 MB a band in float32; 512 input
# pixels at ×4 in float64 held 150 MB for 4 bands, above everything else the driver holds).
OUTPUT_BLOCK = 1024
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
        bands = len(data_bands(src))
        sse = np.zeros(bands)
        count = 0
        lo, hi = np.full(bands, np.inf), np.full(bands, -np.inf)
        step = max(OUTPUT_BLOCK // scale, 1)
        for window in _blocks(src.height, src.width, step):
            ref, valid = read_valid(src, window)
            ref = ref.astype(np.float64)
            if not valid.any():
                continue
            diff = (_degraded(out, window, scale) - ref)[:, valid]
            sse += (diff**2).sum(axis=1)
            count += int(valid.sum())
            lo, hi = np.minimum(lo, ref[:, valid].min(axis=1)), np.maximum(hi, ref[:, valid].max(axis=1))
        data_range = np.where(hi > lo, hi - lo, 1.0)
        mse = sse / max(count, 1)
        psnr = tuple(float(v) for v in np.where(mse > 0, 10 * np.log10(data_range**2 / np.maximum(mse, 1e-300)), np.inf))
        crop = _central_window(src.height, src.width, SHIFT_CROP)
        ref, valid = read_valid(src, crop)
        ref = ref.astype(np.float64).mean(axis=0)
        degraded = np.empty(ref.shape)
        for sub in _blocks(crop.height, crop.width, step):
            part = Window(crop.col_off + sub.col_off, crop.row_off + sub.row_off, sub.width, sub.height)
            degraded[sub.toslices()] = _degraded(out, part, scale).mean(axis=0)
        dy, dx = 0.0, 0.0
        if min(ref.shape) >= 8 and valid.any():
            # Holes would poison (NaN) or dominate (-9999 edges, aligned by construction) the
            # correlation: fill them with each image's valid mean, which the correlation removes.
            ref = np.where(valid, ref, ref[valid].mean())
            degraded = np.where(valid, degraded, degraded[valid].mean())
            dy, dx = phase_correlation_shift(degraded, ref)
    return ConsistencyCheck(psnr=psnr, shift_y=float(dy), shift_x=float(dx))


def _degraded(out: rasterio.DatasetReader, window: Window, scale: int) -> np.ndarray:
    """The output over input-grid `window`, block-averaged back onto the input grid (float32)."""
    up = Window(window.col_off * scale, window.row_off * scale, window.width * scale, window.height * scale)
    return area_downsample(out.read(window=up).astype(np.float32), scale)


def _central_window(height: int, width: int, size: int) -> Window:
    h, w = min(height, size), min(width, size)
    return Window((width - w) // 2, (height - h) // 2, w, h)
