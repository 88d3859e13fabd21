"""The quantizers on one-step (streaming) graphs: explicit state (loop) and variable state (fused), every precision.

Each quantized step model is driven through a window one step at a time and compared with the float step model
driven the same way (the streaming proof against PyTorch is the pipeline's).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lower"))

from tflite_models import streaming_case

from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.spec import Precision


def _drive(data: bytes, step, x: np.ndarray, explicit: bool) -> np.ndarray:  # type: ignore[no-untyped-def]
    t_axis = step.step.time_axis
    state = {s.input: s.zeros(1) for s in step.step.states}
    ys = []
    with LiteRTRunner(data) as r:
        r.reset_state()
        for t in range(x.shape[t_axis]):
            out = r.infer({"x": np.take(x, [t], axis=t_axis), **(state if explicit else {})})
            if explicit:
                state = {s.input: out[s.output] for s in step.step.states}
            ys.append(np.asarray(out["y"]).ravel())
    return np.concatenate(ys)


def _calib(data: bytes, n: int = 48) -> dict[str, np.ndarray]:
    """Steps of x and states in [-1, 1] (what a tanh-bounded hidden state holds), one feed each."""
    from edge_lstm.quantize.tflite import input_specs

    rng = np.random.default_rng(0)
    out = {}
    for spec in input_specs(data):
        arr = rng.standard_normal((n, *spec.concrete(1))).astype(np.float32)
        out[spec.name] = arr if spec.name == "x" else np.tanh(arr)
    return out


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.DYNAMIC_INT8, Precision.INT8])
@pytest.mark.parametrize(("name", "lowering"), [("stacked", "loop"), ("gru", "loop"), ("stacked", "fused"),
                                                ("rnn", "loop")])
def test_streaming_graphs_quantize(name: str, lowering: str, precision: Precision) -> None:
    step = streaming_case(name)
    fp32 = lower(step.proto, lowering, streaming=True, precision=precision)
    explicit = not fp32.variable_state
    calib = _calib(fp32.data) if precision is Precision.INT8 else None
    q = quantize_tflite(fp32.data, precision, calib)
    # (a 2-layer RNN(16) step holds 3.4 KB of weights: its int8 quantization parameters outweigh what int8 saves)
    assert q.size < fp32.size or (precision is Precision.INT8 and fp32.size < 10_000)
    x = np.random.default_rng(3).standard_normal(step.model.inputs.inputs[0].concrete(1)).astype(np.float32)
    ref, got = _drive(fp32.data, step, x, explicit), _drive(q.data, step, x, explicit)
    cos = float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cos >= (0.999 if precision is not Precision.INT8 else 0.98), cos
