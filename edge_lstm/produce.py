"""Build the artifacts an export asks for: every format at every precision, whole-window and streaming.

A lowering or quantizer that refuses an artifact (:class:`UnsupportedModel`) does
not stop the others: the refused artifact is kept, empty, with the reason, and the
pipeline reports it and exits 5 after writing the rest. Streaming artifacts are
built at every precision asked for, from the one-step graph
(:mod:`edge_lstm.streaming`), with the same quantizers; full int8 calibrates the
one-step model on the calibration windows fed step by step, so its state ranges
are the ones a stream reaches (:func:`step_calibration`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edge_lstm import feeds as feeds_mod
from edge_lstm import progress, registry
from edge_lstm.artifact import Artifact, Failure
from edge_lstm.errors import ShapeError, UnsupportedModel
from edge_lstm.spec import Precision

if TYPE_CHECKING:
    import onnx

    from edge_lstm.load import LoadedModel
    from edge_lstm.lower.tflite import LoweredTFLite
    from edge_lstm.options import ExportOptions
    from edge_lstm.quantize.calibration import CalibrationSet
    from edge_lstm.streaming import StreamingModel
    from edge_lstm.targets import Target

Progress = Callable[[str], None]


def precisions_for(fmt: str, options: ExportOptions) -> list[Precision]:
    """The recipe's precisions that ``fmt`` holds (another format may hold the rest)."""
    return [p for p in options.recipe.precisions if p in registry.SUPPORTED[fmt]]


def _names(model: LoadedModel, fmt: str, options: ExportOptions, stream: bool) -> dict[Precision, str]:
    suffix = registry.fmt(fmt).suffix
    return {p: f"{model.name}{'.stream' if stream else ''}.{p.value}{suffix}" for p in precisions_for(fmt, options)}


def whole_window(model: LoadedModel, proto: onnx.ModelProto, options: ExportOptions,
                 say: Progress) -> list[Artifact]:
    """The whole-window artifacts, formats in recipe order, each from its builder in :data:`WHOLE_WINDOW`."""
    out: list[Artifact] = []
    for fmt in options.recipe.formats:
        out += WHOLE_WINDOW[fmt](model, proto, _names(model, fmt, options, False), options, say)
    for art in out:
        art.notes += model.notes
    return out


def streaming(model: LoadedModel, step: StreamingModel, options: ExportOptions, say: Progress) -> list[Artifact]:
    """The one-step artifacts, at every precision asked for, from the builders in :data:`STREAMING`."""
    out: list[Artifact] = []
    for fmt in options.recipe.formats:
        out += STREAMING[fmt](model, step, _names(model, fmt, options, True), options, say)
    for art in out:
        art.notes.append("one time step per call; validated by feeding each window step by step")
        art.notes += model.notes
    return out


def _onnx_window(model: LoadedModel, proto: onnx.ModelProto, names: dict[Precision, str], options: ExportOptions,
                 say: Progress) -> list[Artifact]:
    return [_onnx(name, proto, p, False, say) for p, name in names.items()]


def _tflite_window(model: LoadedModel, proto: onnx.ModelProto, names: dict[Precision, str], options: ExportOptions,
                   say: Progress) -> list[Artifact]:
    return _tflite_all(model, proto, None, names, options.recipe.lowering, [], options, say)


def _ort_window(model: LoadedModel, proto: onnx.ModelProto, names: dict[Precision, str], options: ExportOptions,
                say: Progress) -> list[Artifact]:
    return [_ort(name, proto, p, False, say) for p, name in names.items()]


def _executorch_window(model: LoadedModel, proto: onnx.ModelProto, names: dict[Precision, str],
                       options: ExportOptions, say: Progress) -> list[Artifact]:
    return [_executorch(model, name, p, say) for p, name in names.items()]


def _onnx_stream(model: LoadedModel, step: StreamingModel, names: dict[Precision, str], options: ExportOptions,
                 say: Progress) -> list[Artifact]:
    return [_onnx(name, step.proto, p, True, say) for p, name in names.items()]


