"""Quantize a float TFLite model: fp16, dynamic int8 (hybrid) and full int8 (calibrated).

* **fp16**: constant float32 tensors (weights, biases) are stored as FLOAT16 and
  expanded by DEQUANTIZE ops at the start of the graph; compute stays float32,
  which is what TFLite's CPU kernels do with float16 weights anyway.
* **dynamic-int8**: TFLite's hybrid kernels. LSTM weights become int8 with one
  symmetric scale per tensor (op version 2, inputs quantized symmetrically per
  call: ``asymmetric_quantize_inputs`` makes the fused kernel several times
  slower, see ``FACTS.md``); FULLY_CONNECTED weights likewise, except the op that
  produces a model output (the head), whose input rounding would land directly on
  the forecast. TFLite Micro has no hybrid kernels: run these on LiteRT.
* **int8**: TFLite's own post-training quantizer, shipped in ``ai-edge-litert``
  (``_pywrap_tensorflow_lite_calibration_wrapper``): intermediates added for the
  integer LSTM, activation ranges recorded on the calibration windows, then int8
  activations and weights (per channel), int16 LSTM cell state and int32 bias.
  We use it rather than re-deriving the integer LSTM's many scales: it is the
  reference those kernels were written against. ``io="int8"`` makes inputs and
  outputs int8 too; their scale and zero point go into ``io_quant``. An LSTM cell
  written in plain ops gets, in a loop (the loop lowering), :mod:`.cell8`'s residual
  int8 cell (rewritten in float before calibration; every op one XNNPACK runs), and
  in a one-step explicit-state graph an int16 cell state and int16 gate arithmetic
  (:mod:`.cell16`); a loop's per-channel candidate is derived from the per-tensor
  one (:mod:`.channels`); a loop model with float I/O gets its input projection and
  head, outside the loop, nearly exact (:mod:`.edges16`); known output ranges (a
  one-step model's latest-step outputs) are applied last (:mod:`.ranges`).
* **int16x8**: the same calibration, widened to int16 activations with int8 weights and int64 biases by
  :mod:`.int16x8` (TFLite's quantizer refuses 16x8 for the fused LSTM).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from edge_lstm.errors import DataError, UnsupportedModel, UsageError
from edge_lstm.quantize import cell8, cell16, channels, edges16, loops
from edge_lstm.quantize.artifact import QuantizedArtifact
from edge_lstm.quantize.calibration import DEFAULT_COUNT, CalibrationSet, calibration_windows
from edge_lstm.quantize.ranges import set_output_ranges
from edge_lstm.quantize.tflite_edit import drop_unused_buffers
from edge_lstm.spec import Precision, TensorSpec
from edge_lstm.tflite_schema import (
    FLOAT32,
    const_array,
    model_op_name,
    op_builtin,
    opcode_index,
    pack,
    quantization,
    schema,
    set_data,
    tensor_name,
    unpack,
)

SUPPORTED = (Precision.FP32, Precision.FP16, Precision.DYNAMIC_INT8, Precision.INT8, Precision.INT16X8)
IO_TYPES = ("float", "int8")
_MIN_FP16_ELEMENTS = 16  # smaller constants (shapes, scalars) are not worth a DEQUANTIZE op


def quantize_tflite(
    float_tflite: bytes,
    precision: Precision,
    calib: np.ndarray | Mapping[str, np.ndarray] | CalibrationSet | None = None,
    io: str = "float",
    count: int = DEFAULT_COUNT,
    int16_cell: bool = False,
    residual: bool = True,
    wide_edges: bool = True,
) -> QuantizedArtifact:
    """Return ``float_tflite`` at ``precision``.

    ``calib`` (int8 only) is the calibration windows: an array ``(N, *window_shape)``
    for a single-input model, a dict input name -> array for several inputs (see
    :mod:`edge_lstm.quantize.calibration`), or a ready :class:`CalibrationSet`
    (e.g. from :func:`~edge_lstm.quantize.calibration.random_calibration`).
    ``io`` is "float" or "int8" (int8 only). ``int16_cell`` (int8 only) gives an LSTM cell written in plain ops
    an int16 cell state and gate arithmetic where that is measurably more accurate (:mod:`.cell16`; the export
    pipeline asks for it); without it the cell is TFLite's quantizer's, all int8. With ``int16_cell``, a loop's LSTM
    cells are :mod:`.cell8`'s residual int8 cells (every op one XNNPACK runs: as fast as the all-int8 cell, about
    as accurate as the int16 one) unless ``residual=False``, which keeps :mod:`.cell16`'s int16 cells. A loop model
    with float I/O gets its input projection and head in 16x8 (:mod:`.edges16`) unless ``wide_edges=False``.
    """
    precision = check_request(precision, io, calib)
    if precision is Precision.FP32:
        return QuantizedArtifact(float_tflite, precision)
    if precision is Precision.FP16:
        return to_fp16(float_tflite)
    if precision is Precision.DYNAMIC_INT8:
        return to_hybrid(float_tflite)
    if precision is Precision.INT16X8:
        raise UsageError("int16x8 widens this module's int8 model: build it with edge_lstm.quantize.quantize_tflite "
                         "(edge_lstm.quantize.int16x8).")
    assert calib is not None  # check_request refused full int8 without calibration data
    return to_int8(float_tflite, calib, io, count, int16_cell, residual, wide_edges)


def check_request(precision: Precision | str, io: str, calib: Any) -> Precision:
    """The precision asked for, after the checks every TFLite quantization makes (``--io``, calibration data)."""
    precision = Precision(precision)
    if io not in IO_TYPES:
        raise UsageError(f"--io must be one of {', '.join(IO_TYPES)}, got '{io}'.")
    if io != "float" and precision is not Precision.INT8:
        raise UsageError(
            f"--io {io} needs --precision int8; {precision.value} artifacts take and return float32.",
        )
    if calib is None and precision in (Precision.INT8, Precision.INT16X8):
        raise DataError(
            f"precision {precision.value} needs calibration data: windows like the model's input, to measure "
            "activation ranges.",
            "Pass --calib data.csv (or .npy), normalised like training; or --calib random, which the report flags.",
        )
    return precision


# ---------------------------------------------------------------- flatbuffer editing


def _const(model: Any, tensor: Any) -> np.ndarray | None:
    """The float32 constant held by ``tensor``, or None when it is not a float32 constant."""
    arr = const_array(model, tensor, np.float32) if tensor.type == FLOAT32 else None
    return None if arr is None else arr.reshape(tensor.shape)


# ---------------------------------------------------------------- fp16


def to_fp16(float_tflite: bytes) -> QuantizedArtifact:
    """FLOAT16 constant weights, each expanded to float32 by a DEQUANTIZE op at the start of the graph."""
    s = schema()
    model = unpack(float_tflite)
    deq = opcode_index(model, s.BuiltinOperator.DEQUANTIZE, 3)  # version 3: float16 input
    converted = 0
    for graph in model.subgraphs:
        used = {i for op in graph.operators for i in op.inputs if i >= 0}
        weights = _weight_inputs(model, graph)
        first = []
        for index in sorted(used):
            tensor = graph.tensors[index]
            arr = _const(model, tensor)
            if arr is None or (arr.size < _MIN_FP16_ELEMENTS and index not in weights):
                continue
            half = s.TensorT()
            half.name, half.shape = (tensor.name or b"w") + b"_fp16", list(tensor.shape)
            half.type = s.TensorType.FLOAT16
            set_data(model, half, arr.astype(np.float16))
            graph.tensors.append(half)
            tensor.buffer = 0  # now produced by the DEQUANTIZE op
            op = s.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = deq, [len(graph.tensors) - 1], [index]
            first.append(op)
            converted += 1
        graph.operators = first + list(graph.operators)
    if not converted:
        raise UnsupportedModel("fp16 found no float32 weights to convert in this TFLite model.")
    data = pack(drop_unused_buffers(model))
    return QuantizedArtifact(data, Precision.FP16, [
        f"{converted} weight tensors stored as float16 and expanded by DEQUANTIZE at load; compute is float32.",
    ])


def _weight_inputs(model: Any, graph: Any) -> set[int]:
    """Tensors read in a weight slot (a fully-connected op's matrix, an LSTM's gate weights, ...)."""
    from edge_lstm.quantize.check import _TFLITE_WEIGHTS

    out: set[int] = set()
    for op in graph.operators:
        for slot in _TFLITE_WEIGHTS.get(model_op_name(model, op), ()):
            if slot < len(op.inputs) and op.inputs[slot] >= 0:
                out.add(int(op.inputs[slot]))
    return out


# ---------------------------------------------------------------- dynamic int8 (hybrid)


def to_hybrid(float_tflite: bytes) -> QuantizedArtifact:
    """int8 weights with float activations: TFLite's hybrid LSTM and FULLY_CONNECTED kernels."""
    s = schema()
    model = unpack(float_tflite)
    ops = s.BuiltinOperator
    lstm_ops = (ops.UNIDIRECTIONAL_SEQUENCE_LSTM, ops.BIDIRECTIONAL_SEQUENCE_LSTM, ops.LSTM)
    quantized, floats = 0, []
    done: dict[int, tuple[int, Any]] = {}  # float buffer -> its int8 buffer and quantization, for shared weights
    for gi, graph in enumerate(model.subgraphs):
        # only the model's own outputs: a loop body's outputs are its state, computed like any other step
        outputs = set(graph.outputs) if gi == 0 else set()
        for op in graph.operators:
            builtin = op_builtin(model, op)
            if builtin in lstm_ops:
                weights = [i for k, i in enumerate(op.inputs) if (1 <= k <= 8 or k == 16) and i >= 0]
                op.opcodeIndex = opcode_index(model, builtin, 2)  # version 2: hybrid
                if hasattr(op.builtinOptions, "asymmetricQuantizeInputs"):
                    op.builtinOptions.asymmetricQuantizeInputs = False
            elif builtin == ops.UNIDIRECTIONAL_SEQUENCE_RNN:
                weights = [i for i in op.inputs[1:3] if i >= 0]
                op.opcodeIndex = opcode_index(model, builtin, 2)  # version 2: hybrid
                if op.builtinOptions is not None:
                    op.builtinOptions.asymmetricQuantizeInputs = False
            elif builtin == ops.FULLY_CONNECTED and not outputs.intersection(op.outputs):
                weights = [op.inputs[1]]
                op.opcodeIndex = opcode_index(model, builtin, 3)  # version 3: hybrid
                if op.builtinOptions is not None:
                    op.builtinOptions.asymmetricQuantizeInputs = False
            elif builtin == ops.CONV_2D and not outputs.intersection(op.outputs):
                weights = [op.inputs[1]]  # the hybrid convolution kernel: int8 filter, float input
            else:
                # (a depthwise convolution's hybrid kernel computed wrong values with a per-tensor filter scale)
                if builtin in (ops.FULLY_CONNECTED, ops.CONV_2D, ops.DEPTHWISE_CONV_2D, ops.TRANSPOSE_CONV):
                    floats.append(f"{model_op_name(model, op)} '{tensor_name(graph.tensors[op.outputs[0]])}'")
                continue
            quantized += sum(_int8_weight(model, graph.tensors[i], done) for i in weights)
    if not quantized:
        raise UnsupportedModel(
            "dynamic-int8 found no recurrent, fully-connected or convolution weights to quantize in this TFLite "
            "model (a model's output layer stays float).",
            "Use --precision fp16, or int8 with --calib.",
        )
    notes = [f"{f} stays float32: " + ("it produces a model output, where per-call input rounding lands directly."
                                       if f.startswith(("FULLY_CONNECTED", "CONV_2D"))
                                       else "TFLite has no hybrid kernel edge-lstm trusts for it.")
             for f in floats]
    notes.append("hybrid kernels (int8 weights, float activations) run on LiteRT/tflite-runtime, not TFLite Micro.")
    data = pack(drop_unused_buffers(model))
    return QuantizedArtifact(data, Precision.DYNAMIC_INT8, notes, floats)


