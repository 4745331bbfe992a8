"""Model weights as safetensors files whose header carries everything needed to rebuild the model.

No pickle anywhere: the architecture name and constructor arguments live in the header as JSON, the
tensors in the body. The file's SHA-256 is the weights' identity in provenance and resume keys.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from sr_geo import __version__
from sr_geo.errors import InvalidRequestError
from sr_geo.models.base import SRModel
from sr_geo.models.header import weights_metadata
from sr_geo.models.receptive import SEAM_TOLERANCE
from sr_geo.models.registry import ARCHITECTURES


def save_weights(model: SRModel, path: str | Path, **card: object) -> None:
    """Write `model` with its config, receptive radii and any model-card fields (stored as JSON)."""
    metadata = {
        "arch": model.arch,
        "config": json.dumps(model.config()),
        "scale": str(model.scale),
        "theoretical_radius": str(model.theoretical_radius),
        "normalisation": "per-band scene standardisation: (x - mean) / std over valid pixels; invalid pixels 0",
        "sr_geo_version": __version__,
    }
    if model.effective_radius is not None:
        metadata["effective_radius"] = str(model.effective_radius)
        metadata["effective_radius_tolerance"] = str(SEAM_TOLERANCE)
    metadata.update({key: json.dumps(value) for key, value in card.items()})
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)


def load_weights(path: str | Path) -> SRModel:
    """Rebuild the model named in the header and load its tensors."""
    metadata = weights_metadata(path)
    arch = metadata["arch"]
    if arch not in ARCHITECTURES:
        raise InvalidRequestError(f"{path}: unknown architecture {arch!r} in weights header")
    model = ARCHITECTURES[arch].load()(**json.loads(metadata["config"]))
    model.load_state_dict(load_file(str(path)))
    model._theoretical_radius = int(metadata["theoretical_radius"])
    if "effective_radius" in metadata:
        model.effective_radius = int(metadata["effective_radius"])
    return model.eval()