def _ort_stream(model: LoadedModel, step: StreamingModel, names: dict[Precision, str], options: ExportOptions,
                say: Progress) -> list[Artifact]:
    return [_ort(name, step.proto, p, True, say) for p, name in names.items()]


def _tflite_stream(model: LoadedModel, step: StreamingModel, names: dict[Precision, str], options: ExportOptions,
                   say: Progress) -> list[Artifact]:
    lowering, notes = options.recipe.lowering, []
    if step.explicit_state and lowering in ("fused", "auto"):
        # the fused op keeps its state in variable tensors that start at zero; the caller's state needs I/O
        lowering = "loop"
        notes.append("the model takes its state as input: streaming uses the loop lowering, state explicit")
    return _tflite_all(model, step.proto, step, names, lowering, notes, options, say)


Builder = Callable[["LoadedModel", "onnx.ModelProto", "dict[Precision, str]", "ExportOptions", Progress],
                   "list[Artifact]"]
StepBuilder = Callable[["LoadedModel", "StreamingModel", "dict[Precision, str]", "ExportOptions", Progress],
                       "list[Artifact]"]
#: the builder of each registry format (tests/test_registry.py checks that every format has one); a format with no
#: one-step builder (executorch: it exports PyTorch modules, the one-step model is an ONNX graph) refuses --streaming
WHOLE_WINDOW: dict[str, Builder] = {"onnx": _onnx_window, "tflite": _tflite_window, "executorch": _executorch_window,
                                    "ort": _ort_window}
STREAMING: dict[str, StepBuilder] = {"onnx": _onnx_stream, "tflite": _tflite_stream, "ort": _ort_stream}


def _tflite_all(model: LoadedModel, proto: onnx.ModelProto, step: StreamingModel | None,
                names: dict[Precision, str], lowering: str, notes: list[str], options: ExportOptions,
                say: Progress) -> list[Artifact]:
    """Every TFLite precision: one float lowering for fp32/fp16/dynamic-int8, one for int8 (which may differ)."""
    out = []
    lowered: dict[Precision, LoweredTFLite | list[str]] = {}
    for prec, name in names.items():
        int8 = prec in (Precision.INT8, Precision.INT16X8)  # calibrated: lowered (and calibrated) alike
        kind = lowered_for(prec)
        if kind not in lowered:
            lowered[kind] = _lower(proto, lowering, step is not None, name, say, _micro(options), kind,
                                   _litert(options))
        got = lowered[kind]
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


def rivals(model: LoadedModel, proto: onnx.ModelProto, artifacts: list[Artifact], options: ExportOptions,
           say: Progress) -> dict[str, Artifact | str]:
    """For the measured ``auto`` lowering (:mod:`edge_lstm.lowering_choice`): per whole-window TFLite artifact the
    rule lowered, the same precision in the other form (fused for the loop, the loop for fused), or why there is
    none. Built as the rule's artifacts are, each deterministic; the caller validates and times both."""
    from edge_lstm.quantize.int16x8 import FUSED_LITERT_REFUSAL

    out: dict[str, Artifact | str] = {}
    lowered: dict[tuple[str, Precision], LoweredTFLite | list[str]] = {}
    calib: CalibrationSet | None = None
    for art in artifacts:
        if art.format != "tflite" or art.streaming or not art.built or art.lowering is None:
            continue
        other = "fused" if art.lowering == "loop" else "loop"
        if art.precision is Precision.INT16X8 and other == "fused":
            out[art.filename] = f"fused: not built: {FUSED_LITERT_REFUSAL}"
            continue
        int8 = art.precision in (Precision.INT8, Precision.INT16X8)
        kind = lowered_for(art.precision)
        if (other, kind) not in lowered:
            lowered[other, kind] = _lower(proto, other, False, art.filename, say, False, kind, True)
        got = lowered[other, kind]
        if isinstance(got, list):
            out[art.filename] = f"{other}: not built: {' '.join(got[0].split())}"
        elif got.lowering == art.lowering:
            out[art.filename] = f"{other}: the same graph as {art.lowering} (no layer the fused op can express)"
        else:
            if int8 and calib is None:
                calib = _calibration(model, options)
            out[art.filename] = _tflite(art.filename, got, art.precision, False, options, calib if int8 else None,
                                        say)
    return out


