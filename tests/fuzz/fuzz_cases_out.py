"""Fuzz cases on where edge-lstm writes: symlinks, foreign and planted directories, read-only and full file
systems (real tmpfs mounts, as root), and a staging directory left by a run killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fuzz_corpus as c
from fuzz_harness import REPO, Case

CKPT = "models:stacked:checkpoint"
EXPORT = ["export", "{model}", "-o", "{out}", "--json", "--format", "onnx"]
MARKER = ".edge-lstm-output.json"


def can_mount() -> bool:
    """True when this process may mount a tmpfs (root, as in CI)."""
    return os.geteuid() == 0


def mount_tmpfs(path: Path, options: str) -> None:
    """A real, small tmpfs at ``path`` (``size=...``, ``ro``)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


def unmount_under(root: Path) -> None:
    """Unmount every mount below ``root`` (deepest first)."""
    mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(root) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)


def _setup(prepare: Callable[[Path], None]) -> Callable[[Path], dict[str, str]]:
    def build(sandbox: Path) -> dict[str, str]:
        (sandbox / "in" / "m.pt").write_bytes(c.base(CKPT)[0].read_bytes())
        prepare(sandbox)
        return {"model": str(sandbox / "in" / "m.pt")}
    return build


def _own_output(sandbox: Path, extra: Callable[[Path], None] | None = None) -> Path:
    out = sandbox / "work" / "out"
    out.mkdir()
    for name in ("report.json", "report.md", "stacked.fp32.onnx"):
        (out / name).write_text("old")
    (out / MARKER).write_text(json.dumps({"tool": "edge-lstm", "version": "0", "files": [
        "report.json", "report.md", "stacked.fp32.onnx"]}))
    if extra:
        extra(out)
    return out


def _link(target: str) -> Callable[[Path], None]:
    def go(sandbox: Path) -> None:
        (sandbox / "work" / "out").symlink_to(target)
    return go


def _kill_mid_staging(sandbox: Path) -> None:
    """Start a real export, SIGKILL it while its staging directory exists, check that directory is there."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TMPDIR": str(sandbox / "tmp")}
    proc = subprocess.Popen([sys.executable, "-m", "edge_lstm.cli", "export", str(sandbox / "in" / "m.pt"), "-o",
                             str(sandbox / "work" / "out"), "--format", "onnx", "--profile"],
                            cwd=sandbox / "work", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(".out.") and p.name.endswith(".partial") for p in (sandbox / "work").iterdir()):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stale = [p for p in (sandbox / "work").iterdir() if p.name.startswith(".out.")]
    assert stale, "the killed run left no staging directory to clean up"
    for p in (sandbox / "tmp").iterdir():  # the killed run's own temporary files are not this case's
        subprocess.run(["rm", "-rf", str(p)], check=False)


def _check_replaced(sandbox: Path, res: dict) -> None:
    out = sandbox / "work" / "out"
    marker = json.loads((out / MARKER).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([*marker["files"], MARKER])
    assert (out / "report.json").read_text() != "old"


def _check_dangling(sandbox: Path, res: dict) -> None:
    assert not (sandbox / "outside" / "target").exists(), "the export followed the dangling link"


def _check_untouched(sandbox: Path, res: dict) -> None:
    assert (sandbox / "outside" / "canary.txt").read_text() == "canary"


def output_cases() -> list[Case]:
    """Output-path tricks: exit 2 and nothing written anywhere, or a clean replace of our own output."""
    cases = [
        Case("out-dangling-symlink", _setup(_link("../outside/target")), EXPORT, {2}, fast=True,
             setup_check=_check_dangling),
        Case("out-dangling-symlink-force", _setup(_link("../outside/target")), [*EXPORT, "--force"], {2}),
        Case("out-symlink-to-dir-force", _setup(_link("../outside")), [*EXPORT, "--force"], {2}, fast=True,
             setup_check=_check_untouched),
        Case("out-symlink-loop", _setup(_link("out")), [*EXPORT, "--force"], {2}),
        Case("out-is-a-file-force", _setup(lambda s: (s / "work" / "out").write_text("mine")), [*EXPORT, "--force"],
             {2}),
        Case("out-foreign-dir-with-report-json-force", _setup(lambda s: (
            (s / "work" / "out").mkdir(), (s / "work" / "out" / "report.json").write_text("{}"),
            (s / "work" / "out" / "thesis.tex").write_text("years of work"))), [*EXPORT, "--force"], {2}, fast=True),
        Case("out-own-with-planted-symlink-force", _setup(lambda s: _own_output(s, lambda o: (
            o / "evil").symlink_to(s / "outside"))), [*EXPORT, "--force"], {2}, fast=True,
             setup_check=_check_untouched),
        Case("out-own-with-listed-file-as-symlink-force", _setup(lambda s: _own_output(s, lambda o: (
            (o / "report.json").unlink(), (o / "report.json").symlink_to(s / "outside" / "canary.txt")))),
             [*EXPORT, "--force"], {2}, setup_check=_check_untouched),
        Case("out-own-with-user-file-force", _setup(lambda s: _own_output(s, lambda o: (
            o / "notes.txt").write_text("mine"))), [*EXPORT, "--force"], {2}),
        Case("out-own-without-force", _setup(_own_output), EXPORT, {2}),
        Case("out-own-force-replaced", _setup(_own_output), [*EXPORT, "--force"], {0}, fast=True,
             setup_check=_check_replaced),
        Case("out-empty-dir-force", _setup(lambda s: (s / "work" / "out").mkdir()), [*EXPORT, "--force"], {0}),
        Case("out-parent-missing", _setup(lambda s: None), EXPORT, {2}, out="work/a/b/out"),
        Case("out-cwd", _setup(lambda s: None), ["export", "{model}", "-o", ".", "--json", "--force"], {2}),
        Case("out-root", _setup(lambda s: None), ["export", "{model}", "-o", "/", "--json", "--force"], {2}),
        Case("out-dotdot", _setup(lambda s: None), ["export", "{model}", "-o", "..", "--json", "--force"], {2}),
        Case("out-stale-partial-after-kill", _setup(_kill_mid_staging), EXPORT, {0}, fast=True, timeout=300),
    ]
    if can_mount():
        cases += [
            Case("out-read-only-fs", _setup(lambda s: mount_tmpfs(s / "work" / "ro", "ro,size=64k")), EXPORT, {2},
                 out="work/ro/out", fast=True),
            Case("out-full-fs", _setup(lambda s: mount_tmpfs(s / "work" / "full", "size=4k")), EXPORT, {2},
                 out="work/full/out", fast=True,
                 setup_check=lambda s, r: _assert_empty(s / "work" / "full") or _assert_reason(r, "space")),
            Case("out-full-fs-profile-output", _setup(lambda s: mount_tmpfs(s / "work" / "full", "size=4k")),
                 ["profile", "{model}", "--runtime", "torch", "--runs", "2", "--warmup", "0", "--json", "--output",
                  "{out}/p.json"], {2}, out="work/full/out",
                 setup_check=lambda s, r: _assert_empty(s / "work" / "full")),
        ]
    return cases


def _assert_empty(directory: Path) -> None:
    left = list(directory.iterdir())
    assert not left, f"left on the full file system: {left}"


def _assert_reason(res: dict, word: str) -> None:
    assert word in json.loads(res["stdout"])["error"]["message"].lower() + (
        json.loads(res["stdout"])["error"]["hint"] or "").lower()
