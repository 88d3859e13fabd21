"""Models for the firmware tests: the demo forecaster trained on real data, and five other architectures.

``cases`` holds each as a :class:`Case`: the saved model file, the PyTorch module
(the reference), windows in the model's input layout, the loaded model and its
captured ONNX graph. The demo is a 2 x LSTM(64) forecaster with a 96-step window
trained briefly (seeded, bounded by steps) on the hourly Seattle temperatures;
its windows are real held-out ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edge_lstm import archs, capture
from edge_lstm.load import LoadedModel, load, save_checkpoint

WINDOWS = 4


class SoftmaxClassifier(nn.Module):
    """An activity classifier: LSTM over 3-axis readings, a Linear head on the last step, softmax over 5 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 32, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return torch.softmax(self.head(seq[:, -1]), dim=-1)


class MultiFeatureNet(nn.Module):
    """Six sensor channels, a 2-layer LSTM, LayerNorm and a two-layer MLP head forecasting two values."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 24, num_layers=2, batch_first=True)
        self.norm = nn.LayerNorm(24)
        self.mlp = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return self.mlp(self.norm(seq[:, -1]))


@dataclass
class Case:
    """One architecture under test."""

    name: str
    path: Path
    module: nn.Module
    windows: np.ndarray  # [N, *input shape with batch 1]
    loaded: LoadedModel
    proto: Any

    def reference(self) -> np.ndarray:
        """PyTorch outputs per window, flattened (time-major for per-step outputs): ``[N, outputs]``."""
        with torch.no_grad():
            return np.stack([self.module(torch.from_numpy(w)).numpy().reshape(-1) for w in self.windows])

    @property
    def all_steps(self) -> bool:
        """True when the output has one value per time step."""
        return bool(self.loaded.config is not None and self.loaded.config.all_steps)


def _checkpoint(name: str, cfg: archs.ArchConfig, window: int, directory: Path, seed: int) -> tuple[Path, nn.Module]:
    torch.manual_seed(seed)
    module = archs.build("forecaster", cfg).eval()
    path = save_checkpoint(directory / f"{name}.pt", module, "forecaster", cfg, window,
                           {"mean": [0.0] * cfg.n_features, "std": [1.0] * cfg.n_features})
    return path, module


def _torchscript(name: str, module: nn.Module, shape: tuple[int, ...], directory: Path) -> Path:
    path = directory / f"{name}.torchscript.pt"
    torch.jit.trace(module.eval(), torch.randn(*shape)).save(str(path))
    return path


def _case(name: str, path: Path, module: nn.Module, windows: np.ndarray, shapes: list[tuple[int, ...]] | None) -> Case:
    loaded = load(path, shapes)
    return Case(name, path, module.eval(), windows.astype(np.float32), loaded, capture.to_onnx(loaded))


@pytest.fixture(scope="session")
def demo_forecaster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The trained demo-like forecaster (tests/quantize/conftest.py's, at window 96): model, graph, real windows."""
    from quantize.conftest import train_forecaster

    return train_forecaster(tmp_path_factory.mktemp("fw-demo"), window=96, steps=60)


@pytest.fixture(scope="session")
def demo(demo_forecaster: Any) -> Case:
    """The demo-like forecaster: 2 x LSTM(64), window 96, one feature, trained on Seattle temperatures."""
    f = demo_forecaster
    module = f.loaded.module
    return Case("demo", f.path, module, f.test_x[::97][:WINDOWS][:, None], f.loaded, f.proto)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def others(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Stacked LSTM, GRU, softmax classifier, multi-feature input, and a plain RNN with per-step outputs."""
    d = tmp_path_factory.mktemp("fw-models")
    rng = np.random.default_rng(1)
    out: dict[str, Case] = {}
    specs = {
        "stacked_lstm": (archs.ArchConfig(hidden=24, layers=3, layernorm=True, activation="tanh"), 32),
        "gru": (archs.ArchConfig(cell="gru", hidden=32, layers=2), 32),
        "rnn_all_steps": (archs.ArchConfig(cell="rnn", hidden=16, layers=1, n_features=2, n_outputs=2,
                                           batch_first=False, all_steps=True, layernorm=True, activation="gelu"), 16),
    }
    for i, (name, (cfg, window)) in enumerate(specs.items()):
        path, module = _checkpoint(name, cfg, window, d, seed=i)
        shape = archs.input_shapes(cfg, window)[0]
        out[name] = _case(name, path, module, rng.standard_normal((WINDOWS, *shape)), None)
    torch.manual_seed(7)
    for name, module, shape in (("softmax_classifier", SoftmaxClassifier(), (1, 40, 3)),
                                ("multi_feature", MultiFeatureNet(), (1, 24, 6))):
        path = _torchscript(name, module, shape, d)
        out[name] = _case(name, path, module, rng.standard_normal((WINDOWS, *shape)), [shape])
    return out


@pytest.fixture(scope="session")
def cases(demo: Case, others: dict[str, Case]) -> dict[str, Case]:
    """Every architecture: the demo and the five others."""
    return {"demo": demo, **others}




def _assert_int8_close(got: np.ndarray, ref: np.ndarray) -> None:
    g, r = np.asarray(got, np.float64).reshape(-1), np.asarray(ref, np.float64).reshape(-1)
    rel = np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-12)
    cos = float(g @ r / max(np.linalg.norm(g) * np.linalg.norm(r), 1e-12))
    assert rel < 0.03 and cos > 0.999, f"int8-weights: relative L2 {rel:.4f}, cosine {cos:.6f}"


@pytest.fixture
def int8_close() -> Callable[[np.ndarray, np.ndarray], None]:
    """An assertion for int8-weight outputs against float32 PyTorch: relative L2 under 3%, cosine over 0.999."""
    return _assert_int8_close