def _target_of(options: ExportOptions) -> Target | None:
    from edge_lstm.targets import Target, load_target

    if options.target is None or isinstance(options.target, Target):
        return options.target
    return load_target(options.target)


def _micro(options: ExportOptions) -> bool:
    """True when the export is for a microcontroller target (the auto lowering then takes the fused form)."""
    target = _target_of(options)
    return target is not None and target.kind == "mcu"


def _litert(options: ExportOptions) -> bool:
    """True when the export's target runs LiteRT or tflite-runtime and not TFLite Micro (full int8 under the auto
    lowering then takes the loop, which XNNPACK runs fast)."""
    target = _target_of(options)
    litert = {r.name for r in registry.runtimes_for("tflite") if r.device}  # litert, tflite-runtime: not TFLite Micro
    return target is not None and target.kind != "mcu" and bool(litert & set(target.runtimes))


def _refused(name: str, fmt: str, prec: Precision, lowering: str | None, stream: bool, why: str) -> Artifact:
    return Artifact(name, fmt, prec, lowering, stream, b"", failures=[Failure("build", why)])


def lowered_for(prec: Precision) -> Precision:
    """The precision a TFLite artifact's float graph is lowered for: int8 for the calibrated ones (int8, 16x8),
    dynamic int8 for dynamic int8 (the loop then runs a small stacked LSTM pair as one cell,
    :mod:`edge_lstm.lower.tflite.wavefront`), else float32."""
    if prec in (Precision.INT8, Precision.INT16X8):
        return Precision.INT8
    return Precision.DYNAMIC_INT8 if prec is Precision.DYNAMIC_INT8 else Precision.FP32


def _lower(proto: onnx.ModelProto, lowering: str, stream: bool, name: str, say: Progress, micro: bool,
           precision: Precision, litert: bool = False) -> LoweredTFLite | list[str]:
    """The float TFLite lowering for ``precision`` (:func:`lowered_for`), or ``[reason]`` when the lowering
    refuses the graph."""
    from edge_lstm.lower.tflite import lower

    say(f"lowering to TFLite ({lowering}) for {name}")
    try:
        return lower(proto, lowering, streaming=stream, micro=micro, precision=precision, litert=litert)
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


def _ort(name: str, proto: onnx.ModelProto, prec: Precision, stream: bool, say: Progress) -> Artifact:
    """The ONNX artifact of ``prec``, converted to ONNX Runtime Mobile's ``.ort`` (its notes carried over)."""
    from edge_lstm.export_ort import to_ort

    base = _onnx(name, proto, prec, stream, say)
    if not base.built:
        return _refused(name, "ort", prec, None, stream, base.failures[0].reason)
    try:
        data = to_ort(base.data)
    except UnsupportedModel as e:
        return _refused(name, "ort", prec, None, stream, e.render())
    notes = [*base.notes, f"ONNX Runtime Mobile format, converted from the {prec.value} ONNX artifact "
                          f"({len(base.data):,} bytes) by onnxruntime.tools.convert_onnx_models_to_ort"]
    return Artifact(name, "ort", prec, None, stream, data, notes=notes, float_layers=list(base.float_layers))


def _executorch(model: LoadedModel, name: str, prec: Precision, say: Progress) -> Artifact:
    from edge_lstm.export_executorch import export_executorch

    progress.item(say, f"building {name} (ExecuTorch export: minutes for long windows)")
    try:
        prog = export_executorch(model, prec)
    except UnsupportedModel as e:
        return _refused(name, "executorch", prec, None, False, e.render())
    return Artifact(name, "executorch", prec, None, False, prog.data, notes=list(prog.notes))


