"""A before/after picture of a run: the input (pixel-replicated) beside the super-resolved output.

Both halves show the same central patch at output resolution, so the gain in detail is what differs.
RGB is chosen from the band colour interpretation or names (Sentinel-2 B04/B03/B02 too), else the
first band in grey; each channel is stretched between its 2nd and 98th percentiles of the input.
"""

from __future__ import annotations

import warnings

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from sr_geo.scene import finite

_RGB_NAMES = (("red", "b04", "b4"), ("green", "b03", "b3"), ("blue", "b02", "b2"))


def rgb_bands(ds: rasterio.DatasetReader) -> list[int]:
    """1-based band indexes to show as R, G, B (or one band as grey)."""
    interp = [ci.name for ci in ds.colorinterp]
    if all(name in interp for name in ("red", "green", "blue")):
        return [interp.index(name) + 1 for name in ("red", "green", "blue")]
    names = [(d or "").lower() for d in ds.descriptions]
    picks = [next((i + 1 for i, n in enumerate(names) if n in aliases), None) for aliases in _RGB_NAMES]
    if all(picks):
        return picks
    return [1, 2, 3] if ds.count >= 3 else [1]


def _stretch(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    scaled = (values - lo[:, None, None]) / np.maximum(hi - lo, 1e-9)[:, None, None]
    return (np.clip(scaled, 0, 1) * 255).astype("uint8")


def write_quicklook(source: str, output: str, scale: int, path: str, patch: int = 128) -> str:
    """Write a PNG with the input patch (left) and the output patch (right), each `patch·scale` wide."""
    with rasterio.open(source) as src, rasterio.open(output) as out:
        bands = rgb_bands(src)
        h, w = min(patch, src.height), min(patch, src.width)
        window = Window((src.width - w) // 2, (src.height - h) // 2, w, h)
        before = src.read(bands, window=window).astype(np.float64)
        valid = finite(before, src.dataset_mask(window=window) > 0)
        up = Window(window.col_off * scale, window.row_off * scale, w * scale, h * scale)
        after = out.read(bands, window=up).astype(np.float64)
    # Stretch on valid pixels only: a nodata value (-9999, 0, NaN) would otherwise set the 2 % point.
    samples = before[:, valid] if valid.any() else before.reshape(len(bands), -1)
    lo, hi = np.percentile(samples, 2, axis=1), np.percentile(samples, 98, axis=1)
    before = np.repeat(np.repeat(before, scale, axis=1), scale, axis=2)
    gap = np.full((len(bands), h * scale, max(4, scale)), 255, dtype="uint8")
    picture = np.concatenate([_stretch(before, lo, hi), gap, _stretch(after, lo, hi)], axis=2)
    if picture.shape[0] == 1:
        picture = np.repeat(picture, 3, axis=0)
    with warnings.catch_warnings():  # a quicklook is a picture, not a map
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=picture.shape[2], height=picture.shape[1],
                           count=3, dtype="uint8") as dst:
            dst.write(picture)
    return path
