"""Readings in, forecasts out, for ``edge-lstm predict``: CSV lines from a file or a pipe, line numbers in every
message.

Input: a CSV whose header names the columns (the bundle's features are picked by
name, in any order; other columns are ignored), or with no header (every field
numeric but a first timestamp) the features in the bundle's order, or with
``--columns`` naming the fields of a headerless feed. A timestamp column (``--timestamp-column``, else the
first column called time, timestamp, date, datetime or ts) is passed through to
the forecasts and checked for gaps.

Bad input names the line: a missing column (exit 2, with the columns there are),
text in a numeric column, a line with too few fields. An empty field or
``nan``/``NA``/``null`` is a missing value, handed to the predictor's
``--on-nan`` policy. With timestamps, a gap (an interval longer than 1.5 times
the first interval) or a timestamp that does not advance follows ``--on-gap``:
``refuse`` (exit 2), ``reset`` (start the window over) or ``ignore``.

Python 3.9 compatible.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from edge_lstm.errors import DataError, OutputExistsError, UsageError

TIME_NAMES = ("timestamp", "time", "datetime", "date", "ts")
MISSING = ("", "nan", "na", "n/a", "null", "none")
ON_GAP = ("refuse", "reset", "ignore")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class Readings:
    """Iterate a CSV feed as ``(line number, timestamp text or None, float64 feature values)``."""

    def __init__(self, lines: Iterable[str], features: list[str], where: str, columns: list[str] | None = None,
                 timestamp_column: str | None = None) -> None:
        self.features, self.where = features, where
        self._reader = csv.reader(lines)
        self._columns, self._ts_name = columns, timestamp_column
        self.timestamp: str | None = None  #: the timestamp column's name, once the header is read
        self._index: list[int] = []
        self._ts = -1
        self._width = 0
        self._pending: list[str] | None = None

    def start(self) -> None:
        """Read the header (or the first line of a headerless feed) and map the columns; errors name them."""
        first = next((r for r in self._reader if r), None)
        if first is None:
            raise DataError(f"{self.where} holds no readings.")
        header = self._columns
        if header is None and not any(_is_number(c) for c in first):
            header = [c.strip() for c in first]
        elif header is None:
            header = self._positional(first)
            self._pending = first
        else:
            self._pending = first
        self._map(header)

    def _positional(self, first: list[str]) -> list[str]:
        n = len(self.features)
        if len(first) == n:
            return list(self.features)
        if len(first) == n + 1 and not _is_number(first[0]):
            return ["timestamp", *self.features]
        raise DataError(f"{self.where} line 1 has {len(first)} field(s) and no header; without a header a line holds "
                        f"the {n} feature(s) {', '.join(self.features)} (optionally after a timestamp).",
                        "Add a header line naming the columns, or pass --columns.")

    def _map(self, header: list[str]) -> None:
        missing = [f for f in self.features if f not in header]
        if missing:
            raise DataError(f"{self.where} has no column {', '.join(map(repr, missing))}; the model takes "
                            f"{', '.join(self.features)}; the header has {', '.join(header) or 'nothing'}.",
                            "Rename the columns, or pass --columns to name a headerless feed's fields.")
        self._index = [header.index(f) for f in self.features]
        if self._ts_name is not None:
            if self._ts_name not in header:
                raise DataError(f"{self.where} has no timestamp column '{self._ts_name}'; the header has "
                                f"{', '.join(header)}.")
            self._ts = header.index(self._ts_name)
        else:
            lower = [h.lower() for h in header]
            self._ts = next((lower.index(n) for n in TIME_NAMES if n in lower), -1)
        self.timestamp = header[self._ts] if self._ts >= 0 else None
        self._width = max([*self._index, self._ts]) + 1

    def __iter__(self) -> Iterator[tuple[int, str | None, list[float]]]:
        reader, index, ts, width, where = self._reader, self._index, self._ts, self._width, self.where
        rows: Iterable[list[str]] = reader
        if self._pending is not None:
            rows = _chain([self._pending], reader)
            self._pending = None
        for row in rows:
            if not row:
                continue
            line = reader.line_num
            if len(row) < width:
                raise DataError(f"{where} line {line} has {len(row)} field(s); the columns need {width}.",
                                "Every line must have every column (an empty field is a missing value).")
            try:
                values = [float(row[j]) for j in index]
            except ValueError:
                values = [self._cell(row[j], j, line) for j in index]
            yield line, (row[ts] if ts >= 0 else None), values

    def _cell(self, cell: str, j: int, line: int) -> float:
        text = cell.strip()
        if text.lower() in MISSING:
            return float("nan")
        try:
            return float(text)
        except ValueError:
            name = self.features[self._index.index(j)]
            raise DataError(f"{self.where} line {line}: column '{name}' holds {text[:40]!r}, not a number.",
                            "Fix or drop the line; a missing value may be empty or NaN (see --on-nan).") from None


def _chain(first: list[list[str]], rest: Iterable[list[str]]) -> Iterator[list[str]]:
    yield from first
    yield from rest


def parse_time(text: str) -> float | None:
    """Seconds from a timestamp: a number (epoch seconds) or an ISO-like date and time ('/' allowed)."""
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    t = t.replace("/", "-")
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    try:
        stamp = dt.datetime.fromisoformat(t)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)  # noqa: UP017 - datetime.UTC is 3.11+
    return stamp.timestamp()


class GapCheck:
    """Gaps and non-advancing timestamps (see the module docstring); ``check`` returns True to reset."""

    def __init__(self, policy: str, where: str) -> None:
        if policy not in ON_GAP:
            raise UsageError(f"Unknown gap policy '{policy}' (--on-gap).", f"Accepted: {', '.join(ON_GAP)}.")
        self.policy, self.where = policy, where
        self.enabled = policy != "ignore"
        self._prev: float | None = None
        self._step: float | None = None
        self.note: str | None = None

    def check(self, line: int, text: str | None) -> bool:
        """Whether the reading at ``line`` starts over (``reset``); raises under ``refuse``."""
        if not self.enabled or text is None:
            return False
        t = parse_time(text)
        if t is None:
            self.enabled = False
            self.note = f"line {line}: timestamp {text[:40]!r} is not a number or an ISO date; gaps are not checked"
            return False
        prev, step = self._prev, self._step
        self._prev = t
        if prev is None:
            return False
        interval = t - prev
        why = None
        if interval <= 0:
            why = f"its timestamp {text!r} does not come after the previous reading's"
        elif step is None:
            self._step = interval
        elif interval > 1.5 * step:
            why = f"{interval:g} s passed since the previous reading, more than 1.5 x the {step:g} s interval"
        if why is None:
            return False
        if self.policy == "refuse":
            raise DataError(f"{self.where} line {line}: a gap in the readings: {why}.",
                            "A window must be contiguous: pass --on-gap reset to start the window over after a gap, "
                            "or --on-gap ignore.")
        return True


def open_lines(source: str, where: str) -> IO[str]:
    """The readings: standard input for ``-``, else the file (UTF-8)."""
    import sys

    if source == "-":
        return sys.stdin
    p = Path(source)
    if p.is_dir() or not p.is_file():
        raise DataError(f"{where} does not exist or is not a file.", "Pass a CSV file of readings, or - for stdin.")
    return p.open(newline="", encoding="utf-8", errors="strict")


def columns_for(features: list[str], horizon: int, target: str | None, timestamp: str | None) -> list[str]:
    """The forecasts' header: line, the timestamp column, one column per forecast step."""
    base = target or "y"
    steps = [f"{base}_t+{h}" for h in range(1, horizon + 1)] if target else [f"{base}_{h}" for h in range(horizon)]
    return ["line", *([timestamp] if timestamp else []), *steps]


