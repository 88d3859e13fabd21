"""``edge-lstm tune``: a device-aware, multi-objective search over recurrent models with Optuna.

Each trial trains a model (:mod:`edge_lstm.train`), exports it at the requested
precision through the export pipeline (:func:`edge_lstm.pipeline.export`: the
artifact is validated against PyTorch and profiled in a fresh process), and
scores it on three objectives, all minimised: the validation error in the data's
units, the target's latency estimate, and the artifact's size. A trial over a
budget (latency, flash, RAM) is kept with constraint values > 0 and its reasons,
so Optuna's sampler and Pareto front treat it as infeasible; a trial that cannot
be exported fails with its reason. Hopeless trials are pruned on validation loss
(:mod:`edge_lstm.tune_prune`). The study lives in an Optuna storage, so worker
processes on one machine or many share it (:mod:`edge_lstm.tune_workers`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm import dataset
from edge_lstm.errors import EdgeLstmError, UsageError
from edge_lstm.train import TrainConfig

if TYPE_CHECKING:
    import optuna

    from edge_lstm.targets import Target

OBJECTIVES = ("val_error", "latency_ms", "size_kb")
PICKS = ("accurate", "smallest", "fastest")


@dataclass(frozen=True)
class Space:
    """The search space: categorical choices and log/linear ranges."""

    cells: tuple[str, ...] = ("lstm", "gru")
    hidden: tuple[int, ...] = (16, 32, 64)
    layers: tuple[int, ...] = (1, 2)
    windows: tuple[int, ...] = (24, 48, 96)
    lr: tuple[float, float] = (3e-4, 1e-2)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    dropout: tuple[float, float] = (0.0, 0.3)

    def check(self) -> None:
        """Refuse an empty or impossible space."""
        from edge_lstm.archs import CELLS

        bad = [c for c in self.cells if c not in CELLS]
        if bad or not self.cells:
            raise UsageError(f"--cells has {bad or 'nothing'}.", f"Accepted: {', '.join(CELLS)}.")
        for name in ("hidden", "layers", "windows", "batch_sizes"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise UsageError(f"--{name.replace('_', '-')} needs positive integers, got {list(values)}.")
        if not (0 < self.lr[0] <= self.lr[1]) or not (0 <= self.dropout[0] <= self.dropout[1] < 1):
            raise UsageError(f"Bad ranges: lr {self.lr}, dropout {self.dropout}.",
                             "Give lr as low,high with 0 < low <= high; dropout in [0, 1).")

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """One point of the space, drawn by the study's sampler."""
        p: dict[str, Any] = {
            "cell": trial.suggest_categorical("cell", list(self.cells)),
            "hidden": trial.suggest_categorical("hidden", list(self.hidden)),
            "layers": trial.suggest_categorical("layers", list(self.layers)),
            "window": trial.suggest_categorical("window", list(self.windows)),
            "batch_size": trial.suggest_categorical("batch_size", list(self.batch_sizes)),
        }
        p["lr"] = self.lr[0] if self.lr[0] == self.lr[1] else trial.suggest_float("lr", *self.lr, log=True)
        lo, hi = self.dropout
        p["dropout"] = lo if lo == hi else trial.suggest_float("dropout", lo, hi)
        return p


