"""CLI command ``train``, registered onto the main typer app, and the options ``tune`` shares with it.

Errors are :class:`~edge_lstm.errors.EdgeLstmError` subclasses, mapped to exit
codes by the main CLI: 2 for bad data or options (missing column, non-numeric
value, too few rows, constant series, one class, diverged training), 4 when no
tuning trial meets the device budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edge_lstm import jsonio
from edge_lstm.cli_options import ForceOpt, JsonOpt
from edge_lstm.cli_progress import columns, count_text

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app`` (``tune``, which reuses this module's options, registers itself: cli_tune)."""
    app.command("train")(train_command)


def split_list(text: str | None) -> tuple[str, ...]:
    """``a,b,c`` -> ``("a", "b", "c")`` (empty items dropped)."""
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


def parse_split(text: str) -> tuple[float, float]:
    """``0.7,0.15`` -> the train and validation fractions."""
    from edge_lstm.errors import UsageError

    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"Cannot read --split '{text}'.",
                         "Give two fractions: train,validation, e.g. 0.7,0.15.") from None
    return a, b


DataArg = Annotated[Path, typer.Argument(help="CSV with a header row; columns are picked by name.", show_default=False)]
TargetCol = Annotated[str | None, typer.Option("--target-column", help="Forecast: the column to forecast.")]
Features = Annotated[str | None, typer.Option(help="Input columns, comma-separated (forecast: default the target "
                                                   "alone, which is always an input; classify: every numeric column).")]
TaskOpt = Annotated[str, typer.Option(help="forecast or classify.")]
LabelCol = Annotated[str | None, typer.Option("--label-column", help="Classify: the column holding each row's class.")]
LabelFrom = Annotated[str, typer.Option(help="Classify: a window's label is its last row's (last) or the most "
                                             "frequent over it (majority).")]
Horizon = Annotated[int, typer.Option(help="Forecast this many steps ahead (one output per step).")]
Transform = Annotated[str, typer.Option("--target-transform", help="level: forecast the value; delta: its change "
                                                                    "from the window's last value.")]
SplitOpt = Annotated[str, typer.Option(help="Train and validation fractions, in time order; the test part is the "
                                            "rest.")]
SeasonOpt = Annotated[int | None, typer.Option(help="Seasonal-naive period in steps (default: inferred from the "
                                                    "training rows).")]
SeedOpt = Annotated[int, typer.Option(help="Seed for initialisation, shuffling and dropout.")]
ThreadsOpt = Annotated[int, typer.Option(help="Intra-op threads (results repeat for the same value).")]


