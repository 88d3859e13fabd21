"""One lowering run: prepare the graph, lower every node, name the I/O, write the file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx

from edge_lstm.lower.tflite.context import Context
from edge_lstm.lower.tflite.graph import prepare, projected_scan, state_to_variables
from edge_lstm.lower.tflite.lstm import kernel_blocker
from edge_lstm.lower.tflite.ops import lower_node
from edge_lstm.lower.tflite.ops_nn import fold_batchnorm
from edge_lstm.lower.tflite.result import LoweredTFLite


def build(proto: onnx.ModelProto, lowering: str, streaming: bool, int8: bool = False,
          micro: bool = False, dynamic: bool = False) -> LoweredTFLite:
    """Lower ``proto`` with ``lowering`` ("fused" | "loop" | "unrolled"); see :func:`edge_lstm.lower.tflite.lower`."""
    graph = prepare(proto)
    fold_batchnorm(graph)
    notes: list[str] = []
    # full int8 too: the fused op's integer kernel keeps the cell state in int16; as I/O the state would be int8
    removed = state_to_variables(graph, _fusable(int8, micro)) if streaming and lowering == "fused" else []
    if removed:
        notes.append(
            f"Streaming: state inputs {', '.join(removed)} became variable tensors; the state persists across "
            "invoke() calls until reset_all_variables()."
        )
    ctx = Context(graph, lowering, lower_node, int8=int8, micro=micro, dynamic=dynamic)
    inputs = [ctx.output(name, dtype=graph.dtypes.get(name, np.float32)) for name in graph.inputs]
    for node in graph.nodes:
        if id(node) not in ctx.done:
            lower_node(ctx, node)
    outputs = [_named_output(ctx, name, {i.index for i in inputs}) for name in graph.outputs]
    notes.extend(ctx.notes)
    used = ctx.used_lowerings or {lowering}
    if not ctx.used_lowerings:
        notes.append("The ONNX graph has no recurrent (LSTM/GRU/RNN) layer: lowered op by op.")
    variable = bool(ctx.variable_state)
    if variable and not streaming:
        notes.append(
            "Fused LSTM/RNN state lives in variable tensors: reset them (reset_all_variables()) before each "
            "independent window; edge-lstm's runners do."
        )
    data = ctx.writer.finish([t.index for t in inputs], [t.index for t in outputs])
    name = "+".join(sorted(used)) if len(used) > 1 else next(iter(used))
    reason = (f"{name}, as asked (--lowering {lowering})" if name == lowering
              else f"{name}: {lowering} was asked for; the notes below say which layers and why")
    return LoweredTFLite(
        data=data,
        lowering=name,
        notes=[f"lowering: {reason}", *notes],
        input_names=list(graph.inputs),
        output_names=list(graph.outputs),
        op_counts=ctx.writer.op_counts(),
        streaming=streaming,
        variable_state=variable,
        requested=lowering,
        reason=reason,
    )


def _fusable(int8: bool, micro: bool) -> Callable[[onnx.NodeProto], bool]:
    """Whether the fused op will hold a recurrent node (an ``LSTM``/``RNN`` node or a projected LSTM's Scan)."""
    def fusable(node: onnx.NodeProto) -> bool:
        kind = "lstm" if projected_scan(node) else node.op_type.lower()
        return kernel_blocker(kind, projected_scan(node), int8, micro) is None

    return fusable


def with_reason(lowered: LoweredTFLite, requested: str, reason: str) -> LoweredTFLite:
    """``lowered`` with the lowering that was asked for and why this one was used (first in the notes)."""
    rest = [n for n in lowered.notes if not n.startswith("lowering: ")]
    return replace(lowered, requested=requested, reason=reason, notes=[f"lowering: {reason}", *rest])


def _named_output(ctx: Context, name: str, input_indices: set[int]):  # type: ignore[no-untyped-def]
    """The output tensor, carrying the ONNX output's name (a copy when the tensor is shared)."""
    ref = ctx.tensor(name)
    tensor = ctx.writer.tensors[ref.index]
    if ref.index in input_indices or tensor.buffer or (ref.name in ctx.graph.outputs and ref.name != name):
        ref = ctx.reshape(ref, ref.shape, name, out=ctx.writer.add_tensor(name, ref.shape))
        ctx.values[name] = ref
        return ref
    tensor.name = name
    return ref
