"""Profile artifacts: latency, memory, size and compute, checked against a device target.

Every artifact runs in a fresh process: ``python -m edge_lstm.device`` on the
host, or the same device-side runner shipped over SSH by :mod:`edge_lstm.remote`.
That process reports load time, the first inference, warm runs (raw samples
kept), per-sample latencies, and its peak resident memory over a baseline taken
after importing the runtime but before loading the model. Static figures
(parameters, MACs, weight and graph bytes) come from the artifact's graph
(:mod:`edge_lstm.cost`). With a :class:`~edge_lstm.targets.Target`, the flash
and RAM budgets are checked and a latency *estimate* is derived from MACs and
the target's estimated throughput.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm import cost as cost_mod
from edge_lstm import progress
from edge_lstm.errors import BudgetExceeded, EdgeLstmError, InputFileError, UsageError
from edge_lstm.outputs import atomic_file, write_bytes_atomic
from edge_lstm.reports import ProfileReport

if TYPE_CHECKING:
    from edge_lstm.progress import Say
    from edge_lstm.remote import RemoteConfig
    from edge_lstm.targets import Target

SCHEMA_VERSION = 1
PERCENTILES = (50, 90, 99)
EMULATED_TIMING = "emulated (qemu-user): not device latency"


@dataclass(frozen=True)
class ProfileOptions:
    """How to run each artifact: runtime, threads, warm-up and measured runs, streaming."""

    runtime: str = "auto"
    threads: int = 1
    runs: int = 200
    warmup: int = 20
    streaming: bool = False
    xnnpack: bool = True
    samples: int = 8  # feed samples; consecutive steps when streaming
    seed: int = 0
    timeout_s: float = 600.0
    #: for PyTorch model files (the torch reference runtime): input shapes, and loading whole pickled modules
    input_shapes: tuple[tuple[int, ...], ...] = ()
    trust_pickle: bool = False
    #: a reference (model.pt, or a float .onnx/.tflite) run on the same feed: each artifact's outputs are checked
    reference: str | None = None

    def __post_init__(self) -> None:
        for name in ("threads", "runs", "samples"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {self.warmup}.")

    def device_args(self) -> list[str]:
        """Arguments for the device-side runner (``edge_lstm.device``)."""
        args = ["--runtime", self.runtime, "--threads", str(self.threads),
                "--warmup", str(self.warmup), "--runs", str(self.runs)]
        if self.streaming:
            args.append("--sequence")
        if not self.xnnpack:
            args.append("--no-xnnpack")
        return args


def latency_stats(samples_s: list[float]) -> dict[str, float | int]:
    """min, mean, std, p50, p90, p99 and max of latencies in seconds, with the sample count."""
    if not samples_s:
        return {"runs": 0}
    a = np.asarray(samples_s, dtype=np.float64)
    stats: dict[str, float | int] = {"runs": int(a.size), "min": float(a.min()), "mean": float(a.mean()),
                                     "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}
    for p in PERCENTILES:
        stats[f"p{p}"] = float(np.percentile(a, p))
    stats["max"] = float(a.max())
    return stats


# ---------------------------------------------------------------- feeds


def input_specs(path: Path, fmt: str, input_shapes: tuple[tuple[int, ...], ...] = (),
                trust_pickle: bool = False) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape with dynamic axes set to 1, dtype) of each model input, read from the file.

    ``input_shapes`` and ``trust_pickle`` apply to PyTorch model files only (see :func:`edge_lstm.load.load`).
    """
    if fmt == "onnx":
        try:
            import onnx
        except ImportError:  # a device with onnxruntime only
            return _ort_input_specs(path)
        proto = onnx.load(str(path), load_external_data=False)
        inits = {i.name for i in proto.graph.initializer}
        out = []
        for vi in proto.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            out.append((vi.name, tuple(max(int(d.dim_value), 1) for d in tt.shape.dim), dtype))
        return out
    if fmt == "tflite":
        from edge_lstm.cost_tflite import parse
        from edge_lstm.tflite_schema import TENSOR_TYPES

        model = parse(path.read_bytes())
        g = model.subgraphs[0]
        return [(t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                 tuple(max(int(d), 1) for d in t.shape), TENSOR_TYPES.get(t.type, "float32"))
                for t in (g.tensors[i] for i in g.inputs)]
    from edge_lstm import registry

    if fmt in registry.FORMATS:  # another registry format: its runner reads the inputs from the file
        rt = registry.runtimes_for(fmt)[0]
        rt.require()
        try:
            with rt.runner_class().open(path, rt.name) as runner:
                return [(t.name, t.concrete(1), t.dtype) for t in runner.inputs]
        except ImportError as e:  # installed, but broken (e.g. built against another torch)
            raise UsageError(f"The {rt.name} runtime is installed but does not import: {e}.",
                             f"Reinstall it: {rt.install}.") from e
        except Exception as e:  # a truncated or corrupt file: the runtime's loader refuses it
            raise InputFileError(f"'{path}' looks like {fmt} but {rt.name} cannot load it: "
                                 f"{' '.join(str(e).split())[:300]}", "Export it again.") from e
    from edge_lstm.load import load

    model_pt = load(path, list(input_shapes) or None, trust_pickle)
    return [(t.name, t.concrete(1), t.dtype) for t in model_pt.inputs.inputs]


