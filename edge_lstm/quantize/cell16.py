"""int16 cell state and gate activations in a full-int8 loop body (the loop lowering's LSTM step).

TFLite's quantizer makes every tensor of the loop lowering's LSTM step int8,
the cell state ``c`` too. That costs accuracy three ways, every step: ``c`` is
rounded to 1/255 of its range; the logistic gates are int8 with scale 1/256, so
a forget gate can never exceed 255/256 and the cell leaks at least 0.4% a step
(a third of its value over 96 steps); and the rounding errors add up along the
recurrence. On the demo's forecaster the loop's int8 forecast MAE was 11% over
float, against 0.4% for TFLite's fused integer LSTM kernel, which keeps ``c``
in int16 and computes its gates in 16 bits.

:func:`int16_cells` rewrites each cell update after quantization, keeping the
fully-connected ops (what XNNPACK runs fast, and nearly all the work) int8:

    z (int8)  -> QUANTIZE -> z16 -> LOGISTIC / TANH (int16, scale 2^-15)
    c = f * c_prev + i * g      MUL, MUL, ADD in int16, c's scale a power of two
    h = o * tanh(c)             TANH, MUL in int16, then QUANTIZE to the int8 h
                                the fully-connected ops read

and makes ``c`` an int16 loop variable (its initial value and final output
converted at the loop's edges). Those elementwise ops run on TFLite's builtin
int16 kernels (XNNPACK has none); they are a few hundred values a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.quantize.tflite_edit import SubgraphView, drop_dead, replace_input, while_loops, whiles, with_slot
from edge_lstm.tflite_schema import copy_quantization, is_const, quantization, schema, set_data

#: int16 values of the gate activations: LOGISTIC and TANH outputs in TFLite's int16 kernels
_ACT_SCALE = 1.0 / 32768.0


@dataclass
class _Cell:
    """One cell update: c = mul_f(f, c_prev) + mul_i(i, g); h = mul_h(o, tanh(c))."""

    mul_f: Any  #: the operators (objects: indices move as ops are inserted)
    mul_i: Any
    add: Any
    tanh: Any
    mul_h: Any
    c_prev: int  #: the tensor the forget gate multiplies (a loop variable or the previous step's c)


def _quant(scale: float) -> Any:
    return quantization([float(scale)], [0])


def _range(q: Any) -> float:
    """The largest magnitude an int8 quantization represents."""
    s, z = float(q.scale[0]), int(q.zeroPoint[0])
    return max(abs((-128 - z) * s), abs((127 - z) * s))


def _ops(body: SubgraphView, k: Any) -> Any:
    """Operator ``k`` (an index or already the operator)."""
    return body.graph.operators[k] if isinstance(k, (int, np.integer)) else k


def _find_cells(body: SubgraphView) -> list[_Cell]:
    """The cell updates of a loop body, in order (matched on the step's op pattern)."""
    s = schema().BuiltinOperator
    cells = []
    for k, op in enumerate(body.graph.operators):
        if body.code(k) != s.ADD or len(op.inputs) != 2:
            continue
        muls = [body.producer.get(int(t)) for t in op.inputs]
        users = body.consumers.get(int(op.outputs[0]), [])
        tanh = next((u for u in users if body.code(u) == s.TANH), None)
        if None in muls or tanh is None or any(body.code(m) != s.MUL for m in muls if m is not None):
            continue
        h_users = [u for u in body.consumers.get(int(_ops(body, tanh).outputs[0]), []) if body.code(u) == s.MUL]
        roles = [_mul_role(body, m) for m in muls if m is not None]
        if len(h_users) != 1 or sorted(r[0] for r in roles) != ["f", "i"]:
            continue
        (mf, c_prev), mi = next((m, r[1]) for m, r in zip(muls, roles, strict=True) if r[0] == "f"), \
            next(m for m, r in zip(muls, roles, strict=True) if r[0] == "i")
        ops = body.graph.operators
        cells.append(_Cell(ops[int(mf)], ops[int(mi)], op, ops[tanh], ops[h_users[0]], c_prev))  # type: ignore[arg-type]
    return cells


def _mul_role(body: SubgraphView, m: int) -> tuple[str, int]:
    """("i", -1) for gate x gate (both from SPLIT ops), ("f", c_prev) for a gate x the previous cell state."""
    s = schema().BuiltinOperator
    ins = [int(t) for t in _ops(body, m).inputs]
    from_split = [body.producer.get(t) is not None and body.code(body.producer[t]) == s.SPLIT for t in ins]
    if all(from_split):
        return "i", -1
    if from_split.count(True) == 1:
        return "f", ins[from_split.index(False)]
    return "?", -1


def int16_cells(model: Any) -> int:
    """Rewrite the LSTM cell updates of every WHILE body to int16 (see the module docstring); returns how many."""
    done = 0
    for main, body, cond, op in while_loops(model):
        body.refresh()
        cells = _find_cells(body)
        if not cells or not _rewritable(body, cells):
            continue
        scales = _cell_scales(body, cells)
        _rewrite_gates(body, cells)
        body.refresh()
        _rewrite_cells(body, cells, scales)
        body.refresh()
        _loop_edges(main, body, cond, op, scales)
        drop_dead(body)
        done += len(cells)
    if not whiles(model):  # a one-step (streaming) or fully unrolled graph: the cells are in the main graph
        done += _graph_cells(SubgraphView(model, model.subgraphs[0]))
    return done


def _graph_cells(graph: SubgraphView) -> int:
    """The cells of a graph without loops; their first states come from QUANTIZE ops or constants (through
    RESHAPEs), and their states leave through RESHAPEs and DEQUANTIZE ops or int8 requantizations."""
    graph.refresh()
    cells = _find_cells(graph)
    if not cells or not _rewritable(graph, cells):
        return 0
    outs = {int(_ops(graph, c.add).outputs[0]) for c in cells}
    heads = [c.c_prev for c in cells if c.c_prev not in outs]
    if any(_state_source(graph, t) is None for t in heads):
        return 0
    scales = _cell_scales(graph, cells)
    old = {t: copy_quantization(graph.tensor(t).quantization) for t in scales}
    _rewrite_gates(graph, cells)
    graph.refresh()
    _rewrite_cells(graph, cells, scales)
    graph.refresh()
    for t in heads:
        _widen_source(graph, t, scales[t], old[t])
    _widen_readers(graph, cells, scales, old)
    drop_dead(graph)
    return len(cells)


def _state_source(graph: SubgraphView, t: int) -> list[int] | None:
    """The tensors from a float QUANTIZE's output or an int8 constant to ``t`` through RESHAPEs, else None."""
    ops = schema().BuiltinOperator
    path = [t]
    while True:
        k = graph.producer.get(t)
        if k is None:
            return path if is_const(graph.model, graph.tensor(t)) else None
        code = graph.code(k)
        src = int(graph.graph.operators[k].inputs[0])
        if code == ops.QUANTIZE and graph.tensor(src).type == schema().TensorType.FLOAT32:
            return path
        if code != ops.RESHAPE or len(graph.consumers.get(src, [])) != 1:
            return None
        path.append(src)
        t = src


def _widen_source(graph: SubgraphView, head: int, scale: float, q8: Any) -> None:
    """The initial cell state ``head`` and the RESHAPEs leading to it in int16 (an int8 constant, quantized as
    ``q8``, converted)."""
    s = schema()
    graph.refresh()
    path = _state_source(graph, head) or []
    for t in path:
        tensor = graph.tensor(t)
        if is_const(graph.model, tensor):
            _int16_const(graph.model, tensor, tensor, q8, scale)
        tensor.type, tensor.quantization = s.TensorType.INT16, _quant(scale)


def _widen_readers(graph: SubgraphView, cells: list[_Cell], scales: dict[int, float], old: dict[int, Any]) -> None:
    """Readers of a cell state outside the cells: RESHAPEs carry int16 on, DEQUANTIZE ops read it as it is, any
    other reader gets the int8 value back through a QUANTIZE."""
    s = schema()
    inside = {id(k) for c in cells for k in (c.mul_f, c.add, c.tanh)}
    todo = [(t, scales[t], old[t]) for t in scales]
    while todo:
        t, scale, q8 = todo.pop()
        graph.refresh()
        for k in list(graph.consumers.get(t, [])):
            op = graph.graph.operators[k]
            code = graph.code(k)
            if id(op) in inside or code == s.BuiltinOperator.DEQUANTIZE:
                continue
            if code == s.BuiltinOperator.RESHAPE and graph.tensor(int(op.outputs[0])).type == s.TensorType.INT8:
                out = int(op.outputs[0])
                graph.tensor(out).type, graph.tensor(out).quantization = s.TensorType.INT16, _quant(scale)
                todo.append((out, scale, q8))
                continue
            back = graph.add_tensor(graph.tensor(t), s.TensorType.INT8, copy_quantization(q8), "_i8")
            replace_input(op, t, back)
            graph.add_op(k, s.BuiltinOperator.QUANTIZE, [t], [back])


def _rewritable(body: SubgraphView, cells: list[_Cell]) -> bool:
    """Every gate value is read only by cell ops, and every tensor involved is int8 (else leave the body as is)."""
    i8 = schema().TensorType.INT8
    cell_ops = {id(k) for c in cells for k in (c.mul_f, c.mul_i, c.mul_h)}
    for c in cells:
        for k in (c.mul_f, c.mul_i, c.add, c.tanh, c.mul_h):
            if any(body.tensor(int(t)).type != i8 for t in [*_ops(body, k).inputs, *_ops(body, k).outputs]):
                return False
        for k in (c.mul_f, c.mul_i, c.mul_h):
            for t in _ops(body, k).inputs:
                src = body.producer.get(int(t))
                if src is not None and body.code(src) == schema().BuiltinOperator.SPLIT:
                    for out in _ops(body, src).outputs:
                        if any(id(body.graph.operators[u]) not in cell_ops for u in body.consumers.get(int(out), [])):
                            return False
    return _gate_inputs_free(body, cells)


def _gate_inputs_free(body: SubgraphView, cells: list[_Cell]) -> bool:
    """Each gate pre-activation comes from an ADD (free to take a symmetric scale) and is read only by the
    activations."""
    ops = schema().BuiltinOperator
    for c in cells:
        for k in (c.mul_f, c.mul_i, c.mul_h):
            for t in _ops(body, k).inputs:
                split = body.producer.get(int(t))
                if split is None or body.code(split) != ops.SPLIT:
                    continue
                act = body.producer.get(int(_ops(body, split).inputs[1]))
                if act is None or body.code(act) not in (ops.LOGISTIC, ops.TANH):
                    return False
                z = int(_ops(body, act).inputs[0])
                src = body.producer.get(z)
                if src is None or body.code(src) != ops.ADD:
                    return False
                if any(body.code(u) not in (ops.LOGISTIC, ops.TANH) for u in body.consumers.get(z, [])):
                    return False
    return True


def _cell_scales(body: SubgraphView, cells: list[_Cell]) -> dict[int, float]:
    """One power-of-two int16 scale per chain of cells (a layer's steps): c_prev tensor and c tensors -> scale."""
    chain_of: dict[int, int] = {}
    for n, c in enumerate(cells):
        prev = next((m for m, p in enumerate(cells) if int(_ops(body, p.add).outputs[0]) == c.c_prev), None)
        chain_of[n] = chain_of[prev] if prev is not None else n
    top: dict[int, float] = {}
    for n, c in enumerate(cells):
        out = int(_ops(body, c.add).outputs[0])
        m = max(_range(body.tensor(out).quantization), _range(body.tensor(c.c_prev).quantization))
        top[chain_of[n]] = max(top.get(chain_of[n], 0.0), m)
    scales: dict[int, float] = {}
    for n, c in enumerate(cells):
        # a power of two >= the largest |c| seen: like TFLite's integer LSTM kernel's cell state
        scale = 2.0 ** np.ceil(np.log2(max(top[chain_of[n]], 1e-6))) / 32768.0
        scales[c.c_prev] = scales[int(_ops(body, c.add).outputs[0])] = float(scale)
    return scales


def _rewrite_gates(body: SubgraphView, cells: list[_Cell]) -> None:
    """LOGISTIC and TANH of each gate pre-activation in int16, from one int16 copy of the int8 pre-activation."""
    s = schema()
    acts: dict[int, int] = {}  # activation op output -> op index
    for c in cells:
        for k in (c.mul_f, c.mul_i, c.mul_h):
            for t in _ops(body, k).inputs:
                src = body.producer.get(int(t))
                if src is not None and body.code(src) == s.BuiltinOperator.SPLIT:
                    value = int(_ops(body, src).inputs[1])
                    act = body.producer.get(value)
                    if act is not None and body.code(act) in (s.BuiltinOperator.LOGISTIC, s.BuiltinOperator.TANH):
                        acts[value] = act
    z16: dict[int, int] = {}
    for value, k in acts.items():
        op = _ops(body, k)
        z = int(op.inputs[0])
        if z not in z16:
            # z symmetric (its producer, an ADD, requantizes to any scale): a CAST then widens it to int16 exactly,
            # where a QUANTIZE int8 -> int16 would cost a multiply a value and tflite-runtime 2.14 has none
            sym = _quant(_range(body.tensor(z).quantization) / 127.0)
            body.tensor(z).quantization = sym
            z16[z] = body.add_tensor(body.tensor(z), s.TensorType.INT16, copy_quantization(sym), "_i16")
        op.inputs = [z16[z]]
        t = body.tensor(value)
        t.type, t.quantization = s.TensorType.INT16, _quant(_ACT_SCALE)
        for split in body.consumers.get(value, []):
            for out in _ops(body, split).outputs:
                body.tensor(int(out)).type = s.TensorType.INT16
                body.tensor(int(out)).quantization = _quant(_ACT_SCALE)
    # each CAST goes just before the first op reading its int16 copy
    for z, q in z16.items():
        body.refresh()
        body.add_op(min(body.consumers[q]), s.BuiltinOperator.CAST, [z], [q])


def _rewrite_cells(body: SubgraphView, cells: list[_Cell], scales: dict[int, float]) -> None:
    s = schema()
    for c in cells:
        c_out = int(_ops(body, c.add).outputs[0])
        for k in (c.mul_f, c.mul_i, c.add):
            out = body.tensor(int(_ops(body, k).outputs[0]))
            out.type, out.quantization = s.TensorType.INT16, _quant(scales[c_out])
        tanh_out = body.tensor(int(_ops(body, c.tanh).outputs[0]))
        tanh_out.type, tanh_out.quantization = s.TensorType.INT16, _quant(_ACT_SCALE)
        prev = body.tensor(c.c_prev)
        prev.type, prev.quantization = s.TensorType.INT16, _quant(scales[c.c_prev])
    for c in cells:
        op = c.mul_h
        h8 = int(op.outputs[0])
        h16 = body.add_tensor(body.tensor(h8), s.TensorType.INT16, _quant(_ACT_SCALE), "_i16")
        op.outputs = [h16]
        body.add_op(body.index(op) + 1, s.BuiltinOperator.QUANTIZE, [h16], [h8])


def _int16_source(body: SubgraphView, t: int, scales: dict[int, float]) -> int | None:
    """The int16 cell tensor ``t`` holds (``t`` itself, or the input of the int8 requantization the loop's
    int8 state needed), else None."""
    s = schema()
    body.refresh()
    while t not in scales:
        k = body.producer.get(t)
        if k is None or body.code(k) not in (s.BuiltinOperator.QUANTIZE, s.BuiltinOperator.RESHAPE):
            return None
        t = int(body.graph.operators[k].inputs[0])
    return t


def _loop_edges(main: SubgraphView, body: SubgraphView, cond: SubgraphView, op: Any, scales: dict[int, float]) -> None:
    """The int16 cell states that are loop variables: int16 in the cond and body, converted at the WHILE."""
    s = schema()
    for var, b_in in enumerate(int(t) for t in body.graph.inputs):
        if b_in not in scales:
            continue
        quant = _quant(scales[b_in])
        b_out = _int16_source(body, int(body.graph.outputs[var]), scales)
        if b_out is None:
            raise ValueError(f"loop variable {var}: the body's int16 cell state is returned as another type")
        body.graph.outputs = with_slot(body.graph.outputs, var, b_out)
        c_in = cond.tensor(int(cond.graph.inputs[var]))
        c_in.type, c_in.quantization = s.TensorType.INT16, copy_quantization(quant)
        main.refresh()
        at = main.index(op)
        init = int(op.inputs[var])
        init16 = main.add_tensor(main.tensor(init), s.TensorType.INT16, copy_quantization(quant), "_i16")
        if main.producer.get(init) is None and main.model.buffers[main.tensor(init).buffer].data is not None:
            _int16_const(main.model, main.tensor(init), main.tensor(init16), main.tensor(init).quantization,
                         scales[b_in])
        else:  # through float, once a call: tflite-runtime 2.14 has no int8 -> int16 QUANTIZE
            f32 = main.add_tensor(main.tensor(init), s.TensorType.FLOAT32, None, "_f")
            main.add_op(at, s.BuiltinOperator.DEQUANTIZE, [init], [f32])
            main.add_op(at + 1, s.BuiltinOperator.QUANTIZE, [f32], [init16])
            at += 2
        op.inputs = with_slot(op.inputs, var, init16)
        out8 = int(op.outputs[var])
        out16 = main.add_tensor(main.tensor(out8), s.TensorType.INT16, copy_quantization(quant), "_i16")
        op.outputs = with_slot(op.outputs, var, out16)
        main.add_op(at + 1, s.BuiltinOperator.QUANTIZE, [out16], [out8])  # the final state, int8 as before


def _int16_const(model: Any, src: Any, dst: Any, q8: Any, scale: float) -> None:
    """``dst`` holds the int8 constant ``src`` (quantized as ``q8``) as int16 at ``scale``."""
    raw = np.asarray(model.buffers[src.buffer].data, np.uint8).tobytes()
    real = (np.frombuffer(raw, np.int8).astype(np.float64) - int(q8.zeroPoint[0])) * float(q8.scale[0])
    set_data(model, dst, np.clip(np.round(real / scale), -32768, 32767).astype(np.int16))
