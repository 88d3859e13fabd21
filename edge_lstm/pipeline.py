"""The export pipeline: load, capture, lower, quantize, prove, report.

This is the only layer that writes files. Everything is staged in a temporary
directory and published atomically, so a failed run leaves no half-written
artifact. The order of work:

1. load the model (a PyTorch file, or an ONNX file made elsewhere: :mod:`edge_lstm.sources`)
   and capture its whole-window ONNX graph;
2. check the inputs against the graph (a shape or dtype the model does not take is
   exit 2, saying what it expects), and with ``--streaming`` derive the one-step model
   (a model whose output needs the whole window is refused here, exit 5);
3. run the reference (PyTorch, or ONNX Runtime on the source ONNX file) on the feeds;
4. build every artifact; one that a lowering or quantizer refuses does not stop the others;
5. run each artifact on each runtime in child processes (:mod:`edge_lstm.preflight`): a whole-window one on
   every validation window, whose outputs are judged here; a streaming one once, then step by step here; with
   ``--lowering auto`` and a LiteRT ``--target``, the other lowering of each whole-window TFLite
   artifact is built and validated too, both are timed side by side here, and one is kept
   (:mod:`edge_lstm.lowering_choice`); a full-int8 loop artifact whose residual int8 cell misses
   its task gate is rebuilt with the int16 cell and proved, and kept if it passes;
6. write the artifacts that were built and the report, and profile them when asked.

Then the failures are raised, most serious first: artifacts that could not be
built or that a runtime could not run (exit 5, each named with its runtime,
lowering and precision; the others are written), a failed tolerance (exit 3), a
device budget (exit 4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm import __version__, lowering_choice
from edge_lstm import feeds as feeds_mod
from edge_lstm import progress as progress_mod
from edge_lstm.artifact import Artifact, Failure
from edge_lstm.errors import EdgeLstmError, OptionsError, ShapeError, UnsupportedModel
from edge_lstm.load import LoadedModel
from edge_lstm.options import ExportOptions
from edge_lstm.outputs import staged_dir, write_into
from edge_lstm.reports import ExportReport, ProfileReport, Recommendation
from edge_lstm.spec import Precision
from edge_lstm.validate import raise_on_failures

if TYPE_CHECKING:
    import onnx

    from edge_lstm.streaming import StreamingModel

#: ``say(message)``; a :class:`edge_lstm.progress.Progress` also draws counts (artifact k of n, window k of N)
Progress = Callable[[str], None]

__all__ = ["Artifact", "ExportOptions", "ExportResult", "Failure", "export"]


@dataclass
class ExportResult:
    """What :func:`export` wrote and how it validated."""

    output_dir: Path
    model: LoadedModel
    artifacts: list[Artifact]
    report: dict[str, Any]  #: report.json, as written
    export_report: ExportReport  #: the same report, typed

    @property
    def passed(self) -> bool:
        """True when every artifact was built, ran, and passed."""
        return all(a.passed for a in self.artifacts)


def export(model_path: str | Path, options: ExportOptions, progress: Progress | None = None) -> ExportResult:
    """Export ``model_path`` as the recipe and options ask; see the module docstring."""
    say = progress or (lambda _msg: None)
    from edge_lstm import prove, sources
    from edge_lstm.outputs import check_destination

    check_destination(options.output_dir, options.force)
    say("loading model")
    model = sources.open_model(model_path, list(options.input_shapes) or None, options.trust_pickle,
                               options.input_dtypes)
    _check_request(options)
    _check_source(model, options)
    choice = lowering_choice.plan(options)  # --lowering auto for a --target: both forms, timed here (or why not)
    if options.prove_on:
        from edge_lstm import prove_device

        prove_device.check(options.prove_on, options.prove_python, options.ssh_config)
    say("capturing ONNX")
    proto, step = prepare(model, options.streaming)
    say("preparing validation data")
    vdata = feeds_mod.validation_feeds(model, options.recipe, options.data)
    reference = reference_outputs(model, vdata)
    artifacts = _build(model, proto, step, options, say)
    rivals = _rivals(model, proto, artifacts, options, say) if choice is not None and choice.runtime else {}
    extra = [a for a in rivals.values() if isinstance(a, Artifact)]
    prove.prove_all(artifacts, model, options.recipe, vdata, reference, step, say, candidates=extra,
                    meanwhile=_warm_plots if options.html else None)
    artifacts = [_cell_fallback(model, proto, a, options, vdata, reference, say) for a in artifacts]
    if choice is not None:
        artifacts = lowering_choice.settle(artifacts, rivals, choice, vdata.samples[0], say)
    proof = None
    if options.prove_on:  # every artifact again on the device's runtimes, as its own validation rows
        from edge_lstm import prove_device

        device = prove_device.device(options.prove_on, options.prove_python, options.ssh_config, say)
        proof = prove_device.prove(device, [a for a in artifacts if a.built and not a.failures], model,
                                   options.recipe, vdata, reference, say)
    for art in artifacts:  # report.md shows notes: the failures go there too
        art.notes += [f"FAILED: {line}" for line in art.describe_failure().splitlines()]
    target = _target(options)
    unrunnable = _not_runnable(artifacts, target)
    for art in artifacts:  # exit 4 below (enforce_budgets), after every file is written
        if art.filename in unrunnable:
            art.notes.append(unrunnable[art.filename])
    report = _publish(model, proto, options, vdata, artifacts, target, say, proof, reference, unrunnable)
    result = ExportResult(options.output_dir, model, artifacts, report.to_dict(), report)
    _raise_failures(artifacts, options.output_dir)
    raise_on_failures([v for a in artifacts for v in a.validations],
                      frozenset(a.filename for a in artifacts if a.precision == Precision.INT8))
    if report.profile is not None and target is not None:
        from edge_lstm.profile import enforce_budgets

        enforce_budgets(report.profile)
    if options.firmware:
        from edge_lstm.firmware import enforce_report

        enforce_report(report.firmware or {})
    return result


def _cell_fallback(model: LoadedModel, proto: onnx.ModelProto, art: Artifact, options: ExportOptions,
                   vdata: feeds_mod.ValidationData, reference: dict[str, np.ndarray], say: Progress) -> Artifact:
    """A full-int8 loop artifact with the residual int8 cell (fast: one XNNPACK kernel a step) that misses its task
    gate on a runtime is rebuilt with the int16 cell (several times slower on LiteRT, often more accurate) and
    proved; the int16 form replaces it when it passes everywhere, and either way the note says which cell the file
    holds and why."""
    from edge_lstm import produce, prove

    failed = [v for v in art.validations if v.task_failed and v.task is not None]
    if not failed or art.failures or not produce.has_residual_cells(art):
        return art
    why = ", ".join(f"{v.task.drop:.2%} on {v.runtime}" for v in failed if v.task is not None)
    gate = failed[0].tolerance.max_task_drop or 0.0
    say(f"rebuilding {art.filename} with the int16 LSTM cell: the residual int8 cell's task drop is {why}")
    alt = produce.int16_cell_form(model, proto, art, options, say)
    if alt is None:
        return art
    prove.prove_all([alt], model, options.recipe, vdata, reference, None, say)
    drops = ", ".join(f"{v.task.drop:.2%} on {v.runtime}" for v in alt.validations if v.task is not None)
    lost = sorted({v.runtime for v in art.validations} - {v.runtime for v in alt.validations})
    if alt.passed and not lost:
        alt.notes.insert(0, f"LSTM cell: edge-lstm's int16 cell, not the residual int8 one (every op on XNNPACK, "
                            f"faster on LiteRT): the residual cell's task-metric drop was {why}, over the "
                            f"{gate:.0%} gate; the int16 cell's is {drops}.")
        return alt
    if alt.passed:  # it passes where it ran, but cannot be proved where the residual file was: keep what was proved
        art.notes.insert(0, f"LSTM cell: edge-lstm's residual int8 cell; its task-metric drop is {why}, over the "
                            f"{gate:.0%} gate; the int16 cell's is {drops}, passing, but it is not validated on "
                            f"{', '.join(lost)} (its notes say why), so the residual file is kept and fails.")
        return art
    art.notes.insert(0, f"LSTM cell: edge-lstm's residual int8 cell; its task-metric drop is {why}, over the "
                        f"{gate:.0%} gate; the int16 cell's is {drops or 'not measured'}, and it fails too: "
                        f"{_failed_checks(alt)}.")
    return art


def _failed_checks(art: Artifact) -> str:
    """What ``art`` failed, per runtime: its build or run failures, else each failing validation's reasons."""
    if art.failures:
        return "; ".join(" ".join(f.reason.split()) for f in art.failures)
    parts = []
    for v in art.validations:
        if v.passed:
            continue
        why = [r for o in v.outputs for r in o.reasons]
        if v.task_failed and v.task is not None:
            why.append(f"task-metric drop {v.task.drop:.2%}")
        parts.append(f"on {v.runtime}: {', '.join(why) or 'failed'}")
    return "; ".join(parts) or "not validated"


