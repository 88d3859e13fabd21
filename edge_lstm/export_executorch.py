"""``--format executorch``: an ExecuTorch program (``.pte``) through ExecuTorch's own exporter.

``torch.export.export`` captures the module on a batch-1 window, then
``executorch.exir.to_edge_transform_and_lower`` with the XNNPACK partitioner
delegates what XNNPACK runs and ``to_executorch`` serialises the program. The
recurrent layers have no XNNPACK kernel: ExecuTorch decomposes ``aten.lstm`` into
its per-time-step matrix products and gates, so export time and file size grow
with the window (on the reference forecaster, 96 steps, export takes minutes and
the file is about 4.5x the float parameter bytes); the report says so.

The program has a second method, ``edge_lstm_io``, a constant holding the model's
input and output names as UTF-8 JSON, so a runner (here or on a device) feeds it
by name like every other artifact.

Only float32: XNNPACK's 8-bit quantizer (PT2E) annotates linear and convolution
ops, and ``torch.export`` keeps the recurrent cell as one ``aten.lstm`` op, which it
leaves unannotated, so a "quantized" program would keep the LSTM in float.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_lstm.errors import UnsupportedModel
from edge_lstm.spec import Precision

if TYPE_CHECKING:
    from edge_lstm.load import LoadedModel

#: the constant method that carries the I/O names
IO_METHOD = "edge_lstm_io"


@dataclass
class ExecuTorchProgram:
    """The serialised program and what the export measured."""

    data: bytes
    export_s: float
    notes: list[str] = field(default_factory=list)


def io_names_tensor(inputs: list[str], outputs: list[str]) -> object:
    """The names as a uint8 tensor of UTF-8 JSON (what :data:`IO_METHOD` returns)."""
    import torch

    raw = json.dumps({"inputs": inputs, "outputs": outputs}, separators=(",", ":")).encode()
    return torch.tensor(list(raw), dtype=torch.uint8)


#: loggers whose warnings during an ExecuTorch export are about the exporter's own packages (torchao's optional
#: kernels that did not load, pytree's deprecated Enum registration)
EXPORTER_LOGGERS = ("torchao", "torch.utils._pytree")


@contextlib.contextmanager
def exporter_quiet() -> Iterator[None]:
    """Inside the block: no ``FutureWarning`` (the exporter's deprecations of its own internals, e.g.
    ``isinstance(treespec, LeafSpec) is deprecated``), no warning that a module's tensors were "assigned during
    export" (an LSTM's flat weights, harmless), and the loggers in :data:`EXPORTER_LOGGERS` at ERROR. Errors and
    every other warning pass."""
    loggers = [logging.getLogger(n) for n in EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=r"The tensor attributes .* were assigned during export",
                                category=UserWarning)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def export_executorch(model: LoadedModel, precision: Precision = Precision.FP32) -> ExecuTorchProgram:
    """The model as an XNNPACK-delegated ExecuTorch program; :class:`UnsupportedModel` when it cannot be one."""
    from edge_lstm import registry

    fmt = registry.fmt("executorch")
    if precision not in fmt.precisions:
        raise UnsupportedModel(f"ExecuTorch export has no precision {precision.value}: {fmt.why_not}.",
                               "Use --precision fp32 for executorch, or --format tflite/onnx for 8-bit weights.")
    fmt.require()
    from edge_lstm import sources

    if isinstance(model, sources.OnnxModel):
        raise UnsupportedModel("ExecuTorch exports a PyTorch module; this model is an ONNX file.",
                               "Export the PyTorch model (an edge-lstm checkpoint or a torch.export .pt2 file) "
                               "instead; torch.export does not take TorchScript either.")
    import torch

    try:
        with exporter_quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
    except Exception as e:  # installed but broken (built for another torch, a missing .so): this artifact fails
        raise UnsupportedModel(f"ExecuTorch is installed but does not import: {' '.join(str(e).split())[:300]}",
                               f"Reinstall it ({fmt.install}, with torch {torch.__version__.split('+')[0]}), "
                               "or leave --format executorch out.") from e

    args = tuple(torch.zeros(t.concrete(1), dtype=torch.int64 if t.dtype == "int64" else torch.float32)
                 for t in model.inputs.inputs)
    names = io_names_tensor(model.inputs.names, model.output_names)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), exporter_quiet():
            ep = torch.export.export(model.module, args, strict=False)
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                               constant_methods={IO_METHOD: names})
            data = bytes(edge.to_executorch().buffer)
    except Exception as e:  # the exporter's own message says which op or construct it refused
        raise UnsupportedModel(f"ExecuTorch's exporter refused the model: {' '.join(str(e).split())[:400]}",
                               "Export it to --format onnx or tflite instead.") from e
    elapsed = time.perf_counter() - t0
    params = sum(int(p.numel()) for p in model.module.parameters()) * 4
    notes = [f"exported by ExecuTorch (torch.export + XNNPACK partitioner) in {elapsed:.1f} s; the recurrent "
             f"layers are decomposed per time step, so the file is {len(data) / max(params, 1):.1f}x the float "
             f"parameter bytes ({len(data):,} vs {params:,})"]
    return ExecuTorchProgram(data, elapsed, notes)
