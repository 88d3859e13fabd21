"""The device-side predictor: a bundle, one reading at a time, forecasts in the data's own units.

Needs numpy, jsonschema and one runtime (tflite-runtime, ai-edge-litert or ONNX
Runtime); torch, onnx and the exporters are never imported. Runs on Python 3.9+.

>>> p = Predictor.from_bundle("model.bundle.zip")          # doctest: +SKIP
>>> for reading in sensor:                                  # doctest: +SKIP
...     forecast = p.update(reading)  # None until a full window has been seen

Each reading is normalised with the bundle's statistics and fed to the streaming
artifact (one step per reading; its recurrent state carried between calls as
the bundle's state map says), or, with a whole-window artifact, the last
``window`` readings are fed as one window per reading. The model's output is
turned back into the data's units: ``y * std + mean`` of the target for a level
forecast, ``y * std + the last reading of the target`` for a change (delta).

Warm-up: no forecast until ``window`` readings have been seen (the length the
model was trained and validated on), or after ``warmup`` readings when given:
a streaming model then forecasts from the shorter history it has; a window model
pads the missing history with the first reading.

A reading that is not a finite number (NaN, missing, infinite) follows
``on_nan``: ``refuse`` (the default) raises :class:`~edge_lstm.errors.DataError`
naming the reading and the feature; ``skip`` drops it (the state and window stay
as they were, so the next reading follows the last good one); ``reset`` starts
over: state zeroed, the window emptied, warm-up again.
"""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

from edge_lstm.bundle_read import Bundle, open_bundle
from edge_lstm.errors import DataError, UsageError
from edge_lstm.predict_engine import Engine, choose, open_engine

ON_NAN = ("refuse", "skip", "reset")
Reading = Union[Sequence[float], Mapping[str, float], np.ndarray]  # noqa: UP007 - Python 3.9 evaluates this


