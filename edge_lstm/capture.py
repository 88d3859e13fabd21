"""Capture a :class:`LoadedModel` as ONNX: the canonical graph every later stage reads.

``nn.LSTM`` and ``nn.GRU`` stay ONNX ``LSTM``/``GRU`` nodes, constants are folded,
the graph passes ``onnx.checker`` with full shape inference, and the batch axis
is dynamic where the model's spec marks it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Any

from edge_lstm.errors import UnsupportedModel
from edge_lstm.load import LoadedModel
from edge_lstm.spec import InputSpec, TensorSpec

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from edge_lstm.streaming import StreamingModel

OPSET = 17


def to_onnx(model: LoadedModel | StreamingModel, dynamic_batch: bool = True) -> onnx.ModelProto:
    """Export the whole-window (stateless or explicit-state) model to ONNX; a one-step model is its graph."""
    from edge_lstm.streaming import StreamingModel

    if isinstance(model, StreamingModel):
        return model.proto
    return _export(model.module, model.inputs, list(model.outputs), dynamic_batch)


def streaming_model(model: LoadedModel, proto: onnx.ModelProto | None = None) -> StreamingModel:
    """The one-timestep model, derived from the captured whole-window graph (:mod:`edge_lstm.streaming`).

    Each recurrent layer's state becomes an explicit input and output; a model whose
    ``forward`` already takes and returns its state keeps those. ``proto`` is the
    captured graph when the caller has it. A model whose output needs the whole
    window raises :class:`UnsupportedModel` with the node and the reason.
    """
    from edge_lstm import streaming

    x = model.inputs.inputs[0]
    pairs = list(zip(model.inputs.names[1:], model.output_names[1:], strict=False)) if model.has_state_io else []
    return streaming.derive(proto if proto is not None else to_onnx(model), x.name, x.time_axis, pairs)


def _export(module: nn.Module, inputs: InputSpec, outputs: list[TensorSpec], dynamic_batch: bool) -> onnx.ModelProto:
    import onnx
    import torch

    from edge_lstm import projection

    args = tuple(torch.zeros(*t.concrete(1), dtype=getattr(torch, t.dtype, torch.float32)) for t in inputs.inputs)
    dynamic_axes: dict[str, dict[int, str]] = {}
    if dynamic_batch:
        for t in (*inputs.inputs, *outputs):
            axes = t.dynamic_axes
            if axes:
                dynamic_axes[t.name] = axes
    buf = io.BytesIO()
    try:  # the exporter prints graph dumps to stdout on failure: keep --json output clean
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_native_stderr(), \
                projection.projection_symbolic(OPSET):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, buf,  # type: ignore[arg-type]  # file-like objects are accepted
                input_names=inputs.names, output_names=[o.name for o in outputs],
                dynamic_axes=dynamic_axes or None, opset_version=OPSET,
                do_constant_folding=True, dynamo=False,
            )
    except Exception as e:  # the exporter's message names the unsupported operator
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModel(
            f"PyTorch's ONNX exporter could not capture the model: {first}",
            "edge-lstm exports LSTM/GRU/RNN layers with Linear, convolution, normalisation and activation heads; "
            "replace custom ops or loops over time with nn.LSTM/nn.GRU/nn.RNN.",
        ) from e
    proto = onnx.load_from_string(buf.getvalue())
    if projection.has_placeholders(proto):  # proj_size LSTMs: one Scan per layer direction, weights once
        proto = projection.expand_projections(proto)
    proto.producer_name = "edge-lstm"
    from edge_lstm.checks import check_layers

    check_layers(proto, inputs.inputs)  # a wrong --input-shape is the user's (exit 2), before the checker's verdict
    check(proto)
    return proto


@contextlib.contextmanager
def _quiet_native_stderr() -> Any:
    """Silence the exporter's C++ log lines (written to file descriptor 2, past Python's warnings filter).

    They are notes to PyTorch developers (a shape inference it cannot do for
    edge-lstm's own placeholder op, constant-folding limits), not to users; errors
    still arrive as Python exceptions.
    """
    import os
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check(proto: onnx.ModelProto) -> None:
    """Run ``onnx.checker`` with full shape inference; a graph that fails it is refused (exit 5), naming the node.

    Nothing downstream may see an invalid graph: ONNX Runtime and the lowering
    would fail on it later with a message about something else.
    """
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = " ".join(str(e).split())[:400]
        raise UnsupportedModel(
            f"The ONNX graph captured from the model is invalid (onnx.checker: {first}).",
            "This is an exporter bug for this model: please report it with the model; exporting a module whose "
            "forward returns only tensors computed from its inputs usually avoids it.",
        ) from e


def op_types(proto: onnx.ModelProto) -> list[str]:
    """The op types in graph order."""
    return [n.op_type for n in proto.graph.node]


def onnx_io(proto: onnx.ModelProto) -> dict[str, Any]:
    """Input and output names with their shapes (dim names for dynamic axes)."""

    def dims(vi: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    inits = {i.name for i in proto.graph.initializer}
    return {
        "inputs": {i.name: dims(i) for i in proto.graph.input if i.name not in inits},
        "outputs": {o.name: dims(o) for o in proto.graph.output},
    }
