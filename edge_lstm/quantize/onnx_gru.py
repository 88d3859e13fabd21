"""GRU and RNN layers as ONNX ``Scan`` loops of ``Gemm`` steps, so ONNX Runtime's dynamic quantizer reaches them.

ONNX Runtime has a quantized LSTM (``DynamicQuantizeLSTM``) but no quantized GRU
or RNN op, and its dynamic quantizer has no entry for either: their weights stay
float32 inside the op. Its ``MatMul``/``Gemm`` entry, though, quantizes any
constant weight product, inside a loop's body too (``EnableSubgraph``). So for the
dynamic-int8 ONNX artifact each GRU/RNN node is rewritten as one ``Scan`` per
direction whose body is the cell's step written with two ``Gemm`` nodes (input and
recurrent weights, read from the outer graph) and elementwise gates; the quantizer
then turns both products into int8-weight ``MatMulInteger`` with per-call
activation quantization, as it does for the LSTM. The float artifacts keep the
GRU/RNN op. Only the cell definitions PyTorch exports are expanded (GRU with
``linear_before_reset=1``, RNN with tanh or ReLU, default activations, no
``clip``, no ``sequence_lens``); any other stays a refusal naming why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

#: doc_string prefix of the Scans written here (quantize.onnx quantizes their body's Gemms)
TAG = "edge-lstm:recurrent-scan"
_DEFAULT_ACTS = {"GRU": (["Sigmoid", "Tanh"], []), "RNN": (["Tanh"], ["Relu"])}


def why_not(node: Any, inits: set[str]) -> str | None:
    """Why a GRU/RNN node cannot be expanded (None when it can)."""
    attrs = {a.name: a for a in node.attribute}
    acts = [s.decode() for s in attrs["activations"].strings] if "activations" in attrs else []
    plain, alt = _DEFAULT_ACTS[node.op_type]
    if acts and acts[: len(plain)] != plain and acts[:1] != alt:
        return f"activations {acts}"
    if "clip" in attrs:
        return "a clip attribute"
    if node.op_type == "GRU" and (attrs["linear_before_reset"].i if "linear_before_reset" in attrs else 0) != 1:
        return "linear_before_reset=0 (PyTorch exports 1)"
    if len(node.input) > 4 and node.input[4]:
        return "a sequence_lens input"
    if any(w not in inits for w in node.input[1:3]) or (len(node.input) > 3 and node.input[3] and
                                                        node.input[3] not in inits):
        return "weights that are not constants"
    return None


def expand(model: onnx.ModelProto) -> list[str]:
    """Rewrite every expandable GRU/RNN node of the main graph in place; return the Gemm names to quantize
    (with the ``<name>_MatMul`` names ONNX Runtime's quantizer gives a Gemm it splits)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes: list[Any] = []
    gemms: list[str] = []
    for k, node in enumerate(graph.node):
        if node.op_type not in ("GRU", "RNN") or why_not(node, set(inits)) is not None:
            nodes.append(node)
            continue
        arrays = {slot: numpy_helper.to_array(inits[node.input[slot]]) for slot in (1, 2)}
        if len(node.input) > 3 and node.input[3]:
            arrays[3] = numpy_helper.to_array(inits[node.input[3]])
        new_nodes, new_inits, names = _layer(node, arrays, f"rs{k}")
        nodes += new_nodes
        graph.initializer.extend(new_inits)
        gemms += names
    del graph.node[:]
    graph.node.extend(nodes)
    return [*gemms, *(f"{g}_MatMul" for g in gemms)]


def _layer(node: Any, arrays: dict[int, Any], tag: str) -> tuple[list[Any], list[Any], list[str]]:
    """The nodes replacing one GRU/RNN node: a Scan per direction, the Y and Y_h outputs stacked as the op's."""
    import numpy as np
    from onnx import helper, numpy_helper

    attrs = {a.name: a for a in node.attribute}
    direction = attrs["direction"].s.decode() if "direction" in attrs else "forward"
    dirs = 2 if direction == "bidirectional" else 1
    acts = [s.decode() for s in attrs["activations"].strings] if "activations" in attrs else []
    relu = node.op_type == "RNN" and acts[:1] == ["Relu"]
    w, r = arrays[1], arrays[2]
    gates = 3 if node.op_type == "GRU" else 1
    hidden = int(r.shape[-1])
    b = arrays.get(3, np.zeros((dirs, 2 * gates * hidden), w.dtype))
    x = node.input[0]
    h0 = node.input[5] if len(node.input) > 5 and node.input[5] else ""
    nodes, inits, gemms = _initial_state(x, h0, dirs, hidden, tag), [], []
    inits.append(numpy_helper.from_array(np.asarray([0], np.int64), f"{tag}_ax0"))
    inits.append(numpy_helper.from_array(np.asarray([1], np.int64), f"{tag}_ax1"))
    ys, hs = [], []
    for d in range(dirs):
        reverse = int(direction == "reverse" or d == 1)
        name = f"{tag}d{d}"
        weights = {"w": w[d], "wb": b[d, : gates * hidden], "r": r[d], "rb": b[d, gates * hidden:]}
        inits += [numpy_helper.from_array(np.ascontiguousarray(v), f"{name}_{k}") for k, v in weights.items()]
        nodes.append(helper.make_node("Gather", [f"{tag}_h0", f"{name}_i"], [f"{name}_h0"], axis=0))
        inits.append(numpy_helper.from_array(np.asarray(d, np.int64), f"{name}_i"))
        body = (_gru_body if node.op_type == "GRU" else _rnn_body)(name, relu)
        scan = helper.make_node("Scan", [f"{name}_h0", x], [f"{name}_hT", f"{name}_y"],
                                name=f"{node.name or tag}/d{d}", num_scan_inputs=1,
                                scan_input_directions=[reverse], scan_output_directions=[reverse], body=body)
        scan.doc_string = f"{TAG}:{node.op_type}"
        nodes += [scan, helper.make_node("Unsqueeze", [f"{name}_y", f"{tag}_ax1"], [f"{name}_y4"]),
                  helper.make_node("Unsqueeze", [f"{name}_hT", f"{tag}_ax0"], [f"{name}_h3"])]
        ys.append(f"{name}_y4")
        hs.append(f"{name}_h3")
        gemms += [f"{name}/input", f"{name}/recurrent"]
    for outs, target in ((ys, node.output[0] if node.output else ""), (hs, node.output[1] if len(node.output) > 1
                                                                       else "")):
        if target:
            nodes.append(helper.make_node("Concat", outs, [target], axis=1 if outs is ys else 0))
    return nodes, inits, gemms


def _initial_state(x: str, h0: str, dirs: int, hidden: int, tag: str) -> list[Any]:
    """``{tag}_h0`` ([dirs, batch, hidden]): the node's initial_h, or zeros for a batch read from ``x``."""
    from onnx import TensorProto, helper

    if h0:
        return [helper.make_node("Identity", [h0], [f"{tag}_h0"])]
    zero = helper.make_tensor(f"{tag}_zero", TensorProto.FLOAT, [1], [0.0])
    return [
        helper.make_node("Shape", [x], [f"{tag}_xs"], start=1, end=2),  # [batch]
        helper.make_node("Constant", [], [f"{tag}_hd"], value=helper.make_tensor(f"{tag}_hdv", TensorProto.INT64,
                                                                                 [2], [dirs, hidden])),
        helper.make_node("Concat", [f"{tag}_xs", f"{tag}_hd"], [f"{tag}_shape3"], axis=0),  # [batch, dirs, hidden]
        helper.make_node("ConstantOfShape", [f"{tag}_shape3"], [f"{tag}_z3"], value=zero),
        helper.make_node("Transpose", [f"{tag}_z3"], [f"{tag}_h0"], perm=[1, 0, 2]),  # [dirs, batch, hidden]
    ]


def _vi(name: str) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _gemms(tag: str) -> list[Any]:
    from onnx import helper

    return [helper.make_node("Gemm", [f"{tag}x", f"{tag}_w", f"{tag}_wb"], [f"{tag}gx"], transB=1, name=f"{tag}/input"),
            helper.make_node("Gemm", [f"{tag}h", f"{tag}_r", f"{tag}_rb"], [f"{tag}gh"], transB=1,
                             name=f"{tag}/recurrent")]


def _gru_body(tag: str, _relu: bool) -> Any:
    """One GRU step, PyTorch's cell (ONNX gate order z, r, n; linear_before_reset): (h, x_t) -> (h', h')."""
    from onnx import helper

    t = tag
    nodes = [
        *_gemms(t),
        helper.make_node("Split", [f"{t}gx"], [f"{t}xz", f"{t}xr", f"{t}xn"], axis=1),
        helper.make_node("Split", [f"{t}gh"], [f"{t}hz", f"{t}hr", f"{t}hn"], axis=1),
        helper.make_node("Add", [f"{t}xz", f"{t}hz"], [f"{t}az"]), helper.make_node("Sigmoid", [f"{t}az"], [f"{t}z"]),
        helper.make_node("Add", [f"{t}xr", f"{t}hr"], [f"{t}ar"]), helper.make_node("Sigmoid", [f"{t}ar"], [f"{t}r"]),
        helper.make_node("Mul", [f"{t}r", f"{t}hn"], [f"{t}rn"]), helper.make_node("Add", [f"{t}xn", f"{t}rn"],
                                                                                     [f"{t}an"]),
        helper.make_node("Tanh", [f"{t}an"], [f"{t}n"]),
        helper.make_node("Sub", [f"{t}h", f"{t}n"], [f"{t}hmn"]),  # h' = n + z (h - n) = (1 - z) n + z h
        helper.make_node("Mul", [f"{t}z", f"{t}hmn"], [f"{t}zd"]), helper.make_node("Add", [f"{t}n", f"{t}zd"],
                                                                                      [f"{t}h2"]),
        helper.make_node("Identity", [f"{t}h2"], [f"{t}y"]),
    ]
    return helper.make_graph(nodes, f"{t}step", [_vi(f"{t}h"), _vi(f"{t}x")], [_vi(f"{t}h2"), _vi(f"{t}y")])


def _rnn_body(tag: str, relu: bool) -> Any:
    """One RNN step: (h, x_t) -> (act(x W + Wb + h R + Rb), the same)."""
    from onnx import helper

    t = tag
    nodes = [*_gemms(t), helper.make_node("Add", [f"{t}gx", f"{t}gh"], [f"{t}a"]),
             helper.make_node("Relu" if relu else "Tanh", [f"{t}a"], [f"{t}h2"]),
             helper.make_node("Identity", [f"{t}h2"], [f"{t}y"])]
    return helper.make_graph(nodes, f"{t}step", [_vi(f"{t}h"), _vi(f"{t}x")], [_vi(f"{t}h2"), _vi(f"{t}y")])
