"""Evaluating super-resolution models on held-out high-resolution (HR) rasters, with the pipeline in the loop.

An HR raster is degraded by a fixed, documented sensor model into the low-resolution (LR) raster a
coarser sensor would have recorded; each model's output for that LR raster is then scored against
the HR raster. The degradation is fixed (`EVAL_MTF_NYQUIST`, no noise) so that numbers from
different runs and different models are comparable; training randomises it instead.

Validity is carried by the files themselves (a nodata value or an internal mask, read back with
GDAL's dataset mask), so every stage, the pipeline included, agrees on which pixels count.
Evaluation rasters are small (or cropped), so everything here works on whole arrays.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from sr_geo.degrade import SensorModel
from sr_geo.errors import InvalidRequestError
from sr_geo.export import to_dtype
from sr_geo.inference_options import InferenceOptions
from sr_geo.metrics import cpsnr, ergas, high_frequency_energy, psnr, sam, ssim
from sr_geo.models.registry import ModelSpec, weights_path
from sr_geo.models.temporal import masked_median
from sr_geo.preflight import validate_request
from sr_geo.quicklook import rgb_bands
from sr_geo.scene import data_bands, read_valid
from sr_geo.training.temporal import StackSynthesis

EVAL_MTF_NYQUIST = 0.3
BASELINES = ("bicubic", "lanczos")
MIN_HR_SIZE = 32  # SSIM windows (11 px), cPSNR shifts and the PSF support all need room
MIN_HF_SIZE = 16  # below this the radial spectrum has too few rings to mean anything


@dataclass(frozen=True)
class EvalConfig:
    """What an evaluation run holds fixed for every raster and model.

    `crop`: side of the central HR square evaluated (None: the whole raster). `zero_fill`: pixels
    that are zero in every band are invalid in rasters that declare neither nodata nor a mask, the
    undeclared fill of many real products (Landsat collars, SpaceNet tiles). `max_shift`: cPSNR's
    search radius in HR pixels, as in PROBA-V. `rgb`: 1-based bands shown in the picture grid for
    rasters whose colour interpretation does not mark red, green and blue.
    """

    scale: int
    crop: int | None = None
    zero_fill: bool = True
    max_shift: int = 3
    rgb: tuple[int, int, int] | None = None
    consistent: bool = False  # models' outputs back-projected onto their input (`--consistent`), baselines not
    sensor_mtf: float | None = None  # the MTF back-projection assumes (None: InferenceOptions' default)

    def __post_init__(self) -> None:
        SensorModel(self.scale)  # validates the scale
        if self.crop is not None and self.crop < MIN_HR_SIZE:
            raise InvalidRequestError(f"crop must be at least {MIN_HR_SIZE} HR pixels, got {self.crop}")
        if self.rgb is not None and (len(self.rgb) != 3 or min(self.rgb) < 1):
            raise InvalidRequestError(f"rgb must be three 1-based band numbers, got {self.rgb}")

    @property
    def sensor(self) -> SensorModel:
        """The documented evaluation degradation."""
        return SensorModel(self.scale, mtf_nyquist=EVAL_MTF_NYQUIST, noise_std=0.0)


@dataclass(frozen=True)
class EvalRow:
    """One model's scores on one raster; metrics are band means (see `score`)."""

    raster: str
    model: str
    psnr: float
    ssim: float
    cpsnr: float
    sam: float
    ergas: float
    lr_psnr: float
    hf_ratio: float
    seconds: float


@dataclass(frozen=True)
class EvalCase:
    """One raster's files: the HR reference, the LR input made from it, and each model's output."""

    name: str
    hr: str
    lr: str
    outputs: tuple[tuple[str, str], ...]  # (model, path), in column order