def prepare(model: LoadedModel, streaming: bool) -> tuple[onnx.ModelProto, StreamingModel | None]:
    """The whole-window graph, checked against the model's inputs, and the one-step model when asked for.

    Shared with ``edge-lstm info``, so both refuse the same input shapes.
    """
    from edge_lstm import checks, sources

    proto = sources.graph_of(model)
    checks.check_inputs(proto, model.inputs.inputs)
    step = streaming_model(model, proto) if streaming else None
    return proto, step


def streaming_model(model: LoadedModel, proto: onnx.ModelProto) -> StreamingModel:
    """The one-step model of ``model``: from its PyTorch capture, or derived from its ONNX file."""
    from edge_lstm import capture, sources, streaming

    if isinstance(model, sources.OnnxModel):
        x = model.inputs.inputs[0]
        pairs = list(zip(model.inputs.names[1:], model.output_names[1:], strict=False)) if model.has_state_io else []
        return streaming.derive(proto, x.name, x.time_axis, pairs)
    return capture.streaming_model(model, proto)


def reference_outputs(model: LoadedModel, vdata: feeds_mod.ValidationData) -> dict[str, np.ndarray]:
    """The reference's outputs on every validation sample; a model that rejects them is exit 2.

    An ONNX source file is first run once in a child process, so a runtime that dies on it
    cannot take the export with it.
    """
    from edge_lstm import preflight, sources

    if isinstance(model, sources.OnnxModel):
        assert model.source is not None
        why = preflight.check(model.source.read_bytes(), ".onnx", vdata.samples[0], ["onnxruntime"])["onnxruntime"]
        if why is not None:
            _source_failed(model, why)
    try:
        reference = feeds_mod.run_all(sources.reference_runner(model), vdata.samples)
    except EdgeLstmError:
        raise
    except Exception as e:  # the model's own error says what it wanted
        shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))} ({v.dtype})" for k, v in vdata.samples[0].items())
        raise ShapeError(
            f"The model rejects its inputs ({shapes}): {' '.join(str(e).split())[:300] or type(e).__name__}",
            "Check --input-shape against what forward() expects (batch, time, features for batch_first).",
        ) from e
    if isinstance(model, sources.OnnxModel):
        sources.settle_outputs(model, reference)
    return reference


