"""The runner interface, in the style of Polygraphy's backends.

The public :meth:`Runner.infer` checks the feed against the runner's
:class:`TensorSpec` list and records the wall time of each call; subclasses
write only :meth:`Runner._load`, :meth:`Runner._infer_impl` and, for models
with state that persists across calls, :meth:`Runner.reset_state`.

This module imports only numpy: device-side code builds on it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edge_lstm.errors import ShapeError
from edge_lstm.spec import TensorSpec


def zip_equal(*seqs: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    """``zip(..., strict=True)`` for Python 3.9, which the device side runs: sequences of unequal length raise."""
    if len({len(s) for s in seqs}) > 1:
        raise ValueError(f"zip_equal: lengths differ ({', '.join(str(len(s)) for s in seqs)})")
    return zip(*seqs)  # noqa: B905 - the lengths are checked above; strict= is Python 3.10+


class Runner(ABC):
    """Runs one artifact. Use as a context manager: ``with Runner(...) as r: r.infer(feed)``."""

    #: short runtime name used in reports ("torch", "onnxruntime", "litert", "tflite-runtime", "tflm")
    runtime: str = "base"

    def __init__(self) -> None:
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.latencies_s: list[float] = []
        self.load_time_s: float = 0.0
        self._active = False

    @classmethod
    def open(cls, model: str | Path | bytes, runtime: str, threads: int | None = 1, xnnpack: bool = True,
             torch_load: dict[str, Any] | None = None) -> Runner:
        """The runner of ``model`` (a path or the file's bytes) on ``runtime``, the one constructor the device
        runner and validation call for every registry runtime (:mod:`edge_lstm.registry`). Runners whose
        constructor takes other arguments override it."""
        return cls(model, threads=threads)  # type: ignore[call-arg]

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    def activate(self) -> None:
        """Load the artifact (timed into ``load_time_s``)."""
        if not self._active:
            t0 = time.perf_counter()
            self._load()
            self.load_time_s = time.perf_counter() - t0
            self._active = True

    def deactivate(self) -> None:
        """Release the runtime's resources."""
        self._unload()
        self._active = False

    @property
    def input_names(self) -> list[str]:
        """Input names in order."""
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names in order."""
        return [t.name for t in self.outputs]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check ``feed`` against the input specs, run once, and record the latency."""
        if not self._active:
            self.activate()
        self.check_feed(feed)
        t0 = time.perf_counter()
        out = self._infer_impl(feed)
        self.latencies_s.append(time.perf_counter() - t0)
        return out

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        """Raise :class:`ShapeError` when a name, rank or static dimension disagrees."""
        missing = [n for n in self.input_names if n not in feed]
        extra = [n for n in feed if n not in self.input_names]
        if missing or extra:
            raise ShapeError(
                f"{self.runtime}: feed has inputs {sorted(feed)}, the model takes {self.input_names}.",
            )
        for spec in self.inputs:
            arr = feed[spec.name]
            if arr.ndim != len(spec.shape) or any(
                isinstance(d, int) and d >= 0 and d != s for d, s in zip_equal(spec.shape, arr.shape)
            ):
                raise ShapeError(
                    f"{self.runtime}: input '{spec.name}' has shape {tuple(arr.shape)}, the model takes {spec.shape}.",
                )

    def reset_state(self) -> None:  # noqa: B027 - stateless runners need no reset
        """Zero any state that persists across calls (variable tensors). Stateless runners do nothing."""

    @abstractmethod
    def _load(self) -> None:
        """Load the artifact and fill ``self.inputs`` and ``self.outputs``."""

    def _unload(self) -> None:  # noqa: B027 - most runtimes free on garbage collection
        """Release resources."""

    @abstractmethod
    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; return outputs by name, as float32/int numpy arrays."""

    def describe(self) -> dict[str, Any]:
        """Runtime name and version for reports."""
        return {"runtime": self.runtime, "version": self.version()}

    def version(self) -> str:
        """The runtime's version string."""
        return "unknown"
