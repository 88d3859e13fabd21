"""A device-only install: the package itself installed next to numpy, typer/rich and one runtime, nothing else.

Two real environments, built from the package registries the way a Raspberry Pi user builds them:

* Python 3.11 with tflite-runtime 2.14 and numpy<2 (what Raspberry Pi images ship);
* Python 3.10 with onnxruntime (devices still run 3.10).

And the device runner's zipapp (what ``profile --remote`` copies to a device) alone, in environments that hold
nothing but numpy and the runtimes: Python 3.9 (the oldest the device side supports) and 3.10.

In each, ``edge-lstm profile``, ``info`` on an artifact and the device runner work, ``targets`` too on
3.11, and none of torch, onnx or ai-edge-litert is installed or imported. Slow (building the environments
takes a minute): CI runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from device_envs import make_env, pyenv_python
from tflite_models import case

from edge_lstm.lower.tflite import lower

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "onnx", "ai_edge_litert", "tflite_micro")


def _env(base: str, tmp: Path, packages: list[str]) -> Path:
    subprocess.run([base, "-m", "venv", str(tmp)], check=True, capture_output=True)
    py = tmp / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), *packages,
                           str(REPO)], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return py


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("art")
    c = case("stacked")
    (d / "m.fp32.tflite").write_bytes(lower(c.proto, "fused").data)
    (d / "m.fp32.onnx").write_bytes(c.proto.SerializeToString())
    np.savez(d / "feed.npz", x=np.zeros((2, 1, 12, 3), np.float32))
    return {p.name: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def tflrt_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _env(sys.executable if sys.version_info[:2] == (3, 11) else "python3",
                tmp_path_factory.mktemp("tflrt") / "venv", ["numpy<2", "tflite-runtime==2.14.0"])


@pytest.fixture(scope="module")
def py310_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _env(pyenv_python("10"), tmp_path_factory.mktemp("py310") / "venv", ["numpy", "onnxruntime"])


def _cli(py: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge-lstm ARGS`` in the environment, checking afterwards what the process had imported."""
    code = ("import sys, json\nfrom edge_lstm.cli import main\nrc = main(sys.argv[1:])\n"
            f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
            "print('IMPORTED ' + json.dumps(bad), file=sys.stderr)\nraise SystemExit(rc)\n")
    return subprocess.run([str(py), "-c", code, *args], capture_output=True, text=True, timeout=300, check=False,
                          cwd="/")


def _no_forbidden(py: Path, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'IMPORTED []' in proc.stderr, proc.stderr[-500:]
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                            check=True).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert not names & {"torch", "onnx", "ai-edge-litert", "tflite-micro", "onnxscript"}, names


def test_tflite_runtime_device(tflrt_env: Path, artifacts: dict[str, Path]) -> None:
    tfl = str(artifacts["m.fp32.tflite"])
    prof = _cli(tflrt_env, "profile", tfl, "--runtime", "tflite-runtime", "--runs", "5", "--json")
    _no_forbidden(tflrt_env, prof)
    entry = json.loads(prof.stdout)["artifacts"][0]
    assert entry["runtime"] == "tflite-runtime" and entry["runtime_version"].startswith("tflite-runtime 2.14")
    assert entry["cost"]["macs"] > 0 and entry["size"]["weights_bytes"] > 0  # read without the schema module
    assert entry["outputs_check"]["non_finite"] == 0
    _no_forbidden(tflrt_env, _cli(tflrt_env, "targets", "list"))
    shown = _cli(tflrt_env, "targets", "show", "rpi4b", "--json")
    _no_forbidden(tflrt_env, shown)
    assert json.loads(shown.stdout)["name"] == "rpi4b"
    info = _cli(tflrt_env, "info", tfl, "--json")
    _no_forbidden(tflrt_env, info)
    assert json.loads(info.stdout)["ops"]["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 2
    out = artifacts["feed.npz"].with_name("out-tflrt.npz")
    dev = subprocess.run([str(tflrt_env), "-m", "edge_lstm.device", tfl, "--inputs", str(artifacts["feed.npz"]),
                          "--outputs", str(out), "--runtime", "tflite-runtime"], capture_output=True, text=True,
                         check=False, cwd="/")
    assert dev.returncode == 0 and out.is_file(), dev.stdout + dev.stderr


def test_python_310_with_onnxruntime_only(py310_env: Path, artifacts: dict[str, Path]) -> None:
    ver = subprocess.run([str(py310_env), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                         text=True, check=True).stdout
    assert ver.strip() == "(3, 10)"
    onnx_file = str(artifacts["m.fp32.onnx"])
    prof = _cli(py310_env, "profile", onnx_file, "--runtime", "onnxruntime", "--runs", "5", "--json")
    _no_forbidden(py310_env, prof)
    entry = json.loads(prof.stdout)["artifacts"][0]
    assert entry["runtime"] == "onnxruntime" and entry["inputs"][0]["name"] == "x"
    from edge_lstm.cost import onnx_sizes

    host = onnx_sizes(artifacts["m.fp32.onnx"])  # with the onnx package, here
    assert 0.9 * host["weights_bytes"] <= entry["size"]["weights_bytes"] <= host["weights_bytes"]  # wire format
    info = _cli(py310_env, "info", str(artifacts["m.fp32.tflite"]), "--json")
    _no_forbidden(py310_env, info)
    dev = subprocess.run([str(py310_env), "-m", "edge_lstm.device", onnx_file, "--inputs",
                          str(artifacts["feed.npz"]), "--runtime", "onnxruntime"], capture_output=True, text=True,
                         check=False, cwd="/")
    assert dev.returncode == 0 and json.loads(dev.stdout)["python"].startswith("3.10"), dev.stdout + dev.stderr


@pytest.mark.parametrize("minor", ["9", "10"])
def test_zipapp_runs_on_old_pythons(minor: str, artifacts: dict[str, Path], tmp_path: Path) -> None:
    """The zipapp is self-contained: edge-lstm is not installed here, only numpy and the runtimes."""
    from edge_lstm.remote import build_zipapp

    packages = ["numpy<2", "tflite-runtime==2.14.0", "onnxruntime"] if minor == "9" else ["numpy", "onnxruntime"]
    py = make_env(pyenv_python(minor), tmp_path / "venv", packages, with_repo=False)
    pyz = build_zipapp(tmp_path / "runner.pyz")
    ran = ["m.fp32.tflite", "m.fp32.onnx"] if minor == "9" else ["m.fp32.onnx"]
    for name in ran:
        out = tmp_path / f"{name}.out.npz"
        proc = subprocess.run([str(py), str(pyz), str(artifacts[name]), "--inputs", str(artifacts["feed.npz"]),
                               "--outputs", str(out), "--runs", "3"], capture_output=True, text=True, check=False,
                              cwd="/", timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        report = json.loads(proc.stdout)
        assert report["python"].startswith(f"3.{minor}.") and len(report["latencies_s"]) == 3, report
        with np.load(out) as got:
            assert all(np.isfinite(got[k]).all() for k in got.files) and got.files
