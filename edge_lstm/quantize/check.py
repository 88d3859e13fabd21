"""Is a quantized artifact what its label says? Its weights are read back from the file and counted by type.

A quantizer can silently leave a layer in float (ONNX Runtime's dynamic
quantizer skips an LSTM whose weights are not initializers; TFLite's quantizer
with ``allow_float`` keeps ops it has no kernel for): the file would be labelled
int8 and hold float32 weights. :func:`ensure_precision` reads the weights of the
weight-carrying ops back from the bytes and raises :class:`UnsupportedModel`
(exit code 5) naming the layers that are not in the precision asked for, unless
the quantizer reported them as deliberately kept in float (a head, listed in
the artifact's ``float_layers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_lstm.errors import UnsupportedModel
from edge_lstm.spec import Precision

#: TFLite ops and the input slots that hold weights
_TFLITE_WEIGHTS: dict[str, tuple[int, ...]] = {
    "FULLY_CONNECTED": (1,),
    "CONV_2D": (1,),
    "DEPTHWISE_CONV_2D": (1,),
    "TRANSPOSE_CONV": (1,),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (1, 2, 3, 4, 5, 6, 7, 8, 16),
    "UNIDIRECTIONAL_SEQUENCE_RNN": (1, 2),
    "BATCH_MATMUL": (1,),
}
#: the type each precision stores weights in (TFLite TensorType names)
_WANT = {Precision.FP16: ("FLOAT16",), Precision.DYNAMIC_INT8: ("INT8",), Precision.INT8: ("INT8",),
         Precision.INT16X8: ("INT8",)}
#: ONNX ops that carry weights
_ONNX_WEIGHT_OPS = ("LSTM", "GRU", "RNN", "Gemm", "MatMul", "Conv", "ConvTranspose")


@dataclass
class WeightReport:
    """The weight tensors of an artifact, by the layer reading them and the type they are stored in."""

    layers: dict[str, str] = field(default_factory=dict)  #: layer -> stored type of its weights
    elements: dict[str, int] = field(default_factory=dict)  #: stored type -> weight elements

    def share(self, types: tuple[str, ...]) -> float:
        """Fraction of weight elements stored in one of ``types``."""
        total = sum(self.elements.values())
        return sum(v for k, v in self.elements.items() if k in types) / total if total else 0.0


def tflite_weights(data: bytes) -> WeightReport:
    """The stored type of each weight-carrying TFLite op's weights (through DEQUANTIZE for float16)."""
    from edge_lstm import tflite_schema as ts

    model = ts.unpack(data)
    report = WeightReport()
    for gi, graph in enumerate(model.subgraphs):
        ops = graph.operators or []
        producer = {int(o): op for op in ops for o in op.outputs}
        for k, op in enumerate(ops):
            name = ts.model_op_name(model, op)
            for slot in _TFLITE_WEIGHTS.get(name, ()):
                if slot >= len(op.inputs) or op.inputs[slot] < 0:
                    continue
                stored = _stored(model, graph, producer, int(op.inputs[slot]))
                if stored is None:
                    continue
                # TensorType names (FLOAT16, INT8, ...) are the numpy dtype names upper-cased
                kind, size = ts.dtype_name(stored.type).upper(), int(np.prod(stored.shape))
                report.elements[kind] = report.elements.get(kind, 0) + size
                layer = f"{name} {k}" + (f" (subgraph {gi})" if gi else "")
                report.layers[layer] = kind if report.layers.get(layer, kind) == kind else "mixed"
    return report


def _stored(model: Any, graph: Any, producer: dict[int, Any], index: int) -> Any:
    """The constant tensor a weight input is read from: itself, or the constant a DEQUANTIZE expands."""
    tensor = graph.tensors[index]
    if tensor.buffer > 0 and model.buffers[tensor.buffer].data is not None:
        return tensor
    op = producer.get(index)
    if op is None:
        return None
    from edge_lstm import tflite_schema as ts

    if ts.model_op_name(model, op) != "DEQUANTIZE":
        return None
    src = graph.tensors[int(op.inputs[0])]
    return src if src.buffer > 0 and model.buffers[src.buffer].data is not None else None


