"""Built-in architectures: recurrent forecasters and classifiers (LSTM, GRU or plain RNN).

A checkpoint names one of these with its config, so loading never needs the
user's code. One configurable module covers every model kind the exporters
support: stacked layers, both batch layouts, bidirectional, ``proj_size``, GRU,
dropout between layers, a Linear / LayerNorm / activation head, last-step or
all-steps outputs, and explicit state inputs and outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from edge_lstm.errors import InputFileError

ARCH_NAMES = ("forecaster", "classifier")
CELLS = ("lstm", "gru", "rnn")
_ACTIVATIONS = ("none", "relu", "tanh", "sigmoid", "gelu")


@dataclass(frozen=True)
class ArchConfig:
    """Hyper-parameters of a built-in recurrent model."""

    cell: str = "lstm"  # "lstm" | "gru" | "rnn" (plain tanh recurrence)
    n_features: int = 1
    hidden: int = 64
    layers: int = 2
    n_outputs: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    dropout: float = 0.0
    batch_first: bool = True
    layernorm: bool = False  # LayerNorm before the head
    activation: str = "none"  # applied after the Linear head
    all_steps: bool = False  # output every time step instead of the last
    state_io: bool = False  # forward(x, h0[, c0]) -> (y, h[, c])

    def __post_init__(self) -> None:
        problems = []
        if self.cell not in CELLS:
            problems.append(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.activation not in _ACTIVATIONS:
            problems.append(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        if self.proj_size and self.cell != "lstm":
            problems.append("proj_size needs cell='lstm'")
        if self.proj_size >= self.hidden and self.proj_size:
            problems.append("proj_size must be smaller than hidden")
        for name in ("n_features", "hidden", "layers", "n_outputs"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if problems:
            raise InputFileError("Invalid architecture config: " + "; ".join(problems) + ".")

    @property
    def out_size(self) -> int:
        """Width of the recurrent output at one time step."""
        per_dir = self.proj_size or self.hidden
        return per_dir * (2 if self.bidirectional else 1)

    @property
    def state_size(self) -> int:
        """Width of the hidden state h."""
        return self.proj_size or self.hidden

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a checkpoint (``weights_only`` safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchConfig:
        """Build from a checkpoint dict, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputFileError(f"Unknown architecture config keys: {sorted(unknown)}.")
        return cls(**d)


def build(arch: str, config: ArchConfig) -> nn.Module:
    """Instantiate a built-in architecture by name."""
    if arch not in ARCH_NAMES:
        raise InputFileError(
            f"Unknown architecture '{arch}'.", f"Known architectures: {', '.join(ARCH_NAMES)}."
        )
    return RecurrentNet(config)


class RecurrentNet(nn.Module):
    """Recurrent layers, then an optional LayerNorm, a Linear head and an activation."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        common: dict[str, Any] = {
            "input_size": cfg.n_features,
            "hidden_size": cfg.hidden,
            "num_layers": cfg.layers,
            "batch_first": cfg.batch_first,
            "bidirectional": cfg.bidirectional,
            "dropout": cfg.dropout if cfg.layers > 1 else 0.0,
        }
        if cfg.cell == "lstm":
            self.rnn: nn.Module = nn.LSTM(proj_size=cfg.proj_size, **common)
        elif cfg.cell == "gru":
            self.rnn = nn.GRU(**common)
        else:
            self.rnn = nn.RNN(nonlinearity="tanh", **common)
        self.norm: nn.Module = nn.LayerNorm(cfg.out_size) if cfg.layernorm else nn.Identity()
        self.head = nn.Linear(cfg.out_size, cfg.n_outputs)
        acts: dict[str, nn.Module] = {
            "none": nn.Identity(), "relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU(),
        }
        self.act = acts[cfg.activation]

    def _head(self, seq: torch.Tensor) -> torch.Tensor:
        if not self.cfg.all_steps:
            seq = seq[:, -1] if self.cfg.batch_first else seq[-1]
        return self.act(self.head(self.norm(seq)))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> Any:
        """``y`` for a window; ``(y, h[, c])`` when the state is explicit."""
        if not self.cfg.state_io:
            seq, _ = self.rnn(x)
            return self._head(seq)
        hx: Any = (state[0], state[1]) if self.cfg.cell == "lstm" else state[0]
        seq, new_state = self.rnn(x, hx)
        if self.cfg.cell != "lstm":
            return self._head(seq), new_state
        return self._head(seq), new_state[0], new_state[1]


def input_shapes(config: ArchConfig, window: int, batch: int = 1) -> list[tuple[int, ...]]:
    """The shapes of ``forward``'s inputs for a window length and batch size."""
    x = (batch, window, config.n_features) if config.batch_first else (window, batch, config.n_features)
    if not config.state_io:
        return [x]
    dirs = 2 if config.bidirectional else 1
    h = (config.layers * dirs, batch, config.state_size)
    if config.cell != "lstm":
        return [x, h]
    return [x, h, (config.layers * dirs, batch, config.hidden)]


def input_names(config: ArchConfig) -> list[str]:
    """Names of ``forward``'s inputs."""
    if not config.state_io:
        return ["x"]
    return ["x", "h0"] if config.cell != "lstm" else ["x", "h0", "c0"]


def output_names(config: ArchConfig) -> list[str]:
    """Names of ``forward``'s outputs."""
    if not config.state_io:
        return ["y"]
    return ["y", "h"] if config.cell != "lstm" else ["y", "h", "c"]


def init_forget_bias(model: nn.Module, value: float = 1.0) -> None:
    """Set every LSTM layer's forget-gate bias to ``value`` (``bias_ih`` holds it, ``bias_hh`` gets 0).

    A forget gate that starts open (sigmoid(1) ~ 0.73 rather than 0.5) lets the
    cell state and its gradient survive more steps early in training (Jozefowicz
    et al., 2015). Only the values change: the checkpoint layout stays the same.
    GRU and plain RNN layers have no forget gate and are left alone.
    """
    for module in model.modules():
        if not isinstance(module, nn.LSTM):
            continue
        h = module.hidden_size
        with torch.no_grad():
            for name, param in module.named_parameters():
                if name.startswith("bias_ih"):
                    param[h : 2 * h] = value  # gate order i, f, g, o
                elif name.startswith("bias_hh"):
                    param[h : 2 * h] = 0.0
