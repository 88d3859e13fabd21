"""Validating data files against JSON Schemas (:mod:`jsonschema`), with messages people can act on.

Recipes, targets, checkpoints, reports and device replies are all checked at
the boundary with a schema. :func:`check` runs the validator and turns its
first error into one sentence naming the field (``tolerance.fp16.atol``), the
value given and what is accepted; an unknown key gets a "did you mean".
Schemas say nothing about NaN or infinity (JSON has neither, TOML has both),
so :func:`first_non_finite` is checked first.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

import jsonschema

from edge_lstm.errors import EdgeLstmError, InputFileError

Fail = Callable[[str], EdgeLstmError]


def field_path(path: Any) -> str:
    """``tolerance.fp16.atol`` or ``artifacts[0].size`` from a jsonschema path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(word: str, known: Any) -> str:
    """`` (did you mean 'x'?)`` when a known word is close to ``word``."""
    close = difflib.get_close_matches(word, [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe(error: jsonschema.ValidationError, labels: dict[str, str] | None = None) -> str:
    """One sentence for a schema error; ``labels`` maps a field path to what it must be, in words."""
    path = field_path(error.absolute_path)
    where = path or "the top level"
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        listed = ", ".join(f"'{k}'{did_you_mean(k, known)}" for k in extra)
        return f"unknown key(s) in {where}: {listed}; known: {', '.join(known) or 'none'}"
    if error.validator == "required":
        key = error.message.split(" is a required")[0].strip("'")
        return f"missing the field '{path + '.' if path else ''}{key}'"
    value = _short(error.instance)
    if labels:
        for pattern, words in labels.items():
            if path == pattern or path.endswith("." + pattern):
                return f"{path} = {value} must be {words}"
    if error.validator == "enum":
        hint = did_you_mean(str(error.instance), error.validator_value) if isinstance(error.instance, str) else ""
        return f"{path} = {value} is not accepted{hint}; accepted: {', '.join(map(str, error.validator_value))}"
    msg = error.message if len(error.message) < 160 else f"it fails the '{error.validator}' rule"
    return f"{path or 'the value'} = {value}: {msg}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def first_non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinite float inside ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "the value"
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, (list, tuple)) else ()
    for k, v in items:
        sub = f"{path}[{k}]" if isinstance(k, int) else (f"{path}.{k}" if path else str(k))
        found = first_non_finite(v, sub)
        if found:
            return found
    return None


def check(value: Any, schema: dict[str, Any], fail: Fail, labels: dict[str, str] | None = None,
          finite: bool = True) -> None:
    """Raise ``fail(sentence)`` for the first problem of ``value`` against ``schema`` (NaN/inf first)."""
    if finite:
        bad = first_non_finite(value)
        if bad:
            raise fail(f"{bad} is not a finite number (NaN and infinity are not accepted)")
    try:
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
    except RecursionError as e:
        raise fail("it is nested too deeply") from e
    if errors:
        best = min(errors, key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
        while best.context:  # oneOf/anyOf: the alternative that got furthest says what is wrong
            if all(e.validator == "type" and not e.relative_path for e in best.context):
                kinds = " or ".join(str(e.validator_value) for e in best.context)
                raise fail(f"{field_path(best.absolute_path) or 'the value'} = {_short(best.instance)} must be "
                           f"{kinds}")
            best = max(best.context, key=lambda e: (len(list(e.absolute_path)), e.validator not in ("type",)))
        raise fail(describe(best, labels))


def file_error(where: str, hint: str | None = None) -> Fail:
    """A ``fail`` for :func:`check` that raises :class:`InputFileError` about file ``where``."""
    return lambda sentence: InputFileError(f"{where}: {sentence}.", hint)
