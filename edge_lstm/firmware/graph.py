"""ONNX (the captured graph) -> :class:`~edge_lstm.firmware.program.Program` for the C generator.

The graph is read at batch 1. Every value that does not depend on the input
(initial states built from ``Shape``/``ConstantOfShape``, constants) is folded
by ONNX's own reference evaluator, which also gives every value's static shape.
The remaining nodes are walked in order with the position of the time axis
tracked through each one, so the window graph becomes a per-time-step program:
recurrent layers keep their state in static buffers, layout ops (transpose,
squeeze, reshape) become aliases when they keep a step's elements in order, and
selecting the last step marks the head as run "after the step". Anything the C
generator cannot express (an op outside :data:`SUPPORTED_OPS`, an op that mixes
time steps, a bidirectional layer) is collected and refused once, naming every
node (exit code 5).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NoReturn

import numpy as np

from edge_lstm.errors import UnsupportedModel
from edge_lstm.firmware import graph_ops  # noqa: F401 - importing it registers the op handlers in TABLE
from edge_lstm.firmware.graph_base import TABLE, Builder, Val, attr, map_axis
from edge_lstm.firmware.program import Output, Program


def supported_ops() -> list[str]:
    """The ONNX ops the C generator can run on the input's path (folded constant subgraphs may use any op)."""
    return sorted(TABLE)


def build_program(proto: Any) -> Program:
    """The per-step program of ``proto``; :class:`UnsupportedModel` (exit 5) lists everything it cannot express."""
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    const_names = _constant_names(graph, inits)
    dynamic = [n for n in graph.node if not all(o in const_names for o in n.output if o)]
    missing = [f"node '{n.name or n.output[0]}' uses ONNX op '{n.op_type}'" for n in dynamic
               if n.op_type not in TABLE or n.domain not in ("", "ai.onnx")]
    if len(inputs) != 1:
        missing.insert(0, f"the model takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); the C "
                          "generator takes one input per time step and keeps the recurrent state inside")
    if len(inputs) == 1 and inputs[0].type.tensor_type.elem_type != 1:
        missing.insert(0, f"input '{inputs[0].name}' is not float32: the C API takes float readings (a token-id "
                          "model needs its embedding lookup outside)")
    if missing:
        _raise(missing)
    x = inputs[0]
    shapes, values = _evaluate(proto, x)
    consts = {k: v for k, v in values.items() if k in const_names}
    b = Builder(proto, shapes, consts)
    taxis = _input_time_axis(graph, shapes, x.name, consts)
    if taxis is None:
        _raise(["no LSTM, GRU or RNN layer is fed by the input through per-step ops, so there is no time axis "
                "to step over"])
    xshape = shapes[x.name]
    if any(d != 1 for d in xshape[:taxis]):
        _raise([f"input '{x.name}' of shape {xshape} has axes of size > 1 before its time axis {taxis}"])
    b.values[x.name] = Val("seq", xshape, taxis, "x")
    for node in dynamic:
        if b.inputs_ok(node):
            TABLE[node.op_type](b, node)
        else:  # one problem is reported once, not again by every node downstream
            b.bad.update(o for o in node.output if o)
    outputs = _outputs(b, graph)
    if b.problems:
        _raise(b.problems)
    return Program(x.name, xshape, taxis, int(xshape[taxis]), b.values[x.name].size, b.ops, b.buffers, outputs,
                   Counter(n.op_type for n in graph.node))


def _raise(problems: list[str]) -> NoReturn:
    raise UnsupportedModel(
        "The dependency-free C generator cannot express this model:\n  " + "\n  ".join(problems),
        f"Supported ops on the input's path: {', '.join(supported_ops())}. Recurrent layers must be forward "
        "(not bidirectional), and only the last time step can be selected. The TFLite Micro files (tflm/) do not "
        "need the generator.",
    )


def _constant_names(graph: Any, inits: set[str]) -> set[str]:
    """Values that do not depend on the input's contents (``Shape`` depends only on its static shape)."""
    const = set(inits)
    for n in graph.node:
        if n.op_type in ("Constant", "Shape", "Size") or all(i in const for i in n.input if i):
            const.update(o for o in n.output if o)
    return const


