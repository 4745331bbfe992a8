"""Resumable training state in a run directory, without pickled objects.

Weights are safetensors; optimizer state is a dict of plain tensors and numbers written with
torch.save and read back with `weights_only=True`, which refuses anything but tensors and
primitive containers; step, training time, config and history are JSON. Files carry the step in
their name and `progress.json`, written last and atomically, names the step to resume from, so a
run killed mid-save resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sr_geo.errors import InvalidRequestError

PROGRESS = "progress.json"


@dataclass
class Progress:
    """Where a run stands: steps completed, training seconds spent, the logged history."""

    step: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def save_checkpoint(
    run_dir: Path, config: dict, progress: Progress, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> None:
    folder = run_dir / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    step = progress.step
    for name, module in modules.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(folder / f"{name}-{step}.safetensors"))
    torch.save({name: opt.state_dict() for name, opt in optimizers.items()}, folder / f"optimizers-{step}.pt")
    record = {"step": step, "seconds": progress.seconds, "config": config, "history": progress.history}
    temporary = run_dir / f"{PROGRESS}.tmp"
    temporary.write_text(json.dumps(record))
    os.replace(temporary, run_dir / PROGRESS)
    for path in folder.iterdir():
        if not path.stem.endswith(f"-{step}"):
            path.unlink()


def load_checkpoint(
    run_dir: Path, config: dict, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> Progress:
    """Restore modules and optimizers in place from the last checkpoint; a fresh Progress if there is none."""
    path = run_dir / PROGRESS
    if not path.is_file():
        return Progress()
    record = json.loads(path.read_text())
    if record["config"] != config:
        changed = sorted(k for k in config if record["config"].get(k) != config[k])
        raise InvalidRequestError(
            f"{run_dir}: holds a run with different settings ({', '.join(changed)}); "
            "resume it with the same options, or start over with another output folder or --fresh"
        )
    step, folder = record["step"], run_dir / "checkpoint"
    for name, module in modules.items():
        module.load_state_dict(load_file(str(folder / f"{name}-{step}.safetensors")))
    states = torch.load(folder / f"optimizers-{step}.pt", weights_only=True)
    for name, opt in optimizers.items():
        opt.load_state_dict(states[name])
    return Progress(step, record["seconds"], record["history"])
