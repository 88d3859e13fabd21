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

from edge_lstm import registry, schema
from edge_lstm.errors import RecipeError, UsageError
from edge_lstm.registry import FORMATS, LOWERINGS, SUPPORTED
from edge_lstm.resources import data_dir
from edge_lstm.spec import Precision, Tolerance

__all__ = ["FORMATS", "LOWERINGS", "SUPPORTED", "Recipe", "list_recipes", "load_recipe"]  # the three: registry's


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
    """Load a bundled recipe by name, or a user's TOML file by path (validated: see :data:`SCHEMA`)."""
    raw, where = _read(name_or_path, ())
    schema.check(raw, {**SCHEMA, "required": ["name", "formats", "precisions"]}, _fail(where), LABELS)
    return _build(raw, where)


MAX_INHERIT = 8
#: numbers a recipe may set, from the fields of Recipe; a bound for each
_VALIDATION_RANGES: dict[str, dict[str, Any]] = {
    "random_samples": {"minimum": 1, "maximum": 100_000}, "max_samples": {"minimum": 1, "maximum": 100_000},
    "seed": {"minimum": 0, "maximum": 2**32 - 1}, "calibration_samples": {"minimum": 1, "maximum": 100_000},
    "min_calibration_samples": {"minimum": 1, "maximum": 100_000}, "calibration_margin": {"minimum": 0, "maximum": 10},
    "long_sequence_steps": {"minimum": 1, "maximum": 10_000_000}, "long_sequence_factor": {"minimum": 1,
                                                                                            "maximum": 1e6},
}
_TOLERANCE_RANGES: dict[str, dict[str, Any]] = {
    "atol": {"minimum": 0}, "rtol": {"minimum": 0}, "min_cosine": {"minimum": -1, "maximum": 1},
    "max_rel_l2": {"minimum": 0}, "min_psnr": {"minimum": -1000, "maximum": 1000}, "max_task_drop": {"minimum": 0},
}
_NAMED = ("name", "description", "formats", "precisions", "lowering", "tolerances")
_VALIDATION_KEYS = {f.name: f.type for f in fields(Recipe) if f.name not in _NAMED}


def _kind_schema(annotation: Any) -> dict[str, Any]:
    text = str(annotation)
    if "bool" in text:
        return {"type": "boolean"}
    if text in ("int", str(int)):
        return {"type": "integer"}
    if "float" in text or "int" in text:
        return {"type": "number"}
    return {}  # a field of another kind (added later): its own code checks it


def _tolerance_schema() -> dict[str, Any]:
    """Derived from the fields of :class:`Tolerance`, so a new field is accepted as soon as it exists."""
    props = {f.name: {**_kind_schema(f.type), **_TOLERANCE_RANGES.get(f.name, {})}
             for f in fields(Tolerance) if f.name != "per_output"}
    table = {"type": "object", "additionalProperties": False, "properties": props}
    if any(f.name == "per_output" for f in fields(Tolerance)):
        return {**table, "properties": {**props, "per_output": {"type": "object", "additionalProperties": table}}}
    return table


SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "description": {"type": "string", "maxLength": 1000},
        "inherit": {"type": "string", "minLength": 1},
        "formats": {"type": "array", "minItems": 1, "items": {"enum": list(FORMATS)}},
        "precisions": {"type": "array", "minItems": 1, "items": {"enum": [p.value for p in Precision]}},
        "lowering": {"enum": list(LOWERINGS)},
        "validation": {"type": "object", "additionalProperties": False, "properties": {
            k: {**_kind_schema(t), **_VALIDATION_RANGES.get(k, {"minimum": 0})} for k, t in _VALIDATION_KEYS.items()}},
        "tolerance": {"type": "object", "additionalProperties": False,
                      "properties": {p.value: _tolerance_schema() for p in Precision}},
    },
}


def _range_words(kind: dict[str, Any], bounds: dict[str, Any], signed: bool = False) -> str:
    if kind.get("type") == "boolean":
        return "true or false"
    noun = ("an integer" if signed else "a non-negative integer") if kind.get("type") == "integer" else (
        "a number" if signed else "a non-negative number")
    lo, hi = bounds.get("minimum"), bounds.get("maximum")
    return f"{noun} within [{lo}, {hi}]" if hi is not None else (f"{noun} >= {lo}" if lo is not None else noun)


