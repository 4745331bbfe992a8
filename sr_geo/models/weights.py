"""Model weights as safetensors files whose header carries everything needed to rebuild the model.

No pickle anywhere: the architecture name and constructor arguments live in the header as JSON, the
tensors in the body. The file's SHA-256 is the weights' identity in provenance and resume keys.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sr_geo import __version__
from sr_geo.errors import InvalidRequestError
from sr_geo.models.base import SRModel
from sr_geo.models.receptive import SEAM_TOLERANCE


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


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def weights_metadata(path: str | Path) -> dict[str, str]:
    """The header of a weights file, refused in one line when it is missing or not one of ours."""
    if not Path(path).is_file():
        raise InvalidRequestError(f"{path}: weights file not found")
    try:
        metadata = read_metadata(path)
    except Exception as exc:  # safetensors raises several types for a damaged header
        raise InvalidRequestError(f"{path}: not a safetensors weights file ({exc})") from None
    if "arch" not in metadata or "config" not in metadata:
        raise InvalidRequestError(f"{path}: a safetensors file without sr-geo's architecture header")
    return metadata


def load_weights(path: str | Path, architectures: dict[str, type[SRModel]]) -> SRModel:
    """Rebuild the model named in the header and load its tensors."""
    metadata = weights_metadata(path)
    arch = metadata["arch"]
    if arch not in architectures:
        raise InvalidRequestError(f"{path}: unknown architecture {arch!r} in weights header")
    model = architectures[arch](**json.loads(metadata["config"]))
    model.load_state_dict(load_file(str(path)))
    model._theoretical_radius = int(metadata["theoretical_radius"])
    if "effective_radius" in metadata:
        model.effective_radius = int(metadata["effective_radius"])
    return model.eval()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
