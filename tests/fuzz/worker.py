"""A fork server for the fuzz suite: imports edge-lstm (and torch) once, then runs each case in a fork.

Reads one JSON request per line on stdin: ``{"argv": [...], "cwd": "...", "env": {...}, "timeout": s}``.
Each case runs ``edge_lstm.cli.main(argv)`` in a forked child with stdout and stderr sent to files, so a
crash by signal kills only that child and is reported as a negative exit code. Writes one JSON line per
case: ``{"rc", "stdout", "stderr", "timed_out"}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time


def _child(req: dict, out_path: str, err_path: str) -> None:
    try:
        os.chdir(req["cwd"])
        os.environ.update(req.get("env") or {})
        tempfile.tempdir = None  # TMPDIR from env is read afresh
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        from edge_lstm.cli import main

        rc = main(list(req["argv"]))
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as e:
        print(f"escaped main(): {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        rc = 99
    os._exit(rc)


def _run(req: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="fuzz-io-") as io_dir:
        out_path, err_path = os.path.join(io_dir, "out"), os.path.join(io_dir, "err")
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(req, out_path, err_path)
        deadline = time.monotonic() + float(req.get("timeout", 120))
        timed_out = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                timed_out = True
                break
            time.sleep(0.01)
        rc = os.waitstatus_to_exitcode(status)
        return {"rc": rc, "stdout": _read(out_path), "stderr": _read(err_path), "timed_out": timed_out}


def _read(path: str) -> str:
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def main() -> None:
    """Warm the imports, then serve requests until stdin closes."""
    import torch

    torch.set_num_threads(1)
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    import edge_lstm.cli
    import edge_lstm.load
    import edge_lstm.pipeline  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(_run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
