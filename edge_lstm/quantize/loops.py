"""Full-integer quantization of models with ``WHILE`` loops (the loop lowering), around TFLite's quantizer.

TFLite's post-training quantizer quantizes the ops inside a loop body, but not
the ``WHILE`` op itself: with ``allow_float`` it leaves every loop variable in
float32, so each iteration would dequantize its state on the way out and
quantize it again on the way in (and a loop variable such as the input
projection of every step would be re-quantized whole, each iteration). Its
calibrator also crashes (a segfault, not an error) on a loop body that passes
a variable through unchanged, which the loop lowering does to avoid copies.

So, around the quantizer:

1. :func:`calibration_ready` gives every pass-through loop variable a copy
   (``RESHAPE`` to the same shape) and splits each fully-connected op with a
   run-time bias into the op and an ``ADD`` (the quantizer wants constant 1-D
   biases);
2. the calibrator records ranges, inside the body too, and the quantizer
   quantizes with ``allow_float``;
3. :func:`int8_loop_state` makes each loop variable int8 with the scale the
   body reads it at (TFLite's ``QUANTIZE`` requantizes int8 to int8 where two
   scales meet), drops the quantize/dequantize pairs that were around the loop
   and the copies of step 1: the state stays int8 across iterations and the
   pass-through variables are not copied again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


@dataclass
class _Sub:
    """A subgraph with its producer and consumer maps (rebuilt with :meth:`refresh`)."""

    model: Any
    graph: Any
    producer: dict[int, int] = field(default_factory=dict)
    consumers: dict[int, list[int]] = field(default_factory=dict)

    def refresh(self) -> None:
        """Recompute which op produces and which ops read each tensor."""
        self.producer, self.consumers = {}, {}
        for k, op in enumerate(self.graph.operators):
            for t in op.outputs:
                self.producer[int(t)] = k
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(int(t), []).append(k)

    def code(self, k: int) -> int:
        """Builtin code of operator ``k``."""
        c = self.model.operatorCodes[self.graph.operators[k].opcodeIndex]
        return int(max(c.builtinCode, c.deprecatedBuiltinCode))

    def tensor(self, i: int) -> Any:
        """Tensor ``i``."""
        return self.graph.tensors[i]

    def add_tensor(self, like: Any, type_: int, quant: Any = None, suffix: str = "") -> int:
        """A new tensor shaped like ``like``; returns its index."""
        s = _schema()
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.quantization = list(like.shape), type_, 0, quant
        t.name = (like.name or b"") + suffix.encode() if suffix else like.name
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def add_op(self, at: int, builtin: int, inputs: list[int], outputs: list[int], version: int = 1) -> None:
        """Insert an operator at position ``at``."""
        s = _schema()
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode(self.model, builtin, version), list(inputs), list(outputs)
        if builtin == s.BuiltinOperator.RESHAPE:
            op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.ReshapeOptions, s.ReshapeOptionsT()
            op.builtinOptions.newShape = list(self.tensor(outputs[0]).shape)
        self.graph.operators.insert(at, op)


def opcode(model: Any, builtin: int, version: int) -> int:
    """Index of the operator code (builtin, version), added when missing."""
    s = _schema()
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and code.version == version:
            return i
    code = s.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _whiles(model: Any) -> list[tuple[int, int, Any]]:
    """(subgraph, op index, op) of every WHILE op."""
    s = _schema()
    found = []
    for gi, graph in enumerate(model.subgraphs):
        sub = _Sub(model, graph)
        for k, op in enumerate(graph.operators):
            if sub.code(k) == s.BuiltinOperator.WHILE:
                found.append((gi, k, op))
    return found


def has_loops(model: Any) -> bool:
    """True when the model has a WHILE op."""
    return bool(_whiles(model))


# ---------------------------------------------------------------- before calibration


#: prefix of the names :func:`calibration_ready` gives unnamed tensors (the calibrator keys ranges by name)
TEMP_NAME = "~t"


def unshare_buffers(model: Any) -> Any:
    """A buffer of its own for every constant tensor.

    edge-lstm's writer stores identical constants once, even across subgraphs and
    shapes (a zero state and a zero bias share bytes); TFLite's quantizer rewrites
    a constant's buffer in place, which corrupted the other tensors reading it.
    :func:`dedupe_buffers` shares them again afterwards.
    """
    seen: set[int] = set()
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.buffer <= 0 or not _is_const(model, tensor):
                continue
            if tensor.buffer in seen:
                _set_const(model, tensor, np.asarray(model.buffers[tensor.buffer].data, np.uint8).copy())
            seen.add(tensor.buffer)
    return model


def dedupe_buffers(model: Any) -> Any:
    """Tensors with identical constant bytes share one buffer; the copies are emptied (weights stored once)."""
    first: dict[bytes, int] = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.buffer <= 0 or not _is_const(model, tensor):
                continue
            raw = np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes()
            tensor.buffer = first.setdefault(raw, tensor.buffer)
    used = {t.buffer for g in model.subgraphs for t in g.tensors}
    for i, buf in enumerate(model.buffers):
        if i > 0 and i not in used:
            buf.data = None
    return model


def calibration_ready(model: Any) -> Any:
    """Own buffers, names for unnamed tensors, copies for pass-through loop variables, FC + ADD for run-time
    biases: what TFLite's calibrator and quantizer need."""
    s = _schema()
    unshare_buffers(model)
    for gi, graph in enumerate(model.subgraphs):
        for ti, tensor in enumerate(graph.tensors):
            if not tensor.name:
                tensor.name = f"{TEMP_NAME}{gi}_{ti}".encode()
    for _, _, op in _whiles(model):
        body = _Sub(model, model.subgraphs[op.builtinOptions.bodySubgraphIndex])
        outs = list(body.graph.outputs)
        for k, (i, o) in enumerate(zip(body.graph.inputs, outs, strict=True)):
            if i == o and body.tensor(i).type == s.TensorType.FLOAT32:
                copy = body.add_tensor(body.tensor(i), body.tensor(i).type, suffix="_passthrough")
                body.graph.tensors[copy].shape = list(body.tensor(i).shape)
                shape = body.add_tensor(body.tensor(i), s.TensorType.INT32)
                body.graph.tensors[shape].shape = [len(body.tensor(i).shape)]
                _set_const(model, body.graph.tensors[shape], np.asarray(body.tensor(i).shape, np.int32))
                body.add_op(len(body.graph.operators), s.BuiltinOperator.RESHAPE, [int(i), shape], [copy])
                outs[k] = copy
        body.graph.outputs = outs
    for graph in model.subgraphs:
        _split_runtime_biases(model, graph)
    return model


