"""Static cost of a TFLite flatbuffer: parameters, MACs, weight bytes, file split.

Read with :mod:`edge_lstm.tflite_read` (numpy only), so it works on a device
with nothing but ``tflite-runtime``. Sequence
ops (``UNIDIRECTIONAL_SEQUENCE_LSTM``, ``BIDIRECTIONAL_SEQUENCE_LSTM``, RNN)
spend ``T x batch x`` the size of their 2-D weight matrices in MACs; a graph
with no sequence op (an unrolled lowering) gets ``macs_per_step = macs / T``.

A ``WHILE`` loop's body counts once per iteration: edge-lstm's loop lowering
passes the input projection of every step as the body's second input,
``[iterations, ...]``, so the iteration count is read from its shape (a loop
from elsewhere counts once, and the layer is labelled so). Parameters are the
distinct constant weight buffers of every subgraph: a weight stored once counts
once, however many ops read it.
"""

from __future__ import annotations

import math

from edge_lstm.cost_model import Cost, LayerCost
from edge_lstm.errors import InputFileError
from edge_lstm.tflite_read import Model, Operator, Subgraph, Tensor, op_name, read
from edge_lstm.tflite_schema import FLOAT16, FLOAT32, INT8, UINT8

_SEQUENCE_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                 "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM", "RNN"}
_ELEMENTWISE = {"ADD", "SUB", "MUL", "DIV", "TANH", "LOGISTIC", "RELU", "RELU6", "GELU", "MAXIMUM", "MINIMUM",
                "EXP", "SQRT", "RSQRT", "SQUARED_DIFFERENCE", "MEAN", "NEG", "ABS", "SOFTMAX"}
#: the tensor types weights are stored in (an int32 bias is not a weight)
_WEIGHT_TYPES = {FLOAT32, FLOAT16, INT8, UINT8}


#: the hint of every corrupted-file error here
CORRUPT_HINT = "The file may be truncated or corrupted; export it again (or copy it again from where it was written)."


def parse(data: bytes) -> Model:
    """The flatbuffer's tables, their cross references checked; :class:`InputFileError` when it is not TFLite or
    is truncated or corrupted (a tensor, buffer, operator code or subgraph index out of range, no subgraph)."""
    try:
        model = read(data)
    except InputFileError as e:
        raise InputFileError(e.message, e.hint or CORRUPT_HINT) from e
    problem = _dangling(model)
    if problem:
        raise InputFileError(f"The TFLite flatbuffer is truncated or corrupted ({problem}).", CORRUPT_HINT)
    return model


def _dangling(model: Model) -> str:
    """The first index in ``model`` that points nowhere, described; ``""`` when every one resolves."""
    if not model.subgraphs:
        return "it has no subgraph"
    for gi, g in enumerate(model.subgraphs):
        n = len(g.tensors)
        for t in g.tensors:
            if not 0 <= t.buffer < len(model.buffer_sizes):
                return f"tensor '{t.name}' of subgraph {gi} refers to buffer {t.buffer} of {len(model.buffer_sizes)}"
        for where, idx in (("input", g.inputs), ("output", g.outputs)):
            if any(not 0 <= i < n for i in idx):
                return f"a subgraph {gi} {where} refers to a tensor outside its {n}"
        for k, op in enumerate(g.operators):
            if not 0 <= op.opcode_index < len(model.operator_codes):
                return f"operator {k} of subgraph {gi} has operator code {op.opcode_index} of " \
                       f"{len(model.operator_codes)}"
            if any(not -1 <= i < n for i in op.inputs) or any(not 0 <= i < n for i in op.outputs):
                return f"operator {k} of subgraph {gi} refers to a tensor outside its {n}"
            if any(not 0 <= s < len(model.subgraphs) for s in op.subgraphs):
                return f"operator {k} of subgraph {gi} calls a subgraph outside the {len(model.subgraphs)}"
    return ""


def _numel(shape: list[int]) -> int:
    return math.prod(int(d) for d in shape)


