"""Open a zip archive from a stranger safely, before anything else reads it.

PyTorch model files (checkpoints, TorchScript, ``.pt2``) and edge-lstm bundles
are zip archives. :func:`open_zip` reads the central directory with Python's
own ``zipfile`` and refuses, before any member is used:

- duplicate member names (a zip can then show one content to a checker and
  another to the loader; PyTorch's reader and Python's pick different copies);
- names that could become paths outside a directory: absolute, ``..``,
  backslashes, drive letters, NUL or control characters;
- encrypted members, compression methods other than stored and deflate;
- zip bombs, judged on the declared sizes before any byte is inflated: total
  size, member count, compression ratio;
- members whose data overlap (the same bytes claimed by two names) or that
  run past the central directory;
- a CRC mismatch on any member (every member is read once, streaming, and
  never past its declared size).

The result, :class:`SafeZip`, lists the verified members and reads them.
It is written for reuse: bundles (``bundle verify``, ``predict``) open their
archives through the same function.
"""

from __future__ import annotations

import io
import itertools
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edge_lstm.errors import InputFileError


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on what an archive may declare; beyond them it is refused unread."""

    max_members: int = 20_000
    max_total_bytes: int = 4 << 30  # sum of the declared uncompressed sizes
    max_member_bytes: int = 2 << 30
    max_ratio: float = 200.0  # uncompressed / compressed, for members above ratio_floor bytes
    ratio_floor: int = 1 << 20
    max_name_length: int = 512


DEFAULT_LIMITS = ZipLimits()
_ALLOWED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\\]")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... name length, extra length


@dataclass(frozen=True)
class Member:
    """One verified member: its name, declared sizes and checksum."""

    name: str
    size: int
    compressed_size: int
    crc: int
    method: int


class SafeZip:
    """A verified zip archive: every member name unique and safe, sizes sane, CRCs checked."""

    def __init__(self, zf: zipfile.ZipFile, members: list[Member], where: str) -> None:
        self._zf = zf
        self.members = members
        self.where = where
        self._by_name = {m.name: m for m in members}

    @property
    def names(self) -> list[str]:
        """Member names in archive order."""
        return [m.name for m in self.members]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def member(self, name: str) -> Member:
        """The member called ``name``."""
        return self._by_name[name]

    def read(self, name: str, limit: int | None = None) -> bytes:
        """The bytes of ``name`` (refused when larger than ``limit``)."""
        m = self._by_name[name]
        if limit is not None and m.size > limit:
            raise InputFileError(f"{self.where}: member '{name}' declares {m.size:,} bytes, more than the "
                                 f"{limit:,} accepted for it.")
        with self._zf.open(name) as f:
            return f.read()

    def close(self) -> None:
        """Close the underlying file."""
        self._zf.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_member_name(name: str, where: str, limits: ZipLimits = DEFAULT_LIMITS) -> None:
    """Refuse a member name that could escape a directory or hide as another name."""
    parts = name.split("/")
    if (not name or len(name) > limits.max_name_length or name.startswith("/") or _BAD_NAME.search(name)
            or re.match(r"^[A-Za-z]:", name) or any(p in ("..", ".") for p in parts)
            or any(p == "" for p in parts[:-1])):
        raise InputFileError(f"{where}: member name {name!r} is not a safe relative path "
                             "(absolute, '..', '.', backslash, drive letter, empty or control characters).",
                             "The archive was not written by PyTorch or edge-lstm, or was tampered with.")


def open_zip(source: str | Path | bytes, where: str | None = None, limits: ZipLimits = DEFAULT_LIMITS,
             verify_crc: bool = True) -> SafeZip:
    """Open and verify a zip archive (see the module docstring); :class:`InputFileError` on any problem."""
    label = where or (f"'{source}'" if not isinstance(source, bytes) else "archive")
    fileobj: BinaryIO | str = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise InputFileError(f"{label} is a truncated or corrupted zip archive ({e}).",
                             "Save the file again; check that the copy finished.") from e
    try:
        members = _check_directory(zf, label, limits)
        _check_layout(zf, label)
        if verify_crc:
            for m in members:
                _verify_member(zf, m, label)
    except BaseException:
        zf.close()
        raise
    return SafeZip(zf, members, label)


def _check_directory(zf: zipfile.ZipFile, where: str, limits: ZipLimits) -> list[Member]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise InputFileError(f"{where} declares {len(infos):,} members, more than the {limits.max_members:,} "
                             "accepted.")
    seen: set[str] = set()
    total = 0
    members = []
    for info in infos:
        name = info.filename
        if name in seen:
            raise InputFileError(f"{where} holds the member '{name}' twice; a zip with duplicate names can show "
                                 "one content to a checker and another to the loader, so it is refused.",
                                 "Save the file again from its source.")
        seen.add(name)
        check_member_name(name, where, limits)
        if info.flag_bits & 0x1:
            raise InputFileError(f"{where}: member '{name}' is encrypted.")
        if info.compress_type not in _ALLOWED_METHODS:
            raise InputFileError(f"{where}: member '{name}' uses compression method {info.compress_type}; "
                                 "only stored and deflate are accepted.")
        if info.file_size > limits.max_member_bytes:
            raise InputFileError(f"{where}: member '{name}' declares {info.file_size:,} bytes, more than the "
                                 f"{limits.max_member_bytes:,} accepted.")
        if (info.file_size > limits.ratio_floor
                and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            raise InputFileError(f"{where}: member '{name}' would inflate {info.compress_size:,} bytes to "
                                 f"{info.file_size:,} (a zip bomb), so it is refused.")
        total += info.file_size
        members.append(Member(name, info.file_size, info.compress_size, info.CRC, info.compress_type))
    if total > limits.max_total_bytes:
        raise InputFileError(f"{where} declares {total:,} bytes uncompressed, more than the "
                             f"{limits.max_total_bytes:,} accepted.")
    return members


def _check_layout(zf: zipfile.ZipFile, where: str) -> None:
    """Member data must not overlap and must end before the central directory."""
    fp = zf.fp
    if fp is None:  # pragma: no cover - an open ZipFile always has one
        return
    spans = []
    for info in zf.infolist():
        fp.seek(info.header_offset)
        head = fp.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
            raise InputFileError(f"{where}: member '{info.filename}' has no local header where the directory "
                                 "says it is (a corrupted or crafted archive).")
        name_len, extra_len = _LOCAL_HEADER.unpack(head)[-2:]
        start = info.header_offset
        end = start + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
        spans.append((start, end, info.filename))
    spans.sort()
    directory_start = getattr(zf, "start_dir", None)
    for (_s0, e0, n0), (s1, _e1, n1) in itertools.pairwise(spans):
        if s1 < e0:
            raise InputFileError(f"{where}: members '{n0}' and '{n1}' share bytes (overlapping entries), so the "
                                 "archive is refused.")
    if spans and directory_start is not None and spans[-1][1] > directory_start:
        raise InputFileError(f"{where}: member '{spans[-1][2]}' runs into the central directory.")


def _verify_member(zf: zipfile.ZipFile, m: Member, where: str) -> None:
    crc = 0
    read = 0
    try:
        with zf.open(m.name) as f:
            while chunk := f.read(1 << 20):
                read += len(chunk)
                if read > m.size:
                    raise InputFileError(f"{where}: member '{m.name}' holds more than its declared size.")
                crc = zlib.crc32(chunk, crc)
    except zipfile.BadZipFile as e:
        if "CRC" in str(e):
            raise _crc_error(where, m.name) from e
        raise InputFileError(f"{where}: member '{m.name}' cannot be read ({e}).",
                             "Save the file again; check that the copy finished.") from e
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise InputFileError(f"{where}: member '{m.name}' is truncated or corrupted ({e}).",
                             "Save the file again; check that the copy finished.") from e
    if read != m.size or (crc & 0xFFFFFFFF) != m.crc:
        raise _crc_error(where, m.name)


def _crc_error(where: str, name: str) -> InputFileError:
    return InputFileError(f"{where} is corrupted: the checksum of its member '{name}' does not match.",
                          "Save the file again; check that the copy finished.")
