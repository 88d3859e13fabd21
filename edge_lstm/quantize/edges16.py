"""The edges of a full-int8 loop model with float I/O made nearly exact: its input projection and its head.

Measured on the reference forecaster (2 x LSTM(64), window 96, the loop lowering with
:mod:`.cell8`'s residual cells) by switching off one tensor group's rounding at a time in
a numpy model of the int8 graph (the method is in the README's full-int8 section): the
largest single share of the int8 model's squared error against PyTorch was the rounding
of the **input** to int8 (19%: a one-step-ahead forecaster carries its latest input
almost straight to its output), then the gate pre-activations (16%), the cell state as
the TANH reads it (11%), the rounding of the **output** (9%), the hidden state (8%) and
the recurrent fully-connected output (8%); the head re-reading the last hidden state at a
scale of its own added 2%. Clipping any of those ranges (a fraction of the calibrated
min/max) measured no better than the calibrated ranges.

The ops before and after the loop run once a window, not once a step, and the loop body
is not touched (it stays one XNNPACK kernel). :func:`widen_edges`, in the main graph of a
model whose inputs and outputs are float (an int8 I/O model's edges are int8 by contract):

* **the input projection** stays one int8 fully-connected op (XNNPACK's: the same op in
  16x8 ran on TFLite's int16 kernels, one value at a time, and cost 0.8x the whole loop),
  reading the input quantized to int16 and split, by int16 ops over the input's few
  values, into its int8 value ``x_hi`` and ``K`` times its rounding residual, against the
  weights ``[W, W / K]`` (:data:`SPLIT`): the input's error is ~1/16 of int8's;
* **the head** (a fully-connected op whose int8 output a DEQUANTIZE makes a model output)
  is 16x8: int16 input (the loop's int8 hidden state dequantized and quantized to int16,
  exact; it was requantized to another int8 scale), int8 weights, int64 bias, int16
  output.

int16 tensors are symmetric (zero point 0, as TFLite's int16 kernels require) over the
range their int8 quantization represented: what the calibration saw, 256 times finer.
The kernels are LiteRT's, tflite-runtime 2.14's and TFLite Micro's (none of them has an
int8 to int16 QUANTIZE, or an int8-in int16-out fully-connected op, in all three).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edge_lstm.quantize.tflite_edit import SubgraphView, drop_dead, drop_unused_buffers
from edge_lstm.tflite_schema import (
    INT8,
    const_array,
    copy_quantization,
    is_const,
    model_op_name,
    quantization,
    schema,
    set_data,
)

_INT16_MAX = 32767.0
#: the input's rounding residual enters the input projection this many times larger, against weights this many
#: times smaller (the two roundings it adds balance near 16: ~1/32 of the int8 input's step each)
SPLIT = 16.0
#: ops that move values without changing them (one quantization in and out)
_SHAPE_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


def widen_edges(model: Any) -> int:
    """Split the main graph's input projections' inputs and make its heads 16x8 (module docstring); returns how
    many fully-connected ops changed (0 leaves the model as it was)."""
    s = schema()
    main = SubgraphView(model, model.subgraphs[0])
    main.refresh()
    done = 0
    for op in list(main.graph.operators):
        k = main.index(op)
        if main.code(k) != s.BuiltinOperator.FULLY_CONNECTED or not _int8_weights(main, op):
            continue
        chain = _input_chain(main, int(op.inputs[0]))
        if chain is not None:
            _split_input(main, op, chain)
        elif _dequantized_output(main, int(op.outputs[0])):
            _widen_head_input(main, op)
            _widen_head(main, op)
        else:
            continue
        done += 1
        main.refresh()
    if done:
        drop_dead(main)
        drop_unused_buffers(model)
    return done


def _int8_weights(sub: SubgraphView, op: Any) -> bool:
    w = sub.tensor(int(op.inputs[1]))
    x, y = sub.tensor(int(op.inputs[0])), sub.tensor(int(op.outputs[0]))
    return bool(w.type == INT8 and is_const(sub.model, w) and x.type == INT8 and y.type == INT8
                and len(x.quantization.scale) == 1 and len(y.quantization.scale) == 1)


def _readers(sub: SubgraphView, t: int) -> list[int]:
    return sub.consumers.get(t, [])


def _input_chain(sub: SubgraphView, t: int) -> list[int] | None:
    """The int8 tensors from a model input's QUANTIZE to ``t`` through shape-only ops (each read once), or None."""
    s = schema()
    chain = []
    while True:
        if len(_readers(sub, t)) != 1 or t in sub.graph.outputs:
            return None
        chain.append(t)
        k = sub.producer.get(t)
        if k is None:
            return None
        op = sub.graph.operators[k]
        if sub.code(k) == s.BuiltinOperator.QUANTIZE:
            src = int(op.inputs[0])
            return chain if src in [int(i) for i in sub.graph.inputs] and sub.tensor(src).type != INT8 else None
        if _name(sub, k) not in _SHAPE_OPS:
            return None
        t = int(op.inputs[0])


