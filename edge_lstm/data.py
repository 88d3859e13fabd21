"""Real data for validation, calibration and task metrics: CSV/NPY -> model windows.

A CSV or 2-D NPY is a time series ``(time, features)``: it is normalised with the
checkpoint's statistics and cut into sliding windows of the model's length, each
labelled with the next value of the target column. A 3-D NPY is taken as
ready-made windows ``(N, time, features)`` without labels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import DataError, InputFileError


@dataclass(frozen=True)
class Windows:
    """Model-ready windows ``(N, T, F)`` (normalised), with next-step targets when known."""

    x: np.ndarray
    y: np.ndarray | None  # (N,) normalised next value of the target column
    source: str

    def __len__(self) -> int:
        return int(self.x.shape[0])


def read_series(path: str | Path, columns: list[str] | None = None) -> np.ndarray:
    """Read a CSV (numeric columns, optional header) or NPY into a float32 array.

    With ``columns`` (the feature names a trained checkpoint records) and a CSV
    header that names them, those columns are taken by name, in that order, so
    the training CSV itself can be passed; otherwise non-numeric columns such
    as timestamps are dropped and the rest taken in file order. NaN or Inf is a
    :class:`DataError` that names the first bad row.
    """
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"Data path '{path}' is a directory, not a file.", "Pass a CSV or NPY file.")
    if not path.is_file():
        raise InputFileError(f"Data file '{path}' does not exist.", "Pass a CSV or NPY file with --data.")
    where: _Where | None = None
    if path.suffix.lower() == ".npy":
        arr = read_npy(path)
    else:
        arr, where = _read_csv(path, columns)
    if arr.size == 0:
        raise DataError(f"'{path}' holds no values.")
    _check_finite(arr, path, where)
    with np.errstate(over="ignore"):
        arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    _check_finite(arr, path, where, " (beyond the float32 range)")
    return arr


@dataclass(frozen=True)
class _Where:
    """Where a CSV's values came from: the file line of each data row and the file column (0-based) of each column."""

    lines: list[int]
    columns: list[int]

    def cell(self, row: int, col: int) -> str:
        """``line 501 (data row 500), column 2``: the file's line and its 1-based data row and column."""
        return f"line {self.lines[row]} (data row {row + 1}), column {self.columns[col] + 1}"


MAX_VALUES = 1 << 28  # elements in one data file (1 GiB of float32)
MAX_CSV_BYTES = 1 << 30


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, checked before any allocation: no pickles, a plain numeric dtype, 1 to 3 dimensions,
    a declared size that is sane and matches the file."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read_header(f)  # the header only: nothing is allocated yet
            offset = f.tell()
        size = path.stat().st_size
    except Exception as e:  # numpy parses the header text itself: ValueError, SyntaxError, TokenError, ...
        raise DataError(f"'{path}' is not a readable .npy array: {type(e).__name__}: {e}.") from e
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiu":
        raise DataError(f"'{path}' holds {dtype} values; data must be plain numbers (float or integer).",
                        "Save the array with a float32/float64 or integer dtype, e.g. arr.astype('float32').")
    if not 1 <= len(shape) <= 3:
        raise DataError(f"'{path}' has {len(shape)} dimension(s); expected a series (T,) or (T, F), "
                        "or windows (N, T, F).")
    count = 1
    for d in shape:
        count *= int(d)
    if count > MAX_VALUES or count * dtype.itemsize != size - offset:
        raise DataError(f"'{path}' declares shape {tuple(shape)} ({count:,} values of {dtype.itemsize} bytes), "
                        f"but the file holds {size - offset:,} bytes of data"
                        + (f" (at most {MAX_VALUES:,} values are accepted)" if count > MAX_VALUES else "") + ".",
                        "The file is truncated or its header was altered; save it again.")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"'{path}' is not a readable .npy array: {e}.") from e


def _read_csv(path: Path, columns: list[str] | None = None) -> tuple[np.ndarray, _Where]:
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise DataError(f"'{path}' is larger than {MAX_CSV_BYTES:,} bytes; pass a .npy file for data this big.")
        with path.open(newline="", encoding="utf-8") as f:
            rows, starts = [], []
            reader, last = csv.reader(f), 0
            for r in reader:
                if r:
                    rows.append(r)
                    starts.append(last + 1)  # the line the row starts on (a quoted cell can span lines)
                last = reader.line_num
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read '{path}' as CSV: {e}.") from e
    except csv.Error as e:  # a field over the csv module's limit, a NUL byte, ...
        raise DataError(f"'{path}' is not a readable CSV file: {e}.",
                        "Each row holds numbers separated by commas; check the file is the series you meant.") from e
    if not rows:
        raise DataError(f"'{path}' is empty.")
    if len(rows) == 1 and not all(is_number(c) for c in rows[0]):
        raise DataError(f"'{path}' has a header but no rows.")
    candidates = [j for j in range(len(rows[-1])) if _column_numeric(rows[1:] or rows, j)]
    header = any(j < len(rows[0]) and not is_number(rows[0][j]) for j in candidates)
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"'{path}' has a header but no rows.")
    lines = starts[1:] if header else starts
    # over the body (a first row that is data counts too): a column of numbers with a stray word is numeric, and
    # the word is then reported with its line, not dropped with the column
    numeric = candidates if header else [j for j in range(len(rows[-1])) if _column_numeric(body, j)]
    names = [c.strip() for c in rows[0]] if header else []
    if columns and header and len(numeric) != len(columns):  # more (or fewer) columns: pick the model's by name
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"'{path}' has no column {', '.join(repr(c) for c in missing)} of the model's features "
                            f"({', '.join(columns)}).", f"Columns in the file: {', '.join(names)}.")
        numeric = [names.index(c) for c in columns]
    if not numeric:
        raise DataError(f"'{path}' has no numeric column.", "Each feature must be a column of numbers.")
    out = np.empty((len(body), len(numeric)), dtype=np.float32)
    where = _Where(lines, numeric)
    for i, row in enumerate(body):
        for k, j in enumerate(numeric):
            cell = row[j].strip() if j < len(row) else ""
            out[i, k] = _cell(cell, path, where, i, k)
    return out, where


