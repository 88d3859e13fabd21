"""The value every quantizer returns: the artifact's bytes and what was done to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_lstm.spec import Precision


@dataclass(frozen=True)
class QuantizedArtifact:
    """A quantized (or half-precision) model, ready to be written by the pipeline.

    ``notes`` are human-readable lines for the report: which layers stayed float and
    why, which runtime fallbacks apply. ``float_layers`` names the weight-carrying
    nodes/ops that were left in float32. ``io_quant`` maps each integer input or
    output name to ``{"dtype", "scale", "zero_point"}``; it is empty when the
    artifact takes and returns float32.
    """

    data: bytes
    precision: Precision
    notes: list[str] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)
    io_quant: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """File size in bytes."""
        return len(self.data)
