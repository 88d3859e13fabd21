"""Prepare an ONNX graph for lowering: static shapes, folded constants, fused patterns.

TFLite wants static shapes: the batch axis is fixed to 1, shape-only subgraphs
(``Shape`` -> ``Gather`` -> ``Concat`` -> ``ConstantOfShape`` for zero initial
states) are evaluated to constants, and a few multi-node patterns that TFLite
has one op for are fused (``MatMul`` + ``Add`` into one fully-connected node,
the erf form of GELU into ``Gelu``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_lstm.errors import ShapeError, UnsupportedModel

#: dim_param names taken to be the batch axis (fixed to 1)
_BATCH_DIM = re.compile(r"batch|^n$|^b$|^bs$", re.IGNORECASE)
#: internal op for MatMul + Add with constant weight and bias
FC_OP = "EdgeFullyConnected"


@dataclass
class Graph:
    """A static-shaped ONNX graph ready to lower: nodes, constants and shapes of every value."""

    nodes: list[onnx.NodeProto]
    consts: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    inputs: list[str]
    outputs: list[str]
    consumers: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, np.dtype[Any]] = field(default_factory=dict)

    def recount(self) -> None:
        """Recompute how many times each value is read (by nodes and as graph output)."""
        self.consumers = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers[i] = self.consumers.get(i, 0) + 1
        for o in self.outputs:
            self.consumers[o] = self.consumers.get(o, 0) + 1

    def used(self, name: str) -> bool:
        """True when ``name`` is read by a node or is a graph output."""
        return bool(name) and self.consumers.get(name, 0) > 0


def prepare(proto: onnx.ModelProto) -> Graph:
    """Fix the batch to 1, infer static shapes, fold constants, fuse patterns, drop dead nodes."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inits = {i.name for i in model.graph.initializer}
    _fix_batch(model, inits)
    del model.graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # inference names the node whose shapes disagree
        raise ShapeError(f"The ONNX graph's shapes do not agree with batch 1: {e}".splitlines()[0]) from e
    shapes = _value_shapes(model)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    graph = Graph(
        nodes=list(model.graph.node),
        consts=consts,
        shapes=shapes,
        inputs=[i.name for i in model.graph.input if i.name not in inits],
        outputs=[o.name for o in model.graph.output],
        dtypes={
            i.name: np.dtype(helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
            for i in model.graph.input
            if i.name not in inits
        },
    )
    _fold(graph, model)
    eliminate_dead(graph)
    _fuse_gelu(graph)
    _fuse_matmul_add(graph)
    eliminate_dead(graph)
    return graph


def _fix_batch(model: onnx.ModelProto, inits: set[str]) -> None:
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")  # inference recomputes it from the inputs
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if d.dim_param and _BATCH_DIM.search(d.dim_param):
                d.Clear()
                d.dim_value = 1
                continue
            shown = "x".join(x.dim_param or str(x.dim_value or "?") for x in dims)
            raise ShapeError(
                f"Input '{vi.name}' has a dynamic dimension '{d.dim_param or '?'}' at axis {axis} "
                f"(shape {shown}); TFLite needs a static sequence length.",
                "Export with a fixed window, e.g. --input-shape 1x96x1 (batch x time x features).",
            )


def _value_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def _fold(graph: Graph, model: onnx.ModelProto) -> None:
    """One pass in graph order: evaluate nodes whose inputs are known, infer shapes the first pass missed.

    A ``Shape`` of a static value is a constant, and so is everything computed
    only from constants; shapes that depended on such values become static.
    """
    kept = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    for node in graph.nodes:
        value = _try_eval(node, graph)
        if value is None:
            kept.append(node)
            if any(o and o not in graph.shapes for o in node.output):
                _infer_node(graph, node, model, opset)
            continue
        for name, arr in zip(node.output, value, strict=False):
            if name:
                graph.consts[name] = arr
                graph.shapes[name] = tuple(arr.shape)
    graph.nodes = kept


def _infer_node(graph: Graph, node: onnx.NodeProto, model: onnx.ModelProto, opset: int) -> None:
    types = {}
    for i in node.input:
        if i and i in graph.shapes:
            dtype = graph.consts[i].dtype if i in graph.consts else np.dtype(np.float32)
            elem = helper.np_dtype_to_tensor_dtype(dtype)
            types[i] = helper.make_tensor_type_proto(elem, list(graph.shapes[i]))
    data = {i: numpy_helper.from_array(graph.consts[i], i) for i in node.input if i in graph.consts}
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    try:
        out = onnx.shape_inference.infer_node_outputs(schema, node, types, data, opset_imports=model.opset_import)
    except Exception:  # left unknown; the lowering that needs the shape reports the node
        return
    for name, tp in out.items():
        dims = tp.tensor_type.shape.dim
        if tp.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            graph.shapes[name] = tuple(int(d.dim_value) for d in dims)


def _try_eval(node: onnx.NodeProto, graph: Graph) -> list[np.ndarray] | None:
    if node.op_type == "Shape" and node.input[0] in graph.shapes and not node.attribute:
        return [np.array(graph.shapes[node.input[0]], dtype=np.int64)]
    if node.op_type in ("LSTM", "GRU", "RNN", "Scan", "Loop"):
        return None
    if any(i and i not in graph.consts for i in node.input):
        return None
    if node.op_type == "Constant" and node.attribute[0].name == "value":
        return [numpy_helper.to_array(node.attribute[0].t)]
    from onnx.reference import ReferenceEvaluator

    feeds = {i: graph.consts[i] for i in node.input if i}
    return [np.asarray(v) for v in ReferenceEvaluator(node).run(None, feeds)]


def _single_consumer(graph: Graph, name: str) -> onnx.NodeProto | None:
    users = [n for n in graph.nodes if name in n.input]
    if len(users) != 1 or name in graph.outputs:
        return None
    return users[0]


def _scalar(graph: Graph, name: str) -> float | None:
    arr = graph.consts.get(name)
    if arr is None or arr.size != 1:
        return None
    return float(arr.reshape(-1)[0])


def _fuse_gelu(graph: Graph) -> None:
    """Div(x, √2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5) becomes one ``Gelu`` node."""
    for div in [n for n in graph.nodes if n.op_type == "Div"]:
        if not np.isclose(_scalar(graph, div.input[1]) or 0.0, np.sqrt(2.0), rtol=1e-4):
            continue
        x = div.input[0]
        erf = _single_consumer(graph, div.output[0])
        add = erf and _single_consumer(graph, erf.output[0])
        mul = add and _single_consumer(graph, add.output[0])
        half = mul and _single_consumer(graph, mul.output[0])
        if not (erf and add and mul and half) or erf.op_type != "Erf" or add.op_type != "Add":
            continue
        if mul.op_type != "Mul" or x not in mul.input or half.op_type != "Mul":
            continue
        other = [i for i in add.input if i != erf.output[0]]
        halves = [i for i in half.input if i != mul.output[0]]
        if _scalar(graph, other[0]) != 1.0 or _scalar(graph, halves[0]) != 0.5:
            continue
        gelu = helper.make_node("Gelu", [x], [half.output[0]], name=(div.name or "gelu") + "_gelu")
        graph.nodes[graph.nodes.index(half)] = gelu
        for n in (div, erf, add, mul):
            graph.nodes.remove(n)


def _fuse_matmul_add(graph: Graph) -> None:
    """MatMul(x, W const) followed by Add(bias const [N]) becomes one fully-connected node."""
    for mm in [n for n in graph.nodes if n.op_type == "MatMul"]:
        w = graph.consts.get(mm.input[1])
        if w is None or w.ndim != 2 or mm.input[0] in graph.consts:
            continue
        add = _single_consumer(graph, mm.output[0])
        if add is None or add.op_type != "Add":
            continue
        other = next(i for i in add.input if i != mm.output[0])
        b = graph.consts.get(other)
        if b is None or b.size != w.shape[1] or b.shape[-1:] != (w.shape[1],):
            continue
        fc = helper.make_node(FC_OP, [mm.input[0], mm.input[1], other], [add.output[0]], name=mm.name or "fc")
        graph.nodes[graph.nodes.index(add)] = fc
        graph.nodes.remove(mm)


def eliminate_dead(graph: Graph) -> None:
    """Drop nodes none of whose outputs is used; recount consumers."""
    while True:
        graph.recount()
        live = [n for n in graph.nodes if any(graph.used(o) for o in n.output)]
        if len(live) == len(graph.nodes):
            break
        graph.nodes = live
    graph.inputs = [i for i in graph.inputs if graph.used(i)]


def state_to_variables(graph: Graph, fusable: Callable[[onnx.NodeProto], bool] = lambda _n: True) -> list[str]:
    """Streaming, fused: drop explicit state I/O; LSTMs then keep their state in variable tensors.

    Graph inputs that feed only the initial states of recurrent layers ``fusable``
    accepts (those the fused op will hold) are removed, and graph outputs computed
    only from their final states are dropped; the others keep their state as I/O.
    Returns the removed input names.
    """
    rec = [n for n in graph.nodes if (n.op_type in _STATE_SLOTS or projected_scan(n)) and fusable(n)]
    state_inputs = [i for i in graph.inputs[1:] if _feeds_only_states(graph, i, rec)]
    if not state_inputs:
        return []
    for n in rec:
        slots, _ = _STATE_SLOTS.get(n.op_type, ((0, 1), (0, 1)))
        for slot in slots:
            if len(n.input) > slot and n.op_type == "Scan":  # a Scan's state inputs are required: zeros
                zero = f"{n.input[slot]}__zero_state"
                graph.consts[zero] = np.zeros(graph.shapes[n.input[slot]], np.float32)
                graph.shapes[zero] = graph.shapes[n.input[slot]]
                n.input[slot] = zero
            elif len(n.input) > slot:
                n.input[slot] = ""
    final = {n.output[k] for n in rec for k in _STATE_SLOTS.get(n.op_type, ((), (0, 1)))[1]
             if len(n.output) > k and n.output[k]}
    graph.outputs = [o for o in graph.outputs if not _derived_only_from(graph, o, final)]
    eliminate_dead(graph)
    return state_inputs


#: op -> (initial-state input slots, final-state output slots); a projected LSTM's Scan is (0, 1), (0, 1)
_STATE_SLOTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {"LSTM": ((5, 6), (1, 2)), "RNN": ((5,), (1,))}


def projected_scan(node: onnx.NodeProto) -> bool:
    """True for the Scan a projected LSTM (proj_size) is captured as."""
    from edge_lstm.projection import PROJECTION_TAG

    return node.op_type == "Scan" and node.doc_string.startswith(PROJECTION_TAG)


def _feeds_only_states(graph: Graph, name: str, rec: list[onnx.NodeProto]) -> bool:
    frontier, seen = [name], set()
    while frontier:
        v = frontier.pop()
        for n in graph.nodes:
            if v not in n.input or n.name in seen:
                continue
            seen.add(n.name)
            if n in rec:
                slots = _STATE_SLOTS.get(n.op_type, ((0, 1), ()))[0]
                if any(n.input[k] == v for k in range(len(n.input)) if k not in slots):
                    return False
            elif n.op_type in ("Slice", "Gather", "Squeeze", "Unsqueeze", "Reshape", "Split", "Identity"):
                frontier.extend(o for o in n.output if o)
            else:
                return False
    return True


def _derived_only_from(graph: Graph, name: str, sources: set[str]) -> bool:
    if name in sources:
        return True
    producer = next((n for n in graph.nodes if name in n.output), None)
    if producer is None or producer.op_type in ("LSTM", "GRU", "RNN", "Scan"):
        return False
    ins = [i for i in producer.input if i and i not in graph.consts]
    return bool(ins) and all(_derived_only_from(graph, i, sources) for i in ins)


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """A node attribute's Python value, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def require(cond: bool, node: onnx.NodeProto, what: str) -> None:
    """Raise :class:`UnsupportedModel` naming the node when ``cond`` is false."""
    if not cond:
        raise UnsupportedModel(
            f"Node '{node.name or node.op_type}' ({node.op_type}) uses {what}, "
            "which the TFLite lowering does not support.",
            "Export the model with plain nn.LSTM/nn.GRU layers and Linear/LayerNorm/activation heads.",
        )