def format_row(line: int, ts: str | None, forecast: list[float]) -> str:
    """One forecast line (values to float32's full precision)."""
    head = f"{line},{_quote(ts)}," if ts is not None else f"{line},"
    return head + ",".join([format(v, ".9g") for v in forecast]) + "\n"


def _quote(text: str) -> str:
    """A CSV field: quoted (quotes doubled) when it holds a comma, a quote or a line break."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:  # four C-level scans: cheaper than any()
        return '"' + text.replace('"', '""') + '"'
    return text


@contextlib.contextmanager
def output(path: str | None, force: bool) -> Iterator[IO[str]]:
    """Standard output, or a file written through a temporary name and renamed into place at the end (nothing is
    left behind on failure; an existing file is replaced only with ``force``)."""
    import sys

    if path is None or path == "-":
        yield sys.stdout
        return
    target = Path(path)
    if target.exists() and not target.is_dir() and not target.is_file():  # /dev/null, a named pipe: no rename
        with target.open("w", encoding="utf-8", newline="") as f:
            yield f
        return
    if target.is_symlink() or target.is_dir():
        raise UsageError(f"Output '{path}' is a directory or a symbolic link.", "Pass a new file name.")
    if target.exists() and not force:
        raise OutputExistsError(f"Output '{path}' already exists.", "Pass --force to replace it.")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"Cannot write '{path}': the directory '{parent}' does not exist.")
    from edge_lstm.outputs import atomic_file  # the standard library only, like this module

    with atomic_file(target, "w", encoding="utf-8", newline="") as f:
        yield f


def describe_counts(info: dict[str, Any], forecasts: int) -> str:
    """The summary line predict prints on stderr."""
    extra = "".join(f", {info[k]} {k}" for k in ("skipped", "resets") if info.get(k))
    mode = "streaming" if info["streaming"] else "window"
    return (f"{forecasts:,} forecast(s) from {info['readings']:,} reading(s){extra}; {info['artifact']} ({mode}, "
            f"{info['precision']}) on {info['runtime_version']}")
