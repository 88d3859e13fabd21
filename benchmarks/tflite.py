"""TFLite export benchmark: export time, file size, p50 latency vs ONNX Runtime, from one run.

For the reference forecaster (2 x LSTM(64), window 96) and a larger one
(2 x LSTM(256), window 256), batch 1, one thread: PyTorch eager, ONNX Runtime
(fp32 and dynamic int8), fused and loop TFLite (ai-edge-litert, XNNPACK on) in
fp32 and dynamic int8 (the loop both as lowered for fp32 and as lowered for
dynamic int8, where a small stacked pair runs as one wavefront cell), and the
fused streaming model per new sample. Ratios are to ONNX Runtime fp32 in the
same interleaved rounds; dynamic int8 is timed, not validated, here (its error
is the export's validation and benchmarks/int8.py's).

Usage: python benchmarks/tflite.py [--runs N] [--rounds N] [--model '2xLSTM(64), T=96']
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved, p50  # benchmarks/int8.py imports interleaved from here

from edge_lstm import archs, capture, load
from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_onnx, quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.runners.onnxrt import OnnxRuntimeRunner
from edge_lstm.spec import Precision

MODELS = {"2xLSTM(64), T=96": (archs.ArchConfig(hidden=64, layers=2), 96),
          "2xLSTM(256), T=256": (archs.ArchConfig(hidden=256, layers=2), 256)}


def _ratio(t: dict[str, float], name: str) -> str:
    return f"{t[name + '/ort']:.2f}x"


#: the TFLite artifacts timed per model: name -> (lowering, the precision it is lowered for, dynamic int8 or not)
ARTIFACTS = {"fused": ("fused", Precision.FP32, False), "loop": ("loop", Precision.FP32, False),
             "fused dynamic int8": ("fused", Precision.FP32, True),
             "loop dynamic int8 (lowered for fp32)": ("loop", Precision.FP32, True),
             "loop dynamic int8": ("loop", Precision.DYNAMIC_INT8, True)}


def bench(label: str, cfg: archs.ArchConfig, window: int, runs: int, tmp: Path,
          rounds: int) -> list[tuple[str, ...]]:
    """Rows for one model."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = archs.build("forecaster", cfg).eval()
    model = load.load(load.save_checkpoint(tmp / "m.pt", module, "forecaster", cfg, window))
    param_bytes = 4 * sum(int(p.numel()) for p in module.parameters())
    x = np.random.default_rng(0).standard_normal(model.inputs.inputs[0].concrete(1)).astype(np.float32)
    proto = capture.to_onnx(model)
    rows: list[tuple[str, ...]] = []
    xt = torch.from_numpy(x)
    ort = OnnxRuntimeRunner(proto.SerializeToString(), threads=1)
    ort.activate()
    ort8 = OnnxRuntimeRunner(quantize_onnx(proto, Precision.DYNAMIC_INT8).data, threads=1)
    ort8.activate()
    calls: dict[str, Callable[[], object]] = {"ort": lambda: ort.infer({"x": x}),
                                              "ort8": lambda: ort8.infer({"x": x})}
    exports: dict[str, tuple[float, int]] = {}
    same: dict[str, str] = {}  # an artifact whose bytes equal an earlier one's: timed once, under that name
    files: dict[bytes, str] = {}
    for name, (lowering, precision, hybrid) in ARTIFACTS.items():
        t0 = time.perf_counter()
        data = lower(proto, lowering, precision=precision).data
        if hybrid:
            data = quantize_tflite(data, Precision.DYNAMIC_INT8).data
        exports[name] = (time.perf_counter() - t0, len(data))
        if data in files:
            same[name] = files[data]
            continue
        files[data] = name
        r = LiteRTRunner(data, threads=1)
        r.activate()

        def window_call(r: LiteRTRunner = r) -> None:
            r.reset_state()
            r.infer({"x": x})

        calls[name] = window_call

    def torch_call() -> None:
        with torch.no_grad():
            module(xt)

    calls["torch"] = torch_call
    t = interleaved(calls, runs, rounds=rounds)
    t_ort = t["ort"]
    onnx_bytes = len(proto.SerializeToString())
    rows.append((label, "PyTorch eager", "-", "-", _us(t["torch"]), _ratio(t, "torch")))
    rows.append((label, "ONNX Runtime", "-", f"{onnx_bytes / param_bytes:.2f}x", _us(t_ort), "1.00x"))
    rows.append((label, "ONNX Runtime dynamic int8", "-", "-", _us(t["ort8"]), _ratio(t, "ort8")))
    for name in ARTIFACTS:
        export_s, nbytes = exports[name]
        size = f"{nbytes / param_bytes:.3f}x"
        timed = same.get(name, name)
        note = f" (the same file as {timed})" if timed != name else ""
        rows.append((label, f"TFLite {name}", f"{export_s * 1000:.0f} ms", size, _us(t[timed]),
                     _ratio(t, timed) + note))
    fused_t = t["fused"]
    step_model = capture.streaming_model(model, proto)
    t0 = time.perf_counter()
    lowered = lower(step_model.proto, "fused", streaming=True)
    export_s = time.perf_counter() - t0
    xs = np.ascontiguousarray(x[:, :1])
    with LiteRTRunner(lowered.data, threads=1) as r:
        t = p50(lambda: r.infer({"x": xs}), runs * 5)
    ratio = f"{t / t_ort:.3f}x (1/{fused_t / t:.0f} of the fused window)"
    size = f"{len(lowered.data) / param_bytes:.3f}x"
    rows.append((label, "TFLite fused streaming, per sample", f"{export_s * 1000:.0f} ms", size, _us(t), ratio))
    return rows


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (more on a busy host)")
    ap.add_argument("--model", choices=list(MODELS), action="append", help="only these models (default: all)")
    args = ap.parse_args()
    header = ("model", "artifact", "export", "file / float params", "p50 latency", "vs ONNX Runtime")
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (cfg, window) in MODELS.items():
            if args.model and label not in args.model:
                continue
            runs = args.runs if cfg.hidden <= 64 else max(20, args.runs // 5)
            rows += bench(label, cfg, window, runs, Path(tmp), args.rounds)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
