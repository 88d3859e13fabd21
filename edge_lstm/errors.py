"""Errors that edge-lstm raises for users, each with an exit code and a hint.

The CLI maps every :class:`EdgeLstmError` to its ``exit_code`` and prints one
readable message (no traceback unless ``--debug``). Exit code 1 is reserved for
internal bugs: anything that is not an ``EdgeLstmError``.
"""

from __future__ import annotations


class EdgeLstmError(Exception):
    """Base class: a user-facing failure with an exit code and a hint."""

    exit_code: int = 2
    kind: str = "error"  # stable, machine-readable: the "kind" of the --json error object

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """One readable message: what failed, then what to do."""
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"

    def __str__(self) -> str:
        return self.render()

    def to_dict(self) -> dict[str, object]:
        """The ``{"error": {...}}`` object that ``--json`` prints on failure."""
        return {"error": {"code": self.exit_code, "kind": self.kind, "message": self.message, "hint": self.hint}}


class UsageError(EdgeLstmError):
    """Bad invocation or unreadable input (exit code 2)."""

    kind = "usage"

    exit_code = 2


class InputFileError(UsageError):
    """A file that is missing, unreadable, truncated or of the wrong kind."""

    kind = "input-file"


class RecipeError(UsageError):
    """A recipe that cannot be used: not valid TOML, a field out of range, an `inherit` chain that is cyclic or
    too deep, a missing tolerance."""

    kind = "recipe"


class TargetError(InputFileError):
    """A device target file that cannot be used: missing, not valid TOML, a field out of range or inconsistent."""

    kind = "target"


class OptionsError(UsageError):
    """Export options that do not fit together (a precision no asked-for format holds, --io int8 without int8)."""

    kind = "options"


class RuntimeUnavailable(UsageError):
    """A runtime, or the exporter of a format, whose package is not installed; the hint says how to install it."""

    kind = "missing-runtime"


class ShapeError(UsageError):
    """An input shape that is malformed or that the model rejects."""

    kind = "shape"


class DataError(UsageError):
    """Data (``--data``, ``--calib``) that is malformed, has NaN, or does not fit the model."""

    kind = "data"


class OutputExistsError(UsageError):
    """An output that exists and would be overwritten without ``--force``."""

    kind = "output-exists"


class OutputError(UsageError):
    """An output that cannot be written: full disk, read-only file system, I/O error, unwritable directory."""

    kind = "output"


class ValidationFailed(EdgeLstmError):
    """An artifact broke its numerical tolerance (exit code 3)."""

    kind = "validation"

    exit_code = 3

    def __init__(self, message: str, table: str = "", hint: str | None = None, advice: str = "") -> None:
        super().__init__(message, " ".join(p for p in (hint, advice) if p) or None)
        self.table = table
        self.advice = advice  #: what to try instead, kept when a caller replaces the hint

    def render(self) -> str:
        """The message, then the table of every failure."""
        body = self.message + (f"\n{self.table}" if self.table else "")
        return body if not self.hint else f"{body}\nHint: {self.hint}"


class BudgetExceeded(EdgeLstmError):
    """An artifact does not fit the target device's flash or RAM budget (exit code 4)."""

    kind = "budget"

    exit_code = 4


class UnsupportedModel(EdgeLstmError):
    """The model uses a layer or op that cannot be exported (exit code 5)."""

    kind = "unsupported-model"

    exit_code = 5


class UnsupportedOp(UnsupportedModel):
    """An ONNX op with no lowering in the op table; names the node, the op and the supported set."""

    kind = "unsupported-op"

    def __init__(self, node: str, op: str, supported: list[str] | tuple[str, ...], target: str) -> None:
        message = (
            f"Node '{node}' uses ONNX op '{op}', which the {target} lowering does not support."
        )
        hint = f"Supported ops: {', '.join(sorted(supported))}."
        super().__init__(message, hint)
        self.node = node
        self.op = op


class RemoteError(EdgeLstmError):
    """A device run over SSH failed: unreachable host, authentication, missing runtime, timeout."""

    kind = "remote"

    exit_code = 6


class MissingRuntimeError(RemoteError):
    """The device lacks the runtime an artifact needs (exit code 6)."""


class EmulationError(EdgeLstmError):
    """The emulated device could not be built, started or stopped: not root, binfmt, a corrupt cache, sshd
    (exit code 7)."""

    exit_code = 7


class TrainingDiverged(UsageError):
    """The training loss became NaN or infinite (exit code 2): the learning rate or clipping needs changing."""
