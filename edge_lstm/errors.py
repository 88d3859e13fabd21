"""Errors that edge-lstm raises for users, each with an exit code and a hint.

The CLI maps every :class:`EdgeLstmError` to its ``exit_code`` and prints one
readable message (no traceback unless ``--debug``). Exit code 1 is reserved for
internal bugs: anything that is not an ``EdgeLstmError``.
"""

from __future__ import annotations


class EdgeLstmError(Exception):
    """Base class: a user-facing failure with an exit code and a hint."""

    exit_code: int = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """One readable message: what failed, then what to do."""
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"

    def __str__(self) -> str:
        return self.render()


class UsageError(EdgeLstmError):
    """Bad invocation or unreadable input (exit code 2)."""

    exit_code = 2


class InputFileError(UsageError):
    """A file that is missing, unreadable, truncated or of the wrong kind."""


class ShapeError(UsageError):
    """An input shape that is malformed or that the model rejects."""


class DataError(UsageError):
    """Data (``--data``, ``--calib``) that is malformed, has NaN, or does not fit the model."""


class OutputExistsError(UsageError):
    """An output that exists and would be overwritten without ``--force``."""


class ValidationFailed(EdgeLstmError):
    """An artifact broke its numerical tolerance (exit code 3)."""

    exit_code = 3

    def __init__(self, message: str, table: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.table = table

    def render(self) -> str:
        """The message, then the table of every failure."""
        body = self.message + (f"\n{self.table}" if self.table else "")
        return body if not self.hint else f"{body}\nHint: {self.hint}"


class BudgetExceeded(EdgeLstmError):
    """An artifact does not fit the target device's flash or RAM budget (exit code 4)."""

    exit_code = 4


class UnsupportedModel(EdgeLstmError):
    """The model uses a layer or op that cannot be exported (exit code 5)."""

    exit_code = 5


class UnsupportedOp(UnsupportedModel):
    """An ONNX op with no lowering in the op table; names the node, the op and the supported set."""

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

    exit_code = 6


class TrainingDiverged(UsageError):
    """The training loss became NaN or infinite (exit code 2): the learning rate or clipping needs changing."""