def _warm_plots() -> None:
    """The report's plotting library, imported while the validation runs in child processes (see
    :func:`edge_lstm.prove.prove_all`)."""
    from edge_lstm import report_plots

    report_plots.warm()


def _source_failed(model: LoadedModel, why: str) -> None:
    if "INVALID_ARGUMENT" in why or "shape" in why.lower() or "dimension" in why.lower():
        raise ShapeError(f"ONNX Runtime rejects the inputs of '{model.source}': {why}",
                         "Check --input-shape against the model's inputs (`edge-lstm info model.onnx`).")
    raise UnsupportedModel(f"ONNX Runtime cannot run '{model.source}' (the reference): {why}",
                           "Check the file with onnx.checker and ONNX Runtime; export it again if it is damaged.")


def _build(model: LoadedModel, proto: onnx.ModelProto, step: StreamingModel | None, options: ExportOptions,
           say: Progress) -> list[Artifact]:
    from edge_lstm import produce

    expected = sum(len(produce.precisions_for(f, options)) for f in options.recipe.formats) * (1 + (step is not None))
    with progress_mod.task(say, "building", expected, "artifact"):
        artifacts = produce.whole_window(model, proto, options, say)
        if step is not None:
            artifacts += produce.streaming(model, step, options, say)
    if not any(a.built for a in artifacts):  # nothing to write: the refusal itself is the answer
        first = artifacts[0].failures[0].reason if artifacts and artifacts[0].failures else "nothing was built"
        message, _, hint = first.partition("\nHint: ")
        raise UnsupportedModel(message, hint or None)
    return artifacts


def _rivals(model: LoadedModel, proto: onnx.ModelProto, artifacts: list[Artifact], options: ExportOptions,
            say: Progress) -> dict[str, Artifact | str]:
    """The other lowering of each whole-window TFLite artifact (:func:`edge_lstm.produce.rivals`), counted."""
    from edge_lstm import produce

    n = sum(a.format == "tflite" and not a.streaming and a.built for a in artifacts)
    with progress_mod.task(say, "building the other lowering", n, "artifact"):
        return produce.rivals(model, proto, artifacts, options, say)


