"""Where the loop lowering's time goes on LiteRT: a sampled profile of the reference model's loop artifacts.

For the reference forecaster's shape (2 x LSTM(64) + Linear, window 96, seeded random weights, as
``benchmarks/tflite.py``), batch 1, one thread, XNNPACK on: the TFLite loop (fp32) and the loop lowered for
and quantized to dynamic int8 (the wavefront pair cell). Per artifact: the loop body's ops and how LiteRT runs
them (XNNPACK delegate kernels + builtin ops), p50 latency per window and its ratio to ONNX Runtime fp32
(interleaved rounds), and, where Linux ``perf`` is installed, the share of the samples taken inside
``Interpreter.invoke`` that falls in each kind of work: XNNPACK's matrix kernels (with the dynamic
quantization of their input), XNNPACK's per-operator dispatch (pthreadpool, the operator runner), its
elementwise kernels, copies (splits, concatenations, the gather of a step's projection), and TFLite's own
interpreter (the ``WHILE`` op, its condition, the builtin ops). The microseconds beside each share are the share
of the p50 measured without the profiler (an estimate: the profile and the timing are separate runs). Then
the cost of one XNNPACK elementwise operator: chains of 10 and 210 ops on 128 values, timed in interleaved
rounds; the slope is the cost an operator adds.

Usage: python benchmarks/loop_profile.py [--runs 300] [--rounds 15] [--samples 20000]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "quantize"))
from int8 import body_kernels
from timing import interleaved

from edge_lstm import archs, capture, load
from edge_lstm.lower.tflite import lower
from edge_lstm.lower.tflite.context import OP
from edge_lstm.lower.tflite.writer import ModelWriter
from edge_lstm.quantize import quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.runners.onnxrt import OnnxRuntimeRunner
from edge_lstm.spec import Precision

#: the kinds of work, by the symbol a sample fell in (first match wins)
KINDS = (
    ("matrix kernels (+ input quantization)", r"gemm|igemm|pack_lh|qp8|rminmax|f32_qd?u?8_vcvt"),
    ("XNNPACK per-operator dispatch", r"pthreadpool|xnn_run_operator|xnn_invoke_runtime|xnn_reshape|reshape_|"
                                      r"setup_|SubgraphInvoke"),
    ("XNNPACK elementwise kernels", r"xnn_f32_v|univector|elementwise_binary"),
    ("copies", r"memmove|memcpy|copy_ukernel"),
)
OTHER = "TFLite interpreter (WHILE, builtin ops), other"

_CHILD = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
d = it.get_input_details()[0]
x = np.random.default_rng(0).standard_normal(d["shape"]).astype(np.float32)
for _ in range(int(sys.argv[2])):
    it.reset_all_variables(); it.set_tensor(d["index"], x); it.invoke()
"""


