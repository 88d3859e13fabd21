"""Every lowering on tflite-runtime 2.14 (numpy<2, no torch), through the device-side runner in a subprocess.

The interpreter comes from ``EDGE_LSTM_TFLRT_PYTHON`` (``make test`` creates
``.venv-tflrt`` and sets it; CI always does). Without it the tests skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lower"))

from tflite_models import assert_close, case, streaming_case

from edge_lstm.lower.tflite import lower

REPO = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("EDGE_LSTM_TFLRT_PYTHON")

pytestmark = pytest.mark.skipif(
    not PYTHON, reason="EDGE_LSTM_TFLRT_PYTHON is not set (make test creates .venv-tflrt with tflite-runtime 2.14)"
)


def _device(model: bytes, feeds: dict[str, np.ndarray], tmp: Path, *extra: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Run ``python -m edge_lstm.device`` under the tflite-runtime interpreter; return its report and outputs."""
    assert PYTHON
    (tmp / "m.tflite").write_bytes(model)
    np.savez(tmp / "feed.npz", **feeds)
    cmd = [PYTHON, "-m", "edge_lstm.device", str(tmp / "m.tflite"), "--inputs", str(tmp / "feed.npz"),
           "--outputs", str(tmp / "out.npz"), "--runtime", "tflite-runtime", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(tmp / "out.npz") as z:
        return report, {k: z[k] for k in z.files}


def test_the_environment_has_no_torch_and_the_runner_imports_only_numpy_and_the_runtime() -> None:
    assert PYTHON
    code = (
        "import sys, importlib.util\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
        "import numpy; assert numpy.__version__.startswith('1.'), numpy.__version__\n"
        "import edge_lstm.device, edge_lstm.runners.litert\n"
        "bad = [m for m in ('torch', 'onnx', 'ai_edge_litert', 'typer') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("name", "lowering"),
    [("stacked", "fused"), ("stacked", "loop"), ("bidirectional", "fused"), ("gru", "loop"),
     ("state_io", "loop"), ("layernorm_gelu", "fused"), ("proj_size", "loop"),
     ("all_steps", "loop"), ("bidirectional", "loop"), ("gru_bidirectional", "loop"), ("stacked", "unrolled"),
     ("gru", "unrolled")],
)
def test_windows_match_pytorch(name: str, lowering: str, tmp_path: Path) -> None:
    c = case(name)
    samples = [c.feeds(seed) for seed in (0, 1, 2)]
    feeds = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
    report, outs = _device(lower(c.proto, lowering).data, feeds, tmp_path)
    assert report["runtime"] == "tflite-runtime" and report["version"].startswith("tflite-runtime 2.14")
    for i, s in enumerate(samples):  # the runner resets variable state before each window
        assert_close({k: v[i] for k, v in outs.items()}, c.reference(s))


def test_fused_streaming_steps_in_sequence(tmp_path: Path) -> None:
    whole, step = case("all_steps"), streaming_case("all_steps")
    x = whole.feeds()["x"]
    steps = np.stack([x[:, t : t + 1] for t in range(x.shape[1])])
    _, outs = _device(lower(step.proto, "fused", streaming=True).data, {"x": steps}, tmp_path, "--sequence")
    ref = whole.reference({"x": x})["y"]
    np.testing.assert_allclose(np.concatenate(list(outs["y"]), axis=1), ref, atol=1e-5, rtol=1e-5)
