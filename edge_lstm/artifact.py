"""One exported file, how it was made, how it validated, and why it failed when it did."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm.reports import ArtifactEntry, LoweringChoice, ValidationEntry

if TYPE_CHECKING:
    from edge_lstm.spec import Precision
    from edge_lstm.validate import ArtifactValidation


@dataclass(frozen=True)
class Failure:
    """An artifact that could not be built, or that a runtime could not open and run (or crashed on)."""

    stage: str  #: "build" (lowering or quantization refused) or "run" (the runtime failed or died)
    reason: str
    runtime: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"stage": self.stage, "runtime": self.runtime, "reason": self.reason}


@dataclass
class Artifact:
    """One exported file and its validation."""

    filename: str
    format: str
    precision: Precision
    lowering: str | None
    streaming: bool
    data: bytes
    validations: list[ArtifactValidation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    io_quant: dict[str, Any] = field(default_factory=dict)
    float_layers: list[str] = field(default_factory=list)  # layers a quantized artifact keeps in float, and why
    calibration: dict[str, Any] | None = None
    failures: list[Failure] = field(default_factory=list)
    lowering_reason: str | None = None  #: why this TFLite lowering was used (asked for, or what auto measured)
    lowering_choice: LoweringChoice | None = None  #: the measured auto lowering's candidates, for a --target

    @property
    def built(self) -> bool:
        """True when the file exists (it was not refused while lowering or quantizing)."""
        return bool(self.data)

    @property
    def passed(self) -> bool:
        """True when it was built, every runtime ran it, and every validation passed."""
        return not self.failures and all(v.passed for v in self.validations)

    def describe_failure(self) -> str:
        """One line per failure: what, where, why (for the exit-5 message)."""
        lines = []
        for f in self.failures:
            what = f"{self.format}, {self.precision.value}" + (f", {self.lowering} lowering" if self.lowering else "")
            what += ", streaming" if self.streaming else ""
            where = f"crashed or failed on {f.runtime}" if f.stage == "run" else "could not be built"
            lines.append(f"{self.filename} ({what}) {where}: {' '.join(f.reason.split())}")
        return "\n".join(lines)

    def entry(self, out_dir: Path) -> ArtifactEntry:
        """The artifact as the report lists it (published in ``out_dir``)."""
        return ArtifactEntry(
            path=str(out_dir / self.filename) if self.built else None,
            file=self.filename,
            format=self.format,
            precision=self.precision.value,
            lowering=self.lowering,
            lowering_reason=self.lowering_reason,
            streaming=self.streaming,
            size_bytes=len(self.data),
            sha256=hashlib.sha256(self.data).hexdigest() if self.built else None,
            passed=self.passed,
            validation=[ValidationEntry.from_dict(v.to_dict()) for v in self.validations],
            notes=self.notes,
            io_quant=self.io_quant or None,
            float_layers=self.float_layers,
            calibration=self.calibration,
            failures=[f.to_dict() for f in self.failures],
            lowering_choice=self.lowering_choice,
        )

    def to_dict(self, out_dir: Path) -> dict[str, Any]:
        """The artifact's entry in ``report.json``."""
        return self.entry(out_dir).to_dict()
