"""Running a model over tiles: normalise, forward in batches, trim the halo, write the output chunk.

This is the whole of an actor's work, kept free of Ray so it can be tested and reused directly. The
same normalisation and padding drive `predict_whole`, the whole-image reference the seam tests
compare tiled output against.

Stacks (a time axis longer than one frame): temporal models (`model.temporal`) get every frame and
its validity. A single-image model gets one frame, the same for every tile so that tiles cannot
disagree: the clearest, i.e. the frame with the most valid pixels in the scene (the earliest on ties),
which for a single scene is its only frame. Normalisation uses every valid pixel of every frame.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from sr_geo.config import resolve_precision
from sr_geo.errors import InvalidRequestError
from sr_geo.inference_options import InferenceOptions
from sr_geo.models.base import SRModel
from sr_geo.plan import BORDER, TilePlan
from sr_geo.preflight import check_uncertainty
from sr_geo.stack import Stack, clearest_frame
from sr_geo.store import TileStore
from sr_geo.uncertainty import dihedral_spread


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
        return x * self._std() + self.mean.astype(np.float32).reshape(-1, 1, 1)

    def invert_spread(self, spread: np.ndarray) -> np.ndarray:
        """A standard deviation in model units back to data units (scale only, no offset).

        Rounded to 1/1000 of the scene's std first: finer digits carry no information and would
        only defeat compression of the uncertainty COG.
        """
        return np.round(spread, 3) * self._std()

    def _std(self) -> np.ndarray:
        return self.std.astype(np.float32).reshape(-1, 1, 1)


def choose_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast(device: torch.device, precision: str):
    """bfloat16 autocast for the networks where the precision asks for it (inference and training alike);
    float32 needs none."""
    if resolve_precision(device.type, precision) == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def forward(model: SRModel, x: np.ndarray, device: torch.device, valid: np.ndarray | None = None,
            shifts: np.ndarray | None = None, precision: str = "auto") -> np.ndarray:
    """The plain network on a normalised float32 batch (N, C, h, w), without gradients; a temporal model
    takes (N, T, C, h, w), the frames' validity (N, T, h, w) and their shifts (N, T, 2)."""
    with torch.inference_mode(), autocast(device, precision):
        inputs = [torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)
                  for a in (x, valid, shifts) if a is not None]
        y = model(*inputs)
    return y.float().cpu().numpy()


