"""Firmware figures for a demo-like forecaster: flash and RAM of both paths, and host C latency against ONNX Runtime.

Trains 2 x LSTM(64), window 96, one feature, on the Seattle temperatures (seeded, bounded by steps), lowers it to
fused TFLite (float and full int8, calibrated on the training windows), then runs the firmware build for a target
(default nrf52840, a Cortex-M4F, emulated by qemu's mps2-an386) and prints:

- flash and RAM of the generated C at fp32 and int8-weights, measured from the built ELF and a stack paint on the
  emulated core, with emulated instructions per window (qemu -icount; not device time);
- flash and RAM of the TFLite Micro path: the model array and the arena measured on TFLite Micro's host
  interpreter (the TFLite Micro runtime's own code is not measurable here);
- host latency of one window: the generated C built with the system compiler (-O2, and -O3 -march=native) beside
  ONNX Runtime (one thread), in interleaved rounds; each ratio is the median of the per-round ratios.

    PYTHONPATH=. .venv/bin/python benchmarks/firmware.py [--steps 300] [--runs 200] [--target nrf52840]
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "quantize"))

from conftest import train_forecaster

from edge_lstm.firmware import FirmwareOptions, write_firmware
from edge_lstm.firmware.cgen import generate
from edge_lstm.firmware.graph import build_program
from edge_lstm.firmware.hostc import compile_shared
from edge_lstm.firmware.source import FirmwareSource, TfliteInput
from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_tflite
from edge_lstm.spec import Precision
from edge_lstm.targets import load_target

BUILDS = (("fp32", ("-std=c99", "-O2")), ("fp32", ("-std=c99", "-O3", "-march=native")),
          ("int8-weights", ("-std=c99", "-O3", "-march=native")))


def sizes_table(fw: dict, target: str) -> list[str]:
    """Flash and RAM of every path, with what each figure is."""
    rows = [f"Flash and RAM on {target} ({fw['cortex_m']['why']})", "",
            "| path | precision | flash (B) | RAM (B) | emulated instructions per window | basis |",
            "| --- | --- | ---: | ---: | ---: | --- |"]
    for e in fw["c"]:
        m, ins = e["cortex_m"]["model"], e["cortex_m"]["emulated_instructions"]
        rows.append(f"| generated C | {e['precision']} | {m['flash_bytes']:,} | {m['ram_bytes']:,} (data + bss "
                    f"{m['ram_static_bytes']:,}, stack {m['stack_bytes']:,}) | {ins['per_window']:,} | measured on an "
                    f"emulated core |")
    for t in fw["tflm"]:
        a = t["arena"]
        rows.append(f"| TFLite Micro | {t['precision']} | {t['bytes']:,} (model array) | {a['recommended_bytes']:,} "
                    f"(arena: {a['measured_bytes']:,} measured + {a['margin']:.0%}) | – | host interpreter; runtime "
                    "code not measurable here |")
    rows.append("")
    for e in fw["c"]:
        errs = [max(o["max_abs"] for o in v["outputs"]) for v in [*e["host"]["validation"],
                                                                   *e["cortex_m"]["validation"]]]
        rows.append(f"C {e['precision']}: max abs error against the reference, host window / stream "
                    f"{errs[0]:.1e} / {errs[1]:.1e}, emulated core {errs[2]:.1e} / {errs[3]:.1e} "
                    f"({fw['validation_data']['source']})")
    by = {e["precision"]: e["cortex_m"]["model"]["flash_bytes"] for e in fw["c"]}
    rows += [f"int8-weights flash / fp32 flash: {by['int8-weights'] / by['fp32']:.3f} (goal <= 0.30)",
             f"Emulated instructions: {fw['c'][0]['cortex_m']['emulated_instructions']['label']}."]
    return rows


def latency_table(proto: object, runs: int, rounds: int = 5) -> list[str]:
    """p50 per window of ONNX Runtime and the host-compiled C, interleaved; ratios per round, then the median."""
    import onnxruntime as ort

    prog = build_program(proto)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])  # type: ignore
    x = np.random.default_rng(0).standard_normal(prog.input_shape).astype(np.float32)
    y = np.zeros(prog.window_output_size, np.float32)
    ptr = ctypes.POINTER(ctypes.c_float)
    xp, yp = x.ctypes.data_as(ptr), y.ctypes.data_as(ptr)
    tmp = tempfile.TemporaryDirectory(prefix="edge-lstm-bench-")
    calls = {"ONNX Runtime fp32 (1 thread)": lambda: sess.run(None, {prog.input_name: x})}
    for i, (prec, flags) in enumerate(BUILDS):
        code = generate(prog, prec)
        work = Path(tmp.name) / str(i)
        work.mkdir()
        lib = ctypes.CDLL(str(compile_shared(code.files, work, flags)))
        calls[f"C {prec}, cc {' '.join(flags[1:])}"] = lambda lib=lib: lib.model_window(xp, yp)
    samples: dict[str, list[list[float]]] = {k: [] for k in calls}
    for fn in calls.values():
        for _ in range(20):
            fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            samples[name].append(times)
    base = "ONNX Runtime fp32 (1 thread)"
    rows = [f"Host latency of one window ({prog.window} steps), batch 1, {rounds} interleaved rounds x {runs} runs",
            "", "| runtime | p50 µs | vs ONNX Runtime |", "| --- | ---: | ---: |"]
    for name, per_round in samples.items():
        p50 = float(np.median(np.concatenate(per_round)))
        ratio = float(np.median([np.median(r) / np.median(b) for r, b in zip(per_round, samples[base], strict=True)]))
        rows.append(f"| {name} | {p50 * 1e6:,.1f} | {ratio:.2f}x |")
    tmp.cleanup()
    return [*rows, "", "Goal: the C window at <= 1.5x ONNX Runtime."]


def main() -> int:
    """Train, build the firmware, print both tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps")
    ap.add_argument("--runs", type=int, default=200, help="timed runs per round")
    ap.add_argument("--target", default="nrf52840")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-lstm-fw-bench-") as tmp:
        print(f"training 2 x LSTM(64), window 96, on Seattle temperatures ({args.steps} steps)", flush=True)
        f = train_forecaster(Path(tmp), window=96, steps=args.steps)
        float_tfl = lower(f.proto, "fused").data
        int8_tfl = quantize_tflite(float_tfl, Precision.INT8, calib=f.calib[::20]).data
        src = FirmwareSource("forecaster", "benchmark", f.proto.SerializeToString(), "forecaster.fp32.onnx",
                             [TfliteInput("forecaster.fp32.tflite", float_tfl, "fp32", False),
                              TfliteInput("forecaster.int8.tflite", int8_tfl, "int8", False)])
        print("building and measuring the firmware", flush=True)
        fw = write_firmware(src, Path(tmp) / "fw", FirmwareOptions(), load_target(args.target),
                            lambda m: print(f"  {m}", flush=True)).report
        print(f"\nhost: {platform.platform()}, {platform.processor() or platform.machine()}; the host is shared with "
              "other jobs, so only ratios from the same run compare\n")
        print("\n".join(sizes_table(fw, args.target)))
        print()
        print("\n".join(latency_table(f.proto, args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
