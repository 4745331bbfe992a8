"""The pixel grid of a raster: an immutable value whose methods return new grids.

Output grid convention (the one every part of sr-geo follows, and the tests prove): the output grid
covers exactly the input bounds; output pixel edges lie on input pixel edges, and each input pixel
becomes `scale × scale` output pixels. In affine terms the output transform is the input transform
composed with `Affine.scale(1 / scale)`, so output pixel (r, c) covers input pixel coordinates
[r / s, (r + 1) / s) × [c / s, (c + 1) / s). Centres of output pixels are therefore at input
coordinates (r + 0.5) / s - 0.5 in "pixel-centre" terms, the same convention as
`torch.nn.functional.interpolate(..., align_corners=False)`; anything else is a half-pixel shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from affine import Affine

from sr_geo.errors import InvalidRasterError

if TYPE_CHECKING:
    import numpy as np
    import torch

# numpy arrays or torch tensors, without importing torch here: the driver checks its output with
# `area_downsample` and never loads torch.
ArrayT = TypeVar("ArrayT", "np.ndarray", "torch.Tensor")


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid: CRS (as WKT), north-up affine transform and shape."""

    crs: str
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise InvalidRasterError(f"raster has an empty grid ({self.width}×{self.height})")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def resolution(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform * (0, 0)
        right, bottom = self.transform * (self.width, self.height)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    def zoom_in(self, scale: int) -> Grid:
        """The grid with `scale` times finer pixels over exactly the same bounds.

        The odc-geo spelling of this is `GeoBox.zoom_out(1 / scale)`.
        """
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        return Grid(
            crs=self.crs,
            transform=self.transform * Affine.scale(1 / scale),
            width=self.width * scale,
            height=self.height * scale,
        )


def area_downsample(x: ArrayT, scale: int) -> ArrayT:
    """Exact block mean over `scale × scale` blocks of the last two axes (numpy array or torch tensor).

    This is what a detector does to the light that reaches it, and it maps an SR output back onto the
    input grid (the convention above) without the half-pixel shift of strided or bilinear resampling.
    """
    height, width = x.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"image size {height}×{width} is not a multiple of scale {scale}")
    blocks = x.reshape(*x.shape[:-2], height // scale, scale, width // scale, scale)
    return blocks.mean(axis=(-3, -1))


def check_north_up(transform: Affine, source: str) -> None:
    """Refuse transforms that a rectangular tile grid cannot represent without resampling."""
    if transform.is_identity:
        raise InvalidRasterError(f"{source}: raster has no geotransform (georeference it first)")
    if transform.b != 0 or transform.d != 0:
        raise InvalidRasterError(
            f"{source}: rotated or sheared geotransform is not supported "
            "(warp it to a north-up grid first, e.g. with gdalwarp)"
        )
    if transform.a == 0 or transform.e == 0:
        raise InvalidRasterError(f"{source}: geotransform has a zero pixel size")
