"""edge-lstm against the peer converters: one table over several model shapes, from one run.

Per model (seeded weights) and artifact: export time, file size over the float
parameter bytes, op count, error against PyTorch eager on the same 8 random
windows (max abs, relative L2), p50 latency per window (batch 1) and its ratio
to ONNX Runtime fp32 measured in the same interleaved rounds. Every artifact
runs in its own worker process pinned to one core (benchmarks/peers/worker.py,
timed by benchmarks/timing.py); .tflite files from every converter run on
ai-edge-litert (XNNPACK on, one thread), the .pte on ExecuTorch's runtime.

edge-lstm's artifacts are built here (main venv): ONNX fp32 / dynamic int8 for
ONNX Runtime, TFLite fused and loop at fp32 / fp16 / dynamic int8 / full int8 /
int16x8 (the loop's only: the fused 16x8 LSTM is TFLite Micro's, LiteRT has no
kernel for it), each lowered and quantized as the export pipeline does (full int8 and
16x8 calibrated on 64 random windows; the loop's full int8 runs the residual
int8 cell, its dynamic int8 a stacked pair as one wavefront cell);
their export time is the ONNX capture plus the lowering and quantization. The
peers convert in their own venvs (benchmarks/peers/export.py, under ``nice``
and ``--peer-timeout``): litert-torch and ExecuTorch (XNNPACK) from the PyTorch
module, onnx2tf from edge-lstm's ONNX. A failed or timed-out conversion gets
its one-line error in the table. ``make bench-peers`` makes the venvs.

    .venv/bin/python benchmarks/peers.py --onnx2tf-python .venv-onnx2tf/bin/python \\
        --litert-torch-python .venv-litert-torch/bin/python --executorch-python .venv-executorch/bin/python \\
        [--models ref,lstm256,gru] [--peers litert-torch,onnx2tf,executorch] [--rounds 5] [--runs 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from timing import ROUNDS, interleaved  # noqa: E402

#: key -> (label, arch config keywords, window)
MODELS: dict[str, tuple[str, dict[str, Any], int]] = {
    "ref": ("2 x LSTM(64) + Linear, T=96", {"hidden": 64, "layers": 2}, 96),
    "lstm256": ("2 x LSTM(256) + Linear, T=256", {"hidden": 256, "layers": 2}, 256),
    "gru": ("2 x GRU(64) + Linear, T=96", {"cell": "gru", "hidden": 64, "layers": 2}, 96),
}
PEERS = ("litert-torch", "onnx2tf", "executorch")
#: peer -> (artifact label, runtime kind of its output)
PEER_ROWS = {"litert-torch": ("litert-torch 0.10", "litert"),
             "onnx2tf": ("onnx2tf 2.6.9 (from edge-lstm's ONNX)", "litert"),
             "executorch": ("ExecuTorch 1.5 XNNPACK", "executorch")}
WINDOWS = 8  # error windows
ERROR_CHARS = 150


@dataclass
class Row:
    """One artifact of one model: what was built, then what was measured."""

    model: str
    artifact: str
    kind: str  # worker kind: ort, litert, torch, executorch
    path: Path | None = None
    export_s: float | None = None
    size: int | None = None
    ops: int | None = None
    error: str | None = None
    outputs: np.ndarray | None = None
    p50_s: float | None = None
    ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (a table cell; '|' would split it)."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def errors(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs, relative L2) of ``out`` against ``ref``."""
    d = np.asarray(out, np.float64) - np.asarray(ref, np.float64)
    return float(np.abs(d).max()), float(np.linalg.norm(d) / max(np.linalg.norm(ref), 1e-30))


HEADER = ("model", "artifact", "export", "file / float params", "ops", "max abs err", "rel L2 err", "p50",
          "vs ORT fp32")


def cells(row: Row, param_bytes: int, ref: np.ndarray | None) -> tuple[str, ...]:
    """The table cells of one row; a failed row gets its error instead of figures."""
    if row.error is not None:
        return (row.model, row.artifact, f"failed: {one_line(row.error)}", *("-" for _ in HEADER[3:]))
    export = "-" if row.export_s is None else (f"{row.export_s * 1000:.0f} ms" if row.export_s < 10
                                              else f"{row.export_s:.0f} s")
    size = "-" if row.size is None else f"{row.size / 1024:,.0f} KB ({row.size / param_bytes:.2f}x)"
    ops = "-" if row.ops is None else f"{row.ops:,}"
    abs_err = rel_err = "-"
    if row.outputs is not None and ref is not None:
        a, r = errors(row.outputs, ref)
        abs_err, rel_err = f"{a:.1e}", f"{r:.1e}"
    p50 = "-" if row.p50_s is None else f"{row.p50_s * 1e6:,.0f} µs"
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
    return (row.model, row.artifact, export, size, ops, abs_err, rel_err, p50, ratio)


def table(lines: list[tuple[str, ...]]) -> str:
    """A Markdown table with :data:`HEADER`."""
    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