def _int8_weight(model: Any, tensor: Any, done: dict[int, tuple[int, Any]]) -> int:
    """Quantize one float32 constant to int8, symmetric, one scale per tensor; 1 if done.

    Tensors that share a float buffer (a weight read inside a loop body and again after it) share one int8
    buffer: ``done`` maps each float buffer quantized so far to its int8 buffer and scale."""
    s = schema()
    if tensor.type == s.TensorType.INT8:
        return 0
    if tensor.buffer in done:
        tensor.buffer, scale = done[tensor.buffer]
    else:
        arr = _const(model, tensor)
        if arr is None:
            return 0
        source = tensor.buffer
        scale = float(np.abs(arr).max()) / 127.0 or 1.0
        set_data(model, tensor, np.clip(np.round(arr / scale), -127, 127).astype(np.int8))
        done[source] = (tensor.buffer, scale)
    tensor.type = s.TensorType.INT8
    tensor.quantization = quantization([scale], [0])
    return 1


# ---------------------------------------------------------------- full int8 (calibrated)


def input_specs(tflite: bytes) -> list[TensorSpec]:
    """The model's inputs (static shapes) as read by LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite)
    return [TensorSpec(str(d["name"]), tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name)
            for d in interp.get_input_details()]


def to_int8(
    float_tflite: bytes,
    calib: np.ndarray | Mapping[str, np.ndarray] | CalibrationSet,
    io: str = "float",
    count: int = DEFAULT_COUNT,
    int16_cell: bool = False,
    residual: bool = True,
    wide_edges: bool = True,
) -> QuantizedArtifact:
    """Full-integer model from TFLite's calibrator; int8 activations, int16 LSTM cell (or a loop's residual int8
    cell), int32 bias; see :func:`quantize_tflite`."""
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as wrapper

    specs = input_specs(float_tflite)
    if isinstance(calib, CalibrationSet):  # re-checked against the TFLite inputs, the random flag kept
        checked = calibration_windows(dict(calib.samples), specs, count=count, source=calib.source)
        cal = replace(calib, samples=checked.samples)
    else:
        cal = calibration_windows(calib, specs, count=count)
    i8, i32, f32 = (np.dtype(t).num for t in (np.int8, np.int32, np.float32))
    # TFLite's quantizer sets every subgraph's inputs to the I/O type (a loop body's too): loops are quantized
    # with float I/O and their main graph's edges made int8 afterwards (loops.int8_io)
    io_type = i8 if io == "int8" and not loops.has_loops(unpack(float_tflite)) else f32
    prepared = unpack(float_tflite)
    looped = loops.has_loops(prepared)
    # a loop's LSTM cells: the residual int8 cell (cell8, every op XNNPACK's), rewritten in float before calibration
    residual = residual and looped and int16_cell and _residual_rewrite(prepared, float_tflite, cal)
    # TFLite's calibrator crashes on pass-through loop variables and its quantizer wants constant biases
    source = pack(loops.calibration_ready(prepared))
    try:
        # a loop's weights: one scale a tensor, or one a channel; the per-channel model is derived from the
        # per-tensor one where it can be (channels.py), else calibrated again (the quantizer changes the
        # calibrator's model: each needs its own calibrator)
        raw = {pt: _calibrated(wrapper, source, specs, cal, (io_type, i8, i32), looped, pt)
               for pt in ([True] if looped else [False])}
        if looped:
            derived = channels.per_channel(raw[True], source)
            raw[False] = derived if derived is not None else \
                _calibrated(wrapper, source, specs, cal, (io_type, i8, i32), looped, False)
    except Exception as e:  # the calibrator names the op it has no int8 kernel for
        raise UnsupportedModel(
            f"TFLite's int8 quantizer refused this model: {_first_line(e)}",
            "Some op has no full-integer kernel; use --precision dynamic-int8 or fp16 for TFLite.",
        ) from e
    tanh_notes: dict[bool, str] = {}
    cells: list[str]
    if residual:
        (built, tanh_notes), cells = _pick_tanh_range(float_tflite, raw, cal), []
    elif int16_cell:
        built, cells = _pick_cells(float_tflite, raw, looped, cal)
    else:
        built, cells = {pt: _finish(data, looped, cells=False) for pt, data in raw.items()}, []
    data, scales = built[False], "per-channel"
    if looped:
        data, scales = _pick_scales(float_tflite, built, cal)
        cells += [note for pt, note in tanh_notes.items() if built[pt] is data]
        if io == "int8":
            data = pack(loops.int8_io(unpack(data)))
        elif wide_edges:
            data, edge_note = _widen_edges(data)
            cells += edge_note
    kind = f"{scales} int8 weights, {_state_kind(unpack(data), looped)}"
    notes = [f"int8 activations and {kind}, int32 bias; "
             f"calibrated by TFLite's quantizer on {cal.count} {cal.unit} ({cal.source}).", *cells]
    if cal.output_ranges:
        data, changed = set_output_ranges(data, cal.output_ranges)
        notes += [f"output {n} quantized over [{cal.output_ranges[n][0]:.4g}, {cal.output_ranges[n][1]:.4g}], its "
                  "range at the last step of each calibration window (outputs of the first steps after a reset, "
                  "before the state has seen a window, may clip)." for n in changed]
    if cal.random:
        notes.append("CALIBRATED ON RANDOM DATA (--calib random): activation ranges are guesses, "
                     "expect a larger error than with real windows.")
    return QuantizedArtifact(data, Precision.INT8, notes, [], _io_quant(data) if io == "int8" else {})


def calibrated_int8(float_tflite: bytes, calib: np.ndarray | Mapping[str, np.ndarray] | CalibrationSet,
                    count: int = DEFAULT_COUNT, per_tensor: bool = True) -> tuple[bytes, CalibrationSet]:
    """The full-int8 model 16x8 widens (:mod:`.int16x8`): float I/O, one weight scale a tensor (or a channel:
    ``per_tensor=False``), the loop lowering's cell in int16 (its gate activations need TFLite's int16 scale,
    2^-15), the known output ranges applied; and the calibration set used."""
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as wrapper

    specs = input_specs(float_tflite)
    if isinstance(calib, CalibrationSet):
        cal = replace(calib, samples=calibration_windows(dict(calib.samples), specs, count=count,
                                                         source=calib.source).samples)
    else:
        cal = calibration_windows(calib, specs, count=count)
    i8, i32, f32 = (np.dtype(t).num for t in (np.int8, np.int32, np.float32))
    looped = loops.has_loops(unpack(float_tflite))
    source = pack(loops.calibration_ready(unpack(float_tflite)))
    try:
        raw = _calibrated(wrapper, source, specs, cal, (f32, i8, i32), looped, per_tensor)
    except Exception as e:
        raise UnsupportedModel(f"TFLite's calibrator refused this model: {_first_line(e)}",
                               "Some op has no full-integer kernel; use --precision dynamic-int8 or fp16.") from e
    data = _finish(raw, looped, cells=True)
    if cal.output_ranges:
        data, _ = set_output_ranges(data, cal.output_ranges)
    return data, cal


def _state_kind(model: Any, looped: bool) -> str:
    """How the quantized model holds its recurrent state, read from the model (the report says what is there)."""
    lstm_ops = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "LSTM")
    fused = [model_op_name(model, op) for g in model.subgraphs for op in g.operators
             if model_op_name(model, op) in lstm_ops]
    int16 = schema().TensorType.INT16
    # int16 tensors of ops other than the fused LSTM (whose own cell state is int16): edge-lstm's int16 cell
    cells = any(g.tensors[i].type == int16 for g in model.subgraphs for op in g.operators
                if model_op_name(model, op) not in lstm_ops
                for i in [*(op.inputs if op.inputs is not None else []),
                          *(op.outputs if op.outputs is not None else [])] if i >= 0)
    residual = cell8.residual_chains(model)
    recurrent = looped or any(model_op_name(model, op) in ("TANH", "LOGISTIC") for g in model.subgraphs
                              for op in g.operators)
    parts = ["int16 LSTM cell state"] if fused else []
    if residual:
        parts.append(f"the LSTM cell state int8 with its rounding residual a second int8 loop variable and the forget "
                     f"gate computed as 1 - f (edge-lstm's residual cell, {residual} layer(s): every op in XNNPACK's "
                     "int8 set), the hidden state int8 across iterations")
    elif cells:
        parts.append("the LSTM cell state and gate arithmetic int16 (edge-lstm's cell rewrite), the hidden state "
                     "int8" + (" across iterations" if looped else ""))
    elif looped:
        parts.append("the loop's state int8 across iterations")
    elif not fused and recurrent:
        parts.append("any recurrent state (hidden and cell) int8 where it is an input or output")
    return ", ".join(parts) or "no recurrent state"


def _calibrated(wrapper: Any, source: bytes, specs: list[TensorSpec], cal: CalibrationSet,
                types: tuple[int, int, int], looped: bool, per_tensor: bool) -> bytes:
    """TFLite's calibrator over ``cal``, then its quantizer; a WHILE op has no quantized form: allow_float keeps
    it (and only it, checked) in float."""
    io_type, i8, i32 = types
    calibrator = _calibrator(wrapper, source, specs, cal)
    return bytes(calibrator.QuantizeModel(io_type, io_type, looped, i8, i32, per_tensor, False))


#: calibrators that have seen their windows, by (model bytes, shapes, windows) digest: full int8 and int16x8 (and a
#: loop's per-tensor and per-channel candidates) calibrate the same graph on the same windows, and the calibrator
#: quantizes a fresh copy of its model each time (the ranges it recorded are unchanged), so one pass serves them
#: all: the same bytes as a pass each (tests/quantize/test_tflite.py), at half the calibration time. Two kept: an
#: export calibrates at most a whole-window and a one-step graph at a time.
_CALIBRATORS: dict[str, tuple[Any, Any]] = {}
_KEPT_CALIBRATORS = 2


def _calibrator(wrapper: Any, source: bytes, specs: list[TensorSpec], cal: CalibrationSet) -> Any:
    """TFLite's calibrator for ``source`` after it has seen every window of ``cal`` (one pass per graph and
    windows, see :data:`_CALIBRATORS`)."""
    import hashlib

    feeds = cal.feeds()
    key = hashlib.sha256(source)
    key.update(repr([list(s.concrete(1)) for s in specs]).encode())
    for feed in feeds:
        for x in feed:
            arr = np.ascontiguousarray(x)
            key.update(f"{arr.dtype.str}{arr.shape}".encode())
            key.update(arr.tobytes())
    digest = key.hexdigest()
    if digest in _CALIBRATORS:
        return _CALIBRATORS[digest][1]
    # the wrapper keeps a pointer into these bytes, not a reference: hold them (else a segfault)
    with_intermediates = wrapper.AddIntermediateTensors(source)
    calibrator = wrapper.CalibrationWrapper(with_intermediates, [], [])
    calibrator.Prepare([list(s.concrete(1)) for s in specs])
    for feed in feeds:
        calibrator.FeedTensor(feed)
    while len(_CALIBRATORS) >= _KEPT_CALIBRATORS:
        del _CALIBRATORS[next(iter(_CALIBRATORS))]
    _CALIBRATORS[digest] = (with_intermediates, calibrator)
    return calibrator


#: the int16 cell (off XNNPACK: several times slower) is kept when its error on the calibration windows is at
#: most this fraction of the all-int8 cell's
_CELL_GAIN = 0.95


def _pick_cells(float_tflite: bytes, raw: dict[bool, bytes], looped: bool,
                cal: CalibrationSet) -> tuple[dict[bool, bytes], list[str]]:
    """Each quantized candidate with the int16 cell of :mod:`.cell16` where it is measurably more accurate on the
    calibration windows than the quantizer's all-int8 cell (deterministic: measured error, no timing), else
    without; and a note saying which and why."""
    feeds = cal.feeds()[:: max(1, cal.count // 16)][:16]
    ref: list[np.ndarray] | None = None
    out, notes = {}, []
    for pt, data in raw.items():
        plain, wide = _finish(data, looped, cells=False), _finish(data, looped, cells=True)
        if plain == wide:
            out[pt] = plain
            continue
        ref = ref if ref is not None else _run_all(float_tflite, feeds)
        e8, e16 = _rel_l2(ref, _run_all(plain, feeds)), _rel_l2(ref, _run_all(wide, feeds))
        out[pt] = wide if e16 <= _CELL_GAIN * e8 else plain
        notes = [f"LSTM cell {'int16' if out[pt] is wide else 'all int8'}: relative L2 on the calibration windows "
                 f"{e16:.3g} with the int16 cell, {e8:.3g} all int8 (the int16 cell is kept when it is at least "
                 f"{1 - _CELL_GAIN:.0%} better: its ops run off XNNPACK)."]
    return out, notes


def _residual_rewrite(model: Any, float_tflite: bytes, cal: CalibrationSet) -> bool:
    """Rewrite ``model``'s loop LSTM cells as :mod:`.cell8`'s residual cells (float, before calibration), kept only
    when the float model still computes what it did on a few calibration windows; True if rewritten."""
    trial = unpack(float_tflite)
    try:
        if not cell8.residual_cells(trial):
            return False
    except ValueError:  # a forget gate whose weights could not be traced
        return False
    data = pack(trial)
    feeds = cal.feeds()[:: max(1, cal.count // 4)][:4]
    ref, got = _run_all(float_tflite, feeds), _run_all(data, feeds)
    if any(not np.allclose(r, g, rtol=1e-4, atol=1e-4 * (float(np.abs(r).max()) + 1.0)) for r, g in
           zip(ref, got, strict=True)):
        return False
    model.subgraphs, model.buffers, model.operatorCodes = trial.subgraphs, trial.buffers, trial.operatorCodes
    return True


def _pick_tanh_range(float_tflite: bytes, raw: dict[bool, bytes],
                     cal: CalibrationSet) -> tuple[dict[bool, bytes], dict[bool, str]]:
    """Each quantized candidate with the residual cells' scales, the TANH of the cell state reading over the range
    of :data:`.cell8.TANH_RANGES` most accurate on the calibration windows (deterministic: measured error, no
    timing); and a note saying which."""
    feeds = cal.feeds()[:: max(1, cal.count // 16)][:16]
    ref = _run_all(float_tflite, feeds)
    out, notes = {}, {}
    for pt, data in raw.items():
        model = unpack(data)
        tanh_inputs = cell8.residual_scales(model)
        loops.int8_loop_state(model)
        model = _no_ranges(loops.dedupe_buffers(loops.drop_temp_names(model)))
        errors = {}
        for x in cell8.TANH_RANGES:
            for t in tanh_inputs:
                t.clip(x)
            built = pack(model)
            errors[x] = (_rel_l2(ref, _run_all(built, feeds)), built)
        best = min(errors, key=lambda x: (errors[x][0], x))
        out[pt] = errors[best][1]
        notes[pt] = (f"LSTM cell state's TANH over [-{best:g}, {best:g}] (relative L2 on the calibration windows "
                     + ", ".join(f"{errors[x][0]:.3g} over +-{x:g}" for x in cell8.TANH_RANGES) + ").")
    return out, notes


def _widen_edges(data: bytes) -> tuple[bytes, list[str]]:
    """A float-I/O loop model's input projection and head nearly exact (:mod:`.edges16`), and a note saying so."""
    model = unpack(data)
    n = edges16.widen_edges(model)
    if not n:
        return data, []
    return pack(model), [f"outside the loop ({n} fully-connected op(s), once a window): the input projection reads "
                         "the input to 1/16 of its int8 step (its int8 value and its rounding residual, still one int8 "
                         "op), the head is 16x8 (int16 activations, int8 weights, int64 bias): the input's and the "
                         "output's int8 rounding were the largest shares of the int8 error."]