def _name(sub: SubgraphView, k: int) -> str:
    return model_op_name(sub.model, sub.graph.operators[k])


def _dequantized_output(sub: SubgraphView, t: int) -> bool:
    """True when ``t`` is read only by DEQUANTIZE ops producing model outputs."""
    users = _readers(sub, t)
    outs = {int(o) for o in sub.graph.outputs}
    return bool(users) and t not in outs and all(
        _name(sub, u) == "DEQUANTIZE" and int(sub.graph.operators[u].outputs[0]) in outs for u in users)


def _widen_head_input(sub: SubgraphView, op: Any) -> None:
    """The head's input as int16: its int8 value (before any requantizing QUANTIZE, which is then dropped: its
    rounding is not needed) dequantized and quantized to int16, exact at int16's step (tflite-runtime 2.14 has no
    int8 to int16 QUANTIZE, and a CAST, which TFLite Micro has, would keep the int8 zero point: int16 is symmetric)."""
    s = schema()
    x = int(op.inputs[0])
    k = sub.producer.get(x)
    src = x
    if k is not None and sub.code(k) == s.BuiltinOperator.QUANTIZE and len(_readers(sub, x)) == 1 \
            and sub.tensor(int(sub.graph.operators[k].inputs[0])).type == INT8:
        src = int(sub.graph.operators[k].inputs[0])  # the loop's int8 value, before the requantizing QUANTIZE
    real = sub.add_tensor(sub.tensor(x), s.TensorType.FLOAT32, None, "_float")
    wide = sub.add_tensor(sub.tensor(x), s.TensorType.INT16, _quant16(sub.tensor(src).quantization), "_int16")
    at = sub.index(op)
    sub.add_op(at, s.BuiltinOperator.DEQUANTIZE, [src], [real])
    sub.add_op(at + 1, s.BuiltinOperator.QUANTIZE, [real], [wide])
    op.inputs = [wide, *[int(i) for i in op.inputs[1:]]]


def _quant16(q: Any) -> Any:
    """Symmetric int16 over the range an int8 quantization represents."""
    sc, z = float(q.scale[0]), int(q.zeroPoint[0])
    return quantization([max(abs((-128 - z) * sc), abs((127 - z) * sc)) / _INT16_MAX], [0])


def _to_int16(tensor: Any) -> None:
    tensor.type, tensor.quantization = schema().TensorType.INT16, _quant16(tensor.quantization)


def _widen_head(sub: SubgraphView, op: Any) -> None:
    """The head 16x8: int16 input (already), int64 bias at the int16 input's scale times the weights', int16
    output."""
    s = schema()
    x, w = sub.tensor(int(op.inputs[0])), sub.tensor(int(op.inputs[1]))
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = sub.tensor(int(op.inputs[2]))
        values = const_array(sub.model, bias, np.int32).astype(np.float64) * np.asarray(bias.quantization.scale)
        scale = float(x.quantization.scale[0]) * np.asarray(w.quantization.scale, np.float64)
        scale = np.broadcast_to(scale, values.shape)
        wide = sub.add_tensor(bias, s.TensorType.INT64, quantization([float(v) for v in scale], [0] * len(values)),
                              "_int64")
        set_data(sub.model, sub.tensor(wide), np.round(values / scale).astype(np.int64))
        op.inputs = [int(op.inputs[0]), int(op.inputs[1]), wide]
    if op.builtinOptions is not None:
        op.builtinOptions.quantizedBiasType = s.TensorType.INT64  # LiteRT checks the bias against this
    _to_int16(sub.tensor(int(op.outputs[0])))


