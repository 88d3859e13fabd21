"""Write the firmware files: dependency-free C, TFLite Micro arrays, and the proof of both.

The files sit side by side in one directory (``fw/``; ``export --firmware``
writes ``fw/`` inside the export's output)::

    firmware.json, firmware.md           what was built, measured and proven
    model.fp32.{h,c}, model.int8-weights.{h,c}
                                         the dependency-free C, one pair per precision
    cortexm_startup.c, cortexm_link.ld, cortexm_harness.c, cortexm_harness_data.h, cortexm.mk
                                         the emulated-core build (make -f cortexm.mk run)
    <artifact>.model_data.{h,c}, <artifact>.main.cc
                                         each .tflite as a 16-byte-aligned array, and an invoke loop

Every C precision is compiled with the host C compiler and checked against
the reference (window API and streaming API), then cross-compiled for the
target's Cortex-M core, measured from its ELF and, where qemu emulates the
core, run there and checked again. Budgets are checked at the end; the caller
publishes the directory and then calls :func:`enforce` (exit 3 for a failed
check, exit 4 for a budget).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm import __version__, jsonio
from edge_lstm.errors import UnsupportedModel, UsageError
from edge_lstm.firmware import cgen, checks, cortexm
from edge_lstm.firmware.program import Program
from edge_lstm.firmware.source import FirmwareSource, TfliteInput
from edge_lstm.recipes import Recipe, load_recipe
from edge_lstm.spec import Precision
from edge_lstm.validate import ArtifactValidation, raise_on_failures

Progress = Callable[[str], None]
#: the core edge-lstm builds for when no target names one: what qemu's mps2-an386 board emulates
DEFAULT_CORE = cortexm.CortexM(cpu="cortex-m4", fpu="fpv4-sp-d16", float_abi="hard", qemu_machine="mps2-an386")
EMULATED = "measured on an emulated core"
REPORT_JSON, REPORT_MD = "firmware.json", "firmware.md"


@dataclass(frozen=True)
class FirmwareOptions:
    """What to build: C precisions, symbol prefix, which paths, how many windows to prove it on."""

    precisions: tuple[str, ...] = cgen.PRECISIONS
    prefix: str = "model"
    c: bool = True
    tflm: bool = True
    cortex_m: bool = True
    windows: int = 8
    qemu_windows: int = 4
    seed: int = 0
    recipe: Recipe = field(default_factory=load_recipe)

    def __post_init__(self) -> None:
        cgen.check_prefix(self.prefix)
        bad = [p for p in self.precisions if p not in cgen.PRECISIONS]
        if bad or not self.precisions:
            raise UsageError(f"Unknown C precision {bad or 'list (empty)'}.",
                             f"Accepted: {', '.join(cgen.PRECISIONS)}.")
        if self.windows < 1 or self.qemu_windows < 1:
            raise UsageError("--windows must be >= 1.")


@dataclass
class FirmwareResult:
    """The report (``firmware.json``) and the validations behind it."""

    report: dict[str, Any]
    validations: list[ArtifactValidation]


def enforce(result: FirmwareResult) -> None:
    """Exit 3 when a proof failed, then exit 4 when a budget is exceeded."""
    raise_on_failures(result.validations)
    checks.enforce_budgets(result.report)


def enforce_report(report: dict[str, Any]) -> None:
    """:func:`enforce` from a written report (``firmware.json`` as a dict): exit 3, then exit 4."""
    from edge_lstm.errors import ValidationFailed

    rows = []
    for e in report.get("c", []):
        for where in ("host", "cortex_m"):
            for v in (e.get(where) or {}).get("validation", []):
                rows += [f"{v['artifact']} | {v['runtime']} | {o['name']} | {'; '.join(o['reasons'])}"
                         for o in v["outputs"] if not o["passed"]]
    if rows:
        raise ValidationFailed("The generated C failed its check against the reference.",
                               "\n".join(["file | where | output | why", "--- | --- | --- | ---", *rows]),
                               "See firmware.md for every metric.")
    checks.enforce_budgets(report)


def core_for(target: Any, options: FirmwareOptions) -> tuple[cortexm.CortexM | None, str]:
    """The Cortex-M build configuration and why (or why none)."""
    if not options.cortex_m:
        return None, "not built (--no-cortex-m)"
    if target is None:
        return DEFAULT_CORE, "no --target: a generic Cortex-M4F, as qemu's mps2-an386 board emulates it"
    cfg = cortexm.firmware_config(target)
    if cfg is None:
        return None, f"not built: target {target.name} ({target.arch}) has no [firmware] table"
    return cfg, f"target {target.name}: [firmware] cpu {cfg.cpu}, fpu {cfg.fpu}, float ABI {cfg.float_abi}"


def write_firmware(src: FirmwareSource, out: Path, options: FirmwareOptions, target: Any = None,
                   progress: Progress | None = None, reference: checks.Reference | None = None) -> FirmwareResult:
    """Generate, prove and measure everything into the directory ``out`` (created if missing; the files must be
    new there)."""
    say = progress or (lambda _msg: None)
    core, core_why = core_for(target, options)
    if core is not None and options.c and src.onnx is not None:
        missing = cortexm.toolchain_missing(core.qemu_machine is not None)
        if missing:
            raise UsageError(f"The Cortex-M build needs {', '.join(missing)}, which are not installed.",
                             "Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm; "
                             "or pass --no-cortex-m to skip the build.")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "schema": 1, "kind": "firmware", "tool": {"name": "edge-lstm", "version": __version__},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "source": src.to_dict(),
        "target": _target_dict(target), "cortex_m": {"config": core.to_dict() if core else None, "why": core_why},
        "c": [], "tflm": [], "notes": list(src.notes),
    }
    validations: list[ArtifactValidation] = []
    if options.c and src.onnx is not None:
        validations += _c_path(src, out, options, target, core, report, say, reference)
    if options.tflm:
        _tflm_path(src, out, target, report, say)
    report["passed"] = all(v.passed for v in validations)
    from edge_lstm.firmware.render import markdown

    report = jsonio.clean(report)
    _put(out, REPORT_JSON, jsonio.dumps(report, indent=2) + "\n")
    _put(out, REPORT_MD, markdown(report))
    return FirmwareResult(report, validations)


def _put(out: Path, name: str, text: str | bytes) -> None:
    """One new file in the (staged) output directory, through edge-lstm's only writer."""
    from edge_lstm.outputs import write_into

    write_into(out, name, text.encode() if isinstance(text, str) else text)


