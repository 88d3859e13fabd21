"""Numerical validation: every artifact's outputs against the PyTorch reference.

Metrics per output (and per state tensor): max, mean and p99 absolute error,
max relative error, RMSE, relative L2 error, cosine similarity, PSNR, error by
time step for all-steps outputs, and a NaN/Inf check. An element fails only
when it exceeds both the absolute and the relative tolerance. Quantized
artifacts are judged on the aggregate gates of their :class:`Tolerance`.
All failures are collected, then reported once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge_lstm.errors import ValidationFailed
from edge_lstm.spec import Tolerance

_EPS = 1e-12


@dataclass
class OutputMetrics:
    """How one output of one artifact compares with the reference."""

    name: str
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    rmse: float
    rel_l2: float
    cosine: float
    psnr: float
    non_finite: int
    elements: int
    failing_elements: int
    by_timestep: list[float] | None = None
    atol: float | None = None  #: the absolute tolerance applied (scaled with the output's peak when asked)
    passed: bool = True
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (infinite PSNR written as null)."""
        d = asdict(self)
        d["psnr"] = None if not np.isfinite(self.psnr) else self.psnr
        return d


def compare(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance, time_axis: int | None = None) -> OutputMetrics:
    """Compare one output over all validation samples and apply the tolerance rule."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        return _shape_mismatch(name, ref, got)
    finite = np.isfinite(got)
    non_finite = int((~finite).sum())
    ref_non_finite = int((~np.isfinite(ref)).sum())
    diff = np.abs(np.where(finite, got, 0.0) - ref)
    rel = diff / np.maximum(np.abs(ref), _EPS)
    ref_l2 = float(np.linalg.norm(ref))
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    rmse = float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0
    denom = float(np.linalg.norm(ref) * np.linalg.norm(got))
    cosine = float(np.sum(ref * got) / denom) if denom > 0 else (1.0 if not diff.any() else 0.0)
    atol = tol.atol_for(peak if np.isfinite(peak) else 0.0)  # a NaN reference is reported below
    failing = int(np.sum(~(diff <= atol) & ~(diff <= tol.rtol * np.abs(ref))))  # NaN fails both
    m = OutputMetrics(
        name=name,
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        p99_abs=float(np.percentile(diff, 99)) if diff.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        rmse=rmse,
        rel_l2=float(np.linalg.norm(diff) / ref_l2) if ref_l2 > 0 else float(np.linalg.norm(diff)),
        cosine=cosine,
        psnr=float(20 * np.log10(peak / rmse)) if rmse > 0 and peak > 0 else float("inf"),
        non_finite=non_finite,
        elements=int(ref.size),
        failing_elements=failing,
        by_timestep=_by_timestep(diff, time_axis),
        atol=atol if tol.elementwise else None,
    )
    if ref_non_finite:
        m.reasons.append(f"the PyTorch reference itself produced {ref_non_finite} NaN/Inf value(s)")
    _judge(m, tol, atol)
    return m


def _shape_mismatch(name: str, ref: np.ndarray, got: np.ndarray) -> OutputMetrics:
    inf = float("inf")
    return OutputMetrics(name, inf, inf, inf, inf, inf, inf, 0.0, 0.0, 0, int(ref.size), int(ref.size),
                         passed=False, reasons=[f"shape {got.shape} != reference {ref.shape}"])


def _by_timestep(diff: np.ndarray, time_axis: int | None) -> list[float] | None:
    if time_axis is None or diff.ndim <= time_axis or diff.shape[time_axis] <= 1:
        return None
    moved = np.moveaxis(diff, time_axis, 0).reshape(diff.shape[time_axis], -1)
    return [float(v) for v in moved.max(axis=1)]


def _judge(m: OutputMetrics, tol: Tolerance, atol: float) -> None:
    if not np.isfinite(m.max_abs) and not m.reasons:
        m.reasons.append("errors are not finite")
    if m.non_finite:
        m.reasons.append(f"{m.non_finite} NaN/Inf value(s)")
    if tol.elementwise and m.failing_elements:
        m.reasons.append(
            f"{m.failing_elements}/{m.elements} elements exceed atol {atol:g}"
            + (f" ({tol.magnitude:g} of the output's peak)" if atol != tol.atol else "") + f" and rtol {tol.rtol:g}"
        )
    if tol.min_cosine is not None and m.cosine < tol.min_cosine:
        m.reasons.append(f"cosine {m.cosine:.5f} < {tol.min_cosine}")
    if tol.max_rel_l2 is not None and m.rel_l2 > tol.max_rel_l2:
        m.reasons.append(f"relative L2 {m.rel_l2:.4g} > {tol.max_rel_l2}")
    if tol.min_psnr is not None and m.psnr < tol.min_psnr:
        m.reasons.append(f"PSNR {m.psnr:.1f} dB < {tol.min_psnr} dB")
    m.passed = not m.reasons


@dataclass
class TaskMetrics:
    """The task metric of the float model and of one artifact on labelled data."""

    metric: str  # "mae" for forecasters, "accuracy" for classifiers
    reference: float
    artifact: float
    extra: dict[str, float] = field(default_factory=dict)
    #: the artifact's next-step forecasts in the data's units, one per window (for the report's plots; not in
    #: to_dict: the report keeps them once, under "accuracy")
    forecasts: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def drop(self) -> float:
        """Relative worsening versus the float model (positive is worse)."""
        if self.metric in ("accuracy", "top1_agreement"):  # higher is better
            return (self.reference - self.artifact) / max(self.reference, _EPS)
        return (self.artifact - self.reference) / max(abs(self.reference), _EPS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"metric": self.metric, "reference": self.reference, "artifact": self.artifact,
                "drop": self.drop, **self.extra}


def forecast_task(ref_pred: np.ndarray, art_pred: np.ndarray, target: np.ndarray) -> TaskMetrics:
    """MAE (and RMSE) of next-step forecasts, both in the data's units."""
    ref_err = ref_pred.reshape(len(target), -1)[:, 0] - target
    art_err = art_pred.reshape(len(target), -1)[:, 0] - target
    return TaskMetrics(
        "mae", float(np.mean(np.abs(ref_err))), float(np.mean(np.abs(art_err))),
        {"rmse_reference": float(np.sqrt(np.mean(ref_err**2))), "rmse_artifact": float(np.sqrt(np.mean(art_err**2)))},
        forecasts=art_err + target,
    )