# ------------------------------------------------------------------ edge-lstm's artifacts (main venv)


def edge_rows(label: str, model_dir: Path, calib: np.ndarray) -> list[Row]:
    """Build edge-lstm's artifacts from the checkpoint in ``model_dir``; each timed from the checkpoint."""
    from edge_lstm import capture, load
    from edge_lstm.lower.tflite import lower
    from edge_lstm.produce import lowered_for
    from edge_lstm.quantize import quantize_onnx, quantize_tflite
    from edge_lstm.spec import Precision

    t0 = time.perf_counter()
    proto = capture.to_onnx(load.load(model_dir / "model.pt"))
    onnx_s = time.perf_counter() - t0
    (model_dir / "model.onnx").write_bytes(proto.SerializeToString())
    builds: dict[str, tuple[str, Callable[[], bytes]]] = {
        "ONNX fp32": ("ort", proto.SerializeToString),
        "ONNX dynamic int8": ("ort", lambda: quantize_onnx(proto, Precision.DYNAMIC_INT8).data),
    }
    for lowering in ("fused", "loop"):
        def build(prec: Precision, lowering: str = lowering) -> bytes:
            # lowered for its precision as the export pipeline lowers it (edge_lstm.produce.lowered_for: the
            # loop's dynamic int8 may run a stacked pair as one wavefront cell)
            data = lower(proto, lowering, precision=lowered_for(prec)).data
            if prec is Precision.FP32:
                return data
            if prec in (Precision.INT8, Precision.INT16X8):  # the export's cells (residual int8 in a loop)
                kw = {"int16_cell": True} if prec is Precision.INT8 else {}
                return quantize_tflite(data, prec, calib, **kw).data
            return quantize_tflite(data, prec).data

        for prec, what in ((Precision.FP32, "fp32"), (Precision.FP16, "fp16"),
                           (Precision.DYNAMIC_INT8, "dynamic int8"), (Precision.INT8, "full int8"),
                           (Precision.INT16X8, "int16x8")):
            if lowering == "fused" and prec is Precision.INT16X8:
                continue  # TFLite Micro's artifact: LiteRT's fused LSTM kernel has no 16x8 path
            builds[f"TFLite {lowering} {what}"] = ("litert", lambda p=prec, b=build: b(p))
    rows = []
    for i, (name, (kind, build)) in enumerate(builds.items()):
        row = Row(label, f"edge-lstm {name}", kind)
        try:
            t0 = time.perf_counter()
            data = build()
            row.export_s = onnx_s + time.perf_counter() - t0
        except Exception as e:  # an artifact edge-lstm cannot build for this model is a table row too
            row.error = f"{type(e).__name__}: {e}"
        else:
            row.path = model_dir / f"edge{i}.{'onnx' if kind == 'ort' else 'tflite'}"
            row.path.write_bytes(data)
        rows.append(row)
    return rows


# ------------------------------------------------------------------ peers (their own venvs)