def train_command(
    data: DataArg,
    target_column: TargetCol = None,
    features: Features = None,
    task: TaskOpt = "forecast",
    label_column: LabelCol = None,
    label_from: LabelFrom = "last",
    window: Annotated[int, typer.Option(help="Time steps per input window.")] = 96,
    horizon: Horizon = 1,
    stride: Annotated[int, typer.Option(help="Steps between consecutive training windows (evaluation uses 1).")] = 1,
    target_transform: Transform = "level",
    split: SplitOpt = "0.7,0.15",
    season: SeasonOpt = None,
    cell: Annotated[str, typer.Option(help="lstm, gru or rnn (plain tanh recurrence).")] = "lstm",
    hidden: Annotated[int, typer.Option(help="Hidden units per layer.")] = 64,
    layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = 2,
    dropout: Annotated[float, typer.Option(help="Dropout between layers and before the head (training only).")] = 0.0,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Windows per optimiser step.")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (--find-lr replaces it).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 1e-4,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule: cosine, plateau or none.")] = "cosine",
    clip: Annotated[float, typer.Option(help="Clip the gradient norm to this (0: off).")] = 1.0,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation loss.")] = 5,
    find_lr: Annotated[bool, typer.Option("--find-lr", help="Run a learning-rate range test first and train "
                                                            "with its suggestion.")] = False,
    class_weights: Annotated[str, typer.Option(help="Classify: balanced or none.")] = "balanced",
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    output: Annotated[Path, typer.Option("-o", "--output", help="The checkpoint to write; NAME.train.json and "
                                                                "NAME.train.html go beside it.")] = Path("model.pt"),
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a recurrent forecaster or classifier on a CSV, with a chronological split and early stopping."""
    from edge_lstm import dataset, train_io
    from edge_lstm.train import TrainConfig, train

    opts = dataset.DataOptions(task, target_column, label_column, split_list(features), window, horizon, stride,
                               target_transform, label_from, parse_split(split))
    cfg = TrainConfig(opts, cell, hidden, layers, dropout, epochs, batch_size, lr, weight_decay, schedule, clip,
                      patience, seed, threads, find_lr, class_weights, season)
    cfg.check()
    from edge_lstm.outputs import shown

    output = shown(output)  # printed as written: a/../c as c
    train_io.check_outputs(output, force)  # before the (long) training
    with EpochBars(quiet=as_json) as bars:
        result = train(data, cfg, bars)
    paths = train_io.write_outputs(result, output, force)
    summary = {"checkpoint": str(paths["checkpoint"]), "log": str(paths["log"]), "report": str(paths["report"]),
               "best_epoch": result.log["best_epoch"], "stopped": result.log["stopped"], "lr": result.log["lr"],
               "test": {k: v for k, v in result.test.items() if k != "sample"}, "notes": result.notes}
    if as_json:
        jsonio.emit(summary)
    else:
        out.print(human_summary(summary))


def human_summary(s: dict[str, Any]) -> str:
    """Test metrics beside the baselines, the notes, and where the files are."""
    t = s["test"]
    lines = [f"Best epoch {s['best_epoch']} ({s['stopped']}); learning rate {s['lr']:.3g}."]
    if "persistence" in t:
        lines.append(f"Test ({t['windows']} windows, data units): model MAE {t['model']['mae']:.4g}, "
                     f"RMSE {t['model']['rmse']:.4g}")
        for key, label in (("persistence", "persistence"), ("seasonal_naive", "seasonal naive")):
            if key in t:
                b = t[key]
                imp = b.get("model_improvement")
                gain = ("exact on the test rows: nothing to improve on" if imp is None
                        else f"model lower by {imp:.1%}" if imp >= 0 else f"model HIGHER by {-imp:.1%}: worse")
                lines.append(f"  {label:<15} MAE {b['mae']:.4g}  ({gain})")
    else:
        m = t["model"]
        lines.append(f"Test ({t['windows']} windows): accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}")
        for key in ("majority_class", "previous_window"):
            lines.append(f"  {key.replace('_', ' '):<15} accuracy {t[key]['accuracy']:.4f}, "
                         f"macro-F1 {t[key]['macro_f1']:.4f}")
        lines.append("  confusion (rows true, columns predicted): " + "; ".join(
            f"{c}: {row}" for c, row in zip(t["classes"], m["confusion"], strict=True)))
    lines += [f"note ({n['kind']}): {n['text']}" for n in s["notes"]]
    lines.append(f"Wrote {s['checkpoint']}, {s['log']} and {s['report']}")
    return "\n".join(lines)


class EpochBars:
    """A progress bar per epoch on stderr (one line per epoch when stderr is not a terminal; silent with --json)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Any = None
        self.task: Any = None
        self.steps = self.done = 0

    def __enter__(self) -> EpochBars:
        if not self.quiet and err.is_terminal:
            from rich.progress import Progress

            self.progress = Progress(*columns(), console=err)  # the same bars as export and profile
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """A new bar for the epoch."""
        if self.progress is not None:
            self.task = self.progress.add_task(f"epoch {epoch} of {epochs}", total=steps, info="",
                                               count=count_text(0, steps, "step"))
            self.steps, self.done = steps, 0

    def step(self, loss: float) -> None:
        """Advance the bar; show the running loss."""
        if self.progress is not None:
            self.done += 1
            self.progress.update(self.task, advance=1, info=f"loss {loss:.4g}",
                                 count=count_text(self.done, self.steps, "step"))

    def epoch_end(self, r: dict[str, Any]) -> None:
        """The epoch's losses on its bar (or on its own line)."""
        text = (f"train {r['train_loss']:.4g}  val {r['val_loss']:.4g}  lr {r['lr']:.2g}  "
                f"grad {r['grad_norm']['median']:.2g} (clipped {r['clipped_steps']}/{r['steps']})")
        if self.progress is not None:
            self.progress.update(self.task, info=text)
        elif not self.quiet:
            err.print(f"epoch {r['epoch']}: {r['steps']} steps, {text}", highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        """A status line."""
        if not self.quiet:
            err.print(f"· {text}", highlight=False, soft_wrap=True)
