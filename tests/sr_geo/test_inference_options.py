"""The options a run's flags ask for."""

from __future__ import annotations

import pytest

from sr_geo.errors import InvalidRequestError
from sr_geo.inference_options import CONSISTENCY_ITERATIONS, STACK_CONSISTENCY_ITERATIONS, InferenceOptions


def test_requested_options_follow_the_flags_and_refuse_what_the_model_cannot_honour():
    assert InferenceOptions.requested(False, False, False, "cnn") == InferenceOptions()
    single = InferenceOptions.requested(True, True, False, "cnn", sensor_mtf=0.2)
    assert (single.uncertainty, single.consistency_iterations, single.consistency_mtf) == (True, CONSISTENCY_ITERATIONS, 0.2)
    assert single.extra_radius(4) == single.back_projection(4).radius > 0
    stack = InferenceOptions.requested(False, True, True, "rnn")
    assert (stack.consistency_iterations, stack.consistency_mtf) == (STACK_CONSISTENCY_ITERATIONS, 0.3)
    assert stack.extra_radius(4, temporal=True) == stack.back_projection(4).frames_radius
    assert InferenceOptions().back_projection(4) is None and InferenceOptions().extra_radius(4, temporal=True) == 0
    with pytest.raises(InvalidRequestError, match="--sensor-mtf sets what --consistent assumes"):
        InferenceOptions.requested(False, False, False, "cnn", sensor_mtf=0.2)
    with pytest.raises(InvalidRequestError, match="--uncertainty is not supported for the temporal model 'rnn'"):
        InferenceOptions.requested(True, False, True, "rnn")
