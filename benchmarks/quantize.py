"""Precision table for a demo-like forecaster on Seattle temperatures (2010, hourly).

Trains 2 x LSTM(64), window 96, next hour (seeded, a few hundred steps), exports
ONNX and TFLite (fused), quantizes at every supported precision, and prints, per
format x precision: file size, ratio to the float file, max abs error against
PyTorch, forecast MAE on held-out windows and its relative drop, p50 latency
(batch 1, one thread). int8 is also run on TFLite Micro's host interpreter.

    PYTHONPATH=. .venv/bin/python benchmarks/quantize.py [--steps 400] [--windows 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "quantize"))

from conftest import train_forecaster

from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_onnx, quantize_tflite
from edge_lstm.runners.quant_io import from_model, to_model
from edge_lstm.spec import Precision


def run_onnx(data: bytes, xs: np.ndarray) -> tuple[np.ndarray, float]:
    """Predictions and p50 latency (µs) with ONNX Runtime, one thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out, times = [], []
    for x in xs:
        t0 = time.perf_counter()
        out.append(sess.run(None, {name: x[None]})[0][0])
        times.append(time.perf_counter() - t0)
    return np.array(out), 1e6 * float(np.median(times))


def run_litert(data: bytes, xs: np.ndarray) -> tuple[np.ndarray, float]:
    """Predictions and p50 latency (µs) with LiteRT, one thread, state reset per window."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    out, times = [], []
    for x in xs:
        interp.reset_all_variables()
        interp.set_tensor(i["index"], to_model(x[None], np.dtype(i["dtype"]).name, i["quantization"]))
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
        out.append(from_model(interp.get_tensor(o["index"]), o["quantization"])[0])
    return np.array(out), 1e6 * float(np.median(times))


def run_tflm(data: bytes, xs: np.ndarray) -> tuple[np.ndarray, float]:
    """Predictions and p50 latency (µs) on TFLite Micro's host interpreter."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(data)
    i, o = interp.get_input_details(0), interp.get_output_details(0)
    qi, qo = _tflm_params(i), _tflm_params(o)
    out, times = [], []
    for x in xs:
        interp.reset()
        interp.set_input(to_model(x[None], np.dtype(i["dtype"]).name, qi), 0)
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
        out.append(from_model(interp.get_output(0), qo)[0])
    return np.array(out), 1e6 * float(np.median(times))


def _tflm_params(detail: dict) -> tuple[float, int]:
    q = detail.get("quantization_parameters") or {}
    if "scales" in q and len(q["scales"]):
        return float(q["scales"][0]), int(q["zero_points"][0])
    return 0.0, 0


def main() -> int:
    """Train, quantize, measure, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--windows", type=int, default=500, help="held-out windows to score")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        fc = train_forecaster(Path(tmp), window=96, hidden=64, layers=2, steps=args.steps)
        print(f"trained in {time.time() - t0:.0f} s")
    step = max(1, len(fc.test_x) // args.windows)
    xs, ys, ref = fc.test_x[::step], fc.test_y[::step], fc.torch_pred[::step]
    float_mae = float(np.mean(np.abs(ref - ys)))
    onnx_float = fc.proto.SerializeToString()
    tfl_float = lower(fc.proto, "fused").data
    rows = []
    for p in (Precision.FP32, Precision.FP16, Precision.DYNAMIC_INT8):
        art = quantize_onnx(fc.proto, p)
        rows.append(("onnx", p.value, art.data, len(onnx_float), *run_onnx(art.data, xs)))
    for p, io in ((Precision.FP32, "float"), (Precision.FP16, "float"), (Precision.DYNAMIC_INT8, "float"),
                  (Precision.INT8, "float"), (Precision.INT8, "int8")):
        art = quantize_tflite(tfl_float, p, calib=fc.calib if p is Precision.INT8 else None, io=io)
        label = p.value + (" io=int8" if io == "int8" else "")
        rows.append(("tflite", label, art.data, len(tfl_float), *run_litert(art.data, xs)))
        if p in (Precision.FP32, Precision.INT8):
            rows.append(("tflite@tflm", label, art.data, len(tfl_float), *run_tflm(art.data, xs)))
    print(f"float PyTorch forecast MAE (normalised units, {len(xs)} held-out windows): {float_mae:.5f}")
    print(f"| {'format':12} | {'precision':18} | {'size':>8} | ratio | max abs err | {'MAE':>7} | drop   | p50 µs |")
    print(f"|{'-' * 14}|{'-' * 20}|{'-' * 10}|-------|-------------|{'-' * 9}|--------|--------|")
    for fmt, label, data, base, pred, lat in rows:
        err = float(np.abs(pred - ref).max())
        m = float(np.mean(np.abs(pred - ys)))
        print(f"| {fmt:12} | {label:18} | {len(data):8d} | {len(data) / base:5.3f} | {err:11.2e} | "
              f"{m:7.5f} | {100 * (m / float_mae - 1):+5.1f}% | {lat:6.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
