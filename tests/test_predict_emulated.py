"""``edge-lstm predict`` on the emulated aarch64 device, as a user runs it on a Raspberry Pi.

The bundle and the readings are copied to the device over SSH; edge-lstm is installed there from its wheel with
its pure-Python dependencies (the userland has no pip, so pip on this host installs them for the device's
platform: ``pip install --target DIR --platform manylinux..._aarch64``, what ``pip install edge-lstm`` puts on a
Pi); then ``python -m edge_lstm.entry predict`` (the ``edge-lstm`` script's entry point) runs there on the aarch64
builds of tflite-runtime 2.14 (numpy<2) and ai-edge-litert, from a file and from a pipe. The forecasts equal
PyTorch's whole-window forecasts within each artifact's tolerance. Slow and needs root (the emulated device):
CI runs it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from predict_helpers import DemoBundle, assert_matches, read_forecasts

from edge_lstm import emulate
from edge_lstm.emulate.image import pip_platform_args
from edge_lstm.remote import scp_command, ssh_command

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
REMOTE = "/tmp/edge-lstm-predict-test"


@pytest.fixture(scope="module")
def device() -> Iterator[emulate.EmulatedDevice]:
    """The emulated arm64 device from the user's cache (built on first use); stopped afterwards if started here."""
    dev, started = emulate.emulate("arm64", say=lambda m: print(f"· {m}", flush=True))
    try:
        yield dev
    finally:
        if started:
            emulate.stop("arm64")


def device_site(tmp: Path) -> bytes:
    """edge-lstm and its pure-Python dependencies for the device's platform (aarch64, CPython 3.11), as a tar."""
    site, wheels = tmp / "site", tmp / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(REPO)], check=True, capture_output=True,
                   timeout=600)
    target = [*pip, "install", "--target", str(site), *pip_platform_args("arm64", "3.11", "2.36")]
    subprocess.run([*target, "typer>=0.12", "rich>=13", "jsonschema>=4.17"], check=True, capture_output=True,
                   timeout=900)
    subprocess.run([*target, "--no-deps", str(next(wheels.glob("edge_lstm-*.whl")))], check=True,
                   capture_output=True, timeout=600)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(site, arcname="site")
    return buf.getvalue()


def on_device(dev: emulate.EmulatedDevice, runtime: str, argv: list[str], stdin: bytes | str | None = None,
              ) -> subprocess.CompletedProcess[str]:
    cfg = dev.remote_config(runtime)
    text = stdin.decode() if isinstance(stdin, bytes) else stdin
    return subprocess.run(ssh_command(cfg, argv), input=text, capture_output=True, text=True, timeout=900,
                          check=False)


def test_predict_on_the_emulated_arm64_device(device: emulate.EmulatedDevice, demo_bundle: DemoBundle,
                                              tmp_path: Path) -> None:
    cfg = device.remote_config("tflite-runtime")
    setup = subprocess.run(ssh_command(cfg, ["sh", "-c", f"rm -rf {REMOTE} && mkdir -p {REMOTE} && "
                                                         f"tar -xf - -C {REMOTE}"]),
                           input=device_site(tmp_path), capture_output=True, timeout=600, check=False)
    assert setup.returncode == 0, setup.stderr
    try:
        copy = subprocess.run(scp_command(cfg, [demo_bundle.bundle, demo_bundle.heldout], REMOTE),
                              capture_output=True, text=True, timeout=300, check=False)
        assert copy.returncode == 0, copy.stderr
        bundle, readings = f"{REMOTE}/{demo_bundle.bundle.name}", f"{REMOTE}/{demo_bundle.heldout.name}"
        cases = [("tflite-runtime", "demo.stream.fp32.tflite"), ("tflite-runtime", "demo.stream.int8.tflite"),
                 ("litert", "demo.stream.fp32.tflite")]
        for runtime, artifact in cases:
            python = device.remote_config(runtime).python
            run = ["env", f"PYTHONPATH={REMOTE}/site", python, "-m", "edge_lstm.entry", "predict", bundle]
            p = on_device(device, runtime, [*run, readings, "--streaming", "--artifact", artifact, "--runtime",
                                            runtime])
            assert p.returncode == 0, p.stderr[-2000:]
            want = {"tflite-runtime": "tflite-runtime 2.14.0", "litert": "ai-edge-litert"}[runtime]
            assert want in p.stderr, p.stderr[-500:]
            header, rows = read_forecasts("", p.stdout)
            assert header == ["line", "date", "temp_t+1"]
            assert_matches(demo_bundle, artifact, np.array([float(r[2]) for r in rows]))
        piped = on_device(device, "tflite-runtime", ["env", f"PYTHONPATH={REMOTE}/site",
                                                     device.remote_config("tflite-runtime").python, "-m",
                                                     "edge_lstm.entry", "predict", bundle, "-", "--streaming",
                                                     "--artifact", "demo.stream.fp32.tflite"],
                          stdin=demo_bundle.heldout.read_text())
        assert piped.returncode == 0, piped.stderr[-2000:]
        _, rows = read_forecasts("", piped.stdout)
        assert_matches(demo_bundle, "demo.stream.fp32.tflite", np.array([float(r[2]) for r in rows]))
        arch = on_device(device, "tflite-runtime", ["uname", "-m"])
        assert arch.stdout.strip() == "aarch64"
        # the summary records the device as it reported itself: architecture, OS, Python, runtime; emulated
        python = device.remote_config("tflite-runtime").python
        summary = on_device(device, "tflite-runtime", ["env", f"PYTHONPATH={REMOTE}/site", python, "-m",
                                                       "edge_lstm.entry", "predict", bundle, readings, "--streaming",
                                                       "--artifact", "demo.stream.int8.tflite", "--json"])
        assert summary.returncode == 0, summary.stderr[-2000:]
        res = json.loads(summary.stdout)
        dev = res["device"]
        assert dev["machine"] == device.machine == "aarch64" and dev["os"] == device.os and "bookworm" in dev["os"]
        assert dev["python"].startswith("3.11.") and dev["numpy"].startswith("1.")
        assert dev["emulated"] and "qemu" in dev["emulated"]["emulator"]
        assert res["runtime_version"] == "tflite-runtime 2.14.0"
        assert_matches(demo_bundle, "demo.stream.int8.tflite", np.array([r["forecast"][0] for r in res["rows"]]))
    finally:
        on_device(device, "tflite-runtime", ["rm", "-rf", REMOTE])
