"""Calibration windows: validation of real data, the explicit random set, counts."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.errors import DataError
from edge_lstm.quantize.calibration import (
    DEFAULT_COUNT,
    MIN_WINDOWS,
    CalibrationSet,
    calibration_windows,
    random_calibration,
)
from edge_lstm.spec import InputSpec, TensorSpec

X = InputSpec((TensorSpec("x", ("batch", 48, 1)),))


def windows(n: int, features: int = 1, window: int = 48) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, window, features)).astype(np.float32)


def test_windows_get_a_batch_axis_and_are_spread_over_the_data():
    data = windows(1000)
    cal = calibration_windows(data, X)
    assert isinstance(cal, CalibrationSet) and not cal.random
    assert cal.count == DEFAULT_COUNT
    assert cal.samples["x"].shape == (DEFAULT_COUNT, 1, 48, 1)
    np.testing.assert_array_equal(cal.samples["x"][0, 0], data[0])
    np.testing.assert_array_equal(cal.samples["x"][-1, 0], data[-1])  # the end of the data is seen too
    assert len(cal.feeds()) == DEFAULT_COUNT and cal.feeds()[0][0].shape == (1, 48, 1)


def test_batch_axis_already_present_and_count_kept_when_small():
    cal = calibration_windows(windows(50)[:, None], X, count=200)
    assert cal.samples["x"].shape == (50, 1, 48, 1)


def test_sequence_first_layout_puts_the_batch_axis_in_the_middle():
    spec = InputSpec((TensorSpec("x", (48, "batch", 3)),))
    cal = calibration_windows(windows(20, features=3), spec)
    assert cal.samples["x"].shape == (20, 48, 1, 3)


def test_static_tflite_shapes_and_dict_by_order():
    specs = [TensorSpec("serving_default_x:0", (1, 48, 1))]
    cal = calibration_windows({"x": windows(30)}, specs)
    assert cal.samples["serving_default_x:0"].shape == (30, 1, 48, 1)


def test_nan_is_refused_naming_the_window():
    data = windows(40)
    data[7, 3, 0] = np.nan
    with pytest.raises(DataError, match=r"1 NaN or infinite values in 1 of 40 windows \(first: window 7\)") as exc:
        calibration_windows(data, X)
    assert exc.value.exit_code == 2


def test_wrong_number_of_features_names_expected_and_given():
    with pytest.raises(DataError, match="has 3 features per time step; the model expects 1"):
        calibration_windows(windows(40, features=3), X)


def test_wrong_window_length_is_refused():
    with pytest.raises(DataError, match=r"window length 24 .* expects 48"):
        calibration_windows(windows(40, window=24), X)


def test_too_few_windows_names_the_minimum():
    with pytest.raises(DataError, match=f"gives 5 windows; int8 calibration needs at least {MIN_WINDOWS}"):
        calibration_windows(windows(5), X)


def test_wrong_rank_and_non_numeric_are_refused():
    with pytest.raises(DataError, match="expected \\(windows, 48, 1\\)"):
        calibration_windows(np.zeros((40, 48)), X)
    with pytest.raises(DataError, match="numbers are needed"):
        calibration_windows(np.array([["a"] * 48] * 40), X)


def test_multi_input_needs_matching_inputs_and_counts():
    spec = InputSpec((TensorSpec("x", ("batch", 48, 1)), TensorSpec("h0", (2, "batch", 8))))
    h0 = np.zeros((40, 2, 8), np.float32)
    cal = calibration_windows({"x": windows(40), "h0": h0}, spec)
    assert cal.samples["h0"].shape == (40, 2, 1, 8)
    with pytest.raises(DataError, match="different numbers of windows"):
        calibration_windows({"x": windows(40), "h0": h0[:20]}, spec)
    with pytest.raises(DataError, match="model takes 2 inputs"):
        calibration_windows(windows(40), spec)
    with pytest.raises(DataError, match="the model takes \\['x', 'h0'\\]"):
        calibration_windows({"x": windows(40)}, spec)


def test_random_calibration_is_flagged_and_seeded():
    a, b = random_calibration(X, n=32, seed=3), random_calibration(X, n=32, seed=3)
    assert a.random and a.source == "random" and a.describe() == {"windows": 32, "random": True, "source": "random"}
    assert a.samples["x"].shape == (32, 1, 48, 1)
    np.testing.assert_array_equal(a.samples["x"], b.samples["x"])
