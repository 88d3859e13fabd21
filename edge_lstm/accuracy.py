"""The accuracy section of the export report: forecasts against the actual values, in the data's units.

For a forecaster validated on a labelled series (``--data``), every held-out
window has an actual next value; the report keeps, per window, the actual value,
the float model's forecast, the persistence baseline's (the window's last value,
or no change for a model that forecasts the change) and each artifact's forecast
on each runtime, with the MAE and RMSE of each. Everything here is computed from
the run's own outputs; nothing is estimated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm import data as data_mod
from edge_lstm import feeds as feeds_mod

if TYPE_CHECKING:
    from edge_lstm.artifact import Artifact
    from edge_lstm.load import LoadedModel

#: windows kept per series in report.json (the metrics use every window)
KEPT_WINDOWS = 512


def units_of(model: LoadedModel, given: str | None) -> tuple[str, bool]:
    """The target's units and whether anyone said what they are (``--units``, or the checkpoint's metadata)."""
    if given:
        return given, True
    meta = model.metadata or {}
    if meta.get("units"):
        return str(meta["units"]), True
    column = meta.get("target_column")
    return (f"units of '{column}'" if column else "the data's units"), False


def persistence(model: LoadedModel, vdata: feeds_mod.ValidationData) -> np.ndarray:
    """The persistence forecast of each window in the data's units: its last value, or a change of 0."""
    if data_mod.is_delta(model.normalization):
        return np.zeros(len(vdata.samples), dtype=np.float64)
    x = model.inputs.inputs[0]
    t = int((model.normalization or {}).get("target_index", [0])[0])
    last = []
    for feed in vdata.samples:
        win = np.asarray(feed[x.name], dtype=np.float64)
        win = win[:, 0, :] if x.seq_first else win.reshape(-1, win.shape[-1])
        last.append(win[-1, t])
    return np.asarray(data_mod.denormalize_target(np.asarray(last), model.normalization), dtype=np.float64)


def _errors(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, np.float64) - actual
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}


def _kept(a: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(a, np.float64)[:KEPT_WINDOWS]]


def accuracy_section(model: LoadedModel, vdata: feeds_mod.ValidationData, reference: dict[str, np.ndarray],
                     artifacts: list[Artifact], units: str | None = None) -> dict[str, Any] | None:
    """Forecast against actual for the float model, persistence and every artifact × runtime; None when the
    model is no forecaster or the validation data has no actual values (random data, or windows without a
    next step)."""
    y = model.output_names[0]
    if model.task != "forecast" or vdata.targets is None or y not in reference:
        return None
    actual = np.asarray(data_mod.denormalize_target(vdata.targets, model.normalization), np.float64)
    ref = feeds_mod.next_step(model, reference[y]).astype(np.float64)
    base = persistence(model, vdata)
    unit, given = units_of(model, units)
    series = []
    for art in artifacts:
        for v in art.validations:
            if v.task is not None and v.task.forecasts is not None:
                series.append({"file": art.filename, "runtime": v.runtime, "precision": art.precision.value,
                               "streaming": art.streaming, **_errors(v.task.forecasts, actual),
                               "forecast": _kept(v.task.forecasts)})
    delta = data_mod.is_delta(model.normalization)
    return {
        "task": "forecast", "metric": "mae", "units": unit, "units_given": given, "windows": len(actual),
        "kept_windows": min(len(actual), KEPT_WINDOWS), "data": vdata.source,
        "quantity": "the change over the next step" if delta else "the next value",
        "persistence_rule": "no change: the model forecasts the change" if delta else "the window's last value",
        "float": _errors(ref, actual), "persistence": _errors(base, actual),
        "actual": _kept(actual), "float_forecast": _kept(ref), "persistence_forecast": _kept(base),
        "artifacts": series,
    }
