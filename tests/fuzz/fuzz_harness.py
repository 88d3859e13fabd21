"""Run fuzz cases against the real CLI and check every promise edge-lstm makes on hostile input.

Each case runs ``edge-lstm ARGS`` in a fork of a warm worker process (``worker.py``), inside its own
sandbox directory: ``in/`` holds the crafted inputs, ``work/`` is the working directory and the parent of
the default ``-o work/out``, ``tmp/`` is ``TMPDIR``, ``outside/`` holds a canary file. After the run,
:func:`check` asserts:

- a documented exit code (the ones the case allows; never 1, never a signal, never a timeout);
- no traceback on stdout or stderr;
- with ``--json``: stdout is exactly one strict JSON object (no NaN/Infinity), and on failure it is
  ``{"error": {"code", "kind", "message", "hint"}}`` with the exit code;
- the marker file a malicious payload would create does not exist;
- nothing changed in the sandbox outside ``-o`` (and ``-o`` itself is unchanged when the run failed);
- nothing left behind: no staging directory beside ``-o``, an empty ``TMPDIR``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: exit codes that may leave an output directory (the report is published on validation and budget failures)
PUBLISHING = {0, 3, 4}


@dataclass
class Case:
    """One fuzz case: how to build its inputs, the command, and what it may answer."""

    id: str
    build: Callable[[Path], dict[str, str]]  # sandbox dir -> placeholders ({model}, {data}, ...)
    argv: list[str]
    expect: set[int]
    fast: bool = False
    timeout: float = 240.0
    json: bool = True
    out: str = "work/out"  # relative to the sandbox: where -o points (checked for leftovers)
    setup_check: Callable[[Path, dict[str, Any]], None] | None = None  # extra assertions after the run
    tags: tuple[str, ...] = field(default_factory=tuple)
    result: dict[str, Any] | None = None  # the last run's exit code and output, for reports


class Worker:
    """The fork server (``worker.py``) as a context manager."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("worker.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert json.loads(line)["ready"], line

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
        """One case in a fresh fork: exit code (negative for a signal), stdout, stderr."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the worker."""
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[str, int, int]]:
    """Every path under ``root`` (not following links) with its type, size and mtime; ``skip`` excluded."""
    out: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if skip is not None and (p == skip or skip in p.parents):
                continue
            st = p.lstat()
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            out[str(p.relative_to(root))] = (kind, st.st_size if kind == "file" else 0,
                                             st.st_mtime_ns if kind == "file" else 0)
    return out


def strict_json(text: str) -> Any:
    """Parse like a strict parser does: NaN, Infinity and -Infinity are errors."""
    def reject(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def run_case(worker: Worker, case: Case, sandbox: Path) -> None:
    """Build, run and check one case (assertion errors say which promise broke)."""
    for sub in ("in", "work", "tmp", "outside"):
        (sandbox / sub).mkdir(parents=True, exist_ok=True)
    (sandbox / "outside" / "canary.txt").write_text("canary")
    subs = {"{in}": str(sandbox / "in"), "{work}": str(sandbox / "work"), "{out}": str(sandbox / case.out),
            "{marker}": str(sandbox / "PWNED"), "{sandbox}": str(sandbox)}
    subs.update({f"{{{k}}}": v for k, v in case.build(sandbox).items()})
    argv = [_fill(a, subs) for a in case.argv]
    out = sandbox / case.out
    before = snapshot(sandbox, skip=sandbox / "tmp")
    out_before = snapshot(out) if out.is_dir() and not out.is_symlink() else None
    res = worker.run(argv, sandbox / "work", {"TMPDIR": str(sandbox / "tmp")}, case.timeout)
    case.result = res
    check(case, argv, res, sandbox, before, out_before)


def _fill(arg: str, subs: dict[str, str]) -> str:
    for k, v in subs.items():
        arg = arg.replace(k, v)
    return arg


def check(case: Case, argv: list[str], res: dict[str, Any], sandbox: Path,
          before: dict[str, tuple[str, int, int]], out_before: dict[str, tuple[str, int, int]] | None) -> None:
    """Every promise, for one finished run."""
    rc, stdout, stderr = res["rc"], res["stdout"], res["stderr"]
    where = f"edge-lstm {' '.join(argv)}\nexit {rc}\nstdout: {stdout[-1500:]}\nstderr: {stderr[-2500:]}"
    assert not res["timed_out"], f"timed out\n{where}"
    assert rc >= 0, f"killed by signal {-rc}\n{where}"
    assert rc != 1 and "internal error" not in stderr, f"internal error\n{where}"
    assert "Traceback" not in stderr and "Traceback" not in stdout, f"traceback\n{where}"
    assert rc in case.expect, f"exit {rc}, expected one of {sorted(case.expect)}\n{where}"
    if case.json:
        obj = strict_json(stdout)  # exactly one document: json.loads refuses trailing text
        assert isinstance(obj, (dict, list)), where
        if rc not in (0,):
            err = obj.get("error") if isinstance(obj, dict) else None
            assert isinstance(err, dict) and set(err) == {"code", "kind", "message", "hint"}, where
            assert err["code"] == rc and isinstance(err["message"], str) and err["message"], where
    assert not (sandbox / "PWNED").exists(), f"the payload ran (marker file written)\n{where}"
    out = sandbox / case.out
    after = snapshot(sandbox, skip=sandbox / "tmp")
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    rel_out = str(out.relative_to(sandbox))
    staging = re.compile(re.escape(str(out.parent.relative_to(sandbox))) + r"/\." + re.escape(out.name)
                         + r"\.[0-9a-f]{8}-\d+\.[^/]+(/.*)?$")  # our staging beside -o: removed when stale
    outside = sorted(p for p in changed if not (p == rel_out or p.startswith(rel_out + "/") or staging.match(p)))
    assert not outside, f"written outside -o: {outside[:8]}\n{where}"
    if rc not in PUBLISHING:
        now = snapshot(out) if out.is_dir() and not out.is_symlink() else None
        assert now == out_before, f"failed run changed -o\n{where}"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] if out.parent.is_dir() \
        else []
    assert not leftovers, f"left behind: {leftovers}\n{where}"
    # runtimes' own state kept in TMPDIR across runs (torch.export's inductor cache, ONNX Runtime's session id
    # file .ses): theirs, written on every run, not a leftover of ours
    tmp_left = [p for p in (sandbox / "tmp").iterdir() if not p.name.startswith("torchinductor_")
                and p.name != ".ses"]
    assert not tmp_left, f"left in TMPDIR: {[p.name for p in tmp_left][:5]}\n{where}"
    if case.setup_check is not None:
        case.setup_check(sandbox, {"rc": rc, "stdout": stdout, "stderr": stderr})