def _evaluate(proto: Any, x: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, np.ndarray]]:
    """Every value's shape and content at batch 1 with a zero input.

    ONNX Runtime runs the graph with every intermediate value as an extra output (typed by ONNX shape
    inference); when it cannot, ONNX's reference evaluator does. The contents matter only for the values that
    do not depend on the input (folded constants); the shapes for all.
    """
    import onnx

    dims = [d.dim_value if d.dim_value > 0 else 1 for d in x.type.tensor_type.shape.dim]
    feed = np.zeros(dims, onnx.helper.tensor_dtype_to_np_dtype(x.type.tensor_type.elem_type))
    names = [o for n in proto.graph.node for o in n.output if o]
    try:
        got = _run_onnxruntime(proto, names, x.name, feed)
    except Exception:  # a graph ONNX Runtime will not load: the reference evaluator names what it cannot run
        from onnx.reference import ReferenceEvaluator

        try:
            ran: Any = ReferenceEvaluator(proto).run(names, {x.name: feed})
            got = [np.asarray(v) for v in ran]
        except Exception as e:
            raise UnsupportedModel(f"Neither ONNX Runtime nor ONNX's reference evaluator could run the graph at "
                                   f"batch 1: {e}", "The C generator reads models captured by edge-lstm "
                                   "(edge_lstm.capture).") from e
    values = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    values.update({n: np.asarray(v) for n, v in zip(names, got, strict=True)})
    values[x.name] = feed
    return {k: tuple(int(d) for d in v.shape) for k, v in values.items()}, values


def _run_onnxruntime(proto: Any, names: list[str], x: str, feed: np.ndarray) -> list[np.ndarray]:
    import onnx
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, types[n], None) for n in names if n not in known)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {x: feed}), strict=True))
    return [out[n] for n in names]


_PASS = ("Identity", "Dropout", "Cast", "Relu", "Tanh", "Sigmoid", "LeakyRelu", "Elu", "Erf", "Neg", "Abs",
         "MatMul", "Add", "Sub", "Mul", "Div", "LayerNormalization", "Clip", "Softplus", "HardSigmoid")


def _input_time_axis(graph: Any, shapes: dict[str, tuple[int, ...]], x: str,
                     consts: dict[str, np.ndarray]) -> int | None:
    """The input's time axis: traced back from the first recurrent layer's input (its axis 0 is time)."""
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type not in ("LSTM", "GRU", "RNN"):
            continue
        name, axis = node.input[0], 0
        axis_or_none: int | None = axis
        while name != x and axis_or_none is not None:
            axis = axis_or_none
            prod = producer.get(name)
            if prod is None:
                break
            dyn = [i for i in prod.input if i and i not in consts]
            if not dyn:
                break
            if prod.op_type == "Transpose":
                perm = list(attr(prod, "perm", list(range(len(shapes[name])))[::-1]))
                axis_or_none = int(perm[axis])
            elif prod.op_type in ("Squeeze", "Unsqueeze", "Reshape", "Flatten"):
                axis_or_none = map_axis(shapes[name], axis, shapes[dyn[0]])
            elif prod.op_type not in _PASS:
                axis_or_none = None
            name = dyn[0]
        if name == x and axis_or_none is not None:
            return axis_or_none
    return None


def _outputs(b: Builder, graph: Any) -> list[Output]:
    outs = []
    for o in graph.output:
        v = b.val(o.name)
        if o.name in b.bad:
            continue
        if v is None:
            b.problems.append(f"output '{o.name}' does not depend on the input")
            continue
        if v.buf == "x":
            b.problems.append(f"output '{o.name}' is the input itself")
            continue
        if v.kind == "seq" and any(d != 1 for d in v.shape[: v.taxis]):
            b.problems.append(f"output '{o.name}' of shape {v.shape} has axes of size > 1 before its time axis")
            continue
        outs.append(Output(o.name, v.buf, v.size, v.kind, v.shape))
    return outs
