"""The ``tune`` command: a thin wrapper over :func:`edge_lstm.tune_run.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_lstm import jsonio
from edge_lstm.cli_train import (
    DataArg,
    Features,
    ForceOpt,
    Horizon,
    JsonOpt,
    LabelCol,
    LabelFrom,
    SeedOpt,
    SplitOpt,
    TargetCol,
    TaskOpt,
    Transform,
    out,
    parse_split,
    split_list,
)


def register(app: typer.Typer) -> None:
    """Add ``tune`` to ``app``."""
    app.command("tune")(tune_command)

def _ints(text: str, name: str) -> tuple[int, ...]:
    from edge_lstm.errors import UsageError

    try:
        return tuple(int(v) for v in split_list(text))
    except ValueError:
        raise UsageError(f"Cannot read --{name} '{text}'.",
                         "Give integers separated by commas, e.g. 16,32,64.") from None


def _range(text: str, name: str) -> tuple[float, float]:
    from edge_lstm.errors import UsageError

    try:
        values = [float(v) for v in split_list(text)]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise UsageError(f"Cannot read --{name} '{text}'.", "Give low,high (or one value to fix it).")
    return values[0], values[-1]


def tune_command(
    data: DataArg,
    target: Annotated[str, typer.Option("--target", help="Device target name (rpi4b, stm32h7, ...; a unique prefix "
                                                         "such as rpi4 works) or a target .toml.")],
    target_column: TargetCol = None,
    features: Features = None,
    task: TaskOpt = "forecast",
    label_column: LabelCol = None,
    label_from: LabelFrom = "last",
    horizon: Horizon = 1,
    target_transform: Transform = "level",
    split: SplitOpt = "0.7,0.15",
    stride: Annotated[int, typer.Option(help="Steps between consecutive training windows.")] = 1,
    cells: Annotated[str, typer.Option(help="Cells to search, comma-separated.")] = "lstm,gru",
    hidden: Annotated[str, typer.Option(help="Hidden sizes to search.")] = "16,32,64",
    layers: Annotated[str, typer.Option(help="Layer counts to search.")] = "1,2",
    windows: Annotated[str, typer.Option(help="Window lengths to search.")] = "24,48,96",
    lr_range: Annotated[str, typer.Option(help="Learning-rate range low,high (log scale).")] = "3e-4,1e-2",
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes to search.")] = "32,64,128",
    dropout_range: Annotated[str, typer.Option(help="Dropout range low,high.")] = "0,0.3",
    epochs: Annotated[int, typer.Option(help="Maximum epochs per trial.")] = 10,
    patience: Annotated[int, typer.Option(help="Early-stopping patience per trial (epochs).")] = 3,
    max_steps: Annotated[int | None, typer.Option(help="Cap on optimiser steps per epoch (small trials).")] = None,
    precision: Annotated[str | None, typer.Option(help="Export precision (default: the target's preferred).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="onnx or tflite (default: tflite when the target runs "
                                                             "a TFLite runtime).")] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Latency budget per window (target estimate).")] = None,
    max_flash_kb: Annotated[float | None, typer.Option(help="Flash budget (artifact size), KiB.")] = None,
    max_ram_kb: Annotated[float | None, typer.Option(help="RAM budget (MCU arena, else peak RSS), KiB.")] = None,
    trials: Annotated[int, typer.Option(help="Finished trials the study should hold.")] = 20,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine (0: one per CPU core).")] = 0,
    storage: Annotated[str | None, typer.Option(help="Study storage shared by workers on any machine: "
                                                     "sqlite:///path.db or postgresql://user@host:port/db "
                                                     "(default: study.db in the output).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name to create or join.")] = None,
    pick: Annotated[str, typer.Option(help="Which Pareto-optimal model to keep: accurate, smallest, fastest, or a "
                                           "trial number.")] = "accurate",
    heartbeat: Annotated[int, typer.Option(help="Seconds between a worker's heartbeats; a trial silent for twice "
                                                "this is marked failed.")] = 10,
    seed: SeedOpt = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory (refused if it exists unless "
                                                                "--force).")] = Path("tuned"),
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Search models for a device budget with Optuna: train, export, validate and measure every trial."""
    from edge_lstm import dataset, tune
    from edge_lstm.train import TrainConfig
    from edge_lstm.tune_run import run

    opts = dataset.DataOptions(task, target_column, label_column, split_list(features), 24, horizon, stride,
                               target_transform, label_from, parse_split(split))
    base = TrainConfig(opts, epochs=epochs, patience=patience, seed=seed, max_steps_per_epoch=max_steps)
    space = tune.Space(split_list(cells), _ints(hidden, "hidden"), _ints(layers, "layers"),
                       _ints(windows, "windows"), _range(lr_range, "lr-range"), _ints(batch_sizes, "batch-sizes"),
                       _range(dropout_range, "dropout-range"))
    cfg = tune.TuneConfig(data, base, target, precision, fmt, tune.Budget(max_latency_ms, max_flash_kb, max_ram_kb),
                          space, trials, workers, storage, study, pick, heartbeat)
    from edge_lstm.outputs import shown

    output = shown(output)  # printed as written: a/../c as c
    summary = run(cfg, output, force, quiet=as_json)
    if as_json:
        jsonio.emit(summary)
    else:
        out.print(human(summary, output))


def human(s: dict[str, Any], output: Path) -> str:
    """The Pareto front and the pick, for people."""
    from edge_lstm.tune_report import describe_params

    rows = {r["number"]: r for r in s["trials"]}
    lines = [f"Study {s['study']}: {s['counts']}; target {s['target']}, {s['format']} {s['precision']}; "
             f"budgets: {s['budgets']}.", "Pareto-optimal feasible trials (val error, latency estimate, size):"]
    for n in s["pareto"]:
        r = rows[n]
        lines.append(f"  trial {n:>3}: {describe_params(r['params']):<36} {r['val_error']:.4g}  "
                     f"{r['latency_ms']:.3g} ms  {r['size_kb']:,.1f} KiB")
    infeasible = [r for r in s["trials"] if r["state"] == "COMPLETE" and not r["feasible"]]
    lines.append(f"{len(infeasible)} measured trial(s) infeasible; every reason is in report.html.")
    c = s["chosen"]
    lines.append(f"Chosen: trial {c['number']} ({s['pick_rule']}); retrained bit-exact: {c['reproduced_bit_exact']}.")
    lines.append(f"Wrote {output / 'model.pt'}, {output / 'export'}, {output / 'report.html'} and "
                 f"{output / 'report.json'}")
    return "\n".join(lines)
