"""The runtimes' own INFO line is dropped from stderr, in a fresh process (it prints once a process); errors pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from profile_models import fc_tflite

from edge_lstm.runners.quiet import NATIVE_NOISE, drop_lines

ROOT = Path(__file__).resolve().parents[2]
INFO = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def _run(code: str, model: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, env=env,
                          timeout=120, check=True)


def test_drop_lines_removes_only_the_exact_noise_lines() -> None:
    data = b"a\n" + NATIVE_NOISE[0] + b"\nERROR: " + NATIVE_NOISE[0] + b"\r\nlast"
    assert drop_lines(data) == b"a\nERROR: " + NATIVE_NOISE[0] + b"\r\nlast"


def test_litert_runner_keeps_the_delegate_line_off_stderr_but_not_other_native_output(tmp_path: Path) -> None:
    model = tmp_path / "fc.tflite"
    model.write_bytes(fc_tflite())
    plain = _run("import sys; from ai_edge_litert.interpreter import Interpreter as I; "
                 "I(model_path=sys.argv[1]).allocate_tensors()", model)
    assert INFO in plain.stderr  # the runtime does print it: the test below can fail
    ours = _run("import sys; from edge_lstm.runners.litert import LiteRTRunner\n"
                "with LiteRTRunner(sys.argv[1]) as r: print(r.infer({r.input_names[0]: __import__('numpy')"
                ".ones((1, 4), 'float32')})[r.output_names[0]].shape)", model)
    assert INFO not in ours.stderr and ours.stdout.strip() == "(1, 3)"
    kept = _run("import os, sys; from edge_lstm.runners.quiet import native_stderr_without\n"
                "from ai_edge_litert.interpreter import Interpreter as I\n"
                "with native_stderr_without():\n"
                "    I(model_path=sys.argv[1]).allocate_tensors(); os.write(2, b'native error: kept\\n')\n"
                "    print('python error: kept', file=sys.stderr)\n"
                "print('after', file=sys.stderr)", model)
    assert INFO not in kept.stderr
    assert kept.stderr.splitlines() == ["native error: kept", "python error: kept", "after"]


def test_an_int8_export_prints_no_delegate_line(forecaster_ckpt: Path, temps_csv: Path, tmp_path: Path) -> None:
    """The quantizer's own interpreters run in the export's process: the line is settled first, inside the filter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "edge_lstm.entry", "export", str(forecaster_ckpt), "-o",
                           str(tmp_path / "out"), "--format", "tflite", "--lowering", "loop", "--precision", "int8",
                           "--calib", str(temps_csv), "--data", str(temps_csv)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode in (0, 3), done.stderr[-2000:]  # 3: an int8 artifact may fail its gate
    assert (tmp_path / "out" / "report.json").is_file()
    assert INFO not in done.stderr and INFO not in done.stdout
