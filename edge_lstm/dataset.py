"""Training data: a CSV with named columns -> chronological splits, normalisation and windows.

Everything here is plain numpy so it is cheap to test. The rules that keep a
time-series evaluation honest live here, in one place:

- the split is chronological (train, then validation, then test) and a window,
  with its target rows, never straddles two parts;
- normalisation statistics come from the training rows only;
- baselines (persistence, seasonal naive) use only rows at or before the
  forecast time.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.data import is_number
from edge_lstm.errors import DataError, InputFileError, UsageError

_MISSING = ("", "nan", "na", "null", "none")


@dataclass(frozen=True)
class Table:
    """A CSV read as text columns by header name, with its row count and content hash."""

    path: Path
    columns: dict[str, list[str]]
    rows: int
    sha256: str
    lines: tuple[int, ...] = ()  #: the file line each data row starts on

    def line(self, i: int) -> str:
        """``line 501 (data row 500)`` for data row ``i`` (0-based)."""
        return f"line {self.lines[i] if i < len(self.lines) else i + 2} (data row {i + 1})"

    def numeric(self, name: str) -> np.ndarray:
        """Column ``name`` as float64; a missing, non-numeric or non-finite cell is a :class:`DataError`."""
        values = np.empty(self.rows, dtype=np.float64)
        for i, cell in enumerate(self.column(name)):
            text = cell.strip()
            if text.lower() in _MISSING:
                raise DataError(f"'{self.path}' {self.line(i)}, column '{name}': the value is missing.",
                                "Fill or drop missing values before training (the series must be complete).")
            try:
                values[i] = float(text)
            except ValueError:
                raise DataError(f"'{self.path}' {self.line(i)}, column '{name}': '{text}' is not a number.",
                                "Every feature and target column must hold numbers; pass the columns to use "
                                "with --features.") from None
            if not math.isfinite(values[i]):
                raise DataError(f"'{self.path}' {self.line(i)}, column '{name}': '{text}' is not finite.")
        return values

    def column(self, name: str) -> list[str]:
        """The raw text of column ``name``; an unknown name lists the columns there are."""
        if name not in self.columns:
            raise DataError(f"'{self.path}' has no column '{name}'.",
                            f"Columns in the file: {', '.join(self.columns)}.")
        return self.columns[name]

    def numeric_columns(self) -> list[str]:
        """Names of the columns whose first 50 cells are all numbers."""
        out = []
        for name, cells in self.columns.items():
            sample = [c.strip() for c in cells[:50]]
            if sample and all(is_number(c) for c in sample):
                out.append(name)
        return out



def read_table(path: str | Path) -> Table:
    """Read a CSV with a header row; every row must have the header's number of cells."""
    path = Path(path)
    if path.is_dir() or not path.is_file():
        raise InputFileError(f"Data file '{path}' does not exist or is not a file.", "Pass a CSV file with a header.")
    raw = path.read_bytes()
    try:
        rows, starts = [], []
        reader, last = csv.reader(raw.decode("utf-8-sig").splitlines()), 0
        for r in reader:
            if r:
                rows.append(r)
                starts.append(last + 1)
            last = reader.line_num
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"Cannot read '{path}' as CSV: {e}.") from e
    if not rows:
        raise DataError(f"'{path}' is empty.")
    header = [h.strip() for h in rows[0]]
    if all(is_number(h) for h in header):
        raise DataError(f"'{path}' has no header row (its first row is all numbers).",
                        "Training picks columns by name: add a header line such as 'date,temp'.")
    if len(set(header)) != len(header):
        raise DataError(f"'{path}' repeats a column name in its header: {', '.join(header)}.")
    body = rows[1:]
    if not body:
        raise DataError(f"'{path}' has a header but no rows.")
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise DataError(f"'{path}' line {starts[i + 1]} (data row {i + 1}) has {len(r)} cells; the header has "
                            f"{len(header)}.")
    columns = {h: [r[j] for r in body] for j, h in enumerate(header)}
    return Table(path, columns, len(body), hashlib.sha256(raw).hexdigest(), tuple(starts[1:]))