def _split_runtime_biases(model: Any, graph: Any) -> None:
    s = _schema()
    sub = _Sub(model, graph)
    k = 0
    while k < len(graph.operators):
        op = graph.operators[k]
        bias = int(op.inputs[2]) if sub.code(k) == s.BuiltinOperator.FULLY_CONNECTED and len(op.inputs) > 2 else -1
        if bias >= 0 and not _is_const(model, graph.tensors[bias]):
            out = int(op.outputs[0])
            mid = sub.add_tensor(graph.tensors[out], graph.tensors[out].type, suffix="_nobias")
            op.inputs = [*op.inputs[:2], -1]
            op.outputs = [mid]
            sub.add_op(k + 1, s.BuiltinOperator.ADD, [mid, bias], [out])
            add = graph.operators[k + 1]
            add.builtinOptionsType, add.builtinOptions = s.BuiltinOptions.AddOptions, s.AddOptionsT()
            k += 1
        k += 1


def _is_const(model: Any, tensor: Any) -> bool:
    buf = model.buffers[tensor.buffer] if tensor.buffer > 0 else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def _set_const(model: Any, tensor: Any, arr: np.ndarray) -> None:
    buf = _schema().BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    tensor.buffer = len(model.buffers) - 1


# ---------------------------------------------------------------- after quantization


def drop_temp_names(model: Any) -> Any:
    """Clear the names :func:`calibration_ready` gave (and the quantizer's suffixed copies of them)."""
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.name and tensor.name.startswith(TEMP_NAME.encode()):
                tensor.name = None
    return model