def _publish(model: LoadedModel, proto: onnx.ModelProto, options: ExportOptions, vdata: feeds_mod.ValidationData,
             artifacts: list[Artifact], target: Any, say: Progress, proof: dict[str, Any] | None,
             reference: dict[str, np.ndarray] | None = None,
             unrunnable: dict[str, str] | None = None) -> ExportReport:
    """Write the built artifacts and the reports (and profile them) into the staged output; ``unrunnable``: the
    artifacts the target cannot run, and why (:func:`_not_runnable`)."""
    from edge_lstm.cost import model_cost
    from edge_lstm.report import build_report, write_reports

    with staged_dir(options.output_dir, options.force) as stage:
        for art in artifacts:
            if art.built:
                write_into(stage, art.filename, art.data)
        report = build_report(model, vdata, artifacts, model_cost(proto), recipe=options.recipe.name,
                              out_dir=options.output_dir, units=options.units, reference=reference)
        report.proved_on = proof
        report.not_built = not_built(options.recipe)
        if options.firmware:
            from edge_lstm.firmware import export_firmware

            fw = export_firmware(stage / "fw", model, proto, [a for a in artifacts if a.built], target,
                                 (vdata, reference or {}), say)
            report.firmware = fw.report
        if options.profile or target is not None:
            runnable = [a for a in artifacts if a.built and not a.failures]
            report.profile = _profile(stage, options.output_dir, runnable, target, say, unrunnable or {})
        from edge_lstm.report_facts import recommend

        report.recommendation = Recommendation.from_dict(recommend(report))
        say("writing report.html" if options.html else "writing reports")
        write_reports(report, stage, options.html)
        if options.bundle and any(a.passed for a in artifacts):
            from edge_lstm import bundle

            write_into(stage, bundle.default_name(stage), bundle.build(stage))
    return report


def _raise_failures(artifacts: list[Artifact], out_dir: Path) -> None:
    failed = [a for a in artifacts if a.failures]
    if not failed:
        return
    invalid = [a for a in artifacts if not a.failures and not a.passed]
    lines = [a.describe_failure() for a in failed]
    more = f"; {len(invalid)} other artifact(s) failed validation" if invalid else ""
    raise UnsupportedModel(
        f"{len(failed)} of {len(artifacts)} artifact(s) could not be built or run{more}:\n  " + "\n  ".join(lines),
        f"The other artifacts were written and validated: see {out_dir / 'report.md'}.",
    )


def _target(options: ExportOptions) -> Any:
    from edge_lstm.targets import Target, load_target

    if options.target is None or isinstance(options.target, Target):
        return options.target
    return load_target(options.target)


def _profile(stage: Path, out_dir: Path, artifacts: list[Artifact], target: Any, say: Progress,
             unrunnable: dict[str, str]) -> ProfileReport:
    """Profile each staged artifact in a fresh process; paths in the result point at the published files.

    For a microcontroller target, TFLite artifacts TFLite Micro can run are profiled on it (the arena is
    measured there), and a budget counts only when the artifact also validated on TFLite Micro.
    """
    from edge_lstm.profile import ProfileOptions, apply_target, mark_not_runnable, profile_report

    mcu = target is not None and target.kind == "mcu"
    entries: list[dict[str, Any]] = []
    rep: ProfileReport | None = None
    with progress_mod.task(say, "profiling", len(artifacts), "artifact") as count:
        for art in artifacts:
            on_tflm = any(v.runtime == "tflm" and v.passed for v in art.validations)
            micro_only = bool(art.validations) and all(v.runtime == "tflm" for v in art.validations)  # fused 16x8
            tflm = (mcu and "tflm" in [v.runtime for v in art.validations]) or micro_only
            count.item(f"profiling {art.filename}" + (" on TFLite Micro" if tflm else ""))
            # off a microcontroller target, an artifact that also passed on TFLite Micro gets a TFLite Micro row
            # too: its arena measured, its latency that of the host interpreter (the report says so)
            for runtime in ["tflm"] if tflm else ["auto", "tflm"] if on_tflm else ["auto"]:
                opts = ProfileOptions(runtime=runtime, streaming=art.streaming, runs=100, warmup=10)
                rep = profile_report([stage / art.filename], opts, say=say)
                for entry in rep.artifacts:
                    entry["path"] = str(out_dir / art.filename)
                    entry["precision"] = art.precision.value
                    _tflm_verdict(entry, art)
                entries += rep.artifacts
    if rep is None:  # nothing ran: no host was measured
        rep = ProfileReport(tool_version=__version__, created="", host={}, where="host", options={})
    rep.artifacts = entries
    rep.options["streaming"] = None  # per artifact
    if target is not None:
        apply_target(rep, target)
        mark_not_runnable(rep, unrunnable)
    return rep