def classify_task(ref_logits: np.ndarray, art_logits: np.ndarray, labels: np.ndarray | None) -> TaskMetrics:
    """Accuracy against labels; without labels, top-1 agreement with the float model (the float model is 1.0)."""
    ref_top = ref_logits.reshape(len(ref_logits), -1).argmax(axis=1)
    art_top = art_logits.reshape(len(art_logits), -1).argmax(axis=1)
    agreement = float(np.mean(ref_top == art_top))
    if labels is None:
        return TaskMetrics("top1_agreement", 1.0, agreement)
    truth = labels.astype(int)
    return TaskMetrics("accuracy", float(np.mean(ref_top == truth)), float(np.mean(art_top == truth)),
                       {"top1_agreement": agreement})


@dataclass
class ArtifactValidation:
    """Validation of one artifact: per-output metrics, optional task metric, verdict."""

    artifact: str
    runtime: str
    tolerance: Tolerance
    outputs: list[OutputMetrics]
    samples: int
    data_source: str
    task: TaskMetrics | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def task_failed(self) -> bool:
        """True when the task metric dropped more than the tolerance allows."""
        gate = self.tolerance.max_task_drop
        return bool(self.task is not None and gate is not None and self.task.drop > gate)

    @property
    def passed(self) -> bool:
        """True when every output and the task gate pass."""
        return all(o.passed for o in self.outputs) and not self.task_failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "runtime": self.runtime,
            "passed": self.passed,
            "samples": self.samples,
            "data": self.data_source,
            "tolerance": self.tolerance.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
            "task": self.task.to_dict() if self.task else None,
            "notes": self.notes,
        }


def validate_outputs(
    artifact: str,
    runtime: str,
    reference: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    tol: Tolerance,
    time_axes: dict[str, int] | None = None,
) -> list[OutputMetrics]:
    """Compare every reference output (stacked over samples) with the artifact's."""
    metrics = []
    for name, ref in reference.items():
        if name not in actual:
            m = _shape_mismatch(name, ref, np.empty(0))
            m.reasons = [f"{artifact} ({runtime}) has no output '{name}'"]
            metrics.append(m)
            continue
        axis = (time_axes or {}).get(name)
        metrics.append(compare(name, ref, actual[name], tol.for_output(name), axis))
    return metrics


def raise_on_failures(results: list[ArtifactValidation], int8: frozenset[str] = frozenset()) -> None:
    """Collect every failure into one table and raise :class:`ValidationFailed` (exit 3); ``int8``: the
    artifacts that are full int8 (a failure there names the 16-bit-activation precision that may hold)."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return
    rows = ["artifact | runtime | output | max abs | rel L2 | cosine | why",
            "--- | --- | --- | --- | --- | --- | ---"]
    for r in failed:
        for o in r.outputs:
            if not o.passed:
                rows.append(f"{r.artifact} | {r.runtime} | {o.name} | {o.max_abs:.3g} | {o.rel_l2:.3g} | "
                            f"{o.cosine:.6f} | " + "; ".join(o.reasons))
        if r.task_failed and r.task:
            rows.append(f"{r.artifact} | {r.runtime} | task {r.task.metric} | | | | "
                        f"{r.task.artifact:.4g} vs float {r.task.reference:.4g}: drop {r.task.drop:.2%} > "
                        f"{r.tolerance.max_task_drop:.2%}")
    n_failed, n_all = len({r.artifact for r in failed}), len({r.artifact for r in results})
    advice = ("Full int8 (8-bit activations) failed: --precision int16x8 (16-bit activations, int8 weights; fused "
              "for TFLite Micro, loop for LiteRT) often keeps a recurrent model within 1% where int8 does not; it is "
              "validated the same way.") if any(r.artifact in int8 for r in failed) else ""
    raise ValidationFailed(
        f"{n_failed} of {n_all} artifact(s) failed validation.",
        "\n".join(rows),
        "See report.md for every metric; loosen a tolerance in your recipe only if the drop is acceptable.",
        advice,
    )
