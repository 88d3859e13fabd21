"""16x8 (int16 activations, int8 weights) beside full int8 on the task metric, on the runtimes that run each.

Trains forecasters of the next hourly Seattle temperature (2010, seeded, the
tests' recipe): the reference (2 x LSTM(64), window 96), the quantization tests'
(2 x LSTM(64), window 24) and the ``stacked`` kind of ``tests/models.py``
(2 x LSTM(16), window 12). Each is calibrated as the export pipeline does (200
training windows, each also shifted by ±0.3) and quantized to full int8 and to
16x8 on both lowerings: the fused artifacts run on TFLite Micro's host
interpreter (LiteRT has no 16x8 fused LSTM kernel), the loop ones on LiteRT
(TFLite Micro has no int16 GATHER). Printed per artifact: the largest error and
the relative L2 error against PyTorch float, and the forecast MAE (normalised
units) on held-out windows with its relative change against PyTorch's.

    .venv/bin/python benchmarks/int16x8.py [--windows 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "quantize"))

from conftest import mae, train_forecaster

from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.runners.tflm import TFLMRunner
from edge_lstm.spec import Precision

MARGIN = np.float32(0.3)  # the default recipe's calibration_margin
MODELS = {"reference: 2 x LSTM(64), window 96": (96, 64), "tests' forecaster: 2 x LSTM(64), window 24": (24, 64),
          "tests/models.py 'stacked': 2 x LSTM(16), window 12": (12, 16)}


def predict(runner: LiteRTRunner | TFLMRunner, xs: np.ndarray) -> np.ndarray:
    """One forecast per window (state reset before each)."""
    out = []
    with runner as r:
        for x in xs:
            r.reset_state()
            out.append(np.asarray(r.infer({"x": x[None]})["y"], np.float64).ravel()[0])
    return np.array(out)[:, None]


def rows(name: str, window: int, hidden: int, windows: int, tmp: Path) -> list[tuple[str, ...]]:
    """The int8 and 16x8 rows of one model."""
    f = train_forecaster(tmp, window=window, hidden=hidden)
    calib = f.calib[np.unique(np.linspace(0, len(f.calib) - 1, 200).round().astype(int))]
    calib = np.concatenate([calib, calib - MARGIN, calib + MARGIN])
    pick = np.unique(np.linspace(0, len(f.test_x) - 1, windows).round().astype(int))
    xs, ys, ref = f.test_x[pick], f.test_y[pick], f.torch_pred[pick].astype(np.float64)
    base = mae(ref, ys)
    out = []
    for lowering, runtime in (("fused", "tflm"), ("loop", "litert")):
        float_tflite = lower(f.proto, lowering, precision=Precision.INT8).data
        for prec in (Precision.INT8, Precision.INT16X8):
            data = quantize_tflite(float_tflite, prec, calib, count=len(calib),
                                   **({"int16_cell": True} if prec is Precision.INT8 else {})).data
            run = TFLMRunner(data) if runtime == "tflm" else LiteRTRunner(data, threads=1)
            got = predict(run, xs)
            err = mae(got, ys)
            rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            out.append((name, f"{lowering} {prec.value}", runtime, f"{np.abs(got - ref).max():.2g}", f"{rel:.3g}",
                        f"{err:.4f} ({(err - base) / base:+.2%})"))
    return out


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=512, help="held-out windows for the forecast MAE")
    args = ap.parse_args()
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (window, hidden) in MODELS.items():
            table += rows(name, window, hidden, args.windows, Path(tmp))
    header = ("model", "artifact", "runtime", "max err vs PyTorch", "rel L2", "forecast MAE (vs PyTorch)")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in table:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
