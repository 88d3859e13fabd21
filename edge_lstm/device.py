"""Device-side runner: runs an artifact on feeds from an ``.npz`` and reports JSON.

Imports only the standard library, numpy and the one runtime asked for, so it
runs on a Raspberry Pi or phone with ``numpy`` and ``tflite-runtime`` (or
``ai-edge-litert``, ``onnxruntime``) and nothing else. ``edge_lstm.remote``
ships it, with the runner modules, as one self-contained zipapp.

Usage::

    python -m edge_lstm.device MODEL --inputs feed.npz [--outputs out.npz]
        [--runtime auto|onnxruntime|litert|tflite-runtime|tflm|executorch|torch] [--threads N]
        [--no-xnnpack] [--sequence] [--warmup N] [--runs N] [--progress]

``feed.npz`` holds one array per model input, named like the input, with a
leading sample axis: ``x`` of shape ``(N, 1, 96, 1)`` is N windows. Each sample
is run after ``reset_state()`` unless ``--sequence`` says the samples are
consecutive streaming steps. ``--runs`` then times sample 0 repeatedly;
``--progress`` reports the runs done on stderr between chunks (never inside a
timed call), so the host can draw a bar.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm import registry
from edge_lstm.outputs import atomic_file  # the standard library only, like this module
from edge_lstm.runners.base import Runner

#: runtime name -> (module, class), and the packages that provide it (tried in order, imported for the memory
#: baseline): both read from the registry, so a runtime added there runs here
RUNTIMES: dict[str, tuple[str, str]] = {r.name: (r.runner.partition(":")[0], r.runner.partition(":")[2])
                                         for r in registry.RUNTIMES_TABLE}
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {r.name: r.modules for r in registry.RUNTIMES_TABLE}

MEMORY_METHODS = {
    "vmhwm": "peak resident set size (VmHWM, /proc/self/status) of a fresh process while loading and running "
             "the model, minus its resident size (VmRSS) after importing numpy and the runtime; the peak was reset "
             "(/proc/self/clear_refs) after the imports",
    "ru_maxrss": "peak resident set size (getrusage ru_maxrss) of a fresh process after loading and running the "
                 "model, minus the same process's peak after importing numpy and the runtime (an import peak "
                 "above the model's can hide the model's share)",
}


def make_runner(path: str | Path, runtime: str = "auto", threads: int | None = 1, xnnpack: bool = True,
                torch_load: dict[str, Any] | None = None) -> Runner:
    """A runner for ``path`` on ``runtime`` (``auto``: by the file's format, see :func:`resolve_runtime`).

    ``torch_load`` (``input_shapes``, ``trust_pickle``) is passed to ``edge_lstm.load.load`` for a PyTorch file.
    """
    runtime = resolve_runtime(path, runtime)
    if runtime not in RUNTIMES:
        raise SystemExit(f"unknown runtime '{runtime}'; known: {', '.join(RUNTIMES)}")
    module, cls = RUNTIMES[runtime]
    runner_cls = getattr(importlib.import_module(module), cls)
    return runner_cls.open(Path(path), runtime, threads=threads, xnnpack=xnnpack,  # type: ignore[no-any-return]
                           torch_load=torch_load)


def resolve_runtime(path: str | Path, runtime: str = "auto") -> str:
    """``runtime``, or for ``auto``: the first registry runtime of the format the file's identifier names
    (litert for TFLite, executorch for ``.pte``, onnxruntime for ``.ort``), torch for a PyTorch zip, else
    onnxruntime (an ONNX protobuf has no identifier)."""
    if runtime != "auto":
        return runtime
    with Path(path).open("rb") as f:
        head = f.read(8)
    fmt = registry.format_of_bytes(head)
    if fmt == "tflite" and _fused_16x8(Path(path)):
        return "tflm"  # LiteRT's fused LSTM kernel has no 16x8 path; TFLite Micro's has
    if fmt is not None:
        return registry.runtimes_for(fmt)[0].name
    return "torch" if head[:4] == b"PK\x03\x04" else "onnxruntime"


def _fused_16x8(path: Path) -> bool:
    """True for a TFLite file whose fused LSTM takes int16 activations (edge-lstm's int16x8 for TFLite Micro)."""
    from edge_lstm import tflite_read
    from edge_lstm.tflite_schema import TYPE_CODES

    try:
        model = tflite_read.read(path.read_bytes())
    except Exception:  # not readable here: the runtime's own error says what is wrong with it
        return False
    return any(tflite_read.op_name(model, op) == "UNIDIRECTIONAL_SEQUENCE_LSTM" and op.inputs
               and g.tensors[op.inputs[0]].type == TYPE_CODES["int16"] for g in model.subgraphs for op in g.operators)


def import_runtime(runtime: str) -> None:
    """Import the packages behind ``runtime`` (raises ImportError naming the missing one)."""
    errors = []
    for name in RUNTIME_PACKAGES.get(runtime, ()):
        try:
            importlib.import_module(name)
            return
        except ImportError as e:
            errors.append(str(e))
    if errors:
        raise ImportError(f"runtime '{runtime}' is not installed: " + "; ".join(errors))


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes: VmHWM on Linux, else ru_maxrss."""
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def memory_baseline() -> tuple[int, str]:
    """Reset the peak to the current resident size where Linux allows it; (baseline bytes, method key)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss = _proc_status_bytes("VmRSS")
        if rss is not None:
            return rss, "vmhwm"
    except OSError:
        pass
    return peak_rss_bytes(), "ru_maxrss"


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_samples(runner: Runner, feeds: dict[str, np.ndarray], sequence: bool) -> dict[str, np.ndarray]:
    """Run every sample; reset state before each unless they are consecutive steps."""
    n = len(next(iter(feeds.values())))
    outs: dict[str, list[np.ndarray]] = {}
    runner.reset_state()
    for i in range(n):
        if not sequence:
            runner.reset_state()
        res = runner.infer({k: v[i] for k, v in feeds.items()})
        for k, v in res.items():
            outs.setdefault(k, []).append(np.asarray(v))
    return {k: np.stack(v) for k, v in outs.items()}


def time_runs(runner: Runner, feed: dict[str, np.ndarray], warmup: int, runs: int, reset: bool,
              progress: Callable[[int, int], None] | None = None) -> list[float]:
    """Seconds per call over ``runs`` calls after ``warmup`` untimed ones.

    The feed is checked once (it does not change between runs), so each measured run
    costs only two ``perf_counter`` calls and a list append beyond the runtime itself.
    ``progress(done, runs)`` is called between chunks of about a twentieth of the runs,
    never inside a timed call.
    """
    runner.activate()
    runner.check_feed(feed)
    infer, clock = runner._infer_impl, time.perf_counter
    for _ in range(warmup):
        if reset:
            runner.reset_state()
        infer(feed)
    lat = runner.latencies_s
    lat.clear()
    chunk = max(1, runs // PROGRESS_CHUNKS) if progress is not None else max(runs, 1)
    for start in range(0, runs, chunk):
        for _ in range(min(chunk, runs - start)):
            if reset:
                runner.reset_state()
            t0 = clock()
            infer(feed)
            lat.append(clock() - t0)
        if progress is not None:
            progress(len(lat), runs)
    return list(lat)


#: how many progress lines a timed loop writes at most (``--progress``), between chunks of runs
PROGRESS_CHUNKS = 20
#: the start of a progress line on stderr: ``edge-lstm:progress runs DONE TOTAL``
PROGRESS_PREFIX = "edge-lstm:progress runs "


def _print_progress(done: int, total: int) -> None:
    print(f"{PROGRESS_PREFIX}{done} {total}", file=sys.stderr, flush=True)


def _check_sample_axis(runner: Runner, feeds: dict[str, np.ndarray]) -> None:
    """A feed array that is one sample (no leading sample axis) is a clear error, not a shape mismatch."""
    for spec in runner.inputs:
        arr = feeds.get(spec.name)
        if arr is not None and arr.ndim == len(spec.shape):
            raise ValueError(f"input '{spec.name}' of the feed has shape {tuple(arr.shape)}: the .npz arrays hold "
                             f"samples along a leading axis, so one sample for this model is shape "
                             f"(1, {', '.join(str(d) for d in spec.concrete(1))})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the device-side runner."""
    ap = argparse.ArgumentParser(prog="edge-lstm-device", description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--inputs", required=True, help=".npz with one array per input, leading sample axis")
    ap.add_argument("--outputs", help="write outputs here as .npz")
    ap.add_argument("--runtime", default="auto", help=registry.help_runtimes())
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-xnnpack", action="store_true")
    ap.add_argument("--sequence", action="store_true", help="samples are consecutive streaming steps")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--runs", type=int, default=0)
    ap.add_argument("--progress", action="store_true", help=f"write '{PROGRESS_PREFIX}DONE TOTAL' lines on stderr")
    ap.add_argument("--input-shape", action="append", default=[], help="PyTorch files only: e.g. 1x96x1, per input")
    ap.add_argument("--trust-pickle", action="store_true", help="PyTorch files only: allow a pickled nn.Module")
    args = ap.parse_args(argv)
    shapes = [tuple(int(d) for d in s.lower().split("x")) for s in args.input_shape]
    torch_load = {"input_shapes": shapes or None, "trust_pickle": args.trust_pickle}
    t_start = time.perf_counter()
    try:
        runtime = resolve_runtime(args.model, args.runtime)
        with np.load(args.inputs) as z:
            feeds = {k: z[k] for k in z.files}
        import_runtime(runtime)
        rss_baseline, mem_method = memory_baseline()
        runner = make_runner(args.model, runtime, args.threads, not args.no_xnnpack, torch_load)
        runner.activate()
        _check_sample_axis(runner, feeds)
        t0 = time.perf_counter()
        first = runner.infer({k: v[0] for k, v in feeds.items()})
        first_s = time.perf_counter() - t0
        del first
        outs = run_samples(runner, feeds, args.sequence)
        sample_lat = list(runner.latencies_s[1:])
        lat = time_runs(runner, {k: v[0] for k, v in feeds.items()}, args.warmup, args.runs, not args.sequence,
                        _print_progress if args.progress else None)
    except ImportError as e:
        print(json.dumps({"error": "missing-runtime", "message": str(e)}))
        return 3
    except Exception as e:  # reported to the host, which turns it into a clear message
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return 2
    if args.outputs:
        try:
            _save_npz_atomic(args.outputs, outs)
        except Exception as e:  # a full disk, an unwritable directory: reported like a failed run
            print(json.dumps({"error": type(e).__name__, "message": str(e)}))
            return 2
    report: dict[str, Any] = {
        **runner.describe(),
        "model": os.path.basename(args.model),
        "threads": args.threads,
        "xnnpack": not args.no_xnnpack and runner.runtime in ("litert", "tflite-runtime"),  # the others have none
        "load_s": runner.load_time_s,
        "first_s": first_s,
        "latencies_s": lat,
        "sample_latencies_s": sample_lat,
        "sequence": args.sequence,
        "rss_baseline_bytes": rss_baseline,
        "rss_peak_bytes": peak_rss_bytes(),
        "memory_method": MEMORY_METHODS[mem_method],
        "arena_used_bytes": _arena_bytes(runner),
        "non_finite_outputs": int(sum(int((~np.isfinite(v)).sum()) for v in outs.values() if v.dtype.kind == "f")),
        "samples": len(next(iter(feeds.values()))),
        "inputs": [t.to_dict() for t in runner.inputs],
        "outputs": [t.to_dict() for t in runner.outputs],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "device": device_info(),
        "wall_s": time.perf_counter() - t_start,
    }
    print(json.dumps(report))
    return 0


#: written into an emulated userland by ``edge-lstm device emulate``: the device says it is emulated
EMULATED_MARKER = "/etc/edge-lstm-emulated"


def device_info() -> dict[str, Any]:
    """This device as it reports itself: architecture, OS, kernel, Python, numpy, and whether it is emulated."""
    import platform

    os_name = None
    try:
        with open("/etc/os-release") as f:
            fields = dict(ln.rstrip("\n").split("=", 1) for ln in f if "=" in ln)
        os_name = fields.get("PRETTY_NAME", "").strip('"') or None
    except OSError:
        pass
    emulated = None
    try:
        with open(EMULATED_MARKER) as f:
            emulated = json.load(f)
    except (OSError, ValueError):
        pass
    return {"machine": platform.machine(), "system": platform.system(), "kernel": platform.release(),
            "os": os_name or platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "emulated": emulated}


def _arena_bytes(runner: Runner) -> int | None:
    """TFLite Micro's arena bytes actually used, when the runner reports them."""
    fn = getattr(runner, "arena_used_bytes", None)
    return int(fn()) if callable(fn) else None


def _save_npz_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Every sample's outputs to ``path``: a temporary file, then a rename (nothing is left on failure)."""
    with atomic_file(Path(path)) as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