def _split_input(sub: SubgraphView, op: Any, chain: list[int]) -> None:
    """The input projection of an int8 input, made ~16 times finer and still one int8 op (XNNPACK's): the input is
    quantized to int16 and split into its int8 value ``x_hi`` (the quantization the model had) and ``K`` times its
    rounding residual ``x_lo`` (int8 at ``x_hi``'s quantization, from int16 ops over the input's few values); the
    op reads ``[x_hi, K x_lo]`` against the weights ``[W, W / K]`` (one rounding of the projection, as before).
    ``x_lo``'s rounding and the rounding of ``W / K`` each leave ~1/(2K) of the input's int8 error.
    (The whole projection in 16x8 cost more than the loop: TFLite's int16 kernels, one value at a time.)"""
    s = schema()
    ops = s.BuiltinOperator
    x8 = chain[-1]  # the QUANTIZE's int8 output; chain[0] is what the op reads
    q_op = sub.graph.operators[sub.producer[x8]]
    q8 = sub.tensor(x8).quantization
    like = sub.tensor(x8)
    x16 = sub.add_tensor(like, s.TensorType.INT16, _quant16(q8), "_int16")
    q_op.outputs = [x16]
    hi16, lo16 = (sub.add_tensor(like, s.TensorType.INT16, _quant16(q8), n) for n in ("_hi16", "_lo16"))
    s16 = float(_quant16(q8).scale[0])
    klo16 = sub.add_tensor(like, s.TensorType.INT16, quantization([s16 * SPLIT], [0]), "_klo16")
    k = sub.add_tensor(like, s.TensorType.INT16, quantization([SPLIT], [0]), "_k")
    sub.tensor(k).shape = [1]
    set_data(sub.model, sub.tensor(k), np.ones(1, np.int16))
    lo8 = sub.add_tensor(like, INT8, copy_quantization(q8), "_lo")
    at = sub.index(q_op) + 1
    # x_hi again, as int16 (TFLite's grid for x8 is the same: its zero point is whole); from x16, not x8:
    # tflite-runtime 2.14 has no int8 to int16 QUANTIZE
    sub.tensor(hi16).quantization = quantization([float(q8.scale[0])], [0])
    for code, ins, out in ((ops.QUANTIZE, [x16], x8), (ops.QUANTIZE, [x16], hi16), (ops.SUB, [x16, hi16], lo16),
                           (ops.MUL, [lo16, k], klo16), (ops.QUANTIZE, [klo16], lo8)):
        sub.add_op(at, code, ins, [out])
        new = sub.graph.operators[at]
        if code == ops.SUB:
            new.builtinOptionsType, new.builtinOptions = s.BuiltinOptions.SubOptions, s.SubOptionsT()
            new.builtinOptions.potScaleInt16 = False  # any int16 scale (the default wants powers of two)
        elif code == ops.MUL:
            new.builtinOptionsType, new.builtinOptions = s.BuiltinOptions.MulOptions, s.MulOptionsT()
        at += 1
    sub.refresh()
    # the shape-only ops between the input and the op, again for K x_lo
    lo = lo8
    for t in reversed(chain[:-1]):
        shape_op = sub.graph.operators[sub.producer[t]]
        nxt = sub.add_tensor(sub.tensor(t), INT8, copy_quantization(q8), "_lo")
        twin = copy.deepcopy(shape_op)
        twin.inputs, twin.outputs = [lo, *[int(i) for i in shape_op.inputs[1:]]], [nxt]
        sub.graph.operators.insert(sub.index(op), twin)
        lo = nxt
    x_in = sub.tensor(int(op.inputs[0]))
    both = sub.add_tensor(x_in, INT8, copy_quantization(q8), "_split")
    sub.tensor(both).shape = [*list(x_in.shape[:-1]), 2 * int(x_in.shape[-1])]
    sub.add_op(sub.index(op), ops.CONCATENATION, [int(op.inputs[0]), lo], [both])
    cat = sub.graph.operators[sub.index(op) - 1]
    cat.builtinOptionsType, cat.builtinOptions = s.BuiltinOptions.ConcatenationOptions, s.ConcatenationOptionsT()
    cat.builtinOptions.axis = len(x_in.shape) - 1
    w = sub.tensor(int(op.inputs[1]))
    wq = const_array(sub.model, w, np.int8).reshape(w.shape).astype(np.int32)
    wide = sub.add_tensor(w, INT8, copy_quantization(w.quantization), "_split")
    sub.tensor(wide).shape = [int(w.shape[0]), 2 * int(w.shape[1])]
    set_data(sub.model, sub.tensor(wide), np.concatenate([wq, np.round(wq / SPLIT)], axis=1).astype(np.int8))
    op.inputs = [both, wide, *[int(i) for i in op.inputs[2:]]]
