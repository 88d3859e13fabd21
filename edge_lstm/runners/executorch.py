"""ExecuTorch runner: a ``.pte`` program on ExecuTorch's runtime (the XNNPACK delegate where it was lowered).

ExecuTorch's Python bindings take and return torch tensors, so this runner needs
torch as well as ``executorch``; on a phone the same program runs on the C++
runtime. The input and output names come from the program's ``edge_lstm_io``
method (:mod:`edge_lstm.export_executorch`); a program written elsewhere gets
``input_0``, ``output_0``, ...

Importing ExecuTorch's runtime and loading a program write notices to stderr on
every healthy run (XNNPACK probing ``/sys`` for ARM CPU ids, torchao's optional
CUDA kernels, a torch deprecation): loading runs with stderr held back
(:func:`quiet`), those known notices (:data:`NOISE`) are dropped, and anything
else is passed on (when loading fails, in the error's message). Inference is not
held back: it is timed, and silent when it works.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edge_lstm.runners.base import Runner
from edge_lstm.spec import TensorSpec

T = TypeVar("T")
#: what ExecuTorch and its imports write to stderr on every healthy load: XNNPACK's CPU probing (the /sys files an
#: x86 host has no need of), torchao's optional CUDA kernels it does not find, a torch deprecation notice
NOISE = re.compile(r"^\[cpuinfo_utils\.cpp:\d+\] |^Failed to load \S*torchao/\S+: Could not load this library"
                   r"|^W\d{4} [\d:.]+ \d+ \S*torch/utils/_pytree\.py:\d+\] .*register_constant\(\)")
IO_METHOD = "edge_lstm_io"  # the same name as edge_lstm.export_executorch.IO_METHOD (that module needs torch)
_DTYPES = {"Float": "float32", "Long": "int64", "Int": "int32", "Half": "float16", "Char": "int8", "Byte": "uint8"}


class ExecuTorchRunner(Runner):
    """Runs a ``.pte`` file or bytes with ``executorch.runtime``."""

    runtime = "executorch"

    def __init__(self, model: str | Path | bytes, threads: int | None = 1) -> None:
        super().__init__()
        self.model = model
        self.threads = threads
        self.program: Any = None
        self.method: Any = None

    def _load(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        src = self.model if isinstance(self.model, bytes) else Path(self.model).read_bytes()
        self.program = quiet(lambda: _runtime().load_program(src))
        self.method = quiet(lambda: self.program.load_method("forward"))
        meta = self.method.metadata
        names = self._names()
        self.inputs = [_spec(meta.input_tensor_meta(i), names.get("inputs", []), i, "input")
                       for i in range(meta.num_inputs())]
        self.outputs = [_spec(meta.output_tensor_meta(i), names.get("outputs", []), i, "output")
                        for i in range(meta.num_outputs())]

    def _names(self) -> dict[str, list[str]]:
        if IO_METHOD not in self.program.method_names:
            return {}
        raw = self.program.load_method(IO_METHOD).execute([])[0]
        value = json.loads(bytes(raw.numpy().astype(np.uint8).tolist()).decode())
        return value if isinstance(value, dict) else {}

    def _unload(self) -> None:
        self.method = None
        self.program = None

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feed[s.name], dtype=s.dtype)) for s in self.inputs]
        outs = self.method.execute(args)  # not held back: it is silent when it works, and timed
        return {s.name: o.detach().numpy().copy() for s, o in zip(self.outputs, outs, strict=True)}

    def version(self) -> str:
        """executorch's version."""
        from importlib.metadata import version

        return version("executorch")


def _runtime() -> Any:
    from executorch.runtime import Runtime  # importing it imports exir, torchao and their notices

    return Runtime.get()


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Point file descriptor 2 (native code's stderr, and Python's) at a temporary file; the lines land in the
    list on exit."""
    lines: list[str] = []
    sys.stderr.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield lines
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())


def quiet(fn: Callable[[], T]) -> T:
    """Run ``fn`` with ExecuTorch's stderr held back: on success the known notices (:data:`NOISE`) are dropped and
    anything else is passed on; on failure the lines that are not notices go into the error's message (or, for an
    error without a plain message, to stderr)."""
    try:
        with _native_stderr() as lines:
            result = fn()
    except Exception as e:
        said = [ln for ln in lines if ln.strip() and not NOISE.search(ln)]
        if said and isinstance(e, RuntimeError) and len(e.args) == 1 and isinstance(e.args[0], str):
            raise RuntimeError(f"{e.args[0]} (ExecuTorch: {'; '.join(said)})") from e
        if said:
            print("\n".join(said), file=sys.stderr, flush=True)
        raise
    rest = [ln for ln in lines if ln.strip() and not NOISE.search(ln)]
    if rest:
        print("\n".join(rest), file=sys.stderr, flush=True)
    return result


def _spec(meta: Any, names: list[str], i: int, kind: str) -> TensorSpec:
    dtype = _DTYPES.get(str(meta.dtype()).rsplit(".", 1)[-1], "float32")
    name = names[i] if i < len(names) else f"{kind}_{i}"
    return TensorSpec(name, tuple(int(d) for d in meta.sizes()), dtype)
