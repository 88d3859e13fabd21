"""One lowering run: prepare the graph, lower every node, name the I/O, write the file."""

from __future__ import annotations

import numpy as np
import onnx

from edge_lstm.lower.tflite import LoweredTFLite
from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.graph import prepare, state_to_variables
from edge_lstm.lower.tflite.ops import lower_node


def build(proto: onnx.ModelProto, lowering: str, streaming: bool) -> LoweredTFLite:
    """Lower ``proto`` with ``lowering`` ("fused" | "unrolled"); see :func:`edge_lstm.lower.tflite.lower`."""
    graph = prepare(proto)
    notes: list[str] = []
    removed = state_to_variables(graph) if streaming and lowering == "fused" else []
    if removed:
        notes.append(
            f"Streaming: state inputs {', '.join(removed)} became variable tensors; the state persists across "
            "invoke() calls until reset_all_variables()."
        )
    ctx = Context(graph, lowering)
    inputs = [ctx.output(name, dtype=graph.dtypes.get(name, np.float32)) for name in graph.inputs]
    for node in graph.nodes:
        if id(node) not in ctx.done:
            lower_node(ctx, node)
    outputs = [_named_output(ctx, name, {i.index for i in inputs}) for name in graph.outputs]
    notes.extend(ctx.notes)
    used = ctx.used_lowerings or {"unrolled"}
    if not ctx.used_lowerings and lowering == "fused":
        notes.append("The ONNX graph has no LSTM/GRU op (e.g. proj_size LSTMs captured as explicit cells): "
                     "lowered op by op, unrolled.")
    variable = "fused" in used
    if variable and not streaming:
        notes.append(
            "Fused LSTM state lives in variable tensors: reset them (reset_all_variables()) before each "
            "independent window; edge-lstm's runners do."
        )
    data = ctx.writer.finish([t.index for t in inputs], [t.index for t in outputs])
    return LoweredTFLite(
        data=data,
        lowering="+".join(sorted(used)) if len(used) > 1 else next(iter(used)),
        notes=notes,
        input_names=list(graph.inputs),
        output_names=list(graph.outputs),
        op_counts=ctx.writer.op_counts(),
        streaming=streaming,
        variable_state=variable,
    )


def _named_output(ctx: Context, name: str, input_indices: set[int]):  # type: ignore[no-untyped-def]
    """The output tensor, carrying the ONNX output's name (a copy when the tensor is shared)."""
    ref = ctx.values[name]
    tensor = ctx.writer.tensors[ref.index]
    if ref.index in input_indices or tensor.buffer or (ref.name in ctx.graph.outputs and ref.name != name):
        ref = ctx.reshape(ref, ref.shape, name, out=ctx.writer.add_tensor(name, ref.shape))
        ctx.values[name] = ref
        return ref
    tensor.name = name
    return ref


_ = OP
