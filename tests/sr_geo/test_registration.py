"""Frame registration: known sub-pixel shifts are measured, clouds do not pull them to zero, and a stack
records each frame's shift against its reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smooth_texture, write_raster
from sr_geo.grid import area_downsample
from sr_geo.registration import estimate_shift
from sr_geo.stack import inspect_stack
from sr_geo.training.temporal import shifted_blur

SHIFTS = [(0.0, 0.0), (0.25, -0.4), (-0.5, 0.13), (1.3, 0.7)]  # LR pixels: pixel i shows the scene at i + shift


def frames(shifts=SHIFTS, scale: int = 4, size: int = 96) -> np.ndarray:
    """LR frames (T, 2, size, size) of one HR texture, frame t sampling the scene at i + shifts[t]."""
    margin = 4 * scale
    hr = torch.from_numpy(smooth_texture((2, size * scale + 2 * margin, size * scale + 2 * margin), seed=4))
    blurred = shifted_blur(hr, 0.6 * scale, torch.tensor(shifts, dtype=torch.float64) * scale)
    return area_downsample(blurred, scale)[:, :, 4:-4, 4:-4].numpy()


def test_known_sub_pixel_shifts_are_measured_to_a_few_hundredths():
    """A very smooth texture (the hardest case: few frequencies vote) is measured within 0.05 px."""
    lr = frames()
    valid = np.ones(lr.shape[-2:], bool)
    for t, (dy, dx) in enumerate(SHIFTS):
        assert estimate_shift(lr[0], lr[t], valid, valid) == pytest.approx((dy, dx), abs=0.05)


def test_a_frames_own_cloud_does_not_pull_its_shift_towards_zero():
    lr = frames()
    valid = np.ones(lr.shape[-2:], bool)
    rows, cols = np.mgrid[: lr.shape[-2], : lr.shape[-1]]
    cloud = (rows - 40) ** 2 + (cols - 50) ** 2 < 30**2  # a third of the frame
    cloudy = lr[1].copy()
    cloudy[:, cloud] = 10.0  # whatever a masked pixel holds is ignored
    assert estimate_shift(lr[0], cloudy, valid, ~cloud) == pytest.approx(SHIFTS[1], abs=0.08)  # a third fewer pixels vote


def test_too_few_common_valid_pixels_leave_the_shift_unknown():
    lr = frames()
    valid = np.ones(lr.shape[-2:], bool)
    half = valid.copy()
    half[:, 60:] = False
    other = valid.copy()
    other[:, :50] = False  # 10 of 96 columns valid in both
    assert estimate_shift(lr[0], lr[1], half, other) is None


def test_a_peak_beyond_any_jitter_leaves_the_shift_unknown():
    """A frame whose correlation peaks pixels away (an unmasked cloud, a changed field) is not jittered by that much:
    its shift is unknown rather than a number that would drag the stack's centroid."""
    lr = frames()
    valid = np.ones(lr.shape[-2:], bool)
    assert estimate_shift(lr[0], np.roll(lr[0], 5, axis=-1), valid, valid) is None
    assert estimate_shift(lr[0], np.roll(lr[0], 1, axis=-1), valid, valid) == pytest.approx((0.0, -1.0), abs=0.05)


def test_a_stack_records_each_frames_shift_against_the_reference(tmp_path):
    lr = frames()
    paths = [write_raster(tmp_path / f"f_2020010{t + 1}.tif", lr[t].astype("float32")) for t in range(len(SHIFTS))]
    stack = inspect_stack([str(p) for p in paths], reference=str(paths[1]))
    assert [f.read.kind for f in stack.frames] == ["read"] * len(SHIFTS)  # on the lattice: never resampled
    ref = np.array(SHIFTS[1])
    for frame, shift in zip(stack.frames, SHIFTS, strict=True):
        assert frame.shift == pytest.approx(tuple(np.array(shift) - ref), abs=0.05)
    assert stack.frames[stack.reference].shift == (0.0, 0.0)
    np.testing.assert_allclose(stack.shifts(), np.array(SHIFTS) - ref, atol=0.05)