# Column header, number format. The header documents the data range shared by the PSNR-like columns.
_COLUMNS = {
    "psnr": ("PSNR dB", ".2f"),
    "ssim": ("SSIM", ".4f"),
    "cpsnr": ("cPSNR dB", ".2f"),
    "sam": ("SAM °", ".3f"),
    "ergas": ("ERGAS", ".3f"),
    "lr_psnr": ("LR-consistency PSNR dB", ".2f"),
    "hf_ratio": ("HF energy SR/HR", ".3f"),
    "seconds": ("pipeline s", ".1f"),
}


def consistency_note(config: EvalConfig | StackEvalConfig) -> str:
    """The caption's sentence on `--consistent`, empty without it."""
    if not config.consistent:
        return ""
    mtf = config.sensor_mtf or InferenceOptions().consistency_mtf
    return (f"Models ran with `--consistent`: outputs back-projected under the sensor model with MTF {mtf} assumed "
            "(a temporal model's onto every frame at its shift, a single-image model's onto its input); the "
            "baselines not. ")


def model_order(models: Sequence[str]) -> tuple[str, ...]:
    """The baselines first, then the requested models in their order, each once: every table has its reference."""
    return tuple(dict.fromkeys([*BASELINES, *models]))


def validate_eval_request(
    hr_rasters: Sequence[str], models: Sequence[str], config: EvalConfig, weights: dict[str, str], out_dir: str
) -> None:
    """Refuse, before any work, what would fail later: unreadable rasters, unknown models, missing weights."""
    if not hr_rasters:
        raise InvalidRequestError("no HR rasters to evaluate")
    for name in weights:
        if name not in model_order(models):
            raise InvalidRequestError(f"--weights names model {name!r}, which is not in --models")
    specs = [ModelSpec(model, config.scale, weights.get(model)) for model in model_order(models)]
    for path in hr_rasters:
        scene = validate_request(path, str(Path(out_dir) / "sr" / "unused.tif"), specs[0])
        side = min(scene.grid.height, scene.grid.width, config.crop or math.inf) // config.scale * config.scale
        if side < MIN_HR_SIZE:
            raise InvalidRequestError(
                f"{path}: {scene.grid.width}×{scene.grid.height} px is too small to evaluate at ×{config.scale} "
                f"(at least {MIN_HR_SIZE} HR pixels a side)"
            )
        for spec in specs:
            if spec.weights and not Path(spec.weights).is_file():
                raise InvalidRequestError(f"{spec.weights}: weights file for model {spec.name!r} not found")
            try:
                weights_path(spec, scene.count)
            except InvalidRequestError:
                raise InvalidRequestError(
                    f"model {spec.name!r} has no shipped weights at ×{config.scale}: pass --weights "
                    f"{spec.name}=FILE or leave it out of --models"
                ) from None


def prepare_hr(source: str, hr_path: str, scale: int, crop: int | None = None, zero_fill: bool = True) -> str:
    """Write the HR reference: the central square (or whole raster) cut to a multiple of `scale`.

    Validity is made explicit in the file (the source's nodata, else an internal mask), so the LR
    input, the pipeline and the scores all see the same invalid pixels; non-finite values are never valid.
    """
    with rasterio.open(source) as src:
        height = min(src.height, crop or src.height) // scale * scale
        width = min(src.width, crop or src.width) // scale * scale
        window = Window((src.width - width) // 2, (src.height - height) // 2, width, height)
        data, valid = read_valid(src, window)
        if zero_fill and all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums):
            valid &= (data != 0).any(axis=0)
        if not valid.any():
            raise InvalidRequestError(f"{source}: the evaluated {width}×{height} px region has no valid pixel")
        _write(hr_path, data, valid, src, src.window_transform(window))
    return hr_path


