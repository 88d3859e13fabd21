"""Real data files into model windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_lstm.data import read_series, windows_from
from edge_lstm.errors import DataError, InputFileError


def test_real_csv_with_timestamps(seattle_csv: Path) -> None:
    arr = read_series(seattle_csv)
    assert arr.shape == (8759, 1)  # 2010 hourly; the date column is dropped, the header skipped
    assert 20 < float(arr.mean()) < 70  # °F


def test_windows_are_normalised_and_labelled(temps_csv: Path) -> None:
    raw = read_series(temps_csv)
    norm = {"mean": [50.0], "std": [10.0]}
    w = windows_from(temps_csv, 24, 1, norm)
    assert w.x.shape == (len(raw) - 24, 24, 1)
    np.testing.assert_allclose(w.x[0, :, 0], (raw[:24, 0] - 50) / 10, rtol=1e-6)
    assert w.y is not None and w.y[0] == pytest.approx((raw[24, 0] - 50) / 10)
    assert len(windows_from(temps_csv, 24, 1, norm, limit=10)) == 10


def test_nan_in_data(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("temp\n1.0\n2.0\nnan\n4.0\n")
    with pytest.raises(DataError, match=r"NaN/Inf .* at line 4 \(data row 3\), column 1\."):
        read_series(p)


def test_wrong_feature_count(temps_csv: Path) -> None:
    with pytest.raises(DataError, match=r"1 numeric column.*3 feature"):
        windows_from(temps_csv, 24, 3)


def test_too_short(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("1\n2\n3\n")
    with pytest.raises(DataError, match="fewer than one window"):
        windows_from(p, 24, 1)


def test_npy_windows(tmp_path: Path) -> None:
    p = tmp_path / "w.npy"
    np.save(p, np.zeros((5, 24, 2), np.float32))
    assert windows_from(p, 24, 2).x.shape == (5, 24, 2)
    with pytest.raises(DataError, match="windows of shape"):
        windows_from(p, 12, 2)


def test_missing_file() -> None:
    with pytest.raises(InputFileError):
        read_series("/nope.csv")


def test_late_non_numeric_cell_is_a_data_error(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("temp\n" + "1.0\n" * 100 + "oops\n")
    with pytest.raises(DataError, match=r"line 102 \(data row 101\), column 1: 'oops' is not a number"):
        read_series(p)
    p.write_text("temp\n" + "1.0\n" * 100 + "NA\n")
    with pytest.raises(DataError, match="NaN"):  # a missing value is reported as missing, with its row
        read_series(p)


def test_header_only_and_directory(tmp_path: Path) -> None:
    p = tmp_path / "h.csv"
    p.write_text("temp\n")
    with pytest.raises(DataError, match="header but no rows"):
        read_series(p)
    with pytest.raises(InputFileError, match="is a directory"):
        read_series(tmp_path)


def test_delta_target_windows(temps_csv: Path) -> None:
    from edge_lstm.data import denormalize_target

    raw = read_series(temps_csv)
    norm = {"mean": [50.0], "std": [10.0], "target": "delta"}
    w = windows_from(temps_csv, 24, 1, norm)
    assert w.y is not None and w.y[0] == pytest.approx((raw[24, 0] - raw[23, 0]) / 10, abs=1e-6)
    assert denormalize_target(w.y[:1], norm)[0] == pytest.approx(raw[24, 0] - raw[23, 0], abs=1e-4)  # no offset


def test_bad_cell_is_named_by_its_file_line(tmp_path: Path) -> None:
    """`n/a` on file line 501 (header on line 1): line 501, data row 500, column 2, all 1-based; blank lines and a
    quoted cell spanning two lines are counted as the file's lines."""
    p = tmp_path / "d.csv"
    body = [f"{i},{i % 7}.5" for i in range(499)]
    p.write_text("t,temp\n" + "\n".join(body) + "\n499,n/a\n500,1.0\n")
    with pytest.raises(DataError, match=r"line 501 \(data row 500\), column 2: 'n/a' is not a number"):
        read_series(p)
    p.write_text('note,temp\n"two\nlines",1.0\n\nx,2.0\ny,nan\n')  # the NaN is on line 6, in data row 3
    with pytest.raises(DataError, match=r"the first is at line 6 \(data row 3\), column 2\."):
        read_series(p)
    npy = tmp_path / "d.npy"
    np.save(npy, np.array([[1.0, 2.0], [3.0, np.nan]], np.float32))
    with pytest.raises(DataError, match=r"at array index \[1, 1\] \(0-based\)"):
        read_series(npy)


@pytest.mark.parametrize("text", ["1,2,3\n4,five,6\n", "a,b,c\n1,2,3\n4,five,6\n"])
def test_short_file_names_its_bad_cell(tmp_path: Path, text: str) -> None:
    """A word in a short file's column of numbers is the bad cell, as in a long file, not a dropped column."""
    p = tmp_path / "d.csv"
    p.write_text(text)
    line = text.count("\n")
    with pytest.raises(DataError, match=rf"line {line} \(data row 2\), column 2: 'five' is not a number") as e:
        windows_from(p, 1, 3)
    assert "numeric column" not in str(e.value)
