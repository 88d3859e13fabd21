"""What a lowering returns: the TFLite flatbuffer and what was done to get it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoweredTFLite:
    """A TFLite model lowered from ONNX, with what was done to get it."""

    data: bytes  #: the .tflite flatbuffer
    lowering: str  #: "fused", "loop", "unrolled", or e.g. "fused+loop" when layers differ
    notes: list[str] = field(default_factory=list)  #: human-readable remarks (fallbacks, state handling)
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)
    streaming: bool = False
    variable_state: bool = False  #: state persists across invoke() in variable tensors
    requested: str = ""  #: the lowering asked for ("auto", "fused", ...)
    reason: str = ""  #: why this lowering was used (for the report)

    @property
    def size(self) -> int:
        """File size in bytes."""
        return len(self.data)
