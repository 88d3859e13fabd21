"""The demo-like forecaster, exported with ``--streaming --bundle``, and its PyTorch whole-window forecasts.

The demo's shape (2 x LSTM(64), a 96-hour window, the next hour's change of the
temperature from the temperature and its hourly change, both normalised with the
training rows' statistics), trained briefly on the real Seattle series, exported
to ONNX and TFLite at fp32 and full int8 with the streaming artifacts, validated
on held-out hours, bundled. The held-out CSV keeps the date column, as a sensor
log would.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_lstm.bundle_read import open_bundle
from edge_lstm.spec import Tolerance
from edge_lstm.validate import compare

WINDOW = 96
HELD_OUT = 260  # held-out readings: 165 forecast positions past the first full window
START = 1760


@dataclass(frozen=True)
class DemoBundle:
    """Paths of the demo-like export and the PyTorch reference on the held-out readings."""

    model: Path
    export: Path
    bundle: Path
    heldout: Path  #: date,temp,change
    train: Path
    series: np.ndarray  #: the held-out (temp, change) readings
    reference: np.ndarray  #: PyTorch's forecast (°F) at every position from WINDOW - 1 on
    reference_y: np.ndarray  #: the same as the model's raw output (normalised change)
    std: float  #: the temperature's training std (°F per unit of model output)


def make_demo_bundle(seattle_csv: Path, d: Path) -> DemoBundle:
    """Train, export (``edge-lstm export --streaming --bundle``) and compute the reference; see the module doc."""
    import torch

    from edge_lstm import archs, cli
    from edge_lstm.load import save_checkpoint

    rows = list(csv.reader(seattle_csv.open()))[1:2201]
    dates = [r[0] for r in rows][1:]
    temps = np.array([float(r[1]) for r in rows], np.float64)
    table = np.stack([temps[1:], np.diff(temps)], axis=1)  # temp, change (from the hour before)
    table = np.round(table, 2)  # as the CSVs hold them: predict reads exactly these values
    # held-out hours after the daylight-saving jump of 2010-03-14 (the local-time series has no 02:00-03:00 hour
    # there: a real gap, which predict refuses by default)
    train, held = table[:1700], table[START : START + HELD_OUT]
    _write(d / "train.csv", ["temp", "change"], train)
    _write(d / "heldout.csv", ["date", "temp", "change"], held, dates[START : START + HELD_OUT])
    mean, std = train.mean(axis=0), train.std(axis=0)
    z = ((train - mean) / std).astype(np.float32)
    idx = np.arange(len(z) - WINDOW)
    x = torch.from_numpy(np.stack([z[i : i + WINDOW] for i in idx]))
    y = torch.from_numpy((z[idx + WINDOW, 0] - z[idx + WINDOW - 1, 0])[:, None])
    torch.manual_seed(0)
    cfg = archs.ArchConfig(n_features=2, hidden=64, layers=2)
    model = archs.build("forecaster", cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = np.random.default_rng(0)
    for _ in range(60):
        b = torch.from_numpy(gen.integers(0, len(x), 32))
        loss = torch.nn.functional.mse_loss(model(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    norm = {"mean": mean.tolist(), "std": std.tolist(), "columns": ["temp", "change"], "target_index": [0],
            "target": "delta"}
    ckpt = save_checkpoint(d / "demo.pt", model, "forecaster", cfg, WINDOW, norm, "forecast")
    (d / "recipe.toml").write_text('name = "bundle-test"\ninherit = "demo"\nprecisions = ["fp32", "int8"]\n'
                                   '[validation]\nmax_samples = 32\n')
    out = d / "export"
    code = cli.main(["export", str(ckpt), "-o", str(out), "--recipe", str(d / "recipe.toml"), "--data",
                     str(d / "heldout.csv"), "--calib", str(d / "train.csv"), "--streaming", "--bundle", "--json"])
    assert code == 0
    zh = ((held - mean) / std).astype(np.float32)
    windows = torch.from_numpy(np.stack([zh[i - WINDOW + 1 : i + 1] for i in range(WINDOW - 1, len(zh))]))
    with torch.no_grad():
        ref_y = model(windows).numpy()[:, 0].astype(np.float64)
    last = held[WINDOW - 1 :, 0]
    return DemoBundle(ckpt, out, out / "demo.bundle.zip", d / "heldout.csv", d / "train.csv", held,
                      ref_y * std[0] + last, ref_y, float(std[0]))


def _write(path: Path, header: list[str], values: np.ndarray, first: list[str] | None = None) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, row in enumerate(values):
            w.writerow(([first[i]] if first else []) + [f"{v:.2f}" for v in row])


def read_forecasts(path: Path | str, text: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and rows of ``predict``'s CSV output (from a file, or from ``text``)."""
    content = text if text is not None else Path(path).read_text()
    rows = list(csv.reader(content.splitlines()))
    return rows[0], rows[1:]


def rounded_series(b: DemoBundle) -> np.ndarray:
    """The held-out readings exactly as the CSV holds them (two decimals), as predict reads them."""
    with b.heldout.open(newline="") as f:
        return np.array([[float(r["temp"]), float(r["change"])] for r in csv.DictReader(f)])


def tolerance(bundle: Path, artifact: str) -> Tolerance:
    """The tolerance the artifact was validated with, from the manifest."""
    art = open_bundle(bundle).artifact(artifact)
    return Tolerance(**{k: v for k, v in art["validation"][0]["tolerance"].items() if k != "per_output"})


def assert_matches(b: DemoBundle, artifact: str, forecasts: np.ndarray) -> None:
    """Forecasts (°F) at every position from WINDOW - 1 equal PyTorch's within the artifact's tolerance."""
    assert forecasts.shape == b.reference.shape and np.isfinite(forecasts).all()
    last = b.series[WINDOW - 1 :, 0]
    got_y = (forecasts - last) / b.std  # back to the model's output, where export's tolerance applies
    m = compare("y", b.reference_y[:, None], got_y[:, None], tolerance(b.bundle, artifact))
    assert m.passed, (artifact, m.to_dict())
