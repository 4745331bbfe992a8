"""The header of a weights file, read without torch.

A command checks the weights a request names (architecture, scale) and its identity (SHA-256) before
any service starts; reading only the header keeps that check, and a refusal, free of torch's import
(1.2 s on this machine kind). The tensors are `sr_geo.models.weights`'s.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors import safe_open

from sr_geo.errors import InvalidRequestError


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="numpy") as handle:  # "pt" would import torch for a header
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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
