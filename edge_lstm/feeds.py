"""Validation feeds and judging: the same inputs for the reference and every artifact.

Inputs are real windows from ``--data`` (normalised like the checkpoint) or,
when none is given, seeded random data. State inputs (``h0``, ``c0``) get
seeded random values so the state path is exercised too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_lstm import data as data_mod
from edge_lstm.errors import DataError
from edge_lstm.load import LoadedModel
from edge_lstm.recipes import Recipe
from edge_lstm.spec import Precision, TensorSpec
from edge_lstm.validate import ArtifactValidation, TaskMetrics, classify_task, forecast_task, validate_outputs

if TYPE_CHECKING:
    from edge_lstm.artifact import Artifact
    from edge_lstm.progress import Say
    from edge_lstm.quantize.calibration import CalibrationSet
    from edge_lstm.runners.base import Runner
    from edge_lstm.streaming import StreamingModel

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class ValidationData:
    """The samples every artifact is run on, with next-step targets when the data has them."""

    samples: list[Feed]
    targets: np.ndarray | None
    source: str  # a file path, or "random (seed N)"
    steps: int  # time steps per window


def x_spec(model: LoadedModel) -> tuple[TensorSpec, int, int]:
    """The first input's spec, its time-axis length and its feature count (ids: one per step)."""
    x = model.inputs.inputs[0]
    return x, x.steps, x.features


def _place(window: np.ndarray, x: TensorSpec) -> np.ndarray:
    """A ``(T, F)`` window in the layout of input ``x`` with batch 1."""
    if x.seq_first:
        return window[:, None, :]  # (T, batch, F)
    return window.reshape(x.concrete(1)).astype(x.dtype if x.is_ids else np.float32, copy=False)


def _random_windows(x: TensorSpec, rng: np.random.Generator, n: int, steps: int, feats: int) -> list[np.ndarray]:
    """Seeded standard-normal windows, or for an id input ids drawn below its embedding's size."""
    if x.is_ids:
        from edge_lstm.id_inputs import id_bound

        return list(rng.integers(0, id_bound(x), (n, steps, feats)).astype(x.dtype))
    return list(rng.standard_normal((n, steps, feats)).astype(np.float32))


def _check_ids(windows: list[np.ndarray], x: TensorSpec, source: str) -> list[np.ndarray]:
    """Windows from a file for an id input: whole numbers inside the embedding, as the input's dtype."""
    from edge_lstm.id_inputs import id_bound

    arr = np.asarray(windows)
    bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (arr < 0) | (arr >= id_bound(x))
    if bad.any():
        raise DataError(
            f"'{source}' holds values that are not ids input '{x.name}' takes ({x.dtype}, 0 to {id_bound(x) - 1}); "
            f"first: {float(arr[bad][0]):g}.",
            "Give whole-number ids inside the embedding's vocabulary (--input-dtype sets the input's type).")
    return list(arr.astype(x.dtype))


def validation_feeds(model: LoadedModel, recipe: Recipe, data: Path | None) -> ValidationData:
    """Real windows from ``data`` or seeded random samples, shaped for the model."""
    x, steps, feats = x_spec(model)
    rng = np.random.default_rng(recipe.seed)
    if data is not None:
        w = data_mod.windows_from(data, steps, feats, model.normalization, limit=recipe.max_samples)
        windows, targets, source = list(w.x), w.y, w.source
        if x.is_ids:
            windows = _check_ids(windows, x, w.source)
    else:
        windows = _random_windows(x, rng, recipe.random_samples, steps, feats)
        targets, source = None, f"random (seed {recipe.seed})"
    samples = []
    for win in windows:
        feed = {x.name: _place(win, x)}
        for spec in model.inputs.inputs[1:]:
            feed[spec.name] = (0.5 * rng.standard_normal(spec.concrete(1))).astype(np.float32)
        samples.append(feed)
    return ValidationData(samples, targets, source, steps)


def calibration_set(model: LoadedModel, recipe: Recipe, calib: str | None) -> CalibrationSet:
    """Calibration windows from a CSV/NPY (normalised like the checkpoint), or random ones (flagged).

    Each window is also fed shifted by ``±recipe.calibration_margin`` (in normalised
    units): data met in deployment drifts past the calibration period's range (a
    colder month), and an int8 input clipped at the edge of its range costs far more
    than a slightly coarser grid.
    """
    from edge_lstm.quantize.calibration import calibration_windows, random_calibration

    if calib is None:
        raise DataError("Calibration data is required for int8.", "Pass --calib data.csv or --calib random.")
    if calib == "random":
        return random_calibration(model.inputs, recipe.calibration_samples, recipe.seed + 1)
    x, steps, feats = x_spec(model)
    windows = data_mod.windows_from(Path(calib), steps, feats, model.normalization,
                                    limit=recipe.calibration_samples).x
    source = str(calib)
    if x.is_ids:  # ids are not shifted: a shifted id is another token, or none at all
        windows = np.asarray(_check_ids(list(windows), x, source)).reshape(len(windows), *x.concrete(1))
    elif len(windows) >= recipe.min_calibration_samples and recipe.calibration_margin > 0:
        m = np.float32(recipe.calibration_margin)
        windows = np.concatenate([windows, windows - m, windows + m])
        source += f": {len(windows) // 3} windows, each also shifted by ±{recipe.calibration_margin:g} (normalised)"
    data: dict[str, np.ndarray] = {x.name: windows}
    for spec in model.inputs.inputs[1:]:  # explicit initial states calibrate at zero, the usual start
        data[spec.name] = np.zeros((len(windows), *spec.concrete(1)), np.float32)
    return calibration_windows(data, model.inputs, count=len(windows),
                               min_windows=recipe.min_calibration_samples, source=source)


