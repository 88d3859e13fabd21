"""Quantize an ONNX float model: fp16 (half weights and compute) and dynamic int8.

fp16 converts every float tensor of the graph to float16 and keeps the model's
inputs and outputs float32 (Casts at the edges). ONNX Runtime's CPU provider has
no float16 kernel for some ops (``LSTM`` and ``GRU`` among them); it would
silently wrap them in Casts at load time. We probe the session for exactly that
and write those Casts into the file ourselves, so the artifact says what it does
on every runtime, and the report says which layers compute in float32. Their
weights are still stored in float16, so the file is half the size either way.

dynamic-int8 is ONNX Runtime's ``quantize_dynamic`` applied to the recurrent
layers: ``LSTM`` becomes ``com.microsoft.DynamicQuantizeLSTM`` (int8 weights,
inputs quantized per call). ONNX Runtime has no quantized GRU or RNN op, so
those become ``Scan`` loops whose two weight products the quantizer's MatMul
entry quantizes (:mod:`edge_lstm.quantize.onnx_gru`). Other weight layers stay
float32 and the notes say why. A model with no recurrent layer the quantizer
can reach is refused (:class:`UnsupportedModel`, exit code 5) rather than
written as a float file labelled int8.

Static int8 (QDQ) is refused for ONNX: ONNX Runtime's static quantizer has no
LSTM entry, so it would quantize only the head and leave every recurrent weight
in float, a file labelled int8 that is neither small nor integer.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm.errors import UnsupportedModel, UsageError
from edge_lstm.quantize import onnx_gru, onnx_scan
from edge_lstm.quantize.artifact import QuantizedArtifact
from edge_lstm.spec import Precision

if TYPE_CHECKING:
    import onnx

#: precisions this module produces for ONNX, in the order the CLI lists them
SUPPORTED = (Precision.FP32, Precision.FP16, Precision.DYNAMIC_INT8)
_WEIGHT_OPS = ("LSTM", "GRU", "RNN", "Gemm", "MatMul", "Conv", "ConvTranspose", "Scan")
_INSERTED_CAST_PREFIX = "InsertedPrecisionFreeCast"
_FP16_MAX = float(np.finfo(np.float16).max)


def quantize_onnx(proto: onnx.ModelProto, precision: Precision) -> QuantizedArtifact:
    """Return ``proto`` at ``precision`` as a :class:`QuantizedArtifact`.

    fp32 returns the model unchanged; fp16 and dynamic-int8 are described in the
    module docstring. int8 raises :class:`UsageError` (exit code 2).
    """
    precision = Precision(precision)
    if precision is Precision.FP32:
        return QuantizedArtifact(proto.SerializeToString(), precision)
    if precision is Precision.FP16:
        return to_fp16(proto)
    if precision is Precision.DYNAMIC_INT8:
        return dynamic_int8(proto)
    raise UsageError(
        f"precision {precision.value} is not supported for format onnx; "
        f"supported: {', '.join(p.value for p in SUPPORTED)}",
        "ONNX Runtime's static (QDQ) quantizer has no LSTM entry, so an int8 ONNX file would keep every "
        "recurrent weight in float. Use --precision dynamic-int8 for ONNX, or --format tflite for int8.",
    )


# ---------------------------------------------------------------- dynamic int8


def dynamic_int8(proto: onnx.ModelProto) -> QuantizedArtifact:
    """ONNX Runtime dynamic quantization of the LSTM layers: int8 weights, activations quantized per call.

    Only ``LSTM`` nodes are quantized. Linear heads stay float32: on these models
    they hold well under 1% of the weights, and quantizing their input per call
    puts its rounding straight onto the forecast (a 6x MAE increase on the
    Seattle-temperature test model, against +2% with the head left float).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _refuse_subgraphs(proto)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    _constants_to_initializers(model)
    _name_nodes(model)
    inits = {i.name for i in model.graph.initializer}
    kept = [f"{n.op_type} '{n.name}' ({why})" for n in model.graph.node if n.op_type in ("GRU", "RNN")
            for why in [onnx_gru.why_not(n, inits)] if why]
    recurrent = onnx_gru.expand(model)  # GRU/RNN as Scans of Gemms: the quantizer's MatMul entry reaches them
    names = _name_nodes(model)
    scans = {n.name for n in onnx_scan.projected_scans(model)} | {n.name for n in model.graph.node
                                                                  if n.doc_string.startswith(onnx_gru.TAG)}
    lstms = [n for op, n in names if op == "LSTM"] + onnx_scan.weight_products(model) + recurrent
    floats = [f"{op} '{n}'" for op, n in names if op in _WEIGHT_OPS and op != "LSTM" and n not in scans]
    if not lstms:
        raise UnsupportedModel(
            "dynamic-int8 for ONNX quantizes recurrent layers, and this model has none it can quantize "
            f"(its weight layers: {', '.join(kept or floats) or 'none'}). ONNX Runtime has no quantized GRU or RNN "
            "op; edge-lstm rewrites PyTorch's GRU and RNN cells as loops of int8 products, and these are not.",
            "Use --precision fp16 for ONNX, or the TFLite format, whose dynamic-int8 covers GRU layers too.",
        )
    with tempfile.TemporaryDirectory(prefix="edge-lstm-q-") as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "dynamic-int8.onnx")
        onnx.save(model, src)
        try:
            with _quiet_root_logger():  # it advises pre-processing on the root logger; the LSTM needs none
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8, nodes_to_quantize=lstms,
                                 extra_options={"EnableSubgraph": bool(scans)})
        except Exception as e:  # the quantizer's message names the node it could not handle
            raise UnsupportedModel(
                f"ONNX Runtime's dynamic quantizer failed on this model: {str(e).strip() or type(e).__name__}",
                "Export with --precision fp32 or fp16 for ONNX, or quantize the TFLite artifact instead.",
            ) from e
        out = onnx.load(dst)
    del out.graph.value_info[:]  # ONNX Runtime re-infers these; on a small model they cost ~3% of the file
    weights = _weight_counts(model)
    total = max(1, sum(weights.values()))
    notes = [_float_reason(f, weights.get(f.split("'")[1], 0), total) for f in floats]
    if recurrent:
        notes.append(_scan_note(model, out))
    size, before = out.ByteSize(), proto.ByteSize()
    if size > before:  # said, not hidden: on a tiny model the quantization nodes and scales outweigh the int8 bytes
        notes.append(f"this file ({size:,} B) is larger than the float32 one ({before:,} B): at {total:,} weights "
                     "the per-call quantization nodes and scales outweigh the int8 savings; fp32 or fp16 is smaller.")
    return QuantizedArtifact(out.SerializeToString(), Precision.DYNAMIC_INT8, notes, floats)


