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
   biases), and puts an ``ADD``'s computed operand second where TFLite's in-place
   ``ADD`` would make the calibrator record the sum's range for it;
2. the calibrator records ranges, inside the body too, and the quantizer
   quantizes with ``allow_float``;
3. :func:`int8_loop_state` makes each loop variable int8 with the scale the
   body reads it at (TFLite's ``QUANTIZE`` requantizes int8 to int8 where two
   scales meet), drops the quantize/dequantize pairs that were around the loop
   and the copies of step 1: the state stays int8 across iterations and the
   pass-through variables are not copied again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_lstm.quantize.tflite_edit import (
    SubgraphView,
    drop_dead,
    drop_unused_buffers,
    replace_uses,
    same_quantization,
    while_loops,
    whiles,
    with_slot,
)
from edge_lstm.tflite_schema import const_array, copy_quantization, is_const, model_op_name, schema, set_data


def has_loops(model: Any) -> bool:
    """True when the model has a WHILE op."""
    return bool(whiles(model))


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
            if tensor.buffer <= 0 or not is_const(model, tensor):
                continue
            if tensor.buffer in seen:
                set_data(model, tensor, const_array(model, tensor, np.uint8))
            seen.add(tensor.buffer)
    return model


def dedupe_buffers(model: Any) -> Any:
    """Tensors with identical constant bytes share one buffer; the copies are emptied (weights stored once)."""
    first: dict[bytes, int] = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.buffer <= 0 or not is_const(model, tensor):
                continue
            raw = const_array(model, tensor, np.uint8).tobytes()
            tensor.buffer = first.setdefault(raw, tensor.buffer)
    return drop_unused_buffers(model)


def calibration_ready(model: Any) -> Any:
    """Own buffers, names for unnamed tensors, copies for pass-through loop variables, FC + ADD for run-time
    biases: what TFLite's calibrator and quantizer need."""
    s = schema()
    unshare_buffers(model)
    for gi, graph in enumerate(model.subgraphs):
        for ti, tensor in enumerate(graph.tensors):
            if not tensor.name:
                tensor.name = f"{TEMP_NAME}{gi}_{ti}".encode()
    for _, body, _, _ in while_loops(model):
        outs = list(body.graph.outputs)
        for k, (i, o) in enumerate(zip(body.graph.inputs, outs, strict=True)):
            if i == o and body.tensor(i).type == s.TensorType.FLOAT32:
                copy = body.add_tensor(body.tensor(i), body.tensor(i).type, suffix="_passthrough")
                body.graph.tensors[copy].shape = list(body.tensor(i).shape)
                shape = body.add_tensor(body.tensor(i), s.TensorType.INT32)
                body.graph.tensors[shape].shape = [len(body.tensor(i).shape)]
                set_data(model, body.graph.tensors[shape], np.asarray(body.tensor(i).shape, np.int32))
                body.add_op(len(body.graph.operators), s.BuiltinOperator.RESHAPE, [int(i), shape], [copy])
                outs[k] = copy
        body.graph.outputs = outs
    for graph in model.subgraphs:
        _split_runtime_biases(model, graph)
        _calibratable_adds(model, graph)
    return model


