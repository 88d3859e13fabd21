"""TFLite Micro runner over the ``tflite-micro`` host interpreter (the kernels microcontrollers run).

Imports only numpy and ``tflite_micro`` (lazily, in :meth:`TFLMRunner._load`).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.runners.base import Runner
from edge_lstm.runners.quant_io import from_model, to_model
from edge_lstm.spec import TensorSpec

_ARENA_LINE = re.compile(r"\[RecordingMicroAllocator\] Arena allocation total (\d+) bytes")


class TFLMRunner(Runner):
    """Runs a ``.tflite`` file or bytes with TFLite Micro's host interpreter."""

    runtime = "tflm"

    @classmethod
    def open(cls, model: str | Path | bytes, runtime: str, threads: int | None = 1, xnnpack: bool = True,
             torch_load: dict[str, Any] | None = None) -> Runner:
        """A runner for ``model``: TFLite Micro is single-threaded and has no delegate."""
        return cls(model if isinstance(model, bytes) else Path(model))

    def __init__(self, model: str | Path | bytes, arena_size: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.arena_size = arena_size
        self.interpreter: Any = None
        self._data = b""
        self._in_q: list[tuple[float, int] | None] = []
        self._out_q: list[tuple[float, int] | None] = []

    def _load(self) -> None:
        from tflite_micro.python.tflite_micro import runtime

        self._data = self.model if isinstance(self.model, bytes) else Path(self.model).read_bytes()
        failed: list[BaseException] = []
        made: list[Any] = []

        def make() -> None:
            try:
                made.append(runtime.Interpreter.from_bytes(self._data, arena_size=self.arena_size))
            except RuntimeError as e:
                failed.append(e)

        said = _capture_stderr(make)  # TFLite Micro logs why a kernel refuses a tensor (hybrid, float16)
        if failed or not made:
            raise RuntimeError(f"TFLite Micro cannot run this model: {_kernel_says(said)}")
        self.interpreter = made[0]
        names_in, names_out = _io_names(self._data)
        self.inputs = [_spec(n, self.interpreter.get_input_details(i)) for i, n in enumerate(names_in)]
        self.outputs = [_spec(n, self.interpreter.get_output_details(i)) for i, n in enumerate(names_out)]
        self._in_q = [_quant(self.interpreter.get_input_details(i)) for i in range(len(names_in))]
        self._out_q = [_quant(self.interpreter.get_output_details(i)) for i in range(len(names_out))]

    def _unload(self) -> None:
        self.interpreter = None

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for i, spec in enumerate(self.inputs):
            self.interpreter.set_input(to_model(feed[spec.name], spec.dtype, self._in_q[i]), i)
        self.interpreter.invoke()
        return {s.name: from_model(np.array(self.interpreter.get_output(i)), self._out_q[i])
                for i, s in enumerate(self.outputs)}

    def reset_state(self) -> None:
        """Reset the interpreter: zeroes variable tensors (fused LSTM state)."""
        if self.interpreter is not None:
            self.interpreter.reset()

    def arena_used_bytes(self) -> int | None:
        """Arena bytes the model needs, from TFLite Micro's recording allocator (None if it does not say)."""
        if self.interpreter is None:
            self.activate()
        text = _capture_stderr(self.interpreter.print_allocations)
        m = _ARENA_LINE.search(text)
        return int(m.group(1)) if m else None

    def version(self) -> str:
        """tflite-micro's version."""
        try:
            from importlib.metadata import version

            return f"tflite-micro {version('tflite-micro')}"
        except Exception:  # metadata can be missing in a zipapp
            return "tflite-micro unknown"


def _io_names(data: bytes) -> tuple[list[str], list[str]]:
    """Input and output tensor names of subgraph 0, read with the schema tflite-micro ships."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    sub = schema.Model.GetRootAs(data, 0).Subgraphs(0)

    def name(i: int) -> str:
        raw = sub.Tensors(i).Name()
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    ins = [name(sub.Inputs(k)) for k in range(sub.InputsLength())]
    outs = [name(sub.Outputs(k)) for k in range(sub.OutputsLength())]
    return ins, outs


def _spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    return TensorSpec(name, tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name)


def _kernel_says(text: str) -> str:
    """The kernel's own complaint from TFLite Micro's log, in one line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[-3:]) if lines else "no reason given"


def _capture_stderr(fn: Any) -> str:
    """Run ``fn`` and return what native code wrote to file descriptors 1 and 2."""
    with tempfile.TemporaryFile() as tmp:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            fn()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")


def _quant(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of an integer I/O tensor, so float32 feeds work with int8-I/O models."""
    params = detail.get("quantization_parameters") or {}
    scales, zeros = params.get("scales"), params.get("zero_points")
    if scales is None or len(scales) == 0 or not float(scales[0]):
        return None
    return float(scales[0]), int(zeros[0]) if zeros is not None and len(zeros) else 0
