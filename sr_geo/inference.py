"""Running a model over tiles: normalise, forward in batches, trim the halo, write the output chunk.

This is the whole of an actor's work, kept free of Ray so it can be tested and reused directly. The
same normalisation and padding drive `predict_whole`, the whole-image reference the seam tests
compare tiled output against.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from sr_geo.models.base import SRModel
from sr_geo.store import TileStore


@dataclass(frozen=True)
class Normalisation:
    """Per-band scene statistics: models see (x - mean) / std, invalid pixels as 0 (the mean)."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(..., B, h, w) raw pixels and (..., h, w) validity to float32 model input."""
        shape = (-1, 1, 1)
        x = (pixels.astype(np.float32) - self.mean.astype(np.float32).reshape(shape)) / self.std.astype(
            np.float32
        ).reshape(shape)
        return np.where(valid[..., None, :, :], x, np.float32(0))

    def invert(self, x: np.ndarray) -> np.ndarray:
        shape = (-1, 1, 1)
        return x * self.std.astype(np.float32).reshape(shape) + self.mean.astype(np.float32).reshape(shape)


def choose_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def forward(model: SRModel, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Model output for a float32 batch (N, C, h, w), without gradients, autocast on GPU."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with torch.inference_mode(), autocast:
        y = model(torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True))
    return y.float().cpu().numpy()


class TilePredictor:
    """Holds one model on one device and turns batches of tile ids into written output chunks.

    Safe to call from several threads: only the model call is serialised, so reading and
    decompressing one batch and compressing and writing another overlap the forward pass.
    """

    def __init__(self, store_url: str, model: SRModel, device: torch.device, storage_options: dict | None = None):
        self.store = TileStore.open(store_url, storage_options)
        self.model = model.to(device).eval()
        self.device = device
        mean, std = self.store.band_statistics()
        self.norm = Normalisation(mean, std)
        self._model_lock = threading.Lock()

    def predict(self, tile_ids: list[int]) -> list[int]:
        """Process and mark `tile_ids`; returns them. Idempotent: a retried batch rewrites the same chunks."""
        pixels, valid = self.store.read_inputs(tile_ids)
        x = self.norm.apply(pixels[:, 0], valid[:, 0])
        with self._model_lock:
            y = forward(self.model, x, self.device)
        y = self.norm.invert(y)
        plan, s = self.store.plan, self.store.plan.scale
        for tile_id, out in zip(tile_ids, y, strict=True):
            tile = plan.tile(tile_id)
            (r0, c0), h, w = tile.pad_before, int(tile.core.height), int(tile.core.width)
            self.store.write_output(tile, out[:, r0 * s : (r0 + h) * s, c0 * s : (c0 + w) * s])
            self.store.mark("done", tile_id)
        return list(tile_ids)


def predict_whole(
    model: SRModel, pixels: np.ndarray, valid: np.ndarray, halo: int, norm: Normalisation, device: torch.device
) -> np.ndarray:
    """One forward pass over a whole (B, H, W) image reflect-padded by `halo`: the seam-free reference."""
    x = norm.apply(pixels, valid)
    x = np.pad(x, ((0, 0), (halo, halo), (halo, halo)), mode="reflect")
    y = norm.invert(forward(model, x[None], device)[0])
    s = model.scale
    return y[:, halo * s : y.shape[1] - halo * s, halo * s : y.shape[2] - halo * s]
