"""The edge-lstm demo on real data, end to end.

1. Read hourly Seattle temperatures for 2010 (8,760 readings; shipped offline by
   the ``vega_datasets`` package).
2. Train a small forecaster briefly (2 x LSTM(64), 96-hour window, the change in
   temperature over the next hour), with gradient clipping, on the first 70% of
   the year.
3. Save an edge-lstm checkpoint with its normalisation statistics.
4. Export it with the ``edge-lstm`` CLI and validate every artifact against PyTorch
   on held-out windows (the last 15% of the year, never seen in training).

This is a small, honest stand-in for a full training command: a few hundred
optimiser steps, capped at about a minute of CPU time.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from vega_datasets import data as vega

from edge_lstm import archs
from edge_lstm.load import save_checkpoint

HERE = Path(__file__).resolve().parent
WINDOW = 96


def load_series() -> np.ndarray:
    """Hourly temperatures (°F) as a (time, 1) float32 array."""
    df = vega.seattle_temps()
    return df["temp"].to_numpy(dtype=np.float32)[:, None]


def windows(series: np.ndarray, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All sliding windows and their targets: the change over the next hour.

    Forecasting the change and adding it to the last reading (rather than the
    level itself) halves the error of this small model and keeps its output on a
    fine int8 grid: the change spans a few degrees, the level fifty.
    """
    idx = np.arange(len(series) - window)
    x = np.stack([series[i : i + window] for i in idx])
    y = series[idx + window, :1] - series[idx + window - 1, :1]
    return torch.from_numpy(x), torch.from_numpy(y)


def write_csv(path: Path, series: np.ndarray) -> None:
    """A one-column CSV with a header, like the user's own data would be."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["temp"])
        w.writerows([[f"{v:.2f}"] for v in series[:, 0]])


def train(series: np.ndarray, seconds: float, seed: int = 0) -> tuple[torch.nn.Module, archs.ArchConfig, dict]:
    """Train on the first 70% with early stopping on the next 15%."""
    torch.manual_seed(seed)
    n = len(series)
    tr, va = series[: int(0.70 * n)], series[int(0.70 * n) - WINDOW : int(0.85 * n)]
    mean, std = float(tr.mean()), float(tr.std())
    norm = {"mean": [mean], "std": [std], "target_index": [0], "target": "delta"}
    xt, yt = windows((tr - mean) / std, WINDOW)
    xv, yv = windows((va - mean) / std, WINDOW)
    cfg = archs.ArchConfig(cell="lstm", n_features=1, hidden=64, layers=2, n_outputs=1)
    model = archs.build("forecaster", cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    best, best_state, step, t0 = float("inf"), None, 0, time.time()
    gen = torch.Generator().manual_seed(seed)
    while time.time() - t0 < seconds and step < 1500:
        model.train()
        batch = torch.randint(0, len(xt), (64,), generator=gen)
        loss = torch.nn.functional.mse_loss(model(xt[batch]), yt[batch])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # against exploding gradients
        opt.step()
        step += 1
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                val = float(torch.nn.functional.mse_loss(model(xv), yv))
            if val < best:
                best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
            print(f"  step {step:4d}  train mse {loss.item():.4f}  val mse {val:.4f}", flush=True)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    print(f"trained {step} steps in {time.time() - t0:.0f} s; best validation MSE {best:.4f} (normalised)")
    return model, cfg, norm


def main() -> int:
    """Train, save, export, validate; print where the report is."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--seconds", type=float, default=90.0, help="training time budget")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    series = load_series()
    n = len(series)
    print(f"Seattle hourly temperatures, 2010: {n} readings, {series.min():.1f}..{series.max():.1f} °F")
    model, cfg, norm = train(series, args.seconds)
    ckpt = save_checkpoint(args.out / "forecaster.pt", model, "forecaster", cfg, WINDOW, norm, "forecast",
                           {"name": "forecaster", "data": "vega_datasets seattle-temps.csv (2010, hourly)"})
    write_csv(args.out / "train.csv", series[: int(0.70 * n)])
    write_csv(args.out / "heldout.csv", series[int(0.85 * n) - WINDOW :])
    held = series[int(0.85 * n) - WINDOW :, 0]
    naive = float(np.mean(np.abs(held[WINDOW:] - held[WINDOW - 1 : -1])))
    print(f"checkpoint: {ckpt}")
    print(f"baseline for the held-out forecast MAE: persistence (next hour = this hour) {naive:.3f} °F")
    cmd = [sys.executable, "-m", "edge_lstm.cli", "export", str(ckpt), "-o", str(args.out / "export"),
           "--data", str(args.out / "heldout.csv"), "--recipe", "demo",
           "--calib", str(args.out / "train.csv"), "--streaming", "--profile", "--force"]
    print("$ edge-lstm " + " ".join(cmd[3:]), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
