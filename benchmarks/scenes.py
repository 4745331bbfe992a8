"""Synthetic scenes for benchmarks: image-like texture of any size, written tile by tile (bounded memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

BLOCK = 512


def _texture(rng: np.random.Generator, bands: int, size: int) -> np.ndarray:
    noise = rng.standard_normal((bands, size, size))
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    img = np.real(np.fft.ifft2(np.fft.fft2(noise) / (1.0 + (f * 24) ** 2)))
    return (img - img.mean()) / img.std()


def synthetic_scene(path: Path, size: int, bands: int = 4, seed: int = 0) -> Path:
    """A `size × size` uint16 reflectance-like scene (Sentinel-2 10 m grid, UTM 18N), tiled GeoTIFF."""
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "uint16",
               "crs": "EPSG:32618", "transform": Affine(10, 0, 435730, 0, -10, 4179460), "nodata": 0,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", "predictor": 2}
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, BLOCK):
            for col in range(0, size, BLOCK):
                h, w = min(BLOCK, size - row), min(BLOCK, size - col)
                block = 1500 + 600 * _texture(rng, bands, BLOCK)[:, :h, :w]
                dst.write(np.clip(block, 1, 10000).astype("uint16"), window=Window(col, row, w, h))
    return path
