"""Quantizing the ONNX ``Scan`` a projected LSTM is captured as (see :mod:`edge_lstm.projection`).

fp16: the Scan computes in float32 (ONNX Runtime has no float16 kernels for its
body's ops on CPU); its weights are stored in float16 and cast once, outside the
loop, by Casts it reads from the outer scope. dynamic-int8: ONNX Runtime's
quantizer quantizes the body's three weight products (input, recurrent,
projection) when it is told to descend into subgraphs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_lstm.projection import PROJECTION_TAG

if TYPE_CHECKING:
    import onnx


def is_projected(node: Any) -> bool:
    """True for a projected LSTM's Scan."""
    return bool(node.op_type == "Scan" and node.doc_string.startswith(PROJECTION_TAG))


def projected_scans(model: onnx.ModelProto) -> list[Any]:
    """The projected-LSTM Scans of the main graph."""
    return [n for n in model.graph.node if is_projected(n)]


def body(node: Any) -> Any:
    """A Scan's body graph."""
    return next(a.g for a in node.attribute if a.name == "body")


def weight_products(model: onnx.ModelProto) -> list[str]:
    """Names of the weight-carrying Gemm nodes inside the projected Scans' bodies (and the ``<name>_MatMul``
    ONNX Runtime's quantizer renames each to when it splits a Gemm before quantizing it)."""
    gemms = [n.name for s in projected_scans(model) for n in body(s).node if n.op_type == "Gemm" and n.name]
    return [*gemms, *(f"{g}_MatMul" for g in gemms)]


def cast_outer_weights(model: onnx.ModelProto) -> int:
    """Each projected Scan reads float32 Casts of the float16 initializers its body uses; returns how many."""
    from onnx import TensorProto, helper

    halves = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16}
    nodes: list[Any] = []
    count = 0
    for node in model.graph.node:
        if is_projected(node):
            g = body(node)
            refs = sorted({i for n in g.node for i in n.input if i in halves})
            for ref in refs:
                nodes.append(helper.make_node("Cast", [ref], [f"{ref}__f32"], name=f"{ref}__to_f32",
                                              to=TensorProto.FLOAT))
                for n in g.node:
                    n.input[:] = [f"{ref}__f32" if i == ref else i for i in n.input]
            count += len(refs)
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def outputs_to_fp16(model: onnx.ModelProto, names: set[str]) -> None:
    """The float32 outputs of the named Scans are cast back to float16 for the float16 graph around them."""
    from onnx import TensorProto, helper

    nodes: list[Any] = []
    for node in model.graph.node:
        nodes.append(node)
        if node.name not in names:
            continue
        for k, out in enumerate(node.output):
            if out:
                node.output[k] = f"{out}__f32"
                nodes.append(helper.make_node("Cast", [f"{out}__f32"], [out], name=f"{out}__to_f16",
                                              to=TensorProto.FLOAT16))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
