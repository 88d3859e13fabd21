"""Static cost of an artifact, computed from its graph: parameters, MACs, weight bytes.

MACs count the multiply-accumulates of matrix products (LSTM/GRU gate
projections, Gemm, MatMul, fully-connected layers) at batch 1; elementwise work
(activations, gate products, LayerNorm, adds) is counted separately as
``elementwise_ops``. ``macs_per_step`` is the recurrent layers' MACs for one new
time step: what a streaming model spends per sample.

ONNX graphs are read with ``onnx``; TFLite flatbuffers with the schema module
that ships in ``ai-edge-litert``. Both are host-side imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm.cost_model import Cost, LayerCost
from edge_lstm.errors import InputFileError
from edge_lstm.projection import PROJECTION_TAG
from edge_lstm.registry import FORMATS_TABLE

#: the artifact suffixes, for hints
_SUFFIXES = ", ".join(f.suffix for f in FORMATS_TABLE)
#: how a PyTorch file starts: a zip archive (checkpoint, TorchScript, .pt2)
_ZIP_HEAD = b"PK\x03\x04"
#: a legacy (non-zip) torch.save pickle: its protocol opcode
_PICKLE_HEAD = b"\x80"

if TYPE_CHECKING:
    from edge_lstm.reports import ModelCost

_ELEMENTWISE_ONNX = {
    "Add", "Sub", "Mul", "Div", "Relu", "Tanh", "Sigmoid", "Gelu", "Erf", "Sqrt", "Pow", "Exp", "Neg",
    "Clip", "LeakyRelu", "HardSigmoid", "Softmax", "Max", "Min", "Abs", "ReduceMean",
}


def artifact_format(path: str | Path) -> str:
    """A registry format (``"tflite"``, ``"onnx"``, ``"executorch"``, ``"ort"``) or ``"torch"``, by content;
    :class:`InputFileError` for anything else."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"Artifact '{p}' does not exist.",
                             f"Pass the path of an artifact edge-lstm exported ({_SUFFIXES}).")
    with p.open("rb") as f:
        head = f.read(8)
    from edge_lstm.registry import format_of_bytes

    known = format_of_bytes(head)  # the flatbuffer formats carry an identifier; ONNX (a protobuf) does not
    if known is not None:
        return known
    if head[:4] == _ZIP_HEAD:
        return "torch"
    try:
        proto = _load_onnx(p)
    except ImportError:  # a device with onnxruntime only: the protobuf's first field is the IR version
        if head[:1] == b"\x08":
            return "onnx"
        raise not_a_model(p) from None
    except Exception as e:  # protobuf's parse error is not readable to users
        raise not_a_model(p) from e
    if not proto.graph.node or proto.ir_version <= 0:
        raise not_a_model(p)
    return "onnx"


