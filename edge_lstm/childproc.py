"""Run a child process (the device runner, here or over ssh) and hear its progress lines as they come.

:func:`run` is ``subprocess.run(cmd, capture_output=True, text=True, timeout=...)``
when nobody listens; with ``on_runs``, stderr is read line by line while the child
runs: its ``edge-lstm:progress runs DONE TOTAL`` lines (``python -m edge_lstm.device
--progress``) go to ``on_runs(n)``, ``n`` the runs done since the last one, and every
other line is kept as stderr.
Standard library only: device-side commands use it.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

#: must match edge_lstm.device.PROGRESS_PREFIX (not imported: that module pulls numpy and the runners)
PROGRESS_PREFIX = "edge-lstm:progress runs "


def run(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None,
        on_runs: Callable[[int], None] | None = None) -> subprocess.CompletedProcess[str]:
    """The finished child; :class:`subprocess.TimeoutExpired` after ``timeout_s``; progress to ``on_runs``."""
    if on_runs is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout_s, expire)
    timer.start()
    kept: list[str] = []
    try:
        done = 0
        for line in proc.stderr:
            if line.startswith(PROGRESS_PREFIX):
                now = _done(line)
                if now is not None and now > done:
                    on_runs(now - done)
                    done = now
            else:
                kept.append(line)
        proc.wait()
    finally:
        timer.cancel()
        reader.join(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    if expired.is_set():
        raise subprocess.TimeoutExpired(cmd, timeout_s)
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(stdout), "".join(kept))


def _done(line: str) -> int | None:
    parts = line[len(PROGRESS_PREFIX):].split()
    return int(parts[0]) if parts and parts[0].isdigit() else None