def has_residual_cells(art: Artifact) -> bool:
    """Whether ``art`` is a whole-window full-int8 TFLite loop built with :mod:`edge_lstm.quantize.cell8`'s residual
    int8 cells (a fused artifact's cell is TFLite's kernel's, never rebuilt)."""
    from edge_lstm.quantize import cell8
    from edge_lstm.tflite_schema import unpack

    return art.format == "tflite" and art.precision is Precision.INT8 and not art.streaming and art.built \
        and bool(cell8.residual_chains(unpack(art.data)))


def int16_cell_form(model: LoadedModel, proto: onnx.ModelProto, art: Artifact, options: ExportOptions,
                    say: Progress) -> Artifact | None:
    """The whole-window full-int8 loop artifact ``art`` (built with :mod:`edge_lstm.quantize.cell8`'s residual int8
    cells) rebuilt with :mod:`edge_lstm.quantize.cell16`'s int16 cells: lowered and calibrated as ``art`` was (the
    same graph and windows; the calibrator runs again, on the graph without the residual rewrite); None when
    ``art`` is no such artifact."""
    if not has_residual_cells(art):
        return None
    got = _lower(proto, options.recipe.lowering, False, art.filename, say, _micro(options), Precision.INT8,
                 _litert(options))
    if isinstance(got, list) or got.lowering != art.lowering:
        return None
    return _tflite(art.filename, got, Precision.INT8, False, options, _calibration(model, options), say,
                   residual=False)


def _tflite(name: str, lowered: LoweredTFLite, prec: Precision, stream: bool, options: ExportOptions,
            calib: CalibrationSet | None, say: Progress, residual: bool = True) -> Artifact:
    progress.item(say, f"building {name}")
    if prec is Precision.FP32:
        return Artifact(name, "tflite", prec, lowered.lowering, stream, lowered.data, notes=list(lowered.notes),
                        lowering_reason=lowered.reason or None)
    from edge_lstm.quantize import quantize_tflite

    io = options.io if prec is Precision.INT8 else "float"
    use = calib if prec in (Precision.INT8, Precision.INT16X8) else None
    try:
        q = quantize_tflite(lowered.data, prec, use, io, count=use.count if use is not None else 200,
                            **({"int16_cell": True, "residual": residual} if prec is Precision.INT8 else {}))
    except UnsupportedModel as e:
        return _refused(name, "tflite", prec, lowered.lowering, stream, e.render())
    notes = list(q.notes) + [n for n in lowered.notes if n not in q.notes]  # the lowering's notes hold here too
    reason = lowered.reason or None
    said = next((k for k in _AUTO_16X8 if reason is not None and reason.startswith(k)), None)
    if prec is Precision.INT16X8 and said is not None:
        reason = _AUTO_16X8[said]  # the same choice as for full int8, for another reason
        notes = [f"lowering: {reason}" if n.startswith(f"lowering: {said}") else n for n in notes]
    return Artifact(name, "tflite", prec, lowered.lowering, stream, q.data, notes=notes,
                    io_quant=dict(q.io_quant), float_layers=list(q.float_layers),
                    calibration=use.describe() if use is not None else None, lowering_reason=reason)


#: the auto lowering's reasons at full int8 (the lowering is chosen before quantization), and what each is for 16x8
_AUTO_16X8 = {
    "auto: loop for full int8 on LiteRT": "auto: loop for int16x8 on LiteRT: its fused LSTM kernel has no 16x8 "
                                          "path; the loop's int16 ops run on its builtin kernels",
    "auto: fused for full int8": "auto: fused for int16x8, for TFLite Micro, whose fused LSTM kernel has a 16x8 "
                                 "path (LiteRT's has none: --lowering loop, or a LiteRT --target, is the LiteRT form)",
}


def _calibration(model: LoadedModel, options: ExportOptions) -> CalibrationSet:
    return feeds_mod.calibration_set(model, options.recipe, options.calib)


