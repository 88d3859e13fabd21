"""Build the artifacts an export asks for: every format at every precision, whole-window and streaming.

A lowering or quantizer that refuses an artifact (:class:`UnsupportedModel`) does
not stop the others: the refused artifact is kept, empty, with the reason, and the
pipeline reports it and exits 5 after writing the rest. Streaming artifacts are
built at every precision asked for, from the one-step graph
(:mod:`edge_lstm.streaming`), with the same quantizers; full int8 calibrates the
one-step model on the calibration windows fed step by step, so its state ranges
are the ones a stream reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edge_lstm import feeds as feeds_mod
from edge_lstm import progress
from edge_lstm.artifact import Artifact, Failure
from edge_lstm.errors import ShapeError, UnsupportedModel
from edge_lstm.spec import Precision

if TYPE_CHECKING:
    import onnx

    from edge_lstm.load import LoadedModel
    from edge_lstm.lower.tflite import LoweredTFLite
    from edge_lstm.pipeline import ExportOptions
    from edge_lstm.quantize.calibration import CalibrationSet
    from edge_lstm.streaming import StreamingModel

Progress = Callable[[str], None]


def precisions_for(fmt: str, options: ExportOptions) -> list[Precision]:
    """The recipe's precisions that ``fmt`` holds (another format may hold the rest)."""
    from edge_lstm.recipes import SUPPORTED

    return [p for p in options.recipe.precisions if p in SUPPORTED[fmt]]


def whole_window(model: LoadedModel, proto: onnx.ModelProto, options: ExportOptions,
                 say: Progress) -> list[Artifact]:
    """The whole-window artifacts, formats in recipe order."""
    out: list[Artifact] = []
    for fmt in options.recipe.formats:
        names = {p: f"{model.name}.{p.value}.{fmt}" for p in precisions_for(fmt, options)}
        if fmt == "onnx":
            out += [_onnx(name, proto, p, False, say) for p, name in names.items()]
        else:
            out += _tflite_all(model, proto, None, names, options.recipe.lowering, [], options, say)
    return out


def streaming(model: LoadedModel, step: StreamingModel, options: ExportOptions, say: Progress) -> list[Artifact]:
    """The one-step artifacts, at every precision asked for."""
    out: list[Artifact] = []
    for fmt in options.recipe.formats:
        names = {p: f"{model.name}.stream.{p.value}.{fmt}" for p in precisions_for(fmt, options)}
        if fmt == "onnx":
            out += [_onnx(name, step.proto, p, True, say) for p, name in names.items()]
            continue
        lowering, notes = options.recipe.lowering, []
        if step.explicit_state and lowering in ("fused", "auto"):
            # the fused op keeps its state in variable tensors that start at zero; the caller's state needs I/O
            lowering = "loop"
            notes.append("the model takes its state as input: streaming uses the loop lowering, state explicit")
        out += _tflite_all(model, step.proto, step, names, lowering, notes, options, say)
    for art in out:
        art.notes.append("one time step per call; validated by feeding each window step by step")
    return out


def _tflite_all(model: LoadedModel, proto: onnx.ModelProto, step: StreamingModel | None,
                names: dict[Precision, str], lowering: str, notes: list[str], options: ExportOptions,
                say: Progress) -> list[Artifact]:
    """Every TFLite precision: one float lowering for fp32/fp16/dynamic-int8, one for int8 (which may differ)."""
    out = []
    lowered: dict[bool, LoweredTFLite | list[str]] = {}
    for prec, name in names.items():
        int8 = prec is Precision.INT8
        if int8 not in lowered:
            lowered[int8] = _lower(proto, lowering, step is not None, name, say, _micro(options), int8)
        got = lowered[int8]
        if isinstance(got, list):
            out.append(_refused(name, "tflite", prec, lowering, step is not None, got[0]))
            continue
        calib = None
        if int8:
            calib = _calibration(model, options)
            if step is not None:
                calib = step_calibration(step, calib, got, options.recipe.calibration_samples)
        art = _tflite(name, got, prec, step is not None, options, calib, say)
        art.notes[:0] = notes
        out.append(art)
    return out


def _micro(options: ExportOptions) -> bool:
    """True when the export is for a microcontroller target (the auto lowering then takes the fused form)."""
    from edge_lstm.targets import Target, load_target

    if options.target is None:
        return False
    target = options.target if isinstance(options.target, Target) else load_target(options.target)
    return target.kind == "mcu"


def _refused(name: str, fmt: str, prec: Precision, lowering: str | None, stream: bool, why: str) -> Artifact:
    return Artifact(name, fmt, prec, lowering, stream, b"", failures=[Failure("build", why)])