def _target_dict(target: Any) -> dict[str, Any] | None:
    if target is None:
        return None
    return {"name": target.name, "display_name": target.display_name, "kind": target.kind, "cpu": target.cpu,
            "flash_budget_bytes": target.flash_budget_bytes, "ram_budget_bytes": target.ram_budget_bytes}


def _program(src: FirmwareSource) -> Program:
    import onnx

    from edge_lstm.firmware.graph import build_program

    assert src.onnx is not None
    return build_program(onnx.load_from_string(src.onnx))


def _c_path(src: FirmwareSource, out: Path, options: FirmwareOptions, target: Any, core: cortexm.CortexM | None,
            report: dict[str, Any], say: Progress, reference: checks.Reference | None) -> list[ArtifactValidation]:
    say("reading the ONNX graph for the C generator")
    prog = _program(src)
    assert src.onnx is not None
    ref = reference or checks.reference_from_onnx(src.onnx, prog, options.windows, options.seed)
    report["program"] = prog.describe()
    report["validation_data"] = {"source": ref.source, "windows": ref.count,
                                 "qemu_windows": min(options.qemu_windows, ref.count)}
    cortex_files: dict[str, str] = {}
    if core is not None:
        windows = ref.flat_windows(options.qemu_windows).reshape(-1, prog.window, prog.n_input)
        cortex_files = cortexm.cortex_files(core, options.prefix, windows, min(2, len(windows)))
        for name, text in cortex_files.items():
            _put(out, name, text)
    validations: list[ArtifactValidation] = []
    for prec in options.precisions:
        say(f"generating C ({prec})")
        code = cgen.generate(prog, prec, options.prefix, src.onnx_name or src.name, src.normalization)
        for name, text in code.files.items():
            _put(out, name, text)
        tol = options.recipe.tolerance(Precision.FP32 if prec == "fp32" else Precision.DYNAMIC_INT8, prog.window)
        entry: dict[str, Any] = {"label": f"C {prec}", "precision": prec, "files": list(code.files),
                                 "const_bytes": code.weight_bytes, "tolerance_of": "fp32" if prec == "fp32"
                                 else "dynamic-int8 (int8 weights, float activations)"}
        say(f"compiling and checking the C ({prec}) on this host")
        entry["host"], vals = _host_check(prog, code, ref, tol, options.prefix)
        validations += vals
        entry["cortex_m"] = {"status": "skipped", "why": report["cortex_m"]["why"], "estimate": _estimate(prog, code)}
        if core is not None:
            say(f"cross-compiling the C ({prec}) for {core.cpu}" + (f" (qemu {core.qemu_machine})"
                                                                      if core.qemu_machine else ""))
            entry["cortex_m"], vals = _cortex_check(prog, code, ref, tol, core, cortex_files)
            validations += vals
        entry["budget"] = _c_budgets(entry["cortex_m"], target)
        report["c"].append(entry)
    return validations