def _scan_note(expanded: onnx.ModelProto, out: onnx.ModelProto) -> str:
    """Why a GRU/RNN model's dynamic-int8 ONNX is slower than its float one, from the op kinds in the file: each
    time step of each layer runs a Scan body of many small nodes, where the float file runs one GRU/RNN node for
    the whole sequence."""
    from collections import Counter

    import onnx

    ours = {n.name for n in expanded.graph.node if n.op_type == "Scan" and n.doc_string.startswith(onnx_gru.TAG)}
    scans = [n for n in out.graph.node if n.op_type == "Scan" and n.name in ours]  # the quantizer drops doc_string
    bodies = [next(a.g for a in n.attribute if a.name == "body") for n in scans]
    kinds = Counter(node.op_type for b in bodies[:1] for node in b.node)
    per_step = sum(kinds.values())
    listed = ", ".join(f"{k} x{v}" for k, v in kinds.most_common())
    steps = _scan_steps(onnx.shape_inference.infer_shapes(expanded), scans)
    calls = (f"; a {steps}-step window runs the {len(scans)} loop body(ies) {steps} times each, "
             f"{steps * sum(len(b.node) for b in bodies):,} node steps") if steps else ""
    return (f"GRU/RNN layers run as ONNX Scan loops of int8-weight products (ONNX Runtime has no quantized GRU or "
            f"RNN op); the float artifacts keep the GRU/RNN op, one node for the whole sequence. Each time step of "
            f"a loop is a body of {per_step} nodes in this file ({listed}"
            f"; ONNX Runtime fuses each quantize-and-multiply group at load){calls}. ONNX Runtime's cost per node "
            "step, not the int8 arithmetic, sets the time, so this saves file size, not time: it is slower than "
            "the float file (measure with --profile).")


