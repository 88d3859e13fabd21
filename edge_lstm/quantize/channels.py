"""One weight scale a channel, derived from a per-tensor full-int8 model: no second calibration.

A loop's full-int8 candidates differ only in their fully-connected weights
(one scale a tensor, or one an output channel) and the biases whose scale
follows them; the activation scales come from the same calibration. TFLite's
quantizer needs a calibrator of its own for each (quantizing changes the
calibrator's model), and a calibration pass is most of an export's time (~60 s
for 2 x LSTM(256) at T=256: TFLite's logging kernels run every step). So the
per-channel candidate is written here from the per-tensor one and the float
weights, the way TFLite's quantizer writes it: symmetric int8 weights in
[-127, 127] at max|w|/127 per output row, int32 biases at input scale x weight
scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_lstm.quantize.tflite_edit import drop_unused_buffers
from edge_lstm.tflite_schema import (
    FLOAT32,
    INT8,
    const_array,
    is_const,
    model_op_name,
    pack,
    quantization,
    set_data,
    unpack,
)

#: weight-carrying ops this module does not re-quantize: a model holding one gets a second calibration instead
_OTHER_WEIGHTS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "BATCH_MATMUL", "UNIDIRECTIONAL_SEQUENCE_LSTM",
                  "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN", "LSTM")


def per_channel(per_tensor: bytes, source: bytes) -> bytes | None:
    """``per_tensor`` (TFLite's quantizer's output from the float ``source``, names kept) with its
    fully-connected weights at one scale an output channel; None when it holds weights this cannot redo."""
    model, floats = unpack(per_tensor), unpack(source)
    done: dict[int, float] = {}  # id(tensor) -> the input scale its scales were derived for
    for graph, fgraph in zip(model.subgraphs, floats.subgraphs, strict=True):
        by_name = {bytes(t.name): t for t in fgraph.tensors if t.name}
        for op in graph.operators:
            name = model_op_name(model, op)
            if name in _OTHER_WEIGHTS:
                return None
            if name == "FULLY_CONNECTED" and not _channels(model, floats, graph, by_name, op, done):
                return None
    return pack(drop_unused_buffers(model))


def _float_of(floats: Any, by_name: dict[bytes, Any], tensor: Any) -> np.ndarray | None:
    src = by_name.get(bytes(tensor.name or b""))
    if src is None or src.type != FLOAT32 or not is_const(floats, src):
        return None
    return const_array(floats, src, np.float32).reshape([int(v) for v in src.shape])


def _channels(model: Any, floats: Any, graph: Any, by_name: dict[bytes, Any], op: Any,
              done: dict[int, float]) -> bool:
    """Re-quantize one fully-connected op's weights (and bias) per channel; False if it cannot be done."""
    w = graph.tensors[op.inputs[1]]
    if w.type != INT8 or not is_const(model, w):
        return True  # not a full-int8 weight (a float head kept by allow_float): nothing to redo
    s_in = float(graph.tensors[op.inputs[0]].quantization.scale[0])
    arr = _float_of(floats, by_name, w)
    if arr is None or arr.ndim != 2:
        return False
    scales = np.abs(arr).max(axis=1).astype(np.float64) / 127.0
    scales[scales == 0] = 1.0
    if id(w) not in done:
        set_data(model, w, np.clip(np.round(arr / scales[:, None]), -127, 127).astype(np.int8))
        w.quantization = quantization([float(v) for v in scales], [0] * len(scales), 0)
        done[id(w)] = s_in
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return True
    b = graph.tensors[op.inputs[2]]
    bias = _float_of(floats, by_name, b)
    if bias is None or bias.shape != (len(scales),):
        return False
    if id(b) in done:
        return bool(np.isclose(done[id(b)], s_in))  # a bias shared by ops with other input scales: give up
    bq = np.clip(np.round(bias / (s_in * scales)), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    set_data(model, b, bq)
    b.quantization = quantization([float(s_in * v) for v in scales], [0] * len(scales), 0)
    done[id(b)] = s_in
    return True
