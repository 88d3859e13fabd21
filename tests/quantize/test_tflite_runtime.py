"""Quantized TFLite artifacts on tflite-runtime 2.14 (numpy<2, no torch), through the device-side runner.

The interpreter comes from ``EDGE_LSTM_TFLRT_PYTHON`` (``make test`` creates
``.venv-tflrt`` and sets it; CI always does). Without it the tests skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.spec import Precision

REPO = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("EDGE_LSTM_TFLRT_PYTHON")

pytestmark = pytest.mark.skipif(
    not PYTHON, reason="EDGE_LSTM_TFLRT_PYTHON is not set (make test creates .venv-tflrt with tflite-runtime 2.14)"
)


def _on_tflite_runtime(model: bytes, x: np.ndarray, tmp: Path) -> np.ndarray:
    assert PYTHON
    (tmp / "m.tflite").write_bytes(model)
    np.savez(tmp / "feed.npz", x=x[:, None])  # (N, 1, T, F): one batch-1 window per sample
    cmd = [PYTHON, "-m", "edge_lstm.device", str(tmp / "m.tflite"), "--inputs", str(tmp / "feed.npz"),
           "--outputs", str(tmp / "out.npz"), "--runtime", "tflite-runtime"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["runtime"] == "tflite-runtime"
    with np.load(tmp / "out.npz") as z:
        return z["y"].reshape(len(x), -1)


def _on_litert(model: bytes, x: np.ndarray) -> np.ndarray:
    outs = []
    with LiteRTRunner(model) as r:
        for w in x:
            r.reset_state()
            outs.append(r.infer({"x": w[None]})["y"])
    return np.concatenate(outs).reshape(len(x), -1)


@pytest.mark.parametrize(("precision", "io"), [
    (Precision.FP16, "float"), (Precision.DYNAMIC_INT8, "float"), (Precision.INT8, "float"), (Precision.INT8, "int8"),
])
def test_quantized_artifacts_run_on_tflite_runtime(precision: Precision, io: str, forecaster: Any,
                                                   tmp_path: Path) -> None:
    float_tflite = lower(forecaster.proto, "fused").data
    calib = forecaster.calib if precision is Precision.INT8 else None
    art = quantize_tflite(float_tflite, precision, calib, io)
    x = forecaster.test_x[:: max(1, len(forecaster.test_x) // 40)][:40]
    got = _on_tflite_runtime(art.data, x, tmp_path)
    ref = _on_litert(art.data, x)
    step = max((q["scale"] for q in art.io_quant.values()), default=0.0)
    np.testing.assert_allclose(got, ref, atol=max(1e-4, 1.01 * step))  # same artifact, two runtimes
    torch_pred = forecaster.torch_pred[:: max(1, len(forecaster.test_x) // 40)][:40].reshape(len(x), -1)
    cos = float(np.sum(got * torch_pred) / (np.linalg.norm(got) * np.linalg.norm(torch_pred)))
    assert cos > 0.99


def test_int16x8_loop_runs_on_tflite_runtime_and_fused_is_refused(forecaster: Any, tmp_path: Path) -> None:
    """16x8: the loop lowering's int16 ops run on tflite-runtime 2.14 like on LiteRT; its fused LSTM kernel has no
    16x8 path (only TFLite Micro's has), and it says so."""
    x = forecaster.test_x[:: max(1, len(forecaster.test_x) // 40)][:40]
    loop = quantize_tflite(lower(forecaster.proto, "loop").data, Precision.INT16X8, forecaster.calib)
    got = _on_tflite_runtime(loop.data, x, tmp_path)
    # same artifact, two runtimes: 2.14's int16 kernels round a few output steps (~7e-5 each) differently
    np.testing.assert_allclose(got, _on_litert(loop.data, x), atol=1e-3)
    torch_pred = forecaster.torch_pred[:: max(1, len(forecaster.test_x) // 40)][:40].reshape(len(x), -1)
    assert float(np.abs(got - torch_pred).max()) <= 0.01
    fused = quantize_tflite(lower(forecaster.proto, "fused").data, Precision.INT16X8, forecaster.calib)
    assert PYTHON
    (tmp_path / "f.tflite").write_bytes(fused.data)
    proc = subprocess.run([PYTHON, "-m", "edge_lstm.device", str(tmp_path / "f.tflite"), "--inputs",
                           str(tmp_path / "feed.npz"), "--outputs", str(tmp_path / "f.npz"), "--runtime",
                           "tflite-runtime"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, check=False)
    assert proc.returncode != 0
    assert "INT64 != FLOAT32" in proc.stdout + proc.stderr
