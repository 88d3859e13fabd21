"""Does a module really import? Each one is imported in a child process, so a broken install cannot crash the CLI.

``importlib.util.find_spec`` only says a package's files are there; a broken
install (a native library that fails to load, a package built for another
numpy or torch) is found and then fails at import time. :func:`probe` imports
every module asked about in its own child process, all of them at once, and
returns ``None`` for each that imported and the import's error line for each
that did not (a child killed by a signal is reported as such).

Importing ExecuTorch or the ONNX Runtime converter takes seconds (they import
torch and onnx), so the results are kept in ``$XDG_CACHE_HOME/edge-lstm/imports.json``
(else ``~/.cache/edge-lstm``) under a signature of the interpreter and of every
directory on ``sys.path`` (their modification times change whenever a package
is installed, upgraded or removed there): ``edge-lstm formats`` re-imports only
after the environment changed, or when asked to (``--recheck``). A cache that
cannot be read or written is ignored.

This module imports only the standard library and :mod:`edge_lstm.outputs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from edge_lstm import outputs
from edge_lstm.errors import EdgeLstmError

__all__ = ["cache_path", "probe"]

#: the child: take the parent's sys.path, import the module, print nothing on success
_CHILD = ("import importlib, json, sys\n"
          "sys.path[:] = json.loads(sys.argv[2])\n"
          "importlib.import_module(sys.argv[1])\n")
_CACHE_VERSION = 1


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/edge-lstm/imports.json``, else ``~/.cache/edge-lstm/imports.json``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-lstm" / "imports.json"


def signature() -> str:
    """A hash of the interpreter and of each ``sys.path`` directory's modification time."""
    parts: list[str] = [sys.executable, sys.version, os.environ.get("PYTHONPATH", "")]
    for entry in sys.path:
        try:
            parts.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            parts.append(f"{entry}:-")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def probe(modules: Iterable[str], recheck: bool = False) -> dict[str, str | None]:
    """``{module: None}`` for each module that imports here, ``{module: "the error"}`` for each that does not."""
    wanted = list(dict.fromkeys(modules))
    sig = signature()
    cached = {} if recheck else _read_cache(sig)
    todo = [m for m in wanted if m not in cached]
    if todo:
        cached.update(_import_all(todo))
        _write_cache(sig, cached)
    return {m: cached[m] for m in wanted}


def _import_all(modules: list[str]) -> dict[str, str | None]:
    path = json.dumps(sys.path)
    env = dict(os.environ, PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    procs = {m: subprocess.Popen([sys.executable, "-c", _CHILD, m, path], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
             for m in modules}
    return {m: _verdict(p) for m, p in procs.items()}


def _verdict(proc: subprocess.Popen[bytes]) -> str | None:
    _, err = proc.communicate()
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        return f"importing it killed the process (signal {-proc.returncode})"
    lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"importing it failed (exit code {proc.returncode})"


def _read_cache(sig: str) -> dict[str, str | None]:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION or data.get("signature") != sig:
        return {}
    results = data.get("results")
    if not isinstance(results, dict):
        return {}
    return {str(k): (v if isinstance(v, str) else None) for k, v in results.items() if v is None or
            isinstance(v, str)}


def _write_cache(sig: str, results: dict[str, str | None]) -> None:
    path = cache_path()
    text = json.dumps({"version": _CACHE_VERSION, "signature": sig, "results": results}, indent=1, sort_keys=True)
    with contextlib.suppress(OSError, EdgeLstmError):  # a cache only: a read-only home is no error
        path.parent.mkdir(parents=True, exist_ok=True)
        outputs.write_text_atomic(path, text + "\n")
