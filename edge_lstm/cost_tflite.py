"""Static cost of a TFLite flatbuffer: parameters, MACs, weight bytes, file split.

Read with the flatc-generated schema that ships in ``ai-edge-litert``
(``ai_edge_litert.schema_py_generated``), so no TensorFlow is needed. Sequence
ops (``UNIDIRECTIONAL_SEQUENCE_LSTM``, ``BIDIRECTIONAL_SEQUENCE_LSTM``, RNN)
spend ``T x batch x`` the size of their 2-D weight matrices in MACs; a graph
with no sequence op (an unrolled lowering) gets ``macs_per_step = macs / T``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_lstm.cost import Cost, LayerCost
from edge_lstm.errors import InputFileError

_SEQUENCE_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                 "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM", "RNN"}
_ELEMENTWISE = {"ADD", "SUB", "MUL", "DIV", "TANH", "LOGISTIC", "RELU", "RELU6", "GELU", "MAXIMUM", "MINIMUM",
                "EXP", "SQRT", "RSQRT", "SQUARED_DIFFERENCE", "MEAN", "NEG", "ABS", "SOFTMAX"}
_TYPE_BYTES = {0: 4, 1: 2, 9: 1, 3: 1}  # FLOAT32, FLOAT16, INT8, UINT8 (schema TensorType values)


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def parse(data: bytes) -> Any:
    """The flatbuffer as a ``ModelT`` object tree; :class:`InputFileError` when it is not TFLite."""
    if data[4:8] != b"TFL3":
        raise InputFileError("Not a TFLite flatbuffer (no 'TFL3' identifier).")
    s = _schema()
    try:
        return s.ModelT.InitFromObj(s.Model.GetRootAs(data, 0))
    except Exception as e:  # a truncated buffer raises struct/index errors
        raise InputFileError(f"The TFLite flatbuffer cannot be read: {e}.") from e


def _op_names() -> dict[int, str]:
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


def _numel(shape: Any) -> int:
    return int(np.prod(shape)) if shape is not None and len(shape) else 1


def _buffer_bytes(buf: Any) -> int:
    if buf is None:
        return 0
    if buf.data is not None:
        return len(buf.data)
    return int(getattr(buf, "size", 0) or 0)


def tflite_cost(data: bytes) -> Cost:
    """Parameters and MACs of the main subgraph at the flatbuffer's stored (batch 1) shapes."""
    model = parse(data)
    g = model.subgraphs[0]
    names = _op_names()
    const = {i for i, t in enumerate(g.tensors) if _buffer_bytes(model.buffers[t.buffer]) > 0}
    layers = []
    steps = 0
    for k, op in enumerate(g.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        layer, t = _op_cost(k, name, op, g.tensors, const)
        layers.append(layer)
        steps = steps or t
    weights = [g.tensors[i] for i in const if g.tensors[i].type in _TYPE_BYTES and _rank(g.tensors[i]) >= 1]
    params = sum(_numel(t.shape) for t in weights)
    stored = sum(_buffer_bytes(model.buffers[t.buffer]) for t in weights)
    macs = sum(layer.macs for layer in layers)
    recurrent = sum(layer.macs for layer in layers if layer.recurrent)
    if not steps:
        steps = _input_steps(g)
        recurrent = macs
    return Cost(
        format="tflite", precision=_precision(g, weights), params=params, weight_bytes=stored, macs=macs,
        macs_per_step=recurrent // max(steps, 1), elementwise_ops=sum(layer.elementwise_ops for layer in layers),
        time_steps=max(steps, 1), layers=tuple(layers),
    )


def _rank(t: Any) -> int:
    return len(t.shape) if t.shape is not None else 0


def _op_cost(k: int, name: str, op: Any, tensors: list[Any], const: set[int]) -> tuple[LayerCost, int]:
    ins = [i for i in (op.inputs if op.inputs is not None else [])]
    params = sum(_numel(tensors[i].shape) for i in ins if i >= 0 and i in const)
    label = f"{name}:{k}"
    out_n = _numel(tensors[op.outputs[0]].shape) if op.outputs is not None and len(op.outputs) else 0
    if name in _SEQUENCE_OPS:
        x = tensors[ins[0]].shape
        time_major = bool(getattr(op.builtinOptions, "timeMajor", False))
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


def _input_steps(g: Any) -> int:
    shape = g.tensors[g.inputs[0]].shape if g.inputs is not None and len(g.inputs) else None
    return int(shape[1]) if shape is not None and len(shape) == 3 else 1


def _precision(g: Any, weights: list[Any]) -> str:
    x = g.tensors[g.inputs[0]] if g.inputs is not None and len(g.inputs) else None
    if x is not None and x.type in (9, 3):
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
    weights = sum(_buffer_bytes(b) for b in model.buffers or [])
    return {"file_bytes": len(data), "weights_bytes": weights, "graph_bytes": max(len(data) - weights, 0),
            "external_data_bytes": 0}
