"""Compile the generated C with the host's C compiler and call it from Python (ctypes).

This is how the generated code is proven against the reference on this
machine: the same C file that goes on the microcontroller, built as a
shared library with the system compiler (``cc``, or ``$CC``).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np

from edge_lstm.errors import UsageError
from edge_lstm.outputs import write_into

HOST_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")


def host_compiler() -> str:
    """The host C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise UsageError("No C compiler found on this host (tried $CC, cc, gcc, clang).",
                     "Install one (Debian: apt-get install gcc), or skip the host check with --no-host-check.")


def compile_shared(sources: dict[str, str], out_dir: Path, flags: tuple[str, ...] = HOST_FLAGS) -> Path:
    """Write ``sources`` (file name -> text) into ``out_dir`` and build ``libmodel.so`` from the ``.c`` files."""
    for name, text in sources.items():
        write_into(out_dir, name, text.encode())
    lib = out_dir / "libmodel.so"
    cmd = [host_compiler(), *flags, "-shared", "-fPIC", *[n for n in sources if n.endswith(".c")], "-o", lib.name,
           "-lm"]
    proc = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise UsageError(f"The host C compiler failed on the generated code ({' '.join(cmd)}):\n"
                         + proc.stderr.strip()[-2000:], "This is an edge-lstm bug: please report it with the model.")
    return lib


class HostModel:
    """The generated model built for this host: ``window()``, ``step()`` and ``reset()`` on numpy arrays."""

    def __init__(self, files: dict[str, str], prefix: str = "model", n_input: int = 1, window: int = 1,
                 step_out: int = 1, window_out: int = 1, flags: tuple[str, ...] = HOST_FLAGS) -> None:
        self.prefix, self.flags = prefix, flags
        self.n_input, self.window_len, self.step_out, self.window_out = n_input, window, step_out, window_out
        self._sources = dict(files)  # file name -> text (a CSource's .files)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._lib: ctypes.CDLL | None = None

    def __enter__(self) -> HostModel:
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-lstm-hostc-")
        path = compile_shared(self._sources, Path(self._tmp.name), self.flags)
        self._lib = ctypes.CDLL(str(path))
        ptr = ctypes.POINTER(ctypes.c_float)
        for fn in ("step", "window"):
            getattr(self._lib, f"{self.prefix}_{fn}").argtypes = [ptr, ptr]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lib = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def _call(self, name: str, x: np.ndarray, out: int) -> np.ndarray:
        if self._lib is None:
            raise RuntimeError("HostModel is used outside its with-block")
        xin = np.ascontiguousarray(x, dtype=np.float32)
        y = np.zeros(out, np.float32)
        ptr = ctypes.POINTER(ctypes.c_float)
        getattr(self._lib, f"{self.prefix}_{name}")(xin.ctypes.data_as(ptr), y.ctypes.data_as(ptr))
        return y

    def reset(self) -> None:
        """Zero the recurrent state."""
        if self._lib is None:
            raise RuntimeError("HostModel is used outside its with-block")
        getattr(self._lib, f"{self.prefix}_reset")()

    def step(self, x: np.ndarray) -> np.ndarray:
        """One time step: ``x`` holds the input floats of one step; returns the step's output floats."""
        if np.size(x) != self.n_input:
            raise ValueError(f"step() takes {self.n_input} floats, got {np.size(x)}")
        return self._call("step", x, self.step_out)

    def window(self, x: np.ndarray) -> np.ndarray:
        """A whole window (``window`` x ``n_input`` floats, time-major); returns the window's output floats."""
        if np.size(x) != self.n_input * self.window_len:
            raise ValueError(f"window() takes {self.n_input * self.window_len} floats, got {np.size(x)}")
        return self._call("window", x, self.window_out)

    def stream(self, x: np.ndarray) -> np.ndarray:
        """Reset, then feed a window one step at a time; the outputs of every step, ``[steps, step_out]``."""
        self.reset()
        steps = np.asarray(x, np.float32).reshape(self.window_len, self.n_input)
        return np.stack([self.step(s) for s in steps])