def int8_loop_state(model: Any) -> int:
    """Make the float32 loop variables around and inside each WHILE int8; returns how many became int8."""
    converted = 0
    for gi, _, op in _whiles(model):
        main = _Sub(model, model.subgraphs[gi])
        body = _Sub(model, model.subgraphs[op.builtinOptions.bodySubgraphIndex])
        cond = _Sub(model, model.subgraphs[op.builtinOptions.condSubgraphIndex])
        _align_update_slices(body)
        for var in range(len(op.inputs)):
            main.refresh()
            body.refresh()
            quant = _loop_scale(main, body, op, var)
            if quant is None:
                continue
            _body_side(body, var, quant)
            _main_side(main, op, var, quant)
            t = cond.tensor(int(cond.graph.inputs[var]))
            t.type, t.quantization = _schema().TensorType.INT8, _copy_quant(quant)
            converted += 1
        body.refresh()
        _drop_copies(body)
        for sub in (main, body):
            _drop_dead(sub)
    return converted


def _align_update_slices(body: _Sub) -> None:
    """A sequence written row by row (DYNAMIC_UPDATE_SLICE) holds the rows' values: it takes their scale.

    The quantizer gives it the scale of its zero-filled initial value (range [0, 0], scale 1), which rounds
    every row written into it to -1, 0 or 1; the fill needs no particular scale (every row is overwritten).
    """
    s = _schema()
    body.refresh()
    k = 0
    while k < len(body.graph.operators):
        op = body.graph.operators[k]
        if body.code(k) != s.BuiltinOperator.DYNAMIC_UPDATE_SLICE:
            k += 1
            continue
        update = int(op.inputs[1])
        src = body.producer.get(update)
        if body.tensor(update).type == s.TensorType.FLOAT32 and src is not None \
                and body.code(src) == s.BuiltinOperator.DEQUANTIZE:
            # the quantizer left it float: an int8 copy of rows needs no kernel of its own, make it int8
            q = int(body.graph.operators[src].inputs[0])
            quant = body.tensor(q).quantization
            operand, out = int(op.inputs[0]), int(op.outputs[0])
            q_in = body.add_tensor(body.tensor(operand), s.TensorType.INT8, _copy_quant(quant), "_q")
            q_out = body.add_tensor(body.tensor(out), s.TensorType.INT8, _copy_quant(quant), "_q")
            op.inputs = [q_in, q, *op.inputs[2:]]
            op.outputs = [q_out]
            body.add_op(k, s.BuiltinOperator.QUANTIZE, [operand], [q_in])
            body.add_op(k + 2, s.BuiltinOperator.DEQUANTIZE, [q_out], [out])
            body.refresh()
            k += 3
            continue
        if body.tensor(update).type == s.TensorType.INT8 and body.tensor(update).quantization is not None:
            for t in (int(op.inputs[0]), int(op.outputs[0])):
                if body.tensor(t).type == s.TensorType.INT8:
                    body.tensor(t).quantization = _copy_quant(body.tensor(update).quantization)
        k += 1


def _loop_scale(main: _Sub, body: _Sub, op: Any, var: int) -> Any:
    """The int8 quantization a float loop variable is read at in the body (or produced at), else None."""
    s = _schema()
    b_in = int(body.graph.inputs[var])
    if body.tensor(b_in).type != s.TensorType.FLOAT32:
        return None
    for k in body.consumers.get(b_in, []):
        if body.code(k) == s.BuiltinOperator.QUANTIZE:
            return body.tensor(int(body.graph.operators[k].outputs[0])).quantization
    for sub, name in ((body, int(body.graph.outputs[var])), (main, int(op.inputs[var]))):
        at = sub.producer.get(name)
        if at is not None and sub.code(at) == s.BuiltinOperator.DEQUANTIZE:
            src = sub.tensor(int(sub.graph.operators[at].inputs[0]))
            if src.type == s.TensorType.INT8:
                return src.quantization
    return None


