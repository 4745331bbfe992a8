"""Everything that can be refused before any work starts, in one place for the CLI and the flows."""

from __future__ import annotations

import os
from pathlib import Path

from sr_geo.errors import InvalidRequestError
from sr_geo.models.registry import ModelSpec, check_weights
from sr_geo.scene import SceneInfo, check_has_valid_pixels, inspect_scene
from sr_geo.storage import is_remote


def _same_file(a: str, b: str) -> bool:
    if is_remote(a) or is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.abspath(a) == os.path.abspath(b)


def check_sensor_mtf(consistent: bool, sensor_mtf: float | None) -> None:
    """An assumed MTF means nothing without back-projection: refuse it rather than ignore it."""
    if sensor_mtf is not None and not consistent:
        raise InvalidRequestError("--sensor-mtf sets what --consistent assumes; add --consistent or leave it out")


def check_uncertainty(uncertainty: bool, temporal: bool, arch: str) -> None:
    """Refuse what a temporal model cannot honour: the dihedral spread transforms one image, and a
    stack's frames sit at shifts the model reads."""
    if temporal and uncertainty:
        raise InvalidRequestError(f"--uncertainty is not supported for the temporal model {arch!r}; run without it")


def check_inference_flags(uncertainty: bool, consistent: bool, temporal: bool, arch: str,
                          sensor_mtf: float | None = None) -> None:
    """The inference flags of a run, refused in one line where the model cannot honour them: what the CLI
    checks before any service starts and `InferenceOptions.requested` again inside the flow."""
    check_sensor_mtf(consistent, sensor_mtf)
    check_uncertainty(uncertainty, temporal, arch)


def validate_request(source: str, destination: str, spec: ModelSpec) -> SceneInfo:
    """Validate input, output path and model together; returns the scene so it is read only once."""
    if _same_file(source, destination):
        raise InvalidRequestError(f"{destination}: output path is the input itself; choose another output path")
    if not is_remote(destination) and os.path.isdir(destination):
        raise InvalidRequestError(f"{destination}: output path is a directory; give a file name such as out.tif")
    if not destination.lower().endswith((".tif", ".tiff")):
        raise InvalidRequestError(f"{destination}: the output is a Cloud Optimized GeoTIFF; name it .tif or .tiff")
    if spec.weights and not Path(spec.weights).is_file():
        raise InvalidRequestError(f"{spec.weights}: weights file not found")
    scene = inspect_scene(source)
    check_has_valid_pixels(source)
    check_weights(spec, scene.count)
    if is_remote(destination):
        return scene
    parent = Path(destination).resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequestError(f"{destination}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise InvalidRequestError(f"{parent}: output directory is not writable")
    return scene
