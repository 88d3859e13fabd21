"""TensorSpec's layout helpers: the batch and time axes, steps and features, for every layout edge-lstm meets."""

from __future__ import annotations

import pytest

from edge_lstm.spec import TensorSpec


@pytest.mark.parametrize(("shape", "dtype", "batch", "seq_first", "steps", "features", "window"), [
    (("batch", 96, 1), "float32", 0, False, 96, 1, (96, 1)),  # batch_first, batch marked dynamic
    ((96, "batch", 3), "float32", 1, True, 96, 3, (96, 3)),  # time-major (batch_first=False)
    ((1, 24, 4), "float32", 0, False, 24, 4, (24, 4)),  # static, from a TFLite file
    ((24, 1, 4), "float32", 1, True, 24, 4, (24, 4)),  # static time-major: the size-1 axis is the middle one
    ((1, 1, 8), "float32", 0, False, 1, 8, (1, 8)),  # one static step: batch first
    (("batch", 12), "int64", 0, False, 12, 1, (12,)),  # token ids: one per step
    (("batch", 6), "float32", 0, False, 1, 6, (6,)),  # a flat float input is one step of six values
    ((2, "batch", 16), "float32", 1, True, 2, 16, (2, 16)),  # a recurrent state (layers, batch, hidden)
    ((3, 5), "float32", None, False, 1, 15, (3, 5)),  # no batch axis at all
])
def test_layout(shape: tuple[int | str, ...], dtype: str, batch: int | None, seq_first: bool, steps: int,
                features: int, window: tuple[int, ...]) -> None:
    t = TensorSpec("x", shape, dtype)
    assert t.batch_axis == batch
    assert t.seq_first is seq_first and t.time_axis == (0 if seq_first else 1)
    assert (t.steps, t.features) == (steps, features)
    assert t.window_shape == window
    assert t.is_ids is (dtype != "float32")


def test_dynamic_axes_and_marking_one() -> None:
    t = TensorSpec("x", (1, 96, 1))
    assert t.dynamic_axes == {} and not t.is_dynamic
    marked = t.with_batch_axis(0)
    assert marked.shape == ("batch", 96, 1) and marked.dynamic_axes == {0: "batch"} and marked.is_dynamic
    assert t.with_batch_axis(1, "n").shape == (1, "n", 1)
    assert marked.concrete(4) == (4, 96, 1) and marked.with_batch_axis(0) == marked
    assert TensorSpec.from_dict(marked.to_dict()) == marked