def _finish(data: bytes, looped: bool, cells: bool = True) -> bytes:
    """The quantizer's output with int8 loop state (and int16 LSTM cells when ``cells``), constants shared again
    and the recorded ranges dropped."""
    model = unpack(data)
    if looped:
        loops.int8_loop_state(model)
    if cells:
        cell16.int16_cells(model)
    return pack(_no_ranges(loops.dedupe_buffers(loops.drop_temp_names(model))))


#: per-tensor weight scales are kept unless their error on the calibration windows exceeds per-channel's by this
_PER_TENSOR_SLACK = 1.05


def _pick_scales(float_tflite: bytes, built: dict[bool, bytes], cal: CalibrationSet) -> tuple[bytes, str]:
    """A loop's weights: one scale a tensor (its per-channel scales cost ~20% of a small file) unless that is
    measurably less accurate on the calibration windows than one scale a channel and the per-channel file is
    still smaller than the float one (deterministic: measured error, no timing)."""
    feeds = cal.feeds()[:: max(1, cal.count // 16)][:16]
    ref = _run_all(float_tflite, feeds)
    errors = {pt: _rel_l2(ref, _run_all(data, feeds)) for pt, data in built.items()}
    too_big = len(built[False]) >= len(float_tflite)
    if too_big or errors[True] <= _PER_TENSOR_SLACK * errors[False] + 1e-6:
        return built[True], f"per-tensor (relative L2 {errors[True]:.3g} on the calibration windows, per-channel " \
                            f"{errors[False]:.3g})"
    return built[False], f"per-channel (relative L2 {errors[False]:.3g} on the calibration windows, per-tensor " \
                         f"{errors[True]:.3g})"


def _run_all(data: bytes, feeds: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each output over all ``feeds`` (state reset before each), flattened and concatenated, as float."""
    from ai_edge_litert.interpreter import Interpreter

    from edge_lstm.runners.quant_io import from_model, to_model

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    got: list[list[np.ndarray]] = [[] for _ in outs]
    for feed in feeds:
        interp.reset_all_variables()
        for d, x in zip(ins, feed, strict=True):
            interp.set_tensor(d["index"], to_model(x, np.dtype(d["dtype"]).name, d["quantization"]))
        interp.invoke()
        for k, d in enumerate(outs):
            got[k].append(np.asarray(from_model(interp.get_tensor(d["index"]), d["quantization"]), np.float64).ravel())
    return [np.concatenate(g) for g in got]


def _rel_l2(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """The largest relative L2 error over the outputs."""
    return max(float(np.linalg.norm(r - g)) / (float(np.linalg.norm(r)) or 1.0) for r, g in zip(ref, got, strict=True))


def _no_ranges(model: Any) -> Any:
    """Drop the calibrator's recorded min/max: kernels read only scale and zero point (~5% of a small file)."""
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.quantization is not None:
                tensor.quantization.min = tensor.quantization.max = None
    return model


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _io_quant(data: bytes) -> dict[str, dict[str, Any]]:
    """Input/output name -> dtype, scale, zero point, as LiteRT reads them."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    out: dict[str, dict[str, Any]] = {}
    for d in (*interp.get_input_details(), *interp.get_output_details()):
        scale, zero = d["quantization"]
        out[str(d["name"])] = {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}
    return out
