"""LSTMs with ``proj_size`` (LSTMP): ONNX's LSTM op has no projection, so each layer direction is captured as an
ONNX ``Scan`` whose body is one step of the projected cell, weights stored once.

The projection is read from the graph, not from the module: during export an
``aten::lstm`` symbolic (:func:`projection_symbolic`) writes a projected LSTM as
one placeholder node ``edge_lstm::LSTMP`` with its weights, and
:func:`expand_projections` replaces it with standard ONNX: per layer and
direction a ``Scan`` over time steps (``[T, B, I]``) with the state
``(h [B, P], c [B, H])``, reading the layer's weights from outer-scope
initializers:

    gates = x W_ih^T + h W_hh^T + (b_ih + b_hh)      (PyTorch's gate order i, f, g, o)
    c'    = sigmoid(f) c + sigmoid(i) tanh(g)
    h'    = (sigmoid(o) tanh(c')) W_hr^T

So TorchScript, ``.pt2`` programs and modules capture the same graph, ONNX Runtime
runs it, and every weight is stored once (the file is within a few percent of
the float parameter bytes, where a per-step unroll stored them once a step).
The Scan carries :data:`PROJECTION_TAG` and the names of its weights (JSON) in
its ``doc_string``, so the TFLite lowering turns it into a fused LSTM op with
projection inputs or a WHILE loop, and :func:`recurrent_slots` tells a reader
which inputs and outputs are the recurrent state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

#: doc_string prefix of the ONNX Scan a projected LSTM layer direction is captured as; JSON metadata follows
PROJECTION_TAG = "edge-lstm:lstm-projection "
#: the placeholder op the symbolic writes (removed by :func:`expand_projections`)
PLACEHOLDER = ("edge_lstm", "LSTMP")

if TYPE_CHECKING:
    import onnx


@contextmanager
def projection_symbolic(opset: int) -> Iterator[None]:
    """Inside the block, PyTorch's exporter writes projected ``aten::lstm`` calls as ``edge_lstm::LSTMP``."""
    import torch

    torch.onnx.register_custom_op_symbolic("aten::lstm", _lstm_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::lstm", opset)


def _lstm_symbolic(g: Any, *args: Any) -> Any:
    from torch.onnx import symbolic_helper as sh
    from torch.onnx._internal.torchscript_exporter import symbolic_opset9

    if len(args) != 9 or not sh._is_tensor_list(args[1]):  # lstm.data (packed sequences): PyTorch's own path
        return symbolic_opset9.lstm(g, *args)
    x, hidden, weight, has_biases, num_layers, _dropout, _train, bidirectional, batch_first = args
    weights = sh._unpack_list(weight)
    layers, dirs = sh._get_const(num_layers, "i", "num_layers"), 2 if sh._get_const(bidirectional, "i", "") else 1
    biased = bool(sh._get_const(has_biases, "i", "has_biases"))
    if len(weights) == layers * dirs * (4 if biased else 2):  # no projection
        return symbolic_opset9.lstm(g, *args)
    hx = sh._unpack_list(hidden)
    outs = g.op(
        f"{PLACEHOLDER[0]}::{PLACEHOLDER[1]}", x, *hx, *weights, num_layers_i=layers,
        bidirectional_i=dirs - 1, batch_first_i=int(bool(sh._get_const(batch_first, "i", ""))),
        has_biases_i=int(biased), outputs=3,
    )
    # typed outputs: the exporter's shape inference knows nothing of the placeholder (and says so on stderr)
    sizes, proj = x.type().sizes(), int(weights[-1].type().sizes()[0])  # type: ignore[attr-defined]
    if sizes is not None:
        seq = [*sizes[:-1], dirs * proj]
        outs[0].setType(x.type().with_sizes(seq))
        for out, state in zip(outs[1:], hx, strict=True):
            out.setType(state.type())
    return outs


def has_placeholders(proto: onnx.ModelProto) -> bool:
    """True when the exported graph has projected-LSTM placeholders to expand."""
    return any((n.domain, n.op_type) == PLACEHOLDER for n in proto.graph.node)


def expand_projections(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every ``edge_lstm::LSTMP`` placeholder with standard ONNX (Scans over time); see the module doc."""
    from onnx import helper

    from edge_lstm.errors import UnsupportedModel

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    nodes: list[Any] = []
    replaced: set[str] = set()
    for k, node in enumerate(graph.node):
        if (node.domain, node.op_type) != PLACEHOLDER:
            nodes.append(node)
            continue
        missing = [w for w in node.input[3:] if w not in inits]
        if missing:
            raise UnsupportedModel(
                f"The projected LSTM '{node.name}' has weights that are not constants ({', '.join(missing[:3])}).",
                "Export the model in eval mode with its nn.LSTM weights as parameters.",
            )
        new_nodes, new_inits = _expand(node, inits, f"p{k}", _consumed(proto))
        nodes.extend(new_nodes)
        graph.initializer.extend(new_inits)
        replaced.update(node.input[3:])
    del graph.node[:]
    graph.node.extend(nodes)
    produced = {o for n in graph.node for o in n.output}
    infos = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    used = {i for n in graph.node for i in n.input} | _outer_refs(graph)
    kept = [i for i in graph.initializer if i.name not in replaced or i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("", 17))
    keep = [o for o in proto.opset_import if o.domain != PLACEHOLDER[0]]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    return proto


def _consumed(proto: onnx.ModelProto) -> set[str]:
    """Values some node reads or the graph outputs."""
    return {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}


def _outer_refs(graph: Any) -> set[str]:
    """Names the subgraphs of ``graph``'s nodes read."""
    out: set[str] = set()
    for n in graph.node:
        for a in n.attribute:
            if a.type == a.GRAPH:
                out |= {i for sub in a.g.node for i in sub.input}
    return out


def _attr(node: Any, name: str) -> int:
    return next(int(a.i) for a in node.attribute if a.name == name)


def _expand(node: Any, inits: dict[str, Any], tag: str, consumed: set[str]) -> tuple[list[Any], list[Any]]:
    """The standard-ONNX nodes and the initializers replacing one placeholder."""
    from onnx import helper, numpy_helper

    layers, dirs = _attr(node, "num_layers"), _attr(node, "bidirectional") + 1
    batch_first, biased = _attr(node, "batch_first"), _attr(node, "has_biases")
    x, h0, c0 = node.input[:3]
    per = 5 if biased else 3
    ws = [numpy_helper.to_array(inits[w]) for w in node.input[3:]]
    nodes: list[Any] = []
    new_inits: list[Any] = []
    seq = f"{tag}_x_tm"
    nodes.append(helper.make_node("Transpose", [x], [seq], perm=[1, 0, 2]) if batch_first
                 else helper.make_node("Identity", [x], [seq]))
    finals_h, finals_c = [], []
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            idx = layer * dirs + d
            group = ws[idx * per : (idx + 1) * per]
            w_ih, w_hh = group[0], group[1]
            bias = (group[2] + group[3]) if biased else 0 * w_ih[:, 0]
            w_hr = group[-1]
            name = f"{tag}l{layer}d{d}"
            arrays = {"w": w_ih, "r": w_hh, "b": bias.astype(w_ih.dtype), "p": w_hr}
            names = {k: f"{name}_{k}" for k in arrays}
            new_inits += [numpy_helper.from_array(v, names[k]) for k, v in arrays.items()]
            for part, state in (("h0", h0), ("c0", c0)):
                nodes.append(helper.make_node("Gather", [state, f"{name}_idx"], [f"{name}_{part}"], axis=0))
            new_inits.append(numpy_helper.from_array(_int64(idx), f"{name}_idx"))
            meta = {**names, "hidden": int(w_hh.shape[0] // 4), "proj": int(w_hr.shape[0]), "reverse": d}
            scan = helper.make_node(
                "Scan", [f"{name}_h0", f"{name}_c0", seq], [f"{name}_hT", f"{name}_cT", f"{name}_y"],
                name=f"{node.name or tag}/l{layer}_d{d}", num_scan_inputs=1, scan_input_directions=[d],
                scan_output_directions=[d], body=_body(names, name),
            )
            scan.doc_string = PROJECTION_TAG + json.dumps(meta, sort_keys=True)
            nodes.append(scan)
            outs.append(f"{name}_y")
            finals_h.append(f"{name}_hT")
            finals_c.append(f"{name}_cT")
        nxt = f"{tag}_l{layer}_seq"
        nodes.append(helper.make_node("Concat", outs, [nxt], axis=-1) if dirs == 2
                     else helper.make_node("Identity", outs, [nxt]))
        seq = nxt
    out, hy, cy = node.output
    nodes.append(helper.make_node("Transpose", [seq], [out], perm=[1, 0, 2]) if batch_first
                 else helper.make_node("Identity", [seq], [out]))
    for finals, target in ((finals_h, hy), (finals_c, cy)):
        if target and target in consumed:  # the final states only when the model reads them
            axes = f"{tag}_axes0"
            lifted = [f"{f}_u" for f in finals]
            nodes += [helper.make_node("Unsqueeze", [f, axes], [u]) for f, u in zip(finals, lifted, strict=True)]
            nodes.append(helper.make_node("Concat", lifted, [target], axis=0))
    new_inits.append(numpy_helper.from_array(_int64([0]), f"{tag}_axes0"))
    return nodes, new_inits


def _int64(v: Any) -> Any:
    import numpy as np

    return np.asarray(v, np.int64)


def _body(names: dict[str, str], tag: str) -> Any:
    """One projected-LSTM step: (h, c, x_t) -> (h', c', h')."""
    from onnx import TensorProto, helper

    def vi(n: str) -> Any:
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, None)

    h, c, x = f"{tag}h", f"{tag}c", f"{tag}x"
    s = [f"{tag}{k}" for k in ("gx", "gs", "i", "f", "g", "o", "si", "sf", "tg", "so", "fc", "ig", "c2", "tc",
                               "m", "h2", "y")]
    gx, gates, i, f, g, o, si, sf, tg, so, fc, ig, c2, tc, m, h2, y = s
    nodes = [
        helper.make_node("Gemm", [x, names["w"]], [gx], transB=1, name=f"{tag}/input"),
        helper.make_node("Gemm", [h, names["r"], names["b"]], [f"{tag}gh"], transB=1, name=f"{tag}/recurrent"),
        helper.make_node("Add", [gx, f"{tag}gh"], [gates]),
        helper.make_node("Split", [gates], [i, f, g, o], axis=1),
        helper.make_node("Sigmoid", [i], [si]), helper.make_node("Sigmoid", [f], [sf]),
        helper.make_node("Tanh", [g], [tg]), helper.make_node("Sigmoid", [o], [so]),
        helper.make_node("Mul", [sf, c], [fc]), helper.make_node("Mul", [si, tg], [ig]),
        helper.make_node("Add", [fc, ig], [c2]), helper.make_node("Tanh", [c2], [tc]),
        helper.make_node("Mul", [so, tc], [m]),
        helper.make_node("Gemm", [m, names["p"]], [h2], transB=1, name=f"{tag}/projection"),
        helper.make_node("Identity", [h2], [y]),
    ]
    return helper.make_graph(nodes, f"{tag}step", [vi(h), vi(c), vi(x)], [vi(h2), vi(c2), vi(y)])


def recurrent_slots(node: onnx.NodeProto) -> tuple[int, tuple[int, ...], tuple[int, ...], int] | None:
    """For a recurrent node: (sequence input slot, initial-state input slots, final-state output slots, sequence
    output slot); None for other nodes. LSTM (5, 6 -> 1, 2), GRU and RNN (5 -> 1), a projected LSTM's Scan
    (0, 1 -> 0, 1; its input and output sequences are slot 2)."""
    if node.op_type == "LSTM":
        return 0, (5, 6), (1, 2), 0
    if node.op_type in ("GRU", "RNN"):
        return 0, (5,), (1,), 0
    if node.op_type == "Scan" and node.doc_string.startswith(PROJECTION_TAG):
        return 2, (0, 1), (0, 1), 2
    return None


def has_projection(module: Any) -> bool:
    """True when any ``nn.LSTM`` inside uses ``proj_size``."""
    from torch import nn

    return any(isinstance(m, nn.LSTM) and m.proj_size > 0 for m in module.modules())
