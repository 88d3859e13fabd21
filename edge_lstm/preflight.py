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

A job may carry every validation sample (:attr:`Job.samples`): the child then runs them all on each runtime,
state reset before each, and hands back each output stacked over the samples, so the whole validation run of an
artifact is crash-contained, not only its first window, and the parent judges those outputs. The pairs run in
two children side by side (:func:`run_many`): TFLite Micro's (its host interpreter runs the reference kernels, the
slowest) and the others'.

The child imports only numpy, the device-side runner and the runtime asked for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.outputs import atomic_file, write_into

#: seconds one child may take to open and run an artifact on every runtime asked for
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Job:
    """One artifact to open and run once: its bytes, file suffix, one batch-1 sample per input (no sample axis)
    and the runtimes to try; with ``samples`` (each a batch-1 feed, like ``feed``), every one of them is run
    instead (state reset before each) and the outputs come back (:func:`run_many`)."""

    data: bytes
    suffix: str
    feed: dict[str, np.ndarray]
    runtimes: list[str]
    samples: list[dict[str, np.ndarray]] | None = None


@dataclass
class Ran:
    """What the children found for one job: per runtime, None when it ran (every sample when the job has
    ``samples``) else why not; and per runtime that ran every sample, each output stacked over the samples."""

    why: dict[str, str | None] = field(default_factory=dict)
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


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
    return [r.why for r in run_many([Job(j.data, j.suffix, j.feed, j.runtimes) for j in jobs], timeout_s,
                                    side_by_side=False)]


