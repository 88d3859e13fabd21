"""How fast ``edge-lstm predict --streaming`` runs on this host, beside the bare runtime's own step.

For each streaming artifact of the demo bundle (float TFLite, int8 TFLite, float ONNX) it measures, in
interleaved rounds in one process (the host may be shared: only ratios from the same run compare):

- **bare step**: what a hand-written loop over the runtime costs per reading: set the input (and, for explicit
  state, the state inputs), invoke, read the forecast (and the state outputs); the readings already normalised;
- **Predictor.update**: one reading in (a list of floats), the forecast in °F out (a numpy array): normalisation,
  the NaN check, the state, the target transform; **Predictor.forward**, the same with a list out (what
  ``predict`` calls);
- **predict --streaming**: the command's own loop (``edge_lstm.predict_run.run``): CSV lines parsed, timestamps
  checked for gaps, forecasts formatted and written; readings per second;
- **end to end**: ``edge-lstm predict`` in a fresh process on the same file, process start and imports included.

The predictor's overhead is (p50 - bare p50) / bare p50. Usage::

    python benchmarks/predict.py [--export examples/out/export] [--readings 20000] [--rounds 5]

``--export`` is an export made with ``--streaming --precision fp32 --precision int8`` (``make demo`` writes one);
without one that holds a validated streaming artifact of each kind, a demo-shaped forecaster (2 x LSTM(64), 25
steps, 2 features: the demo's cost, trained for 60 steps) is exported into a temporary directory first.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: the streaming artifacts measured: (format, precision)
KINDS = (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"))
WINDOW = 25  #: the demo's window (examples/demo.py)


def demo_shaped_export(d: Path) -> Path:
    """The demo's forecaster shape (2 x LSTM(64), 25 steps, temperature and its change in, the next change out),
    trained briefly (60 Adam steps) on the real series, exported with fp32 and int8 streaming artifacts."""
    import torch

    from edge_lstm import archs, cli
    from edge_lstm.load import save_checkpoint

    series = seattle(2000)
    _write_csv(d / "train.csv", series[:1500], with_time=False)
    _write_csv(d / "held.csv", series[1500:], with_time=False)
    mean, std = series[:1500].mean(axis=0), series[:1500].std(axis=0)
    z = ((series[:1500] - mean) / std).astype(np.float32)
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
        opt.step()
    norm = {"mean": mean.tolist(), "std": std.tolist(), "columns": ["temp", "change"], "target_index": [0],
            "target": "delta"}
    ckpt = save_checkpoint(d / "demo.pt", model.eval(), "forecaster", cfg, WINDOW, norm)
    out = d / "export"
    with contextlib.redirect_stdout(io.StringIO()):  # the export's JSON report: not part of the table
        code = cli.main(["export", str(ckpt), "-o", str(out), "--format", "onnx", "--format", "tflite", "--precision",
                         "fp32", "--precision", "int8", "--lowering", "fused", "--calib", str(d / "train.csv"),
                         "--data", str(d / "held.csv"), "--streaming", "--json"])
    if code != 0:
        raise SystemExit(f"export failed with exit code {code}")
    return out


def seattle(n: int) -> np.ndarray:
    """(temp, hourly change) from the real Seattle series (vega_datasets, offline)."""
    import vega_datasets

    path = Path(vega_datasets.__file__).parent / "_data" / "seattle-temps.csv"
    temps = np.array([float(r[1]) for r in list(csv.reader(path.open()))[1 : n + 2]])
    return np.round(np.stack([temps[1:], np.diff(temps)], axis=1), 2)


def _write_csv(path: Path, rows: np.ndarray, with_time: bool) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow((["time"] if with_time else []) + ["temp", "change"])
        for i, r in enumerate(rows):
            w.writerow(([1262304000 + 3600 * i] if with_time else []) + [f"{r[0]:.2f}", f"{r[1]:.2f}"])


def _has_all(export: Path) -> bool:
    """True when ``export`` holds a validated streaming artifact of every kind measured."""
    if not (export / "report.json").is_file():
        return False
    from edge_lstm.bundle import read_report

    arts = [a for a in read_report(export)["artifacts"] if a.get("streaming") and a.get("passed")]
    return all(any((a["format"], a["precision"]) == k for a in arts) for k in KINDS)


def bare_stepper(bundle: Any, art: dict[str, Any], z: np.ndarray) -> Callable[[int], Any]:
    """A hand-written step over the runtime for reading ``i`` (see the module docstring)."""
    x = next(t for t in art["inputs"] if t["role"] == "readings")
    y = next(t for t in art["outputs"] if t["role"] == "forecast")
    pairs = [(t["input"], t["output"]) for t in art["state"]["tensors"] if t["input"]]
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in x["shape"])
    feeds = [row.reshape(shape) for row in z.astype(np.float32)]
    if art["format"] == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(bundle.data(art["file"]), opts, providers=["CPUExecutionProvider"])
        feed = {i: np.zeros((1, 1, 64), np.float32) for i, _ in pairs}
        fetch = [y["name"], *(o for _, o in pairs)]

        def ort_step(i: int) -> Any:
            feed[x["name"]] = feeds[i]
            outs = sess.run(fetch, feed)
            for k, (name, _) in enumerate(pairs):
                feed[name] = outs[k + 1]
            return outs[0]

        return ort_step
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=bundle.data(art["file"]), num_threads=1)
    it.allocate_tensors()
    ins = {d["name"]: d["index"] for d in it.get_input_details()}
    outs_ix = {d["name"]: d["index"] for d in it.get_output_details()}
    xi, yi = ins[x["name"]], outs_ix[y["name"]]
    links = [(ins[i], outs_ix[o]) for i, o in pairs]
    state = [np.zeros((1, 1, 64), np.float32) for _ in links]
    set_t, get_t, invoke = it.set_tensor, it.get_tensor, it.invoke

    def tfl_step(i: int) -> Any:
        set_t(xi, feeds[i])
        for k, (j, _) in enumerate(links):
            set_t(j, state[k])
        invoke()
        for k, (_, o) in enumerate(links):
            state[k] = get_t(o)
        return get_t(yi)

    return tfl_step


def per_reading(bundle: Any, bundle_path: Path, name: str, z: np.ndarray, rows: list[list[float]],
                block: int = 500) -> dict[str, list[float]]:
    """Seconds per reading of the bare step, ``Predictor.update`` (a list in, a numpy array out) and
    ``Predictor.forward`` (floats in and out: what ``predict`` calls), measured in alternating blocks of
    ``block`` readings so the host's load falls on all three alike."""
    from edge_lstm.predict import Predictor

    rt = "litert" if name.endswith(".tflite") else "onnxruntime"
    bare = bare_stepper(bundle, bundle.artifact(name), z)
    update = Predictor.from_bundle(bundle_path, artifact=name, runtime=rt).update
    p = Predictor.from_bundle(bundle_path, artifact=name, runtime=rt)
    forward = p.forward
    calls: dict[str, Callable[[int], Any]] = {"bare": bare, "update": lambda i: update(rows[i]),
                                              "forward": lambda i: forward(rows[i], None)}
    lat: dict[str, list[float]] = {k: [] for k in calls}
    clock = time.perf_counter
    order = list(calls)
    for start in range(0, len(rows), block):
        for k in order:
            fn, out = calls[k], lat[k]
            for i in range(start, min(start + block, len(rows))):
                t0 = clock()
                fn(i)
                out.append(clock() - t0)
        order = order[1:] + order[:1]  # rotate: no kind always runs first
    return lat