def run_model(
    model: SRModel, x: np.ndarray, valid: np.ndarray, device: torch.device, options: InferenceOptions,
    shifts: np.ndarray | None = None, precision: str = "auto",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Output (and spread, with uncertainty) for a normalised float32 batch (N, C, h, w), valid (N, h, w);
    for a temporal model (N, T, C, h, w), (N, T, h, w) and the frames' shifts (T, 2), the same for every tile.

    The network runs in `precision` (`sr_geo.config.PRECISIONS`); back-projection always in float32.
    """
    check_uncertainty(options.uncertainty, model.temporal, model.arch)
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)
        vt = torch.from_numpy(np.ascontiguousarray(valid)).to(device)
        st = None
        if model.temporal:
            st = torch.zeros(xt.shape[:2] + (2,), device=device) if shifts is None else (
                torch.from_numpy(shifts).to(device).expand(len(xt), -1, -1))
        with autocast(device, precision):
            if model.temporal:
                y, spread = model(xt, vt, st), None
            else:
                y, spread = dihedral_spread(model, xt) if options.uncertainty else (model(xt), None)
        y = y.float()
        projection = options.back_projection(model.scale)
        if projection is not None and model.temporal:
            y = projection.project_frames(y, xt, model.observed(xt, vt), st)
        elif projection is not None:
            y = projection.project(y, xt, vt)
    return y.cpu().numpy(), None if spread is None else spread.float().cpu().numpy()


# Models fold bands (and frames) into their batch, so a model call's memory grows with tiles × bands:
# the batch size counts 4-band tiles, and a batch of a scene with more bands is cut into model calls
# of at most `batch_size × REFERENCE_BANDS` band images. A 12-band scene then needs the memory of a
# 4-band one (a tile's bands always go together: they exchange features inside the model).
REFERENCE_BANDS = 4
# The share of an actor's memory its model calls may take: the rest holds the batch in flight beside
# the one in the model, the store's buffers and the interpreter.
CALL_MEMORY_FRACTION = 0.75


def tile_bytes(model: SRModel, bands: int, frames: int, region: tuple[int, int]) -> float:
    """Working memory of the model's forward pass over one tile of `region` input pixels."""
    output_pixels = region[0] * region[1] * model.scale**2
    return model.working_bytes(frames if model.temporal else 1) * bands * output_pixels


def tiles_per_call(model: SRModel, bands: int, frames: int, region: tuple[int, int], batch: int,
                   budget: float | None) -> int:
    """How many tiles of a batch go into one model call: at most `batch_size × REFERENCE_BANDS` band images
    (frames count for temporal models), and no more than `budget` bytes of working memory, one tile at least.

    Memory grows with the square of the tile: at ×4 an actor running the CNN on calls of 4 four-band
    tiles of 256² + halo peaks at 5.4 GB; tiles of 512² would need about 20 GB, so a larger --tile is
    cut into smaller calls instead of running out.
    """
    tiles = batch * REFERENCE_BANDS // (bands * (frames if model.temporal else 1))
    if budget is not None:
        tiles = min(tiles, int(budget // tile_bytes(model, bands, frames, region)))
    return max(1, tiles)


def call_memory_budget(device: torch.device, host_bytes: float, gpu_share: float) -> float:
    """Bytes an actor's model calls may use: `CALL_MEMORY_FRACTION` of its share of the GPU's memory, or on
    CPU of the `host_bytes` of the node's memory the pool gave it (0: unbounded)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory * gpu_share * CALL_MEMORY_FRACTION
    return host_bytes * CALL_MEMORY_FRACTION


def check_tile_fits(model: SRModel, bands: int, frames: int, plan: TilePlan, budget: float) -> None:
    """Refuse a tile whose one forward pass needs more than an actor has, naming the largest square tile
    that would fit with the same halo."""
    need = tile_bytes(model, bands, frames, plan.region_shape)
    if need <= budget:
        return
    side = math.isqrt(int(budget / tile_bytes(model, bands, frames, (1, 1))))
    fits = side - 2 * plan.halo
    advice = (f"use --tile {fits} or smaller" if fits >= 8 else
              f"lower --halo ({plan.halo}): a tile and twice its halo must stay under {side} px")
    raise InvalidRequestError(
        f"one tile of {plan.tile_width}×{plan.tile_height} px + halo {plan.halo} ({bands} band{'s' * (bands != 1)}) "
        f"at ×{model.scale} needs about {need / 2**30:.1f} GiB in the {model.arch} model, more than the "
        f"{budget / 2**30:.1f} GiB an actor has: {advice}")


class TilePredictor:
    """Holds one model on one device and turns batches of tile ids into written output chunks.

    Safe to call from several threads: reading and decompressing one batch and compressing and
    writing another overlap the forward pass, and every model call runs on one thread of its own.
    On CPU that keeps torch to one OpenMP thread team per actor (each calling thread would bring its
    own: an actor with two batches in flight ran four compute threads on two cores, now two).
    A model call holds as many tiles as `tiles_per_call` allows for `batch_size` and a `memory_budget`
    in bytes (None: no bound), and runs in `precision`.
    """

    def __init__(self, store_url: str, model: SRModel, device: torch.device, storage_options: dict | None = None,
                 batch_size: int = 4, memory_budget: float | None = None, precision: str = "auto"):
        self.store = TileStore.open(store_url, storage_options)
        self.model = model.to(device).eval()
        self.device, self.precision = device, precision
        self.batch_size, self.memory_budget = batch_size, memory_budget
        self.norm = Normalisation(*self.store.band_statistics())
        self.options = InferenceOptions(**self.store.attrs.get("inference", {}))
        self.frame = clearest_frame(self.store.group["stats"][:, :, 0, 0].sum(axis=0))
        stack = self.store.attrs.get("stack")
        self.shifts = Stack.from_attrs(stack).shifts() if stack else None
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")

    def check_tile_fits(self) -> None:
        """`check_tile_fits` for this store's tiles under the memory budget, if there is one."""
        if self.memory_budget is not None:
            check_tile_fits(self.model, self.store.group["input"].shape[2], self.store.frames, self.store.plan,
                            self.memory_budget)

    def predict(self, tile_ids: list[int]) -> list[int]:
        """Process and mark `tile_ids`; returns them. Idempotent: a retried batch rewrites the same chunks."""
        pixels, valid = self.store.read_inputs(tile_ids)
        if not self.model.temporal:
            pixels, valid = pixels[:, self.frame], valid[:, self.frame]
        x = self.norm.apply(pixels, valid)
        frames = x.shape[1] if x.ndim == 5 else 1
        per_call = tiles_per_call(self.model, x.shape[-3], frames, self.store.plan.region_shape, self.batch_size,
                                  self.memory_budget)
        for start in range(0, len(tile_ids), per_call):
            part = slice(start, start + per_call)
            y, spread = self._model_thread.submit(run_model, self.model, x[part], valid[part], self.device,
                                                  self.options, self.shifts, self.precision).result()
            for i, tile_id in enumerate(tile_ids[part]):
                self._write(tile_id, y[i], None if spread is None else spread[i])
        return list(tile_ids)

    def _write(self, tile_id: int, y: np.ndarray, spread: np.ndarray | None) -> None:
        """Denormalise the tile's core only (the halo is dropped first) and write it, then its marker."""
        plan, s = self.store.plan, self.store.plan.scale
        tile = plan.tile(tile_id)
        (r0, c0), h, w = tile.pad_before, int(tile.core.height), int(tile.core.width)
        core = (slice(None), slice(r0 * s, (r0 + h) * s), slice(c0 * s, (c0 + w) * s))
        self.store.write_output(tile, self.norm.invert(y[core]))
        if spread is not None:
            self.store.write_output(tile, self.norm.invert_spread(spread[core]), array="uncertainty")
        self.store.mark("done", tile_id)


def predict_whole(
    model: SRModel,
    pixels: np.ndarray,
    valid: np.ndarray,
    halo: int,
    norm: Normalisation,
    device: torch.device,
    options: InferenceOptions = InferenceOptions(),
    shifts: np.ndarray | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """One forward pass over a whole (B, H, W) image, or (T, B, H, W) stack with (T, H, W) validity and
    (T, 2) shifts, padded by `halo` as the tiler pads (`BORDER`): the seam-free reference. Frames are chosen
    as `TilePredictor` chooses them."""
    if pixels.ndim == 4 and not model.temporal:
        frame = clearest_frame(valid.sum(axis=(1, 2)))
        pixels, valid = pixels[frame], valid[frame]
    elif pixels.ndim == 3 and model.temporal:
        pixels, valid = pixels[None], valid[None]
    space = ((halo, halo), (halo, halo))
    x = np.pad(norm.apply(pixels, valid), ((0, 0),) * (pixels.ndim - 2) + space, mode=BORDER)
    valid = np.pad(valid, ((0, 0),) * (valid.ndim - 2) + space, mode=BORDER)
    y = norm.invert(run_model(model, x[None], valid[None], device, options, shifts, precision)[0][0])
    s = model.scale
    return y[:, halo * s : y.shape[1] - halo * s, halo * s : y.shape[2] - halo * s]
