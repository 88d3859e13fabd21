"""Open and run every artifact once in a child process before it is validated in this one.

A runtime that crashes on an artifact (a segmentation fault in a kernel, an abort
in a delegate) would otherwise take edge-lstm down with it, losing every other
artifact and printing nothing. The child (``python -m edge_lstm.preflight``) opens
each artifact with each runtime in turn and runs one sample; it prints a line
before and after each (artifact, runtime) pair, so a child killed by a signal
names the pair it died in. The parent turns that into a failure of that artifact
on that runtime (the pipeline reports it and exits 5), and checks the remaining
pairs in a new child.

One child checks every artifact of an export (:func:`check_many`): starting a
Python with numpy and a runtime costs most of a second, which per artifact was
most of an export's time. A pair that died in a shared child is checked again
alone in a fresh one before it is blamed, so an earlier artifact that corrupted
the child's memory cannot pin its crash on a later one.

The child imports only numpy, the device-side runner and the runtime asked for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.outputs import atomic_file, write_into

#: seconds one child may take to open and run an artifact on every runtime asked for
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Job:
    """One artifact to open and run once: its bytes, file suffix, one batch-1 sample per input (no sample axis)
    and the runtimes to try."""

    data: bytes
    suffix: str
    feed: dict[str, np.ndarray]
    runtimes: list[str]


def check(data: bytes, suffix: str, feed: dict[str, np.ndarray], runtimes: list[str],
          timeout_s: float = TIMEOUT_S) -> dict[str, str | None]:
    """Per runtime: None when the artifact opened and ran one sample, else why it did not.

    ``feed`` holds one batch-1 sample per input (no sample axis). Reasons read like
    "killed by SIGSEGV (signal 11)" or "RuntimeError: ... failed to prepare".
    """
    return check_many([Job(data, suffix, feed, list(runtimes))], timeout_s)[0]


def check_many(jobs: list[Job], timeout_s: float = TIMEOUT_S) -> list[dict[str, str | None]]:
    """:func:`check` for every job, in as few child processes as the runtimes allow (one when nothing dies);
    ``timeout_s`` bounds each child's time per pair it runs."""
    results: list[dict[str, str | None]] = [{} for _ in jobs]
    with tempfile.TemporaryDirectory(prefix="edge-lstm-preflight-") as tmp:
        entries = []
        for i, job in enumerate(jobs):
            model = write_into(Path(tmp), f"artifact{i}{job.suffix}", job.data)
            feed_path = Path(tmp) / f"feed{i}.npz"
            with atomic_file(feed_path) as f:
                np.savez(f, **{k: np.asarray(v)[None] for k, v in job.feed.items()})  # type: ignore[arg-type]
            entries.append((str(model), str(feed_path)))
        todo = [(i, rt) for i, job in enumerate(jobs) for rt in job.runtimes]
        while todo:
            done, died = _child(Path(tmp), entries, todo, timeout_s)
            for (i, rt), why in done.items():
                results[i][rt] = why
            if died is not None and died != todo[0]:  # blamed only when it dies alone too
                results[died[0]][died[1]] = _child(Path(tmp), entries, [died], timeout_s)[0][died]
            todo = [p for p in todo if p[1] not in results[p[0]]]
    return results


def _child(tmp: Path, entries: list[tuple[str, str]], pairs: list[tuple[int, str]],
           timeout_s: float) -> tuple[dict[tuple[int, str], str | None], tuple[int, str] | None]:
    """Run one child over ``pairs``; the pairs it finished (a death recorded against the pair it died in), and
    that pair (None when the child finished them all)."""
    import edge_lstm

    root = str(Path(edge_lstm.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    plan = tmp / "plan.json"
    with atomic_file(plan) as f:
        f.write(json.dumps([[entries[i][0], entries[i][1], rt, i] for i, rt in pairs]).encode())
    cmd = [sys.executable, "-m", "edge_lstm.preflight", "--plan", str(plan)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s * len(pairs), env=env,
                              check=False)
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr, rc = "", None
    out: dict[tuple[int, str], str | None] = {}
    started: tuple[int, str] | None = None
    for line in stdout.splitlines():
        msg = _json(line)
        if "start" in msg:
            started = (int(msg["job"]), str(msg["start"]))
        elif "runtime" in msg:
            pair = (int(msg["job"]), str(msg["runtime"]))
            out[pair] = None if msg.get("ok") else f"{msg.get('error')}: {msg.get('message')}"
            started = None
    victim = started or next((p for p in pairs if p not in out), None)
    if victim is not None and victim not in out:
        out[victim] = _death(rc, timeout_s, stderr)
        return out, victim
    return out, None


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
    """Child entry point: ``--plan PLAN.json`` (a list of ``[model, feed.npz, runtime, job]``) or
    ``MODEL FEED.npz RUNTIME [RUNTIME ...]``; one JSON line before and after each pair."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--plan"]:
        plan = [(str(m), str(f), str(rt), int(j)) for m, f, rt, j in json.loads(Path(args[1]).read_text())]
    else:
        plan = [(args[0], args[1], rt, 0) for rt in args[2:]]
    from edge_lstm.device import make_runner

    feeds: dict[str, dict[str, np.ndarray]] = {}
    for model, feed_path, runtime, job in plan:
        if feed_path not in feeds:
            with np.load(feed_path) as z:
                feeds[feed_path] = {k: z[k][0] for k in z.files}
        feed = feeds[feed_path]
        print(json.dumps({"start": runtime, "job": job}), flush=True)
        try:
            runner = make_runner(model, runtime)
            with runner:
                runner.reset_state()
                runner.infer({k: v for k, v in feed.items() if k in runner.input_names})
        except Exception as e:  # reported to the parent: the artifact does not run on this runtime
            message = " ".join(str(e).split())[:500]
            print(json.dumps({"runtime": runtime, "job": job, "error": type(e).__name__, "message": message}),
                  flush=True)
        else:
            print(json.dumps({"runtime": runtime, "job": job, "ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