def _copy_quant(q: Any) -> Any:
    c = _schema().QuantizationParametersT()
    c.scale, c.zeroPoint, c.quantizedDimension = list(q.scale), list(q.zeroPoint), q.quantizedDimension
    return c


def _same(a: Any, b: Any) -> bool:
    return bool(a is not None and b is not None and len(a.scale) == len(b.scale) == 1
                and np.isclose(float(a.scale[0]), float(b.scale[0]), rtol=1e-6, atol=0)
                and int(a.zeroPoint[0]) == int(b.zeroPoint[0]))


def _int8_source(sub: _Sub, tensor: int, quant: Any, at: int) -> int:
    """An int8 tensor with ``quant`` holding the float value ``tensor``, made with as few ops as possible.

    A DEQUANTIZE's int8 input is used directly when its scale matches, requantized otherwise; a float constant
    is quantized in place; any other float value gets a QUANTIZE op inserted at ``at``.
    """
    s = _schema()
    k = sub.producer.get(tensor)
    if k is not None and sub.code(k) == s.BuiltinOperator.DEQUANTIZE:
        src = int(sub.graph.operators[k].inputs[0])
        if sub.tensor(src).type == s.TensorType.INT8:
            if _same(sub.tensor(src).quantization, quant):
                return src
            out = sub.add_tensor(sub.tensor(tensor), s.TensorType.INT8, _copy_quant(quant), "_rq")
            sub.add_op(k + 1, s.BuiltinOperator.QUANTIZE, [src], [out])
            return out
    t = sub.tensor(tensor)
    if _is_const(sub.model, t) and t.type == s.TensorType.FLOAT32:
        raw = np.asarray(sub.model.buffers[t.buffer].data, np.uint8).tobytes()
        arr = np.frombuffer(raw, np.float32)
        q = np.clip(np.round(arr / quant.scale[0]) + quant.zeroPoint[0], -128, 127).astype(np.int8)
        out = sub.add_tensor(t, s.TensorType.INT8, _copy_quant(quant), "_q")
        _set_const(sub.model, sub.graph.tensors[out], q)
        return out
    out = sub.add_tensor(t, s.TensorType.INT8, _copy_quant(quant), "_q")
    sub.add_op(at, s.BuiltinOperator.QUANTIZE, [tensor], [out])
    return out


def _reroute_quantizes(sub: _Sub, float_t: int, int8_t: int, quant: Any, skip: set[int]) -> None:
    """QUANTIZE ops reading ``float_t`` read ``int8_t`` instead (requantizing only where the scales differ)."""
    s = _schema()
    for k in sub.consumers.get(float_t, []):
        op = sub.graph.operators[k]
        if k in skip or sub.code(k) != s.BuiltinOperator.QUANTIZE:
            continue
        out = int(op.outputs[0])
        if _same(sub.tensor(out).quantization, quant):
            _replace_uses(sub, out, int8_t)
        else:
            op.inputs = [int8_t]


def _replace_uses(sub: _Sub, old: int, new: int) -> None:
    for op in sub.graph.operators:
        op.inputs = [new if int(i) == old else int(i) for i in op.inputs]
    sub.graph.outputs = [new if int(o) == old else int(o) for o in sub.graph.outputs]


def _body_side(body: _Sub, var: int, quant: Any) -> None:
    s = _schema()
    b_in, b_out = int(body.graph.inputs[var]), int(body.graph.outputs[var])
    q_in = body.add_tensor(body.tensor(b_in), s.TensorType.INT8, _copy_quant(quant), "_q")
    _reroute_quantizes(body, b_in, q_in, quant, set())
    body.refresh()
    if body.consumers.get(b_in) or b_out == b_in:  # float readers left: dequantize once at the start
        body.add_op(0, s.BuiltinOperator.DEQUANTIZE, [q_in], [b_in])
    body.refresh()
    q_out = q_in if b_out == b_in else _int8_source(body, b_out, quant, len(body.graph.operators))
    inputs, outputs = list(body.graph.inputs), list(body.graph.outputs)
    inputs[var], outputs[var] = q_in, q_out
    body.graph.inputs, body.graph.outputs = inputs, outputs


