"""``edge-lstm train``: a recurrent forecaster or classifier trained with sound practice.

What "sound" means here, each choice in one place:

- the data side (chronological split, windows inside one part, normalisation from
  the training rows) lives in :mod:`edge_lstm.dataset`;
- AdamW with a cosine or plateau learning-rate schedule, an optional range test
  (:mod:`edge_lstm.lr_find`) to pick the rate;
- gradient-norm clipping, dropout (between layers and before the head), weight
  decay, the LSTM forget-gate bias set to 1;
- early stopping on validation loss, counted in epochs, with the best weights restored;
- seeded and deterministic on CPU: a fixed thread count, deterministic kernels,
  no wall-clock rule anywhere, so the same command writes the same checkpoint bytes.

:func:`train` computes in memory; :func:`write_outputs` writes the checkpoint, the
JSON log and the HTML report together, atomically (:mod:`edge_lstm.train_io`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_lstm import dataset, train_metrics
from edge_lstm.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

SCHEDULES = ("cosine", "plateau", "none")
CLASS_WEIGHTS = ("balanced", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Every choice of one training run (with :class:`~edge_lstm.dataset.DataOptions` for the data)."""

    data: dataset.DataOptions
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    clip: float = 1.0  # max gradient norm; 0 turns clipping off
    patience: int = 5  # epochs without a better validation loss before stopping
    seed: int = 0
    threads: int = 1  # intra-op threads; part of what makes results reproducible
    find_lr: bool = False
    class_weights: str = "balanced"
    season: int | None = None  # seasonal-naive period; inferred from the training rows when None
    max_steps_per_epoch: int | None = None  # bound an epoch's optimiser steps (tuning trials)

    def check(self) -> None:
        """Refuse impossible settings before any work."""
        from edge_lstm.archs import CELLS

        self.data.check()
        if self.cell not in CELLS:
            raise UsageError(f"Unknown --cell '{self.cell}'.", f"Accepted: {', '.join(CELLS)}.")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"Unknown --schedule '{self.schedule}'.", f"Accepted: {', '.join(SCHEDULES)}.")
        if self.class_weights not in CLASS_WEIGHTS:
            raise UsageError(f"Unknown --class-weights '{self.class_weights}'.",
                             f"Accepted: {', '.join(CLASS_WEIGHTS)}.")
        for name in ("hidden", "layers", "epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}.")
        rates = (self.lr, self.weight_decay, self.clip)
        if not all(math.isfinite(v) for v in rates) or self.lr <= 0 or self.weight_decay < 0 or self.clip < 0 \
                or self.patience < 1:
            raise UsageError(f"--lr {self.lr}, --weight-decay {self.weight_decay}, --clip {self.clip}, --patience "
                             f"{self.patience}: --lr must be > 0, --weight-decay and --clip >= 0 (finite numbers; "
                             "--clip 0 turns clipping off), --patience >= 1.")
        if self.season is not None and self.season < 2:
            raise UsageError(f"--season must be at least 2 steps, got {self.season}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (stored in the checkpoint and the log)."""
        d = asdict(self)
        d["data"]["features"] = list(self.data.features)
        d["data"]["split"] = list(self.data.split)
        return d


class Progress(Protocol):
    """What :func:`train` reports while it works (the CLI draws a bar per epoch)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """An epoch of ``steps`` optimiser steps begins."""

    def step(self, loss: float) -> None:
        """One optimiser step finished."""

    def epoch_end(self, record: dict[str, Any]) -> None:
        """The epoch's record (losses, learning rate, gradient norms)."""

    def message(self, text: str) -> None:
        """A line of status (range test, evaluation)."""


class Silent:
    """A :class:`Progress` that says nothing (the Python API's default)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch_end(self, record: dict[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class TrainResult:
    """A trained model with everything needed to save, report and judge it."""

    model: nn.Module
    arch: str
    arch_config: Any  # archs.ArchConfig
    config: TrainConfig
    prepared: dataset.Prepared
    table: dataset.Table
    log: dict[str, Any] = field(default_factory=dict)

    @property
    def test(self) -> dict[str, Any]:
        """Test metrics (and baselines) in the data's units."""
        return self.log["test"]  # type: ignore[no-any-return]

    @property
    def notes(self) -> list[dict[str, str]]:
        """Gradient and data notes, in plain language."""
        return self.log["notes"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seed torch, fix the thread count and insist on deterministic kernels; restore them afterwards."""
    import torch

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def build_model(cfg: TrainConfig, n_features: int, n_outputs: int) -> tuple[str, Any, nn.Module]:
    """The built-in architecture for this task, initialised (forget-gate bias 1, head dropout)."""
    from edge_lstm import archs

    arch = "classifier" if cfg.data.task == "classify" else "forecaster"
    acfg = archs.ArchConfig(cell=cfg.cell, n_features=n_features, hidden=cfg.hidden, layers=cfg.layers,
                            n_outputs=n_outputs, dropout=cfg.dropout)
    model = archs.build(arch, acfg)
    archs.init_forget_bias(model, 1.0)
    if cfg.dropout > 0:
        _head_dropout(model, cfg.dropout)
    return arch, acfg, model


def _head_dropout(model: nn.Module, p: float) -> None:
    """Dropout on the head's input while training, as a hook: the saved architecture (and the exported
    graph) stays exactly the checkpoint's, since dropout is the identity at inference."""
    import torch.nn.functional as F  # noqa: N812

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (F.dropout(args[0], p, module.training), *args[1:])

    model.head.register_forward_pre_hook(hook)  # type: ignore[union-attr]


class Windows:
    """Batches of windows gathered on the fly from the normalised series (no copy per window)."""

    def __init__(self, prep: dataset.Prepared, starts: np.ndarray) -> None:
        import torch

        self.starts = starts
        self.series = torch.from_numpy(prep.x)
        self.offsets = torch.arange(prep.spec.window)
        self.y = torch.from_numpy(prep.training_targets(starts))

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``idx`` as ``(B, T, F)`` inputs and their targets."""
        import torch

        rows = torch.from_numpy(self.starts)[idx][:, None] + self.offsets[None, :]
        return self.series[rows], self.y[idx]


def loss_function(prep: dataset.Prepared, train: Windows, cfg: TrainConfig) -> tuple[Any, list[str]]:
    """MSE for forecasts; cross-entropy with class weights for classifiers."""
    import torch

    if prep.task == "forecast":
        return torch.nn.MSELoss(), []
    weights, notes = train_metrics.class_weights(train.y.numpy(), len(prep.classes), cfg.class_weights)
    return torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32)), notes


def train(data: str | Path | dataset.Table, cfg: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train on ``data`` (a CSV path or a read table) as ``cfg`` says; nothing is written."""
    from edge_lstm import lr_find, train_loop

    cfg.check()
    say = progress or Silent()
    table = data if isinstance(data, dataset.Table) else dataset.read_table(data)
    prep = dataset.prepare(table, cfg.data)
    season = cfg.season or (dataset.infer_season(prep.raw_target[: prep.split.train[1]], max_lag=1000)
                            if prep.raw_target is not None else None)
    n_out = len(prep.classes) if prep.task == "classify" else cfg.data.horizon
    with deterministic(cfg.seed, cfg.threads):
        arch, acfg, model = build_model(cfg, len(prep.features), n_out)
        sets = {k: Windows(prep, v) for k, v in prep.starts.items()}
        loss_fn, notes = loss_function(prep, sets["train"], cfg)
        lr, lr_test = cfg.lr, None
        if cfg.find_lr:
            say.message("learning-rate range test")
            lr_test = lr_find.range_test(copy.deepcopy(model), sets["train"], loss_fn, cfg)
            lr = lr_test["suggested_lr"]
        loop = train_loop.Loop(model, sets, loss_fn, cfg, lr, say)
        history = loop.run()
        fold_scale(model, prep.scale if prep.task == "forecast" else 1.0)
        model.eval()
        say.message("evaluating on the test part")
        test = evaluate(model, prep, sets["test"], season)
    log = {
        "config": cfg.to_dict(), "data": data_summary(table, prep, season), "lr": lr, "lr_range_test": lr_test,
        "epochs": history.epochs, "best_epoch": history.best_epoch, "stopped": history.stopped,
        "best_val_loss": history.best_val_loss, "test": test,
        "notes": [*({"kind": "data", "text": n} for n in notes),
                  *train_metrics.gradient_notes(history.epochs, cfg.cell, cfg.data.window, cfg.clip)],
    }
    return TrainResult(model, arch, acfg, cfg, prep, table, log)


def fold_scale(model: nn.Module, scale: float) -> None:
    """Multiply the linear head by ``scale``: the model then outputs checkpoint units (targets * scale)."""
    import torch

    if scale == 1.0:
        return
    with torch.no_grad():
        model.head.weight.mul_(scale)  # type: ignore[union-attr, operator]
        model.head.bias.mul_(scale)  # type: ignore[union-attr, operator]


def predict(model: nn.Module, windows: Windows, batch: int = 512) -> np.ndarray:
    """The model's outputs for every window, in order (``(N, outputs)``)."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            x, _ = windows.batch(torch.arange(i, min(i + batch, len(windows))))
            outs.append(model(x).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)


def evaluate(model: nn.Module, prep: dataset.Prepared, windows: Windows, season: int | None) -> dict[str, Any]:
    """Test metrics in the data's units, beside the baselines."""
    out = predict(model, windows)
    if prep.task == "forecast":
        return train_metrics.forecast_metrics(prep, out, windows.starts, season)
    assert prep.labels is not None
    truth = windows.y.numpy()
    train_y = prep.targets(prep.starts["train"])
    majority = np.full_like(truth, int(np.bincount(train_y).argmax()))
    previous = dataset.window_labels(prep.labels, np.maximum(windows.starts - 1, 0), prep.spec)
    return train_metrics.classify_metrics(truth, out.argmax(axis=1), prep.classes,
                                          {"majority_class": majority, "previous_window": previous})


def data_summary(table: dataset.Table, prep: dataset.Prepared, season: int | None) -> dict[str, Any]:
    """What the model was trained on: file, hash, columns, split, windows per part, statistics."""
    return {
        "file": table.path.name, "sha256": table.sha256, "rows": table.rows, "task": prep.task,
        "features": prep.features, "classes": prep.classes, "split_rows": prep.split.to_dict(),
        "windows": {k: len(v) for k, v in prep.starts.items()}, "season": season,
        "normalization": prep.normalization(),
    }