class Predictor:
    """Forecasts from a bundle, reading by reading (see the module docstring)."""

    def __init__(self, bundle: Bundle, artifact: dict[str, Any], engine: Engine, on_nan: str = "refuse",
                 warmup: int | None = None) -> None:
        if on_nan not in ON_NAN:
            raise UsageError(f"Unknown NaN policy '{on_nan}'.", f"Accepted: {', '.join(ON_NAN)}.")
        m = bundle.manifest
        self.bundle, self.artifact, self.engine, self.on_nan = bundle, artifact, engine, on_nan
        self.features: list[str] = list(m["features"]["names"])
        self.window: int = int(m["window"])
        self.streaming: bool = bool(artifact["streaming"])
        if warmup is not None and not 1 <= int(warmup):
            raise UsageError(f"--warmup {warmup} must be at least 1.", "Or leave it out: a full window.")
        self.warmup: int = int(warmup) if warmup is not None else self.window
        n = len(self.features)
        norm = m["normalization"]
        self._mean = np.asarray(norm["mean"] if norm else [0.0] * n, np.float64)
        self._inv_std = 1.0 / np.asarray(norm["std"] if norm else [1.0] * n, np.float64)
        fc = m["forecast"]
        self.horizon: int = int(artifact["forecast_output"]["values"])
        self.target: str | None = fc["target"] if fc else None
        self._t = int(fc["target_index"]) if fc else 0
        self._delta = bool(fc) and fc["transform"] == "delta"
        std_t = float(norm["std"][self._t]) if norm and fc else 1.0
        mean_t = float(norm["mean"][self._t]) if norm and fc and not self._delta else 0.0
        self._scale, self._offset = std_t, mean_t
        self._buf = np.zeros((2 * self.window, n), np.float32)
        self.count = 0  #: readings given to update() (good or bad)
        self.skipped = 0  #: readings dropped by on_nan="skip"
        self.resets = 0  #: restarts by on_nan="reset" (and reset())
        self._seen = 0
        self._pos = 0
        self._last = 0.0

    @classmethod
    def from_bundle(cls, path: str | Path, *, streaming: bool | None = None, runtime: str = "auto",
                    artifact: str | None = None, precision: str | None = None, on_nan: str = "refuse",
                    warmup: int | None = None, threads: int = 1) -> Predictor:
        """Open and verify ``path``, pick an artifact and a runtime, load it.

        ``streaming``: True for a streaming artifact, False for a window one, None (default) for a streaming one
        when the bundle has one. ``runtime``: ``auto`` (the first of litert, tflite-runtime, onnxruntime that is
        installed and runs an artifact that fits, in bundle order) or one of them. ``artifact`` / ``precision``
        narrow the choice by file name or precision.
        """
        bundle = open_bundle(path)
        art, rt = choose(bundle.artifacts, streaming, runtime, artifact, precision)
        return cls(bundle, art, open_engine(bundle.data(art["file"]), art, rt, threads), on_nan, warmup)

    @property
    def runtime(self) -> str:
        """The runtime running the artifact (``litert``, ``tflite-runtime`` or ``onnxruntime``)."""
        return self.engine.runtime

    def describe(self) -> dict[str, Any]:
        """Which artifact runs where, and the counts so far."""
        return {"bundle": self.bundle.path, "artifact": self.artifact["file"], "precision": self.artifact["precision"],
                "streaming": self.streaming, "runtime": self.runtime, "runtime_version": self.engine.version,
                "features": self.features, "window": self.window, "warmup": self.warmup, "horizon": self.horizon,
                "target": self.target, "on_nan": self.on_nan, "readings": self.count, "skipped": self.skipped,
                "resets": self.resets}

    def reset(self) -> None:
        """Start over: the state zeroed, the window emptied, warm-up again."""
        self.engine.reset()
        self._seen = 0
        self._pos = 0

    def update(self, reading: Reading) -> np.ndarray | None:
        """Take one reading (a value per feature, in :attr:`features` order, or a mapping by name); the forecast
        (``horizon`` values in the data's units) or None while warming up or when the reading was dropped."""
        return self.push(self._values(reading), None)

    def push(self, values: np.ndarray, where: str | None) -> np.ndarray | None:
        """:meth:`update` for a float64 array of the features; ``where`` names the reading in messages."""
        self.count += 1
        z = (values - self._mean) * self._inv_std
        if not math.isfinite(z.sum()):
            return self._bad(values, where)
        self._last = float(values[self._t])
        self._seen += 1
        if self.streaming:
            y = self.engine.step(z.astype(np.float32))
            return None if self._seen < self.warmup else self._units(y)
        w, buf = self.window, self._buf
        if self._seen == 1:
            buf[:] = z  # a window model fed before it is full sees the first reading repeated (see --warmup)
        else:
            buf[self._pos] = z
            buf[self._pos + w] = z
        self._pos = (self._pos + 1) % w
        if self._seen < self.warmup:
            return None
        return self._units(self.engine.step(buf[self._pos:self._pos + w]))

    def predict_series(self, series: Any) -> np.ndarray:
        """Forecasts for every row of a ``(time, features)`` array, from a fresh state: a ``(time, horizon)`` array
        with NaN rows where no forecast is made (warm-up, skipped readings)."""
        arr = np.asarray(series, np.float64)
        if arr.ndim == 1 and len(self.features) == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != len(self.features):
            raise DataError(f"predict_series takes a (time, {len(self.features)}) array of the features "
                            f"{', '.join(self.features)}; got shape {arr.shape}.")
        self.reset()
        out = np.full((len(arr), self.horizon), np.nan)
        for i in range(len(arr)):
            f = self.push(arr[i], f"row {i}")
            if f is not None:
                out[i] = f
        return out

    def close(self) -> None:
        """Release the runtime."""
        self.engine.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _units(self, y: np.ndarray) -> np.ndarray:
        if self.target is None:
            return y.astype(np.float64)
        return y.astype(np.float64) * self._scale + (self._last if self._delta else self._offset)

    def _values(self, reading: Reading) -> np.ndarray:
        n = len(self.features)
        if isinstance(reading, Mapping):
            missing = [f for f in self.features if f not in reading]
            if missing:
                raise DataError(f"Reading {self.count + 1} has no {', '.join(map(repr, missing))}; the model takes "
                                f"{', '.join(self.features)}.")
            reading = [reading[f] for f in self.features]
        try:
            arr = np.asarray(reading, np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise DataError(f"Reading {self.count + 1} is not {n} number(s): {reading!r:.80}.") from e
        if arr.size != n:
            raise DataError(f"Reading {self.count + 1} has {arr.size} value(s); the model takes {n}: "
                            f"{', '.join(self.features)}.")
        return arr

    def _bad(self, values: np.ndarray, where: str | None) -> None:
        bad = [f for f, v in zip(self.features, values) if not math.isfinite(float(v))]
        label = where or f"reading {self.count}"
        if not bad:  # finite readings that overflow once normalised
            bad = list(self.features)
        if self.on_nan == "refuse":
            raise DataError(f"{label}: {', '.join(map(repr, bad))} is not a finite number (NaN, missing or "
                            "infinite).", "Fix the reading, or pass --on-nan skip (drop it) or --on-nan reset "
                            "(start the window over).")
        if self.on_nan == "skip":
            self.skipped += 1
        else:
            self.resets += 1
            self.reset()
        return None
