"""The cost types: :class:`Cost` of an artifact and each layer's :class:`LayerCost`, and bytes per weight.

Apart from the counting (``cost.py`` for ONNX, ``cost_tflite.py`` for TFLite), so that both counters and everything
that reads a cost import the types without importing each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: bytes per weight element for each precision (int8 kinds also store small scale tensors)
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "dynamic-int8": 1, "int8": 1, "int16x8": 1}


@dataclass(frozen=True)
class LayerCost:
    """One node's share: parameters, MACs, elementwise operations, and whether it recurs over time."""

    name: str
    op: str
    params: int
    macs: int
    elementwise_ops: int = 0
    recurrent: bool = False


@dataclass(frozen=True)
class Cost:
    """Parameters, MACs per inference and per time step, and weight bytes of one artifact."""

    format: str  # "onnx" | "tflite"
    precision: str
    params: int
    weight_bytes: int  # as stored in the file
    macs: int
    macs_per_step: int
    elementwise_ops: int
    time_steps: int
    layers: tuple[LayerCost, ...] = field(default_factory=tuple)

    @property
    def weight_bytes_by_precision(self) -> dict[str, int]:
        """Bytes the parameters take at each precision (scales of int8 kinds not included)."""
        return {p: self.params * b for p, b in BYTES_PER_WEIGHT.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        d["weight_bytes_by_precision"] = self.weight_bytes_by_precision
        return d
