"""LiteRT runner: ``ai-edge-litert``, or ``tflite-runtime`` where that is the installed runtime.

The two packages share the interpreter API, so one runner covers both: a
Raspberry Pi image with ``tflite-runtime`` 2.14 and ``numpy<2`` runs the same
code as a host with ``ai-edge-litert``. Only numpy and the runtime are imported
(the runtime lazily, in :meth:`LiteRTRunner._load`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm import registry
from edge_lstm.errors import UnsupportedModel
from edge_lstm.kernels import NO_KERNEL, installed_version, missing
from edge_lstm.runners.base import Runner, zip_equal
from edge_lstm.runners.quant_io import from_model, to_model
from edge_lstm.runners.quiet import native_stderr_without
from edge_lstm.spec import TensorSpec

#: runtime name -> interpreter module: the registry's runtimes that this runner drives, each its first module
_MODULES = {r.name: r.modules[0] for r in registry.RUNTIMES_TABLE if r.runner.endswith(":LiteRTRunner")}


def pick_runtime(prefer: str | None = None) -> str:
    """The runtime to use: ``prefer`` when given, else ai-edge-litert when installed, else tflite-runtime."""
    if prefer is not None:
        if prefer not in _MODULES:
            raise ValueError(f"unknown TFLite runtime '{prefer}'; known: {', '.join(_MODULES)}")
        return prefer
    for name, module in _MODULES.items():
        if registry.installed(module):
            return name
    return "litert"  # _load then raises the ImportError that names the package


class LiteRTRunner(Runner):
    """Runs a ``.tflite`` file or bytes with LiteRT's interpreter (XNNPACK on unless ``xnnpack=False``)."""

    runtime = "litert"

    @classmethod
    def open(cls, model: str | Path | bytes, runtime: str, threads: int | None = 1, xnnpack: bool = True,
             torch_load: dict[str, Any] | None = None) -> Runner:
        """A runner for ``model`` on ``runtime`` (``tflite-runtime`` forces that package; ``litert`` takes
        ai-edge-litert, else tflite-runtime)."""
        prefer = "tflite-runtime" if runtime == "tflite-runtime" else None
        model = model if isinstance(model, bytes) else Path(model)
        return cls(model, threads=threads, xnnpack=xnnpack, prefer=prefer)

    def __init__(
        self,
        model: str | Path | bytes,
        threads: int | None = 1,
        xnnpack: bool = True,
        prefer: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.threads = threads
        self.xnnpack = xnnpack
        self.runtime = pick_runtime(prefer)
        self.interpreter: Any = None
        self._in_index: list[int] = []
        self._out_index: list[int] = []
        self._in_q: list[tuple[float, int] | None] = []
        self._out_q: list[tuple[float, int] | None] = []

    def _load(self) -> None:
        module = importlib.import_module(_MODULES[self.runtime])
        kwargs: dict[str, Any] = {"num_threads": self.threads}
        if isinstance(self.model, bytes):
            kwargs["model_content"] = self.model
        else:
            kwargs["model_path"] = str(self.model)
        if not self.xnnpack:
            # The builtin kernels without the default (XNNPACK) delegate.
            kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with native_stderr_without():  # the delegate's "INFO: Created ... delegate" line, nothing else
            try:
                self.interpreter = module.Interpreter(**kwargs)
            except (ValueError, RuntimeError) as e:
                if NO_KERNEL not in str(e):
                    raise
                raise self._no_kernel(e) from e
            self.interpreter.allocate_tensors()
        ins = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        self.inputs = [_spec(d) for d in ins]
        self.outputs = [_spec(d) for d in outs]
        self._in_index = [int(d["index"]) for d in ins]
        self._out_index = [int(d["index"]) for d in outs]
        self._in_q = [_quant(d) for d in ins]
        self._out_q = [_quant(d) for d in outs]

    def _no_kernel(self, e: BaseException) -> UnsupportedModel:
        """This runtime lacks a kernel (op version) the model uses: every one it lacks, from the measured table."""
        data = self.model if isinstance(self.model, bytes) else Path(self.model).read_bytes()
        release = installed_version(self.runtime) or "unknown"
        lacks = missing(data, self.runtime, release) or [" ".join(str(e).split()).split(". ")[0]]
        return UnsupportedModel(
            f"{self.version()} cannot run this model: it has no kernel for {'; '.join(lacks)}.",
            "Run it on ai-edge-litert (pip install ai-edge-litert), which has the newer kernels, or export a "
            "precision whose ops this runtime has (`edge-lstm ops`).")

    def _unload(self) -> None:
        self.interpreter = None

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for spec, index, q in zip_equal(self.inputs, self._in_index, self._in_q):
            self.interpreter.set_tensor(index, to_model(feed[spec.name], spec.dtype, q))
        self.interpreter.invoke()
        return {s.name: from_model(self.interpreter.get_tensor(i), q)
                for s, i, q in zip_equal(self.outputs, self._out_index, self._out_q)}

    def reset_state(self) -> None:
        """Zero the variable tensors (fused LSTM state)."""
        if self.interpreter is not None:
            self.interpreter.reset_all_variables()

    def version(self) -> str:
        """The runtime package's version."""
        package = "ai-edge-litert" if self.runtime == "litert" else "tflite-runtime"
        try:
            from importlib.metadata import version

            return f"{package} {version(package)}"
        except Exception:  # metadata can be missing in a zipapp
            return f"{package} unknown"


def _spec(detail: dict[str, Any]) -> TensorSpec:
    shape = tuple(int(d) for d in detail["shape"])
    return TensorSpec(str(detail["name"]), shape, np.dtype(detail["dtype"]).name)


def _quant(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of an integer I/O tensor, so float32 feeds work with int8-I/O models."""
    scale, zero = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero)) if scale else None


def node_details(interpreter: Any) -> list[dict[str, Any]]:
    """The nodes an allocated LiteRT / tflite-runtime interpreter runs, after delegation: one dict per node with
    ``op_name`` (``"DELEGATE"`` for a node the XNNPACK delegate took over), ``index``, ``inputs``, ``outputs``.

    The interpreter has no public call for this (``get_tensor_details`` lists tensors, not nodes; the signature
    runners hide the graph), so this wraps its private ``_get_ops_details``: the one place edge-lstm calls it, used
    by the tests and benchmarks that check what XNNPACK delegates. If a release drops it, fix it here only.
    """
    return list(interpreter._get_ops_details())