def make_lr(hr_path: str, lr_path: str, sensor: SensorModel) -> str:
    """Write the LR raster `sensor` would record of `hr_path`, on the HR grid coarsened by `sensor.scale`.

    The HR raster is first cut to a multiple of the scale from its top-left corner, so LR pixel (i, j)
    covers exactly HR pixels [i·s, (i+1)·s) and the two rasters have the same bounds. An LR pixel is
    valid only if all its HR pixels are; near invalid pixels the PSF is renormalised over the valid
    ones, so fill values never bleed into the LR image. The LR raster keeps the HR dtype (rounded and
    clipped as a sensor's quantiser would) and its nodata or mask.
    """
    s = sensor.scale
    with rasterio.open(hr_path) as src:
        window = Window(0, 0, src.width // s * s, src.height // s * s)
        hr = src.read(window=window).astype(np.float64)
        valid = src.dataset_mask(window=window) > 0
        lr, _ = _degrade(hr, valid, sensor)
        h, w = valid.shape
        lr_valid = valid.reshape(h // s, s, w // s, s).all(axis=(1, 3))
        values = to_dtype(np.where(lr_valid, lr, 0.0), lr_valid, src.dtypes[0], src.nodata)
        _write(lr_path, values, lr_valid, src, src.transform * Affine.scale(s))
    return lr_path


def score(sr_path: str, hr_path: str, lr_path: str, sensor: SensorModel, max_shift: int = 3) -> dict[str, float]:
    """Every metric of `sr_path` against the HR reference, as band means, over pixels valid in all three.

    data_range for PSNR, SSIM and cPSNR is per band: the HR band's range (max − min) over its valid
    pixels, so a score does not depend on the dtype's nominal range. `lr_psnr` degrades the output by
    the same `sensor` and compares it with the LR input, over LR pixels whose whole sensor footprint is
    valid: a model that invents detail inconsistent with what was observed scores low. `hf_ratio` is
    the output's high-frequency energy over the HR image's (1: as much fine detail), on the largest
    all-valid square, because a masked border would add spectral energy of its own.
    """
    s = sensor.scale
    with rasterio.open(lr_path) as lr_ds:
        lr = lr_ds.read().astype(np.float64)
        lr_valid = lr_ds.dataset_mask() > 0
    height, width = lr_valid.shape[0] * s, lr_valid.shape[1] * s
    with rasterio.open(hr_path) as hr_ds, rasterio.open(sr_path) as sr_ds:
        window = Window(0, 0, width, height)
        if ((sr_ds.height, sr_ds.width) != (height, width) or sr_ds.crs != hr_ds.crs
                or not sr_ds.transform.almost_equals(hr_ds.transform)):
            raise ValueError(f"{sr_path}: output grid differs from the HR reference grid of {hr_path}")
        hr = hr_ds.read(window=window).astype(np.float64)
        hr_valid = hr_ds.dataset_mask(window=window) > 0
        sr = sr_ds.read().astype(np.float64)
        sr_valid = sr_ds.dataset_mask() > 0
    valid = hr_valid & sr_valid & np.repeat(np.repeat(lr_valid, s, axis=0), s, axis=1)
    if not valid.any():
        raise ValueError(f"{sr_path}: no pixel is valid in the output, the HR reference and the LR input")
    data_range = np.ptp(hr[:, hr_valid], axis=1)
    data_range = np.where(data_range > 0, data_range, 1.0)

    back, weight = _degrade(sr, valid, sensor)
    footprint_valid = lr_valid & (weight > 1 - 1e-9)
    rows, cols = _largest_valid_square(valid)
    hf_ratio = math.nan
    if rows.stop - rows.start >= MIN_HF_SIZE:
        hf_hr = high_frequency_energy(hr[:, rows, cols])
        hf_ratio = high_frequency_energy(sr[:, rows, cols]) / hf_hr if hf_hr > 0 else math.nan
    return {
        "psnr": float(np.mean(psnr(sr, hr, data_range, valid))),
        "ssim": float(np.mean(ssim(sr, hr, data_range, valid))),
        "cpsnr": float(np.mean(cpsnr(sr, hr, data_range, valid, max_shift=max_shift))),
        "sam": sam(sr, hr, valid),
        "ergas": ergas(sr, hr, s, valid),
        "lr_psnr": float(np.mean(psnr(back, lr, data_range, footprint_valid))) if footprint_valid.any() else math.nan,
        "hf_ratio": float(hf_ratio),
    }


def write_table(rows: Sequence[EvalRow], md_path: str, csv_path: str, config: EvalConfig) -> str:
    """Markdown for people (with a caption that says how every number was made) and CSV for programs.

    With several rasters, each model also gets a mean row; returns the markdown text.
    """
    names = [f.name for f in fields(EvalRow)]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)

    table_rows = list(rows)
    if len({row.raster for row in rows}) > 1:
        for model in dict.fromkeys(row.model for row in rows):
            mine = [asdict(row) for row in rows if row.model == model]
            means = {key: float(np.mean([r[key] for r in mine])) for key in _COLUMNS}
            table_rows.append(EvalRow(raster="**mean**", model=model, **means))
    sensor = config.sensor
    crop = f"central crop of at most {config.crop}×{config.crop} HR px" if config.crop else "whole raster"
    lines = [
        f"# sr-geo evaluation ×{config.scale}",
        "",
        f"LR input = SensorModel(scale={sensor.scale}, mtf_nyquist={sensor.mtf_nyquist}, noise_std=0) of the HR "
        f"reference ({crop}, cut to a multiple of {config.scale}); every output went through the full pipeline "
        "(tiles, Ray actors, COG export). Metrics are means over bands, over pixels valid in HR, LR and output. "
        "PSNR, SSIM, cPSNR and LR-consistency use data_range = per-band HR valid-pixel range (max − min); "
        f"cPSNR removes the mean bias and takes the best of integer shifts up to ±{config.max_shift} HR px; "
        "LR-consistency degrades the output by the same sensor model and compares it with the LR input. "
        "HF energy SR/HR: share of spectral energy above half Nyquist, output over HR (1 = as detailed as HR). "
        + consistency_note(config),
        "",
        "| raster | model | " + " | ".join(f"{header} (L = HR range)" if key in ("psnr", "ssim", "cpsnr") else header
                                        for key, (header, _) in _COLUMNS.items()) + " |",
        "|---|---|" + "---:|" * len(_COLUMNS),
    ]
    for row in table_rows:
        values = asdict(row)
        lines.append(f"| {row.raster} | {row.model} | "
                     + " | ".join(_format(values[key], fmt) for key, (_, fmt) in _COLUMNS.items()) + " |")
    text = "\n".join(lines) + "\n"
    Path(md_path).write_text(text)
    return text


def picture_grid(cases: Sequence[EvalCase], path: str, config: EvalConfig, patch: int = 96, per_raster: int = 2) -> str:
    """A PNG with a row per crop and a column per image: LR (pixel-replicated), each output, HR.

    Crops are the most textured fully valid `patch`-pixel squares of each HR raster, since flat
    areas show no difference between models. Each raster has one percentile stretch (2–98 % of its
    HR valid pixels) shared by all its panels, so brightness differences are real.
    """
    from matplotlib.figure import Figure  # a heavy import, needed only here

    s = config.scale
    panels: list[tuple[str, list[np.ndarray]]] = []
    for case in cases:
        with rasterio.open(case.hr) as hr:
            bands = _display_bands(hr, config.rgb)
            image = hr.read(bands).astype(np.float64)
            valid = hr.dataset_mask() > 0
        lo, hi = np.percentile(image[:, valid], 2, axis=1), np.percentile(image[:, valid], 98, axis=1)
        size = min(patch, min(valid.shape) // 2) // s * s  # room for two crops on small rasters
        for row, col in _pick_crops(image, valid, lo, hi, size, per_raster, s):
            hr_window = Window(col, row, size, size)
            lr_window = Window(col // s, row // s, size // s, size // s)
            images = [_read_rgb(case.lr, bands, lr_window, lo, hi, repeat=s)]
            images += [_read_rgb(output, bands, hr_window, lo, hi) for _, output in case.outputs]
            images.append(_read_rgb(case.hr, bands, hr_window, lo, hi))
            label = case.name if len(case.name) <= 24 else case.name[:23] + "…"
            panels.append((f"{label}\nrow {row}, col {col}", images))
    titles = [f"LR ×{s} (replicated)", *(model for model, _ in cases[0].outputs), "HR"]
    figure = Figure(figsize=(2.0 * len(titles), 2.1 * len(panels) + 0.3), layout="constrained")
    axes = figure.subplots(len(panels), len(titles), squeeze=False)
    for r, (label, images) in enumerate(panels):
        for c, picture in enumerate(images):
            ax = axes[r, c]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    figure.savefig(path, dpi=110)
    return path


def _degrade(img: np.ndarray, valid: np.ndarray, sensor: SensorModel) -> tuple[np.ndarray, np.ndarray]:
    """`sensor` applied to the valid pixels only (normalised convolution), and the valid weight per LR pixel.

    The sensor chain without noise is linear, so degrading the zero-filled image and the mask with it
    and dividing gives each LR pixel the PSF-and-footprint-weighted mean of its valid HR pixels; the
    weight is 1 where the whole footprint is valid, where the result equals `sensor.degrade` exactly.
    """
    if sensor.noise_std:
        raise ValueError("evaluation needs a noise-free sensor model: noise would make LR-consistency score the noise")
    stack = np.concatenate([np.where(valid, img, 0.0), valid[None].astype(np.float64)])
    out = sensor.degrade(torch.from_numpy(stack)[None])[0].numpy()
    weight = out[-1]
    return out[:-1] / np.where(weight > 0, weight, 1.0), weight


def _largest_valid_square(valid: np.ndarray) -> tuple[slice, slice]:
    """The largest all-valid square (the first found), by bisection on its side over an integral image."""
    invalid = np.pad(np.cumsum(np.cumsum(~valid, axis=0), axis=1), ((1, 0), (1, 0)))

    def first_square(k: int) -> tuple[int, int] | None:
        counts = invalid[k:, k:] - invalid[:-k, k:] - invalid[k:, :-k] + invalid[:-k, :-k]
        hits = np.argwhere(counts == 0)
        return (int(hits[0][0]), int(hits[0][1])) if len(hits) else None

    lo, hi, corner = 0, min(valid.shape), (0, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        found = first_square(mid)
        if found is None:
            hi = mid - 1
        else:
            lo, corner = mid, found
    return slice(corner[0], corner[0] + lo), slice(corner[1], corner[1] + lo)


def _write(path: str, data: np.ndarray, valid: np.ndarray, like: rasterio.DatasetReader, transform: Affine) -> None:
    """A GeoTIFF with `like`'s CRS, dtype, nodata and data bands' metadata; an internal mask where needed."""
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2], "count": data.shape[0],
               "dtype": like.dtypes[0], "crs": like.crs, "transform": transform, "nodata": like.nodata,
               "compress": "deflate"}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if like.nodata is not None:
        data = np.where(valid, data, np.array(like.nodata).astype(like.dtypes[0]))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if like.nodata is None and not valid.all():
            dst.write_mask(valid.astype(np.uint8) * 255)
        bands = data_bands(like)  # an alpha band became the mask
        dst.descriptions = [like.descriptions[i - 1] for i in bands]
        dst.colorinterp = [like.colorinterp[i - 1] for i in bands]
        dst.units = [like.units[i - 1] for i in bands]


def _display_bands(ds: rasterio.DatasetReader, rgb: tuple[int, int, int] | None) -> list[int]:
    declared = {"red", "green", "blue"} <= {ci.name for ci in ds.colorinterp}
    if rgb is None or declared or max(rgb) > ds.count:
        return rgb_bands(ds)
    return list(rgb)


def _pick_crops(image: np.ndarray, valid: np.ndarray, lo: np.ndarray, hi: np.ndarray, size: int, count: int,
                scale: int) -> list[tuple[int, int]]:
    """Top-left corners (multiples of `scale`) of the `count` most textured, fully valid, disjoint squares."""
    grey = ((image - lo[:, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None]).mean(axis=0)
    step = max(scale, size // 2 // scale * scale)
    candidates = []
    for row in range(0, valid.shape[0] - size + 1, step):
        for col in range(0, valid.shape[1] - size + 1, step):
            inside = valid[row : row + size, col : col + size]
            texture = float(grey[row : row + size, col : col + size][inside].std()) if inside.any() else 0.0
            candidates.append((bool(inside.all()), texture, row, col))
    chosen: list[tuple[int, int]] = []
    for _, _, row, col in sorted(candidates, reverse=True):
        if all(abs(row - r) >= size or abs(col - c) >= size for r, c in chosen):
            chosen.append((row, col))
        if len(chosen) == count:
            break
    return chosen


def _read_rgb(path: str, bands: list[int], window: Window, lo: np.ndarray, hi: np.ndarray, repeat: int = 1) -> np.ndarray:
    """(h, w, 3) floats in [0, 1], stretched between `lo` and `hi`; invalid pixels black."""
    with rasterio.open(path) as ds:
        values = ds.read(bands, window=window).astype(np.float64)
        valid = ds.dataset_mask(window=window) > 0
    scaled = np.clip((values - lo[:, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None], 0.0, 1.0)
    scaled = np.where(valid, scaled, 0.0)
    if scaled.shape[0] == 1:
        scaled = np.repeat(scaled, 3, axis=0)
    return np.repeat(np.repeat(scaled, repeat, axis=1), repeat, axis=2).transpose(1, 2, 0)


def _format(value: float, fmt: str) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return format(value, fmt)


# -- time series (`sr-geo eval --stack`) --------------------------------------------------------

STACK_FRAMES = (1, 2, 4, 8)
# Per-frame noise in HR band standard deviations: the middle of the training range of the models.
STACK_NOISE_STD = 0.015
# The training synthesis without missing frames, so every evaluated frame has clear pixels, and with each frame's
# jitter independent (not centred on the stack), as real acquisitions' are: the truth lies off the frames' centroid.
STACK_SYNTHESIS = StackSynthesis(missing=0.0)
MEDIAN_BICUBIC = "bicubic (median of frames)"


@dataclass(frozen=True)
class StackEvalConfig:
    """What a stack evaluation holds fixed: the sensor, the frame counts compared, crop and seed.

    Every raster gets one synthetic stack of max(frames) frames (`STACK_SYNTHESIS`, noise
    `STACK_NOISE_STD`, MTF `EVAL_MTF_NYQUIST`); each count K uses its first K frames, so a larger K
    only adds frames.
    """

    scale: int
    frames: tuple[int, ...] = STACK_FRAMES
    crop: int | None = None
    zero_fill: bool = True
    max_shift: int = 3
    seed: int = 0
    consistent: bool = False  # models' outputs back-projected onto their inputs (`--consistent`), baselines not
    sensor_mtf: float | None = None  # the MTF back-projection assumes (None: InferenceOptions' default)

    def __post_init__(self) -> None:
        EvalConfig(self.scale, self.crop, self.zero_fill, self.max_shift)  # validates scale and crop
        if not self.frames or min(self.frames) < 1 or list(self.frames) != sorted(set(self.frames)):
            raise InvalidRequestError(f"frames must be increasing positive counts, got {self.frames}")

    @property
    def sensor(self) -> SensorModel:
        return SensorModel(self.scale, mtf_nyquist=EVAL_MTF_NYQUIST, noise_std=STACK_NOISE_STD)


@dataclass(frozen=True)
class StackRow:
    """One method's scores on one raster's first `frames` frames, over pixels every method covers."""

    raster: str
    frames: int
    model: str
    cpsnr: float
    ssim: float
    coverage: float  # share of HR pixels scored
    seconds: float


def make_stack(hr_path: str, out_dir: str, name: str, config: StackEvalConfig) -> list[str]:
    """Write the synthetic LR frames of `hr_path`, one GeoTIFF per date (the date in the file name),
    all on the HR grid coarsened by the scale; cloudy pixels and blocks with invalid HR pixels are
    invalid (nodata or an internal mask). Returns the paths in date order."""
    s, count = config.scale, max(config.frames)
    with rasterio.open(hr_path) as src:
        hr = src.read().astype(np.float64)
        valid = src.dataset_mask() > 0
        values = hr[:, valid]
        mean, std = values.mean(axis=1), values.std(axis=1)
        margin = s * math.ceil(STACK_SYNTHESIS.kernel_radius(config.sensor) / s)
        filled = np.pad(np.where(valid, hr, mean[:, None, None]), ((0, 0), (margin, margin), (margin, margin)),
                        mode="reflect")
        generator = torch.Generator().manual_seed(config.seed)
        lr, clear, _ = STACK_SYNTHESIS.frames(torch.from_numpy(filled), count, config.sensor, margin, generator,
                                           torch.from_numpy(mean), torch.from_numpy(np.where(std > 0, std, 1.0)))
        h, w = valid.shape
        blocks = valid.reshape(h // s, s, w // s, s).all(axis=(1, 3))
        paths = []
        for t in range(count):
            frame_valid = clear[t].numpy() & blocks
            path = f"{out_dir}/{name}_t{t + 1:02d}_{20200101 + t}.tif"
            _write(path, to_dtype(lr[t].numpy(), frame_valid, src.dtypes[0], src.nodata), frame_valid, src,
                   src.transform * Affine.scale(s))
            paths.append(path)
    return paths


def clearest_frame_path(paths: Sequence[str]) -> str:
    """The frame with the most valid pixels (the first on ties): what a single-image model is given."""
    counts = []
    for path in paths:
        with rasterio.open(path) as ds:
            counts.append(int((ds.dataset_mask() > 0).sum()))
    return paths[int(np.argmax(counts))]


def median_composite(paths: Sequence[str], out_path: str) -> str:
    """The per-pixel median of the valid frames (as the temporal models compute it), valid where any frame is."""
    frames, masks = [], []
    for path in paths:
        with rasterio.open(path) as ds:
            frames.append(ds.read().astype(np.float64))
            masks.append(ds.dataset_mask() > 0)
    valid = np.stack(masks)
    composite = masked_median(torch.from_numpy(np.stack(frames))[None], torch.from_numpy(valid)[None])[0].numpy()
    with rasterio.open(paths[0]) as like:
        any_valid = valid.any(axis=0)
        _write(out_path, to_dtype(composite, any_valid, like.dtypes[0], like.nodata), any_valid, like, like.transform)
    return out_path


def score_common(outputs: dict[str, str], hr_path: str, max_shift: int = 3) -> dict[str, dict[str, float]]:
    """cPSNR and SSIM (band means, data_range = per-band HR valid range) of every output, all over the same
    pixels: valid in the HR reference and in every output, so methods that fill clouds and methods that
    cannot are compared on equal ground. Also the share of HR pixels scored."""
    with rasterio.open(hr_path) as hr_ds:
        hr = hr_ds.read().astype(np.float64)
        valid = hr_ds.dataset_mask() > 0
    data_range = np.ptp(hr[:, valid], axis=1)
    data_range = np.where(data_range > 0, data_range, 1.0)
    images = {}
    for name, path in outputs.items():
        with rasterio.open(path) as ds:
            if (ds.height, ds.width) != valid.shape:
                raise ValueError(f"{path}: output grid differs from the HR reference grid of {hr_path}")
            images[name] = ds.read().astype(np.float64)
            valid &= ds.dataset_mask() > 0
    if not valid.any():
        raise ValueError(f"{hr_path}: no pixel is valid in the HR reference and every output")
    return {
        name: {
            "cpsnr": float(np.mean(cpsnr(sr, hr, data_range, valid, max_shift=max_shift))),
            "ssim": float(np.mean(ssim(sr, hr, data_range, valid))),
            "coverage": float(valid.mean()),
        }
        for name, sr in images.items()
    }


def write_stack_table(rows: Sequence[StackRow], md_path: str, csv_path: str, config: StackEvalConfig) -> str:
    """One line per raster and frame count: cPSNR and SSIM per method and the gain of the first method
    over each other; with several rasters, mean lines per frame count. Returns the markdown."""
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(StackRow)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    methods = list(dict.fromkeys(row.model for row in rows))
    cells: dict[tuple[str, int], dict[str, StackRow]] = {}
    for row in rows:
        cells.setdefault((row.raster, row.frames), {})[row.model] = row
    if len({row.raster for row in rows}) > 1:
        for k in config.frames:
            mine = [c for (raster, frames), c in cells.items() if frames == k]
            cells[("**mean**", k)] = {
                m: StackRow("**mean**", k, m, *(float(np.mean([getattr(c[m], f) for c in mine]))
                                                  for f in ("cpsnr", "ssim", "coverage", "seconds")))
                for m in methods
            }
    first, others = methods[0], methods[1:]  # the first method (a temporal model) against each other
    sensor = config.sensor
    lines = [
        f"# sr-geo stack evaluation ×{config.scale}",
        "",
        f"One synthetic stack of {max(config.frames)} frames per HR reference: SensorModel(scale={sensor.scale}, "
        f"mtf_nyquist={sensor.mtf_nyquist}, noise_std={sensor.noise_std} × band std) of the HR image with, per frame, "
        f"an independent sub-pixel shift within ±{STACK_SYNTHESIS.jitter} LR px, gain in {STACK_SYNTHESIS.gain} about the band mean, offset within "
        f"±{STACK_SYNTHESIS.offset} band std and a synthetic cloud mask (clear with probability {STACK_SYNTHESIS.clear}, "
        f"else {STACK_SYNTHESIS.cover[0]:.0%}–{STACK_SYNTHESIS.cover[1]:.0%} cover; seed {config.seed}). K frames = "
        "the first K. Temporal models see the K frames through `super_resolve_timeseries`; single-image models the "
        f"clearest of them through `super_resolve_scene`; {MEDIAN_BICUBIC} is bicubic of their per-pixel median. "
        + consistency_note(config)
        + "cPSNR (bias removed, best integer shift up to "
        f"±{config.max_shift} HR px) and SSIM are band means with data_range = per-band HR range, over the pixels "
        "valid in the HR reference and in every output of that K (coverage): compare methods within a line; "
        "the pixels scored differ between lines.",
        "",
        "| raster | K | " + " | ".join(f"cPSNR {m}" for m in methods) + " | "
        + " | ".join(f"{first} − {m} dB" for m in others) + " | " + " | ".join(f"SSIM {m}" for m in methods)
        + " | coverage |",
        "|---|---:|" + "---:|" * (3 * len(methods)),
    ]
    for (raster, k), by_model in cells.items():
        lines.append(
            f"| {raster} | {k} | " + " | ".join(f"{by_model[m].cpsnr:.2f}" for m in methods) + " | "
            + " | ".join(f"{by_model[first].cpsnr - by_model[m].cpsnr:+.2f}" for m in others) + " | "
            + " | ".join(f"{by_model[m].ssim:.4f}" for m in methods) + f" | {by_model[first].coverage:.0%} |"
        )
    text = "\n".join(lines) + "\n"
    Path(md_path).write_text(text)
    return text
