"""Figures for `edge-lstm train` on the bundled real series (README "Training"), from one run.

1. The demo forecaster (the command `make demo` runs), trained twice in fresh
   processes: test MAE against persistence and seasonal naive, and whether the two
   checkpoints, logs and reports are byte-identical.
2. Long-window tasks (336 hourly steps, two weeks) from the same series, trained
   with `--cell rnn` and `--cell lstm`: the gradient notes and both test errors.
   (a) forecast the next hour from two weeks of readings; (b) classify whether the
   last hour is warmer than the window's mean, which needs the whole window.

Timing is not a goal here; the figures are computed from the artifacts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import demo


def train(args: list[str], out: Path) -> dict:
    """Run `edge-lstm train ... -o out`; return the log and the files' hashes."""
    cmd = [sys.executable, "-m", "edge_lstm.cli", "train", *args, "-o", str(out), "--force"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    files = [out, out.with_name(out.stem + ".train.json"), out.with_name(out.stem + ".train.html")]
    log = json.loads(files[1].read_text())
    log["_hashes"] = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    return log


def demo_figures(tmp: Path, epochs: int) -> None:
    series = tmp / "seattle.csv"
    demo.write_series(series)
    args = [str(series), *demo.TRAIN_ARGS, "--epochs", str(epochs)]
    a, b = train(args, tmp / "run1" / "f.pt"), train(args, tmp / "run2" / "f.pt")
    t = a["test"]
    print("| demo forecaster (test rows, °F) | MAE | RMSE | model's MAE lower by |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| 2 x LSTM(64), {demo.WINDOW} h window, best epoch {a['best_epoch']} of {len(a['epochs'])} | "
          f"{t['model']['mae']:.4f} | {t['model']['rmse']:.4f} | |")
    for key in ("persistence", "seasonal_naive"):
        print(f"| {key.replace('_', ' ')} | {t[key]['mae']:.4f} | {t[key]['rmse']:.4f} | "
              f"{t[key]['model_improvement']:.1%} |")
    same = a["_hashes"] == b["_hashes"] and a["test"] == b["test"]
    print(f"\ntwo runs in fresh processes: checkpoint, log and report byte-identical: {same}")


def above_mean_csv(series: Path, out: Path, window: int) -> Path:
    """``temp,above``: whether each hour is warmer than the mean of the ``window`` hours ending with it."""
    import csv

    import numpy as np

    with series.open(newline="") as f:
        temps = np.array([float(r["temp"]) for r in csv.DictReader(f)])
    means = np.convolve(temps, np.ones(window) / window, mode="valid")  # means[i]: rows i .. i + window - 1
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["temp", "above"])
        for i in range(window - 1, len(temps)):
            w.writerow([f"{temps[i]:.2f}", int(temps[i] > means[i - window + 1])])
    return out


def long_window(tmp: Path, epochs: int) -> None:
    series = tmp / "seattle.csv"
    labelled = above_mean_csv(series, tmp / "above.csv", 336)
    tasks = {"forecast the next hour": [str(series), "--target-column", "temp"],
             "warmer than the window's mean": [str(labelled), "--task", "classify", "--label-column", "above"]}
    print("\n| long window (336 steps) | cell | test error | baseline | notes (first-tenth/last gradient per epoch) |")
    print("| --- | --- | ---: | ---: | --- |")
    for task, data in tasks.items():
        for cell in ("rnn", "lstm"):
            log = train([*data, "--window", "336", "--stride", "4", "--cell", cell, "--hidden", "32", "--layers",
                         "1", "--epochs", str(epochs), "--lr", "1e-3", "--seed", "0"], tmp / f"long-{cell}.pt")
            ratios = ", ".join(f"{e['gradient_reach']['early_to_last']:.0e}" for e in log["epochs"])
            notes = "; ".join(n["kind"] for n in log["notes"]) or "none"
            t = log["test"]
            if "persistence" in t:
                err, base = f"MAE {t['model']['mae']:.4f} °F", f"persistence {t['persistence']['mae']:.4f}"
            else:
                err = f"accuracy {t['model']['accuracy']:.3f}, macro-F1 {t['model']['macro_f1']:.3f}"
                base = f"majority {t['majority_class']['accuracy']:.3f}"
            print(f"| {task} | {cell} | {err} | {base} | {notes} ({ratios}) |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=demo.EPOCHS)
    ap.add_argument("--long-epochs", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "run1").mkdir()
        (tmp / "run2").mkdir()
        demo_figures(tmp, args.epochs)
        long_window(tmp, args.long_epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