def command_loop(bundle_path: Path, name: str, readings: Path, out: Path) -> tuple[float, float]:
    """Readings per second of ``predict --streaming``'s own loop, in this process: per second of wall-clock time,
    and per second of this process's CPU time (on a shared host the wall clock also counts the time the other
    processes had the core)."""
    from edge_lstm.predict_run import PredictRequest, run

    req = PredictRequest(bundle_path, str(readings), True, str(out), artifact=name, force=True,
                         runtime="litert" if name.endswith(".tflite") else "onnxruntime")
    t0, c0 = time.perf_counter(), time.process_time()
    res = run(req)
    n = float(res["readings"])
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def end_to_end(bundle_path: Path, name: str, readings: Path, out: Path) -> float:
    """Readings per second of ``edge-lstm predict --streaming`` in a fresh process (start-up included)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edge_lstm.entry", "predict", str(bundle_path), str(readings),
                    "--streaming", "--artifact", name, "-o", str(out), "--force"], check=True, env=env,
                   capture_output=True)
    n = sum(1 for _ in readings.open()) - 1
    return n / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", type=Path, default=ROOT / "examples" / "out" / "export")
    ap.add_argument("--readings", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from edge_lstm import bundle as bundle_mod
    from edge_lstm.bundle_read import open_bundle

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        export = args.export
        source = f"the export in {export}"
        if not _has_all(export):
            export = demo_shaped_export(tmp)
            source = ("a demo-shaped forecaster (2 x LSTM(64), 25 steps, 2 features; trained for 60 steps: the "
                      "demo's cost per step)")
        bundle_path = tmp / "demo.bundle.zip"
        arts = [a for a in bundle_mod.read_report(export)["artifacts"] if a.get("streaming") and a.get("passed")]
        names = [next(a["file"] for a in arts if (a["format"], a["precision"]) == k) for k in KINDS
                 if any((a["format"], a["precision"]) == k for a in arts)]
        bundle_mod.write(export, bundle_path, names)
        bundle = open_bundle(bundle_path)
        m = bundle.manifest
        series = seattle(args.readings)
        while len(series) < args.readings:
            series = np.concatenate([series, series])
        series = series[: args.readings]
        readings = tmp / "readings.csv"
        _write_csv(readings, series, with_time=True)
        z = (series - np.array(m["normalization"]["mean"])) / np.array(m["normalization"]["std"])
        rows = series.tolist()
        results: dict[str, dict[str, list[Any]]] = {n: {"bare": [], "update": [], "forward": [], "loop": [], "cpu": [],
                                                        "e2e": []}
                                                    for n in names}
        for _ in range(args.rounds):
            for n in names:
                r = results[n]
                for k, v in per_reading(bundle, bundle_path, n, z, rows).items():
                    r[k].append(v)
                wall, cpu = command_loop(bundle_path, n, readings, tmp / "out.csv")
                r["loop"].append(wall)
                r["cpu"].append(cpu)
                r["e2e"].append(end_to_end(bundle_path, n, readings, tmp / "out.csv"))
        report(results, source, args)
    return 0


def report(results: dict[str, dict[str, list[Any]]], source: str, args: argparse.Namespace) -> None:
    """Print the table: per artifact, the medians over rounds."""
    load = os.getloadavg()
    print(f"predict --streaming on this host ({os.cpu_count()} cores, load average {load[0]:.1f} at the end: the "
          f"host is shared, so compare ratios within this run); {args.readings:,} readings of the real Seattle "
          f"series, {args.rounds} interleaved rounds, 1 thread; model: {source}")
    print()
    print("| artifact | bare step p50 / p99 µs (readings/s: 1 / mean) | Predictor.update p50 / p99 µs (overhead) "
          "| Predictor.forward p50 / p99 µs (overhead) | predict --streaming loop, readings/s (per CPU second) "
          "| end to end (fresh process), readings/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n, r in results.items():
        rate = statistics.median(len(x) / sum(x) for x in r["bare"])
        cells = [n, f"{_lat(r['bare'])} ({rate:,.0f})"]
        for api in ("update", "forward"):
            over = statistics.median((pct(u, 50) - pct(b, 50)) / pct(b, 50)
                                     for u, b in zip(r[api], r["bare"], strict=True))
            cells.append(f"{_lat(r[api])} ({over:+.0%})")
        cells += [f"{statistics.median(r['loop']):,.0f} ({statistics.median(r['cpu']):,.0f})",
                  f"{statistics.median(r['e2e']):,.0f}"]
        print("| " + " | ".join(cells) + " |")
    print()
    print("overhead: (p50 - bare step p50) / bare step p50, the median over the rounds; update returns a numpy array,")
    print("forward (what predict calls) a list; the loop column is predict's own loop in this process (CSV parsed,")
    print("gaps checked, forecasts written; bundle opened and verified, model loaded), per second of wall-clock")
    print("time and (in brackets) of this process's CPU time; the last column the command in a fresh process,")
    print("start-up included. On a shared host the wall clock also counts other processes' time on the core.")


def _lat(rounds: list[list[float]]) -> str:
    p50 = statistics.median(pct(x, 50) for x in rounds)
    p99 = statistics.median(pct(x, 99) for x in rounds)
    return f"{p50 * 1e6:.1f} / {p99 * 1e6:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
