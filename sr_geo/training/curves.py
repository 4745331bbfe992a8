"""The loss and validation curves of a run, as a PNG next to its checkpoints."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training runs headless, often over ssh or in a job

import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], baseline: dict, path: Path, title: str) -> Path:
    """Left: training losses per logged step; right: validation PSNR against bicubic's."""
    train = [h for h in history if h["kind"] == "train"]
    val = [h for h in history if h["kind"] == "val"]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    terms = sorted({k for h in train for k in h} - {"kind", "step", "lr"})
    for term in terms:
        points = [(h["step"], h[term]) for h in train if term in h]
        ax_loss.plot(*zip(*points, strict=True), label=term, linewidth=1)
    ax_loss.set(xlabel="step", ylabel="loss (standardised units)", yscale="log", title="training")
    ax_loss.legend(fontsize=8)
    if val:
        ax_val.plot([h["step"] for h in val], [h["psnr"] for h in val], marker="o", label="model")
        ax_val.axhline(baseline["psnr"], color="grey", linestyle="--", label="bicubic")
        ax_val.legend(fontsize=8)
    ax_val.set(xlabel="step", ylabel="PSNR (dB)", title="validation")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
