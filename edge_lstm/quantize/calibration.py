"""Calibration windows for full-integer quantization: validated, never silently random.

The lead's ``data.py`` reads ``--calib`` CSV/NPY files and windows and normalises
them exactly as the checkpoint was trained; this module takes those numpy arrays,
checks them against the model's inputs and picks the windows the calibrator sees.

Array layout, per model input: ``(N, *window_shape)`` where ``window_shape`` is the
input's shape without its batch axis (``(N, 96, 1)`` for a ``(batch, 96, 1)``
input), or ``(N, *input_shape)`` with the batch axis present and equal to 1
(``(N, 1, 96, 1)``). A single-input model takes one array; a multi-input model
takes a dict mapping input name to array, every array with the same ``N``.

Counts: at least :data:`MIN_WINDOWS` windows are required; when more than
``count`` (default :data:`DEFAULT_COUNT`) are given, ``count`` windows evenly spread
over the data are used, so calibration sees its whole range rather than its start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_lstm.errors import DataError
from edge_lstm.spec import InputSpec, TensorSpec

#: calibration windows used when more are available
DEFAULT_COUNT = 200
#: fewer windows than this give unstable activation ranges: refused
MIN_WINDOWS = 16


@dataclass(frozen=True)
class CalibrationSet:
    """Validated calibration samples, one batch-1 feed per window.

    ``samples`` maps input name to an array ``(N, *input_shape_with_batch_1)``.
    ``random`` is True only for :func:`random_calibration`; reports must flag it.
    ``output_ranges`` (output name -> (min, max)) are ranges known better than the
    calibrator can record them (a one-step model's latest-step outputs, see
    :mod:`edge_lstm.quantize.ranges`); the quantizer gives those outputs these ranges.
    ``unit`` names one sample in reports: a window, or a time step of a one-step model.
    """

    samples: dict[str, np.ndarray]
    random: bool = False
    source: str = "data"
    output_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    unit: str = "windows"

    @property
    def count(self) -> int:
        """Number of windows."""
        return int(next(iter(self.samples.values())).shape[0])

    def feeds(self) -> list[list[np.ndarray]]:
        """One list of input arrays (in input order) per window, each with batch 1."""
        arrays = list(self.samples.values())
        return [[a[i] for a in arrays] for i in range(self.count)]

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for the report."""
        return {"windows": self.count, "random": self.random, "source": self.source}


def calibration_windows(
    data: np.ndarray | Mapping[str, np.ndarray],
    inputs: InputSpec | Sequence[TensorSpec],
    count: int = DEFAULT_COUNT,
    min_windows: int = MIN_WINDOWS,
    source: str = "data",
) -> CalibrationSet:
    """Validate calibration ``data`` against the model ``inputs`` and pick up to ``count`` windows.

    Raises :class:`DataError` (exit code 2) for NaN or infinite values, a wrong
    number of features or window length, mismatched inputs, or fewer than
    ``min_windows`` windows.
    """
    specs = list(inputs.inputs if isinstance(inputs, InputSpec) else inputs)
    arrays = _by_input(data, specs)
    samples = {s.name: _samples(arrays[s.name], s) for s in specs}
    counts = {name: a.shape[0] for name, a in samples.items()}
    if len(set(counts.values())) > 1:
        raise DataError(
            f"Calibration inputs have different numbers of windows: {counts}.",
            "Give every model input the same number of windows, in the same order.",
        )
    n = next(iter(counts.values()))
    if n < min_windows:
        raise DataError(
            f"Calibration data gives {n} windows; int8 calibration needs at least {min_windows} "
            f"(default {DEFAULT_COUNT}).",
            "Pass a longer --calib file: each window needs as many rows as the model's window length.",
        )
    if n > count:
        idx = np.unique(np.linspace(0, n - 1, count).round().astype(int))
        samples = {k: v[idx] for k, v in samples.items()}
    return CalibrationSet(samples, random=False, source=source)


