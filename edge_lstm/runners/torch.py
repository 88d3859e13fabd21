"""The reference runner: the PyTorch module itself, in eval mode, without gradients."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm.runners.base import Runner

if TYPE_CHECKING:
    from edge_lstm.load import LoadedModel


class TorchRunner(Runner):
    """Runs a :class:`LoadedModel` on the CPU; stateless, so ``reset_state`` does nothing."""

    runtime = "torch"

    @classmethod
    def open(cls, model: str | Path | bytes, runtime: str, threads: int | None = 1, xnnpack: bool = True,
             torch_load: dict[str, Any] | None = None) -> Runner:
        """The PyTorch model file at ``model``, loaded with ``torch_load`` (``input_shapes``, ``trust_pickle``)."""
        if isinstance(model, bytes):
            raise ValueError("the torch runner loads a model file, not bytes")
        from edge_lstm.load import load

        return cls(load(model, **(torch_load or {})), threads=threads)

    def __init__(self, model: LoadedModel, threads: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.threads = threads

    def _load(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        self.inputs = list(self.model.inputs.inputs)
        self.outputs = list(self.model.outputs)

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feed[t.name], dtype=_np_dtype(t.dtype))) for t in self.inputs]
        with torch.inference_mode():
            out = self.model.module(*args)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        return {n: o.detach().numpy() for n, o in zip(self.output_names, outs, strict=True)}

    def version(self) -> str:
        """torch's version."""
        import torch

        return str(torch.__version__)


def _np_dtype(name: str) -> np.dtype:
    """The numpy dtype the module takes for an input: ids keep their integer type, the rest is float32."""
    return np.dtype(name) if name in ("int64", "int32") else np.dtype(np.float32)