def _not_runnable(artifacts: list[Artifact], target: Any) -> dict[str, str]:
    """The file names of the artifacts that passed validation only on runtimes ``target`` does not run, and why (see
    :func:`edge_lstm.profile.not_runnable`)."""
    if target is None:
        return {}
    from edge_lstm.profile import not_runnable

    out = {}
    for art in artifacts:
        if art.built and not art.failures and art.passed:
            why = not_runnable([v.runtime for v in art.validations if v.passed], target, art.precision.value,
                               art.lowering)
            if why:
                out[art.filename] = why
    return out


def _tflm_verdict(entry: dict[str, Any], art: Artifact) -> None:
    """A TFLite Micro run is correct only if the artifact also passed its validation on TFLite Micro."""
    check = entry.get("outputs_check")
    if entry.get("runtime") != "tflm" or check is None:
        return
    tflm = [v for v in art.validations if v.runtime == "tflm"]
    check["validated_on_tflm"] = bool(tflm) and all(v.passed for v in tflm)
    check["correct"] = bool(check.get("correct")) and check["validated_on_tflm"]


def not_built(recipe: Any) -> list[dict[str, str]]:
    """The format x precision pairs of ``recipe`` that the format cannot hold, and why (another format asked for
    holds the precision: a precision no asked format holds is refused by :func:`_check_request`)."""
    from edge_lstm import registry

    out = []
    for f in recipe.formats:
        for p in recipe.precisions:
            if p not in registry.SUPPORTED[f]:
                why = registry.fmt(f).why_not or f"{f} holds {registry.precisions_text(f)}"
                out.append({"format": f, "precision": p.value, "why": why})
    return out


def _check_source(model: Any, options: ExportOptions) -> None:
    """Formats the loaded model cannot be exported to, refused before any work (exit 2): ExecuTorch's exporter
    takes an ``nn.Module`` through ``torch.export``, which refuses TorchScript, and an ONNX file has no module."""
    from edge_lstm import sources

    if "executorch" not in options.recipe.formats:
        return
    kind = "an ONNX file" if isinstance(model, sources.OnnxModel) else (
        "a TorchScript archive" if getattr(model, "format", None) == "torchscript" else None)
    if kind:
        raise OptionsError(f"--format executorch needs a PyTorch module torch.export can trace; this model is {kind} "
                           "(torch.export does not take TorchScript or ONNX).",
                           "Export an edge-lstm checkpoint or a torch.export .pt2 of the model to executorch, or "
                           "leave executorch out: onnx, ort and tflite take this model.")


def _check_request(options: ExportOptions) -> None:
    from edge_lstm import produce, registry

    r = options.recipe
    for prec in r.precisions:
        if not any(prec in registry.SUPPORTED[f] for f in r.formats):
            able = [f for f, ps in registry.SUPPORTED.items() if prec in ps]
            why = "; ".join(f"{f}: {registry.fmt(f).why_not}" for f in r.formats if registry.fmt(f).why_not)
            raise OptionsError(
                f"Precision {prec.value} is not supported for format {', '.join(r.formats)}"
                + (f" ({why})." if why else "."),
                f"{prec.value} is available for: {', '.join(able)}.",
            )
    for f in r.formats:
        registry.fmt(f).require()  # the exporter's package is installed, else exit 2 with the install command
        if options.streaming and f not in produce.STREAMING:
            raise OptionsError(f"--streaming has no {f} form: {f} exports PyTorch modules and the one-step model "
                               "is an ONNX graph.", "Export the whole window to this format, or stream with "
                               + ", ".join(produce.STREAMING) + ".")
    if options.io not in ("float", "int8"):
        raise OptionsError(f"Unknown --io '{options.io}'.", "Accepted: float, int8.")
    if options.io == "int8" and ("tflite" not in r.formats or Precision.INT8 not in r.precisions):
        raise OptionsError("--io int8 applies to --precision int8 TFLite only (int16x8 artifacts keep float32 "
                           "inputs and outputs).", "Add --format tflite --precision int8.")
    calibrated = [p.value for p in (Precision.INT8, Precision.INT16X8) if p in r.precisions]
    if calibrated and "tflite" in r.formats and options.calib is None:
        raise OptionsError(
            f"Precision {calibrated[0]} needs calibration data: representative windows set the activation ranges.",
            "Pass --calib data.csv (the same kind of series the model was trained on), "
            "or --calib random to accept random calibration (flagged in the report).",
        )
