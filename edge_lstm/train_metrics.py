"""Test metrics for trained models, with the baselines they must beat, and the gradient notes.

Forecasts are scored in the data's units against persistence (the window's last
value) and seasonal naive (the value one season earlier); classifiers by
accuracy, macro-F1 and a confusion matrix, against the majority class and the
previous window's label. Plain numpy: no scikit-learn for five formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_lstm import dataset

#: clipping active on more than this share of all steps means the gradients explode
EXPLODING_CLIPPED_SHARE = 0.5
#: the first tenth of the window getting less than this share of the last step's gradient means it vanished
VANISHING_RATIO = 1e-6
#: test forecasts kept in the log for the report's plot
SAMPLE_WINDOWS = 168


def _errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = pred - truth
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}


def forecast_metrics(prep: dataset.Prepared, pred_norm: np.ndarray, starts: np.ndarray,
                     season: int | None) -> dict[str, Any]:
    """MAE and RMSE of the model and both baselines on ``starts`` windows, in the data's units."""
    assert prep.raw_target is not None
    w, h = prep.spec.window, prep.spec.horizon
    truth = prep.truth(starts)
    pred = prep.to_units(pred_norm, starts)
    last = dataset.persistence(prep.raw_target, starts, w, h)
    out: dict[str, Any] = {"windows": len(starts), "horizon": h, "units": "the target column's units",
                           "model": _errors(pred, truth), "persistence": _errors(last, truth)}
    if season:
        out["seasonal_naive"] = {**_errors(dataset.seasonal_naive(prep.raw_target, starts, w, h, season), truth),
                                 "season": season}
    model_mae = out["model"]["mae"]
    for base in ("persistence", "seasonal_naive"):
        if base in out and out[base]["mae"] > 0:
            out[base]["model_improvement"] = 1.0 - model_mae / out[base]["mae"]  # share of the baseline's MAE saved
    n = min(SAMPLE_WINDOWS, len(starts))
    out["sample"] = {k: [round(float(v), 6) for v in a[:n, 0]] for k, a in
                     (("truth", truth), ("model", pred), ("persistence", last))}
    return out


def classify_metrics(truth: np.ndarray, pred: np.ndarray, classes: list[str],
                     baselines: dict[str, np.ndarray]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class scores and the confusion matrix (rows: truth, columns: predicted)."""
    out = {"windows": len(truth), "classes": classes, "model": _class_scores(truth, pred, len(classes))}
    for name, base in baselines.items():
        s = _class_scores(truth, base, len(classes))
        out[name] = {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}
    return out


def _class_scores(truth: np.ndarray, pred: np.ndarray, n: int) -> dict[str, Any]:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (truth.astype(int), pred.astype(int)), 1)
    tp = np.diag(cm).astype(np.float64)
    precision = np.divide(tp, cm.sum(axis=0), out=np.zeros(n), where=cm.sum(axis=0) > 0)
    recall = np.divide(tp, cm.sum(axis=1), out=np.zeros(n), where=cm.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0  # classes that occur in the truth or the predictions
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for p, r, f, s in zip(precision, recall, f1, cm.sum(axis=1), strict=True)],
        "confusion": cm.tolist(),
    }


def class_weights(labels: np.ndarray, n_classes: int, rule: str) -> tuple[np.ndarray, list[str]]:
    """Loss weights per class: ``balanced`` is ``N / (classes * count)``, ``none`` is all ones.

    A class absent from the training windows gets weight 0 (and a note): it cannot be learnt.
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    notes: list[str] = []
    if rule == "none":
        return np.ones(n_classes), notes
    weights = np.divide(len(labels), n_classes * counts, out=np.zeros(n_classes), where=counts > 0)
    missing = [i for i in range(n_classes) if counts[i] == 0]
    if missing:
        notes.append(f"{len(missing)} class(es) never occur in the training windows (indices {missing}): "
                     "the model cannot learn them; they get loss weight 0")
    return weights, notes


def gradient_notes(epochs: list[dict[str, Any]], cell: str, window: int, clip: float) -> list[dict[str, str]]:
    """Plain-language notes on exploding and vanishing gradients from the per-epoch history.

    Exploding: clipping was active on more than half of all optimiser steps.
    Vanishing: on more than half of the epochs, the first tenth of the window got
    less than ``VANISHING_RATIO`` of the gradient the last step got, so the early
    part of each window barely shapes the weights.
    """
    notes: list[dict[str, str]] = []
    steps = sum(e["steps"] for e in epochs)
    clipped = sum(e["clipped_steps"] for e in epochs)
    if clip > 0 and steps and clipped / steps > EXPLODING_CLIPPED_SHARE:
        notes.append({"kind": "exploding", "text": (
            f"Exploding gradients: the gradient norm exceeded the clipping threshold {clip:g} on "
            f"{clipped / steps:.0%} of the {steps} steps, so clipping, not the learning rate, set most updates. "
            "Lower --lr, or raise --clip if the norms are steady but large.")})
    ratios = [e["gradient_reach"]["early_to_last"] for e in epochs if e.get("gradient_reach")]
    vanished = [r for r in ratios if r < VANISHING_RATIO]
    if ratios and len(vanished) > len(ratios) / 2:
        advice = ("A gated cell (--cell lstm or gru) carries gradients across long windows; "
                  "or shorten --window." if cell == "rnn" else
                  "The model does not use the early part of the window: a shorter --window would do as well.")
        notes.append({"kind": "vanishing", "text": (
            f"Vanishing gradients: on {len(vanished)} of {len(ratios)} epochs the first {max(window // 10, 1)} "
            f"steps of the {window}-step window received less than {VANISHING_RATIO:g} of the gradient of the "
            f"last step (median {float(np.median(ratios)):.1e}), so they barely shaped the weights. {advice}")})
    return notes