def run_all(runner: Runner, samples: list[Feed], tick: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run every sample (state reset before each) and stack each output over samples; ``tick(1)`` after each."""
    outs: dict[str, list[np.ndarray]] = {}
    with runner:
        names = runner.input_names
        for feed in samples:
            runner.reset_state()
            res = runner.infer({k: v for k, v in feed.items() if k in names})
            for k, v in res.items():
                outs.setdefault(k, []).append(np.asarray(v, dtype=np.float32))
            if tick is not None:
                tick(1)
    return {k: np.stack(v) for k, v in outs.items()}


def _time_axes(model: LoadedModel, steps: int) -> dict[str, int]:
    """The time axis of an all-steps prediction output (state outputs have none)."""
    axes = {}
    for o in model.outputs[:1]:
        if len(o.shape) >= 3:
            for a, d in enumerate(o.shape):
                if d == steps and steps > 1:
                    axes[o.name] = a + 1  # +1: outputs are stacked over samples
                    break
    return axes


def next_step(model: LoadedModel, pred: np.ndarray) -> np.ndarray:
    """A forecaster's prediction for the step after each window (its first output there), in the data's units.

    ``pred`` is the first output stacked over windows; for an all-steps output that is the last step's.
    """
    width = pred.shape[-1]
    return data_mod.denormalize_target(pred.reshape(len(pred), -1)[:, -width], model.normalization)


def _task(model: LoadedModel, vdata: ValidationData, ref: dict[str, np.ndarray],
          got: dict[str, np.ndarray]) -> TaskMetrics | None:
    """Forecast MAE in the data's units (labelled series) or classifier agreement."""
    y = model.output_names[0]
    if y not in got or ref[y].shape != got[y].shape:
        return None
    if model.task == "forecast" and vdata.targets is not None:
        target = data_mod.denormalize_target(vdata.targets, model.normalization)
        return forecast_task(next_step(model, ref[y]), next_step(model, got[y]), target)
    if model.task == "classify":
        return classify_task(ref[y], got[y], None)
    return None


def judge(
    artifact: str, runtime: str, model: LoadedModel, recipe: Recipe, precision: Precision,
    vdata: ValidationData, reference: dict[str, np.ndarray], actual: dict[str, np.ndarray],
) -> ArtifactValidation:
    """Metrics, task metric and verdict of one artifact on one runtime."""
    tol = recipe.tolerance(precision, vdata.steps)
    metrics = validate_outputs(artifact, runtime, reference, actual, tol, _time_axes(model, vdata.steps))
    return ArtifactValidation(artifact, runtime, tol, metrics, len(vdata.samples), vdata.source,
                              task=_task(model, vdata, reference, actual))


def validate_streaming(
    art: Artifact, model: LoadedModel, step: StreamingModel, recipe: Recipe, vdata: ValidationData,
    reference: dict[str, np.ndarray], runners: list[Runner], say: Say | None = None,
) -> list[ArtifactValidation]:
    """Feed each window one step at a time on every runner; compare with the whole-window reference.

    ``say`` (a :class:`~edge_lstm.progress.Progress`) counts the windows of each runner.
    """
    from edge_lstm import progress

    results = []
    for runner in runners:
        outs: dict[str, list[np.ndarray]] = {}
        with runner, progress.task(say, f"{art.filename} on {runner.runtime}", len(vdata.samples),
                                   "window") as count:
            for feed in vdata.samples:
                for k, v in stream_window(runner, step, feed).items():
                    outs.setdefault(k, []).append(v)
                count.tick()
        stacked = {k: np.stack(v) for k, v in outs.items()}
        results.append(judge(art.filename, runner.runtime, model, recipe, art.precision, vdata, reference, stacked))
    return results


def stream_window(runner: Runner, step: StreamingModel, feed: Feed) -> dict[str, np.ndarray]:
    """Run one window through a one-step runner, carrying the state; return whole-window-shaped outputs.

    The model's own state inputs start from the feed's values, the other states from
    zeros (as the whole-window model starts them). A runner that keeps the state itself
    (a fused TFLite model's variable tensors) takes only the step input.
    """
    window = feed[step.x]
    takes = set(runner.input_names)
    state = {s.input: np.asarray(feed[s.input], np.float32) if s.input in feed else s.zeros(1) for s in step.states}
    runner.reset_state()
    outs: dict[str, list[np.ndarray]] = {name: [] for name in step.output_axes}
    for t in range(window.shape[step.time_axis]):
        f = {step.x: np.take(window, [t], axis=step.time_axis), **{k: v for k, v in state.items() if k in takes}}
        res = runner.infer(f)
        for name, got in outs.items():
            got.append(np.asarray(res[name], dtype=np.float32))
        state = {s.input: np.asarray(res[s.output], np.float32) for s in step.states if s.output in res}
    return {name: (v[-1] if step.output_axes[name] is None else np.concatenate(v, axis=step.output_axes[name]))
            for name, v in outs.items()}
