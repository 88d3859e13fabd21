"""ONNX -> TFLite flatbuffer, written directly with the TFLite schema (no TensorFlow).

:func:`lower` prepares the ONNX graph (batch fixed to 1, shape subgraphs folded),
lowers every node through the op table in :mod:`.ops` (recurrent layers through
:mod:`.lstm`) and packs the result with :mod:`.writer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_lstm.errors import UsageError

if TYPE_CHECKING:
    import onnx

LOWERINGS = ("fused", "unrolled")


@dataclass(frozen=True)
class LoweredTFLite:
    """A TFLite model lowered from ONNX, with what was done to get it."""

    data: bytes  #: the .tflite flatbuffer
    lowering: str  #: "fused", "unrolled", or "fused+unrolled" when layers differ
    notes: list[str] = field(default_factory=list)  #: human-readable remarks (fallbacks, state handling)
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)
    streaming: bool = False
    variable_state: bool = False  #: state persists across invoke() in variable tensors

    @property
    def size(self) -> int:
        """File size in bytes."""
        return len(self.data)


def lower(proto: onnx.ModelProto, lowering: str = "fused", streaming: bool = False) -> LoweredTFLite:
    """Lower an ONNX model (from :func:`edge_lstm.capture.to_onnx`) to a TFLite flatbuffer.

    ``lowering`` is "fused" (one ``UNIDIRECTIONAL_SEQUENCE_LSTM`` per layer and
    direction; GRU and LSTMs whose state is explicit fall back to unrolled, with a
    note) or "unrolled" (plain XNNPACK-friendly ops). ``streaming=True`` takes the
    one-timestep model from :func:`edge_lstm.capture.streaming_model`; with
    "fused" its state moves into variable tensors, so the TFLite model maps
    ``x -> y`` and keeps state across ``invoke()`` until reset.
    """
    from edge_lstm.lower.tflite.build import build

    if lowering not in LOWERINGS:
        raise UsageError(f"Unknown TFLite lowering '{lowering}'.", f"Use one of: {', '.join(LOWERINGS)}.")
    return build(proto, lowering, streaming)


__all__ = ["LOWERINGS", "LoweredTFLite", "lower"]
