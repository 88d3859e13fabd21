"""Device-like Python environments for the slow device tests: pyenv's interpreters, fresh venvs from the registries."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: packages a device-side environment must never get (or import)
HOST_ONLY = {"torch", "onnx", "ai-edge-litert", "tflite-micro", "onnxscript"}


def pyenv_python(minor: str) -> str:
    """pyenv's Python 3.``minor`` (the project's machines have 3.9 to 3.13), else a ``python3.minor`` on PATH."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:  # no pyenv here
        root = ""
    pyenv = sorted(Path(root).glob(f"versions/3.{minor}.*/bin/python3.{minor}"), reverse=True) if root else []
    found = [str(p) for p in pyenv] + [c for c in [shutil.which(f"python3.{minor}")] if c]  # pyenv's newest first
    for c in found:
        if subprocess.run([c, "-c", "import venv"], capture_output=True, check=False).returncode == 0:
            return c
    pytest.skip(f"no Python 3.{minor} on this machine (pyenv provides one on the project's machines)")


def make_env(base: str, where: Path, packages: list[str], with_repo: bool = True) -> Path:
    """A fresh venv from ``base`` with ``packages`` (and this repository unless ``with_repo`` is False), installed
    with pip as a user would; none of :data:`HOST_ONLY` may come with them."""
    subprocess.run([base, "-m", "venv", str(where)], check=True, capture_output=True)
    py = where / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
                           str(REPO / "constraints.txt"), *packages, *([str(REPO)] if with_repo else [])],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                            check=True).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert not names & HOST_ONLY, names
    return py
