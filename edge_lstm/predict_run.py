"""``edge-lstm predict``: readings from a file or a pipe through a :class:`~edge_lstm.predict.Predictor`, forecasts
out as CSV (flushed line by line when reading standard input, so a sensor pipe gets each forecast at once).

Python 3.9 compatible; imports numpy, jsonschema and the one runtime chosen.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edge_lstm.errors import UsageError
from edge_lstm.predict import ON_NAN, Predictor
from edge_lstm.predict_io import GapCheck, Readings, columns_for, describe_counts, format_row, open_lines, output


@dataclass(frozen=True)
class PredictRequest:
    """What ``edge-lstm predict`` was asked (the CLI's options)."""

    bundle: Path
    readings: str  #: a CSV path, or "-" for standard input
    streaming: bool = False
    output: str | None = None
    runtime: str = "auto"
    artifact: str | None = None
    precision: str | None = None
    warmup: str = "window"
    on_nan: str = "refuse"
    on_gap: str = "refuse"
    columns: list[str] | None = None
    timestamp_column: str | None = None
    threads: int = 1
    force: bool = False
    as_json: bool = False


def _warmup(text: str) -> int | None:
    if text == "window":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"--warmup {text!r} is neither 'window' nor a positive number of readings.",
                         "Pass --warmup window (the default) or e.g. --warmup 24.")
    return n


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one file: the same resolved path, or (hard or symbolic links) the same inode."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_is_not_an_input(req: PredictRequest) -> None:
    """Refuse ``-o`` naming the readings file or the bundle itself (with ``--force`` too: it would replace the input
    with forecasts)."""
    if req.output in (None, "-"):
        return
    out = Path(str(req.output))
    inputs = [("readings file", Path(req.readings))] if req.readings != "-" else []
    for what, path in [*inputs, ("bundle", Path(req.bundle))]:
        if _same_file(out, path):
            raise UsageError(f"Output '{req.output}' is the {what} '{path}' itself: writing the forecasts there "
                             f"would destroy the {what}{' (even with --force)' if req.force else ''}.",
                             "Pass another -o file, e.g. forecasts.csv.")


def run(req: PredictRequest) -> dict[str, Any]:
    """Run the predictor over the readings; the summary (with the forecasts themselves under ``--json`` without
    ``-o``)."""
    check_output_is_not_an_input(req)
    if req.on_nan not in ON_NAN:
        raise UsageError(f"Unknown --on-nan '{req.on_nan}'.", f"Accepted: {', '.join(ON_NAN)}.")
    gaps = GapCheck(req.on_gap, "")
    warm = _warmup(req.warmup)
    where = "standard input" if req.readings == "-" else f"'{req.readings}'"
    gaps.where = where
    predictor = Predictor.from_bundle(req.bundle, streaming=req.streaming, runtime=req.runtime,
                                      artifact=req.artifact, precision=req.precision, on_nan=req.on_nan,
                                      warmup=warm, threads=req.threads)
    collect = req.as_json and req.output in (None, "-")
    rows: list[dict[str, Any]] = []
    with predictor, _input(req.readings, where) as lines:
        feed = Readings(lines, predictor.features, where, req.columns, req.timestamp_column)
        feed.start()
        header = columns_for(predictor.features, predictor.horizon, predictor.target, feed.timestamp)
        with output(None if collect else req.output, req.force) as out:
            count = _loop(predictor, feed, gaps, out, header, rows if collect else None, req.readings == "-")
        info = predictor.describe()
    device = device_facts()
    summary: dict[str, Any] = {**info, "forecasts": count, "columns": header,
                               "output": None if req.output in (None, "-") else str(req.output),
                               "notes": [gaps.note] if gaps.note else [], "device": device,
                               "message": f"{describe_counts(info, count)} {describe_device(device)}"}
    if collect:
        summary["rows"] = rows
    return summary


def device_facts() -> dict[str, Any]:
    """Where the forecasts were computed, as this machine reports itself (the device runner's own
    :func:`~edge_lstm.device.device_info`: architecture, OS, kernel, Python, numpy, and the emulated device's marker
    when it runs on one)."""
    from edge_lstm.device import device_info

    return device_info()


def describe_device(device: dict[str, Any]) -> str:
    """``(aarch64, Debian GNU/Linux 12 (bookworm), Python 3.11.2, EMULATED)`` for the summary line."""
    tag = ", EMULATED (qemu-user)" if device.get("emulated") else ""
    return f"({device['machine']}, {device['os']}, Python {device['python']}, numpy {device['numpy']}{tag})"


class _input:  # noqa: N801 - used as a context manager like a function
    def __init__(self, source: str, where: str) -> None:
        self.source, self.where = source, where
        self.f: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        self.f = open_lines(self.source, self.where)
        return self.f

    def __exit__(self, *exc: object) -> None:
        if self.f is not None and self.source != "-":
            self.f.close()


def _loop(p: Predictor, feed: Readings, gaps: GapCheck, out: IO[str], header: list[str],
          rows: list[dict[str, Any]] | None, flush: bool) -> int:
    """Every reading through the predictor; forecasts written (or collected); the number of forecasts."""
    count = 0
    try:
        if rows is None:
            out.write(",".join(header) + "\n")
            if flush:
                out.flush()
        where = feed.where
        check = gaps.check if gaps.enabled and feed.timestamp else None
        push, write = p.forward, out.write
        for line, ts, values in feed:
            if check is not None and check(line, ts):
                p.resets += 1
                p.reset()
            forecast = push(values, f"{where} line {line}")
            if forecast is None:
                continue
            count += 1
            if rows is not None:
                rows.append({"line": line, "timestamp": ts, "forecast": [float(v) for v in forecast]})
                continue
            write(format_row(line, ts, forecast))
            if flush:
                out.flush()
    except BrokenPipeError:  # `predict ... | head`: the reader has gone; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return count
