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

from collections.abc import Mapping, Sequence
from math import isfinite
from pathlib import Path
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
        if warmup is not None and not int(warmup) >= 1:
            raise UsageError(f"--warmup {warmup} must be at least 1.", "Or leave it out: a full window.")
        self.warmup: int = int(warmup) if warmup is not None else self.window
        n = len(self.features)
        norm = m["normalization"]
        self._ml = [float(v) for v in (norm["mean"] if norm else [0.0] * n)]
        self._il = [1.0 / float(v) for v in (norm["std"] if norm else [1.0] * n)]
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
        self._step = engine.step
        if self.streaming:
            self.forward = self._stream_forward()  # type: ignore[method-assign]

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
        if threads < 1:
            raise UsageError(f"Cannot run on {threads} thread(s).", "Pass --threads 1 or more (threads=1 or more).")
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
        out = self.forward(self._values(reading), None)
        return None if out is None else np.array(out)

    def forward(self, values: list[float], where: str | None) -> list[float] | None:
        """:meth:`update` for a list of the features' floats, the forecast as a list; ``where`` names the reading
        in messages. This is the per-reading hot path: plain Python on a few floats costs less than numpy's
        per-call overhead, so the runtime's own step dominates."""
        self.count += 1
        z = [(v - m) * s for v, m, s in zip(values, self._ml, self._il)]  # noqa: B905 - strict= is 3.10+
        if not isfinite(sum(z)):
            self._bad(values, where)
            return None
        last = values[self._t]
        self._seen += 1
        if self.streaming:
            y = self._step(z)
            if self._seen < self.warmup:
                return None
        else:
            w, buf = self.window, self._buf
            if self._seen == 1:
                buf[:] = z  # a window model fed before it is full sees the first reading repeated (see --warmup)
            else:
                buf[self._pos] = z
                buf[self._pos + w] = z
            self._pos = (self._pos + 1) % w
            if self._seen < self.warmup:
                return None
            y = self._step(buf[self._pos:self._pos + w])
        if self.target is None:
            return y
        off, scale = (last if self._delta else self._offset), self._scale
        return [v * scale + off for v in y]

    def _stream_forward(self) -> Any:
        """:meth:`forward` for a streaming artifact with everything it reads bound once (a step costs the
        runtime's ~10 µs; attribute look-ups are a measurable part of the rest)."""
        ml, il, step, t, bad = self._ml, self._il, self._step, self._t, self._bad
        scale, offset, delta, plain = self._scale, self._offset, self._delta, self.target is None
        me = self

        def forward(values: list[float], where: str | None) -> list[float] | None:
            me.count += 1
            z = [(v - m) * s for v, m, s in zip(values, ml, il)]  # noqa: B905 - strict= is 3.10+
            if not isfinite(sum(z)):
                bad(values, where)
                return None
            y = step(z)
            me._seen += 1
            if me._seen < me.warmup:
                return None
            if plain:
                return y  # type: ignore[no-any-return]
            off = values[t] if delta else offset
            return [v * scale + off for v in y]

        return forward

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
        for i, row in enumerate(arr.tolist()):
            f = self.forward(row, f"row {i}")
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

    def _values(self, reading: Reading) -> list[float]:
        n = len(self.features)
        if type(reading) is list and len(reading) == n:  # the common case first: no ABC isinstance, no numpy
            try:
                return [float(v) for v in reading]
            except (TypeError, ValueError):
                pass  # the general path below says what is wrong
        if isinstance(reading, Mapping):
            missing = [f for f in self.features if f not in reading]
            if missing:
                raise DataError(f"Reading {self.count + 1} has no {', '.join(map(repr, missing))}; the model takes "
                                f"{', '.join(self.features)}.")
            reading = [reading[f] for f in self.features]
        try:
            if isinstance(reading, (list, tuple)):  # the common case, without numpy's per-call cost
                values = [float(v) for v in reading]
            else:
                values = np.asarray(reading, np.float64).reshape(-1).tolist()
        except (TypeError, ValueError) as e:
            raise DataError(f"Reading {self.count + 1} is not {n} number(s): {reading!r:.80}.") from e
        if len(values) != n:
            raise DataError(f"Reading {self.count + 1} has {len(values)} value(s); the model takes {n}: "
                            f"{', '.join(self.features)}.")
        return values

    def _bad(self, values: list[float], where: str | None) -> None:
        bad = [f for f, v in zip(self.features, values) if not isfinite(float(v))]  # noqa: B905 - 3.9
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
