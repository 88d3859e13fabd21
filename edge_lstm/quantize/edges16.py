"""16-bit edges for a full-int8 loop model with float I/O: the input projection and the head in 16x8.

Measured on the reference forecaster (2 x LSTM(64), window 96, the loop lowering with
:mod:`.cell8`'s residual cells) by switching off one tensor group's rounding at a time in
a numpy model of the int8 graph: the largest single share of the int8 model's error
against PyTorch is the rounding of the **input** to int8 (19% of the squared error: a
one-step-ahead forecaster carries its latest input almost straight to its output), then
the gate pre-activations (16%), the cell state as the TANH reads it (11%), the rounding
of the **output** (9%), the hidden state (8%) and the recurrent fully-connected output
(8%); the head re-reading the last hidden state at a scale of its own adds 2%.

The ops before and after the loop run once a window, not once a step: they can be
16x8 (int16 activations, int8 weights, int64 bias: kernels LiteRT, tflite-runtime and
TFLite Micro all have) at no cost the loop body sees, and the body stays one XNNPACK
kernel. :func:`widen_edges` does that in the main graph, for a model whose inputs and
outputs are float (an int8 I/O model's edges are int8 by contract):

* an input's QUANTIZE (float to int8) and the shape-only ops after it become int16, and
  the fully-connected op reading them (the input projection) becomes 16x8, its int16
  output requantized to the int8 quantization the loop reads;
* a fully-connected op whose int8 output a DEQUANTIZE turns into a model output (the
  head) reads its input as int16 (the int8 value widened exactly, or requantized from
  another int8 scale without a second rounding to int8) and writes int16.

int16 tensors are symmetric (zero point 0, as TFLite's int16 kernels require) over the
range their int8 quantization represented: what the calibration saw, 256 times finer.
"""

from __future__ import annotations

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
#: ops that move values without changing them (one quantization in and out)
_SHAPE_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


def widen_edges(model: Any) -> int:
    """Make the main graph's input projections and heads 16x8 (module docstring); returns how many
    fully-connected ops became 16x8 (0 leaves the model as it was)."""
    s = schema()
    main = SubgraphView(model, model.subgraphs[0])
    main.refresh()
    done = 0
    for op in list(main.graph.operators):
        k = main.index(op)
        if main.code(k) != s.BuiltinOperator.FULLY_CONNECTED or not _int8_weights(main, op):
            continue
        chain = _input_chain(main, int(op.inputs[0]))
        head = _dequantized_output(main, int(op.outputs[0]))
        if chain is None and not head:
            continue
        if chain is None and not _widen_head_input(main, op):
            continue
        if chain is not None:
            for t in chain:
                _to_int16(main.tensor(t))
        _widen_fc(main, op, head)
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


def _widen_head_input(sub: SubgraphView, op: Any) -> bool:
    """The head's input as int16: a QUANTIZE (int8 to int8) read only here becomes int8 to int16, else a QUANTIZE
    widening the int8 value is inserted before the op."""
    s = schema()
    x = int(op.inputs[0])
    k = sub.producer.get(x)
    if k is not None and sub.code(k) == s.BuiltinOperator.QUANTIZE and len(_readers(sub, x)) == 1 \
            and sub.tensor(int(sub.graph.operators[k].inputs[0])).type == INT8:
        _to_int16(sub.tensor(x))
        return True
    wide = sub.add_tensor(sub.tensor(x), s.TensorType.INT16, _quant16(sub.tensor(x).quantization), "_int16")
    sub.add_op(sub.index(op), s.BuiltinOperator.QUANTIZE, [x], [wide])
    op.inputs = [wide, *[int(i) for i in op.inputs[1:]]]
    return True


def _quant16(q: Any) -> Any:
    """Symmetric int16 over the range an int8 quantization represents."""
    sc, z = float(q.scale[0]), int(q.zeroPoint[0])
    return quantization([max(abs((-128 - z) * sc), abs((127 - z) * sc)) / _INT16_MAX], [0])


def _to_int16(tensor: Any) -> None:
    tensor.type, tensor.quantization = schema().TensorType.INT16, _quant16(tensor.quantization)


def _widen_fc(sub: SubgraphView, op: Any, head: bool) -> None:
    """The op 16x8: int16 input (already), int64 bias, int16 output; an output read by int8 ops is requantized."""
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
    y = int(op.outputs[0])
    if head:
        _to_int16(sub.tensor(y))
        return
    wide_y = sub.add_tensor(sub.tensor(y), s.TensorType.INT16, _quant16(sub.tensor(y).quantization), "_int16")
    op.outputs = [wide_y]
    at = sub.index(op) + 1
    sub.add_op(at, s.BuiltinOperator.QUANTIZE, [wide_y], [y])
    sub.tensor(y).quantization = copy_quantization(sub.tensor(y).quantization)
