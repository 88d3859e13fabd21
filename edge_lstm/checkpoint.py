"""The schema of an edge-lstm checkpoint, checked before anything in it is used.

A checkpoint is a ``torch.save``d dict (loaded ``weights_only=True``). Its
fields decide what module is built and how data is normalised, so each is
validated here with :mod:`jsonschema` (types, ranges, lengths) and the error
names the field: ``config.dropout = 5 must be < 1``. Sizes are bounded so a
crafted checkpoint cannot make edge-lstm allocate a huge model, and every
number must be finite.
"""

from __future__ import annotations

import math
from typing import Any

from edge_lstm import archs, schema
from edge_lstm.errors import InputFileError

MAX_DIM = 1 << 24  # one axis of an input
MAX_ELEMENTS = 1 << 26  # one input window, batch 1
MAX_PARAMETERS = 1 << 28  # about 1 GiB of float32 weights

_INT = {"type": "integer"}
_SIZE = {"type": "integer", "minimum": 1, "maximum": 65_536}
#: a free-text label such as a CSV column header: never used in a path
_LABEL = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[^\x00-\x1f\x7f]+$"}
_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$"}
_DIM = {"oneOf": [{"type": "integer", "minimum": 1, "maximum": MAX_DIM},
                  {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,31}$"}]}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cell": {"enum": list(archs.CELLS)},
        "n_features": _SIZE,
        "hidden": {"type": "integer", "minimum": 1, "maximum": 16_384},
        "layers": {"type": "integer", "minimum": 1, "maximum": 64},
        "n_outputs": _SIZE,
        "bidirectional": {"type": "boolean"},
        "proj_size": {"type": "integer", "minimum": 0, "maximum": 16_384},
        "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "batch_first": {"type": "boolean"},
        "layernorm": {"type": "boolean"},
        "activation": {"type": "string"},
        "all_steps": {"type": "boolean"},
        "state_io": {"type": "boolean"},
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "version", "arch", "config", "state_dict", "input_spec"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": "edge-lstm-checkpoint"},
        "version": {"const": 1},
        "arch": {"enum": list(archs.ARCH_NAMES)},
        "config": CONFIG_SCHEMA,
        "state_dict": {"type": "object"},
        "input_spec": {"type": "array", "minItems": 1, "maxItems": 8, "items": {
            "type": "object", "required": ["name", "shape"], "additionalProperties": False,
            "properties": {"name": _NAME, "shape": {"type": "array", "minItems": 1, "maxItems": 8, "items": _DIM},
                           "dtype": {"enum": ["float32", "float16", "float64", "int64", "int32"]}}}},
        "normalization": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["mean", "std"], "additionalProperties": False,
            "properties": {
                "mean": {"type": "array", "minItems": 1, "items": {"type": "number"}},
                "std": {"type": "array", "minItems": 1, "items": {"type": "number", "exclusiveMinimum": 0}},
                "target_index": {"oneOf": [{"type": "integer", "minimum": 0},
                                           {"type": "array", "minItems": 1, "maxItems": 1,
                                            "items": {"type": "integer", "minimum": 0}}]},
                "target": {"enum": ["level", "delta"]},
                "columns": {"type": "array", "minItems": 1, "items": _LABEL},  # feature names, input order
            }}]},
        "task": {"enum": ["forecast", "classify", "unknown"]},
        "metadata": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"name": {"type": "string"}}}]},
    },
}


def validate(obj: dict[str, Any], where: str) -> archs.ArchConfig:
    """Check a loaded checkpoint dict against :data:`SCHEMA` and its own consistency; its config."""
    meta = {k: ({} if k == "state_dict" and isinstance(v, dict) else v) for k, v in obj.items()}  # tensors: loader
    schema.check(meta, SCHEMA, schema.file_error(f"Checkpoint '{where}' is invalid", _HINT))
    try:
        config = archs.ArchConfig.from_dict(dict(obj["config"]))
    except InputFileError as e:
        raise InputFileError(f"Checkpoint '{where}': {e.message}", _HINT) from e
    _check_consistency(obj, config, where)
    return config


_HINT = "The checkpoint was not written by edge_lstm.load.save_checkpoint or was altered; save it again."


def _check_consistency(obj: dict[str, Any], config: archs.ArchConfig, where: str) -> None:
    norm = obj.get("normalization")
    if norm:
        for key in ("mean", "std", "columns"):
            if key in norm and len(norm[key]) != config.n_features:
                raise InputFileError(f"Checkpoint '{where}': normalization.{key} has {len(norm[key])} value(s), the "
                                     f"model takes {config.n_features} feature(s).", _HINT)
        ti = norm.get("target_index", 0)
        ti = ti[0] if isinstance(ti, list) else ti
        if ti >= config.n_features:
            raise InputFileError(f"Checkpoint '{where}': normalization.target_index = {ti} is out of range for "
                                 f"{config.n_features} feature(s).", _HINT)
    names = archs.input_names(config)
    if len(obj["input_spec"]) != len(names):
        raise InputFileError(f"Checkpoint '{where}': input_spec lists {len(obj['input_spec'])} input(s), the "
                             f"architecture takes {len(names)} ({', '.join(names)}).", _HINT)
    for i, t in enumerate(obj["input_spec"]):
        n = math.prod(d if isinstance(d, int) else 1 for d in t["shape"])
        if n > MAX_ELEMENTS:
            raise InputFileError(f"Checkpoint '{where}': input_spec[{i}] declares {n:,} elements per window, more "
                                 f"than the {MAX_ELEMENTS:,} accepted.", _HINT)
    params = estimate_parameters(config)
    if params > MAX_PARAMETERS:
        raise InputFileError(f"Checkpoint '{where}': the config describes about {params:,} parameters, more than "
                             f"the {MAX_PARAMETERS:,} accepted.", _HINT)


def estimate_parameters(config: archs.ArchConfig) -> int:
    """An upper bound of the parameter count a config builds, computed before building it."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}.get(config.cell, 4)
    dirs = 2 if config.bidirectional else 1
    total, width = 0, config.n_features
    for _ in range(config.layers):
        total += dirs * gates * config.hidden * (width + config.state_size + 2)
        total += dirs * config.proj_size * config.hidden
        width = config.out_size
    return total + (width + 1) * config.n_outputs + 2 * width
