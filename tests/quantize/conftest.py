"""A small real forecaster for the quantization tests: hourly Seattle temperatures (2010).

Trained once per session (seeded, ~15 s): LSTM(1->64, 2 layers) + Linear on
the last step, window 24, one step ahead, on the first 70% of the year; the last
30% gives held-out windows for the forecast MAE.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

WINDOW = 24
HIDDEN = 64  # 50k parameters: small enough to train fast, large enough that file ratios mean something
LAYERS = 2
STEPS = 200
SEED = 0


@dataclass
class Forecaster:
    """Everything a quantization test needs: the model, its ONNX graph and real windows."""

    path: Path
    loaded: object  # edge_lstm.load.LoadedModel
    proto: object  # onnx.ModelProto
    calib: np.ndarray  # (N, WINDOW, 1) normalised training windows
    test_x: np.ndarray  # (M, WINDOW, 1) normalised held-out windows
    test_y: np.ndarray  # (M, 1) normalised next-hour targets
    torch_pred: np.ndarray  # (M, 1) PyTorch float predictions on test_x


def seattle_series() -> np.ndarray:
    """The 8,759 hourly temperatures shipped with vega_datasets (offline)."""
    vega = pytest.importorskip("vega_datasets")
    path = Path(vega.__file__).parent / "_data" / "seattle-temps.csv"
    with path.open() as f:
        return np.array([float(r["temp"]) for r in csv.DictReader(f)], dtype=np.float32)


def make_windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows ``(N, window, 1)`` and next-step targets ``(N, 1)``."""
    idx = np.arange(window)[None, :] + np.arange(len(series) - window)[:, None]
    return series[idx][..., None], series[window:][:, None]


def train_forecaster(tmp: Path, window: int = WINDOW, hidden: int = HIDDEN, layers: int = LAYERS,
                     steps: int = STEPS) -> Forecaster:
    """Train the seeded forecaster (on one thread) and capture it as ONNX."""
    import torch

    series = seattle_series()
    split = int(0.7 * len(series))
    mean, std = float(series[:split].mean()), float(series[:split].std())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same weights whatever the machine's core count or OMP_NUM_THREADS
    try:
        return _train(tmp, window, hidden, layers, steps, series, split, mean, std)
    finally:
        torch.set_num_threads(threads)


def _train(tmp: Path, window: int, hidden: int, layers: int, steps: int, series: np.ndarray, split: int,
           mean: float, std: float) -> Forecaster:
    import torch

    from edge_lstm import archs, capture, load

    norm = (series - mean) / std
    train_x, train_y = make_windows(norm[:split], window)
    test_x, test_y = make_windows(norm[split:], window)
    torch.manual_seed(SEED)
    cfg = archs.ArchConfig(n_features=1, hidden=hidden, layers=layers)
    model = archs.build("forecaster", cfg)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = np.random.default_rng(SEED)
    tx, ty = torch.from_numpy(train_x), torch.from_numpy(train_y)
    for _ in range(steps):
        b = torch.from_numpy(gen.integers(0, len(tx), 64))
        loss = torch.nn.functional.mse_loss(model(tx[b]), ty[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = load.save_checkpoint(tmp / "forecaster.pt", model, "forecaster", cfg, window,
                                normalization={"mean": [mean], "std": [std]})
    loaded = load.load(path)
    with torch.no_grad():
        pred = model(torch.from_numpy(test_x)).numpy()
    return Forecaster(path, loaded, capture.to_onnx(loaded), train_x, test_x, test_y, pred)


@pytest.fixture(scope="session")
def forecaster(tmp_path_factory: pytest.TempPathFactory) -> Forecaster:
    """The trained Seattle-temperature forecaster (session-scoped)."""
    return train_forecaster(tmp_path_factory.mktemp("quantize"))


@pytest.fixture(scope="session")
def three_layers(tmp_path_factory: pytest.TempPathFactory) -> Forecaster:
    """A 3 x LSTM(32) forecaster trained the same way: another stack than the reference's (its residual int8 cell
    misses the 3% task gate: the export falls back to the int16 cell)."""
    return train_forecaster(tmp_path_factory.mktemp("three"), hidden=32, layers=3)


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - target)))


def _csv(path: Path, values: np.ndarray) -> Path:
    path.write_text("temp\n" + "\n".join(f"{v:.2f}" for v in values) + "\n")
    return path


@pytest.fixture(scope="session")
def series_files(tmp_path_factory: pytest.TempPathFactory, seattle_csv: Path) -> tuple[Path, Path]:
    """(calibration CSV from the training period, held-out CSV from the last 30% of the year), in °F."""
    from edge_lstm.data import read_series

    s = read_series(seattle_csv)[:, 0]
    d = tmp_path_factory.mktemp("series")
    split = int(0.7 * len(s))
    return _csv(d / "train.csv", s[:split]), _csv(d / "heldout.csv", s[split:])
