"""Training batches and the validation set: HR patches cut from standardised rasters, degraded to LR.

Every random choice of a step (band count, rasters, windows, bands, augmentation, degradation) is
drawn from a generator seeded by (seed, step), so a batch depends on nothing but its step number: a
resumed run sees exactly the batches the uninterrupted run would have seen, without saving any
random state.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sr_geo.degrade import DegradationRanges, SensorModel, gaussian_psf_kernel
from sr_geo.training.sources import Raster
from sr_geo.training.split import Split


@dataclass(frozen=True)
class Batch:
    lr: torch.Tensor  # (N, C, h, w) standardised; (N, T, C, h, w) frames for temporal models
    hr: torch.Tensor  # (N, C, h·scale, w·scale)
    valid: torch.Tensor | None = None  # (N, T, h, w) frame validity, temporal models only
    shifts: torch.Tensor | None = None  # (N, T, 2) frames' measured shifts, LR pixels, temporal models only


@dataclass(frozen=True)
class ValidationPatch:
    """One held-out patch, degraded once with its own fixed sensor model, all of its raster's bands."""

    raster: str
    lr: torch.Tensor  # (1, C, h, w); (1, T, C, h, w) for temporal models
    hr: torch.Tensor  # (1, C, H, W)
    data_range: np.ndarray  # (C,) PSNR peak per band, in standardised units
    valid: torch.Tensor | None = None  # (1, T, h, w), temporal models only
    shifts: torch.Tensor | None = None  # (1, T, 2), temporal models only


def degradation_margin(scale: int, ranges: DegradationRanges) -> int:
    """HR pixels of real context kept around a patch so the PSF blur never sees a padded border.

    The widest PSF (lowest MTF) sets it; rounded up to whole LR pixels so LR and HR crops stay aligned.
    """
    sigma = SensorModel(scale, mtf_nyquist=ranges.mtf_nyquist[0]).psf_sigma
    radius = len(gaussian_psf_kernel(sigma)) // 2
    return scale * math.ceil(radius / scale)


class PatchSampler:
    """Draws training batches from the training windows of a split."""

    def __init__(
        self, rasters: list[Raster], split: Split, scale: int, patch: int, ranges: DegradationRanges, seed: int
    ) -> None:
        self.scale, self.patch, self.ranges, self.seed = scale, patch, ranges, seed
        self.margin = degradation_margin(scale, ranges)
        self.rasters = rasters
        self.corners = split.train
        self.max_bands = max(r.bands for r, c in zip(rasters, self.corners, strict=True) if len(c))

    def batch(self, step: int, size: int) -> Batch:
        """Patches of one random band count k in 1..max bands: every source with rasters of >= k bands
        is equally likely (so a small source counts as much as a large one), then a raster of it, a
        window, k of its bands in random order, a flip/rotation and a sensor model."""
        generator = self.step_generator(step)
        k = _choice(generator, self.max_bands) + 1
        lrs, hrs = [], []
        for window in self.windows(generator, k, size):
            lr, hr = self._degrade(window, self.ranges.sample(self.scale, generator), generator)
            lrs.append(lr)
            hrs.append(hr)
        return Batch(torch.stack(lrs), torch.stack(hrs))

    def step_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + step)

    def windows(self, generator: torch.Generator, k: int, size: int) -> Iterator[torch.Tensor]:
        """`size` augmented HR windows (patch plus margin) of k bands, drawn lazily: each window's draws
        come just before the draws its caller makes for it, so batches stay a function of the step."""
        by_source: dict[str, list[int]] = defaultdict(list)
        for i, raster in enumerate(self.rasters):
            if raster.bands >= k and len(self.corners[i]):
                by_source[raster.source].append(i)
        sources = sorted(by_source)
        for _ in range(size):
            candidates = by_source[sources[_choice(generator, len(sources))]]
            index = candidates[_choice(generator, len(candidates))]
            raster, corners = self.rasters[index], self.corners[index]
            row, col = corners[_choice(generator, len(corners))].tolist()
            bands = torch.randperm(raster.bands, generator=generator)[:k].tolist()
            footprint = self.patch + 2 * self.margin
            window = torch.from_numpy(raster.pixels[bands, row : row + footprint, col : col + footprint])
            yield _augment(window, generator)

    def _degrade(
        self, window: torch.Tensor, sensor: SensorModel, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lr = sensor.degrade(window[None], generator)[0]
        m, s, p = self.margin, self.scale, self.patch
        return lr[:, m // s : (m + p) // s, m // s : (m + p) // s], window[:, m : m + p, m : m + p]

    def validation(self, split: Split, count: int) -> list[ValidationPatch]:
        """Up to `count` held-out patches, shared out evenly between sources, fixed by the seed."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 - 1)
        patches = []
        for raster, window in self.validation_windows(split, count, generator):
            lr, hr = self._degrade(window, self.ranges.sample(self.scale, generator), generator)
            patches.append(ValidationPatch(raster.name, lr[None], hr[None], raster.data_range))
        return patches

    def validation_windows(self, split: Split, count: int, generator: torch.Generator) -> list[tuple[Raster, torch.Tensor]]:
        """The held-out windows (patch plus margin, all bands) and their rasters."""
        pools: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for i, (raster, corners) in enumerate(zip(self.rasters, split.val, strict=True)):
            pools[raster.source] += [(i, int(r), int(c)) for r, c in corners]
        chosen: list[tuple[int, int, int]] = []
        for position, source in enumerate(sorted(pools)):
            share = math.ceil((count - len(chosen)) / (len(pools) - position))
            order = torch.randperm(len(pools[source]), generator=generator)[:share].tolist()
            chosen += [pools[source][j] for j in order]
        footprint = self.patch + 2 * self.margin
        return [(self.rasters[index], torch.from_numpy(self.rasters[index].pixels[:, row : row + footprint, col : col + footprint]))
                for index, row, col in chosen]


def _choice(generator: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def _augment(window: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One of the eight flips/rotations: imagery has no preferred orientation."""
    turns, flip = _choice(generator, 4), _choice(generator, 2)
    window = torch.rot90(window, turns, dims=(-2, -1))
    return window.flip(-1) if flip else window
