"""The epoch loop of ``edge-lstm train``: AdamW, schedule, clipping, early stopping, gradient history.

Every rule counts steps or epochs, never seconds, so the loop does the same
arithmetic on a fast machine and a slow one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm.errors import TrainingDiverged

if TYPE_CHECKING:
    from torch import nn

    from edge_lstm.train import Progress, TrainConfig, Windows

#: a validation loss must beat the best so far by this share to count as better (early stopping)
MIN_RELATIVE_IMPROVEMENT = 1e-4
#: the cosine schedule ends at this share of the starting learning rate
COSINE_FLOOR = 0.01
#: windows in the fixed probe batch for the gradient-reach measurement
PROBE_WINDOWS = 64


@dataclass
class History:
    """What the loop did: one record per epoch, the best epoch and why it stopped."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped: str = ""


class Loop:
    """Train ``model`` on ``sets['train']``, stop early on ``sets['val']``, restore the best weights."""

    def __init__(self, model: nn.Module, sets: dict[str, Windows], loss_fn: Any, cfg: TrainConfig, lr: float,
                 progress: Progress) -> None:
        import torch

        self.model, self.sets, self.loss_fn, self.cfg, self.lr, self.say = model, sets, loss_fn, cfg, lr, progress
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
        n = len(sets["train"])
        full = math.ceil(n / cfg.batch_size)
        self.steps_per_epoch = min(full, cfg.max_steps_per_epoch or full)
        self.sched = self._schedule()
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.probe = torch.arange(min(PROBE_WINDOWS, n))

    def _schedule(self) -> Any:
        import torch

        if self.cfg.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, mode="min", factor=0.5, patience=2)
        if self.cfg.schedule == "none":
            return None
        total = max(self.cfg.epochs * self.steps_per_epoch, 1)

        def cosine(step: int) -> float:
            return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

        return torch.optim.lr_scheduler.LambdaLR(self.opt, cosine)

    def run(self) -> History:
        """All epochs (or until ``patience`` epochs bring no better validation loss)."""
        hist = History()
        best_state = copy.deepcopy(self.model.state_dict())
        for epoch in range(1, self.cfg.epochs + 1):
            record = self._epoch(epoch)
            hist.epochs.append(record)
            self.say.epoch_end(record)
            val = record["val_loss"]
            if val < hist.best_val_loss * (1 - MIN_RELATIVE_IMPROVEMENT) or epoch == 1:
                hist.best_val_loss, hist.best_epoch = val, epoch
                best_state = copy.deepcopy(self.model.state_dict())
            elif epoch - hist.best_epoch >= self.cfg.patience:
                hist.stopped = (f"early stop after epoch {epoch}: no better validation loss for "
                                f"{self.cfg.patience} epochs")
                break
            if self.cfg.schedule == "plateau":
                self.sched.step(val)
        hist.stopped = hist.stopped or f"ran all {self.cfg.epochs} epochs"
        self.model.load_state_dict(best_state)
        return hist

    def _epoch(self, epoch: int) -> dict[str, Any]:
        import torch

        train = self.sets["train"]
        order = torch.randperm(len(train), generator=self.gen)
        self.say.epoch_start(epoch, self.cfg.epochs, self.steps_per_epoch)
        self.model.train()
        lr_start = self.opt.param_groups[0]["lr"]
        losses, norms = [], []
        for s in range(self.steps_per_epoch):
            x, y = train.batch(order[s * self.cfg.batch_size : (s + 1) * self.cfg.batch_size])
            loss = self.loss_fn(self.model(x), y)
            check_finite(loss.item(), f"epoch {epoch}, step {s + 1}", self.opt.param_groups[0]["lr"])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(self._clip())
            self.opt.step()
            if self.cfg.schedule == "cosine":
                self.sched.step()
            losses.append(loss.item())
            self.say.step(losses[-1])
        val = self.loss_on(self.sets["val"])
        check_finite(val, f"validation after epoch {epoch}", lr_start)
        return self._record(epoch, losses, val, norms, lr_start)

    def _clip(self) -> float:
        """The total gradient norm before clipping (clipping itself only when ``clip`` > 0)."""
        import torch

        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip))
        return float(torch.norm(torch.stack([p.grad.norm() for p in params])))  # type: ignore[union-attr]

    def _record(self, epoch: int, losses: list[float], val: float, norms: list[float], lr: float) -> dict[str, Any]:
        n = np.asarray(norms)
        return {
            "epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val, "lr": lr,
            "steps": len(norms), "clipped_steps": int((n > self.cfg.clip).sum()) if self.cfg.clip > 0 else 0,
            "grad_norm": {"mean": float(n.mean()), "min": float(n.min()), "median": float(np.median(n)),
                          "max": float(n.max())},
            "gradient_reach": self.gradient_reach(),
        }

    def loss_on(self, windows: Windows, batch: int = 512) -> float:
        """Mean loss over every window of a part (eval mode, no gradients)."""
        import torch

        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(windows), batch):
                idx = torch.arange(i, min(i + batch, len(windows)))
                x, y = windows.batch(idx)
                total += float(self.loss_fn(self.model(x), y)) * len(idx)
                count += len(idx)
        return total / max(count, 1)

    def gradient_reach(self) -> dict[str, Any]:
        """How much of the loss's gradient reaches each step of the window, on a fixed training batch.

        The mean absolute gradient of the loss with respect to each input step,
        relative to the last step's; ``early_to_last`` summarises the first tenth
        of the window. A plain RNN's gradient shrinks geometrically going back in
        time, so on long windows the early steps get (almost) nothing.
        """
        x, y = self.sets["train"].batch(self.probe)
        x = x.clone().requires_grad_(True)
        self.model.eval()
        self.model.zero_grad(set_to_none=True)
        self.loss_fn(self.model(x), y).backward()
        self.model.zero_grad(set_to_none=True)
        g = x.grad.abs().mean(dim=(0, 2)).double().numpy()  # type: ignore[union-attr]
        last = float(g[-1]) or float(g.max()) or 1.0
        rel = g / last
        early = max(len(g) // 10, 1)
        return {"early_to_last": float(rel[:early].mean()), "profile": _profile(rel)}


def _profile(rel: np.ndarray, points: int = 32) -> list[list[float]]:
    """``[steps back from the last, relative gradient]`` at up to ``points`` positions."""
    t = len(rel)
    idx = np.unique(np.linspace(0, t - 1, min(points, t)).astype(int))
    return [[int(t - 1 - i), float(rel[i])] for i in idx]


def check_finite(value: float, where: str, lr: float) -> None:
    """Stop with a clear message when the loss stops being a number."""
    if not math.isfinite(value):
        raise TrainingDiverged(f"The training loss became {value} ({where}) at learning rate {lr:.3g}.",
                               "Lower --lr, keep --clip on (e.g. 1.0), or use --find-lr to pick the rate.")
