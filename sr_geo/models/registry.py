"""Which models exist and how a name and a scale become a ready model.

Learned models are band-agnostic, so one weights file per (model, scale) serves every band count:
shipped weights live in `sr_geo/weights/` as `{name}_x{scale}.safetensors`.

Everything here but `build_model` works without torch: a command checks the request (model names,
scales, the weights' headers) before torch and the networks would load (1.2 s of imports on this
machine kind), so a refusal is quick, and the driver plans a run (halo from `receptive_radius`) without
ever loading them: only the actors run models.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sr_geo.errors import InvalidRequestError
from sr_geo.models.header import file_sha256, weights_metadata

if TYPE_CHECKING:
    from sr_geo.models.base import SRModel


@dataclass(frozen=True)
class Architecture:
    """A model family, known by name before its network's module loads."""

    module: str
    class_name: str
    temporal: bool = False  # reads a time stack: frames, their validity and shifts (`SRModel.temporal`)
    radius: int | None = None  # receptive radius of a model without weights; weights carry their own

    def load(self) -> type[SRModel]:
        return getattr(importlib.import_module(self.module), self.class_name)


WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
ARCHITECTURES = {
    "bicubic": Architecture("sr_geo.models.bicubic", "Bicubic", radius=2),  # Keys' kernel: 2 taps a side
    "lanczos": Architecture("sr_geo.models.lanczos", "Lanczos", radius=3),  # Lanczos-3
    "cnn": Architecture("sr_geo.models.cnn", "CNN"),
    "gan": Architecture("sr_geo.models.gan", "RRDBNet"),
    "rnn": Architecture("sr_geo.models.rnn", "RNN", temporal=True),
}
CLASSICAL = ("bicubic", "lanczos")
SCALES = (2, 4)


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
    """The weights file that will serve a `bands`-band scene, or None for a model without weights."""
    if bands < 1:
        raise InvalidRequestError(f"a scene needs at least one band, got {bands}")
    if spec.weights:
        return Path(spec.weights)
    if spec.name in CLASSICAL:
        return None
    candidate = WEIGHTS_DIR / f"{spec.name}_x{spec.scale}.safetensors"
    if not candidate.is_file():
        raise InvalidRequestError(
            f"no shipped weights for model {spec.name!r} at ×{spec.scale}; pass --weights FILE "
            "(train one with `sr-geo train`)"
        )
    return candidate


def weights_id(spec: ModelSpec, bands: int) -> str:
    """SHA-256 of the weights that will run ('none' for bicubic): part of provenance and resume keys."""
    path = weights_path(spec, bands)
    return "none" if path is None else file_sha256(path)


def receptive_radius(spec: ModelSpec, bands: int) -> int:
    """The model's `receptive_radius`, the planner's default halo, without building the model: from the
    weights' header (the measured effective radius, else the theoretical one), or the architecture's."""
    path = check_weights(spec, bands)
    if path is None:
        return ARCHITECTURES[spec.name].radius
    metadata = weights_metadata(path)
    return int(metadata.get("effective_radius", metadata["theoretical_radius"]))


def build_model(spec: ModelSpec, bands: int) -> SRModel:
    """The model for `spec`, ready for a scene of `bands` bands (any count: the models are band-agnostic).

    Weights are channels-last, so every convolution runs in that layout: on two CPU cores (oneDNN) the
    shipped cnn, gan and rnn ran 1.40×, 1.43× and 1.19× faster on tile batches than in the default layout,
    outputs equal to 1e-5 of a band's std; on GPUs it is the layout tensor cores want.
    """
    import torch  # torch and the networks load here, not with the registry (see above)

    from sr_geo.models.weights import load_weights

    path = check_weights(spec, bands)
    if path is None:
        return ARCHITECTURES[spec.name].load()(spec.scale).eval()
    return load_weights(path).to(memory_format=torch.channels_last).eval()


def check_weights(spec: ModelSpec, bands: int) -> Path | None:
    """`weights_path`, refused in one line unless its header is sr-geo's and names `spec`'s model and
    scale: read from the header alone, so a run refuses before any service starts."""
    path = weights_path(spec, bands)
    if path is None:
        return None
    metadata = weights_metadata(path)
    arch, scale = metadata["arch"], json.loads(metadata["config"]).get("scale")
    if arch not in ARCHITECTURES:
        raise InvalidRequestError(f"{path}: unknown architecture {arch!r} in weights header")
    if scale != spec.scale:
        raise InvalidRequestError(f"{path}: weights are for ×{scale}, not ×{spec.scale}")
    if arch != spec.name:
        raise InvalidRequestError(f"{path}: weights are for model {arch!r}, not {spec.name!r}")
    return path