def _main_side(main: _Sub, op: Any, var: int, quant: Any) -> None:
    s = _schema()
    at = next(k for k, o in enumerate(main.graph.operators) if o is op)
    q_init = _int8_source(main, int(op.inputs[var]), quant, at)
    main.refresh()
    at = next(k for k, o in enumerate(main.graph.operators) if o is op)
    inputs = list(op.inputs)
    inputs[var] = q_init
    op.inputs = inputs
    f_out = int(op.outputs[var])
    q_out = main.add_tensor(main.tensor(f_out), s.TensorType.INT8, _copy_quant(quant), "_q")
    outputs = list(op.outputs)
    outputs[var] = q_out
    op.outputs = outputs
    main.refresh()
    _reroute_quantizes(main, f_out, q_out, quant, set())
    main.refresh()
    if main.consumers.get(f_out) or f_out in main.graph.outputs:
        main.add_op(at + 1, s.BuiltinOperator.DEQUANTIZE, [q_out], [f_out])


def _drop_copies(body: _Sub) -> None:
    """The pass-through copies of :func:`calibration_ready`: the body's output is its input again."""
    s = _schema()
    outputs = list(body.graph.outputs)
    for var, (i, o) in enumerate(zip(body.graph.inputs, body.graph.outputs, strict=True)):
        k = body.producer.get(int(o))
        if k is None or body.code(k) != s.BuiltinOperator.RESHAPE:
            continue
        src = int(body.graph.operators[k].inputs[0])
        same_int8 = _same(body.tensor(src).quantization, body.tensor(int(o)).quantization)
        same_int32 = body.tensor(src).type == body.tensor(int(o)).type == s.TensorType.INT32
        if src == int(i) and (same_int8 or same_int32):
            outputs[var] = int(i)
    body.graph.outputs = outputs


def int8_io(model: Any) -> Any:
    """The main graph takes and returns int8: its input QUANTIZE and output DEQUANTIZE ops are dropped, and the
    int8 tensors next to them become the model's inputs and outputs (under the same names)."""
    s = _schema()
    main = _Sub(model, model.subgraphs[0])
    main.refresh()
    inputs, outputs = list(main.graph.inputs), list(main.graph.outputs)
    gone: set[int] = set()  # the edge QUANTIZE/DEQUANTIZE ops
    for k, t in enumerate(inputs):
        users = main.consumers.get(int(t), [])
        if not users or any(main.code(u) != s.BuiltinOperator.QUANTIZE for u in users):
            raise ValueError(f"input {main.tensor(int(t)).name!r} is read by float ops; it cannot be int8")
        first = int(main.graph.operators[users[0]].outputs[0])
        for u in users[1:]:  # every reader uses the first QUANTIZE's int8 tensor
            _replace_uses(main, int(main.graph.operators[u].outputs[0]), first)
        main.tensor(first).name, inputs[k] = main.tensor(int(t)).name, first
        gone.update(id(main.graph.operators[u]) for u in users)
    for k, t in enumerate(outputs):
        at = main.producer.get(int(t))
        if at is None or main.code(at) != s.BuiltinOperator.DEQUANTIZE:
            raise ValueError(f"output {main.tensor(int(t)).name!r} is not dequantized from int8")
        q = int(main.graph.operators[at].inputs[0])
        main.tensor(q).name, outputs[k] = main.tensor(int(t)).name, q
        gone.add(id(main.graph.operators[at]))
    main.graph.operators = [op for op in main.graph.operators if id(op) not in gone]
    main.graph.inputs, main.graph.outputs = inputs, outputs
    _drop_dead(main)
    return model


def _drop_dead(sub: _Sub) -> None:
    """Remove ops none of whose outputs is read (by an op or as a subgraph output)."""
    while True:
        sub.refresh()
        live_outputs = {int(o) for o in sub.graph.outputs}
        keep = [op for op in sub.graph.operators
                if any(int(t) in live_outputs or sub.consumers.get(int(t)) for t in op.outputs)]
        if len(keep) == len(sub.graph.operators):
            return
        sub.graph.operators = keep
