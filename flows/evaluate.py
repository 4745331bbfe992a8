"""The `evaluate_models` flow: degrade held-out HR rasters, super-resolve them with every model, score.
The `evaluate_stacks` flow: the same for time series, K = 1, 2, 4, 8 synthetic frames of each raster.

Each model runs through `super_resolve_scene` (or `super_resolve_timeseries`) as a subflow, so tiling,
actors and stitching are part of what is measured. Ray starts once for the whole evaluation and every
subflow reuses it.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.scene import super_resolve_scene
from flows.timeseries import super_resolve_timeseries
from sr_geo.evaluation import (
    BASELINES,
    MEDIAN_BICUBIC,
    STACK_FRAMES,
    EvalCase,
    EvalConfig,
    EvalRow,
    StackEvalConfig,
    StackRow,
    clearest_frame_path,
    make_lr,
    make_stack,
    median_composite,
    model_order,
    picture_grid,
    prepare_hr,
    score,
    score_common,
    validate_eval_request,
    write_stack_table,
    write_table,
)
from sr_geo.models.registry import ARCHITECTURES
from workers.cluster import ray_session


@task(name="make-inputs")
def make_inputs(source: str, inputs_dir: str, name: str, config: EvalConfig) -> tuple[str, str]:
    """The HR reference and the LR input made from it; returns both paths."""
    hr = prepare_hr(source, f"{inputs_dir}/{name}_hr.tif", config.scale, config.crop, config.zero_fill)
    return hr, make_lr(hr, f"{inputs_dir}/{name}_lr_x{config.scale}.tif", config.sensor)


@task(name="score")
def score_output(sr: str, hr: str, lr: str, config: EvalConfig) -> dict[str, float]:
    return score(sr, hr, lr, config.sensor, config.max_shift)


@task(name="write-results")
def write_results(rows: list[EvalRow], cases: list[EvalCase], out_dir: str, config: EvalConfig) -> dict[str, str]:
    stem = f"{out_dir}/eval_x{config.scale}"
    paths = {"table": f"{stem}.md", "csv": f"{stem}.csv", "grid": f"{stem}_grid.png"}
    write_table(rows, paths["table"], paths["csv"], config)
    picture_grid(cases, paths["grid"], config)
    return paths


@flow(name="evaluate-models")
def evaluate_models(
    hr_rasters: list[str],
    models: list[str],
    scale: int,
    out_dir: str,
    crop: int | None = None,
    weights: dict[str, str] | None = None,
    zero_fill: bool = True,
    rgb: tuple[int, int, int] | None = None,
    tile: int = 256,
    batch_size: int = 4,
    device: str = "auto",
    precision: str = "auto",
    ray_address: str | None = None,
    consistent: bool = False,
    sensor_mtf: float | None = None,
) -> dict:
    """Score `models` (after the bicubic and lanczos baselines) on each HR raster; returns rows and file paths.
    With `consistent`, the models (not the baselines) run with back-projection, assuming `sensor_mtf`."""
    config = EvalConfig(scale=scale, crop=crop, zero_fill=zero_fill, rgb=tuple(rgb) if rgb else None,
                        consistent=consistent, sensor_mtf=sensor_mtf)
    weights = weights or {}
    validate_eval_request(hr_rasters, models, config, weights, out_dir)
    out = Path(out_dir)
    rows: list[EvalRow] = []
    cases: list[EvalCase] = []
    with ray_session(ray_address, num_cpus=os.cpu_count()):
        for name, source in zip(_unique_names(hr_rasters), hr_rasters, strict=True):
            hr, lr = make_inputs(source, str(out / "inputs"), name, config)
            outputs = []
            for model in model_order(models):
                projected = consistent and model not in BASELINES
                label = f"{model} consistent" if projected else model
                sr = str(out / "sr" / f"{name}_{model}_x{scale}.tif")
                summary = super_resolve_scene(lr, sr, model=model, scale=scale, weights=weights.get(model), tile=tile,
                                              batch_size=batch_size, workdir=str(out / ".sr-geo-work"), device=device,
                                              precision=precision, ray_address=ray_address, consistent=projected,
                                              sensor_mtf=sensor_mtf if projected else None)
                scores = score_output(sr, hr, lr, config)
                rows.append(EvalRow(raster=name, model=label, seconds=sum(summary["seconds"].values()), **scores))
                outputs.append((label, sr))
            cases.append(EvalCase(name, hr, lr, tuple(outputs)))
        paths = write_results(rows, cases, str(out), config)
    create_markdown_artifact(Path(paths["table"]).read_text(), key="sr-geo-eval",
                             description=f"sr-geo evaluation ×{scale}")
    return {"rows": [asdict(row) for row in rows], **paths}


@task(name="make-stack")
def make_stack_inputs(source: str, inputs_dir: str, name: str, config: StackEvalConfig) -> tuple[str, list[str]]:
    """The HR reference and the synthetic LR frames made from it; returns their paths."""
    hr = prepare_hr(source, f"{inputs_dir}/{name}_hr.tif", config.scale, config.crop, config.zero_fill)
    return hr, make_stack(hr, inputs_dir, name, config)


@task(name="score-stack")
def score_stack_outputs(outputs: dict[str, str], hr: str, config: StackEvalConfig) -> dict[str, dict[str, float]]:
    return score_common(outputs, hr, config.max_shift)


@task(name="write-stack-results")
def write_stack_results(rows: list[StackRow], out_dir: str, config: StackEvalConfig) -> dict[str, str]:
    stem = f"{out_dir}/eval_stack_x{config.scale}"
    paths = {"table": f"{stem}.md", "csv": f"{stem}.csv"}
    write_stack_table(rows, paths["table"], paths["csv"], config)
    return paths


@flow(name="evaluate-stacks")
def evaluate_stacks(
    hr_rasters: list[str],
    models: list[str],
    scale: int,
    out_dir: str,
    frames: tuple[int, ...] = STACK_FRAMES,
    crop: int | None = None,
    weights: dict[str, str] | None = None,
    zero_fill: bool = True,
    seed: int = 0,
    tile: int = 256,
    batch_size: int = 4,
    device: str = "auto",
    precision: str = "auto",
    ray_address: str | None = None,
    consistent: bool = False,
    sensor_mtf: float | None = None,
) -> dict:
    """For every HR raster and frame count K: temporal `models` on the first K synthetic frames, single-image
    `models` on the clearest of them, and bicubic of their median, all scored on the same pixels. With
    `consistent`, the models (not the baseline) run with back-projection, assuming `sensor_mtf`."""
    config = StackEvalConfig(scale=scale, frames=tuple(frames), crop=crop, zero_fill=zero_fill, seed=seed,
                             consistent=consistent, sensor_mtf=sensor_mtf)
    weights = weights or {}
    validate_eval_request(hr_rasters, models, EvalConfig(scale=scale, crop=crop, zero_fill=zero_fill), weights, out_dir)
    out = Path(out_dir)
    ordered = sorted(models, key=lambda m: not ARCHITECTURES[m].temporal)  # temporal models lead the table
    rows: list[StackRow] = []
    common = {"scale": scale, "tile": tile, "batch_size": batch_size, "workdir": str(out / ".sr-geo-work"),
              "device": device, "precision": precision, "ray_address": ray_address}
    with ray_session(ray_address, num_cpus=os.cpu_count()):
        for name, source in zip(_unique_names(hr_rasters), hr_rasters, strict=True):
            hr, frame_paths = make_stack_inputs(source, str(out / "inputs"), name, config)
            for k in config.frames:
                stack, outputs, seconds = frame_paths[:k], {}, {}
                for model in ordered:
                    temporal = ARCHITECTURES[model].temporal
                    label = (model if temporal else f"{model} (clearest frame)") + (" consistent" if consistent else "")
                    outputs[label] = str(out / "sr" / f"{name}_K{k}_{model}_x{scale}.tif")
                    if temporal:
                        summary = super_resolve_timeseries(stack, outputs[label], model=model, consistent=consistent,
                                                           sensor_mtf=sensor_mtf, weights=weights.get(model), **common)
                    else:
                        summary = super_resolve_scene(clearest_frame_path(stack), outputs[label], model=model,
                                                      consistent=consistent, sensor_mtf=sensor_mtf,
                                                      weights=weights.get(model), **common)
                    seconds[label] = sum(summary["seconds"].values())
                composite = median_composite(stack, str(out / "inputs" / f"{name}_K{k}_median.tif"))
                outputs[MEDIAN_BICUBIC] = str(out / "sr" / f"{name}_K{k}_median_bicubic_x{scale}.tif")
                summary = super_resolve_scene(composite, outputs[MEDIAN_BICUBIC], model="bicubic", **common)
                seconds[MEDIAN_BICUBIC] = sum(summary["seconds"].values())
                for label, scores in score_stack_outputs(outputs, hr, config).items():
                    rows.append(StackRow(raster=name, frames=k, model=label, seconds=seconds[label], **scores))
        paths = write_stack_results(rows, str(out), config)
    create_markdown_artifact(Path(paths["table"]).read_text(), key="sr-geo-eval-stack",
                             description=f"sr-geo stack evaluation ×{scale}")
    return {"rows": [asdict(row) for row in rows], **paths}


def _unique_names(paths: list[str]) -> list[str]:
    """File stems, prefixed by their folder where two rasters share a stem (ms1.tif in two places)."""
    stems = [Path(p).stem for p in paths]
    counts = Counter(stems)
    return [f"{Path(p).parent.name}_{stem}" if counts[stem] > 1 else stem for p, stem in zip(paths, stems)]