def _kill(proc: subprocess.Popen[str]) -> None:
    """End ``proc`` and everything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def peer_row(label: str, peer: str, python: str, model_dir: Path, timeout: float) -> Row:
    """Convert with ``peer`` in its venv under nice and a timeout; its error (one line) when it fails."""
    artifact, kind = PEER_ROWS[peer]
    row = Row(label, artifact, kind)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = ["nice", "-n", "10", python, str(HERE / "peers" / "export.py"), peer, str(model_dir),
           str(model_dir / peer)]
    log = model_dir / f"{peer}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            row.error = f"timed out after {timeout:g} s"
            return row
    last = (stdout.strip().splitlines() or [""])[-1]
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        tail = log.read_text(errors="replace").strip().splitlines()
        row.error = f"exit {proc.returncode}: {tail[-1] if tail else 'no output'}"
        return row
    if "error" in result:
        row.error = result["error"]
        return row
    row.path, row.export_s = Path(result["path"]), float(result["export_s"])
    if "ops" in result:
        row.ops = int(result["ops"])
    return row


def tflite_ops(path: Path) -> int:
    """Operators over every subgraph of a .tflite file."""
    from edge_lstm import tflite_read

    model = tflite_read.read(path.read_bytes())
    return sum(len(g.operators) for g in model.subgraphs)


# ------------------------------------------------------------------ measuring (one worker process per artifact)


class Worker:
    """A worker process holding one loaded artifact, pinned to ``core``."""

    def __init__(self, python: str, kind: str, artifact: Path, inputs: Path, core: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        cmd = [python, str(HERE / "peers" / "worker.py"), kind, str(artifact), str(inputs), "--core", str(core)]
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env, start_new_session=True)
        self.outputs = np.array(self._reply()["outputs"], np.float64)

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.stderr.seek(0)
            tail = [ln for ln in self.stderr.read().splitlines() if ln.strip()]
            raise RuntimeError(f"runtime failed (exit {self.proc.returncode}): {tail[-1] if tail else 'no output'}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def p50(self, runs: int, warmup: int) -> float:
        """One round's p50 seconds, timed inside the worker."""
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(f"{runs} {warmup}\n")
        stdin.flush()
        return float(self._reply()["p50"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill(self.proc)  # type: ignore[arg-type]
        self.stderr.close()


def measure(rows: list[Row], inputs: Path, pythons: dict[str, str], core: int, runs: int, rounds: int) -> None:
    """Fill outputs, p50 and ratio of every built row (a runtime that fails to load gets the row's error)."""
    workers: dict[str, Worker] = {}
    keyed: dict[str, Row] = {}
    try:
        for i, row in enumerate(rows):
            if row.error is not None or row.path is None:
                continue
            try:
                w = Worker(pythons.get(row.kind, sys.executable), row.kind, row.path, inputs, core)
            except (RuntimeError, json.JSONDecodeError) as e:
                row.error = str(e)
                continue
            row.outputs = w.outputs
            key = "ort" if row.artifact == "edge-lstm ONNX fp32" else str(i)
            workers[key], keyed[key] = w, row
        if "ort" not in workers:
            raise RuntimeError("ONNX Runtime fp32 did not run: no reference for the ratios")
        t = interleaved(workers, runs, measure=lambda w, n, warm: w.p50(n, warm), rounds=rounds)
        for key, row in keyed.items():
            row.p50_s, row.ratio = t[key], t[f"{key}/ort"]
    finally:
        for w in workers.values():
            w.close()


# ------------------------------------------------------------------ one model


def bench_model(key: str, peers: list[str], pythons: dict[str, str], args: argparse.Namespace,
                tmp: Path) -> list[tuple[str, ...]]:
    """Table lines for one model."""
    import torch

    from edge_lstm import archs, load

    label, kw, window = MODELS[key]
    model_dir = tmp / key
    model_dir.mkdir()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = archs.ArchConfig(**kw)
    module = archs.build("forecaster", cfg).eval()
    load.save_checkpoint(model_dir / "model.pt", module, "forecaster", cfg, window)
    torch.save(module.state_dict(), model_dir / "state.pt")
    meta = {"arch": "forecaster", "config": kw, "window": window}
    (model_dir / "model.json").write_text(json.dumps(meta))
    param_bytes = 4 * sum(int(p.numel()) for p in module.parameters())
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((WINDOWS, window, cfg.n_features)).astype(np.float32)
    calib = rng.standard_normal((64, window, cfg.n_features)).astype(np.float32)
    np.save(model_dir / "inputs.npy", xs)
    with torch.no_grad():
        ref = np.concatenate([module(torch.from_numpy(x[None])).numpy().ravel() for x in xs]).reshape(WINDOWS, -1)

    rows = [Row(label, "PyTorch eager", "torch", path=model_dir / "model.json")]
    rows += edge_rows(label, model_dir, calib)
    for peer in peers:
        print(f"[{key}] converting with {peer} ...", file=sys.stderr, flush=True)
        rows.append(peer_row(label, peer, pythons[peer], model_dir, args.peer_timeout))
    for row in rows:
        if row.path is not None and row.kind != "torch" and row.error is None:
            row.size = row.path.stat().st_size
            if row.ops is None:
                if row.path.suffix == ".tflite":
                    row.ops = tflite_ops(row.path)
                elif row.path.suffix == ".onnx":
                    import onnx

                    from edge_lstm.inspect_artifact import op_counts

                    row.ops = sum(op_counts(onnx.load(str(row.path))).values())
    runs = args.runs if window * cfg.hidden <= 96 * 64 else max(20, args.runs // 5)
    print(f"[{key}] timing {sum(r.error is None for r in rows)} artifacts ...", file=sys.stderr, flush=True)
    measure(rows, model_dir / "inputs.npy", {"executorch": pythons.get("executorch", sys.executable)}, args.core,
            runs, args.rounds)
    return [cells(row, param_bytes, ref) for row in rows]


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)} (or none)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved timing rounds")
    ap.add_argument("--runs", type=int, default=200,
                    help="timed calls per artifact over all rounds (÷5 for big models)")
    ap.add_argument("--peer-timeout", type=float, default=900.0, help="seconds per peer conversion")
    ap.add_argument("--core", type=int, default=max(os.sched_getaffinity(0)), help="the core every runtime runs on")
    for peer in PEERS:
        ap.add_argument(f"--{peer}-python", default=f".venv-{peer}/bin/python", help=f"the python of {peer}'s venv")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    peers = [p for p in args.peers.split(",") if p and p != "none"]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(peers) - set(PEERS))
    if unknown:
        ap.error(f"unknown model or peer: {', '.join(unknown)}")
    pythons = {p: getattr(args, f"{p.replace('-', '_')}_python") for p in PEERS}
    lines: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in models:
            lines += bench_model(key, peers, pythons, args, Path(tmp))
    print(table(lines))


if __name__ == "__main__":
    main()