def tflite_cost(data: bytes) -> Cost:
    """Parameters and MACs at the flatbuffer's stored (batch 1) shapes, loop bodies once per iteration."""
    model = parse(data)
    layers: list[LayerCost] = []
    steps = _walk(model, 0, 1, layers, set())
    weights: dict[int, Tensor] = {}
    for g in model.subgraphs:
        for t in g.tensors:
            if model.buffer_sizes[t.buffer] > 0 and t.type in _WEIGHT_TYPES and _rank(t) >= 1:
                weights.setdefault(t.buffer, t)
    params = sum(_numel(t.shape) for t in weights.values())
    stored = sum(model.buffer_sizes[b] for b in weights)
    macs = sum(layer.macs for layer in layers)
    recurrent = sum(layer.macs for layer in layers if layer.recurrent)
    g = model.subgraphs[0]
    if not steps:
        steps = _input_steps(g)
        recurrent = macs
    const = {i for i, t in enumerate(g.tensors) if model.buffer_sizes[t.buffer] > 0}
    return Cost(
        format="tflite", precision=_precision(g, list(weights.values()), const), params=params, weight_bytes=stored,
        macs=macs, macs_per_step=recurrent // max(steps, 1),
        elementwise_ops=sum(layer.elementwise_ops for layer in layers), time_steps=max(steps, 1), layers=tuple(layers),
    )


def _walk(model: Model, gi: int, times: int, layers: list[LayerCost], seen: set[int]) -> int:
    """Append the cost of subgraph ``gi``'s ops, ``times`` over; returns the time steps of a sequence op, if any."""
    g = model.subgraphs[gi]
    const = {i for i, t in enumerate(g.tensors) if model.buffer_sizes[t.buffer] > 0}
    feeds_loop = _loop_projections(model, g)
    steps = 0
    for k, op in enumerate(g.operators):
        name = op_name(model, op)
        if name == "WHILE" and len(op.subgraphs) == 2 and op.subgraphs[1] not in seen:
            body = model.subgraphs[op.subgraphs[1]]
            iters = _iterations(body)
            loop_layers: list[LayerCost] = []
            _walk(model, op.subgraphs[1], times * iters, loop_layers, seen | {op.subgraphs[1]})
            layers += [LayerCost(f"{layer.name}@loop{k}", layer.op, layer.params, layer.macs, layer.elementwise_ops,
                                 recurrent=True) for layer in loop_layers]
            steps = steps or _loop_steps(model, g, op, iters)
            continue
        layer, t = _op_cost(k, name, op, g.tensors, const)
        if k in feeds_loop:  # a loop's input projection of all steps: part of the recurrent layer
            layer = LayerCost(layer.name, layer.op, layer.params, layer.macs, layer.elementwise_ops, recurrent=True)
        if gi:
            layer = LayerCost(f"{layer.name}/sub{gi}", layer.op, layer.params, layer.macs * times,
                              layer.elementwise_ops * times, layer.recurrent)
        layers.append(layer)
        steps = steps or t
    return steps


def _loop_projections(model: Model, g: Subgraph) -> set[int]:
    """Indices of the FULLY_CONNECTED ops whose output (through RESHAPEs) is a WHILE loop's input."""
    producer = {o: k for k, op in enumerate(g.operators) for o in op.outputs}
    out: set[int] = set()
    for op in g.operators:
        if op_name(model, op) != "WHILE":
            continue
        for t in op.inputs:
            k = producer.get(t)
            passed: set[int] = set()  # a corrupted graph can feed a RESHAPE its own output
            while k is not None and k not in passed and op_name(model, g.operators[k]) == "RESHAPE" \
                    and g.operators[k].inputs:
                passed.add(k)
                k = producer.get(g.operators[k].inputs[0])
            if k is not None and op_name(model, g.operators[k]) == "FULLY_CONNECTED":
                out.add(k)
    return out


def _iterations(body: Subgraph) -> int:
    """Iterations of an edge-lstm loop body: its second input is ``[iterations, ...]`` (else 1)."""
    if len(body.inputs) > 1 and body.tensors[body.inputs[0]].type == 2:  # an int32 counter first
        shape = body.tensors[body.inputs[1]].shape
        return int(shape[0]) if shape else 1
    return 1