def _cell(cell: str, path: Path, where: _Where, row: int, col: int) -> float:
    if not cell or cell.lower() in _MISSING:
        return float("nan")  # missing: reported by the NaN check with its line
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"'{path}' {where.cell(row, col)}: '{cell}' is not a number.",
                        "Fix or drop that value: every feature column must hold numbers (an empty cell, NaN or NA "
                        "counts as missing).") from None


_MISSING = ("nan", "na", "null", "none", "")


def is_number(text: str) -> bool:
    """True when ``float(text)`` parses (the CSV readers' test for a numeric cell or a header)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _column_numeric(rows: list[list[str]], j: int) -> bool:
    """A column of numbers: at least half of its first 50 present cells are numbers (a date or label column has
    none; a stray word in a column of numbers is a bad cell, reported by :func:`_cell`)."""
    sample = [r[j].strip() for r in rows[:50] if j < len(r)]
    present = [c for c in sample if c.lower() not in _MISSING]
    return bool(sample) and 2 * sum(is_number(c) for c in present) >= len(present)


def _check_finite(arr: np.ndarray, path: Path, where: _Where | None, why: str = "") -> None:
    if arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        at = (where.cell(first[0], first[1] if len(first) > 1 else 0) if where is not None
              else f"array index {list(first)} (0-based)")
        raise DataError(
            f"'{path}' has {int(bad.sum())} NaN/Inf value(s){why}; the first is at {at}.",
            "Fill or drop missing values before validating or calibrating.",
        )


def windows_from(
    path: str | Path,
    window: int,
    n_features: int,
    normalization: dict[str, Any] | None = None,
    stride: int = 1,
    limit: int | None = None,
) -> Windows:
    """Cut a series file into normalised windows of ``window`` steps (evenly spread if ``limit``)."""
    arr = read_series(path, (normalization or {}).get("columns"))
    if arr.ndim == 3:
        if arr.shape[1:] != (window, n_features):
            raise DataError(
                f"'{path}' holds windows of shape {arr.shape[1:]}, the model takes ({window}, {n_features}).",
            )
        return Windows(_take(arr, limit), None, str(path))
    if arr.ndim != 2:
        raise DataError(f"'{path}' has {arr.ndim} dimensions; expected a (time, features) series or (N, T, F) windows.")
    if arr.shape[1] != n_features:
        raise DataError(
            f"'{path}' has {arr.shape[1]} numeric column(s), the model takes {n_features} feature(s).",
            "Pass a file whose numeric columns are exactly the model's features, in training order.",
        )
    series = normalize(arr, normalization)
    n = (len(series) - window - 1) // stride + 1
    if n < 1:
        raise DataError(f"'{path}' has {len(series)} rows, fewer than one window of {window} steps plus a target.")
    starts = np.arange(n) * stride
    if limit is not None and n > limit:
        starts = starts[np.linspace(0, n - 1, limit).astype(int)]
    x = np.stack([series[s : s + window] for s in starts]).astype(np.float32)
    target = int((normalization or {}).get("target_index", [0])[0]) if normalization else 0
    y = np.array([series[s + window, target] for s in starts], dtype=np.float32)
    if is_delta(normalization):  # the model forecasts the change from the window's last value
        y = y - np.array([series[s + window - 1, target] for s in starts], dtype=np.float32)
    return Windows(x, y, str(path))


def is_delta(normalization: dict[str, Any] | None) -> bool:
    """True when the checkpoint's model forecasts the change over the next step, not the level."""
    return bool(normalization) and normalization.get("target") == "delta"  # type: ignore[union-attr]


def _take(arr: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None or len(arr) <= limit:
        return arr.astype(np.float32)
    return arr[np.linspace(0, len(arr) - 1, limit).astype(int)].astype(np.float32)


def normalize(arr: np.ndarray, normalization: dict[str, Any] | None) -> np.ndarray:
    """Apply the checkpoint's ``(x - mean) / std`` per feature (identity without statistics)."""
    if not normalization:
        return arr.astype(np.float32)
    mean = np.asarray(normalization["mean"], dtype=np.float32)
    std = np.asarray(normalization["std"], dtype=np.float32)
    return ((arr - mean) / std).astype(np.float32)


def denormalize_target(y: np.ndarray, normalization: dict[str, Any] | None) -> np.ndarray:
    """Map normalised target values back to the data's units (a change has no offset)."""
    if not normalization:
        return y
    t = int(normalization.get("target_index", [0])[0])
    offset = 0.0 if is_delta(normalization) else float(normalization["mean"][t])
    return y * float(normalization["std"][t]) + offset