def _host_check(prog: Program, code: cgen.CSource, ref: checks.Reference, tol: Any,
                prefix: str) -> tuple[dict[str, Any], list[ArtifactValidation]]:
    from edge_lstm.firmware.hostc import HOST_FLAGS, HostModel, host_compiler

    with HostModel(code.files, prefix, prog.n_input, prog.window, prog.step_output_size,
                   prog.window_output_size) as model:
        flat = ref.flat_windows()
        window = np.stack([model.window(w) for w in flat])
        stream = np.stack([model.stream(w) for w in flat])
    vals = checks.judge(prog, ref, window, stream, tol, code.source_name, "host C")
    return {"compiler": host_compiler(), "flags": list(HOST_FLAGS), "windows": len(flat),
            "passed": all(v.passed for v in vals), "validation": checks.summary(vals)}, vals


def _cortex_check(prog: Program, code: cgen.CSource, ref: checks.Reference, tol: Any, core: cortexm.CortexM,
                  files: dict[str, str]) -> tuple[dict[str, Any], list[ArtifactValidation]]:
    with tempfile.TemporaryDirectory(prefix="edge-lstm-cortexm-") as tmp:
        work = Path(tmp)
        for name, text in {**files, **code.files}.items():
            _put(work, name, text)
        sizes = cortexm.build(core, work, code)
        entry: dict[str, Any] = {"status": "built", "cpu": core.cpu, "flags": [*core.cflags(), *cortexm.OPT_FLAGS],
                                 "sizes": sizes}
        if core.qemu_machine is None or not sizes["fits_emulated_board"]:
            m = sizes["model"]
            why = ("no qemu machine for this core" if core.qemu_machine is None
                   else f"larger than the memory of qemu's {core.qemu_machine}")
            entry["model"] = {**m, "stack_bytes": None, "ram_bytes": m["ram_static_bytes"],
                              "label": f"measured from the built ELF (not run: {why}); RAM excludes the stack"}
            return entry, []
        run = cortexm.run_qemu(core, work / "model_test.elf")
    return _cortex_run_entry(entry, run, prog, ref, tol, core, code)


def _cortex_run_entry(entry: dict[str, Any], run: dict[str, Any], prog: Program, ref: checks.Reference, tol: Any,
                      core: cortexm.CortexM, code: cgen.CSource) -> tuple[dict[str, Any], list[ArtifactValidation]]:
    m = entry["sizes"]["model"]
    per_tick = run["cal_instructions"] / max(run["cal_ticks"], 1)
    where = f"{core.cpu} on qemu {core.qemu_machine}"
    windows = np.stack(run["windows"])
    streams = np.stack(run["streams"]).reshape(len(run["streams"]), prog.window, prog.step_output_size)
    vals = checks.judge(prog, ref, windows, streams, tol, code.source_name, where)
    entry.update({
        "status": "ran", "qemu_machine": core.qemu_machine, "windows": len(windows), "streams": len(streams),
        "passed": all(v.passed for v in vals), "validation": checks.summary(vals),
        "model": {**m, "stack_bytes": run["stack_bytes"], "ram_bytes": m["ram_static_bytes"] + run["stack_bytes"],
                  "label": f"{EMULATED} ({where}): ELF sections with the model minus the same harness without it "
                           "(arm-none-eabi-size), stack high-water mark of the model calls from a stack paint"},
        "emulated_instructions": {
            "per_window": round(float(np.mean(run["window_ticks"])) * per_tick),
            "per_step_streaming": round(float(np.mean(run["stream_ticks"])) * per_tick / prog.window),
            "instructions_per_tick": per_tick,
            "label": "emulated instructions (qemu -icount shift=0), not device time: a real core's cycles depend "
                     "on its pipeline, flash wait states and caches",
            "method": f"CMSDK timer 0 ticks around each call x instructions per tick, calibrated in the same run by a "
                      f"{run['cal_instructions']:,}-instruction loop",
        },
    })
    return entry, vals


