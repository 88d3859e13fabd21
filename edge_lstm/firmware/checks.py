"""Proof and budgets for the firmware: generated C against the reference, and flash/RAM against the target.

The reference is given by the caller (``export --firmware`` passes the PyTorch
outputs on its validation windows) or computed here with ONNX Runtime on the
captured float32 ONNX, on seeded random windows. The window API must match the
reference outputs; the streaming API, fed the same window one step at a time
from a reset, must match every step of a per-step output and the last step of a
last-step output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.errors import BudgetExceeded
from edge_lstm.firmware.program import Program
from edge_lstm.spec import Tolerance
from edge_lstm.validate import ArtifactValidation, OutputMetrics, compare


@dataclass
class Reference:
    """Input windows (ONNX input layout, batch 1 each) and the reference outputs by name."""

    windows: np.ndarray  # [N, *input shape]
    outputs: dict[str, np.ndarray]  # name -> [N, *output shape]
    source: str  # where the windows came from and what computed the outputs

    @property
    def count(self) -> int:
        """Number of windows."""
        return int(self.windows.shape[0])

    def flat_windows(self, n: int | None = None) -> np.ndarray:
        """The windows as ``[N, steps, features]`` float32 (time-major, as the C API reads them)."""
        w = self.windows[:n] if n else self.windows
        return np.ascontiguousarray(w, np.float32).reshape(len(w), -1)


def reference_from_onnx(onnx_bytes: bytes, prog: Program, count: int, seed: int) -> Reference:
    """Seeded N(0, 1) windows (normalised units) run through ONNX Runtime on the float32 ONNX."""
    from edge_lstm.runners.onnxrt import OnnxRuntimeRunner

    rng = np.random.default_rng(seed)
    windows = rng.standard_normal((count, *prog.input_shape)).astype(np.float32)
    outs: dict[str, list[np.ndarray]] = {}
    with OnnxRuntimeRunner(onnx_bytes) as runner:
        for w in windows:
            for k, v in runner.infer({prog.input_name: w}).items():
                outs.setdefault(k, []).append(np.asarray(v, np.float32))
    return Reference(windows, {k: np.stack(v) for k, v in outs.items()},
                     f"{count} random windows N(0, 1) (seed {seed}), reference ONNX Runtime on the float32 ONNX")


def _split_window(prog: Program, y: np.ndarray) -> dict[str, np.ndarray]:
    """A window output ``[N, window_out]`` split per graph output, each ``[N, ...]`` flat per window."""
    out, off = {}, 0
    for o in prog.outputs:
        n = o.size * (prog.window if o.phase == "seq" else 1)
        out[o.name] = y[:, off:off + n]
        off += n
    return out


def _split_stream(prog: Program, y: np.ndarray) -> dict[str, np.ndarray]:
    """Step outputs ``[N, steps, step_out]``: per-step outputs at every step, last-step ones at the last."""
    out, off = {}, 0
    for o in prog.outputs:
        part = y[:, :, off:off + o.size]
        out[o.name] = part.reshape(len(y), -1) if o.phase == "seq" else part[:, -1, :]
        off += o.size
    return out


def judge(prog: Program, ref: Reference, window_out: np.ndarray | None, stream_out: np.ndarray | None,
          tol: Tolerance, artifact: str, where: str) -> list[ArtifactValidation]:
    """Validations of the window API and the streaming API against ``ref`` (the first rows of each)."""
    results = []
    for api, got, split in (("window", window_out, _split_window), ("stream", stream_out, _split_stream)):
        if got is None:
            continue
        n = len(got)
        exp = {o.name: ref.outputs[o.name][:n].reshape(n, -1) for o in prog.outputs}  # same layout for both APIs
        parts = split(prog, np.asarray(got, np.float32))
        metrics: list[OutputMetrics] = [compare(name, exp[name], parts[name], tol.for_output(name))
                                        for name in exp]
        results.append(ArtifactValidation(artifact, f"{where} ({api} API)", tol, metrics, n, ref.source))
    return results


def summary(validations: list[ArtifactValidation]) -> list[dict[str, Any]]:
    """JSON-ready validations."""
    return [{"artifact": v.artifact, **v.to_dict()} for v in validations]


def budget(kind: str, used: int | None, limit: int, measure: str) -> dict[str, Any]:
    """One budget check (the same shape as ``edge_lstm.profile``'s): ok or over, and by how much."""
    if used is None:
        return {"budget": kind, "status": "skipped", "measure": measure}
    over = int(used) - int(limit)
    return {"budget": kind, "status": "over" if over > 0 else "ok", "measure": measure, "used_bytes": int(used),
            "budget_bytes": int(limit), "over_bytes": max(over, 0), "headroom_bytes": max(-over, 0)}


def enforce_budgets(report: dict[str, Any]) -> None:
    """:class:`BudgetExceeded` (exit 4) naming every path and budget (flash or RAM) that is over, and by how much."""
    lines = []
    for entry in [*report.get("c", []), *report.get("tflm", [])]:
        for c in entry.get("budget") or []:
            if c["status"] == "over":
                lines.append(f"{entry['label']}: {'RAM' if c['budget'] == 'ram' else 'flash'} {c['used_bytes']:,} B "
                             f"({c['measure']}) exceeds the budget of {c['budget_bytes']:,} B by {c['over_bytes']:,} B "
                             f"({c['over_bytes'] / c['budget_bytes']:.1%})")
    if lines:
        name = (report.get("target") or {}).get("name", "the target")
        raise BudgetExceeded(f"Over budget on {name}:\n  " + "\n  ".join(lines),
                             "Try --precision int8-weights (a quarter of the weight bytes), a smaller hidden size or "
                             "fewer layers, or a larger target.")
