"""Training rasters: from file/folder/glob specs to standardised arrays in memory.

Training must see exactly what inference sees, so every raster is standardised the way
`sr_geo.inference.Normalisation` standardises a scene: per band, with the mean and std of the valid
pixels of the *low-resolution* scene, here the raster area-downsampled by the scale (the LR image the
model will get at inference is the sensor's own image, one scale coarser than the HR target). HR
pixels are standardised with those same statistics, so the model learns to map LR-standardised
input to HR on the same scale. Georeferencing is optional (the NEON PNGs have none); where present
it places the raster on the ground for the validation split.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from sr_geo.errors import InvalidRequestError
from sr_geo.grid import area_downsample
from sr_geo.scene import data_bands

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg", ".img", ".vrt")


@dataclass(frozen=True)
class Raster:
    """One training raster, standardised, with what the split needs to place it on the ground."""

    name: str
    source: str  # the spec it came from; sampling weighs sources, not pixels, equally
    pixels: np.ndarray  # (bands, H, W) float32, standardised; invalid pixels 0
    valid: np.ndarray  # (H, W) bool
    band_names: tuple[str, ...]
    place: str  # rasters sharing a place share ground coordinates: the CRS, or the file itself
    transform: Affine  # pixel to place coordinates (identity where there is no georeferencing)

    @property
    def bands(self) -> int:
        return self.pixels.shape[0]

    @property
    def pixel_size(self) -> float:
        return max(abs(self.transform.a), abs(self.transform.e))

    @cached_property
    def data_range(self) -> np.ndarray:
        """Per band, max - min of the valid standardised pixels: the PSNR peak for validation."""
        values = self.pixels[:, self.valid]
        return values.max(axis=1) - values.min(axis=1)


def load_rasters(sources: tuple[str, ...], stacks: tuple[str, ...], scale: int) -> list[Raster]:
    """Every raster the specs name, standardised for `scale`; raises if a spec matches nothing."""
    rasters = []
    for spec in sources:
        pattern, selection = _split_selection(spec)
        rasters += [_standardise(_read([path], selection, spec), scale) for path in _expand(pattern)]
    for spec in stacks:
        pattern, selection = _split_selection(spec)
        rasters.append(_standardise(_read(_expand(pattern), selection, spec), scale))
    return rasters


def lr_statistics(pixels: np.ndarray, valid: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over the valid pixels of the area-downsampled (LR) raster.

    An LR pixel is valid when every HR pixel in its block is; a constant band gets std 1 so it
    standardises to 0 instead of dividing by zero.
    """
    height, width = (valid.shape[0] // scale) * scale, (valid.shape[1] // scale) * scale
    lr = area_downsample(pixels[:, :height, :width].astype(np.float64), scale)
    lr_valid = area_downsample(valid[:height, :width].astype(np.float64), scale) == 1.0
    if not lr_valid.any():
        raise ValueError(f"no valid block of {scale} × {scale} pixels")
    values = lr[:, lr_valid]
    std = values.std(axis=1)
    return values.mean(axis=1), np.where(std > 0, std, 1.0)


def _standardise(raster: Raster, scale: int) -> Raster:
    try:
        mean, std = lr_statistics(raster.pixels, raster.valid, scale)
    except ValueError as exc:
        raise InvalidRequestError(f"{raster.name}: {exc}") from None
    x = (raster.pixels - mean[:, None, None]) / std[:, None, None]
    return replace(raster, pixels=np.where(raster.valid, x, 0.0).astype(np.float32))


def _split_selection(spec: str) -> tuple[str, tuple[str, ...]]:
    """'PATTERN@B02,nir=4' to ('PATTERN', ('B02', 'nir=4')); no '@' keeps every band.

    Each item keeps a band by name or 1-based index; `LABEL=BAND` also names it, for files whose
    bands carry no description (the names go into the model card as the bands trained on).
    """
    pattern, at, bands = spec.rpartition("@")
    if not at or not bands or os.path.exists(spec):
        return spec, ()
    return pattern, tuple(b.strip() for b in bands.split(","))


def _expand(pattern: str) -> list[str]:
    if os.path.isdir(pattern):
        paths = sorted(str(p) for p in Path(pattern).iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    elif glob.has_magic(pattern):
        paths = sorted(glob.glob(pattern))
    else:
        paths = [pattern] if os.path.isfile(pattern) else []
    if not paths:
        raise InvalidRequestError(f"{pattern}: matches no raster file")
    return paths


def _read(paths: list[str], selection: tuple[str, ...], source: str) -> Raster:
    """Read `paths` as the bands of one raster (one path: its own bands), keeping `selection`, unscaled."""
    arrays, masks, names = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for path in paths:
            with rasterio.open(path) as ds:
                bands = data_bands(ds)  # an alpha band is the mask
                arrays.append(ds.read(bands).astype(np.float32))
                masks.append(ds.dataset_mask() > 0)
                stem = Path(path).stem
                names += [ds.descriptions[i - 1] or (stem if len(bands) == 1 else f"{stem}_{i}") for i in bands]
                if path == paths[0]:
                    crs, transform = ds.crs, ds.transform
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise InvalidRequestError(f"{paths[0]}: stacked files differ in size {sorted(shapes)}")
    keep = list(range(len(names)))
    if selection:
        labels = [item.partition("=") for item in selection]
        keep = [_band_index(band or label, names, paths[0]) for label, _, band in labels]
        names = [label if band else names[i] for (label, _, band), i in zip(labels, keep, strict=True)]
    pixels = np.concatenate(arrays)[keep]
    north_up = crs is not None and transform.b == 0 and transform.d == 0
    return Raster(
        name=paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} stacked)",
        source=source,
        pixels=pixels,
        valid=np.logical_and.reduce(masks) & np.isfinite(pixels).all(axis=0),
        band_names=tuple(names),
        place=crs.to_wkt() if north_up else os.path.abspath(paths[0]),
        transform=transform if north_up else Affine.identity(),
    )


def _band_index(band: str, names: list[str], path: str) -> int:
    if band in names:
        return names.index(band)
    if band.isdigit() and 1 <= int(band) <= len(names):
        return int(band) - 1
    raise InvalidRequestError(f"{path}: no band {band!r} (bands: {', '.join(names)})")
