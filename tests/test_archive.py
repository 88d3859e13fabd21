"""The safe zip reader that every model file (and later every bundle) goes through first."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from edge_lstm.archive import ZipLimits, check_member_name, open_zip
from edge_lstm.errors import InputFileError


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w", method) as z:
            for name, data in entries:
                z.writestr(name, data)
    return buf.getvalue()


def test_a_plain_archive_opens_and_reads() -> None:
    with open_zip(_zip([("a/x", b"1"), ("a/y", b"22")])) as z:
        assert z.names == ["a/x", "a/y"] and z.read("a/y") == b"22" and "a/x" in z


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(InputFileError, match="twice"):
        open_zip(_zip([("a/x", b"1"), ("a/x", b"\0")]))


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "a\\b", "C:/x", "a//b", "a/./b", "nul\x01"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InputFileError, match="not a safe relative path"):
        check_member_name(name, "test")


def test_declared_sizes_are_judged_before_inflating() -> None:
    bomb = _zip([("a/x", b"\0" * (4 << 20))], zipfile.ZIP_DEFLATED)  # ~1000:1
    with pytest.raises(InputFileError, match="zip bomb"):
        open_zip(bomb)
    with pytest.raises(InputFileError, match="more than"):
        open_zip(_zip([("a/x", b"1" * 100)]), limits=ZipLimits(max_total_bytes=10))


def test_a_crc_mismatch_is_refused() -> None:
    data = bytearray(_zip([("a/x", b"hello world")]))
    data[data.index(b"hello")] ^= 1
    with pytest.raises(InputFileError, match="checksum"):
        open_zip(bytes(data))


def test_overlapping_members_are_refused() -> None:
    """Two directory entries pointing at the same local header (the 'overlapping files' zip bomb)."""
    data = bytearray(_zip([("a/x", b"AAAA"), ("a/y", b"BBBB")]))
    cd = data.index(b"PK\x01\x02")
    second = data.index(b"PK\x01\x02", cd + 4)
    struct.pack_into("<L", data, second + 42, 0)  # a/y's header offset -> a/x's header
    with pytest.raises(InputFileError):
        open_zip(bytes(data))


def test_truncated_and_non_zip_files(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    p.write_bytes(_zip([("a/x", b"1" * 1000)])[:500])
    with pytest.raises(InputFileError, match="truncated or corrupted"):
        open_zip(p)