def _lower(proto: onnx.ModelProto, lowering: str, stream: bool, name: str, say: Progress, micro: bool,
           int8: bool) -> LoweredTFLite | list[str]:
    """The float TFLite lowering, or ``[reason]`` when the lowering refuses the graph."""
    from edge_lstm.lower.tflite import lower

    say(f"lowering to TFLite ({lowering}) for {name}")
    try:
        return lower(proto, lowering, streaming=stream, micro=micro,
                     precision=Precision.INT8 if int8 else Precision.FP32)
    except UnsupportedModel as e:
        return [e.render()]
    except ShapeError as e:  # the inputs passed every check and the reference ran: the lowering is what failed
        return [f"The TFLite lowering cannot express this graph: {e.message}"]


def _onnx(name: str, proto: onnx.ModelProto, prec: Precision, stream: bool, say: Progress) -> Artifact:
    progress.item(say, f"building {name}")
    if prec is Precision.FP32:
        return Artifact(name, "onnx", prec, None, stream, proto.SerializeToString())
    from edge_lstm.quantize import quantize_onnx

    try:
        q = quantize_onnx(proto, prec)
    except UnsupportedModel as e:
        return _refused(name, "onnx", prec, None, stream, e.render())
    return Artifact(name, "onnx", prec, None, stream, q.data, notes=list(q.notes), float_layers=list(q.float_layers))


def _tflite(name: str, lowered: LoweredTFLite, prec: Precision, stream: bool, options: ExportOptions,
            calib: CalibrationSet | None, say: Progress) -> Artifact:
    progress.item(say, f"building {name}")
    if prec is Precision.FP32:
        return Artifact(name, "tflite", prec, lowered.lowering, stream, lowered.data, notes=list(lowered.notes),
                        lowering_reason=lowered.reason or None)
    from edge_lstm.quantize import quantize_tflite

    io = options.io if prec is Precision.INT8 else "float"
    use = calib if prec is Precision.INT8 else None
    try:
        q = quantize_tflite(lowered.data, prec, use, io, count=use.count if use is not None else 200)
    except UnsupportedModel as e:
        return _refused(name, "tflite", prec, lowered.lowering, stream, e.render())
    notes = list(q.notes) + [n for n in lowered.notes if n not in q.notes]  # the lowering's notes hold here too
    return Artifact(name, "tflite", prec, lowered.lowering, stream, q.data, notes=notes,
                    io_quant=dict(q.io_quant), float_layers=list(q.float_layers),
                    calibration=use.describe() if use is not None else None, lowering_reason=lowered.reason or None)


def _calibration(model: LoadedModel, options: ExportOptions) -> CalibrationSet:
    return feeds_mod.calibration_set(model, options.recipe, options.calib)


def step_calibration(step: StreamingModel, windows: CalibrationSet, lowered: LoweredTFLite,
                     count: int) -> CalibrationSet:
    """Calibration samples for a one-step model: each window fed step by step through the float one-step model.

    A model with explicit state gets (step, state) pairs the stream really reaches,
    ``count`` of them spread over all steps. A model whose state lives in variable
    tensors takes only the steps, whole windows in order, so the calibrator's
    variable state follows them as a stream's does.
    """
    from edge_lstm.quantize.calibration import CalibrationSet as Set
    from edge_lstm.runners.onnxrt import OnnxRuntimeRunner

    names = list(lowered.input_names) or [t.name for t in step.inputs.inputs]
    runner = OnnxRuntimeRunner(step.proto.SerializeToString())
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with runner:
        for feed in _window_feeds(windows):
            state = {s.input: np.asarray(feed[s.input], np.float32) if s.input in feed else s.zeros(1)
                     for s in step.states}
            window = feed[step.x]
            for t in range(window.shape[step.time_axis]):
                inp = {step.x: np.take(window, [t], axis=step.time_axis), **state}
                for n in names:
                    rows[n].append(inp[n])
                res = runner.infer({k: v for k, v in inp.items() if k in runner.input_names})
                state = {s.input: np.asarray(res[s.output], np.float32) for s in step.states}
    total = len(rows[names[0]])
    if lowered.variable_state:
        keep = np.arange(min(total, max(count, 1) * 4))  # whole windows, in stream order
    else:
        keep = np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(int))
    samples = {n: np.stack([rows[n][i] for i in keep]) for n in names}
    source = f"{windows.source}; fed step by step through the one-step model ({len(keep)} of {total} steps)"
    return Set(samples, windows.random, source)


def _window_feeds(windows: CalibrationSet) -> list[dict[str, np.ndarray]]:
    """The calibration set as one feed per window."""
    names = list(windows.samples)
    return [{n: windows.samples[n][i] for n in names} for i in range(windows.count)]