def _loop_steps(model: Model, g: Subgraph, op: Operator, iters: int) -> int:
    """Time steps a loop covers: the rows of the all-steps projection before it (``[T, G]``), else its iterations."""
    if len(op.inputs) < 2:
        return iters
    for producer in g.operators:
        if op.inputs[1] in producer.outputs and op_name(model, producer) == "RESHAPE" and producer.inputs \
                and producer.inputs[0] >= 0:
            src = g.tensors[producer.inputs[0]].shape
            return int(src[0]) if len(src) == 2 else iters
    return iters


def _rank(t: Tensor) -> int:
    return len(t.shape)


def _op_cost(k: int, name: str, op: Operator, tensors: list[Tensor], const: set[int]) -> tuple[LayerCost, int]:
    ins = list(op.inputs)
    params = sum(_numel(tensors[i].shape) for i in ins if i >= 0 and i in const)
    label = f"{name}:{k}"
    out_n = _numel(tensors[op.outputs[0]].shape) if op.outputs else 0
    if name in _SEQUENCE_OPS:
        x = _shape(tensors, ins, 0, 2, label)
        time_major = op.time_major
        t, b = (int(x[0]), int(x[1])) if time_major or len(x) < 3 else (int(x[1]), int(x[0]))
        mats = sum(_numel(tensors[i].shape) for i in ins[1:] if i >= 0 and i in const and _rank(tensors[i]) == 2)
        return LayerCost(label, name, params, t * b * mats, out_n * 9, recurrent=True), t
    if name == "FULLY_CONNECTED" and len(ins) > 1:
        w = _shape(tensors, ins, 1, 1, label)
        rows = _numel(_shape(tensors, ins, 0, 0, label)) // max(int(w[-1]), 1)
        return LayerCost(label, name, params, rows * _numel(w)), 0
    if name == "BATCH_MATMUL":
        k_dim = int(_shape(tensors, ins, 0, 1, label)[-1])
        return LayerCost(label, name, params, out_n * k_dim), 0
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(ins) > 1:  # filter [O, H, W, I] / [1, H, W, O]
        f = _shape(tensors, ins, 1, 4, label)
        per_out = int(f[1]) * int(f[2]) * (int(f[3]) if name == "CONV_2D" else 1)
        return LayerCost(label, name, params, out_n * per_out), 0
    if name == "TRANSPOSE_CONV" and len(ins) > 2:  # filter [O, H, W, I]: every input value meets O x H x W
        f = _shape(tensors, ins, 1, 3, label)
        x = _shape(tensors, ins, 2, 0, label)
        return LayerCost(label, name, params, _numel(x) * int(f[0]) * int(f[1]) * int(f[2])), 0
    if name in _ELEMENTWISE:
        return LayerCost(label, name, params, 0, out_n), 0
    return LayerCost(label, name, params, 0), 0


def _shape(tensors: list[Tensor], ins: list[int], j: int, rank: int, label: str) -> list[int]:
    """The shape of an op's ``j``-th input, of rank ``rank`` or more; :class:`InputFileError` when the op has no such
    input (the file's graph is corrupted: no converter writes one)."""
    i = ins[j] if j < len(ins) else -1
    if i < 0 or len(tensors[i].shape) < rank:
        raise InputFileError(f"The TFLite flatbuffer is truncated or corrupted (operator {label} has no input {j} "
                             f"of rank {rank} or more).", CORRUPT_HINT)
    return tensors[i].shape


def _input_steps(g: Subgraph) -> int:
    shape = g.tensors[g.inputs[0]].shape if g.inputs else None
    return int(shape[1]) if shape is not None and len(shape) == 3 else 1


def _precision(g: Subgraph, weights: list[Tensor], const: set[int]) -> str:
    # full integer: activations (non-constant tensors) are quantized int8; hybrid keeps them float
    if any(t.type in (9, 3) and t.scale for i, t in enumerate(g.tensors) if i not in const):
        return "int8"
    if any(t.type == 7 and t.scale for i, t in enumerate(g.tensors) if i not in const):  # INT16 activations
        return "int16x8"
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