@dataclass(frozen=True)
class Split:
    """Row ranges ``[start, stop)`` of the chronological train, validation and test parts."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    @classmethod
    def of(cls, rows: int, train: float, val: float) -> Split:
        """Fractions of ``rows``; the test part is the rest."""
        if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
            raise UsageError(f"--split {train},{val} is not valid.",
                             "Give the train and validation fractions, both > 0 and summing to < 1, e.g. 0.7,0.15.")
        a, b = round(rows * train), round(rows * (train + val))
        return cls((0, a), (a, b), (b, rows))

    def parts(self) -> dict[str, tuple[int, int]]:
        """The three parts by name, in time order."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-ready row ranges."""
        return {k: list(v) for k, v in self.parts().items()}


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut: length, stride for training, forecast horizon, label rule."""

    window: int
    horizon: int = 1
    stride: int = 1
    label_from: str = "last"  # classification: "last" row of the window or the "majority" over it

    def span(self, classify: bool) -> int:
        """Rows one sample covers: the window, plus the target rows of a forecast."""
        return self.window + (0 if classify else self.horizon)


def window_starts(part: tuple[int, int], span: int, stride: int) -> np.ndarray:
    """Start rows of every window (with its target rows) that lies wholly inside ``part``."""
    lo, hi = part
    if hi - lo < span:
        return np.zeros(0, dtype=np.int64)
    return np.arange(lo, hi - span + 1, stride, dtype=np.int64)


@dataclass
class Prepared:
    """A dataset ready for training: normalised inputs, targets per sample, windows per part."""

    task: str  # "forecast" | "classify"
    features: list[str]
    x: np.ndarray  # (rows, features) normalised float32
    raw_target: np.ndarray | None  # (rows,) in the data's units (forecast)
    target_index: int | None
    labels: np.ndarray | None  # (rows,) class indices (classify)
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    split: Split
    spec: WindowSpec
    target_transform: str  # "level" | "delta"
    starts: dict[str, np.ndarray] = field(default_factory=dict)
    scale: float = 1.0  # the model trains on targets / scale (see :meth:`training_targets`)

    def training_targets(self, starts: np.ndarray) -> np.ndarray:
        """Targets in the units the model trains in: a change divided by its own spread on the training rows.

        A change over one step is a small fraction of the level's spread, so in the
        checkpoint's units (the level's standard deviation) it would be tiny; Adam's
        steps are the same size whatever the scale, so tiny targets learn coarsely.
        Training on unit-spread targets and folding ``scale`` into the linear head
        afterwards (:func:`edge_lstm.train.fold_scale`) gives the same model in the
        checkpoint's units.
        """
        y = self.targets(starts)
        return y if self.task == "classify" else (y / self.scale).astype(np.float32)

    def normalization(self) -> dict[str, Any]:
        """The checkpoint's ``normalization`` entry (what ``edge-lstm export`` reads)."""
        d: dict[str, Any] = {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                             "columns": list(self.features)}
        if self.task == "forecast":
            d["target_index"] = [int(self.target_index or 0)]
            d["target"] = self.target_transform
        return d

    def targets(self, starts: np.ndarray) -> np.ndarray:
        """Forecast: ``(N, horizon)`` normalised targets; classify: ``(N,)`` class indices."""
        if self.task == "classify":
            return window_labels(self.labels, starts, self.spec)  # type: ignore[arg-type]
        assert self.raw_target is not None
        w, h = self.spec.window, self.spec.horizon
        rows = starts[:, None] + w - 1 + np.arange(1, h + 1)[None, :]
        t = int(self.target_index or 0)
        y = self.raw_target[rows]
        if self.target_transform == "delta":
            y = y - self.raw_target[starts + w - 1][:, None]
            return (y / self.std[t]).astype(np.float32)
        return ((y - self.mean[t]) / self.std[t]).astype(np.float32)

    def to_units(self, pred: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Normalised forecasts ``(N, horizon)`` back to the data's units (a change is added to the last value)."""
        assert self.raw_target is not None
        t = int(self.target_index or 0)
        if self.target_transform == "delta":
            return pred * self.std[t] + self.raw_target[starts + self.spec.window - 1][:, None]
        return pred * self.std[t] + self.mean[t]

    def truth(self, starts: np.ndarray) -> np.ndarray:
        """The true future target values ``(N, horizon)`` in the data's units."""
        assert self.raw_target is not None
        rows = starts[:, None] + self.spec.window - 1 + np.arange(1, self.spec.horizon + 1)[None, :]
        return self.raw_target[rows]


def window_labels(labels: np.ndarray, starts: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """The class of each window: its last row's, or the most frequent over its rows (ties: the lowest index)."""
    if spec.label_from == "last":
        return labels[starts + spec.window - 1].astype(np.int64)
    n_classes = int(labels.max()) + 1
    out = np.empty(len(starts), dtype=np.int64)
    for i, s in enumerate(starts):
        out[i] = int(np.bincount(labels[s : s + spec.window], minlength=n_classes).argmax())
    return out


def encode_labels(cells: list[str], path: Path, column: str,
                  at: Callable[[int], str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class indices for a label column; classes sorted numerically when all are numbers, else as text."""
    values = [c.strip() for c in cells]
    for i, v in enumerate(values):
        if v.lower() in _MISSING:
            raise DataError(f"'{path}' {at(i) if at else f'line {i + 2}'}, column '{column}': the label is missing.",
                            "Every row needs a label; drop unlabelled rows.")
    distinct = set(values)
    classes = sorted(distinct, key=float) if all(is_number(v) for v in distinct) else sorted(distinct)
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), classes


def infer_season(series: np.ndarray, max_lag: int) -> int | None:
    """The seasonal period of a series: the lag with the highest autocorrelation peak of its first difference.

    The first difference removes slow trends (a year's warming and cooling), which
    would otherwise make every short lag look seasonal. ``None`` when no lag has
    an autocorrelation peak above 0.1.
    """
    d = np.diff(np.asarray(series, dtype=np.float64))
    d = d - d.mean()
    max_lag = min(max_lag, len(d) // 3)
    denom = float(np.dot(d, d))
    if max_lag < 3 or denom == 0.0:
        return None
    acf = np.array([float(np.dot(d[:-k], d[k:])) / denom for k in range(1, max_lag + 2)])
    best, best_val = None, 0.1
    for lag in range(2, max_lag + 1):  # acf[k - 1] is the autocorrelation at lag k
        v = acf[lag - 1]
        if v > acf[lag - 2] and v >= acf[lag] and v > best_val:
            best, best_val = lag, v
    return best


def seasonal_naive(raw: np.ndarray, starts: np.ndarray, window: int, horizon: int, season: int) -> np.ndarray:
    """Each forecast is the value one season before its target row (``(N, horizon)``)."""
    steps = np.arange(1, horizon + 1)
    back = season * ((steps - 1) // season + 1)  # the most recent observed row of the same phase
    rows = starts[:, None] + window - 1 + steps[None, :] - back[None, :]
    return raw[np.maximum(rows, 0)]


def persistence(raw: np.ndarray, starts: np.ndarray, window: int, horizon: int) -> np.ndarray:
    """Each forecast is the window's last value (``(N, horizon)``)."""
    return np.repeat(raw[starts + window - 1][:, None], horizon, axis=1)


@dataclass(frozen=True)
class DataOptions:
    """Which columns to use and how to cut them (the data half of ``edge-lstm train``)."""

    task: str = "forecast"  # "forecast" | "classify"
    target_column: str | None = None  # forecast
    label_column: str | None = None  # classify
    features: tuple[str, ...] = ()  # forecast: the target is always an input; classify: default every numeric column
    window: int = 96
    horizon: int = 1
    stride: int = 1
    target_transform: str = "level"  # "level" | "delta"
    label_from: str = "last"
    split: tuple[float, float] = (0.7, 0.15)

    def check(self) -> None:
        """Refuse options that contradict each other, before any data is read."""
        if self.task not in ("forecast", "classify"):
            raise UsageError(f"Unknown --task '{self.task}'.", "Accepted: forecast, classify.")
        if self.task == "forecast" and not self.target_column:
            raise UsageError("A forecaster needs --target-column: the column to forecast.")
        if self.task == "classify" and not self.label_column:
            raise UsageError("A classifier needs --label-column: the column holding each row's class.")
        if self.target_transform not in ("level", "delta"):
            raise UsageError(f"Unknown --target-transform '{self.target_transform}'.", "Accepted: level, delta.")
        if self.label_from not in ("last", "majority"):
            raise UsageError(f"Unknown --label-from '{self.label_from}'.", "Accepted: last, majority.")
        for name in ("window", "horizon", "stride"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.task == "classify" and self.label_column in self.features:
            raise UsageError(f"--features includes the label column '{self.label_column}': that leaks the answer.",
                             "Leave the label column out of --features.")


def _feature_names(table: Table, opts: DataOptions) -> tuple[list[str], int | None]:
    if opts.task == "forecast":
        target = str(opts.target_column)
        table.column(target)  # names the available columns when it is missing
        feats = list(opts.features) or [target]
        if target not in feats:
            feats = [target, *feats]  # the target's own history is always an input
        return feats, feats.index(target)
    label = str(opts.label_column)
    table.column(label)
    feats = list(opts.features) or [c for c in table.numeric_columns() if c != label]
    if not feats:
        raise DataError(f"'{table.path}' has no numeric column besides the label '{label}' to use as a feature.",
                        "Pass the input columns with --features.")
    return feats, None


def _check_rows(table: Table, split: Split, opts: DataOptions) -> dict[str, np.ndarray]:
    spec = WindowSpec(opts.window, opts.horizon, opts.stride, opts.label_from)
    span = spec.span(opts.task == "classify")
    starts = {}
    for name, part in split.parts().items():
        starts[name] = window_starts(part, span, opts.stride if name == "train" else 1)
        if len(starts[name]) == 0:
            smallest = min(opts.split[0], opts.split[1], 1 - sum(opts.split))
            need = math.ceil(span / smallest)
            what = f"{opts.window} steps" + ("" if opts.task == "classify" else f" and {opts.horizon} target step(s)")
            raise DataError(
                f"'{table.path}' has {table.rows} rows: its {name} part (rows {part[0] + 2}-{part[1] + 1}, "
                f"{part[1] - part[0]} rows) is too short for one window of {what}.",
                f"Use a shorter --window, or at least {need} rows with this --split.",
            )
    return starts


def prepare(table: Table, opts: DataOptions) -> Prepared:
    """Columns -> normalised inputs (statistics from the training rows only), targets and windows per part."""
    opts.check()
    feats, target_index = _feature_names(table, opts)
    raw = np.stack([table.numeric(f) for f in feats], axis=1)
    split = Split.of(table.rows, *opts.split)
    starts = _check_rows(table, split, opts)
    train = raw[split.train[0] : split.train[1]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    for j, f in enumerate(feats):
        if std[j] == 0.0:
            role = "target" if j == target_index else "feature"
            raise DataError(f"The {role} column '{f}' is constant over the training rows (every value is "
                            f"{train[0, j]:g}): there is nothing to learn from it, and normalising would divide "
                            "by zero.", "Drop it from --features, or pass a column that varies.")
    labels: np.ndarray | None = None
    classes: list[str] = []
    if opts.task == "classify":
        labels, classes = encode_labels(table.column(str(opts.label_column)), table.path, str(opts.label_column),
                                         table.line)
        spec = WindowSpec(opts.window, opts.horizon, opts.stride, opts.label_from)
        seen = np.unique(window_labels(labels, starts["train"], spec))
        if len(classes) < 2 or len(seen) < 2:
            only = classes[int(seen[0])] if len(seen) else classes[0]
            raise DataError(f"The label column '{opts.label_column}' has only one class ('{only}') in the "
                            f"training windows of '{table.path}': a classifier needs at least two.",
                            "Check --label-column, or use data with more than one class in its first part.")
    x = ((raw - mean) / std).astype(np.float32)
    scale = 1.0
    if opts.task == "forecast" and opts.target_transform == "delta":
        t = raw[split.train[0] : split.train[1], target_index]
        scale = float(np.std(np.diff(t)) / std[target_index]) or 1.0
    return Prepared(
        task=opts.task, features=feats, x=x,
        raw_target=raw[:, target_index] if target_index is not None else None,
        target_index=target_index, labels=labels, classes=classes, mean=mean, std=std, split=split,
        spec=WindowSpec(opts.window, opts.horizon, opts.stride, opts.label_from),
        target_transform=opts.target_transform, starts=starts, scale=scale,
    )