def _ort_input_specs(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """Input specs from ONNX Runtime itself, where the ``onnx`` package is not installed."""
    from edge_lstm.runners.onnxrt import OnnxRuntimeRunner

    with OnnxRuntimeRunner(path) as r:
        return [(t.name, t.concrete(1), t.dtype) for t in r.inputs]


def make_feed(specs: list[tuple[str, tuple[int, ...], str]], samples: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded random inputs with a leading sample axis, as ``edge_lstm.device`` reads them."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, shape, dtype in specs:
        if np.dtype(dtype).kind == "f":
            feed[name] = rng.standard_normal((samples, *shape)).astype(dtype)
        else:
            feed[name] = rng.integers(-8, 8, (samples, *shape)).astype(dtype)
    return feed


# ---------------------------------------------------------------- running


#: runs ``edge_lstm.device`` with the torch reference's model loader given --input-shape / --trust-pickle
def run_local(artifact: Path, feed_path: Path, options: ProfileOptions, fmt: str | None = None,
              outputs: Path | None = None, on_runs: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the device-side runner in a fresh local process; its JSON report.

    A PyTorch model file (``fmt == "torch"``) is loaded there with ``options.input_shapes`` and
    ``options.trust_pickle``. ``on_runs(n)`` hears the timed runs as they finish.
    """
    import edge_lstm
    from edge_lstm import childproc

    pkg_root = str(Path(edge_lstm.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([pkg_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    runner_args = [str(artifact), "--inputs", str(feed_path), *options.device_args()]
    runner_args += ["--outputs", str(outputs)] if outputs is not None else []
    runner_args += ["--progress"] if on_runs is not None else []
    if fmt == "torch":
        runner_args += [a for s in options.input_shapes for a in ("--input-shape", "x".join(map(str, s)))]
        runner_args += ["--trust-pickle"] if options.trust_pickle else []
    cmd = [sys.executable, "-m", "edge_lstm.device", *runner_args]
    try:
        proc = childproc.run(cmd, options.timeout_s, env, on_runs)
    except subprocess.TimeoutExpired as e:
        raise UsageError(f"Profiling '{artifact.name}' took longer than {options.timeout_s:.0f} s.",
                         "Lower --runs, or profile a smaller artifact.") from e
    return parse_device_output(proc.stdout, proc.stderr, proc.returncode, artifact.name, "this host")


def parse_device_output(stdout: str, stderr: str, rc: int, artifact: str, where: str) -> dict[str, Any]:
    """The device runner's JSON line; its reported errors become :class:`EdgeLstmError`s."""
    from edge_lstm.remote import read_device_reply

    report = read_device_reply(stdout, InputFileError, where)
    if report is None:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise InputFileError(f"The device runner failed on '{artifact}' on {where} (exit {rc}): {tail}")
    if report.get("error") == "missing-runtime":
        from edge_lstm import registry

        raise UsageError(f"The runtime for '{artifact}' is not installed on {where}: {report['message']}",
                         "Install it (" + "; ".join(f"{r.name}: {r.install}" for r in registry.RUNTIMES_TABLE)
                         + ") or pick --runtime.")
    if "error" in report:
        raise InputFileError(f"'{artifact}' could not be run on {where}: {report['error']}: {report['message']}",
                             "Check that the file is an artifact edge-lstm wrote and that --runtime fits it.")
    return report


def profile_artifact(path: str | Path, options: ProfileOptions, remote: RemoteConfig | None = None,
                     say: Say | None = None) -> dict[str, Any]:
    """Measure one artifact (here or on ``remote``) and add its static cost and sizes.

    On TFLite Micro the outputs are checked too (NaN/Inf, and against ``options.reference`` when given): a
    microcontroller budget counts only for a run that computed the right thing. ``say`` (a
    :class:`~edge_lstm.progress.Progress`) counts the timed runs.
    """
    with progress.task(say, f"{Path(path).name}: timed runs", options.runs, "run") as count:
        return _profile_artifact(Path(path), options, remote, count.tick if isinstance(say, progress.Progress)
                                 else None)


def _check_runtime_takes(p: Path, fmt: str, runtime: str) -> None:
    """:class:`UsageError` (exit 2) when ``--runtime`` names a runtime that does not run this file's format."""
    from edge_lstm import registry

    if fmt not in registry.FORMATS or runtime not in registry.RUNTIMES:
        return  # a PyTorch file (the torch runner), or an unknown runtime the device runner reports itself
    r = registry.runtime(runtime)
    if fmt not in r.formats:
        able = ", ".join(x.name for x in registry.runtimes_for(fmt))
        raise UsageError(f"'{p.name}' is a {fmt} file; --runtime {runtime} runs {', '.join(r.formats)} files only.",
                         f"Profile it with --runtime {able.split(', ')[0]} (the runtimes for {fmt}: {able}), or "
                         "--runtime auto.")


def _profile_artifact(p: Path, options: ProfileOptions, remote: RemoteConfig | None,
                      on_runs: Callable[[int], None] | None) -> dict[str, Any]:
    from edge_lstm import tflm_check
    from edge_lstm.device import resolve_runtime

    fmt = cost_mod.artifact_format(p)
    runtime = resolve_runtime(p, options.runtime)
    _check_runtime_takes(p, fmt, runtime)
    if runtime == "tflm":
        tflm_check.refuse_unrunnable(p, fmt)
    specs = input_specs(p, fmt, options.input_shapes, options.trust_pickle)
    with tempfile.TemporaryDirectory(prefix="edge-lstm-profile-") as tmp:
        feed_path, out_path = Path(tmp) / "feed.npz", Path(tmp) / "out.npz"
        with atomic_file(feed_path) as f:
            np.savez(f, **make_feed(specs, options.samples, options.seed))  # type: ignore[arg-type]
        if remote is None:
            try:
                raw = run_local(p, feed_path, options, fmt, out_path, on_runs)
            except InputFileError as e:
                if runtime == "tflm":
                    tflm_check.raise_if_unrunnable(p, e)
                raise
            check = tflm_check.outputs_check(raw, out_path, feed_path, options, p, run_local)
        else:
            from edge_lstm.remote import run_remote

            raw = run_remote(remote, p, feed_path, options.device_args(), options.timeout_s, on_runs=on_runs)
            check = tflm_check.outputs_check(raw, None, feed_path, options, p, run_local)
    entry = summarize(raw, p, fmt, options, where=remote.host if remote else "host")
    entry["outputs_check"] = check
    return entry


def _static(path: Path, fmt: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    if fmt == "onnx":
        try:
            c = cost_mod.cost_of(path)
            return (c.to_dict() if c else None), cost_mod.onnx_sizes(path)
        except ImportError:  # a device with onnxruntime only: no MACs, sizes from the wire format
            from edge_lstm.onnx_read import initializer_bytes

            data = path.read_bytes()
            weights = initializer_bytes(data)
            return None, {"file_bytes": len(data), "weights_bytes": weights, "graph_bytes": len(data) - weights,
                          "external_data_bytes": 0}
    if fmt == "tflite":
        from edge_lstm.cost_tflite import tflite_cost, tflite_sizes

        data = path.read_bytes()
        return tflite_cost(data).to_dict(), tflite_sizes(data)
    size = path.stat().st_size  # .ort / .pte: their weights are not told apart from the program here
    return None, {"file_bytes": size, "weights_bytes": None, "graph_bytes": None, "external_data_bytes": 0}


def _steps_from_inputs(path: Path, fmt: str, options: ProfileOptions) -> int:
    """Time steps per window of a file whose static cost is not counted (.ort, .pte): the first input's time axis."""
    if fmt not in ("ort", "executorch") or options.streaming:
        return 1
    from edge_lstm.spec import TensorSpec

    specs = input_specs(path, fmt)
    return TensorSpec(specs[0][0], specs[0][1], specs[0][2]).steps if specs else 1


def summarize(raw: dict[str, Any], path: Path, fmt: str, options: ProfileOptions, where: str) -> dict[str, Any]:
    """One artifact's entry in the profile report, from the device runner's raw JSON."""
    cost, sizes = _static(path, fmt)
    lat = latency_stats(raw["latencies_s"])
    steps = int(cost["time_steps"]) if cost else _steps_from_inputs(path, fmt, options)
    streaming = options.streaming or (steps == 1 and bool(cost and cost["macs_per_step"]))
    per_sample = (lat["p50"] if streaming else lat["p50"] / max(steps, 1)) if lat["runs"] else None
    baseline, peak = raw.get("rss_baseline_bytes"), raw.get("rss_peak_bytes")
    return {
        "artifact": path.name, "path": str(path), "format": fmt, "where": where,
        "runtime": raw["runtime"], "runtime_version": raw["version"], "threads": raw["threads"],
        "xnnpack": raw.get("xnnpack"), "streaming": streaming,
        "load_s": raw["load_s"], "first_s": raw["first_s"], "warmup": options.warmup,
        "latency_s": lat, "latencies_s": raw["latencies_s"],
        "per_sample_s": per_sample,
        "per_sample_basis": "p50 per call (one new sample per call)" if streaming
        else f"p50 per window / {steps} time steps (amortised)",
        "sample_latencies_s": raw.get("sample_latencies_s", []),
        "memory": {
            "peak_rss_bytes": (peak - baseline) if peak is not None and baseline is not None else None,
            "process_peak_rss_bytes": peak, "baseline_rss_bytes": baseline,
            "method": raw.get("memory_method", "not reported by this device runner"),
        },
        "arena_bytes": raw.get("arena_used_bytes"),
        "size": sizes,
        "cost": _cost_summary(cost),
        "inputs": raw.get("inputs", []),
        "device": {**(raw.get("device") or {}), "python": raw.get("python"), "numpy": raw.get("numpy")},
        # under emulation (the device says so: edge-lstm device emulate) time and memory measure the emulator
        "emulated": bool((raw.get("device") or {}).get("emulated")),
        "timing": EMULATED_TIMING if (raw.get("device") or {}).get("emulated") else "measured",
    }


def _cost_summary(cost: dict[str, Any] | None) -> dict[str, Any] | None:
    if cost is None:
        return None
    keep = ("precision", "params", "weight_bytes", "macs", "macs_per_step", "elementwise_ops", "time_steps",
            "weight_bytes_by_precision")
    return {k: cost[k] for k in keep}


def host_info() -> dict[str, Any]:
    """Where the profiler ran: platform, machine, CPU count, Python."""
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version()}


def profile(paths: list[str | Path], options: ProfileOptions, target: Target | None = None,
            remote: RemoteConfig | None = None, say: Say | None = None) -> dict[str, Any]:
    """:func:`profile_report` as JSON (what ``--json`` and ``--output`` hold)."""
    return profile_report(paths, options, target, remote, say).to_dict()


def profile_report(paths: list[str | Path], options: ProfileOptions, target: Target | None = None,
                   remote: RemoteConfig | None = None, say: Say | None = None) -> ProfileReport:
    """Profile every artifact; with ``target``, add estimates and budget checks (not enforced here).

    ``say`` (a :class:`~edge_lstm.progress.Progress`) counts the artifacts (when there are several) and
    each one's timed runs.
    """
    if not paths:
        raise UsageError("No artifact given.", "Pass one or more .onnx/.tflite files (or a model.pt).")
    if options.runtime != "auto":
        from edge_lstm import registry

        registry.runtime(options.runtime)  # an unknown name: exit 2 listing the registry's runtimes
    from edge_lstm import __version__

    if options.input_shapes or options.trust_pickle:
        _check_torch_options(paths, remote)
    if len(paths) == 1:
        artifacts = [profile_artifact(paths[0], options, remote, say)]
    else:
        artifacts = []
        with progress.task(say, "profiling", len(paths), "artifact") as count:
            for p in paths:
                count.item(f"profiling {Path(p).name}" + (f" on {remote.host}" if remote else ""))
                artifacts.append(profile_artifact(p, options, remote, say))
    report = ProfileReport(
        schema=SCHEMA_VERSION, tool_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 - 3.10
        host=host_info(), where=remote.host if remote else "host",
        options=asdict(options), artifacts=artifacts,
        device=artifacts[0]["device"] if remote else None,  # as the device reported itself
        emulated=any(a["emulated"] for a in artifacts),
    )
    if target is not None:
        apply_target(report, target)
        mark_not_runnable(report, unrunnable(report, target))
    return report


def unrunnable(report: ProfileReport, target: Target) -> dict[str, str]:
    """The artifacts of a profile that ``target`` cannot run, and why (what export says of an artifact validated
    only elsewhere: :func:`not_runnable`, "profiled on" instead of "validated on").

    Export knows which runtimes an artifact passed on; a profile only which it ran on. So an artifact counts here
    only when none of its rows is on a runtime the target runs *and* no runtime the target runs takes its format
    at all (an .onnx on a TFLite Micro board). A .tflite profiled on LiteRT for a microcontroller may still run on
    TFLite Micro: its "runtime" check stays a warning that says to profile it there (``--runtime tflm``)."""
    from edge_lstm import registry

    rows: dict[str, list[dict[str, Any]]] = {}
    for a in report.artifacts:
        rows.setdefault(Path(str(a["artifact"])).name, []).append(a)
    out = {}
    for name, entries in rows.items():
        first = entries[0]
        takers = {r.name for r in registry.runtimes_for(str(first.get("format")))}
        if any(runs_there(rt, target.runtimes) for rt in takers):
            continue
        precision = (first.get("cost") or {}).get("precision") or first.get("precision") or "fp32"
        why = not_runnable([str(a["runtime"]) for a in entries], target, str(precision), _lowering(first),
                           basis="profiled")
        if why:
            out[name] = why
    return out


def _lowering(entry: dict[str, Any]) -> str | None:
    """The lowering form of a profiled .tflite, read from its ops; ``None`` for other formats or unreadable files."""
    if entry.get("format") != "tflite":
        return None
    from edge_lstm.inspect_artifact import lowering_form
    from edge_lstm.tflite_read import read

    try:
        return lowering_form(read(Path(str(entry["path"])).read_bytes()))
    except (OSError, ValueError, IndexError, EdgeLstmError):
        return None


def _check_torch_options(paths: list[str | Path], remote: RemoteConfig | None) -> None:
    """--input-shape / --trust-pickle need a PyTorch model file profiled on this host."""
    if remote is not None:
        raise UsageError("--input-shape and --trust-pickle apply to the PyTorch reference runtime, which runs on "
                         "this host only, not with --remote.",
                         "Profile the exported .onnx/.tflite on the device instead.")
    if not any(cost_mod.artifact_format(p) == "torch" for p in paths):
        raise UsageError("--input-shape and --trust-pickle apply only to PyTorch model files (.pt, .pt2), "
                         "and no artifact given is one.",
                         "Drop them: .onnx and .tflite artifacts carry their own input shapes.")


# ---------------------------------------------------------------- targets and budgets


def apply_target(report: ProfileReport | dict[str, Any], target: Target) -> None:
    """Add the target, a labelled latency estimate and budget checks to every artifact entry (of the report, or of
    its JSON)."""
    if isinstance(report, ProfileReport):
        report.target = target.to_dict()
        entries = report.artifacts
    else:
        report["target"] = target.to_dict()
        entries = report["artifacts"]
    for a in entries:
        a["estimate"] = latency_estimate(a, target)
        a["budget"] = budget_checks(a, target)


#: the share of a target's int8 throughput an int16x8 artifact is estimated at, and why (an assumption, not a
#: measurement on the target): its activations are 16-bit, so a SIMD multiply-accumulate holds half the lanes of an
#: 8-bit one, and its LiteRT kernels are TFLite's builtin ones (XNNPACK takes no int16). Measured once on an x86
#: host's LiteRT (2 x LSTM(16) loop, window 24): int16x8 127 us against int8 42 us, so half is optimistic there
INT16X8_SHARE = 0.5
INT16X8_BASIS = ("int16x8 at half the int8 figure (assumed, not measured: 16-bit activations fill half the SIMD "
                 "lanes of 8-bit kernels, and LiteRT runs them on builtin kernels, not XNNPACK)")


def macs_per_s(target: Target, precision: str) -> tuple[float, str]:
    """The estimated throughput for an artifact of ``precision`` on ``target``, and the precision rule it used."""
    if precision == "int16x8":
        return target.int8_macs_per_s * INT16X8_SHARE, INT16X8_BASIS
    from edge_lstm import registry

    figure = "int8" if registry.integer_math(precision) else "fp32"
    return target.macs_per_s(precision), f"{precision} at the {figure} figure"


def latency_estimate(entry: dict[str, Any], target: Target) -> dict[str, Any] | None:
    """MACs / the target's estimated throughput: an estimate, not a measurement (int16x8: :data:`INT16X8_BASIS`)."""
    c = entry.get("cost")
    if not c:
        return None
    rate, rule = macs_per_s(target, c["precision"])
    return {
        "label": "estimate", "latency_s": c["macs"] / rate, "per_step_s": c["macs_per_step"] / rate,
        "macs": c["macs"], "macs_per_s": rate, "precision_rule": rule,
        "basis": f"estimate: {c['macs']:,} MACs / {rate:.3g} MAC/s ({c['precision']}) on {target.name}"
                 + (f" ({rule})" if c["precision"] == "int16x8" else "") + f"; {target.throughput_method}",
    }


def budget_checks(entry: dict[str, Any], target: Target) -> list[dict[str, Any]]:
    """Flash (file size) and RAM (arena on MCUs, peak RSS elsewhere) against the target's budgets.

    On a microcontroller nothing reads "ok" unless the artifact ran correctly on TFLite Micro: an
    unverified file that would fit the flash is "unverified", an arena that was not measured (or was
    measured by a run with wrong outputs) is "not-measured".
    """
    checks = [_check("flash", entry["size"]["file_bytes"], target.flash_budget_bytes, "file size")]
    if target.kind == "mcu":
        from edge_lstm.tflm_check import mcu_budgets

        return mcu_budgets(entry, target, checks[0], _check)
    if entry.get("emulated"):
        checks.append({"budget": "ram", "status": "skipped", "measure": "peak RSS",
                       "note": f"measured under emulation on {entry['where']} (it includes the emulator): not "
                               "used for budgets; profile on the real device"})
    elif entry["memory"]["peak_rss_bytes"] is not None:
        checks.append(_check("ram", entry["memory"]["peak_rss_bytes"], target.ram_budget_bytes,
                             f"peak RSS over baseline, measured on {entry['where']}"))
    if not runs_there(entry["runtime"], target.runtimes):
        checks.append({"budget": "runtime", "status": "warn", "measure": entry["runtime"],
                       "note": f"{target.name} runs {', '.join(target.runtimes)}, not {entry['runtime']}"})
    return checks


def runs_there(runtime: str, target_runtimes: Sequence[str]) -> bool:
    """True when ``runtime`` is one the target runs (LiteRT and tflite-runtime run the same .tflite kernels)."""
    ok = set(target_runtimes)
    return runtime in ok or (runtime == "litert" and "tflite-runtime" in ok) or (
        runtime == "tflite-runtime" and "litert" in ok)


def not_runnable(validated: Sequence[str], target: Target, precision: str, lowering: str | None,
                 basis: str = "validated") -> str | None:
    """Why an artifact that passed validation on ``validated`` (its runtimes) cannot run on ``target``, and what
    would; ``None`` when one of them is a runtime the target runs (or nothing passed: it failed anyway). ``basis``
    is what the runtimes did ("validated" by export, "profiled" by profile)."""
    if not validated or any(runs_there(rt, target.runtimes) for rt in validated):
        return None
    tflite = any(runs_there(rt, target.runtimes) for rt in ("litert", "tflite-runtime"))
    if target.kind == "mcu":
        fix = ("TFLite Micro runs only a .tflite that validates on it: export --format tflite --precision int8 "
               "(full integer) for this target")
    elif lowering == "fused" and tflite:
        fix = f"--lowering loop (or unrolled) at --precision {precision} runs on LiteRT/tflite-runtime"
    elif not tflite:
        fix = f"{target.name} runs no TFLite runtime: export --format onnx for it"
    else:
        fix = "export a --precision that validates on one of those runtimes"
    return (f"not runnable on {target.name}: {basis} on {', '.join(dict.fromkeys(validated))} only; "
            f"{target.name} runs {', '.join(target.runtimes)} ({fix})")


def mark_not_runnable(report: ProfileReport, why: dict[str, str]) -> None:
    """Turn the "runtime" budget check of each artifact in ``why`` (file name -> :func:`not_runnable`'s text) from
    "warn" into "not-runnable": no row of the artifact is on a runtime the target runs. Budgets fail on it."""
    for a in report.artifacts:
        text = why.get(Path(str(a.get("artifact"))).name)
        for c in a.get("budget") or [] if text else []:
            if c["budget"] == "runtime":
                c.update(status="not-runnable", note=text)


def _check(kind: str, used: int, budget: int, measure: str) -> dict[str, Any]:
    over = int(used) - int(budget)
    return {"budget": kind, "status": "over" if over > 0 else "ok", "measure": measure,
            "used_bytes": int(used), "budget_bytes": int(budget), "over_bytes": max(over, 0),
            "headroom_bytes": max(-over, 0)}


def enforce_budgets(report: ProfileReport | dict[str, Any]) -> None:
    """Raise :class:`BudgetExceeded` naming every artifact and budget that is over, and by how much; or, when no
    artifact can run on the target at all (each has a "runtime" check "not-runnable", see
    :func:`mark_not_runnable`), naming each and what would run there."""
    if isinstance(report, ProfileReport):
        report = report.to_dict()
    lines, unrunnable = [], []
    for a in report["artifacts"]:
        for c in a.get("budget") or []:
            line = f"{Path(str(a['artifact'])).name}: {c.get('note')}"
            if c["status"] == "not-runnable" and line not in unrunnable:
                unrunnable.append(line)
            if c["status"] == "over":
                lines.append(f"{a['artifact']}: {c['budget']} {c['used_bytes']:,} B ({c['measure']}) exceeds "
                             f"the budget of {c['budget_bytes']:,} B by {c['over_bytes']:,} B "
                             f"({c['over_bytes'] / c['budget_bytes']:.1%})")
    name = report["target"]["name"] if report.get("target") else "the target"
    if lines:
        more = "".join(f"\n  {u}" for u in unrunnable)
        raise BudgetExceeded(f"Over budget on {name}:\n  " + "\n  ".join(lines) + more,
                             "Quantize (int8 quarters the weights), shrink hidden size or layers, or pick a "
                             "larger target.")
    runnable = [a for a in report["artifacts"] if not any(c["status"] == "not-runnable" for c in a.get("budget") or [])]
    if unrunnable and not runnable:  # beside one that runs there, the others are notes (each says so), not a failure
        raise BudgetExceeded(f"No artifact can run on {name}:\n  " + "\n  ".join(unrunnable),
                             "Export the format/precision/lowering named above for this target, or drop --target "
                             "(nothing was refused: every measurement is in the result).")


# ---------------------------------------------------------------- comparisons


_NUM = {"type": ["number", "null"]}
_OBJ_OR_NULL = {"type": ["object", "null"]}
#: the fields of a previous profile report that --compare reads
PROFILE_REPORT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["artifacts"],
    "properties": {"artifacts": {"type": "array", "maxItems": 100_000, "items": {
        "type": "object", "required": ["artifact"],
        "properties": {"artifact": {"type": "string"}, "runtime": {"type": ["string", "null"]},
                       "where": {"type": ["string", "null"]}, "arena_bytes": _NUM,
                       "latency_s": {**_OBJ_OR_NULL, "properties": {"p50": _NUM}},
                       "memory": {**_OBJ_OR_NULL, "properties": {"peak_rss_bytes": _NUM}},
                       "size": {**_OBJ_OR_NULL, "properties": {"file_bytes": _NUM}}}}}},
}
#: the fields of an export report that --export-report reads (the worst error per artifact)
EXPORT_REPORT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["artifacts"],
    "properties": {"artifacts": {"type": "array", "maxItems": 100_000, "items": {
        "type": "object", "properties": {"file": {"type": "string"}, "validation": {
            "type": ["array", "null"], "items": {"type": "object", "properties": {"outputs": {
                "type": "array", "items": {"type": "object", "properties": {"max_abs": _NUM}}}}}}}}}},
}
_MAX_REPORT_BYTES = 256 << 20


def _read_report(path: str | Path, kind: str, report_schema: dict[str, Any], written_by: str) -> dict[str, Any]:
    p = Path(path)
    try:
        if p.stat().st_size > _MAX_REPORT_BYTES:
            raise InputFileError(f"The {kind} report '{p}' is larger than {_MAX_REPORT_BYTES:,} bytes.")
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        raise InputFileError(f"Cannot read the {kind} report '{p}': {reason}.",
                             f"Pass a report.json written by {written_by}.") from e
    from edge_lstm import schema

    schema.check(data, report_schema, schema.file_error(f"'{p}' is not an edge-lstm {kind} report",
                                                        f"Pass a report.json written by {written_by}."), finite=False)
    return data  # type: ignore[no-any-return]


def load_report(path: str | Path) -> dict[str, Any]:
    """A previous profile report (``--compare``), validated; :class:`InputFileError` when unreadable."""
    return _read_report(path, "profile", PROFILE_REPORT_SCHEMA, "`edge-lstm profile --output`")


def load_export_report(path: str | Path) -> dict[str, Any]:
    """An ``edge-lstm export`` report.json (its validation errors go into the HTML table), validated."""
    return _read_report(path, "export", EXPORT_REPORT_SCHEMA, "`edge-lstm export`")


def compare(report: dict[str, Any], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """Per artifact (matched by file name and runtime, else by file name): changes against ``previous``."""
    old = {(a.get("artifact"), a.get("runtime")): a for a in previous["artifacts"]}
    by_name = {a.get("artifact"): a for a in previous["artifacts"]}
    rows = []
    for a in report["artifacts"]:
        b = old.get((a["artifact"], a["runtime"])) or by_name.get(a["artifact"])
        if b is None:
            rows.append({"artifact": a["artifact"], "runtime": a["runtime"], "previous": None})
            continue
        rows.append({
            "artifact": a["artifact"], "runtime": a["runtime"], "previous": {"where": b.get("where"),
                                                                            "runtime": b.get("runtime")},
            "p50_s": _delta(a["latency_s"].get("p50"), (b.get("latency_s") or {}).get("p50")),
            "peak_rss_bytes": _delta(a["memory"]["peak_rss_bytes"], (b.get("memory") or {}).get("peak_rss_bytes")),
            "file_bytes": _delta(a["size"]["file_bytes"], (b.get("size") or {}).get("file_bytes")),
            "arena_bytes": _delta(a.get("arena_bytes"), b.get("arena_bytes")),
        })
    return rows


def _delta(new: float | None, old: float | None) -> dict[str, float | None]:
    if new is None or old is None:
        return {"new": new, "old": old, "change": None, "ratio": None}
    return {"new": new, "old": old, "change": new - old, "ratio": (new / old) if old else None}


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the JSON report atomically (temp file, then rename); :class:`UsageError` when it cannot be written."""
    out = Path(path)
    from edge_lstm.jsonio import dumps

    data = (dumps(report, indent=2) + "\n").encode()
    write_file(out, data)
    return out


def write_file(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file and a rename (creating missing parent directories).

    Nothing but ``path`` is left behind; an ``OSError`` becomes a :class:`UsageError` naming the path.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
    except OSError as e:
        raise UsageError(f"Cannot write '{path}': {e.strerror or e}.",
                         "Choose an --output in a directory you can write to.") from e
