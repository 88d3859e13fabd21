"""The export pipeline: load, capture, lower, quantize, validate, report.

This is the only layer that writes files. Everything is staged in a temporary
directory and published atomically, so a failed run leaves no half-written
artifact. A validation failure still publishes the artifacts and the report
(marked failed) and then raises :class:`ValidationFailed` (exit code 3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm import feeds as feeds_mod
from edge_lstm.errors import UsageError
from edge_lstm.load import LoadedModel, load
from edge_lstm.outputs import staged_dir, write_into
from edge_lstm.recipes import Recipe, load_recipe
from edge_lstm.spec import Precision
from edge_lstm.validate import ArtifactValidation, raise_on_failures

if TYPE_CHECKING:
    import onnx

    from edge_lstm.runners.base import Runner

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked for beyond the recipe."""

    output_dir: Path
    recipe: Recipe = field(default_factory=load_recipe)
    streaming: bool = False
    data: Path | None = None
    calib: str | None = None  # a CSV/NPY path, or "random"
    io: str = "float"  # "float" | "int8" for full-integer TFLite
    input_shapes: tuple[tuple[int, ...], ...] = ()
    trust_pickle: bool = False
    force: bool = False
    profile: bool = False  # measure every artifact (fresh process each) into the report
    target: str | None = None  # device target name or TOML path: estimates and budgets (exit 4 when over)
    prove_on: str | None = None  # "arm64" (the emulated device) or a --remote spec: validate there too
    prove_python: str = "python3"  # the Python on a real --prove-on device
    ssh_config: str | None = None  # ssh config file (-F) for a real --prove-on device
    firmware: bool = False  # also write fw/ (edge_lstm.firmware): TFLite Micro C arrays, dependency-free C