def random_calibration(
    inputs: InputSpec | Sequence[TensorSpec], n: int = DEFAULT_COUNT, seed: int = 0
) -> CalibrationSet:
    """Standard-normal windows for the explicit ``--calib random``; the set is flagged ``random``.

    Inputs are normalised by the checkpoint's statistics, so N(0, 1) is the right
    scale, but nothing about the data's dynamics is known: expect a larger error.
    """
    specs = list(inputs.inputs if isinstance(inputs, InputSpec) else inputs)
    rng = np.random.default_rng(seed)
    samples = {s.name: _random(rng, s, n) for s in specs}
    return CalibrationSet(samples, random=True, source="random")


#: random token ids are drawn below this when the embedding's size is not known (any embedding worth
#: calibrating has at least this many rows); else below the embedding's row count (``spec.vocab``)
RANDOM_IDS = 10


def _random(rng: np.random.Generator, spec: TensorSpec, n: int) -> np.ndarray:
    shape = (n, *spec.concrete(1))
    if np.dtype(spec.dtype).kind in "iu":  # token ids: valid indices over the whole table, not normal noise
        return rng.integers(0, spec.vocab or RANDOM_IDS, shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(np.float32)


def _by_input(data: np.ndarray | Mapping[str, np.ndarray], specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    names = [s.name for s in specs]
    if isinstance(data, Mapping):
        if set(data) == set(names):
            return {k: np.asarray(data[k]) for k in names}
        if len(data) == len(names):  # same count, other names (e.g. TFLite's serving names): by order
            return dict(zip(names, (np.asarray(v) for v in data.values()), strict=True))
        raise DataError(
            f"Calibration data has inputs {sorted(data)}; the model takes {names}.",
            "Give one array per model input, keyed by input name.",
        )
    if len(specs) != 1:
        raise DataError(
            f"A single calibration array was given, but the model takes {len(specs)} inputs ({', '.join(names)}).",
            "Give a dict mapping each input name to its windows.",
        )
    return {names[0]: np.asarray(data)}


def _samples(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``(N, *spec.concrete(1))`` float32 from ``(N, *window_shape)`` or ``(N, *input_shape)``."""
    if arr.dtype.kind not in "fiu":
        raise DataError(f"Calibration data for '{spec.name}' has dtype {arr.dtype}; numbers are needed.")
    integer = np.dtype(spec.dtype).kind in "iu"  # token ids stay integers (an embedding's input)
    if integer and arr.dtype.kind == "f" and np.any(np.isfinite(arr) & (arr != np.round(arr))):
        raise DataError(f"Calibration data for '{spec.name}' has fractional values; the input takes {spec.dtype} "
                        "ids.")
    arr = arr.astype(np.dtype(spec.dtype) if integer else np.float32, copy=False)
    shape = spec.concrete(1)
    batch = spec.batch_axis
    if arr.ndim == len(shape) and batch is not None:
        arr = np.expand_dims(arr, 1 + batch)
    if arr.ndim != len(shape) + 1:
        raise DataError(
            f"Calibration data for '{spec.name}' has shape {arr.shape}; expected (windows, "
            f"{', '.join(map(str, spec.window_shape))}) for the model input {spec}.",
        )
    _check_features(arr, spec, shape)
    bad = ~np.isfinite(arr) if arr.dtype.kind == "f" else np.zeros(arr.shape, bool)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(arr.shape[0], -1))[0])
        raise DataError(
            f"Calibration data for '{spec.name}' has {int(bad.sum())} NaN or infinite values "
            f"in {rows.size} of {arr.shape[0]} windows (first: window {int(rows[0])}).",
            "Fill or drop missing values before calibrating; edge-lstm does not impute.",
        )
    return np.ascontiguousarray(arr)


def _check_features(arr: np.ndarray, spec: TensorSpec, shape: tuple[int, ...]) -> None:
    given, expected = arr.shape[-1], shape[-1]
    if given != expected:
        raise DataError(
            f"Calibration data for '{spec.name}' has {given} features per time step; the model expects {expected}.",
            "Use the same feature columns, in the same order, as the model was trained on.",
        )
    for axis, (g, e) in enumerate(zip(arr.shape[1:-1], shape[:-1], strict=True)):
        if g != e:
            what = "window length" if axis != spec.batch_axis else "batch size"
            raise DataError(
                f"Calibration data for '{spec.name}' has {what} {g} on axis {axis}; the model expects {e} "
                f"(input {spec}).",
            )


