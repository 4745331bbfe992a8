"""Model-agnostic per-pixel uncertainty: the spread of outputs under the eight dihedral transforms.

A super-resolution model's invented detail is what changes when the same input is presented
flipped or rotated; radiometry and structure the input supports do not. The standard deviation of
the eight back-transformed outputs is therefore a cheap, model-agnostic map of where detail is
guessed rather than observed. It needs no retraining and works for every model, classical ones
included (for which it is near zero: they are equivariant by construction).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


def dihedral_spread(forward: Forward, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain output, per-pixel standard deviation over the 8 dihedral variants) for (N, C, H, W) `x`.

    The plain output is the identity variant itself, so a run with uncertainty produces exactly the
    same image as one without.
    """
    outputs = []
    for flip in (False, True):
        flipped = x.flip(-1) if flip else x
        for k in range(4):
            y = forward(torch.rot90(flipped, k, dims=(-2, -1)))
            y = torch.rot90(y, -k, dims=(-2, -1))
            outputs.append(y.flip(-1) if flip else y)
    stack = torch.stack(outputs)
    return outputs[0], stack.std(dim=0, unbiased=False)
