"""Static cost of a TFLite flatbuffer: parameters, MACs, weight bytes, file split.

Read with :mod:`edge_lstm.tflite_read` (numpy only), so it works on a device
with nothing but ``tflite-runtime``. Sequence
ops (``UNIDIRECTIONAL_SEQUENCE_LSTM``, ``BIDIRECTIONAL_SEQUENCE_LSTM``, RNN)
spend ``T x batch x`` the size of their 2-D weight matrices in MACs; a graph
with no sequence op (an unrolled lowering) gets ``macs_per_step = macs / T``.
"""

from __future__ import annotations

import numpy as np

from edge_lstm.cost import Cost, LayerCost
from edge_lstm.tflite_read import Model, Operator, Subgraph, Tensor, op_name, read

_SEQUENCE_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                 "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM", "RNN"}
_ELEMENTWISE = {"ADD", "SUB", "MUL", "DIV", "TANH", "LOGISTIC", "RELU", "RELU6", "GELU", "MAXIMUM", "MINIMUM",
                "EXP", "SQRT", "RSQRT", "SQUARED_DIFFERENCE", "MEAN", "NEG", "ABS", "SOFTMAX"}
_TYPE_BYTES = {0: 4, 1: 2, 9: 1, 3: 1}  # FLOAT32, FLOAT16, INT8, UINT8 (schema TensorType values)


def parse(data: bytes) -> Model:
    """The flatbuffer's tables; :class:`InputFileError` when it is not TFLite."""
    return read(data)


def _numel(shape: list[int]) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def tflite_cost(data: bytes) -> Cost:
    """Parameters and MACs of the main subgraph at the flatbuffer's stored (batch 1) shapes."""
    model = parse(data)
    g = model.subgraphs[0]
    const = {i for i, t in enumerate(g.tensors) if model.buffer_sizes[t.buffer] > 0}
    layers = []
    steps = 0
    for k, op in enumerate(g.operators):
        layer, t = _op_cost(k, op_name(model, op), op, g.tensors, const)
        layers.append(layer)
        steps = steps or t
    weights = [g.tensors[i] for i in const if g.tensors[i].type in _TYPE_BYTES and _rank(g.tensors[i]) >= 1]
    params = sum(_numel(t.shape) for t in weights)
    stored = sum(model.buffer_sizes[t.buffer] for t in weights)
    macs = sum(layer.macs for layer in layers)
    recurrent = sum(layer.macs for layer in layers if layer.recurrent)
    if not steps:
        steps = _input_steps(g)
        recurrent = macs
    return Cost(
        format="tflite", precision=_precision(g, weights, const), params=params, weight_bytes=stored, macs=macs,
        macs_per_step=recurrent // max(steps, 1), elementwise_ops=sum(layer.elementwise_ops for layer in layers),
        time_steps=max(steps, 1), layers=tuple(layers),
    )


def _rank(t: Tensor) -> int:
    return len(t.shape)


def _op_cost(k: int, name: str, op: Operator, tensors: list[Tensor], const: set[int]) -> tuple[LayerCost, int]:
    ins = list(op.inputs)
    params = sum(_numel(tensors[i].shape) for i in ins if i >= 0 and i in const)
    label = f"{name}:{k}"
    out_n = _numel(tensors[op.outputs[0]].shape) if op.outputs else 0
    if name in _SEQUENCE_OPS:
        x = tensors[ins[0]].shape
        time_major = op.time_major
        t, b = (int(x[0]), int(x[1])) if time_major or len(x) < 3 else (int(x[1]), int(x[0]))
        mats = sum(_numel(tensors[i].shape) for i in ins[1:] if i >= 0 and i in const and _rank(tensors[i]) == 2)
        return LayerCost(label, name, params, t * b * mats, out_n * 9, recurrent=True), t
    if name == "FULLY_CONNECTED" and len(ins) > 1:
        w = tensors[ins[1]].shape
        rows = _numel(tensors[ins[0]].shape) // max(int(w[-1]), 1)
        return LayerCost(label, name, params, rows * _numel(w)), 0
    if name == "BATCH_MATMUL":
        k_dim = int(tensors[ins[0]].shape[-1])
        return LayerCost(label, name, params, out_n * k_dim), 0
    if name in _ELEMENTWISE:
        return LayerCost(label, name, params, 0, out_n), 0
    return LayerCost(label, name, params, 0), 0


def _input_steps(g: Subgraph) -> int:
    shape = g.tensors[g.inputs[0]].shape if g.inputs else None
    return int(shape[1]) if shape is not None and len(shape) == 3 else 1


def _precision(g: Subgraph, weights: list[Tensor], const: set[int]) -> str:
    # full integer: activations (non-constant tensors) are quantized int8; hybrid keeps them float
    if any(t.type in (9, 3) and t.scale for i, t in enumerate(g.tensors) if i not in const):
        return "int8"
    types = [t.type for t in weights]
    if 9 in types or 3 in types:
        return "dynamic-int8"
    if types.count(1) * 2 > len(types):
        return "fp16"
    return "fp32"


def tflite_sizes(data: bytes) -> dict[str, int]:
    """File bytes split into weights (constant buffers) and graph (everything else)."""
    model = parse(data)
    weights = sum(model.buffer_sizes)
    return {"file_bytes": len(data), "weights_bytes": weights, "graph_bytes": max(len(data) - weights, 0),
            "external_data_bytes": 0}
