"""The per-channel full-int8 candidate derived from the per-tensor one (quantize/channels.py) is what TFLite's own
quantizer writes from a second calibration: the same weight scales, weights and biases within one int8 step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import channels, loops
from edge_lstm.quantize import tflite as qt
from edge_lstm.quantize.calibration import calibration_windows
from edge_lstm.spec import Precision
from edge_lstm.tflite_schema import model_op_name, pack, unpack


def _fc_constants(model: Any) -> list[tuple[Any, np.ndarray]]:
    """(quantization, values) of every fully-connected op's weight and bias, in graph order."""
    out = []
    for graph in model.subgraphs:
        for op in graph.operators:
            if model_op_name(model, op) != "FULLY_CONNECTED":
                continue
            for slot in (1, 2):
                if len(op.inputs) > slot and op.inputs[slot] >= 0:
                    t = graph.tensors[op.inputs[slot]]
                    dtype = np.int8 if slot == 1 else np.int32
                    out.append((t.quantization, np.frombuffer(bytes(model.buffers[t.buffer].data), dtype)))
    return out


def test_derived_per_channel_matches_tflites_quantizer(forecaster: Any) -> None:
    wrapper = pytest.importorskip("ai_edge_litert._pywrap_tensorflow_lite_calibration_wrapper")
    float_tflite = lower(forecaster.proto, "loop", precision=Precision.INT8).data
    specs = qt.input_specs(float_tflite)
    cal = calibration_windows(forecaster.calib, specs, count=32)
    source = pack(loops.calibration_ready(unpack(float_tflite)))
    types = tuple(np.dtype(t).num for t in (np.float32, np.int8, np.int32))
    per_tensor = qt._calibrated(wrapper, source, specs, cal, types, True, True)
    theirs = unpack(qt._calibrated(wrapper, source, specs, cal, types, True, False))
    derived = channels.per_channel(per_tensor, source)
    assert derived is not None
    ours = unpack(derived)
    pairs = list(zip(_fc_constants(ours), _fc_constants(theirs), strict=True))
    assert len(pairs) >= 4
    assert all(len(qa.scale) > 1 for (qa, _), _ in pairs[:2])  # one scale an output channel
    for (qa, a), (qb, b) in pairs:
        assert len(qa.scale) == len(qb.scale)
        np.testing.assert_allclose(qa.scale, qb.scale, rtol=1e-6)
        assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= 1