@dataclass(frozen=True)
class Budget:
    """Limits on the target; ``None`` keeps the target file's own flash/RAM budget (and no latency limit)."""

    max_latency_ms: float | None = None
    max_flash_kb: float | None = None
    max_ram_kb: float | None = None

    def check(self) -> None:
        """Refuse a budget that is not a positive finite number (a negative one would flip every constraint)."""
        for name in ("max_latency_ms", "max_flash_kb", "max_ram_kb"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise UsageError(f"--{name.replace('_', '-')} is {v}: a budget must be a positive finite number.",
                                 "Give it in the option's unit (ms or KiB), or leave it out to keep the "
                                 "target's own budget.")


@dataclass(frozen=True)
class TuneConfig:
    """A whole tuning run."""

    data: Path
    base: TrainConfig  # data options, epochs, patience, seed...; the searched fields are replaced per trial
    target: str = "rpi4b"
    precision: str | None = None  # default: the target's preferred precision
    fmt: str | None = None  # default: tflite when the target runs a TFLite runtime, else onnx
    budget: Budget = field(default_factory=Budget)
    space: Space = field(default_factory=Space)
    trials: int = 20
    workers: int = 0  # 0: one per CPU core
    storage: str | None = None
    study: str | None = None
    pick: str = "accurate"
    heartbeat_s: int = 10

    def check(self) -> None:
        """Refuse impossible settings before any work."""
        self.base.check()
        self.space.check()
        self.budget.check()
        if self.trials < 1 or self.workers < 0:
            raise UsageError("--trials must be at least 1 and --workers at least 0.")
        if self.pick not in PICKS and not self.pick.isdigit():
            raise UsageError(f"Unknown --pick '{self.pick}'.", f"Accepted: {', '.join(PICKS)}, or a trial number.")
        if self.heartbeat_s < 1:
            raise UsageError("--heartbeat must be at least 1 second.")

    def settings(self) -> dict[str, Any]:
        """What every process joining the study must agree on (stored in the study)."""
        return {"base": self.base.to_dict(), "target": self.target, "precision": self.precision,
                "format": self.fmt, "budget": dataclasses.asdict(self.budget),
                "space": dataclasses.asdict(self.space), "trials": self.trials}


def resolve_target(name: str) -> Target:
    """A target by name, path, or a unique prefix of a built-in name (``rpi4`` -> ``rpi4b``):
    :func:`edge_lstm.targets.load_target`."""
    from edge_lstm.targets import load_target

    return load_target(name)


def export_choice(cfg: TuneConfig, target: Target) -> tuple[str, str]:
    """The format and precision trials are exported at (checked: a bad one stops before any trial)."""
    from edge_lstm import registry
    from edge_lstm.recipes import SUPPORTED, check_formats, parse_precision

    tflite_runtimes = {r.name for r in registry.runtimes_for("tflite")}
    fmt = cfg.fmt or ("tflite" if tflite_runtimes & set(target.runtimes) else "onnx")
    check_formats([fmt])
    precision = parse_precision(cfg.precision or target.preferred_precision)
    if precision not in SUPPORTED[fmt]:
        raise UsageError(f"--precision {precision.value} is not available for --format {fmt}.",
                         f"{fmt} holds {', '.join(p.value for p in SUPPORTED[fmt])}.")
    return fmt, precision.value


def budgeted_target(target: Target, budget: Budget) -> Target:
    """The target with ``--max-flash-kb`` / ``--max-ram-kb`` in place of its own budgets."""
    changes: dict[str, Any] = {}
    if budget.max_flash_kb is not None:
        changes["flash_budget_bytes"] = int(budget.max_flash_kb * 1024)
    if budget.max_ram_kb is not None:
        changes["ram_budget_bytes"] = int(budget.max_ram_kb * 1024)
    return dataclasses.replace(target, **changes)


class TrialFailed(Exception):
    """A trial that could not produce a model to measure (the reason is in the trial's attributes)."""


@dataclass
class Context:
    """What one worker process needs for its trials: the config, the table, the export inputs."""

    cfg: TuneConfig
    table: dataset.Table
    target: Target
    workdir: Path
    quiet: bool = False

    @property
    def data_files(self) -> tuple[Path, Path]:
        """Validation and calibration series (the feature columns of the val and train parts), for the export."""
        return self.workdir / "data" / "val.csv", self.workdir / "data" / "train.csv"


def trial_config(cfg: TuneConfig, params: dict[str, Any]) -> TrainConfig:
    """The base training config with one trial's parameters."""
    data = dataclasses.replace(cfg.base.data, window=int(params["window"]))
    return dataclasses.replace(cfg.base, data=data, cell=params["cell"], hidden=int(params["hidden"]),
                               layers=int(params["layers"]), batch_size=int(params["batch_size"]),
                               lr=float(params["lr"]), dropout=float(params["dropout"]), find_lr=False)


def write_export_data(ctx: Context) -> None:
    """The feature columns of the validation and training rows as CSVs the export reads (idempotent)."""
    from edge_lstm.outputs import write_bytes_atomic

    prep = dataset.prepare(ctx.table, dataclasses.replace(ctx.cfg.base.data, window=min(ctx.cfg.space.windows)))
    val, calib = ctx.data_files
    val.parent.mkdir(parents=True, exist_ok=True)
    for path, (lo, hi) in ((val, prep.split.val), (calib, prep.split.train)):
        cols = [ctx.table.column(f) for f in prep.features]
        lines = [",".join(prep.features)] + [",".join(c[i].strip() for c in cols) for i in range(lo, hi)]
        if not path.exists():
            write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def worker_tag() -> dict[str, Any]:
    """Who runs a trial: host and process id (used to fail the trial of a worker that died)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def objective(trial: optuna.Trial, ctx: Context) -> tuple[float, float, float]:
    """Train, export, validate and measure one trial; return its three objective values."""
    from edge_lstm import train_io
    from edge_lstm.train import train
    from edge_lstm.tune_prune import PruningProgress

    params = ctx.cfg.space.suggest(trial)
    trial.set_user_attr("worker", worker_tag())
    tcfg = trial_config(ctx.cfg, params)
    try:
        result = train(ctx.table, tcfg, PruningProgress(trial, tcfg, ctx.table))
    except EdgeLstmError as e:  # diverged, or a window too long for the data
        trial.set_user_attr("failure", f"training failed: {e.message}")
        raise TrialFailed(e.message) from e
    tdir = ctx.workdir / "trials" / f"{trial.number:04d}"
    tdir.mkdir(parents=True, exist_ok=True)
    from edge_lstm.outputs import write_bytes_atomic

    ckpt = train_io.checkpoint_bytes(result, "model")  # the name the chosen one is saved under: same bytes
    write_bytes_atomic(tdir / "model.pt", ckpt)
    err = _val_error(result)
    trial.set_user_attr("train", {"val_error": err, "best_epoch": result.log["best_epoch"],
                                  "epochs_run": len(result.log["epochs"]), "test": _test_brief(result.test),
                                  "checkpoint_sha256": hashlib.sha256(ckpt).hexdigest(),
                                  "notes": [n["kind"] for n in result.notes]})
    try:
        measured = measure(tdir, ctx)
    except TrialFailed as e:
        trial.set_user_attr("failure", str(e))
        raise
    trial.set_user_attr("measured", measured)
    for key, value in measured["constraints"].items():
        trial.set_constraint(key, value)
    if not ctx.quiet:
        from edge_lstm.tune_report import trial_line

        done = sum(1 for t in trial.study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED"))
        print(f"[{done + 1}/{ctx.cfg.trials}] " + trial_line(trial.number, params, err, measured,
                                                           result.prepared.task), flush=True)
    return err, measured["latency_ms"], measured["size_kb"]


def _val_error(result: Any) -> float:
    """The first objective: validation MAE in the data's units (forecast) or 1 - macro-F1 (classify)."""
    from edge_lstm.train import Windows, evaluate

    prep = result.prepared
    m = evaluate(result.model, prep, Windows(prep, prep.starts["val"]), None)
    return float(m["model"]["mae"]) if prep.task == "forecast" else 1.0 - float(m["model"]["macro_f1"])


def _test_brief(test: dict[str, Any]) -> dict[str, Any]:
    keys = ("mae", "rmse", "accuracy", "macro_f1")
    return {k: {m: v for m, v in test[k].items() if m in keys} for k in test
            if isinstance(test[k], dict) and k not in ("sample",) and any(m in test[k] for m in keys)}


def measure(tdir: Path, ctx: Context) -> dict[str, Any]:
    """Export the trial's checkpoint at the requested precision, validate, profile, check the budgets."""
    from edge_lstm.errors import BudgetExceeded, ValidationFailed
    from edge_lstm.pipeline import ExportOptions, export
    from edge_lstm.profile import apply_target
    from edge_lstm.recipes import load_recipe

    fmt, precision = export_choice(ctx.cfg, ctx.target)
    recipe = load_recipe("default").with_overrides(formats=[fmt], precisions=[precision],
                                                   lowering=ctx.target.preferred_lowering)
    val, calib = ctx.data_files
    target = budgeted_target(ctx.target, ctx.cfg.budget)
    # the target goes into the export, so a microcontroller's trial is profiled on TFLite Micro (its arena is
    # the RAM figure) and its budgets are checked as `export --target` checks them
    opts = ExportOptions(output_dir=tdir / "export", recipe=recipe, data=val,
                         calib=str(calib) if precision == "int8" else None,
                         profile=True, force=True, target=target, html=False)
    try:
        report = export(tdir / "model.pt", opts).report
        passed, why = True, ""
    except ValidationFailed as e:
        report = json.loads((tdir / "export" / "report.json").read_text())
        passed, why = False, f"validation failed: {e.message}"
    except BudgetExceeded:  # recorded as infeasible below, from the budget checks
        report = json.loads((tdir / "export" / "report.json").read_text())
        passed, why = True, ""
    except EdgeLstmError as e:
        raise TrialFailed(f"export at {precision} {fmt} failed: {e.message}") from e
    prof = report["profile"]
    apply_target(prof, target)
    return measurement(prof["artifacts"][0], report["artifacts"][0], ctx, passed, why)


def measurement(entry: dict[str, Any], artifact: dict[str, Any], ctx: Context, passed: bool,
                why: str) -> dict[str, Any]:
    """Sizes, compute, latencies and budget constraints of one exported artifact (constraint > 0: over)."""
    est = entry.get("estimate") or {}
    latency_ms = float(est.get("latency_s", entry["latency_s"]["p50"])) * 1e3
    reasons = [f"{c['budget']}: {c['note']}" if c.get("note") else
               f"{c['budget']} {c['used_bytes'] / 1024:,.1f} KiB over the budget {c['budget_bytes'] / 1024:,.1f} KiB"
               for c in entry.get("budget") or [] if c["status"] == "over"]
    constraints = {c["budget"]: (c["used_bytes"] - c["budget_bytes"]) / c["budget_bytes"]
                   for c in entry.get("budget") or [] if c["status"] in ("ok", "over")}
    if ctx.target.kind == "mcu":  # a microcontroller budget counts only when TFLite Micro measured it
        for c in entry.get("budget") or []:
            if c["budget"] in ("flash", "ram") and c["status"] not in ("ok", "over"):
                constraints[c["budget"]] = 1.0
                reasons.append(f"{c['budget']} {c['status']} on {ctx.target.name}: {c.get('note') or c['measure']}")
    limit = ctx.cfg.budget.max_latency_ms
    if limit is not None:
        constraints["latency"] = (latency_ms - limit) / limit
        if latency_ms > limit:
            reasons.append(f"latency {latency_ms:.3g} ms (estimate on {ctx.target.name}) over the limit {limit:g} ms")
    constraints["validation"] = 0.0 if passed else 1.0
    if not passed:
        reasons.append(why)
    task = next((v["task"] for v in artifact["validation"] if v.get("task")), None)
    return {
        "artifact": artifact["file"], "precision": artifact["precision"], "size_kb": artifact["size_bytes"] / 1024,
        "macs": (entry.get("cost") or {}).get("macs"), "params": (entry.get("cost") or {}).get("params"),
        "latency_ms": latency_ms, "latency_source": "estimate" if est else "measured on this host",
        "host_p50_ms": entry["latency_s"]["p50"] * 1e3, "peak_ram_kb": _kb(entry["memory"].get("peak_rss_bytes")),
        "arena_kb": _kb(entry.get("arena_bytes")), "validation_passed": passed, "artifact_task": task,
        "constraints": constraints, "feasible": all(v <= 0 for v in constraints.values()), "reasons": reasons,
    }


def _kb(v: int | None) -> float | None:
    return None if v is None else v / 1024
