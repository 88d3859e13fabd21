"""Give a quantized model's outputs the ranges they are known to take.

TFLite's calibrator records a tensor's range over every invoke it is fed. For a
one-step (streaming) model fed window after window, a model output is recorded
at every step, including the first steps after a reset, when the state has not
yet seen a window's worth of input (the warm-up). A forecaster's warm-up outputs
reach well past the values it returns once warm (on the tests' Seattle
forecaster, [-1.89, 2.91] against [-1.63, 2.36] at each window's last step), and
an int8 output spread over the wider range rounds every forecast more coarsely
(its task MAE rose 1.3 points over the whole-window int8 model with otherwise
identical scales). :func:`set_output_ranges` rescales an output to a given
range: the producing op's output and the shape-only ops between it and the
output take the new scale; the kernels derive their multipliers from the tensors'
scales when the model is loaded, so nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edge_lstm.tflite_schema import INT8, copy_quantization, model_op_name, pack, quantization, unpack

#: ops that move int8 values without changing them: input and output share one scale
_SHAPE_OPS = ("RESHAPE", "STRIDED_SLICE", "SQUEEZE", "EXPAND_DIMS", "SLICE", "GATHER", "TRANSPOSE")
#: ops whose int8 kernel requantizes to any output scale it is given
_FREE_SCALE_OPS = ("FULLY_CONNECTED", "ADD", "SUB", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL",
                   "QUANTIZE", "MEAN", "SUM")


def set_output_ranges(data: bytes, ranges: Mapping[str, tuple[float, float]]) -> tuple[bytes, list[str]]:
    """``data`` with each named int8 output (or the int8 tensor its DEQUANTIZE reads) quantized over ``ranges``
    (name -> (min, max) in float units); returns the model and the names changed. An output whose int8 value
    comes from an op with a fixed output scale (a logistic, a softmax) or is read elsewhere is left alone."""
    model = unpack(data)
    graph = model.subgraphs[0]

    def op_name(op: Any) -> str:
        return model_op_name(model, op)

    producer = {int(t): op for op in graph.operators for t in op.outputs}
    readers: dict[int, int] = {}
    for op in graph.operators:
        for t in op.inputs:
            if t >= 0:
                readers[int(t)] = readers.get(int(t), 0) + 1
    changed = []
    for out in (int(o) for o in graph.outputs):
        name = graph.tensors[out].name
        key = name.decode() if isinstance(name, bytes) else str(name)
        if key not in ranges:
            continue
        chain = _int8_chain(graph, out, producer, readers, op_name)
        if chain:
            quant = _quant(*ranges[key])
            for t in chain:
                graph.tensors[t].quantization = copy_quantization(quant)
            changed.append(key)
    return pack(model), changed


def _int8_chain(graph: Any, out: int, producer: dict[int, Any], readers: dict[int, int], op_name: Any) -> list[int]:
    """The int8 tensors from a free-scale op's output to ``out`` through shape-only ops, or [] when there is none
    (or one of them is also read by another op)."""
    i8 = INT8
    t = out
    op = producer.get(t)
    if graph.tensors[t].type != i8:
        if op is None or op_name(op) != "DEQUANTIZE":
            return []
        t = int(op.inputs[0])
        if readers.get(t, 0) != 1:
            return []
    chain = []
    while True:
        tensor = graph.tensors[t]
        q = tensor.quantization
        if tensor.type != i8 or q is None or q.scale is None or len(q.scale) != 1:
            return []
        chain.append(t)
        op = producer.get(t)
        if op is None:
            return []
        kind = op_name(op)
        if kind in _FREE_SCALE_OPS:
            return chain
        if kind not in _SHAPE_OPS:
            return []
        t = int(op.inputs[0])
        if readers.get(t, 0) != 1:
            return []


def _quant(lo: float, hi: float) -> Any:
    """Asymmetric int8 quantization of [lo, hi] widened to hold 0 (TFLite's own rule)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return quantization([float(scale)], [zero])


