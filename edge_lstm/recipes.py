"""Export recipes: TOML data (``export/*.toml``) -> a validated :class:`Recipe`.

A recipe names the formats, precisions and lowering to export, the validation
sample counts, and the tolerance of each precision. ``inherit`` takes every
field of another recipe and overrides what it sets.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from edge_lstm.errors import UsageError
from edge_lstm.resources import data_dir
from edge_lstm.spec import Precision, Tolerance

FORMATS = ("onnx", "tflite")
#: which precisions each format can hold; ONNX Runtime's static quantizer has no LSTM entry, so no ONNX int8
SUPPORTED: dict[str, tuple[Precision, ...]] = {
    "onnx": (Precision.FP32, Precision.FP16, Precision.DYNAMIC_INT8),
    "tflite": (Precision.FP32, Precision.FP16, Precision.DYNAMIC_INT8, Precision.INT8),
}
#: TFLite lowerings, the one list every module reads (``edge_lstm.lower.tflite.LOWERINGS`` is this object):
#: "auto" picks fused or loop (see ``edge_lstm.lower.tflite.auto``), "fused" is one TFLite LSTM op per layer,
#: "loop" a WHILE loop over time steps, "unrolled" every time step written out (only when asked)
LOWERINGS = ("auto", "fused", "loop", "unrolled")


@dataclass(frozen=True)
class Recipe:
    """What to export and how strictly to validate it."""

    name: str
    description: str
    formats: tuple[str, ...]
    precisions: tuple[Precision, ...]
    lowering: str
    tolerances: dict[Precision, Tolerance]
    random_samples: int = 16
    max_samples: int = 128
    seed: int = 0
    calibration_samples: int = 200
    min_calibration_samples: int = 16
    calibration_margin: float = 0.0  # also calibrate on each window shifted by ± this (normalised units)
    long_sequence_steps: int = 256
    long_sequence_factor: float = 10.0

    def tolerance(self, precision: Precision, steps: int) -> Tolerance:
        """The tolerance for ``precision``, loosened for long float32 sequences."""
        tol = self.tolerances[precision]
        if precision is Precision.FP32 and steps > self.long_sequence_steps:
            f = self.long_sequence_factor
            tol = replace(tol, atol=tol.atol * f, rtol=tol.rtol * f)
        return tol

    def with_overrides(self, **kw: Any) -> Recipe:
        """A copy with the CLI's explicit choices applied (``None`` keeps the recipe's)."""
        given = {k: v for k, v in kw.items() if v not in (None, (), [])}
        if "formats" in given:
            given["formats"] = check_formats(given["formats"])
        if "precisions" in given:
            given["precisions"] = _unique(parse_precision(p) for p in given["precisions"])
        if "lowering" in given:
            given["lowering"] = check_lowering(given["lowering"])
        return replace(self, **given)


def list_recipes() -> list[str]:
    """Names of the bundled recipes."""
    return sorted(p.stem for p in data_dir("export").glob("*.toml"))


def load_recipe(name_or_path: str | Path = "default") -> Recipe:
    """Load a bundled recipe by name, or a user's TOML file by path."""
    raw = _read(name_or_path)
    return _build(raw, str(name_or_path))


def _read(name_or_path: str | Path, depth: int = 0) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix:
        path = data_dir("export") / f"{name_or_path}.toml"
        if not path.is_file():
            raise UsageError(f"Unknown recipe '{name_or_path}'.", f"Bundled recipes: {', '.join(list_recipes())}.")
    if not path.is_file():
        raise UsageError(f"Recipe file '{path}' does not exist.")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"Recipe '{path}' is not valid TOML: {e}.") from e
    parent = raw.pop("inherit", None)
    if parent and depth < 4:
        base = _read(str(parent), depth + 1)
        tol = {**base.get("tolerance", {}), **raw.get("tolerance", {})}
        val = {**base.get("validation", {}), **raw.get("validation", {})}
        raw = {**base, **raw, "tolerance": tol, "validation": val}
    return raw


def _build(raw: dict[str, Any], where: str) -> Recipe:
    try:
        tolerances = {parse_precision(k): _tolerance(v, where) for k, v in raw.get("tolerance", {}).items()}
        missing = [p.value for p in Precision if p not in tolerances]
        if missing:
            raise UsageError(f"Recipe '{where}' has no tolerance for {', '.join(missing)}.")
        val = _validation(raw.get("validation", {}), where)
        return Recipe(
            name=str(raw["name"]),
            description=str(raw.get("description", "")),
            formats=check_formats(raw["formats"]),
            precisions=_unique(parse_precision(p) for p in raw["precisions"]),
            lowering=check_lowering(raw.get("lowering", "auto")),
            tolerances=tolerances,
            **val,
        )
    except KeyError as e:
        raise UsageError(f"Recipe '{where}' is missing the field {e}.") from e


_VALIDATION_KEYS = {f.name: f.type for f in fields(Recipe)
                    if f.name not in ("name", "description", "formats", "precisions", "lowering", "tolerances")}


def _validation(d: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(d) - set(_VALIDATION_KEYS)
    if unknown:
        raise UsageError(f"Recipe '{where}': unknown [validation] key(s) {sorted(unknown)}; "
                         f"known: {sorted(_VALIDATION_KEYS)}.")
    for k, v in d.items():
        want_int = _VALIDATION_KEYS[k] in ("int", int)
        ok = isinstance(v, int) if want_int else isinstance(v, (int, float))
        if not ok or isinstance(v, bool) or v < 0:
            raise UsageError(f"Recipe '{where}': [validation] {k} = {v!r} must be a non-negative "
                             f"{'integer' if want_int else 'number'}.")
    return d


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _tolerance(d: dict[str, Any], where: str) -> Tolerance:
    known = {f.name for f in fields(Tolerance)}
    unknown = set(d) - known
    if unknown:
        raise UsageError(f"Recipe '{where}': unknown tolerance key(s) {sorted(unknown)}; known: {sorted(known)}.")
    for k, v in d.items():
        if k == "per_output":
            if not isinstance(v, dict) or not all(isinstance(o, dict) for o in v.values()):
                raise UsageError(f"Recipe '{where}': per_output must map output names to tables of tolerances.")
            for over in v.values():
                _tolerance(over, where)
        elif k == "elementwise":
            if not isinstance(v, bool):
                raise UsageError(f"Recipe '{where}': elementwise = {v!r} must be true or false.")
        elif v is not None and not _number(v):
            raise UsageError(f"Recipe '{where}': tolerance {k} = {v!r} must be a number.")
    return Tolerance(**d)


def _unique(items: Iterable[Precision]) -> tuple[Precision, ...]:
    return tuple(dict.fromkeys(items))


def parse_precision(text: str | Precision) -> Precision:
    """Parse a precision name, with a clear error listing the accepted ones."""
    if isinstance(text, Precision):
        return text
    try:
        return Precision(str(text).lower())
    except ValueError:
        raise UsageError(
            f"Unknown precision '{text}'.", f"Accepted: {', '.join(p.value for p in Precision)}."
        ) from None


def check_formats(items: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate format names, keeping order and dropping repeats."""
    out: list[str] = []
    for f in items:
        if f not in FORMATS:
            raise UsageError(f"Unknown format '{f}'.", f"Accepted: {', '.join(FORMATS)}.")
        if f not in out:
            out.append(f)
    return tuple(out)


def check_lowering(text: str) -> str:
    """Validate a TFLite lowering name."""
    if text not in LOWERINGS:
        raise UsageError(f"Unknown lowering '{text}'.", f"Accepted: {', '.join(LOWERINGS)}.")
    return text
