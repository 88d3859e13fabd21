"""16x8 quantization: int16 activations, int8 weights, int64 biases, written by edge-lstm.

TFLite's post-training quantizer refuses 16x8 for ``UNIDIRECTIONAL_SEQUENCE_LSTM``
("Quantization to 16x8-bit not yet supported for op") and, on the loop lowering,
fails for want of ranges on its loop variables. Yet TFLite Micro's fused LSTM
kernel has a 16x8 path (int16 input, hidden state and output, int8 weights,
int16 cell, int64 biases), and the loop lowering's ops (FULLY_CONNECTED, ADD,
MUL, LOGISTIC, TANH, SPLIT, CONCATENATION, ...) all have int16 kernels.

So the activation ranges come from the same calibration as full int8 (TFLite's
calibrator on the same windows, :mod:`.tflite`), and this module widens the int8
model it produces, tensor by tensor:

* every int8 activation (not a constant) becomes int16, symmetric (zero point 0,
  which TFLite's int16 kernels require), over :data:`HEADROOM` times the range its int8 quantization
  represents: ``scale16 = HEADROOM * max(|(-128 - z) s|, |(127 - z) s|) / 32767`` (2^-15 for what a logistic
  or tanh produces: TFLite's int16 kernels for those want exactly that output scale). int8 needs
  every level inside the calibrated range; int16 has 256 times as many and can spend a few on inputs
  past it: over the bare calibrated range, random validation windows (``--calib`` without ``--data``)
  clipped and missed the 16x8 gate (relative L2 0.057 fused, 0.063 loop, on the tests' forecaster),
  against 0.0008 with the headroom, real held-out windows unchanged (0.0005, 0.0011). The rule
  depends only on (scale, zero point), so tensors that must share a scale (a
  RESHAPE's input and output, the fused LSTM's output and hidden state, a loop
  variable inside and outside the body, a CONCATENATION's inputs) still do;
* int8 weights keep their scales (symmetric, one a tensor: what TFLite Micro's
  LSTM kernel takes); in a model without loops the fused LSTM's and the
  fully-connected layers' values are then re-rounded by GPTQ
  (:func:`round_weights`), since with int16 activations the weights' rounding is
  the error that is left;
* each int32 bias becomes int64 at scale ``input scale x weight scale``, the
  accumulator's (TFLite Micro's 16x8 LSTM and FULLY_CONNECTED kernels read int64
  biases); its float value is the int32 value times its scale, off the true bias
  by at most half the int8 accumulator step (a few 1e-5 in the gates' inputs, far
  under their int16 resolution);
* the int16 tensors already there are kept: the fused LSTM's cell state (its
  scale a power of two, as TFLite Micro's kernel checks) and the loop lowering's
  int16 cell (:mod:`.cell16`), whose CAST ops (int8 to int16 at one scale) are
  dropped: their input is int16 now;
* requantizing QUANTIZE ops (int16 cell values to int8 hidden states) now
  requantize int16 to int16, and the model's QUANTIZE/DEQUANTIZE at the edges
  take float to int16 and back.

The fused LSTM's calibrator intermediates stay in the file: TFLite Micro ignores
them (its 16x8 kernel fixes the gates' scales at 2^-12 in and 2^-15 out).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_lstm import tflite_schema as ts
from edge_lstm.errors import UnsupportedModel

_INT16_MAX = 32767.0
#: int16 activations cover this many times their calibrated (int8) range: still 64 times finer than int8
HEADROOM = 4.0



def _is_const(model: Any, tensor: Any) -> bool:
    return bool(tensor.buffer > 0 and model.buffers[tensor.buffer].data is not None
                and len(model.buffers[tensor.buffer].data) > 0)


#: TFLite's fixed int8 output quantizations of LOGISTIC (1/256, -128) and TANH (1/128, 0): their int16 kernels
#: want 2^-15, which also covers the ranges [0, 1) and [-1, 1) those represent
_FIXED_GATES = {(1.0 / 256.0, -128), (1.0 / 128.0, 0)}


def _scale16(q: Any) -> float:
    """The symmetric int16 scale covering what an int8 quantization (scale, zero point) represents."""
    s, z = float(q.scale[0]), int(q.zeroPoint[0])
    if (s, z) in _FIXED_GATES:
        return 1.0 / 32768.0
    return HEADROOM * max(abs((-128 - z) * s), abs((127 - z) * s)) / _INT16_MAX


def _quant16(scale: float) -> Any:
    return ts.quantization([float(scale)], [0], 0)


def _op_names(model: Any) -> dict[int, str]:
    return {i: ts.op_name(ts.builtin(c)) for i, c in enumerate(model.operatorCodes)}


#: op -> input slots holding int8 weights (kept int8)
_WEIGHT_SLOTS = {"FULLY_CONNECTED": (1,), "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9))}
#: op -> input slots holding biases (int32 in the int8 model, int64 here)
_BIAS_SLOTS = {"FULLY_CONNECTED": (2,), "UNIDIRECTIONAL_SEQUENCE_LSTM": (12, 13, 14, 15)}
#: the slot whose scale times the bias's weight scale is the bias scale, and that weight slot, per bias slot
_BIAS_OPERANDS = {("FULLY_CONNECTED", 2): (0, 1), ("UNIDIRECTIONAL_SEQUENCE_LSTM", 12): (0, 1),
                  ("UNIDIRECTIONAL_SEQUENCE_LSTM", 13): (0, 2), ("UNIDIRECTIONAL_SEQUENCE_LSTM", 14): (0, 3),
                  ("UNIDIRECTIONAL_SEQUENCE_LSTM", 15): (0, 4)}


def widen(int8_model: bytes) -> bytes:
    """The 16x8 form of a full-int8 TFLite model (see the module docstring)."""

    s = ts.schema()
    model = ts.unpack(int8_model)
    ops = _op_names(model)
    _check_ops(model, ops)
    i8, i16, i32, i64 = s.TensorType.INT8, s.TensorType.INT16, s.TensorType.INT32, s.TensorType.INT64
    for graph in model.subgraphs:
        weights = {int(op.inputs[k]) for op in graph.operators for k in _WEIGHT_SLOTS.get(ops[op.opcodeIndex], ())
                   if k < len(op.inputs) and op.inputs[k] >= 0}
        for index, t in enumerate(graph.tensors):
            q = t.quantization
            if t.type != i8 or index in weights or q is None or q.scale is None or len(q.scale) != 1:
                continue
            scale = _scale16(q)
            if _is_const(model, t):  # an int8 constant that is not a weight: an initial state, a padding value
                _set_int16(model, t, q, scale)
            t.type, t.quantization = i16, _quant16(scale)
        _drop_casts(graph, ops)
    for graph in model.subgraphs:
        for op in graph.operators:
            name = ops[op.opcodeIndex]
            if name == "FULLY_CONNECTED" and op.builtinOptions is not None and graph.tensors[op.inputs[0]].type == i16:
                op.builtinOptions.quantizedBiasType = i64  # LiteRT checks the bias against this
            for slot in _BIAS_SLOTS.get(name, ()):
                if slot < len(op.inputs) and op.inputs[slot] >= 0:
                    bias = graph.tensors[op.inputs[slot]]
                    if bias.type == i32 and _is_const(model, bias):
                        x_slot, w_slot = _BIAS_OPERANDS[(name, slot)]
                        _widen_bias(model, bias, graph.tensors[op.inputs[x_slot]], graph.tensors[op.inputs[w_slot]])
                        bias.type = i64
    used = {t.buffer for g in model.subgraphs for t in g.tensors}
    for i, buf in enumerate(model.buffers):
        if i > 0 and i not in used:  # the int32 biases and int8 constants replaced above
            buf.data = None
    return ts.pack(model)


def _set_int16(model: Any, tensor: Any, q: Any, scale: float) -> None:
    raw = np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8).tobytes()
    real = (np.frombuffer(raw, dtype=np.int8).astype(np.float64) - int(q.zeroPoint[0])) * float(q.scale[0])
    _store(model, tensor, np.clip(np.round(real / scale), -32768, 32767).astype(np.int16))


def _store(model: Any, tensor: Any, arr: np.ndarray) -> None:
    ts.set_data(model, tensor, arr)


def _widen_bias(model: Any, bias: Any, x: Any, w: Any) -> None:
    """Re-store an int32 bias as int64 at the int16 input's scale times the weights' (per channel if they are)."""
    raw = np.asarray(model.buffers[bias.buffer].data, dtype=np.uint8).tobytes()
    values = np.frombuffer(raw, dtype=np.int32).astype(np.float64) * np.asarray(bias.quantization.scale, np.float64)
    new_scale = float(x.quantization.scale[0]) * np.asarray(w.quantization.scale, np.float64)
    _store(model, bias, np.round(values / new_scale).astype(np.int64))
    n = len(bias.quantization.scale)
    bias.quantization = ts.quantization([float(v) for v in np.broadcast_to(new_scale, (n,))], [0] * n,
                                        bias.quantization.quantizedDimension)


def _drop_casts(graph: Any, ops: dict[int, str]) -> None:
    """Remove CASTs whose input and output are both int16 now (the int16 cell's int8 -> int16 widening)."""
    i16 = ts.schema().TensorType.INT16
    keep, alias = [], {}
    for op in graph.operators:
        if ops[op.opcodeIndex] == "CAST" and all(graph.tensors[t].type == i16 for t in (*op.inputs, *op.outputs)):
            alias[int(op.outputs[0])] = int(op.inputs[0])
            continue
        keep.append(op)
    if not alias:
        return
    for op in keep:
        op.inputs = [alias.get(int(t), int(t)) if t >= 0 else t for t in op.inputs]
    graph.outputs = [alias.get(int(t), int(t)) for t in graph.outputs]
    graph.operators = keep


#: ops seen in the int8 models of both lowerings whose kernels also take int16 (LiteRT and TFLite Micro)
_INT16_OPS = frozenset({
    "QUANTIZE", "DEQUANTIZE", "RESHAPE", "STRIDED_SLICE", "SLICE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "SPLIT",
    "CONCATENATION", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "LOGISTIC", "TANH", "CAST", "WHILE", "LESS",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "TRANSPOSE", "PACK", "UNPACK",
})
#: ops a TFLite lowering writes for a recurrent layer (another lowering may not): the refusal's hint names it only
#: when one of these is the op refused
_LOWERING_OPS = frozenset({"WHILE", "LESS", "GATHER", "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                           "BIDIRECTIONAL_SEQUENCE_LSTM", "SELECT_V2", "DYNAMIC_UPDATE_SLICE"})
#: the TFLite builtins the 16x8 quantizer widens to int16 activations, their kernels checked in int16 on LiteRT and
#: TFLite Micro (a model with any other op is refused); public: ``edge-lstm ops`` lists the 16x8 forms from it
INT16_OPS: frozenset[str] = _INT16_OPS


def _check_ops(model: Any, ops: dict[int, str]) -> None:
    """Refuse a model with an op this module has not checked in int16 (its kernel may have no int16 path)."""
    projected = any(ops[op.opcodeIndex] == "UNIDIRECTIONAL_SEQUENCE_LSTM" and len(op.inputs) > 16 and op.inputs[16] >= 0
                    for g in model.subgraphs for op in g.operators)
    if projected:
        raise UnsupportedModel(
            "int16x8 cannot take a fused LSTM with a projection (proj_size): TFLite Micro's LSTM kernel has no "
            "projection, and LiteRT's fused LSTM kernel has no 16x8 path, so no runtime would run the file.",
            "Use --precision int8 for this model (LiteRT runs its fused int8 LSTM).",
        )
    seen = sorted({ops[op.opcodeIndex] for g in model.subgraphs for op in g.operators} - _INT16_OPS)
    if seen:
        raise UnsupportedModel(
            f"int16x8 does not handle the op(s) {', '.join(seen)} in this model (edge-lstm widens only ops whose "
            f"int16 kernels it has checked: {', '.join(sorted(_INT16_OPS))}).",
            "Use --precision int8 (its kernels take these ops)" + (
                ", or another lowering (--lowering fused or loop): the lowering wrote "
                f"{', '.join(set(seen) & _LOWERING_OPS)}" if set(seen) & _LOWERING_OPS else
                "; no other lowering helps: the op(s) are the model's own, outside its LSTM layers") + ".",
        )


def to_int16x8(float_tflite: bytes, calib: Any, count: int) -> Any:
    """The 16x8 model of ``float_tflite``: calibrated like full int8 (one weight scale a tensor, the loop lowering's
    cell in int16), widened (:func:`widen`), its weights re-rounded (:func:`round_weights`); returns a
    :class:`~edge_lstm.quantize.artifact.QuantizedArtifact`."""
    from edge_lstm.quantize import tflite as tfl
    from edge_lstm.quantize.artifact import QuantizedArtifact
    from edge_lstm.spec import Precision

    int8, cal = tfl.calibrated_int8(float_tflite, calib, count)
    feeds = cal.feeds()[:: max(1, cal.count // _GPTQ_FEEDS)]
    data, rounded = round_weights(float_tflite, widen(int8), feeds)
    model = ts.unpack(data)
    ops = _op_names(model)
    fused = any(ops[op.opcodeIndex] == "UNIDIRECTIONAL_SEQUENCE_LSTM" for g in model.subgraphs for op in g.operators)
    scales = "per-tensor"
    if len(model.subgraphs) > 1:  # a loop: its weights keep nearest rounding, one scale a channel may be worth it
        data, scales = _pick_scales(float_tflite, data, widen(tfl.calibrated_int8(float_tflite, cal, count,
                                                                                    per_tensor=False)[0]), cal)
    notes = [f"int16 activations (zero point 0), {scales} int8 weights, int64 bias, "
             f"{'int16 LSTM cell state (a power-of-two scale)' if fused else 'the LSTM cell and state int16'}; "
             f"ranges from TFLite's calibrator on {cal.count} {cal.unit} ({cal.source}), widened by edge-lstm."]
    if rounded:
        notes.append(f"int8 weights of {rounded} layers rounded by GPTQ (each weight's rounding error compensated "
                     f"on the weights not yet rounded, weighted by the layer's inputs on {len(feeds)} calibration "
                     "windows): with int16 activations the weights' rounding is the error left.")
    if fused:
        notes.append(f"for TFLite Micro: {FUSED_LITERT_REFUSAL}")
    if cal.random:
        notes.append("CALIBRATED ON RANDOM DATA (--calib random): activation ranges are guesses, "
                     "expect a larger error than with real windows.")
    return QuantizedArtifact(data, Precision.INT16X8, notes)


#: a loop's per-channel weights (their scales cost ~20% of the file) are kept when their error on the calibration
#: windows is at most this fraction of the per-tensor weights'
_PER_CHANNEL_GAIN = 0.9


def _pick_scales(float_tflite: bytes, per_tensor: bytes, per_channel: bytes, cal: Any) -> tuple[bytes, str]:
    """The loop's 16x8 model with one weight scale a channel where that is measurably more accurate on the
    calibration windows than one a tensor (deterministic: measured error, no timing), and what was kept."""
    from edge_lstm.quantize import tflite as tfl

    feeds = cal.feeds()[:: max(1, cal.count // 16)][:16]
    ref = tfl._run_all(float_tflite, feeds)
    e_t, e_c = (tfl._rel_l2(ref, tfl._run_all(d, feeds)) for d in (per_tensor, per_channel))
    if e_c <= _PER_CHANNEL_GAIN * e_t:
        return per_channel, f"per-channel (relative L2 {e_c:.3g} on the calibration windows, per-tensor {e_t:.3g})"
    return per_tensor, f"per-tensor (relative L2 {e_t:.3g} on the calibration windows, per-channel {e_c:.3g})"


#: what LiteRT's fused LSTM kernel says to a 16x8 model (it has an integer path for int8 activations only)
FUSED_LITERT_REFUSAL = ("LiteRT and tflite-runtime have no 16x8 fused LSTM kernel (theirs refuses it: "
                        "\"input_gate_bias->type != kTfLiteFloat32 (INT64 != FLOAT32)\"); run the loop lowering's "
                        "16x8 artifact there.")


#: calibration windows (evenly spread) whose layer inputs weight the rounding of the int8 weights
_GPTQ_FEEDS = 64
#: per layer kind: the weight slots read by each output group (an LSTM gate reads the input through weights 1-4
#: and the previous hidden state through 5-8), rounded together
_ROUNDED = {"UNIDIRECTIONAL_SEQUENCE_LSTM": ((1, 5), (2, 6), (3, 7), (4, 8)), "FULLY_CONNECTED": ((1,),)}
#: GPTQ's damping: this fraction of the mean diagonal of the inputs' second moments is added to it
_DAMP = 0.01


def round_weights(float_tflite: bytes, data: bytes, feeds: list[list[np.ndarray]]) -> tuple[bytes, int]:
    """Re-round the int8 weights of the main graph's fused LSTM and fully-connected layers with GPTQ (Frantar et al.,
    2023): at the same scales, column by column, each weight's rounding error is compensated on the weights not
    yet rounded in its row, through the inverse of the layer inputs' second moments ``E[z z^T]`` (for an LSTM
    gate, ``z`` is the layer input and the previous hidden state), measured on the float model over ``feeds``.

    With int16 activations, nearest rounding of the weights is nearly all of the error that is left, and part of
    it is systematic: on the tests' forecaster the float model with the same int8 weights was +0.0009 off on
    average and its forecast MAE +1.5% (the 16x8 file's were the same); GPTQ's weights took the 16x8 file's
    offset to -0.0002 and its MAE change to -0.2% on TFLite Micro. Scales, and so biases, are unchanged.
    Models with loops, or whose weights several ops share (the unrolled lowering), are left as they are (a loop
    body's inputs are not kept between iterations). Returns the model and how many layers were re-rounded."""

    model, flt = ts.unpack(data), ts.unpack(float_tflite)
    qops, fops = _layers(model), _layers(flt)
    if len(model.subgraphs) > 1 or len(flt.subgraphs) > 1 or not feeds or not qops \
            or [n for n, _ in qops] != [n for n, _ in fops] or _shared_weights(qops):
        return data, 0
    stats = _layer_inputs(float_tflite, [(n, op) for n, op in fops], feeds)
    g, fg = model.subgraphs[0], flt.subgraphs[0]
    for (name, op), (_, fop), z in zip(qops, fops, stats, strict=True):
        u = _inverse_cholesky(z)
        for slots in _ROUNDED[name]:
            blocks = [(g.tensors[op.inputs[k]], fg.tensors[fop.inputs[k]]) for k in slots]
            w = np.hstack([_float_weight(flt, tf) for _, tf in blocks])
            scale = np.hstack([np.broadcast_to(np.asarray(tq.quantization.scale, np.float64).reshape(-1, 1),
                                               (tq.shape[0], int(np.prod(tq.shape[1:])))) for tq, _ in blocks])
            q = _gptq(w, scale, u)
            col = 0
            for tq, _ in blocks:
                width = int(np.prod(tq.shape[1:]))
                _store(model, tq, q[:, col:col + width].reshape(tuple(tq.shape)).astype(np.int8))
                col += width
    used = {t.buffer for t in g.tensors}
    for i, buf in enumerate(model.buffers):
        if i > 0 and i not in used:
            buf.data = None
    return ts.pack(model), len(qops)


def _layers(model: Any) -> list[tuple[str, Any]]:
    """The main graph's LSTM and fully-connected ops, in order."""
    ops = _op_names(model)
    return [(ops[op.opcodeIndex], op) for op in model.subgraphs[0].operators if ops[op.opcodeIndex] in _ROUNDED]


def _shared_weights(layers: list[tuple[str, Any]]) -> bool:
    slots = [int(op.inputs[k]) for name, op in layers for group in _ROUNDED[name] for k in group]
    return len(slots) != len(set(slots))


def _float_weight(model: Any, tensor: Any) -> np.ndarray:
    raw = np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes()
    return np.frombuffer(raw, np.float32).astype(np.float64).reshape(tensor.shape[0], -1)


def _inverse_cholesky(z: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor of the damped inverse of ``E[z z^T]`` (GPTQ's error-propagation matrix)."""
    h = z.T @ z / len(z)
    h += _DAMP * float(np.mean(np.diag(h)) or 1.0) * np.eye(len(h))
    return np.asarray(np.linalg.cholesky(np.linalg.inv(h)).T)


def _gptq(w: np.ndarray, scale: np.ndarray, u: np.ndarray) -> np.ndarray:
    """int8 values of ``w`` (``[out, in]``, ``scale`` alike), column by column with the error compensated."""
    w = w.copy()
    q = np.zeros_like(w)
    for i in range(w.shape[1]):
        q[:, i] = np.clip(np.round(w[:, i] / scale[:, i]), -127, 127)
        err = (w[:, i] - q[:, i] * scale[:, i]) / u[i, i]
        w[:, i + 1:] -= np.outer(err, u[i, i + 1:])
    return q


def _layer_inputs(float_tflite: bytes, layers: list[tuple[str, Any]], feeds: list[list[np.ndarray]]) -> list[
        np.ndarray]:
    """Per layer, its inputs over every step of ``feeds`` as rows (an LSTM's beside the previous hidden state).
    Windows of several steps start from a zero state; one-step feeds follow each other, as they are calibrated."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "for debugging": it keeps every intermediate tensor, which is what is read
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=float_tflite, num_threads=1, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    ins = interp.get_input_details()
    rows: list[list[np.ndarray]] = [[] for _ in layers]
    last: list[np.ndarray | None] = [None for _ in layers]
    for feed in feeds:
        steps = max((int(np.prod(d["shape"][:-1])) for d in ins), default=1)
        if steps > 1:
            interp.reset_all_variables()
            last = [None for _ in layers]
        for d, x in zip(ins, feed, strict=True):
            interp.set_tensor(d["index"], np.asarray(x, np.float32))
        interp.invoke()
        for k, (name, op) in enumerate(layers):
            x = np.asarray(interp.get_tensor(int(op.inputs[0])), np.float64)
            x = x.reshape(-1, x.shape[-1])
            if name == "FULLY_CONNECTED":
                rows[k].append(x)
                continue
            h = np.asarray(interp.get_tensor(int(op.outputs[0])), np.float64)
            h = h.reshape(-1, h.shape[-1])
            before = last[k]
            prev = before if before is not None else np.zeros((1, h.shape[1]))
            rows[k].append(np.hstack([x, np.vstack([prev, h[:-1]])]))
            last[k] = h[-1:]
    return [np.vstack(r) for r in rows]
