"""ExecuTorch runner: a ``.pte`` program on ExecuTorch's runtime (the XNNPACK delegate where it was lowered).

ExecuTorch's Python bindings take and return torch tensors, so this runner needs
torch as well as ``executorch``; on a phone the same program runs on the C++
runtime. The input and output names come from the program's ``edge_lstm_io``
method (:mod:`edge_lstm.export_executorch`); a program written elsewhere gets
``input_0``, ``output_0``, ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.runners.base import Runner
from edge_lstm.spec import TensorSpec

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
        from executorch.runtime import Runtime

        if self.threads:
            torch.set_num_threads(self.threads)
        src = self.model if isinstance(self.model, bytes) else Path(self.model).read_bytes()
        self.program = Runtime.get().load_program(src)
        self.method = self.program.load_method("forward")
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
        outs = self.method.execute(args)
        return {s.name: o.detach().numpy().copy() for s, o in zip(self.outputs, outs, strict=True)}

    def version(self) -> str:
        """executorch's version."""
        from importlib.metadata import version

        return version("executorch")


def _spec(meta: Any, names: list[str], i: int, kind: str) -> TensorSpec:
    dtype = _DTYPES.get(str(meta.dtype()).rsplit(".", 1)[-1], "float32")
    name = names[i] if i < len(names) else f"{kind}_{i}"
    return TensorSpec(name, tuple(int(d) for d in meta.sizes()), dtype)