LABELS = {
    **{k: _range_words(_kind_schema(t), _VALIDATION_RANGES.get(k, {"minimum": 0}))
       for k, t in _VALIDATION_KEYS.items()},
    **{f.name: _range_words(_kind_schema(f.type), _TOLERANCE_RANGES.get(f.name, {}), signed=True)
       for f in fields(Tolerance) if f.name != "per_output"},
}


def _fail(where: str) -> schema.Fail:
    def fail(sentence: str) -> RecipeError:
        sentence = sentence.replace("unknown key(s) in validation", "unknown [validation] key(s)")
        if "unknown key(s) in tolerance." in sentence:
            sentence = "unknown tolerance key(s) in " + sentence.split("unknown key(s) in ", 1)[1]
        return RecipeError(f"Recipe '{where}': {sentence}.", "See the bundled recipes under export/ for every field.")
    return fail


def _locate(name_or_path: str | Path, base: Path | None) -> Path:
    path = Path(name_or_path)
    if not path.suffix:
        path = data_dir("export") / f"{name_or_path}.toml"
        if not path.is_file():
            raise RecipeError(f"Unknown recipe '{name_or_path}'.", f"Bundled recipes: {', '.join(list_recipes())}.")
        return path
    if base is not None and not path.is_absolute() and (base / path).is_file():
        return base / path  # inherit = "base.toml" is found beside the recipe that names it
    if not path.is_file():
        raise RecipeError(f"Recipe file '{path}' does not exist.")
    return path


def _read(name_or_path: str | Path, chain: tuple[Path, ...], base: Path | None = None) -> tuple[dict[str, Any], str]:
    path = _locate(name_or_path, base)
    where = str(name_or_path) if not chain else str(path)
    resolved = path.resolve()
    if resolved in chain:
        names = " -> ".join(p.name for p in (*chain, resolved))
        raise RecipeError(f"Recipe '{where}' inherits from itself ({names}).", "Break the cycle of `inherit` keys.")
    if len(chain) >= MAX_INHERIT:
        raise RecipeError(f"Recipe '{where}': `inherit` goes {len(chain) + 1} levels deep; at most {MAX_INHERIT} "
                         "are accepted.", "Inherit from a recipe closer to the bundled ones.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError, RecursionError) as e:
        raise RecipeError(f"Recipe '{path}' is not valid TOML: {e}.") from e
    schema.check(raw, SCHEMA, _fail(str(path)), LABELS)
    parent = raw.pop("inherit", None)
    if parent:
        base_raw, _ = _read(str(parent), (*chain, resolved), path.parent)
        # per precision, key by key: `[tolerance.int8] max_task_drop = 0.01` tightens one gate and keeps the rest
        mine = raw.get("tolerance", {})
        tol = {p: {**base_raw.get("tolerance", {}).get(p, {}), **mine.get(p, {})}
               for p in {**base_raw.get("tolerance", {}), **mine}}
        val = {**base_raw.get("validation", {}), **raw.get("validation", {})}
        raw = {**base_raw, **raw, "tolerance": tol, "validation": val}
    return raw, where


def _build(raw: dict[str, Any], where: str) -> Recipe:
    tolerances = {parse_precision(k): Tolerance(**v) for k, v in raw.get("tolerance", {}).items()}
    missing = [p.value for p in Precision if p not in tolerances]
    if missing:
        raise RecipeError(f"Recipe '{where}' has no tolerance for {', '.join(missing)}.")
    val = dict(raw.get("validation", {}))
    if val.get("min_calibration_samples", 1) > val.get("calibration_samples", 200):
        raise RecipeError(f"Recipe '{where}': [validation] min_calibration_samples is larger than "
                          "calibration_samples.")
    return Recipe(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        formats=check_formats(raw["formats"]),
        precisions=_unique(parse_precision(p) for p in raw["precisions"]),
        lowering=check_lowering(raw.get("lowering", "auto")),
        tolerances=tolerances,
        **val,
    )


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
        registry.fmt(f)  # an unknown name is a UsageError listing the registry's formats
        if f not in out:
            out.append(f)
    return tuple(out)


def check_lowering(text: str) -> str:
    """Validate a TFLite lowering name."""
    if text not in LOWERINGS:
        raise UsageError(f"Unknown lowering '{text}'.", "Accepted: " + "; ".join(
            f"{k} ({v})" for k, v in registry.LOWERINGS_TABLE.items()) + ".")
    return text
