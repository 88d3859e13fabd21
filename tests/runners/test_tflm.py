"""TFLMRunner: fused float models on the TFLite Micro host interpreter match PyTorch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="tflite-micro is not installed (pip install tflite-micro)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lower"))

from tflite_models import assert_close, case, streaming_case

from edge_lstm.lower.tflite import lower
from edge_lstm.runners.tflm import TFLMRunner


@pytest.mark.parametrize(
    "name", ["stacked", "seq_first", "bidirectional", "bidirectional_seq_first", "all_steps", "relu_head"]
)
def test_fused_float_models_match_pytorch(name: str) -> None:
    c = case(name)
    lowered = lower(c.proto, "fused")
    assert lowered.lowering == "fused"
    with TFLMRunner(lowered.data) as r:
        assert r.input_names == c.model.inputs.names and r.output_names == c.model.output_names
        for seed in (0, 1):
            r.reset_state()
            feeds = c.feeds(seed)
            assert_close(r.infer(feeds), c.reference(feeds))


def test_reset_and_arena(tmp_path: Path) -> None:
    c = case("stacked")
    path = tmp_path / "m.tflite"
    path.write_bytes(lower(c.proto, "fused").data)
    feeds = c.feeds()
    with TFLMRunner(path) as r:
        first = r.infer(feeds)["y"]
        carried = r.infer(feeds)["y"]
        r.reset_state()
        again = r.infer(feeds)["y"]
        used = r.arena_used_bytes()
        assert r.runtime == "tflm" and r.version().startswith("tflite-micro")
    assert not np.allclose(first, carried, atol=1e-6)
    np.testing.assert_array_equal(first, again)
    assert used is not None and 1000 < used < 10 * len(path.read_bytes())


def test_fused_streaming_step_model_runs_on_tflm() -> None:
    whole, step = case("all_steps"), streaming_case("all_steps")
    lowered = lower(step.proto, "fused", streaming=True)
    x = whole.feeds()["x"]
    with TFLMRunner(lowered.data) as r:
        r.reset_state()
        ys = [r.infer({"x": x[:, t : t + 1]})["y"] for t in range(x.shape[1])]
    ref = whole.reference({"x": x})["y"]
    np.testing.assert_allclose(np.concatenate(ys, axis=1), ref, atol=1e-5, rtol=1e-5)
