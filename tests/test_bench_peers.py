"""benchmarks/peers.py's own logic: a failed peer becomes one table row with its one-line error, not figures."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

_BENCH = str(Path(__file__).resolve().parents[1] / "benchmarks")
sys.path.insert(0, _BENCH)
import peers  # noqa: E402

while _BENCH in sys.path:  # benchmarks/ holds a quantize.py: left on the path it hides tests/quantize
    sys.path.remove(_BENCH)


def test_failed_conversion_is_one_line_row(tmp_path: Path) -> None:
    # onnx2tf's CLI is not in this venv: the driver's real failure, reported as JSON, becomes the row's error
    (tmp_path / "model.json").write_text(json.dumps({"arch": "forecaster", "config": {}, "window": 4}))
    row = peers.peer_row("m", "onnx2tf", sys.executable, tmp_path, timeout=60)
    assert row.error is not None and row.error.startswith("FileNotFoundError:") and row.path is None
    line = peers.cells(row, 1024, None)
    assert line[:3] == ("m", "onnx2tf 2.6.9 (from edge-lstm's ONNX)", f"failed: {peers.one_line(row.error)}")
    assert set(line[3:]) == {"-"} and len(line) == len(peers.HEADER)
    assert "\n" not in peers.table([line]).splitlines()[-1] and peers.table([line]).count("\n") == 2


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_timed_out_conversion_says_after_how_long(tmp_path: Path) -> None:
    # a "python" that starts a child of its own: the timeout ends the converter's whole process group
    slow = tmp_path / "slow-python"
    slow.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {tmp_path / 'child.pid'}\nwait\n")
    slow.chmod(0o755)
    row = peers.peer_row("m", "executorch", str(slow), tmp_path, timeout=1)
    assert row.error == "timed out after 1 s"
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_one_line_and_errors() -> None:
    text = "Traceback:\n  a | b\n" + "x" * 300
    flat = peers.one_line(text)
    assert "\n" not in flat and "|" not in flat and len(flat) == peers.ERROR_CHARS and flat.endswith("…")
    a, r = peers.errors(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 2.0]))
    assert a == 2.0 and abs(r - 2.0 / 3.0) < 1e-12