def profile_shares(path: Path, invokes: int, tmp: Path) -> dict[str, float] | None:
    """Share of the samples inside ``invoke`` per kind of work (``perf record`` of a child process), or None
    without ``perf``."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    data = tmp / (path.stem + ".perf")
    rec = subprocess.run([perf, "record", "-q", "-F", "5000", "-g", "-o", str(data), "--", sys.executable, "-c",
                          _CHILD, str(path), str(invokes)], capture_output=True, text=True, check=False)
    if rec.returncode != 0:
        return None
    script = subprocess.run([perf, "script", "-i", str(data), "-F", "ip,sym"], capture_output=True, text=True,
                            check=False).stdout
    counts: Counter[str] = Counter()
    for block in script.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or not any("InterpreterWrapper::Invoke" in line for line in lines):
            continue
        top = lines[0].split(" ", 1)[-1]
        counts[next((k for k, pattern in KINDS if re.search(pattern, top)), OTHER)] += 1
    total = sum(counts.values())
    return {k: counts[k] / total for k in [*(k for k, _ in KINDS), OTHER]} if total else None


def _chain(n: int, code: int) -> bytes:
    """A model of ``n`` chained elementwise ops on [1, 128] (MUL by a constant, or a unary op)."""
    w = ModelWriter()
    x = w.add_tensor("x", (1, 128), np.float32)
    half = w.add_const("half", np.full((1, 128), 0.5, np.float32))
    cur = x
    for _ in range(n):
        out = w.add_tensor("", (1, 128), np.float32)
        w.add_op(code, [cur.index, half.index] if code == OP.MUL else [cur.index], [out.index], None, 1)
        cur = out
    return w.finish([x.index], [cur.index])


def per_op_ns(runs: int, rounds: int) -> dict[str, float]:
    """ns one XNNPACK elementwise operator on 128 values adds: the slope between chains of 10 and 210."""
    calls = {}
    x = np.ones((1, 128), np.float32)
    for name, code in (("MUL", OP.MUL), ("TANH", OP.TANH), ("LOGISTIC", OP.LOGISTIC)):
        for n in (10, 210):
            r = LiteRTRunner(_chain(n, code), threads=1)
            r.activate()
            calls[f"{name}{n}"] = lambda r=r: r.infer({"x": x})
    calls["ort"] = calls["MUL10"]  # interleaved() reports ratios to an "ort" entry
    t = interleaved(calls, runs, rounds=rounds)
    return {name: (t[name + "210"] - t[name + "10"]) / 200 * 1e9 for name in ("MUL", "TANH", "LOGISTIC")}


def main() -> None:
    """Print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--samples", type=int, default=20000, help="invokes profiled per artifact")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = archs.ArchConfig(hidden=64, layers=2)
    module = archs.build("forecaster", cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = load.load(load.save_checkpoint(tmp / "m.pt", module, "forecaster", cfg, 96))
        proto = capture.to_onnx(model)
        arts = {"loop fp32": lower(proto, "loop").data,
                "loop dynamic int8": quantize_tflite(lower(proto, "loop", precision=Precision.DYNAMIC_INT8).data,
                                                     Precision.DYNAMIC_INT8).data}
        x = np.random.default_rng(0).standard_normal((1, 96, 1)).astype(np.float32)
        ort = OnnxRuntimeRunner(proto.SerializeToString(), threads=1)
        ort.activate()
        calls = {"ort": lambda: ort.infer({"x": x})}
        for name, data in arts.items():
            r = LiteRTRunner(data, threads=1)
            r.activate()

            def window(r: LiteRTRunner = r) -> None:
                r.reset_state()
                r.infer({"x": x})

            calls[name] = window
        t = interleaved(calls, args.runs, rounds=args.rounds)
        print("| artifact | loop body | p50 per window | vs ONNX Runtime fp32 |")
        print("|---|---|---|---|")
        print(f"| ONNX Runtime fp32 | - | {t['ort'] * 1e6:,.0f} µs | 1.00x |")
        for name, data in arts.items():
            print(f"| TFLite {name} | {body_kernels(data)} | {t[name] * 1e6:,.0f} µs | {t[name + '/ort']:.2f}x |")
        shares = {}
        for name, data in arts.items():
            path = tmp / (name.replace(" ", "_") + ".tflite")
            path.write_bytes(data)
            shares[name] = profile_shares(path, args.samples, tmp)
        print()
        if any(s is None for s in shares.values()):
            print("(no profile: Linux perf is not installed or not permitted here)")
        else:
            print("| kind of work (share of the samples in invoke; µs: share x p50, an estimate) | "
                  + " | ".join(f"TFLite {n}" for n in arts) + " |")
            print("|---|" + "---|" * len(arts))
            for kind in [*(k for k, _ in KINDS), OTHER]:
                cells = [f"{shares[n][kind]:.0%} ({shares[n][kind] * t[n] * 1e6:,.0f} µs)"  # type: ignore[index]
                         for n in arts]
                print(f"| {kind} | " + " | ".join(cells) + " |")
    print()
    ns = per_op_ns(max(200, args.runs), args.rounds)
    print("| XNNPACK op on [1, 128] | cost an operator adds |")
    print("|---|---|")
    for name, v in ns.items():
        print(f"| {name} | {v:.0f} ns |")


if __name__ == "__main__":
    main()
