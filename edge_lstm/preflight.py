"""Open and run every artifact once in a child process before it is validated in this one.

A runtime that crashes on an artifact (a segmentation fault in a kernel, an abort
in a delegate) would otherwise take edge-lstm down with it, losing every other
artifact and printing nothing. The child (``python -m edge_lstm.preflight``) opens
the artifact with each runtime in turn and runs one sample; it prints a line
before and after each runtime, so a child killed by a signal names the runtime it
died in. The parent turns that into a failure of that artifact on that runtime
(the pipeline reports it and exits 5), and checks the remaining runtimes in a new
child.

The child imports only numpy, the device-side runner and the runtime asked for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.outputs import atomic_file, write_into

#: seconds one child may take to open and run an artifact on every runtime asked for
TIMEOUT_S = 300.0


def check(data: bytes, suffix: str, feed: dict[str, np.ndarray], runtimes: list[str],
          timeout_s: float = TIMEOUT_S) -> dict[str, str | None]:
    """Per runtime: None when the artifact opened and ran one sample, else why it did not.

    ``feed`` holds one batch-1 sample per input (no sample axis). Reasons read like
    "killed by SIGSEGV (signal 11)" or "RuntimeError: ... failed to prepare".
    """
    results: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="edge-lstm-preflight-") as tmp:
        model = write_into(Path(tmp), f"artifact{suffix}", data)
        feed_path = Path(tmp) / "feed.npz"
        with atomic_file(feed_path) as f:
            np.savez(f, **{k: np.asarray(v)[None] for k, v in feed.items()})  # type: ignore[arg-type]
        todo = list(runtimes)
        while todo:
            done = _child(model, feed_path, todo, timeout_s)
            results.update(done)
            todo = [r for r in todo if r not in results]
    return results


def _child(model: Path, feed: Path, runtimes: list[str], timeout_s: float) -> dict[str, str | None]:
    """Run the child once; the runtimes it finished, and the one it died in (if it died)."""
    import edge_lstm

    root = str(Path(edge_lstm.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    cmd = [sys.executable, "-m", "edge_lstm.preflight", str(model), str(feed), *runtimes]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr, rc = "", None
    out: dict[str, str | None] = {}
    started = None
    for line in stdout.splitlines():
        msg = _json(line)
        if "start" in msg:
            started = str(msg["start"])
        elif "runtime" in msg:
            out[str(msg["runtime"])] = None if msg.get("ok") else f"{msg.get('error')}: {msg.get('message')}"
            started = None
    victim = started or next((r for r in runtimes if r not in out), None)
    if victim is not None and victim not in out:
        out[victim] = _death(rc, timeout_s, stderr)
    return out


def _json(line: str) -> dict[str, Any]:
    if not line.startswith("{"):
        return {}
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _death(rc: int | None, timeout_s: float, stderr: str) -> str:
    if rc is None:
        return f"did not finish within {timeout_s:.0f} s"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by {name} (signal {-rc})"
    tail = (stderr.strip().splitlines() or ["no message"])[-1]
    return f"exited with code {rc}: {tail}"


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``MODEL FEED.npz RUNTIME [RUNTIME ...]``; one JSON line before and after each."""
    args = sys.argv[1:] if argv is None else argv
    model, feed_path, runtimes = args[0], args[1], args[2:]
    from edge_lstm.device import make_runner

    with np.load(feed_path) as z:
        feed = {k: z[k][0] for k in z.files}
    for runtime in runtimes:
        print(json.dumps({"start": runtime}), flush=True)
        try:
            runner = make_runner(model, runtime)
            with runner:
                runner.reset_state()
                runner.infer({k: v for k, v in feed.items() if k in runner.input_names})
        except Exception as e:  # reported to the parent: the artifact does not run on this runtime
            message = " ".join(str(e).split())[:500]
            print(json.dumps({"runtime": runtime, "error": type(e).__name__, "message": message}), flush=True)
        else:
            print(json.dumps({"runtime": runtime, "ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
