"""Profiler overhead and repeatability on the reference forecaster (LSTM 1->64 x2 + Linear, window 96).

1. Overhead per measured run. The loop the profiler runs on the device
   (``edge_lstm.device.time_runs``: ``Runner.infer`` with its feed check, two perf_counter
   calls and a list append per run) drives a runner whose ``_infer_impl`` returns at once,
   with the streaming step model's real input specs. Its wall time per run (block of N runs,
   minimum of 7 blocks: noise only adds) is the profiler's whole per-run cost; the recorded
   p50 of that null runner is the part that lands inside each measured latency. Both are
   compared with the reference forecaster's streaming-step p50, measured in the same run.
2. Repeatability: ``edge_lstm.profile.profile`` (a fresh process each time) K times on the same
   artifact; spread = (max p50 - min p50) / median p50.

Run: ``.venv/bin/python benchmarks/profile_overhead.py [--repeats 5] [--runs 2000]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_lstm import archs, capture
from edge_lstm.device import make_runner, time_runs
from edge_lstm.load import LoadedModel, _arch_input_spec, probe_outputs
from edge_lstm.profile import ProfileOptions, profile
from edge_lstm.runners.base import Runner
from edge_lstm.spec import TensorSpec


def reference_model() -> LoadedModel:
    """The reference forecaster with seeded weights."""
    import torch

    torch.manual_seed(0)
    cfg = archs.ArchConfig(n_features=1, hidden=64, layers=2)
    module = archs.build("forecaster", cfg)
    module.eval()
    model = LoadedModel(module, "checkpoint", "reference", _arch_input_spec(cfg, 96), (), arch="forecaster",
                        config=cfg)
    model.outputs = probe_outputs(model)
    return model


def write_artifacts(d: Path) -> dict[str, Path]:
    """Window and streaming-step artifacts: ONNX always, TFLite when the lowering is present."""
    model = reference_model()
    proto = capture.to_onnx(model)
    out = {"onnx window": d / "ref.onnx", "onnx step": d / "ref_step.onnx"}
    out["onnx window"].write_bytes(proto.SerializeToString())
    step_proto = capture.streaming_model(model, proto).proto  # the one-step graph derived from the capture
    out["onnx step"].write_bytes(step_proto.SerializeToString())
    try:
        from edge_lstm.lower.tflite import lower
    except ImportError:
        return out
    out["tflite window"] = d / "ref.tflite"
    out["tflite window"].write_bytes(lower(proto, lowering="fused").data)
    out["tflite step"] = d / "ref_step.tflite"
    out["tflite step"].write_bytes(lower(step_proto, lowering="fused", streaming=True).data)
    return out


class NullRunner(Runner):
    """A runner whose inference does nothing: what remains is the profiler's own cost."""

    runtime = "null"

    def __init__(self, inputs: list[TensorSpec]) -> None:
        super().__init__()
        self._specs = inputs

    def _load(self) -> None:
        self.inputs = list(self._specs)

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}


def overhead(step: Path, runs: int, blocks: int = 7) -> tuple[float, float, float]:
    """(profiler wall s/run, recorded s/run inside measurements, real step p50) for the step model."""
    real = make_runner(step, "auto", threads=1)
    real.activate()
    feed = {s.name: np.random.default_rng(0).standard_normal(s.concrete(1)).astype(s.dtype) for s in real.inputs}
    null = NullRunner(real.inputs)
    null.activate()
    walls, recorded, p50s = [], [], []
    for _ in range(blocks):
        t0 = time.perf_counter()
        lat = time_runs(null, feed, warmup=0, runs=runs, reset=False)
        walls.append((time.perf_counter() - t0) / runs)
        recorded.append(float(np.percentile(lat, 50)))
        p50s.append(float(np.percentile(time_runs(real, feed, warmup=10, runs=runs, reset=False), 50)))
    return min(walls), min(recorded), statistics.median(p50s)


def spread(path: Path, repeats: int, runs: int, streaming: bool) -> tuple[list[float], float]:
    """p50 of ``repeats`` fresh-process profiles, and (max - min) / median."""
    opts = ProfileOptions(runs=runs, warmup=50, streaming=streaming)
    p50s = [profile([path], opts)["artifacts"][0]["latency_s"]["p50"] for _ in range(repeats)]
    return p50s, (max(p50s) - min(p50s)) / statistics.median(p50s)


def main() -> None:
    """Print the overhead and spread tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        arts = write_artifacts(Path(tmp))
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
        print(f"## Profiler overhead per measured run (min of 7 blocks of {args.runs} runs)\n")
        print("| streaming step model | step p50 µs | profiler wall µs/run | share | inside each measurement µs "
              "| share |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name in [n for n in arts if "step" in n]:
            wall, inside, p50 = overhead(arts[name], args.runs)
            print(f"| {name} | {p50 * 1e6:.2f} | {wall * 1e6:.2f} | {wall / p50:.1%} | {inside * 1e6:.3f} "
                  f"| {inside / p50:.2%} |")
        print(f"\nload average: {os.getloadavg()[0]:.2f}")
        print(f"\n## Repeatability: p50 of {args.repeats} fresh-process profiles ({args.runs} runs each)\n")
        print("| artifact | p50 per profile (µs) | spread (max-min)/median |")
        print("| --- | --- | ---: |")
        for name, path in arts.items():
            p50s, sp = spread(path, args.repeats, args.runs if "step" in name else args.runs // 4, "step" in name)
            print(f"| {name} | {', '.join(f'{p * 1e6:.1f}' for p in p50s)} | {sp:.1%} |")


if __name__ == "__main__":
    main()
