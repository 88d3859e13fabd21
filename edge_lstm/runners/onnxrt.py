"""ONNX Runtime runner (CPU execution provider): ``.onnx`` files, and ``.ort`` (ONNX Runtime Mobile) files, which
ONNX Runtime recognises by their flatbuffer identifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.runners.base import Runner, zip_equal
from edge_lstm.spec import TensorSpec

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class OnnxRuntimeRunner(Runner):
    """Runs an ``.onnx`` file or bytes with ONNX Runtime on the CPU."""

    runtime = "onnxruntime"

    @classmethod
    def open(cls, model: str | Path | bytes, runtime: str, threads: int | None = 1, xnnpack: bool = True,
             torch_load: dict[str, Any] | None = None) -> Runner:
        """A runner for ``model`` (a path or bytes)."""
        return cls(model if isinstance(model, bytes) else Path(model), threads=threads)

    def __init__(self, model: str | Path | bytes, threads: int | None = 1) -> None:
        super().__init__()
        self.model = model
        self.threads = threads
        self.session: Any = None

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        src = self.model if isinstance(self.model, bytes) else str(self.model)
        head = self.model[:8] if isinstance(self.model, bytes) else _head(Path(self.model))
        if head[4:8] == b"ORTM":  # ONNX Runtime Mobile's flatbuffer, whatever the file is called
            opts.add_session_config_entry("session.load_model_format", "ORT")
        self.session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]

    def _unload(self) -> None:
        self.session = None

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        typed = {s.name: np.ascontiguousarray(feed[s.name], dtype=s.dtype) for s in self.inputs}
        outs = self.session.run(None, typed)
        return dict(zip_equal(self.output_names, outs))

    def version(self) -> str:
        """onnxruntime's version."""
        import onnxruntime as ort

        return str(ort.__version__)


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else str(d) for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, "float32"))


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(8)
    except OSError:  # ONNX Runtime's own error says what is wrong with the path
        return b""
