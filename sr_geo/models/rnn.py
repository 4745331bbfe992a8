"""A band-agnostic recurrent fusion network: many acquisitions of one place in, one super-resolved image out.

The output lies at the frames' centroid: every acquisition's geolocation is off by its own jitter and
registration measures only their differences, so the mean position of the frames is the best estimate of
where the ground truly is, better by √T than any one frame's (the reference's included). Every frame is
encoded by the same small residual CNN, seeing itself, the masked median composite of the aligned frames
(the reference that lets the encoder express each frame relative to the others, as HighRes-net pairs
frames with a median reference) and its own validity. The encoder's first layer also knows where the
frame's samples lie: frames enter fusion as they were read, never resampled, and each one's sub-pixel
shift (measured once per stack before tiling, `sr_geo.registration`) selects its 3 × 3 kernel,
interpolated from a lattice of kernels over the shift (`ShiftKernels`), so a frame's pixels enter fusion
as samples of the scene at their own positions rather than as if all frames were aligned. A
convolutional GRU then fuses the frames in date order and, with its own state weights, in reverse order,
so no frame is privileged by its position; the two final states are merged, refined by residual blocks
and upsampled by pixel shuffle into the detail that fusion adds to a single-image prediction: a CNN (`sr_geo.models.cnn.CNN`) run on the masked mean composite of the frames aligned by
their shifts (`sr_geo.models.temporal.aligned_composites`), which averages the frames' noise away without
blurring the scene by their jitter. Training starts that CNN from the shipped single-image weights, so
fusion spends its capacity on what only several frames tell (the sub-pixel samples of the jittered
acquisitions), not on relearning single-image super-resolution; an untrained network is exactly bicubic
of the aligned mean composite, as the CNN's skip makes it bicubic.

Masking: the GRU's update gate is multiplied by each frame's validity, so an invalid pixel (cloud,
nodata, a frame that does not cover it) leaves the state untouched; a fully masked frame is a no-op.
Training only ever showed clouds masked, so at inference a cloud nobody masked would be fused as ground:
before anything else, frames' pixels whose brightness is an outlier among the pixel's frames are masked
as a cloud mask would have (`screen_outliers`; `outlier_threshold` None turns it off).
The state-to-state kernels are 1 × 1 and the composites reach only the few pixels that aligning reads, so
the receptive radius is the larger of the base CNN's and that of encoder + input gates + decoder, plus
that reach, the same for 1 frame or 100: one halo serves every stack.

Bands are folded into the batch and exchange information through their mean (`sr_geo.models.bands`),
as in the CNN, so one set of weights serves any band count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sr_geo.models.bands import unfold_bands
from sr_geo.models.base import SRModel
from sr_geo.models.cnn import CNN, ResidualBlock, conv3x3, pixel_shuffle_upsampler
from sr_geo.models.receptive import theoretical_radius
from sr_geo.models.temporal import (
    OUTLIER_THRESHOLD, SHIFT_REACH, SingleImageView, aligned_composites, screen_outliers,
)


class MaskedGRUCell(nn.Module):
    """GRU over feature maps with a 1 × 1 state kernel; input projections are computed by the caller.

    Inputs are the precomputed (update, reset, candidate) projections of one frame, (B, 3F, H, W), so
    both directions share them and each frame's expensive 3 × 3 projection is computed once.
    """

    def __init__(self, feats: int) -> None:
        super().__init__()
        self.state = nn.Conv2d(feats, 3 * feats, 1)

    def forward(self, h: torch.Tensor, projected: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        xz, xr, xn = projected.chunk(3, dim=1)
        hz, hr, hn = self.state(h).chunk(3, dim=1)
        z = torch.sigmoid(xz + hz) * valid  # invalid pixels keep their state
        r = torch.sigmoid(xr + hr)
        n = torch.tanh(xn + r * hn)
        return h + z * (n - h)


# Shifts are centred on their mean over the stack's frames (the stack's centroid, which the output is aligned
# to) and the kernel lattice spans ±SHIFT_REACH LR pixels in SHIFT_LATTICE steps per axis (a quarter pixel:
# one HR pixel at ×4); farther shifts take the edge kernels.
SHIFT_LATTICE = 9


class ShiftKernels(nn.Module):
    """A 3 × 3 convolution of each frame whose kernel depends on the frame's sub-pixel shift: bilinear
    interpolation between the kernels of a lattice over shifts. Zero-initialised, so a network that has
    not learnt to use shifts behaves as one that is not given them.

    A shift is per frame, not per pixel, so the kernel is one per (sample, frame), and the layer is a grouped
    convolution over the frames' images: no per-lattice-point activations are ever made.
    """

    def __init__(self, feats: int) -> None:
        super().__init__()
        self.kernels = nn.Parameter(torch.zeros(SHIFT_LATTICE * SHIFT_LATTICE, feats, 3, 3))

    def forward(self, x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """x (N, T, C, H, W), shifts (N, T, 2) centred, LR pixels → features (N·T·C, F, H, W)."""
        n, frames, bands, height, width = x.shape
        feats = self.kernels.shape[1]
        kernels = torch.einsum("ntl,lfij->ntfij", lattice_weights(shifts).to(x.dtype), self.kernels.to(x.dtype))
        images = x.permute(2, 0, 1, 3, 4).reshape(bands, n * frames, height, width)
        y = F.conv2d(images, kernels.reshape(n * frames * feats, 1, 3, 3), padding=1, groups=n * frames)
        return y.reshape(bands, n, frames, feats, height, width).permute(1, 2, 0, 3, 4, 5).reshape(-1, feats, height, width)


def lattice_weights(shifts: torch.Tensor) -> torch.Tensor:
    """Bilinear weights (N, T, L²) of shifts (N, T, 2) on the SHIFT_LATTICE² lattice over ±SHIFT_REACH."""
    last = SHIFT_LATTICE - 1
    position = (shifts.clamp(-SHIFT_REACH, SHIFT_REACH) + SHIFT_REACH) / (2 * SHIFT_REACH) * last
    nodes = torch.arange(SHIFT_LATTICE, device=shifts.device, dtype=shifts.dtype)
    per_axis = (1 - (position.unsqueeze(-1) - nodes).abs()).clamp(min=0)  # hats: the two nearest nodes, (N, T, 2, L)
    return (per_axis[:, :, 0, :, None] * per_axis[:, :, 1, None, :]).flatten(2)


class RNN(SRModel):
    arch = "rnn"
    temporal = True

    def __init__(self, scale: int, feats: int = 32, blocks: int = 4, encoder_blocks: int = 2,
                 res_scale: float = 0.1, outlier_threshold: float | None = OUTLIER_THRESHOLD,
                 base_feats: int = 32, base_blocks: int = 8) -> None:
        super().__init__(scale)
        self.feats, self.blocks, self.encoder_blocks, self.res_scale = feats, blocks, encoder_blocks, res_scale
        self.outlier_threshold = outlier_threshold
        self.base = CNN(scale, base_feats, base_blocks, res_scale)  # the single-image prediction fusion refines
        self.head = conv3x3(3, feats)  # frame, median reference, validity
        self.shift_kernels = ShiftKernels(feats)  # the frame again, through the kernel of its shift
        self.encoder = nn.ModuleList([ResidualBlock(feats, res_scale) for _ in range(encoder_blocks)])
        self.project = conv3x3(feats, 3 * feats)
        self.forward_cell = MaskedGRUCell(feats)
        self.backward_cell = MaskedGRUCell(feats)
        self.merge = nn.Conv2d(2 * feats, feats, 1)
        self.body = nn.ModuleList([ResidualBlock(feats, res_scale) for _ in range(blocks)])
        self.body_tail = conv3x3(feats, feats)
        self.upsample = pixel_shuffle_upsampler(feats, scale)
        self.tail = conv3x3(feats, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def working_bytes(self, frames: int = 1) -> float:
        """The base CNN's, plus the fusion's (measured with 4 bands of 128²: 440 B per output pixel of a
        band image with 1 frame, 687 with 8)."""
        return self.base.working_bytes() + self.feats * (5.0 + 1.25 * (frames - 1))

    def config(self) -> dict:
        return {**super().config(), "feats": self.feats, "blocks": self.blocks,
                "encoder_blocks": self.encoder_blocks, "res_scale": self.res_scale,
                "outlier_threshold": self.outlier_threshold,
                "base_feats": self.base.feats, "base_blocks": self.base.blocks}

    @property
    def theoretical_radius(self) -> int:
        if self._theoretical_radius is None:
            self._theoretical_radius = theoretical_radius(SingleImageView(self), self.scale)
        return self._theoretical_radius

    def observed(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """`valid` less the undetected clouds the Hampel screen finds (`screen_outliers`), if it is on."""
        return valid if self.outlier_threshold is None else screen_outliers(x, valid, self.outlier_threshold)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, shifts: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, T, C, H, W) standardised, invalid pixels 0; valid (N, T, H, W); shifts (N, T, 2) as
        `sr_geo.registration` measures them, (dy, dx) LR pixels, None for frames taken as aligned
        → (N, C, H·s, W·s)."""
        n, frames, bands, height, width = x.shape
        shifts = x.new_zeros((n, frames, 2)) if shifts is None else shifts.to(x.dtype)
        shifts = shifts - shifts.mean(dim=1, keepdim=True)  # the output lies at the frames' centroid
        x = torch.where(valid.unsqueeze(2), x, torch.zeros_like(x))  # what an invalid pixel holds never matters
        valid = self.observed(x, valid)
        x = torch.where(valid.unsqueeze(2), x, torch.zeros_like(x))
        reference, composite = aligned_composites(x, valid, shifts)
        mask = valid.to(x.dtype)
        per_frame = torch.stack([
            x,
            reference.unsqueeze(1).expand_as(x),
            mask.unsqueeze(2).expand_as(x),
        ], dim=3)  # (N, T, C, 3, H, W)
        features = self.head(per_frame.reshape(n * frames * bands, 3, height, width))
        features = features + self.shift_kernels(x, shifts)
        for block in self.encoder:
            features = block(features, bands)
        projected = self.project(features).reshape(n, frames, bands, 3 * self.feats, height, width)
        projected = projected.transpose(1, 2).reshape(n * bands, frames, 3 * self.feats, height, width)
        gate = mask.unsqueeze(2).repeat_interleave(bands, dim=0)  # (N·C, T, 1, H, W)
        forward_state = backward_state = x.new_zeros((n * bands, self.feats, height, width))
        for t in range(frames):
            forward_state = self.forward_cell(forward_state, projected[:, t], gate[:, t])
            back = frames - 1 - t
            backward_state = self.backward_cell(backward_state, projected[:, back], gate[:, back])
        fused = self.merge(torch.cat([forward_state, backward_state], dim=1))
        trunk = fused
        for block in self.body:
            trunk = block(trunk, bands)
        fused = fused + self.body_tail(trunk)
        detail = unfold_bands(self.tail(self.upsample(fused)), bands)
        return self.base(composite) + detail