#: ops whose int8 output takes its input's scale: the range recorded for their output does not matter
_TIED = ("SPLIT", "SPLIT_V", "GATHER", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE")


def _calibratable_adds(model: Any, graph: Any) -> None:
    """An ADD's first input gets its own range recorded, not the sum's.

    TFLite's float ADD runs in place when its first input has no other reader, and the calibrator then records
    the sum's range for that input: a loop body's recurrent fully-connected output (``h @ R``) took the gate
    pre-activation's range, 1.5x wider than its own. Where the other input's recorded range does not matter (it
    comes from an op whose output takes its input's scale, a split of the input projection), the inputs swap.
    """
    s = schema()
    sub = SubgraphView(model, graph)
    sub.refresh()
    for k, op in enumerate(graph.operators):
        if sub.code(k) != s.BuiltinOperator.ADD or len(op.inputs) != 2 or op.builtinOptions is None:
            continue
        a, b = (int(t) for t in op.inputs)
        pa, pb = sub.producer.get(a), sub.producer.get(b)
        alone = len(sub.consumers.get(a, [])) == 1 and a not in graph.outputs
        tied = pb is not None and model_op_name(model, graph.operators[pb]) in _TIED
        if alone and pa is not None and tied and graph.tensors[a].shape is not None \
                and list(graph.tensors[a].shape) == list(graph.tensors[b].shape):
            op.inputs = [b, a]


def _split_runtime_biases(model: Any, graph: Any) -> None:
    s = schema()
    sub = SubgraphView(model, graph)
    k = 0
    while k < len(graph.operators):
        op = graph.operators[k]
        bias = int(op.inputs[2]) if sub.code(k) == s.BuiltinOperator.FULLY_CONNECTED and len(op.inputs) > 2 else -1
        if bias >= 0 and not is_const(model, graph.tensors[bias]):
            out = int(op.outputs[0])
            mid = sub.add_tensor(graph.tensors[out], graph.tensors[out].type, suffix="_nobias")
            op.inputs = [*op.inputs[:2], -1]
            op.outputs = [mid]
            sub.add_op(k + 1, s.BuiltinOperator.ADD, [mid, bias], [out])
            add = graph.operators[k + 1]
            add.builtinOptionsType, add.builtinOptions = s.BuiltinOptions.AddOptions, s.AddOptionsT()
            k += 1
        k += 1


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
    for main, body, cond, op in while_loops(model):
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
            t.type, t.quantization = schema().TensorType.INT8, copy_quantization(quant)
            converted += 1
        body.refresh()
        _drop_copies(body)
        for sub in (main, body):
            drop_dead(sub)
    return converted


def _align_update_slices(body: SubgraphView) -> None:
    """A sequence written row by row (DYNAMIC_UPDATE_SLICE) holds the rows' values: it takes their scale.

    The quantizer gives it the scale of its zero-filled initial value (range [0, 0], scale 1), which rounds
    every row written into it to -1, 0 or 1; the fill needs no particular scale (every row is overwritten).
    """
    s = schema()
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
            q_in = body.add_tensor(body.tensor(operand), s.TensorType.INT8, copy_quantization(quant), "_q")
            q_out = body.add_tensor(body.tensor(out), s.TensorType.INT8, copy_quantization(quant), "_q")
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
                    body.tensor(t).quantization = copy_quantization(body.tensor(update).quantization)
        k += 1


def _loop_scale(main: SubgraphView, body: SubgraphView, op: Any, var: int) -> Any:
    """The int8 quantization a float loop variable is read at in the body (or produced at), else None."""
    s = schema()
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


def _int8_source(sub: SubgraphView, tensor: int, quant: Any, at: int) -> int:
    """An int8 tensor with ``quant`` holding the float value ``tensor``, made with as few ops as possible.

    A DEQUANTIZE's int8 input is used directly when its scale matches, requantized otherwise; a float constant
    is quantized in place; any other float value gets a QUANTIZE op inserted at ``at``.
    """
    s = schema()
    k = sub.producer.get(tensor)
    if k is not None and sub.code(k) == s.BuiltinOperator.DEQUANTIZE:
        src = int(sub.graph.operators[k].inputs[0])
        if sub.tensor(src).type == s.TensorType.INT8:
            if same_quantization(sub.tensor(src).quantization, quant):
                return src
            out = sub.add_tensor(sub.tensor(tensor), s.TensorType.INT8, copy_quantization(quant), "_rq")
            sub.add_op(k + 1, s.BuiltinOperator.QUANTIZE, [src], [out])
            return out
    t = sub.tensor(tensor)
    if is_const(sub.model, t) and t.type == s.TensorType.FLOAT32:
        arr = const_array(sub.model, t, np.float32)
        q = np.clip(np.round(arr / quant.scale[0]) + quant.zeroPoint[0], -128, 127).astype(np.int8)
        out = sub.add_tensor(t, s.TensorType.INT8, copy_quantization(quant), "_q")
        set_data(sub.model, sub.graph.tensors[out], q)
        return out
    out = sub.add_tensor(t, s.TensorType.INT8, copy_quantization(quant), "_q")
    sub.add_op(at, s.BuiltinOperator.QUANTIZE, [tensor], [out])
    return out


def _reroute_quantizes(sub: SubgraphView, float_t: int, int8_t: int, quant: Any, skip: set[int]) -> None:
    """QUANTIZE ops reading ``float_t`` read ``int8_t`` instead (requantizing only where the scales differ)."""
    s = schema()
    for k in sub.consumers.get(float_t, []):
        op = sub.graph.operators[k]
        if k in skip or sub.code(k) != s.BuiltinOperator.QUANTIZE:
            continue
        out = int(op.outputs[0])
        if same_quantization(sub.tensor(out).quantization, quant):
            replace_uses(sub, out, int8_t)
        else:
            op.inputs = [int8_t]


def _body_side(body: SubgraphView, var: int, quant: Any) -> None:
    s = schema()
    b_in, b_out = int(body.graph.inputs[var]), int(body.graph.outputs[var])
    q_in = body.add_tensor(body.tensor(b_in), s.TensorType.INT8, copy_quantization(quant), "_q")
    _reroute_quantizes(body, b_in, q_in, quant, set())
    body.refresh()
    if body.consumers.get(b_in) or b_out == b_in:  # float readers left: dequantize once at the start
        body.add_op(0, s.BuiltinOperator.DEQUANTIZE, [q_in], [b_in])
    body.refresh()
    q_out = q_in if b_out == b_in else _int8_source(body, b_out, quant, len(body.graph.operators))
    body.graph.inputs = with_slot(body.graph.inputs, var, q_in)
    body.graph.outputs = with_slot(body.graph.outputs, var, q_out)


def _main_side(main: SubgraphView, op: Any, var: int, quant: Any) -> None:
    s = schema()
    at = main.index(op)
    q_init = _int8_source(main, int(op.inputs[var]), quant, at)
    main.refresh()
    at = main.index(op)
    op.inputs = with_slot(op.inputs, var, q_init)
    f_out = int(op.outputs[var])
    q_out = main.add_tensor(main.tensor(f_out), s.TensorType.INT8, copy_quantization(quant), "_q")
    op.outputs = with_slot(op.outputs, var, q_out)
    main.refresh()
    _reroute_quantizes(main, f_out, q_out, quant, set())
    main.refresh()
    if main.consumers.get(f_out) or f_out in main.graph.outputs:
        main.add_op(at + 1, s.BuiltinOperator.DEQUANTIZE, [q_out], [f_out])


def _drop_copies(body: SubgraphView) -> None:
    """The pass-through copies of :func:`calibration_ready`: the body's output is its input again."""
    s = schema()
    outputs = list(body.graph.outputs)
    for var, (i, o) in enumerate(zip(body.graph.inputs, body.graph.outputs, strict=True)):
        k = body.producer.get(int(o))
        if k is None or body.code(k) != s.BuiltinOperator.RESHAPE:
            continue
        src = int(body.graph.operators[k].inputs[0])
        same_int8 = same_quantization(body.tensor(src).quantization, body.tensor(int(o)).quantization)
        same_int32 = body.tensor(src).type == body.tensor(int(o)).type == s.TensorType.INT32
        if src == int(i) and (same_int8 or same_int32):
            outputs[var] = int(i)
    body.graph.outputs = outputs


def int8_io(model: Any) -> Any:
    """The main graph takes and returns int8: its input QUANTIZE and output DEQUANTIZE ops are dropped, and the
    int8 tensors next to them become the model's inputs and outputs (under the same names)."""
    s = schema()
    main = SubgraphView(model, model.subgraphs[0])
    main.refresh()
    inputs, outputs = list(main.graph.inputs), list(main.graph.outputs)
    gone: set[int] = set()  # the edge QUANTIZE/DEQUANTIZE ops
    for k, t in enumerate(inputs):
        users = main.consumers.get(int(t), [])
        if not users or any(main.code(u) != s.BuiltinOperator.QUANTIZE for u in users):
            raise ValueError(f"input {main.tensor(int(t)).name!r} is read by float ops; it cannot be int8")
        first = int(main.graph.operators[users[0]].outputs[0])
        for u in users[1:]:  # every reader uses the first QUANTIZE's int8 tensor
            replace_uses(main, int(main.graph.operators[u].outputs[0]), first)
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
    drop_dead(main)
    return model


