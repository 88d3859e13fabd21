"""The edge-lstm demo on real data, end to end, with the ``edge-lstm`` command line.

1. Write the hourly Seattle temperatures of 2010 (8,759 readings, shipped offline
   by the ``vega_datasets`` package) as a CSV with the hour-to-hour change beside
   each reading.
2. ``edge-lstm train``: a 2 x LSTM(64) forecaster of the next hour's change from a
   25-hour window (a day and the hour before it: longer windows fitted the training
   months better and carried over worse to the colder held-out weeks); chronological
   split (70% train, 15% validation, 15% test),
   normalisation from the training rows, AdamW with a cosine schedule, gradient
   clipping, early stopping; a fixed number of epochs, so the figures are the same
   on every run and every machine speed.
3. ``edge-lstm export``: ONNX and TFLite at every precision, each validated on the
   test rows (never seen in training) and profiled; ``--bundle`` packs them for ``edge-lstm predict``;
   the last line printed is the path of ``report.html``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from vega_datasets import data as vega

HERE = Path(__file__).resolve().parent
WINDOW = 25
EPOCHS = 20
#: the training command's settings (benchmarks/train_figures.py trains the same model)
TRAIN_ARGS = ["--target-column", "temp", "--features", "change", "--target-transform", "delta", "--window",
              str(WINDOW), "--hidden", "64", "--layers", "2", "--lr", "3e-3", "--patience", "6", "--seed", "0"]


def write_series(path: Path) -> int:
    """``date,temp,change``: each hour's reading and its change from the hour before; returns the row count."""
    df = vega.seattle_temps()
    temps = [float(t) for t in df["temp"]]
    dates = [str(d) for d in df["date"]]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "temp", "change"])
        for i in range(1, len(temps)):
            w.writerow([dates[i], f"{temps[i]:.2f}", f"{temps[i] - temps[i - 1]:.2f}"])
    return len(temps) - 1


def write_part(src: Path, dst: Path, columns: list[str], rows: tuple[int, int]) -> None:
    """The model's feature columns for rows ``[start, stop)`` of ``src`` (what ``export --data`` reads)."""
    with src.open(newline="") as f:
        table = list(csv.DictReader(f))[rows[0] : rows[1]]
    with dst.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows([[r[c] for c in columns] for r in table])


def cli(*args: str) -> int:
    """Run ``edge-lstm ARGS`` with this interpreter, echoing the command."""
    print("$ edge-lstm " + " ".join(args), flush=True)
    return subprocess.call([sys.executable, "-m", "edge_lstm.cli", *args])


def figures(log: dict) -> None:
    """The test figures beside both baselines, and the goals they are held to."""
    t = log["test"]
    model = t["model"]["mae"]
    print(f"test MAE over {t['windows']} windows (°F): model {model:.4f}, persistence {t['persistence']['mae']:.4f}, "
          f"seasonal naive (season {t['seasonal_naive']['season']} h) {t['seasonal_naive']['mae']:.4f}")
    for key, goal in (("persistence", 0.30), ("seasonal_naive", 0.50)):
        gain = t[key]["model_improvement"]
        verdict = "met" if gain >= goal else "NOT met"
        print(f"  model MAE lower than {key.replace('_', ' ')} by {gain:.1%} (goal >= {goal:.0%}: {verdict})")


def main() -> int:
    """Train, export, validate; print the figures and where the reports are."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--epochs", type=int, default=EPOCHS,
                    help="training epochs (the run is bounded by epochs, not time)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    series = args.out / "seattle.csv"
    n = write_series(series)
    print(f"Seattle hourly temperatures, 2010: {n} rows with the hourly change -> {series}")
    ckpt = args.out / "forecaster.pt"
    rc = cli("train", str(series), *TRAIN_ARGS, "--epochs", str(args.epochs), "-o", str(ckpt), "--force")
    if rc != 0:
        return rc
    log = json.loads(ckpt.with_name("forecaster.train.json").read_text())
    figures(log)
    split, feats = log["data"]["split_rows"], log["data"]["features"]
    write_part(series, args.out / "train.csv", feats, tuple(split["train"]))  # type: ignore[arg-type]
    write_part(series, args.out / "heldout.csv", feats, tuple(split["test"]))  # type: ignore[arg-type]
    export = args.out / "export"
    rc = cli("export", str(ckpt), "-o", str(export), "--data", str(args.out / "heldout.csv"), "--recipe", "demo",
             "--calib", str(args.out / "train.csv"), "--streaming", "--profile", "--bundle", "--force", "--units",
             "°F")
    if (export / "report.html").exists():  # written whether or not every artifact passed
        print(f"Open the report: {(export / 'report.html').resolve()}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