def _scan_steps(inferred: onnx.ModelProto, scans: list[Any]) -> int | None:
    """The sequence length the loops run over, when the graph's shapes fix it."""
    dims = {vi.name: vi.type.tensor_type.shape.dim for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    for n in scans:
        d = dims.get(n.input[1])
        if d and d[0].HasField("dim_value"):
            return int(d[0].dim_value)
    return None


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    """``Constant`` nodes holding tensors become initializers.

    ONNX Runtime's LSTM quantizer quantizes only weights that are initializers and
    silently leaves an LSTM whose weights come from ``Constant`` nodes (as some
    exporters write them) in float32.
    """
    keep = []
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is None or not value.dims:
            keep.append(node)
            continue
        init = model.graph.initializer.add()
        init.CopyFrom(value)
        init.name = node.output[0]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _name_nodes(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """Give unnamed nodes a name (the quantizer selects nodes by name); return (op, name) pairs."""
    for i, n in enumerate(model.graph.node):
        n.name = n.name or f"{n.op_type}_{i}"
    return [(n.op_type, n.name) for n in model.graph.node]


def _weight_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Number of initializer values each node reads."""
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}

    def reads(n: Any) -> set[str]:  # a Scan's body reads its weights from the outer scope
        inner = {i for a in n.attribute if a.type == a.GRAPH for b in a.g.node for i in b.input}
        return set(n.input) | inner

    return {n.name: sum(sizes.get(i, 0) for i in reads(n)) for n in model.graph.node}


def _float_reason(layer: str, count: int, total: int) -> str:
    share = f"{count} weights, {100 * count / total:.1f}% of the model"
    if layer.startswith(("GRU", "RNN")):
        return f"{layer} stays float32 ({share}): ONNX Runtime has no quantized {layer.split()[0]} kernel."
    return (
        f"{layer} stays float32 ({share}): edge-lstm quantizes only the recurrent layers for ONNX dynamic-int8; "
        "a head's per-call input rounding lands directly on the output."
    )


# ---------------------------------------------------------------- fp16


def to_fp16(proto: onnx.ModelProto) -> QuantizedArtifact:
    """Float16 weights and compute; inputs and outputs stay float32.

    Ops that ONNX Runtime's CPU provider cannot run in float16 get explicit Casts
    (float16 weights are still stored, so the file halves).
    """
    import onnx

    _refuse_subgraphs(proto)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    clipped = _convert_tensors(model)
    _keep_io_float32(model)
    del model.graph.value_info[:]
    scans = [n.name for n in onnx_scan.projected_scans(model)]
    if scans:  # a projected LSTM's Scan computes in float32: its body reads float32 casts of its weights
        onnx_scan.cast_outer_weights(model)
        onnx_scan.outputs_to_fp16(model, set(scans))
        _wrap_in_fp32(model, set(scans))
    fallback = [*scans, *(n for n in _ort_fp32_nodes(model) if n not in scans)]
    fallback += _movement_next_to(model, set(fallback))
    if fallback:
        _wrap_in_fp32(model, set(fallback))
        _drop_cast_round_trips(model)
    onnx.checker.check_model(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    float_layers = [f"{ops[n]} '{n}'" for n in fallback if ops[n] in _WEIGHT_OPS]
    notes = [
        f"{layer} computes in float32 (weights stored float16, cast at load): ONNX Runtime's CPU provider has no "
        f"float16 {layer.split()[0]} kernel."
        for layer in float_layers
    ]
    others = sorted({ops[n] for n in fallback if ops[n] not in _WEIGHT_OPS})
    if others:
        notes.append(f"ops computed in float32 for lack of a float16 CPU kernel: {', '.join(others)}.")
    if clipped:
        notes.append(f"{clipped} weight values exceeded the float16 range and were clipped to ±{_FP16_MAX:g}.")
    return QuantizedArtifact(model.SerializeToString(), Precision.FP16, notes, float_layers)


def _refuse_subgraphs(proto: onnx.ModelProto) -> None:
    import onnx

    for node in proto.graph.node:
        if onnx_scan.is_projected(node):
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise UnsupportedModel(
                f"Node '{node.name}' ({node.op_type}) has a subgraph; edge-lstm quantizes flat graphs only.",
                "Export recurrent layers as nn.LSTM/nn.GRU so they become single ONNX LSTM/GRU nodes.",
            )


def _half(t: onnx.TensorProto) -> tuple[onnx.TensorProto, int]:
    """A float16 copy of a float32 tensor and the number of values clipped to the float16 range."""
    from onnx import numpy_helper

    arr = numpy_helper.to_array(t)
    clipped = int(np.count_nonzero(np.abs(arr) > _FP16_MAX))
    out = numpy_helper.from_array(np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16), t.name)
    return out, clipped


def _convert_tensors(model: onnx.ModelProto) -> int:
    """Turn every float32 initializer, constant and float-typed attribute into float16."""
    from onnx import TensorProto, helper

    clipped = 0
    for i, init in enumerate(model.graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            new, c = _half(init)
            model.graph.initializer[i].CopyFrom(new)
            clipped += c
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == attr.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                new, c = _half(attr.t)
                attr.t.CopyFrom(new)
                clipped += c
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
        if node.op_type == "Constant" and any(a.name in ("value_float", "value_floats") for a in node.attribute):
            vals = [v for a in node.attribute for v in ([a.f] if a.name == "value_float" else a.floats)]
            scalar = any(a.name == "value_float" for a in node.attribute)
            tensor = helper.make_tensor("value", TensorProto.FLOAT16, [] if scalar else [len(vals)], vals)
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", tensor))
    return clipped


def _keep_io_float32(model: onnx.ModelProto) -> None:
    """Cast float32 inputs to float16 on entry and float16 outputs back to float32 on exit."""
    from onnx import TensorProto, helper

    graph = model.graph
    entry, exit_ = [], []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = f"{inp.name}__fp16"
            _rename_uses(graph, inp.name, half)
            entry.append(helper.make_node("Cast", [inp.name], [half], name=f"{inp.name}__to_fp16",
                                          to=TensorProto.FLOAT16))
    for out in graph.output:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = f"{out.name}__fp16"
            for node in graph.node:
                node.output[:] = [half if o == out.name else o for o in node.output]
            _rename_uses(graph, out.name, half)
            exit_.append(helper.make_node("Cast", [half], [out.name], name=f"{out.name}__to_fp32",
                                          to=TensorProto.FLOAT))
    nodes = [*entry, *graph.node, *exit_]
    del graph.node[:]
    graph.node.extend(nodes)


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]


def _ort_fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes ONNX Runtime's CPU provider would wrap in float32 Casts.

    ONNX Runtime inserts Casts named ``InsertedPrecisionFreeCast_*`` around every
    node that has no float16 CPU kernel; we read them from the session's
    optimized model with graph optimizations off, so nothing else changes.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edge-lstm-fp16-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.optimized_model_filepath = os.path.join(tmp, "probe.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        seen = onnx.load(opts.optimized_model_filepath)
    # only the Casts to float32 feed a node that lacks a float16 kernel; Casts back to float16 follow it
    cast_out = {
        o for n in seen.graph.node
        if n.name.startswith(_INSERTED_CAST_PREFIX) and _cast_to(n) == onnx.TensorProto.FLOAT for o in n.output
    }
    names = [
        n.name for n in seen.graph.node
        if not n.name.startswith(_INSERTED_CAST_PREFIX) and any(i in cast_out for i in n.input)
    ]
    known = {n.name for n in model.graph.node}
    return [n for n in dict.fromkeys(names) if n in known]


#: ops that only move or select values: they run in whichever precision their neighbours compute in
_MOVEMENT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Gather", "Concat",
                 "Split", "Expand", "Tile")


def _movement_next_to(model: onnx.ModelProto, fp32: set[str]) -> list[str]:
    """Data-movement nodes that read from or feed the float32-computing ``fp32`` nodes: they join them.

    A float16 ``Transpose`` whose output is cast to float32 for a ``MatMul`` crashes ONNX Runtime's session
    optimizer (level "all", a segfault at load; seen with 1.2x on a bidirectional LSTM's head), and a cast each
    side of a reshape is wasted work anyway. So a movement op next to a float32 node computes in float32 too,
    and the Casts move to the edge of the float32 region.
    """
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    joined: list[str] = []
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.op_type not in _MOVEMENT_OPS or n.name in fp32:
                continue
            feeds_fp32 = any(u.name in fp32 for o in n.output for u in consumers.get(o, []))
            ins = [producer[i] for i in n.input[:1] if i in producer]
            reads_fp32 = bool(ins) and all(p.name in fp32 for p in ins)
            if feeds_fp32 or reads_fp32:
                fp32.add(n.name)
                joined.append(n.name)
                changed = True
    return joined


def _wrap_in_fp32(model: onnx.ModelProto, names: set[str]) -> None:
    """Give each named node float32 inputs and outputs through explicit Casts."""
    import onnx
    from onnx import TensorProto, helper

    inferred = onnx.shape_inference.infer_shapes(model)
    types = _elem_types(inferred)
    fresh = _fresh_names(model)
    nodes: list[Any] = []
    for node in model.graph.node:
        if node.name not in names:
            nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if name and types.get(name) == TensorProto.FLOAT16:
                f32 = next(fresh)
                nodes.append(helper.make_node("Cast", [name], [f32], name=f32, to=TensorProto.FLOAT))
                node.input[k] = f32
        after = []
        for k, name in enumerate(node.output):
            if name and types.get(name) == TensorProto.FLOAT16:
                f32 = next(fresh)
                node.output[k] = f32
                after.append(helper.make_node("Cast", [f32], [name], name=next(fresh), to=TensorProto.FLOAT16))
        nodes.extend([node, *after])
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _fresh_names(model: onnx.ModelProto) -> Iterator[str]:
    """Short tensor/node names that the graph does not use yet (they count in the file size)."""
    g = model.graph
    taken = {n.name for n in g.node} | {t for n in g.node for t in (*n.input, *n.output)}
    taken |= {i.name for i in g.initializer} | {i.name for i in g.input}
    return (name for name in (f"cast{k}" for k in itertools.count()) if name not in taken)


def _drop_cast_round_trips(model: onnx.ModelProto) -> None:
    """Remove float32 -> float16 -> float32 Cast pairs between float32-computing nodes, and unused Casts."""
    from onnx import TensorProto

    graph = model.graph
    outputs = {o.name for o in graph.output}
    outputs |= {i for s in onnx_scan.projected_scans(model) for n in onnx_scan.body(s).node for i in n.input}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    drop: set[int] = set()
    for node in graph.node:
        if _cast_to(node) != TensorProto.FLOAT16 or node.output[0] in outputs:
            continue
        users = consumers.get(node.output[0], [])
        if users and all(_cast_to(u) == TensorProto.FLOAT for u in users):
            keep_name = next((u.output[0] for u in users if u.output[0] in outputs), None)
            if keep_name is not None and (len(users) > 1 or node.input[0] in {i.name for i in graph.input}):
                continue
            for user in users:
                _rename_uses(graph, user.output[0], node.input[0])
                drop.add(id(user))
            if keep_name is not None:  # the float32 tensor takes the graph output's name
                for other in graph.node:
                    other.output[:] = [keep_name if o == node.input[0] else o for o in other.output]
                _rename_uses(graph, node.input[0], keep_name)
            drop.add(id(node))
    dead = [n for n in graph.node if _cast_to(n) is not None and not consumers.get(n.output[0])
            and n.output[0] not in outputs]
    drop.update(id(n) for n in dead)
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)


def _cast_to(node: Any) -> int | None:
    """The target type of a Cast node, None for any other node."""
    if node.op_type != "Cast":
        return None
    return next((int(a.i) for a in node.attribute if a.name == "to"), None)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
