"""A whole ``edge-lstm tune`` run: open or join the study, run the workers, summarise, pick, write.

Output (``-o``, staged and published atomically like ``export``): ``report.json``
and ``report.html`` (every trial, the Pareto front, the pick), ``model.pt`` with
``model.train.json`` and ``model.train.html`` (the chosen trial, trained again
from its parameters and checked byte for byte against the trial's checkpoint),
``export/`` (the chosen model exported at the tuned precision), and, when no
``--storage`` is given, ``study.db`` (the SQLite study, to resume or inspect).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm import dataset, tune_report, tune_workers
from edge_lstm.errors import BudgetExceeded, UsageError
from edge_lstm.tune import TuneConfig, budgeted_target, export_choice, resolve_target, trial_config

if TYPE_CHECKING:
    import optuna

PICK_RULES = {
    "accurate": "the Pareto-optimal feasible trial with the lowest validation error (ties: smaller, then faster)",
    "smallest": "the Pareto-optimal feasible trial with the smallest artifact (ties: lower error)",
    "fastest": "the Pareto-optimal feasible trial with the lowest latency estimate (ties: lower error)",
}


def study_name(cfg: TuneConfig, table: dataset.Table) -> str:
    """``--study`` or a name from the data's hash and the target."""
    return cfg.study or f"edge-lstm-{table.sha256[:10]}-{cfg.target}"


def run(cfg: TuneConfig, output: Path, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Tune as ``cfg`` says and write the outputs into ``output``; return the summary (``report.json``)."""
    from edge_lstm.outputs import staged_dir, write_into

    cfg.check()
    export_choice(cfg, resolve_target(cfg.target))  # an unknown target, format or precision stops here
    table = dataset.read_table(cfg.data)
    for w in sorted({min(cfg.space.windows), max(cfg.space.windows)}):  # bad data stops here, before any trial
        dataset.prepare(table, dataclasses.replace(cfg.base.data, window=w))
    name = study_name(cfg, table)
    with staged_dir(output, force) as stage:
        url = cfg.storage or f"sqlite:///{stage / 'study.db'}"
        tune_workers.open_study(cfg, url, name)
        tune_workers.run_workers(cfg, url, name, stage, quiet)
        study = tune_workers.open_study(cfg, url, name)
        summary = summarise(study, cfg, name)
        chosen = pick(summary, cfg.pick)
        summary["chosen"] = reproduce(cfg, table, chosen, stage, quiet)
        summary["storage"] = "study.db in this directory" if cfg.storage is None else tune_workers._redact(url)
        write_into(stage, "report.json", (json.dumps(summary, indent=2, default=str) + "\n").encode())
        write_into(stage, "report.html", tune_report.render(summary).encode())
    return summary


def summarise(study: optuna.Study, cfg: TuneConfig, name: str) -> dict[str, Any]:
    """Every trial as a row, the Pareto front of the feasible ones, and the counts."""
    target = resolve_target(cfg.target)
    fmt, precision = export_choice(cfg, target)
    rows = [tune_report.trial_row(t) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]
    feasible = {r["number"] for r in rows if r["feasible"]}
    pareto = sorted(t.number for t in study.best_trials if t.number in feasible)
    b = cfg.budget
    budgets = (f"flash {b.max_flash_kb or target.flash_budget_bytes / 1024:,.0f} KiB, RAM "
               f"{b.max_ram_kb or target.ram_budget_bytes / 1024:,.0f} KiB"
               + (f", latency {b.max_latency_ms:g} ms (target estimate)" if b.max_latency_ms else ", no latency limit")
               + f" on {target.name}")
    return {"tool": "edge-lstm tune", "study": name, "target": target.name, "format": fmt, "precision": precision,
            "task": cfg.base.data.task, "objectives": ["val_error", "latency_ms", "size_kb"],
            "counts": tune_workers.counts(study), "budgets": budgets, "pareto": pareto, "trials": rows,
            "pick_rule": PICK_RULES.get(cfg.pick, f"trial {cfg.pick}, as asked (--pick)")}


def pick(summary: dict[str, Any], rule: str) -> dict[str, Any]:
    """The chosen trial's row; no feasible trial is :class:`BudgetExceeded` naming the closest ones."""
    rows = summary["trials"]
    front = [r for r in rows if r["number"] in set(summary["pareto"])]
    if not front:
        raise _nothing_feasible(rows, summary)
    if rule.isdigit():
        match = [r for r in rows if r["number"] == int(rule) and r["feasible"]]
        if not match:
            raise UsageError(f"--pick {rule}: no feasible finished trial has that number.",
                             f"Feasible trials: {', '.join(str(r['number']) for r in rows if r['feasible'])}.")
        return match[0]
    keys = {"accurate": ("val_error", "size_kb", "latency_ms"), "smallest": ("size_kb", "val_error", "latency_ms"),
            "fastest": ("latency_ms", "val_error", "size_kb")}[rule]
    return min(front, key=lambda r: tuple(r[k] for k in keys))


def _nothing_feasible(rows: list[dict[str, Any]], summary: dict[str, Any]) -> Exception:
    measured = [r for r in rows if r["state"] == "COMPLETE"]
    if not measured:
        why = "; ".join(f"trial {r['number']} {r['state'].lower()}: {r['reason']}" for r in rows[:6])
        return UsageError(f"No trial finished with a measured model ({summary['counts']}): {why}",
                          "Widen the search space, train longer (--epochs), or check the data.")
    closest = sorted(measured, key=lambda r: r["reason"].count(";"))[:3]
    lines = "\n  ".join(f"trial {r['number']} ({tune_report.describe_params(r['params'])}): {r['size_kb']:,.1f} KiB, "
                        f"{r['latency_ms']:.3g} ms: {r['reason']}" for r in closest)
    return BudgetExceeded(f"No trial meets the budget ({summary['budgets']}). The closest:\n  {lines}",
                          "Loosen a budget, pick a larger target, use a smaller search space (--hidden, --windows) "
                          "or a lower precision (--precision int8).")


def reproduce(cfg: TuneConfig, table: dataset.Table, row: dict[str, Any], stage: Path, quiet: bool) -> dict[str, Any]:
    """Train the chosen trial again (training is deterministic), write it, export it; check the bytes repeat."""
    from edge_lstm import train_io
    from edge_lstm.pipeline import ExportOptions, export
    from edge_lstm.recipes import load_recipe
    from edge_lstm.train import train

    if not quiet:
        print(f"tune: training the chosen trial {row['number']} again for model.pt", flush=True)
    result = train(table, trial_config(cfg, row["params"]))
    paths = train_io.write_outputs(result, stage / "model.pt")
    sha = hashlib.sha256(paths["checkpoint"].read_bytes()).hexdigest()
    target = resolve_target(cfg.target)
    fmt, precision = export_choice(cfg, target)
    recipe = load_recipe("default").with_overrides(formats=[fmt], precisions=[precision],
                                                   lowering=target.preferred_lowering)
    val, calib = stage / "data" / "val.csv", stage / "data" / "train.csv"
    export(paths["checkpoint"], ExportOptions(output_dir=stage / "export", recipe=recipe,
                                              data=val if val.exists() else None,
                                              calib=str(calib) if precision == "int8" else None, profile=True,
                                              target=budgeted_target(target, cfg.budget)))
    return {**row, "checkpoint": "model.pt", "checkpoint_sha256_now": sha,
            "reproduced_bit_exact": sha == row["checkpoint_sha256"]}
