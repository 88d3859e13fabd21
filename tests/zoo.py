"""A zoo of recurrent networks shaped like the ones users bring, written as plain ``nn.Module``s.

These are not edge-lstm's built-in architectures: each is a small copy of a network
that forecasting, activity-recognition, text and speech code defines (a CNN-LSTM on
accelerometer windows, a DeepAR-like forecaster with covariates, an RNN-T style
prediction network, ...). Tests save them in every form a user has (TorchScript,
``torch.export`` .pt2, a whole pickled module) and run them through the exporters.

``ZOO`` maps a name to a :class:`Spec`: how to build the module and the example
inputs of one batch-1 window. ``save(name, form, directory)`` writes the file and
returns its path and input shapes (``--input-shape`` values). A pickled module
needs this file importable when it is loaded (``PYTHONPATH=tests``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

FORMS = ("torchscript", "pt2", "pickle")


class CnnLstm(nn.Module):
    """Conv1d front end, BatchNorm, ReLU, max-pool, then an LSTM: human-activity recognition on IMU windows."""

    def __init__(self, channels: int = 6, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 16, kernel_size=5, padding=2)
        self.bn = nn.BatchNorm1d(16)
        self.pool = nn.MaxPool1d(2)
        self.lstm = nn.LSTM(16, 24, batch_first=True)
        self.head = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, C)
        z = self.pool(torch.relu(self.bn(self.conv(x.transpose(1, 2)))))
        seq, _ = self.lstm(z.transpose(1, 2))
        return self.head(seq[:, -1])


class MeanPoolClassifier(nn.Module):
    """LSTM outputs averaged over time, then a linear classifier."""

    def __init__(self, features: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, 32, batch_first=True)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return torch.softmax(self.head(seq.mean(dim=1)), dim=-1)


class AttentionClassifier(nn.Module):
    """Additive attention pooling over the LSTM's outputs (softmax over time)."""

    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, 32, batch_first=True)
        self.score = nn.Linear(32, 1)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        weights = torch.softmax(self.score(torch.tanh(seq)), dim=1)  # (B, T, 1)
        return self.head((weights * seq).sum(dim=1))


class Seq2Seq(nn.Module):
    """Encoder-decoder: the encoder's final state starts a decoder that runs over the horizon."""

    def __init__(self, features: int = 2, hidden: int = 32, horizon: int = 6) -> None:
        super().__init__()
        self.horizon = horizon
        self.encoder = nn.LSTM(features, hidden, batch_first=True)
        self.decoder = nn.LSTM(1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, c) = self.encoder(x)
        last = x[:, -1:, :1].repeat(1, self.horizon, 1)  # the last observed target, fed at every decoder step
        seq, _ = self.decoder(last, (h, c))
        return self.out(seq).squeeze(-1)  # (B, horizon)


class DeepARLike(nn.Module):
    """Target plus covariates in, Gaussian parameters out (mean, softplus scale), DeepAR-style."""

    def __init__(self, covariates: int = 3, hidden: int = 40) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1 + covariates, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.mu = nn.Linear(hidden, 1)
        self.sigma = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        last = seq[:, -1]
        return torch.cat([self.mu(last), nn.functional.softplus(self.sigma(last)) + 1e-3], dim=-1)


class MultiHorizon(nn.Module):
    """Direct multi-horizon forecaster: one linear layer emits the next 24 steps."""

    def __init__(self, features: int = 1, horizon: int = 24) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, 48, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, horizon))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return self.head(seq[:, -1])


class StackedGruLayerNorm(nn.Module):
    """Two GRU layers with LayerNorm and a residual connection between them."""

    def __init__(self, features: int = 2, hidden: int = 24) -> None:
        super().__init__()
        self.gru1 = nn.GRU(features, hidden, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden)
        self.gru2 = nn.GRU(hidden, hidden, batch_first=True)
        self.norm2 = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.gru1(x)
        a = self.norm1(a)
        b, _ = self.gru2(a)
        return self.head(self.norm2(b + a)[:, -1])


