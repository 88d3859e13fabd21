"""Whole-export time of the reference forecaster: every format and precision, validation included.

Trains the reference forecaster (2 x LSTM(64) + Linear, window 96, the tests'
seeded recipe), writes its held-out and calibration series as CSV, then runs
``edge-lstm export`` as a user would (a fresh process each run, so the import
time counts) with ONNX, TFLite and ONNX Runtime format at every precision each
holds, validated on the held-out series on every runtime that takes each
artifact, and prints per configuration the wall time and the CPU time (user +
system, the export and its child processes) of each run and their medians. The
CPU time is the figure to compare on a shared host: wall time waits for the other
processes.

ExecuTorch is a separate row: its time is ExecuTorch's own exporter (torch.export
and the XNNPACK partitioner decompose the LSTM per time step), not edge-lstm's.

With ``--steps``, one more export of the first configuration runs with its progress
lines on (no ``--json``) and each line's wall time, from the line before it to the
next one, is printed: importing and loading before the first line, each build, the
validation children, the report after the last.

    .venv/bin/python benchmarks/export_time.py [--runs 3] [--executorch] [--steps]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "quantize"))

from conftest import seattle_series, train_forecaster  # noqa: E402

PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8", "int16x8")
CONFIGS = {"onnx + tflite + ort, every precision": ("onnx", "tflite", "ort"),
           "executorch (fp32)": ("executorch",)}


def _csv(path: Path, values: np.ndarray) -> Path:
    path.write_text("temp\n" + "\n".join(f"{v:.2f}" for v in values) + "\n")
    return path


def _command(model: Path, out: Path, formats: tuple[str, ...], heldout: Path, calib: Path) -> list[str]:
    cmd = [sys.executable, "-c", "import sys; from edge_lstm.entry import main; sys.exit(main())", "export",
           str(model), "-o", str(out), "--force", "--data", str(heldout), "--calib", str(calib)]
    for f in formats:
        cmd += ["--format", f]
    for p in PRECISIONS:
        cmd += ["--precision", p]
    return cmd


def run_export(model: Path, out: Path, formats: tuple[str, ...], heldout: Path,
               calib: Path) -> tuple[float, float, str]:
    """One ``edge-lstm export`` in a fresh process: (wall seconds, CPU seconds of it and its children, what
    failed validation: exit 3 still ran everything)."""
    cmd = [*_command(model, out, formats, heldout, calib), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"export failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads((out / "report.json").read_text())
    failed = sorted({f"{a['file']} on {v['runtime']}" for a in report.get("artifacts", [])
                     for v in a.get("validation", []) if not v.get("passed", True)})
    return wall, cpu, "; ".join(failed) or "none"


def steps(model: Path, out: Path, formats: tuple[str, ...], heldout: Path, calib: Path) -> list[tuple[str, float]]:
    """One export with its progress lines on stderr: (step, wall seconds until the next line) for each line of
    10 ms or more, the time before the first as "start, imports, loading"."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(_command(model, out, formats, heldout, calib), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    marks = [("start, imports, loading", t0)]
    for line in proc.stderr:  # progress lines: "· step" or "[k/n] item"; other lines (native logs, the verdict)
        text = line.strip()   # count in the step before them
        if text.startswith(("·", "[")):
            marks.append((text.lstrip("· ")[:90], time.perf_counter()))
    proc.wait()
    marks.append(("", time.perf_counter()))
    rows = [(label, marks[i + 1][1] - at) for i, (label, at) in enumerate(marks[:-1])]
    rows[-1] = (f"{rows[-1][0]} (and the rest: exit)", rows[-1][1])
    return [r for r in rows if r[1] >= 0.01]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="exports per configuration (fresh process each)")
    ap.add_argument("--executorch", action="store_true", help="also time the ExecuTorch export (about a minute)")
    ap.add_argument("--steps", action="store_true", help="one more export: wall time of each progress step")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-lstm-export-time-") as tmp:
        d = Path(tmp)
        f = train_forecaster(d, window=96)
        s = seattle_series()
        split = int(0.7 * len(s))
        heldout, calib = _csv(d / "heldout.csv", s[split:]), _csv(d / "train.csv", s[:split])
        print(f"reference forecaster: {f.path.name}, 2 x LSTM(64) + Linear, window {f.calib.shape[1]}; "
              f"precisions {', '.join(PRECISIONS)} where each format holds them; validated on {heldout.name}")
        print("| configuration | runs | wall s (each) | wall s p50 | CPU s p50 | failed validation |\n"
              "|---|---|---|---|---|---|")
        for label, formats in CONFIGS.items():
            if "executorch" in formats and not args.executorch:
                continue
            got = [run_export(f.path, d / "out", formats, heldout, calib) for _ in range(args.runs)]
            walls, cpus = [w for w, _, _ in got], [c for _, c, _ in got]
            print(f"| {label} | {args.runs} | {', '.join(f'{w:.2f}' for w in walls)} | "
                  f"{float(np.median(walls)):.2f} | {float(np.median(cpus)):.2f} | {got[-1][2]} |", flush=True)
        if args.steps:
            print("\n| step (progress line) | wall s |\n|---|---|")
            for label, secs in steps(f.path, d / "out", CONFIGS[next(iter(CONFIGS))], heldout, calib):
                print(f"| {label} | {secs:.2f} |")


if __name__ == "__main__":
    main()