def step_calibration(step: StreamingModel, windows: CalibrationSet, lowered: LoweredTFLite,
                     count: int) -> CalibrationSet:
    """Calibration samples for a one-step model: each window fed step by step.

    A model whose state lives in variable tensors (the fused form) takes only the
    steps, every window's, each window in order: TFLite's calibrator keeps the
    variable state from one feed to the next, so the state follows a stream's, and
    it sees the steps the whole-window model's calibration sees (the first windows
    alone, e.g. the first weeks of a year of temperatures, gave an input range half
    as wide, which clipped 9% of the demo's held-out readings; an evenly spread
    third of them clipped hidden states enough to cost 2 points of task MAE). Its
    latest-step outputs get the range they take at each window's last step
    (:mod:`edge_lstm.quantize.ranges`): its state always starts at zero.
    A model with explicit state gets (step, state) pairs the stream really reaches,
    from the float one-step model, ``count`` of them spread over all steps; its
    outputs keep the calibrator's ranges (a caller may start it from any state, so
    the zero-state windows' last steps do not bound them: on the zoo's
    explicit-state model that range cost PSNR).
    """
    from edge_lstm.quantize.calibration import CalibrationSet as Set

    names = list(lowered.input_names) or [t.name for t in step.inputs.inputs]
    feeds = _window_feeds(windows)
    rows = _steps(step, feeds, names)
    total = len(rows[names[0]])
    if lowered.variable_state:
        ranges = _last_step_ranges(step, feeds, lowered)
        source = f"{windows.source}; every window fed step by step ({total} steps)"
        return Set({n: np.stack(v) for n, v in rows.items()}, windows.random, source, ranges, "time steps")
    keep = np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(int))
    samples = {n: np.stack([rows[n][i] for i in keep]) for n in names}
    source = f"{windows.source}; fed step by step through the one-step model ({len(keep)} of {total} steps)"
    return Set(samples, windows.random, source, {}, "time steps")


def _last_step_ranges(step: StreamingModel, feeds: list[dict[str, np.ndarray]],
                      lowered: LoweredTFLite) -> dict[str, tuple[float, float]]:
    """(min, max) of each latest-step output at the last step of each window, from the float one-step model run
    window by window from a reset state: the values the whole-window model returns."""
    from edge_lstm.runners.litert import LiteRTRunner

    latest = [name for name, axis in step.output_axes.items() if axis is None]
    if not latest:
        return {}
    seen: dict[str, list[np.ndarray]] = {n: [] for n in latest}
    with LiteRTRunner(lowered.data) as runner:
        for feed in feeds:
            out = feeds_mod.stream_window(runner, step, feed)
            for n in latest:
                if n in out:
                    seen[n].append(np.asarray(out[n], np.float64).ravel())
    return {n: (float(np.min(v)), float(np.max(v))) for n, v in ((n, np.concatenate(v)) for n, v in seen.items() if v)}


def _steps(step: StreamingModel, feeds: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, list[np.ndarray]]:
    """Every input ``names`` of the one-step model over every window, in order; a state input carries the state
    the float one-step model reaches (run only when some state is an input: variable state needs none)."""
    from edge_lstm.runners.onnxrt import OnnxRuntimeRunner

    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    explicit = any(s.input in names for s in step.states)
    with OnnxRuntimeRunner(step.proto.SerializeToString()) if explicit else contextlib.nullcontext() as runner:
        for feed in feeds:
            state = {s.input: np.asarray(feed[s.input], np.float32) if s.input in feed else s.zeros(1)
                     for s in step.states}
            window = feed[step.x]
            for t in range(window.shape[step.time_axis]):
                inp = {**feed, step.x: np.take(window, [t], axis=step.time_axis), **state}
                for n in names:
                    rows[n].append(inp[n])
                if runner is not None:
                    res = runner.infer({k: v for k, v in inp.items() if k in runner.input_names})
                    state = {s.input: np.asarray(res[s.output], np.float32) for s in step.states}
    return rows


def _window_feeds(windows: CalibrationSet) -> list[dict[str, np.ndarray]]:
    """The calibration set as one feed per window."""
    names = list(windows.samples)
    return [{n: windows.samples[n][i] for n in names} for i in range(windows.count)]

