"""Pruning hopeless trials of a multi-objective study on their validation loss.

Optuna's pruners serve single-objective studies only (``Trial.report`` refuses
several objectives), so the rule is written here, checked after every epoch but
the last (stopping then would save nothing and lose a measured model):

- **no better than a constant**: from epoch ``WARMUP_EPOCHS`` on, a validation
  loss at or above that of a constant prediction (the training mean for a level,
  no change for a delta, uniform odds for a classifier);
- **dominated early**: from half the epochs on (at least ``WARMUP_EPOCHS``), a
  finished feasible trial that is no larger (parameters) and no slower (MACs per
  window) had a validation loss lower by more than ``DOMINANCE_MARGIN`` at the
  same epoch: this trial would very likely end dominated, so it stops. Larger
  models often start slower, hence the wait and the margin.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm.train import Silent, TrainConfig

if TYPE_CHECKING:
    import optuna

    from edge_lstm.dataset import Table

WARMUP_EPOCHS = 2
DOMINANCE_MARGIN = 0.10


def cost_proxy(cfg: TrainConfig, n_features: int, n_outputs: int) -> tuple[int, int]:
    """Parameters and MACs per window of the built-in architecture, counted from its shape."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cfg.cell]
    params = macs = 0
    width = n_features
    for _ in range(cfg.layers):
        layer = gates * cfg.hidden * (width + cfg.hidden + 2)
        params += layer
        macs += gates * cfg.hidden * (width + cfg.hidden) * cfg.data.window
        width = cfg.hidden
    params += cfg.hidden * n_outputs + n_outputs
    return params, macs + cfg.hidden * n_outputs


def constant_loss(task: str, val_targets: np.ndarray, n_classes: int) -> float:
    """The validation loss of a constant prediction (normalised MSE of zero, or cross-entropy of uniform odds)."""
    if task == "classify":
        return math.log(max(n_classes, 2))
    return float(np.mean(np.square(val_targets)))


class PruningProgress(Silent):
    """A training :class:`~edge_lstm.train.Progress` that records the validation curve and prunes."""

    def __init__(self, trial: optuna.Trial, cfg: TrainConfig, table: Table) -> None:
        from edge_lstm import dataset

        self.trial = trial
        self.cfg = cfg
        prep = dataset.prepare(table, cfg.data)
        n_out = len(prep.classes) if prep.task == "classify" else cfg.data.horizon
        self.params, self.macs = cost_proxy(cfg, len(prep.features), n_out)
        y = prep.training_targets(prep.starts["val"])  # the units the validation loss is in
        self.constant = constant_loss(prep.task, y, len(prep.classes))
        self.curve: list[float] = []
        trial.set_user_attr("cost_proxy", {"params": self.params, "macs": self.macs})

    def epoch_end(self, record: dict[str, Any]) -> None:
        """Record the epoch's validation loss; raise ``optuna.TrialPruned`` when the trial is hopeless."""
        import optuna

        self.curve.append(float(record["val_loss"]))
        self.trial.set_user_attr("val_curve", self.curve)
        reason = self.reason(len(self.curve))
        if reason:
            self.trial.set_user_attr("pruned", reason)
            raise optuna.TrialPruned(reason)

    def reason(self, epoch: int) -> str | None:
        """Why the trial should stop after ``epoch``, or ``None``."""
        val = self.curve[-1]
        if epoch < WARMUP_EPOCHS or epoch >= self.cfg.epochs:
            return None
        if val >= self.constant:
            return (f"validation loss {val:.4g} after epoch {epoch} is no better than a constant prediction "
                    f"({self.constant:.4g})")
        if epoch < (self.cfg.epochs + 1) // 2:
            return None
        for other in self.trial.study.get_trials(deepcopy=False):
            if other.state.name != "COMPLETE" or not (other.user_attrs.get("measured") or {}).get("feasible"):
                continue
            proxy, curve = other.user_attrs.get("cost_proxy") or {}, other.user_attrs.get("val_curve") or []
            better = len(curve) >= epoch and curve[epoch - 1] * (1 + DOMINANCE_MARGIN) < val
            if (better and proxy.get("params", math.inf) <= self.params
                    and proxy.get("macs", math.inf) <= self.macs):
                return (f"dominated at epoch {epoch}: trial {other.number} is no larger and no slower and had "
                        f"validation loss {curve[epoch - 1]:.4g}, more than {DOMINANCE_MARGIN:.0%} below {val:.4g}")
        return None
