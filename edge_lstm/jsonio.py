"""Strict JSON for machines: no ``NaN`` or ``Infinity`` ever, and a clean stdout under ``--json``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no strict
parser accepts. :func:`dumps` writes ``allow_nan=False`` JSON: a non-finite
number becomes ``null`` and the dict holding it gains
``"non_finite": {"<key>": "inf"}`` saying what it was.

:func:`json_stdout` makes ``--json`` output exactly one JSON object on stdout:
while a command runs, anything else written to stdout (a library's print, a
model's TorchScript ``print``) goes to stderr; the payload (or, on failure,
the ``{"error": ...}`` object) is printed at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_lstm.errors import EdgeLstmError

_state: dict[str, Any] = {"capturing": False, "pending": None, "result": None}


def clean(value: Any) -> Any:
    """A copy of ``value`` with every non-finite float replaced by None and noted in its dict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        notes: dict[str, str] = {}
        for k, v in value.items():
            out[k] = clean(v)
            notes.update(_notes(str(k), v))
        if notes:
            out["non_finite"] = {**(out.get("non_finite") or {}), **notes}
        return out
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalars
        return clean(value.item())
    return value


def _notes(key: str, v: Any) -> dict[str, str]:
    if isinstance(v, float) and not math.isfinite(v):
        return {key: repr(v)}
    if isinstance(v, (list, tuple)):
        return {f"{key}[{i}]": repr(x) for i, x in enumerate(v) if isinstance(x, float) and not math.isfinite(x)}
    return {}


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON text (see the module docstring)."""
    return json.dumps(clean(value), indent=indent, allow_nan=False, default=_default)


def _default(o: Any) -> Any:
    if hasattr(o, "item") and hasattr(o, "dtype"):
        return clean(o.item())
    if hasattr(o, "tolist"):
        return clean(o.tolist())
    return str(o)


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON refusing ``NaN``/``Infinity`` (``ValueError``), as other tools' parsers do."""
    def reject(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def emit(payload: Any, indent: int | None = 2) -> None:
    """Print ``payload`` as strict JSON on stdout (at the end of the command under :func:`json_stdout`)."""
    if _state["capturing"]:
        _state["pending"] = (payload, indent)
    else:
        print(dumps(payload, indent))


@contextlib.contextmanager
def json_stdout() -> Iterator[None]:
    """Route stdout to stderr while the command runs; then print the one pending payload on the real stdout.

    On an exception the pending payload is not printed on its own: the caller prints the error object
    (:func:`emit_error`), which carries it as ``"result"`` (a profile report whose budget check then failed).
    """
    real = sys.stdout
    saved_fd = None
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if real.fileno() == 1:
            real.flush()
            saved_fd = os.dup(1)
            os.dup2(2, 1)
    sys.stdout = sys.stderr
    _state.update(capturing=True, pending=None, result=None)
    ok = False
    try:
        yield
        ok = True
    finally:
        _state["capturing"] = False
        pending, _state["pending"] = _state["pending"], None
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        sys.stdout = real
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
        if ok and pending is not None:
            print(dumps(pending[0], pending[1]), file=real, flush=True)
        elif pending is not None:
            _state["result"] = pending[0]


def emit_failure(e: EdgeLstmError) -> None:
    """:func:`emit_error` for an edge-lstm error: its exit code, kind, whole message (a failure table
    included) and hint. Both command lines (``edge-lstm`` and the device-side one) report errors through it."""
    text, hint = e.render(), e.hint
    tail = f"\nHint: {hint}"
    emit_error(e.exit_code, e.kind, text[: -len(tail)] if hint and text.endswith(tail) else text, hint)


def emit_error(code: int, kind: str, message: str, hint: str | None) -> None:
    """Print the ``{"error": {"code", "kind", "message", "hint"}}`` object on stdout."""
    body: dict[str, Any] = {"error": {"code": code, "kind": kind, "message": message, "hint": hint}}
    result, _state["result"] = _state.get("result"), None
    if result is not None:
        body["result"] = result
    print(dumps(body), flush=True)
