"""The learning-rate range test (Smith, 2017): raise the rate step by step and watch the loss.

The rate grows geometrically from ``LR_MIN`` to ``LR_MAX`` over at most
``STEPS`` optimiser steps on a copy of the model; the test stops early once the
smoothed loss exceeds four times its best. The suggested rate is the one at the
smoothed loss's minimum divided by ten, the usual safe choice: the minimum
itself sits at the edge of divergence.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from edge_lstm.train import TrainConfig, Windows

LR_MIN = 1e-5
LR_MAX = 1.0
STEPS = 100
SMOOTHING = 0.9  # exponential moving average of the loss


def range_test(model: nn.Module, train: Windows, loss_fn: Any, cfg: TrainConfig) -> dict[str, Any]:
    """Run the test on ``model`` (a copy: its weights are spent); return the curve and the suggested rate."""
    import torch

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=LR_MIN, weight_decay=cfg.weight_decay)
    factor = (LR_MAX / LR_MIN) ** (1 / (STEPS - 1))
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    model.train()
    for step in range(STEPS):
        lr = LR_MIN * factor**step
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = train.batch(torch.randint(0, len(train), (cfg.batch_size,), generator=gen))
        loss = loss_fn(model(x), y)
        value = loss.item()
        if not math.isfinite(value):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        avg = SMOOTHING * avg + (1 - SMOOTHING) * value
        smoothed = avg / (1 - SMOOTHING ** (step + 1))  # bias-corrected
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > 4 * best and step > 10:
            break
    if not losses:
        return {"lrs": [], "losses": [], "suggested_lr": cfg.lr, "note": "the loss was not finite at the first step"}
    at_min = lrs[min(range(len(losses)), key=losses.__getitem__)]
    return {"lrs": lrs, "losses": losses, "suggested_lr": at_min / 10, "lr_at_min_loss": at_min,
            "rule": "the rate at the smoothed loss's minimum, divided by 10"}