def refuse_unknown(path: str | Path) -> None:
    """:func:`not_a_model` for a file that starts like no PyTorch file (a zip archive or a pickle), called once the
    artifacts' identifiers and ONNX's first byte did not match, so ``info`` says what ``profile`` says rather than
    "not a PyTorch model". A missing or unreadable file passes: the PyTorch loader says why."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(4)
    except OSError:
        return
    if head != _ZIP_HEAD and head[:1] != _PICKLE_HEAD:
        raise not_a_model(Path(path))


def not_a_model(p: Path) -> InputFileError:
    """The one refusal of a file that is no model edge-lstm reads, whichever command was given it."""
    return InputFileError(
        f"'{p}' is not a model: it is neither a TFLite flatbuffer, an ONNX graph nor a PyTorch file.",
        f"Pass an artifact that `edge-lstm export` wrote ({_SUFFIXES}), or a model.pt for the reference.",
    )


def _load_onnx(p: Path) -> Any:
    import onnx

    return onnx.load(str(p), load_external_data=False)


def cost_of(path: str | Path) -> Cost | None:
    """The cost of an ONNX or TFLite file; ``None`` for PyTorch files (use the exported ONNX)."""
    fmt = artifact_format(path)
    if fmt == "onnx":
        import onnx

        return onnx_cost(onnx.load(str(path)))
    if fmt == "tflite":
        from edge_lstm.cost_tflite import tflite_cost

        return tflite_cost(Path(path).read_bytes())
    return None


# ---------------------------------------------------------------- ONNX


def onnx_cost(proto: Any) -> Cost:
    """Parameters and MACs of an ONNX graph at batch 1, from shape-inferred tensor shapes."""
    shapes, inits = _onnx_shapes(proto)
    steps = _time_steps(proto, shapes)
    layers = [_onnx_node_cost(n, shapes, inits) for n in proto.graph.node]
    return _total("onnx", _onnx_precision(proto, inits), layers, inits, steps)


def model_cost(proto: Any) -> ModelCost:
    """The float model's cost for the report, from its captured graph: MACs per inference and per time step, float
    weight bytes, and the layers that compute (shape constants are no layer). The one place it is computed: the
    export carries it on its report, and no renderer captures the graph again."""
    from edge_lstm.reports import LayerCostRow, ModelCost

    c = onnx_cost(proto)
    return ModelCost(macs_per_inference=c.macs, macs_per_step=c.macs_per_step, weight_bytes_fp32=c.params * 4,
                     layer_costs=tuple(LayerCostRow(name=x.name, op=x.op, params=x.params, macs=x.macs,
                                                    recurrent=x.recurrent) for x in c.layers if x.macs))


def _total(fmt: str, precision: str, layers: list[LayerCost], inits: dict[str, Any], steps: int) -> Cost:
    import numpy as np

    weights = {k: v for k, v in inits.items() if v.dtype.kind == "f" or v.dtype in (np.int8, np.uint8)}
    params = sum(int(v.size) for v in weights.values() if v.ndim >= 1)
    stored = sum(int(v.nbytes) for v in weights.values())
    recurrent = sum(layer.macs for layer in layers if layer.recurrent)
    per_step = recurrent // steps if steps else recurrent
    return Cost(
        format=fmt, precision=precision, params=params, weight_bytes=stored,
        macs=sum(layer.macs for layer in layers), macs_per_step=per_step,
        elementwise_ops=sum(layer.elementwise_ops for layer in layers), time_steps=steps, layers=tuple(layers),
    )


def _onnx_shapes(proto: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for vi in (*model.graph.input, *model.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if not d.dim_value:
                d.dim_value = 1  # dynamic axes (batch) -> 1
    del model.graph.output[:]  # let inference recompute output shapes from the fixed inputs
    model.graph.output.extend(proto.graph.output)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(max(int(d.dim_value), 1) for d in dims)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits.setdefault(n.output[0], numpy_helper.to_array(n.attribute[0].t))
    shapes.update({k: tuple(v.shape) for k, v in inits.items()})
    return shapes, inits


def _time_steps(proto: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    """Time steps of the first recurrent node's input (ONNX LSTM/GRU take [T, B, I] unless layout=1)."""
    for n in proto.graph.node:
        if n.op_type == "Scan" and n.doc_string.startswith(PROJECTION_TAG):
            x = shapes.get(n.input[2], ())
            if len(x) == 3:
                return int(x[0])
        if n.op_type in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"):
            x = shapes.get(n.input[0], ())
            if len(x) == 3:
                return int(x[1] if _attr(n, "layout", 0) else x[0])
    return 1


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _onnx_node_cost(node: Any, shapes: dict[str, tuple[int, ...]], inits: dict[str, Any]) -> LayerCost:
    op = node.op_type
    params = sum(int(inits[i].size) for i in node.input if i in inits and inits[i].ndim >= 1)
    name = node.name or f"{op}:{node.output[0]}"
    if op in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"):
        return _recurrent_cost(node, name, params, shapes)
    if op == "Scan" and node.doc_string.startswith(PROJECTION_TAG):
        return _projected_cost(node, name, shapes, inits)
    if op == "Gemm":
        a = shapes.get(node.input[0], ())
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[-1]) if a else (1, 0)
        n_out = _numel(shapes.get(node.output[0], ())) // max(m, 1)
        return LayerCost(name, op, params, m * k * n_out)
    if op in ("MatMul", "MatMulInteger"):
        a = shapes.get(node.input[0], ())
        k = a[-1] if a else 0
        return LayerCost(name, op, params, _numel(shapes.get(node.output[0], ())) * k)
    if op == "LayerNormalization":
        return LayerCost(name, op, params, 0, 8 * _numel(shapes.get(node.input[0], ())))
    if op in _ELEMENTWISE_ONNX:
        return LayerCost(name, op, params, 0, _numel(shapes.get(node.output[0], ())))
    return LayerCost(name, op, params, 0)