def run_many(jobs: list[Job], timeout_s: float = TIMEOUT_S, side_by_side: bool = True,
             meanwhile: Callable[[], None] | None = None) -> list[Ran]:
    """Every job on each of its runtimes in child processes: once on ``feed``, or on every sample of a job with
    ``samples`` (their outputs returned). With ``side_by_side``, TFLite Micro's pairs run in a second child beside
    the others' (two cores: the validation's wall time is then the slower group's); ``meanwhile`` runs in this
    process while they do. A pair that killed a shared child is run again alone before it is blamed.
    ``timeout_s`` bounds a child's time per pair (per 32 samples of a job with samples)."""
    results = [Ran() for _ in jobs]
    with tempfile.TemporaryDirectory(prefix="edge-lstm-preflight-") as tmp:
        written: dict[int, str] = {}
        entries = [_stage(Path(tmp), i, job, written) for i, job in enumerate(jobs)]
        todo = [(i, rt) for i, job in enumerate(jobs) for rt in job.runtimes]
        groups = [[p for p in todo if (p[1] == "tflm") == micro] for micro in (False, True)] if side_by_side \
            else [todo]
        groups = [g for g in groups if g]
        budget = {i: timeout_s * (1 + len(job.samples or []) // 32) for i, job in enumerate(jobs)}
        if len(groups) == 1 and meanwhile is None:
            _run_group(Path(tmp), entries, groups[0], budget, results)
            return results
        # the children run from threads (each waits on its child, the GIL free) while this one runs ``meanwhile``
        threads = [threading.Thread(target=_run_group, args=(Path(tmp), entries, g, budget, results), daemon=True)
                   for g in groups]
        for t in threads:
            t.start()
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            for t in threads:
                t.join()
    return results


def _stage(tmp: Path, i: int, job: Job, written: dict[int, str]) -> tuple[str, str, bool]:
    """Write job ``i``'s model and its feeds (one sample, or every sample along a leading axis) for the child;
    and whether the child is to run every sample and save the outputs. Jobs that share one list of samples share
    its file (``written``: the file of each list staged so far, by identity)."""
    model = write_into(tmp, f"artifact{i}{job.suffix}", job.data)
    if job.samples is not None and id(job.samples) in written:
        return str(model), written[id(job.samples)], True
    feed_path = tmp / f"feed{i}.npz"
    samples = job.samples if job.samples is not None else [job.feed]
    with atomic_file(feed_path) as f:
        np.savez(f, **{k: np.stack([np.asarray(s[k]) for s in samples]) for k in samples[0]})  # type: ignore[arg-type]
    if job.samples is not None:
        written[id(job.samples)] = str(feed_path)
    return str(model), str(feed_path), job.samples is not None


def _run_group(tmp: Path, entries: list[tuple[str, str, bool]], todo: list[tuple[int, str]], budget: dict[int, float],
               results: list[Ran]) -> None:
    """Run ``todo``'s pairs in one child after another until each has a verdict (a death re-checked alone)."""
    tag = f"{todo[0][0]}-{todo[0][1]}" if todo else "none"
    while todo:
        done, died = _child(tmp, entries, todo, budget, tag)
        for (i, rt), verdict in done.items():
            results[i].why[rt] = verdict[0]
            if verdict[1] is not None:
                results[i].outputs[rt] = verdict[1]
        if died is not None and died != todo[0]:  # blamed only when it dies alone too
            results[died[0]].why[died[1]] = _child(tmp, entries, [died], budget, tag)[0][died][0]
        todo = [p for p in todo if p[1] not in results[p[0]].why]


def _child(tmp: Path, entries: list[tuple[str, str, bool]], pairs: list[tuple[int, str]], budget: dict[int, float],
           tag: str) -> tuple[dict[tuple[int, str], tuple[str | None, dict[str, np.ndarray] | None]],
                           tuple[int, str] | None]:
    """Run one child over ``pairs``; the pairs it finished, each (why it failed or None, its outputs when it ran
    every sample), a death recorded against the pair it died in; and that pair (None when the child finished them
    all). ``tag`` names this group's plan file (groups run side by side)."""
    import edge_lstm

    root = str(Path(edge_lstm.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    plan = tmp / f"plan-{tag}.json"
    outs = {p: str(tmp / f"out{p[0]}-{p[1]}.npz") if entries[p[0]][2] else None for p in pairs}
    with atomic_file(plan) as f:
        f.write(json.dumps([[entries[i][0], entries[i][1], rt, i, outs[i, rt]] for i, rt in pairs]).encode())
    cmd = [sys.executable, "-m", "edge_lstm.preflight", "--plan", str(plan)]
    timeout_s = sum(budget[i] for i, _ in pairs)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr, rc = "", None
    out: dict[tuple[int, str], tuple[str | None, dict[str, np.ndarray] | None]] = {}
    started: tuple[int, str] | None = None
    for line in stdout.splitlines():
        msg = _json(line)
        if "start" in msg:
            started = (int(msg["job"]), str(msg["start"]))
        elif "runtime" in msg:
            pair = (int(msg["job"]), str(msg["runtime"]))
            out[pair] = (None, _outputs(outs[pair], msg.get("outputs"))) if msg.get("ok") else \
                (f"{msg.get('error')}: {msg.get('message')}", None)
            started = None
    victim = started or next((p for p in pairs if p not in out), None)
    if victim is not None and victim not in out:
        out[victim] = (_death(rc, budget[victim[0]], stderr), None)
        return out, victim
    return out, None


def _outputs(path: str | None, names: Any) -> dict[str, np.ndarray] | None:
    """The outputs a child saved for a pair that ran every sample (None for a one-sample check)."""
    if path is None or not isinstance(names, list):
        return None
    with np.load(path) as z:
        return {str(n): z[f"arr_{k}"] for k, n in enumerate(names)}


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
    """Child entry point: ``--plan PLAN.json`` (a list of ``[model, feed.npz, runtime, job]``, and an output
    ``.npz`` path when the feed file holds every sample to run) or ``MODEL FEED.npz RUNTIME [RUNTIME ...]``; one
    JSON line before and after each pair."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--plan"]:
        plan = [(str(e[0]), str(e[1]), str(e[2]), int(e[3]), str(e[4]) if len(e) > 4 and e[4] else None)
                for e in json.loads(Path(args[1]).read_text())]
    else:
        plan = [(args[0], args[1], rt, 0, None) for rt in args[2:]]
    from edge_lstm.device import make_runner

    feeds: dict[str, dict[str, np.ndarray]] = {}
    for model, feed_path, runtime, job, out_path in plan:
        if feed_path not in feeds:
            with np.load(feed_path) as z:
                feeds[feed_path] = {k: z[k] for k in z.files}
        stacked = feeds[feed_path]
        count = len(next(iter(stacked.values()))) if out_path is not None else 1
        print(json.dumps({"start": runtime, "job": job}), flush=True)
        try:
            runner = make_runner(model, runtime)
            with runner:
                got = _run_samples(runner, stacked, count)
            names = None
            if out_path is not None:  # every sample: the outputs go back to the parent
                names = list(got)
                with Path(out_path).open("wb") as f:
                    np.savez(f, *[got[n] for n in names])
        except Exception as e:  # reported to the parent: the artifact does not run on this runtime
            message = " ".join(str(e).split())[:500]
            print(json.dumps({"runtime": runtime, "job": job, "error": type(e).__name__, "message": message}),
                  flush=True)
        else:
            print(json.dumps({"runtime": runtime, "job": job, "ok": True, "outputs": names}), flush=True)
    return 0


def _run_samples(runner: Any, stacked: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """The first ``count`` samples, state reset before each (as :func:`edge_lstm.feeds.run_all` runs them), each
    output stacked over them as float32."""
    outs: dict[str, list[np.ndarray]] = {}
    names = runner.input_names
    for i in range(count):
        runner.reset_state()
        res = runner.infer({k: v[i] for k, v in stacked.items() if k in names})
        for k, v in res.items():
            outs.setdefault(k, []).append(np.asarray(v, dtype=np.float32))
    return {k: np.stack(v) for k, v in outs.items()}


if __name__ == "__main__":
    raise SystemExit(main())
