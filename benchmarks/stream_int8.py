"""Why the demo's streaming full-int8 artifact missed its gate, and what each fix does: per-step divergence.

Needs ``make demo`` first (it reads ``examples/out``: the trained forecaster, the
training rows used for calibration and the held-out rows). Builds the one-step
int8 model four ways and drives each held-out window through it step by step,
beside the float one-step model (ONNX Runtime), printing the relative L2 error of
the forecast at chosen steps and the task-MAE change over float:

* explicit state, all int8: the state as int8 inputs and outputs, the cell in
  plain int8 ops (what ``--lowering fused --streaming`` silently built before);
* explicit state, int16 cell: the same graph with ``int16_cell=True`` (``edge_lstm.quantize.cell16``);
* fused, first steps only: the state in the fused op's variable tensors, calibrated
  on the first 800 steps (the first 32 windows), as before;
* fused, every window: calibrated on every window's steps, the forecast over its
  last-step range (what the export does now).

    .venv/bin/python benchmarks/stream_int8.py [--out examples/out]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_lstm import feeds, pipeline, produce, sources
from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_tflite
from edge_lstm.recipes import load_recipe
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.runners.onnxrt import OnnxRuntimeRunner
from edge_lstm.spec import Precision

STEPS = (1, 2, 3, 5, 9, 13, 17, 21, 25)


def variants(step: object, cal: object, count: int) -> dict[str, bytes]:
    """The four one-step int8 models."""
    explicit = lower(step.proto, "loop", streaming=True, precision=Precision.INT8)  # type: ignore[attr-defined]
    ecal = produce.step_calibration(step, cal, explicit, count)  # type: ignore[arg-type]
    before = replace(ecal, output_ranges={})  # as it was built before: no output range either
    all_int8 = quantize_tflite(explicit.data, Precision.INT8, before, count=before.count).data
    fused = lower(step.proto, "fused", streaming=True, precision=Precision.INT8)  # type: ignore[attr-defined]
    fcal = produce.step_calibration(step, cal, fused, count)  # type: ignore[arg-type]
    first = replace(fcal, samples={k: v[:4 * count] for k, v in fcal.samples.items()}, output_ranges={})
    return {
        "explicit state, all int8": all_int8,
        "explicit state, int16 cell": quantize_tflite(explicit.data, Precision.INT8, ecal, count=ecal.count,
                                                      int16_cell=True).data,
        "fused, first 800 steps": quantize_tflite(fused.data, Precision.INT8, first, count=first.count).data,
        "fused, every window": quantize_tflite(fused.data, Precision.INT8, fcal, count=fcal.count).data,
    }


def per_step(data: bytes, step: object, windows: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Relative L2 of the forecast at each step over all windows, and the last-step forecasts."""
    s = step
    ort = OnnxRuntimeRunner(s.proto.SerializeToString())  # type: ignore[attr-defined]
    lite = LiteRTRunner(data)
    steps = windows[0][s.x].shape[s.time_axis]  # type: ignore[attr-defined]
    err, ref, last = np.zeros(steps), np.zeros(steps), []
    with ort, lite:
        takes = set(lite.input_names)
        for feed in windows:
            fs = {st.input: st.zeros(1) for st in s.states}  # type: ignore[attr-defined]
            qs = dict(fs)
            lite.reset_state()
            for t in range(steps):
                x = np.take(feed[s.x], [t], axis=s.time_axis)  # type: ignore[attr-defined]
                r = ort.infer({s.x: x, **fs})  # type: ignore[attr-defined]
                g = lite.infer({s.x: x, **{k: v for k, v in qs.items() if k in takes}})  # type: ignore[attr-defined]
                err[t] += float(np.sum((np.asarray(g["y"]) - r["y"]) ** 2))
                ref[t] += float(np.sum(np.asarray(r["y"]) ** 2))
                fs = {st.input: r[st.output] for st in s.states}  # type: ignore[attr-defined]
                qs = {st.input: g[st.output] for st in s.states if st.output in g}  # type: ignore[attr-defined]
            last.append(np.asarray(g["y"], np.float32))
    return np.sqrt(err / ref), np.stack(last)


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples" / "out")
    args = ap.parse_args()
    model = sources.open_model(args.out / "forecaster.pt")
    recipe = load_recipe("demo")
    _, step = pipeline.prepare(model, True)
    vdata = feeds.validation_feeds(model, recipe, args.out / "heldout.csv")
    reference = pipeline.reference_outputs(model, vdata)
    cal = feeds.calibration_set(model, recipe, str(args.out / "train.csv"))
    rows = []
    for name, data in variants(step, cal, recipe.calibration_samples).items():
        rel, last = per_step(data, step, vdata.samples)
        task = feeds.judge(name, "litert", model, recipe, Precision.INT8, vdata, reference, {"y": last}).task
        rows.append((name, [rel[k - 1] for k in STEPS if k <= len(rel)], task.drop if task else float("nan")))
    steps = [k for k in STEPS if k <= vdata.steps]
    print(f"relative L2 of the forecast at step t over {len(vdata.samples)} held-out windows, int8 one-step model "
          "vs the float one (LiteRT vs ONNX Runtime), and the task MAE change over float")
    print("| one-step int8 model | " + " | ".join(f"t={k}" for k in steps) + " | task MAE |")
    print("|---|" + "---|" * (len(steps) + 1))
    for name, rel, drop in rows:
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in rel) + f" | {drop:+.2%} |")


if __name__ == "__main__":
    main()