def _recurrent_cost(node: Any, name: str, params: int, shapes: dict[str, tuple[int, ...]]) -> LayerCost:
    """ONNX LSTM/GRU/RNN: X is [T, B, I] (layout 0) or [B, T, I] (layout 1)."""
    x = shapes.get(node.input[0], (1, 1, 1))
    layout = int(_attr(node, "layout", 0))
    t, b, i = (x[1], x[0], x[2]) if layout else (x[0], x[1], x[2])
    h = int(_attr(node, "hidden_size", 0))
    dirs = 2 if _attr(node, "direction", b"forward") in (b"bidirectional", "bidirectional") else 1
    gates = {"LSTM": 4, "DynamicQuantizeLSTM": 4, "GRU": 3}.get(node.op_type, 1)
    macs = t * b * dirs * gates * h * (i + h)
    # gate nonlinearities plus the cell/hidden updates, per unit per step
    per_unit = {4: 4 + 5, 3: 3 + 6, 1: 2}[gates]
    return LayerCost(name, node.op_type, params, macs, t * b * dirs * h * per_unit, recurrent=True)


def _projected_cost(node: Any, name: str, shapes: dict[str, tuple[int, ...]], inits: dict[str, Any]) -> LayerCost:
    """A projected LSTM's Scan (:mod:`edge_lstm.projection`): X is [T, B, I], state (h [B, P], c [B, H])."""
    import json

    meta = json.loads(node.doc_string[len(PROJECTION_TAG):])
    t, b, i = (shapes.get(node.input[2]) or (1, 1, 1))[:3]
    h, p = int(meta["hidden"]), int(meta["proj"])
    params = sum(int(inits[meta[k]].size) for k in ("w", "r", "b", "p") if meta[k] in inits)
    macs = t * b * (4 * h * (i + p) + p * h)
    return LayerCost(name, "Scan", params, macs, t * b * h * 9, recurrent=True)


def _onnx_precision(proto: Any, inits: dict[str, Any]) -> str:
    import numpy as np

    ops = {n.op_type for n in proto.graph.node}
    if ops & {"DynamicQuantizeLSTM", "DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}:
        return "dynamic-int8"
    if ops & {"QuantizeLinear", "QLinearMatMul", "QLinearConv"}:
        return "int8"
    big = [v for v in inits.values() if v.size > 1]
    if big and sum(v.size for v in big if v.dtype == np.float16) * 2 > sum(v.size for v in big):
        return "fp16"
    return "fp32"


def onnx_sizes(path: str | Path) -> dict[str, int]:
    """File bytes split into weights (initializers, incl. external data) and graph (the rest)."""
    import onnx

    p = Path(path)
    proto = onnx.load(str(p), load_external_data=False)
    weights = 0
    external = 0
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            length = next((int(e.value) for e in init.external_data if e.key == "length"), 0)
            external += length
        else:
            weights += len(init.SerializeToString())
    for n in proto.graph.node:
        if n.op_type == "Constant":
            weights += sum(len(a.t.SerializeToString()) for a in n.attribute if a.name == "value")
    file_bytes = p.stat().st_size
    return {"file_bytes": file_bytes + external, "weights_bytes": weights + external,
            "graph_bytes": max(file_bytes - weights, 0), "external_data_bytes": external}