class TextClassifier(nn.Module):
    """Token ids -> embedding -> LSTM -> linear: the classic sentiment model (integer input)."""

    def __init__(self, vocab: int = 200, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(self.embed(tokens))
        return self.head(seq[:, -1])


class SpeechBiLstm(nn.Module):
    """Bidirectional 2-layer LSTM over 40 log-mel features, per-frame phone logits (all steps)."""

    def __init__(self, mels: int = 40, hidden: int = 32, phones: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(mels, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, phones)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return self.head(seq)


class SpeechPredictor(nn.Module):
    """RNN-T style prediction network: label embedding, one LSTM layer, a large output projection."""

    def __init__(self, vocab: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 32)
        self.lstm = nn.LSTM(32, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, 256)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(self.embed(labels))
        return self.proj(seq) * 8.0  # large-magnitude outputs, as joint-network inputs are


class ProjectedLstm(nn.Module):
    """An LSTM with ``proj_size`` (LSTMP), as speech models use to shrink the recurrent state."""

    def __init__(self, features: int = 8, hidden: int = 32, proj: int = 12) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, proj_size=proj, batch_first=True)
        self.head = nn.Linear(proj, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return self.head(seq[:, -1])


class ExplicitState(nn.Module):
    """``forward(x, h0, c0) -> (y, h, c)``: the caller carries the state, as streaming code does."""

    def __init__(self, features: int = 1, hidden: int = 16) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seq, (h, c) = self.lstm(x, (h0, c0))
        return self.head(seq[:, -1]), h, c


class TimeMajor(nn.Module):
    """A sequence-first LSTM: input (T, B, F), as older PyTorch code writes it."""

    def __init__(self, features: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return self.head(seq[-1])


class PlainRnn(nn.Module):
    """``nn.RNN`` with tanh: the plain recurrent layer."""

    def __init__(self, features: int = 1, hidden: int = 16) -> None:
        super().__init__()
        self.rnn = nn.RNN(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.rnn(x)
        return self.head(seq[:, -1])


class ResidualHead(nn.Module):
    """The forecast is the last reading plus a learned correction over a skip path."""

    def __init__(self, features: int = 1, hidden: int = 16) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return x[:, -1] + self.head(seq[:, -1])


class DilatedLstm(nn.Module):
    """A dilated RNN: the second layer runs on every other step, by folding time into the batch."""

    def __init__(self, features: int = 1, hidden: int = 16) -> None:
        super().__init__()
        self.lstm1 = nn.LSTM(features, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.lstm1(x)  # (B, T, H)
        b, t, h = a.shape
        folded = a.reshape(b, t // 2, 2, h).transpose(1, 2).reshape(b * 2, t // 2, h)
        z, _ = self.lstm2(folded)
        return self.head(z[:, -1].reshape(b, 2, h).mean(dim=1))


@dataclass(frozen=True)
class Spec:
    """How to build one zoo network and the shapes of one batch-1 example."""

    build: Callable[[], nn.Module]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...] = ()  # per input; float32 when empty
    what: str = ""
    streamable: bool = True  # False when the output needs the whole window (pooling, reverse direction, ...)
    tags: tuple[str, ...] = field(default_factory=tuple)

    def example(self, seed: int = 0, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Seeded example inputs (token ids for integer inputs)."""
        gen = torch.Generator().manual_seed(seed)
        out = []
        for i, shape in enumerate(self.shapes):
            dims = (batch, *shape[1:]) if shape[0] == 1 else (shape[0], batch, *shape[2:])
            if self.dtypes and self.dtypes[i] == "int64":
                out.append(torch.randint(0, 50, dims, generator=gen))
            else:
                out.append(torch.randn(*dims, generator=gen))
        return tuple(out)


ZOO: dict[str, Spec] = {
    "cnn_lstm": Spec(CnnLstm, ((1, 32, 6),), what="Conv1d + BatchNorm + MaxPool front end, LSTM, classifier",
                     streamable=False, tags=("conv", "classify")),
    "mean_pool": Spec(MeanPoolClassifier, ((1, 20, 3),), what="LSTM, mean over time, softmax classifier",
                      streamable=False, tags=("classify",)),
    "attention": Spec(AttentionClassifier, ((1, 20, 4),), what="LSTM with attention pooling over time",
                      streamable=False, tags=("classify",)),
    "seq2seq": Spec(Seq2Seq, ((1, 24, 2),), what="encoder-decoder LSTM, 6-step horizon", streamable=False),
    "deepar": Spec(DeepARLike, ((1, 48, 4),), what="2-layer LSTM on target + 3 covariates, mean and scale out"),
    "multi_horizon": Spec(MultiHorizon, ((1, 48, 1),), what="2-layer LSTM, MLP head emitting 24 steps"),
    "gru_layernorm": Spec(StackedGruLayerNorm, ((1, 16, 2),), what="two GRUs with LayerNorm and a residual"),
    "text": Spec(TextClassifier, ((1, 16),), ("int64",), what="embedding + LSTM text classifier",
                 tags=("classify", "int-input")),
    "speech_bilstm": Spec(SpeechBiLstm, ((1, 30, 40),), what="bidirectional 2-layer LSTM, per-frame logits",
                          streamable=False, tags=("all-steps",)),
    "speech_predictor": Spec(SpeechPredictor, ((1, 10),), ("int64",),
                             what="RNN-T prediction network, large-magnitude outputs", tags=("int-input", "all-steps")),
    "proj_size": Spec(ProjectedLstm, ((1, 16, 8),), what="2-layer LSTM with proj_size 12"),
    "explicit_state": Spec(ExplicitState, ((1, 12, 1), (2, 1, 16), (2, 1, 16)),
                           what="forward(x, h0, c0) -> (y, h, c)"),
    "time_major": Spec(TimeMajor, ((12, 1, 2),), what="sequence-first LSTM, input (T, B, F)"),
    "plain_rnn": Spec(PlainRnn, ((1, 20, 1),), what="2-layer nn.RNN (tanh)"),
    "residual": Spec(ResidualHead, ((1, 12, 1),), what="last reading + learned correction (skip path)"),
    "dilated": Spec(DilatedLstm, ((1, 16, 1),), what="dilated RNN: second layer on every other step",
                    streamable=False),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The zoo network ``name`` with seeded weights, in eval mode."""
    torch.manual_seed(seed)
    return ZOO[name].build().eval()


def save(name: str, form: str, directory: Path, seed: int = 0) -> tuple[Path, list[tuple[int, ...]]]:
    """Save zoo network ``name`` as ``form`` (torchscript, pt2, pickle); return the path and the input shapes."""
    spec = ZOO[name]
    module = build(name, seed)
    args = spec.example(seed)
    path = directory / f"{name}.{form}.{'pt2' if form == 'pt2' else 'pt'}"
    if form == "torchscript":
        with torch.no_grad():
            torch.jit.trace(module, args).save(str(path))
    elif form == "pt2":
        torch.export.save(torch.export.export(module, args), str(path))
    elif form == "pickle":
        torch.save(module, path)
    else:
        raise ValueError(f"unknown form {form!r}; known: {FORMS}")
    return path, [tuple(s) for s in spec.shapes]


def shape_args(shapes: list[tuple[int, ...]]) -> list[str]:
    """``--input-shape`` arguments for the CLI."""
    return [a for s in shapes for a in ("--input-shape", "x".join(map(str, s)))]