def _estimate(prog: Program, code: cgen.CSource) -> dict[str, Any]:
    """Flash and RAM of the generated C when no build measures them: its constants and static buffers."""
    buffers = 4 * sum(b.size for b in prog.buffers.values())
    if code.precision != "fp32":
        buffers += 4 * max((int(op.consts[k].shape[1]) for op in prog.ops for k in op.consts
                            if k.startswith("w") and op.consts[k].ndim == 2), default=0)
    return {"flash_bytes": code.weight_bytes, "ram_bytes": buffers,
            "label": "estimate (not built for this core): the generated C's constants and static buffers; code, "
                     "libm and stack not included"}


def _c_budgets(cm: dict[str, Any], target: Any) -> list[dict[str, Any]]:
    if target is None:
        return []
    if "model" not in cm:
        est = cm["estimate"]
        return [checks.budget("flash", est["flash_bytes"], target.flash_budget_bytes, "estimate: constants"),
                checks.budget("ram", est["ram_bytes"], target.ram_budget_bytes, "estimate: static buffers")]
    m = cm["model"]
    ram_measure = "data + bss + stack high-water mark" if m.get("stack_bytes") is not None else "data + bss (no stack)"
    return [checks.budget("flash", m["flash_bytes"], target.flash_budget_bytes, f"text + rodata + data, {EMULATED}"
                          if cm.get("status") == "ran" else "text + rodata + data of the built ELF"),
            checks.budget("ram", m["ram_bytes"], target.ram_budget_bytes, ram_measure)]


def _tflm_path(src: FirmwareSource, out: Path, target: Any, report: dict[str, Any], say: Progress) -> None:
    from edge_lstm.firmware import tflm

    inputs = list(src.tflites)
    if not any(not t.streaming for t in inputs):  # no fused window model: lower one from the float32 ONNX
        inputs += _lowered(src, report)
    can_measure = _have_tflm()
    if not can_measure:
        report["notes"].append("TFLite Micro arena not measured: the tflite-micro package is not installed "
                               "(pip install 'edge-lstm[micro]')")
    for t in inputs:
        say(f"TFLite Micro files for {t.filename}" + (" (measuring the arena)" if can_measure else ""))
        info = tflm.describe(t.filename, t.data)
        if can_measure:
            info.arena = tflm.measure_arena(t.data)
        stem = _safe_stem(t.filename)
        files = {**tflm.model_data_c(info, stem), tflm.file_names(stem)[2]: tflm.example_main(info, src.normalization,
                                                                                              stem)}
        for name, text in files.items():
            _put(out, name, text)
        if t.lowered_here:
            files[f"{stem}.tflm.tflite"] = ""
            _put(out, f"{stem}.tflm.tflite", t.data)
        entry = {"label": f"TFLite Micro {t.filename}", "files": list(files), "precision": t.precision,
                 **info.to_dict(), "lowered_here": t.lowered_here, "flash_bytes": len(t.data),
                 "ram_bytes": info.arena.get("recommended_bytes"),
                 "label_sizes": "model array + arena measured on TFLite Micro's host interpreter; the TFLite Micro "
                                "runtime's own code size is not measurable here (no TFLite Micro build for the "
                                "target in this toolchain)"}
        entry["budget"] = [] if target is None else [
            checks.budget("flash", len(t.data), target.flash_budget_bytes, "model array (runtime code not included)"),
            checks.budget("ram", entry["ram_bytes"], target.ram_budget_bytes, "tensor arena (measured + margin)")]
        report["tflm"].append(entry)


def _lowered(src: FirmwareSource, report: dict[str, Any]) -> list[TfliteInput]:
    """No fused window TFLite in the source: lower the float32 ONNX (fused) for TFLite Micro."""
    if src.onnx is None:
        return []
    import onnx

    from edge_lstm.lower.tflite import lower

    try:
        lowered = lower(onnx.load_from_string(src.onnx), "fused")
    except UnsupportedModel as e:
        report["notes"].append(f"no TFLite Micro files: the graph cannot be lowered to TFLite ({e.message})")
        return []
    name = f"{src.name}.fp32.tflite"
    if name in src.skipped:  # the export's own file of that name is another lowering: do not claim its name
        name = f"{src.name}.fp32.fused.tflite"
    report["notes"].append("the source has no fused float32 window TFLite artifact: the float32 ONNX was lowered "
                           f"(fused) here, as {name}")
    return [TfliteInput(name, lowered.data, "fp32", False, lowered_here=True)]


def _safe_stem(filename: str) -> str:
    from edge_lstm.outputs import safe_name

    return safe_name(filename[:-7] if filename.endswith(".tflite") else filename, "model", 100)


def _have_tflm() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("tflite_micro") is not None
    except (ImportError, ValueError):
        return False
