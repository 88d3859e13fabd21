"""Full int8 on LiteRT: the loop's LSTM cells (residual int8, int16, all-int8) against the fused int8 LSTM, one run.

Trains the reference forecaster (2 x LSTM(64) + Linear, window 96, next hour) on
the 2010 Seattle hourly temperatures (seeded, the tests' recipe), exports ONNX
and TFLite at float32, dynamic int8 and full int8 (both lowerings; the loop's
full int8 with each LSTM cell edge-lstm can write: the residual int8 cell of
``quantize/cell8.py``, what the export pipeline writes now; the int16 cell of
``quantize/cell16.py``, what it wrote before; TFLite's quantizer's all-int8
cell; the first two also with int8 edges, the input projection and the head int8 rather than
``quantize/edges16.py``'s 16x8, as before), and prints per artifact: file size, the loop body's op count and how many
kernels LiteRT runs it as (XNNPACK delegate kernels + builtin ops), p50 latency
per window (batch 1, one thread, XNNPACK on, 5 interleaved rounds) and its ratio
to ONNX Runtime fp32 measured in the same rounds, and the forecast MAE
(normalised units) on held-out windows with its relative change against PyTorch
float, and the relative L2 distance of the forecasts from PyTorch's (what quantization changes; the
MAE's change on a few hundred windows moves with their luck as much as with that distance); full int8 is
calibrated as the export pipeline does (200 training windows, each also shifted by ±0.3). A line below the
table gives each full-int8 loop against the best float TFLite artifact (the ratio of their ratios to ONNX
Runtime, same rounds). Then the one-step (streaming) models, per new sample,
against ONNX Runtime's one-step model. The host may be shared: compare ratios,
not absolute times.

    .venv/bin/python benchmarks/int8.py [--runs 100] [--windows 256]  (--windows 2532: every held-out window)
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "quantize"))

from conftest import mae, train_forecaster
from tflite import interleaved

from edge_lstm import capture
from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_onnx, quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner, node_details
from edge_lstm.runners.onnxrt import OnnxRuntimeRunner
from edge_lstm.spec import Precision
from edge_lstm.tflite_schema import model_op_name, pack, unpack

#: each calibration window is also fed shifted by this (normalised units), as the default recipe's
#: calibration_margin makes the export pipeline do
MARGIN = np.float32(0.3)


def artifacts(f: object, calib: np.ndarray) -> dict[str, tuple[str, bytes]]:
    """name -> (format, bytes) of every artifact measured."""
    proto = f.proto  # type: ignore[attr-defined]
    out = {"ONNX Runtime fp32": ("onnx", proto.SerializeToString()),
           "ONNX Runtime dynamic int8": ("onnx", quantize_onnx(proto, Precision.DYNAMIC_INT8).data)}
    for lowering in ("loop", "fused"):
        fp32 = lower(proto, lowering)
        out[f"TFLite {lowering} fp32"] = ("tflite", fp32.data)
        out[f"TFLite {lowering} dynamic int8"] = ("tflite", quantize_tflite(fp32.data, Precision.DYNAMIC_INT8).data)
        int8 = lower(proto, lowering, precision=Precision.INT8)
        out[f"TFLite {lowering} full int8"] = ("tflite", quantize_tflite(int8.data, Precision.INT8, calib,
                                                                          int16_cell=True).data)
        if lowering == "loop":  # the cells the loop had before: int16 (cell16), and the quantizer's all-int8 one
            out["TFLite loop full int8, int8 edges"] = ("tflite", quantize_tflite(
                int8.data, Precision.INT8, calib, int16_cell=True, wide_edges=False).data)
            out["TFLite loop full int8, int16 cell, int8 edges"] = ("tflite", quantize_tflite(
                int8.data, Precision.INT8, calib, int16_cell=True, residual=False, wide_edges=False).data)
            out["TFLite loop full int8, int16 cell"] = ("tflite", quantize_tflite(
                int8.data, Precision.INT8, calib, int16_cell=True, residual=False).data)
            out["TFLite loop full int8, all-int8 cell"] = ("tflite", quantize_tflite(
                int8.data, Precision.INT8, calib).data)
    return out


def body_kernels(data: bytes) -> str:
    """The loop body's op count and how LiteRT runs it: XNNPACK delegate kernels + builtin ops (the body loaded as
    a model of its own, whose partitions the interpreter lists)."""
    from ai_edge_litert.interpreter import Interpreter

    model = unpack(data)
    bodies = [op.builtinOptions.bodySubgraphIndex for g in model.subgraphs for op in g.operators
              if model_op_name(model, op) == "WHILE"]
    if not bodies:
        return "-"
    body = copy.deepcopy(model)
    body.subgraphs = [body.subgraphs[bodies[0]]]
    interp = Interpreter(model_content=pack(body), num_threads=1)
    interp.allocate_tensors()
    ops = node_details(interp)
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    n = len(body.subgraphs[0].operators)
    # each delegate node replaces the ops inside it: what is left runs on builtin kernels
    inside = _inside(body.subgraphs[0], delegates)
    return f"{n} ops: {len(delegates)} XNNPACK + {n - inside} builtin"


def _inside(graph: object, delegates: list[dict]) -> int:
    """How many ops of ``graph`` the delegate nodes cover (walking back from their outputs to their inputs)."""
    ops = graph.operators  # type: ignore[attr-defined]
    producer = {int(t): k for k, op in enumerate(ops) for t in op.outputs}
    covered: set[int] = set()
    for d in delegates:
        ins = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        while todo:
            t = todo.pop()
            k = producer.get(t)
            if t in ins or k is None or k in covered:
                continue
            covered.add(k)
            todo += [int(x) for x in ops[k].inputs if x >= 0]
    return len(covered)


def runner(fmt: str, data: bytes) -> OnnxRuntimeRunner | LiteRTRunner:
    """An active one-thread runner."""
    r: OnnxRuntimeRunner | LiteRTRunner = OnnxRuntimeRunner(data, threads=1) if fmt == "onnx" else \
        LiteRTRunner(data, threads=1)
    r.activate()
    return r


def predict(r: OnnxRuntimeRunner | LiteRTRunner, xs: np.ndarray) -> np.ndarray:
    """One forecast per window (state reset before each)."""
    out = []
    for x in xs:
        r.reset_state()
        out.append(np.asarray(next(iter(r.infer({"x": x[None]}).values())), np.float64).ravel()[0])
    return np.array(out)[:, None]


def window_rows(f: object, runs: int, windows: int) -> tuple[list[tuple[str, ...]], list[str]]:
    """Rows for the whole-window artifacts."""
    calib = f.calib[np.unique(np.linspace(0, len(f.calib) - 1, 200).round().astype(int))]  # type: ignore[attr-defined]
    calib = np.concatenate([calib, calib - MARGIN, calib + MARGIN])  # as the export pipeline calibrates
    pick = np.unique(np.linspace(0, len(f.test_x) - 1, windows).round().astype(int))  # type: ignore[attr-defined]
    xs, ys = f.test_x[pick], f.test_y[pick]  # type: ignore[attr-defined]
    torch_pred = f.torch_pred[pick]  # type: ignore[attr-defined]
    ref = mae(torch_pred, ys)
    arts = artifacts(f, calib)
    runners = {name: runner(fmt, data) for name, (fmt, data) in arts.items()}
    x = np.ascontiguousarray(xs[:1])

    def call(r: OnnxRuntimeRunner | LiteRTRunner) -> Callable[[], object]:
        return lambda: (r.reset_state(), r.infer({"x": x}))

    calls = {"ort": call(runners["ONNX Runtime fp32"])}
    calls.update({name: call(r) for name, r in runners.items() if name != "ONNX Runtime fp32"})
    t = interleaved(calls, runs)
    fp32_size = len(arts["ONNX Runtime fp32"][1])
    rows = []
    for name, (fmt, data) in arts.items():
        key = "ort" if name == "ONNX Runtime fp32" else name
        pred = predict(runners[name], xs)
        err = mae(pred, ys)
        rel = float(np.linalg.norm(pred - torch_pred) / np.linalg.norm(torch_pred))
        rows.append((name, f"{len(data) / 1024:.0f} KB ({len(data) / fp32_size:.2f}x)",
                     body_kernels(data) if fmt == "tflite" else "-", f"{t[key] * 1e6:,.0f} µs",
                     f"{t[key + '/ort']:.2f}x", f"{err:.4f} ({(err - ref) / ref:+.1%})", f"{rel:.4f}"))
    floats = {k: t[k + "/ort"] for k in arts if k.startswith("TFLite") and k.endswith("fp32")}
    best = min(floats, key=floats.__getitem__)
    summary = [f"{k}: {t[k + '/ort'] / floats[best]:.2f}x {best}" for k in arts
               if k.startswith("TFLite loop full int8")]
    return rows, summary


def stream_rows(f: object, runs: int) -> list[tuple[str, ...]]:
    """Rows for the one-step models: per new sample, against ONNX Runtime's one-step model."""
    step = capture.streaming_model(f.loaded, f.proto)  # type: ignore[attr-defined]
    calib = f.calib[:64].reshape(-1, 1, 1, 1)  # type: ignore[attr-defined]  # (speed only) steps, in order
    xs = np.zeros((1, 1, 1), np.float32)
    state = {s.input: s.zeros(1) for s in step.states}
    fused = lower(step.proto, "fused", streaming=True)
    fused8 = quantize_tflite(lower(step.proto, "fused", streaming=True, precision=Precision.INT8).data,
                             Precision.INT8, calib, count=len(calib)).data
    ort = OnnxRuntimeRunner(step.proto.SerializeToString(), threads=1)
    ort.activate()
    arts = {"TFLite fused fp32, one step": fused.data, "TFLite fused full int8, one step": fused8}
    lite = {name: LiteRTRunner(data, threads=1) for name, data in arts.items()}
    for r in lite.values():
        r.activate()
    calls: dict[str, Callable[[], object]] = {"ort": lambda: ort.infer({step.x: xs, **state})}
    calls.update({name: (lambda r=r: r.infer({"x": xs})) for name, r in lite.items()})
    t = interleaved(calls, runs * 5)
    rows = [("ONNX Runtime fp32, one step", "-", "-", f"{t['ort'] * 1e6:,.1f} µs", "1.00x", "-", "-")]
    rows += [(name, f"{len(arts[name]) / 1024:.0f} KB", "-", f"{t[name] * 1e6:,.1f} µs", f"{t[name + '/ort']:.2f}x",
              "-", "-") for name in arts]
    return rows


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--windows", type=int, default=256, help="held-out windows for the forecast MAE")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        f = train_forecaster(Path(tmp), window=96)
        rows, summary = window_rows(f, args.runs, args.windows)
        rows += stream_rows(f, args.runs)
    header = ("artifact (2 x LSTM(64), window 96)", "file", "loop body", "p50 latency", "vs ONNX Runtime fp32",
              "forecast MAE (vs PyTorch)", "rel. L2 vs PyTorch")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("Full int8 loop against the best float TFLite artifact (ratio of the two ratios to ONNX Runtime fp32):")
    for line in summary:
        print(f"- {line}")


if __name__ == "__main__":
    main()