@dataclass
class Artifact:
    """One exported file and its validation."""

    filename: str
    format: str
    precision: Precision
    lowering: str | None
    streaming: bool
    data: bytes
    validations: list[ArtifactValidation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    io_quant: dict[str, Any] = field(default_factory=dict)
    float_layers: list[str] = field(default_factory=list)  # layers a quantized artifact keeps in float, and why
    calibration: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """True when every runtime's validation passed."""
        return all(v.passed for v in self.validations)

    def to_dict(self, out_dir: Path) -> dict[str, Any]:
        """The artifact's entry in ``report.json``."""
        return {
            "path": str(out_dir / self.filename),
            "file": self.filename,
            "format": self.format,
            "precision": self.precision.value,
            "lowering": self.lowering,
            "streaming": self.streaming,
            "size_bytes": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
            "passed": self.passed,
            "validation": [v.to_dict() for v in self.validations],
            "notes": self.notes,
            "io_quant": self.io_quant or None,
            "float_layers": self.float_layers,
            "calibration": self.calibration,
        }


@dataclass
class ExportResult:
    """What :func:`export` wrote and how it validated."""

    output_dir: Path
    model: LoadedModel
    artifacts: list[Artifact]
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        """True when every artifact passed."""
        return all(a.passed for a in self.artifacts)


def export(model_path: str | Path, options: ExportOptions, progress: Progress | None = None) -> ExportResult:
    """Export ``model_path`` as the recipe and options ask; see the module docstring."""
    say = progress or (lambda _msg: None)
    from edge_lstm.outputs import check_destination

    check_destination(options.output_dir, options.force)
    say("loading model")
    model = load(model_path, list(options.input_shapes) or None, options.trust_pickle)
    _check_request(options)
    if options.prove_on:
        from edge_lstm import prove

        prove.check(options.prove_on, options.prove_python, options.ssh_config)
    say("preparing validation data")
    vdata = feeds_mod.validation_feeds(model, options.recipe, options.data)
    reference = feeds_mod.run_all(_torch_runner(model), vdata.samples)
    say("capturing ONNX")
    from edge_lstm import capture

    proto = capture.to_onnx(model)
    artifacts = _build_artifacts(model, proto, options, say)
    for art in artifacts:
        if not art.streaming:
            say(f"validating {art.filename}")
            art.validations = _validate(art, model, options, vdata, reference)
    if options.streaming:
        artifacts += _streaming_artifacts(model, options, vdata, reference, say)
    proof = None
    if options.prove_on:  # every artifact again on the device's runtimes, as its own validation rows
        proof = prove.prove(prove.device(options.prove_on, options.prove_python, options.ssh_config, say),
                            artifacts, model, options.recipe, vdata, reference, say)
    from edge_lstm.report import build_report, write_reports

    target = _target(options)
    with staged_dir(options.output_dir, options.force) as stage:
        for art in artifacts:
            write_into(stage, art.filename, art.data)
        report = build_report(model, options, vdata, artifacts, proto)
        report["proved_on"] = proof
        if options.firmware:
            from edge_lstm.firmware import export_firmware

            fw = export_firmware(stage / "fw", model, proto, artifacts, target, (vdata, reference), say)
            report["firmware"] = fw.report
        if options.profile or target is not None:
            report["profile"] = _profile(stage, options.output_dir, artifacts, target, say)
        write_reports(report, stage)
        if "profile" in report:
            from edge_lstm.report_html import write_html

            write_html(report["profile"], stage / "report.html", report)
    result = ExportResult(options.output_dir, model, artifacts, report)
    raise_on_failures([v for a in artifacts for v in a.validations])
    if "profile" in report and target is not None:
        from edge_lstm.profile import enforce_budgets

        enforce_budgets(report["profile"])
    if options.firmware:
        from edge_lstm.firmware import enforce

        enforce(fw)
    return result


def _target(options: ExportOptions) -> Any:
    if options.target is None:
        return None
    from edge_lstm.targets import load_target

    return load_target(options.target)


def _profile(stage: Path, out_dir: Path, artifacts: list[Artifact], target: Any, say: Progress) -> dict[str, Any]:
    """Profile each staged artifact in a fresh process; paths in the result point at the published files."""
    from edge_lstm.profile import ProfileOptions, apply_target, profile

    entries = []
    for art in artifacts:
        say(f"profiling {art.filename}")
        opts = ProfileOptions(streaming=art.streaming, runs=100, warmup=10)
        rep = profile([stage / art.filename], opts)
        for entry in rep["artifacts"]:
            entry["path"] = str(out_dir / art.filename)
            entry["precision"] = art.precision.value
        entries += rep["artifacts"]
    rep["artifacts"] = entries
    rep["options"]["streaming"] = None  # per artifact
    if target is not None:
        apply_target(rep, target)
    return rep


def _check_request(options: ExportOptions) -> None:
    from edge_lstm.recipes import SUPPORTED

    r = options.recipe
    for prec in r.precisions:
        if not any(prec in SUPPORTED[f] for f in r.formats):
            able = [f for f, ps in SUPPORTED.items() if prec in ps]
            raise UsageError(
                f"Precision {prec.value} is not supported for format {', '.join(r.formats)}.",
                f"{prec.value} is available for: {', '.join(able)}"
                + (" (ONNX Runtime's static quantizer has no LSTM entry)." if prec is Precision.INT8 else "."),
            )
    if options.io not in ("float", "int8"):
        raise UsageError(f"Unknown --io '{options.io}'.", "Accepted: float, int8.")
    if options.io == "int8" and ("tflite" not in r.formats or Precision.INT8 not in r.precisions):
        raise UsageError("--io int8 applies to full-integer TFLite only.", "Add --format tflite --precision int8.")
    if Precision.INT8 in r.precisions and "tflite" in r.formats and options.calib is None:
        raise UsageError(
            "Precision int8 needs calibration data: representative windows set the activation ranges.",
            "Pass --calib data.csv (the same kind of series the model was trained on), "
            "or --calib random to accept random calibration (flagged in the report).",
        )


def _torch_runner(model: LoadedModel) -> Runner:
    from edge_lstm.runners.torch import TorchRunner

    return TorchRunner(model)


def _build_artifacts(
    model: LoadedModel, proto: onnx.ModelProto, options: ExportOptions, say: Progress
) -> list[Artifact]:
    r = options.recipe
    out: list[Artifact] = []
    float_tflite: bytes | None = None
    lowering_used = r.lowering
    lower_notes: list[str] = []
    from edge_lstm.recipes import SUPPORTED

    for fmt in r.formats:
        for prec in r.precisions:
            if prec not in SUPPORTED[fmt]:
                continue  # another requested format holds this precision (checked up front)
            name = f"{model.name}.{prec.value}.{fmt}"
            say(f"building {name}")
            if fmt == "onnx":
                out.append(_onnx_artifact(name, proto, prec))
                continue
            if float_tflite is None:
                from edge_lstm.lower.tflite import lower

                lowered = lower(proto, r.lowering)
                float_tflite, lowering_used, lower_notes = lowered.data, lowered.lowering, list(lowered.notes)
            if prec is Precision.FP32:
                out.append(Artifact(name, fmt, prec, lowering_used, False, float_tflite, notes=list(lower_notes)))
            else:
                out.append(_tflite_quantized(name, float_tflite, prec, lowering_used, model, options))
    return out


def _onnx_artifact(name: str, proto: onnx.ModelProto, prec: Precision) -> Artifact:
    if prec is Precision.FP32:
        return Artifact(name, "onnx", prec, None, False, proto.SerializeToString())
    from edge_lstm.quantize import quantize_onnx

    q = quantize_onnx(proto, prec)
    art = Artifact(name, "onnx", prec, None, False, q.data, notes=list(q.notes))
    art.float_layers = list(q.float_layers)
    return art


def _tflite_quantized(
    name: str, float_tflite: bytes, prec: Precision, lowering: str, model: LoadedModel, options: ExportOptions
) -> Artifact:
    from edge_lstm.quantize import quantize_tflite

    calib = feeds_mod.calibration_set(model, options.recipe, options.calib) if prec is Precision.INT8 else None
    io = options.io if prec is Precision.INT8 else "float"
    q = quantize_tflite(float_tflite, prec, calib, io, count=calib.count if calib is not None else 200)
    notes = list(q.notes)
    if calib is not None and calib.random:
        notes.append("CALIBRATED ON RANDOM DATA (--calib random): activation ranges may not match real inputs")
    art = Artifact(name, "tflite", prec, lowering, False, q.data, notes=notes, io_quant=dict(q.io_quant))
    art.float_layers = list(q.float_layers)
    art.calibration = calib.describe() if calib is not None else None
    return art


def _validate(
    art: Artifact, model: LoadedModel, options: ExportOptions, vdata: feeds_mod.ValidationData,
    reference: dict[str, np.ndarray],
) -> list[ArtifactValidation]:
    results = []
    for runner in _runners_for(art):
        outs = feeds_mod.run_all(runner, vdata.samples)
        results.append(feeds_mod.judge(art.filename, runner.runtime, model, options.recipe, art.precision,
                                       vdata, reference, outs))
    return results


def _runners_for(art: Artifact) -> list[Runner]:
    if art.format == "onnx":
        from edge_lstm.runners.onnxrt import OnnxRuntimeRunner

        return [OnnxRuntimeRunner(art.data)]
    from edge_lstm.runners.litert import LiteRTRunner

    runners: list[Runner] = [LiteRTRunner(art.data)]
    if art.lowering == "fused" and art.precision in (Precision.FP32, Precision.INT8):
        if _tflm_available():
            from edge_lstm.runners.tflm import TFLMRunner

            runners.append(TFLMRunner(art.data))
        else:
            art.notes.append("not validated on TFLite Micro: the tflite-micro package is not installed "
                             "(pip install 'edge-lstm[micro]')")
    return runners


def _tflm_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("tflite_micro") is not None
    except (ImportError, ValueError):
        return False


def _streaming_artifacts(
    model: LoadedModel, options: ExportOptions, vdata: feeds_mod.ValidationData,
    reference: dict[str, np.ndarray], say: Progress,
) -> list[Artifact]:
    from edge_lstm import capture

    say("capturing the streaming (one-step) model")
    step = capture.streaming_model(model)
    proto = capture.to_onnx(step)
    out = []
    for fmt in options.recipe.formats:
        name = f"{model.name}.stream.fp32.{fmt}"
        if fmt == "onnx":
            art = Artifact(name, fmt, Precision.FP32, None, True, proto.SerializeToString())
        else:
            from edge_lstm.lower.tflite import lower

            lowering, notes = options.recipe.lowering, []
            if model.has_state_io and lowering == "fused":
                # the fused op keeps its state in variable tensors, which start at zero; the caller's state needs I/O
                lowering = "unrolled"
                notes.append("the model takes its state as input: streaming uses the unrolled lowering, state explicit")
            lowered = lower(proto, lowering, streaming=True)
            art = Artifact(name, fmt, Precision.FP32, lowered.lowering, True, lowered.data,
                           notes=notes + list(lowered.notes))
        say(f"validating {name} step by step")
        art.validations = feeds_mod.validate_streaming(art, model, step, options.recipe, vdata, reference)
        art.notes.append("one time step per call; validated by feeding each window step by step")
        out.append(art)
    return out
