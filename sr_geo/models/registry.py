"""Which models exist and how a name, a scale and a band count become a ready model.

Shipped weights live in `sr_geo/weights/` as `{name}_x{scale}_{bands}b.safetensors`. A scene whose
band count has no dedicated weights uses the single-band weights on every band (`Bandwise`), so
every band count from 1 upward works with what ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sr_geo.errors import InvalidRequestError
from sr_geo.models.base import SRModel
from sr_geo.models.bicubic import Bicubic
from sr_geo.models.cnn import CNN
from sr_geo.models.lanczos import Lanczos
from sr_geo.models.weights import file_sha256, load_weights

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
ARCHITECTURES: dict[str, type[SRModel]] = {"bicubic": Bicubic, "lanczos": Lanczos, "cnn": CNN}
CLASSICAL = ("bicubic", "lanczos")
SCALES = (2, 4)


class Bandwise(SRModel):
    """Runs a single-band model on each band independently (bands folded into the batch)."""

    def __init__(self, inner: SRModel, bands: int) -> None:
        super().__init__(bands, inner.scale)
        self.inner = inner
        self.arch = inner.arch
        self.effective_radius = inner.effective_radius
        self._theoretical_radius = inner._theoretical_radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.inner(x.reshape(n * c, 1, h, w))
        return y.reshape(n, c, *y.shape[-2:])


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for; resolved to a weights file (or none, for bicubic) at plan time."""

    name: str
    scale: int
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.name not in ARCHITECTURES:
            raise InvalidRequestError(
                f"unknown model {self.name!r} (choose from {', '.join(sorted(ARCHITECTURES))})"
            )
        if self.scale not in SCALES:
            raise InvalidRequestError(
                f"unsupported scale ×{self.scale} (choose from {', '.join(map(str, SCALES))})"
            )


def weights_path(spec: ModelSpec, bands: int) -> Path | None:
    """The weights file that serves `bands` bands, or None for a model without weights."""
    if spec.weights:
        return Path(spec.weights)
    if spec.name in CLASSICAL:
        return None
    for count in (bands, 1):
        candidate = WEIGHTS_DIR / f"{spec.name}_x{spec.scale}_{count}b.safetensors"
        if candidate.is_file():
            return candidate
    raise InvalidRequestError(
        f"no shipped weights for model {spec.name!r} at ×{spec.scale}; pass --weights FILE "
        "(train one with `sr-geo train`)"
    )


def weights_id(spec: ModelSpec, bands: int) -> str:
    """SHA-256 of the weights that will run ('none' for bicubic): part of provenance and resume keys."""
    path = weights_path(spec, bands)
    return "none" if path is None else file_sha256(path)


def build_model(spec: ModelSpec, bands: int) -> SRModel:
    path = weights_path(spec, bands)
    if path is None:
        return ARCHITECTURES[spec.name](bands, spec.scale).eval()
    model = load_weights(path, ARCHITECTURES)
    if model.scale != spec.scale:
        raise InvalidRequestError(f"{path}: weights are for ×{model.scale}, not ×{spec.scale}")
    if model.bands == bands:
        return model
    if model.bands == 1:
        return Bandwise(model, bands).eval()
    raise InvalidRequestError(f"{path}: weights are for {model.bands} bands, the scene has {bands}")