def onnx_weights(data: bytes) -> WeightReport:
    """The stored type of each weight-carrying ONNX node's initializers (through Cast and DequantizeLinear),
    inside subgraphs (a projected LSTM's Scan body) too."""
    import onnx

    model = onnx.load_from_string(data)
    report = WeightReport()
    _graph_weights(model.graph, {}, {}, report)
    return report


def _graph_weights(graph: Any, outer_inits: dict[str, Any], outer_producer: dict[str, Any],
                   report: WeightReport) -> None:
    import onnx

    inits = {**outer_inits, **{i.name: i for i in graph.initializer}}
    producer = {**outer_producer, **{o: n for n in graph.node for o in n.output}}
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _graph_weights(a.g, inits, producer, report)
        if node.op_type in _ONNX_WEIGHT_OPS:
            slots = [1, 2] if node.op_type in ("LSTM", "GRU", "RNN") else [1]
        elif node.op_type.startswith("DynamicQuantize") or node.op_type in ("MatMulInteger", "QLinearMatMul"):
            slots = [1, 2] if node.op_type == "DynamicQuantizeLSTM" else [1]
        else:
            continue
        for slot in slots:
            if slot >= len(node.input) or not node.input[slot]:
                continue
            init = _onnx_stored(node.input[slot], inits, producer)
            if init is None:
                continue
            kind = onnx.TensorProto.DataType.Name(init.data_type)
            report.elements[kind] = report.elements.get(kind, 0) + int(np.prod(init.dims))
            layer = f"{node.op_type} '{node.name}'"
            report.layers[layer] = kind if report.layers.get(layer, kind) == kind else "mixed"


def _onnx_stored(name: str, inits: dict[str, Any], producer: dict[str, Any]) -> Any:
    for _ in range(4):  # through Cast / DequantizeLinear / Transpose chains
        if name in inits:
            return inits[name]
        node = producer.get(name)
        if node is not None and node.op_type == "Constant":
            return next((a.t for a in node.attribute if a.name == "value"), None)
        if node is None or node.op_type not in ("Cast", "DequantizeLinear", "Transpose", "Identity"):
            return None
        name = node.input[0]
    return None


_ONNX_WANT = {Precision.FP16: ("FLOAT16",), Precision.DYNAMIC_INT8: ("INT8", "UINT8"), Precision.INT8: ("INT8",)}


def ensure_precision(fmt: str, data: bytes, precision: Precision, float_layers: list[str] | None = None) -> None:
    """Raise :class:`UnsupportedModel` when the artifact's weights are not stored in ``precision``.

    Every weight-carrying layer must hold its weights in the precision's type,
    except the ``float_layers`` the quantizer reported (by ONNX node name, or
    for TFLite as a count of FULLY_CONNECTED heads); and when there are
    weights, some must be in that precision.
    """
    precision = Precision(precision)
    if precision is Precision.FP32:
        return
    report = onnx_weights(data) if fmt == "onnx" else tflite_weights(data)
    want = (_ONNX_WANT if fmt == "onnx" else _WANT)[precision]
    wrong = {layer: kind for layer, kind in report.layers.items() if kind not in want}
    allowed = set(float_layers or [])
    if fmt == "onnx":  # by node name (ONNX Runtime's quantizer may rewrite a kept Gemm as '<name>_MatMul')
        kept = [f.split("'")[1] for f in allowed if f.count("'") >= 2]
        wrong = {k: v for k, v in wrong.items() if not any(k.split("'")[1].startswith(n) for n in kept)}
    else:  # TFLite ops have no names: the quantizer's float layers are counted, op kind by op kind
        for kind in {f.split()[0] for f in allowed}:
            count = sum(1 for f in allowed if f.split()[0] == kind)
            kept = [k for k in wrong if k.split()[0] == kind and "subgraph" not in k][:count]
            wrong = {k: v for k, v in wrong.items() if k not in kept}
    if wrong or (report.elements and not report.share(want)):
        shown = ", ".join(f"{k}: {v}" for k, v in list(wrong.items())[:6]) or "no weights at all"
        raise UnsupportedModel(
            f"The {precision.value} {fmt} artifact does not hold its weights in {precision.value}: {shown} "
            f"({100 * report.share(want):.0f}% of weight elements are {'/'.join(want)}). The quantizer left these "
            "layers as they were, so the file would be labelled with a precision it does not have.",
            "Export this format at another precision (fp32 or fp16), or the other format; please report the model.",
        )
