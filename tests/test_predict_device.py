"""The device side installed the way a device installs it: ``pip install edge-lstm`` beside numpy and one runtime.

Two real environments built from the package registries:

* Python 3.9 (the oldest the device side supports) with tflite-runtime 2.14 and ``numpy<2``, what Raspberry Pi
  images ship;
* Python 3.13 (the newest) with ONNX Runtime alone.

In each, the demo-like bundle is verified and predicted through the ``edge-lstm`` console script (from a file
and from a pipe) and through ``Predictor``; the forecasts equal PyTorch's whole-window forecasts within each
artifact's tolerance; torch, onnx and ai-edge-litert are neither installed nor imported. Slow (building the
environments takes a minute or two): CI runs it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from device_envs import make_env, pyenv_python
from predict_helpers import DemoBundle, assert_matches, read_forecasts

pytestmark = pytest.mark.slow

FORBIDDEN = ("torch", "onnx", "ai_edge_litert", "tflite_micro", "onnxscript")


@pytest.fixture(scope="module")
def py39_tflrt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_env(pyenv_python("9"), tmp_path_factory.mktemp("py39") / "venv", ["numpy<2", "tflite-runtime==2.14.0"])


@pytest.fixture(scope="module")
def py313_ort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_env(pyenv_python("13"), tmp_path_factory.mktemp("py313") / "venv", ["onnxruntime"])


def edge_lstm(py: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``edge-lstm`` console script, then a check of what its process imported."""
    code = ("import sys, json\nfrom edge_lstm.entry import main\nrc = main(sys.argv[1:])\n"
            f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
            "print('IMPORTED ' + json.dumps(bad), file=sys.stderr)\nraise SystemExit(rc)\n")
    return subprocess.run([str(py), "-c", code, *args], capture_output=True, text=True, input=stdin, timeout=600,
                          check=False, cwd="/")


def _ok(p: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "IMPORTED []" in p.stderr, p.stderr[-800:]
    return p


def _forecasts(text: str) -> np.ndarray:
    header, rows = read_forecasts("", text)
    assert header == ["line", "date", "temp_t+1"]
    return np.array([float(r[2]) for r in rows])


def test_python39_with_tflite_runtime(py39_tflrt: Path, demo_bundle: DemoBundle, tmp_path: Path) -> None:
    code = "import sys, numpy; print(sys.version_info[:2], numpy.__version__)"
    version = subprocess.run([str(py39_tflrt), "-c", code], capture_output=True, text=True, check=True).stdout
    assert version.startswith("(3, 9)") and " 1." in version
    script = py39_tflrt.parent / "edge-lstm"  # the console script pip installed
    p = subprocess.run([str(script), "bundle", "verify", str(demo_bundle.bundle)], capture_output=True, text=True,
                       check=False)
    assert p.returncode == 0 and "every sha256 matches" in p.stdout, p.stderr
    for artifact in ("demo.stream.fp32.tflite", "demo.stream.int8.tflite"):
        out = tmp_path / f"{artifact}.csv"
        p = _ok(edge_lstm(py39_tflrt, "predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--streaming",
                          "--artifact", artifact, "-o", str(out)))
        assert "on tflite-runtime 2.14.0" in p.stderr
        assert_matches(demo_bundle, artifact, _forecasts(out.read_text()))
    piped = _ok(edge_lstm(py39_tflrt, "predict", str(demo_bundle.bundle), "-", "--streaming", "--runtime",
                          "tflite-runtime", stdin=demo_bundle.heldout.read_text()))
    assert_matches(demo_bundle, "demo.stream.fp32.tflite", _forecasts(piped.stdout))
    window = _ok(edge_lstm(py39_tflrt, "predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--json"))
    res = json.loads(window.stdout)
    assert res["runtime"] == "tflite-runtime" and not res["streaming"]
    assert_matches(demo_bundle, res["artifact"], np.array([r["forecast"][0] for r in res["rows"]]))
    api = ("import sys, csv\nfrom edge_lstm.predict import Predictor\n"
           "p = Predictor.from_bundle(sys.argv[1], streaming=True)\n"
           "rows = [[float(r['temp']), float(r['change'])] for r in csv.DictReader(open(sys.argv[2]))]\n"
           "out = [p.update(r) for r in rows]\nassert 'torch' not in sys.modules\n"
           "print(p.runtime, *[float(o[0]) for o in out if o is not None])\n")
    p = subprocess.run([str(py39_tflrt), "-c", api, str(demo_bundle.bundle), str(demo_bundle.heldout)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    words = p.stdout.split()
    assert words[0] == "tflite-runtime"
    assert_matches(demo_bundle, "demo.stream.fp32.tflite", np.array([float(w) for w in words[1:]]))
    host_only = edge_lstm(py39_tflrt, "profile", str(demo_bundle.bundle))
    assert host_only.returncode == 2 and "needs Python 3.10 or newer" in host_only.stderr


def test_python313_with_onnxruntime_only(py313_ort: Path, demo_bundle: DemoBundle, tmp_path: Path) -> None:
    version = subprocess.run([str(py313_ort), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout
    assert version.strip() == "(3, 13)"
    out = tmp_path / "f.csv"
    p = _ok(edge_lstm(py313_ort, "predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--streaming",
                      "-o", str(out)))
    assert "demo.stream.fp32.onnx (streaming, fp32) on onnxruntime" in p.stderr  # the only runtime there
    assert_matches(demo_bundle, "demo.stream.fp32.onnx", _forecasts(out.read_text()))
    piped = _ok(edge_lstm(py313_ort, "predict", str(demo_bundle.bundle), "-", "--streaming",
                          stdin=demo_bundle.heldout.read_text()))
    assert_matches(demo_bundle, "demo.stream.fp32.onnx", _forecasts(piped.stdout))
    window = _ok(edge_lstm(py313_ort, "predict", str(demo_bundle.bundle), str(demo_bundle.heldout)))
    assert_matches(demo_bundle, "demo.fp32.onnx", _forecasts(window.stdout))
    p = edge_lstm(py313_ort, "predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--streaming",
                  "--artifact", "demo.stream.fp32.tflite")
    assert p.returncode == 2 and "installed: onnxruntime" in p.stderr and "pip install ai-edge-litert" in p.stderr
