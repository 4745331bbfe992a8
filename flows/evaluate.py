"""The `evaluate_models` flow: degrade held-out HR rasters, super-resolve them with every model, score.

Each model runs through `super_resolve_scene` as a subflow, so tiling, actors and stitching are part
of what is measured. Ray starts once for the whole evaluation and every subflow reuses it.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.scene import super_resolve_scene
from sr_geo.evaluation import (
    EvalCase,
    EvalConfig,
    EvalRow,
    make_lr,
    model_order,
    picture_grid,
    prepare_hr,
    score,
    validate_eval_request,
    write_table,
)
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
    ray_address: str | None = None,
) -> dict:
    """Score `models` (after the bicubic and lanczos baselines) on each HR raster; returns rows and file paths."""
    config = EvalConfig(scale=scale, crop=crop, zero_fill=zero_fill, rgb=tuple(rgb) if rgb else None)
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
                sr = str(out / "sr" / f"{name}_{model}_x{scale}.tif")
                summary = super_resolve_scene(lr, sr, model=model, scale=scale, weights=weights.get(model), tile=tile,
                                              batch_size=batch_size, workdir=str(out / ".sr-geo-work"), device=device,
                                              ray_address=ray_address)
                scores = score_output(sr, hr, lr, config)
                rows.append(EvalRow(raster=name, model=model, seconds=sum(summary["seconds"].values()), **scores))
                outputs.append((model, sr))
            cases.append(EvalCase(name, hr, lr, tuple(outputs)))
        paths = write_results(rows, cases, str(out), config)
    create_markdown_artifact(Path(paths["table"]).read_text(), key="sr-geo-eval",
                             description=f"sr-geo evaluation ×{scale}")
    return {"rows": [asdict(row) for row in rows], **paths}


def _unique_names(paths: list[str]) -> list[str]:
    """File stems, prefixed by their folder where two rasters share a stem (ms1.tif in two places)."""
    stems = [Path(p).stem for p in paths]
    counts = Counter(stems)
    return [f"{Path(p).parent.name}_{stem}" if counts[stem] > 1 else stem for p, stem in zip(paths, stems)]
