"""Atomic output: stage everything in a temporary directory, then rename into place.

A failed run leaves nothing behind; an existing output is replaced only with
``force``, and then only after the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edge_lstm.errors import OutputExistsError, UsageError


def check_destination(out: Path, force: bool) -> None:
    """Refuse an existing output without ``force``, and a parent that cannot be written.

    Even with ``force``, only an edge-lstm output directory (one holding a
    ``report.json``) or an empty one is replaced: never the working directory, the
    home directory, a file, or a directory of someone else's files.
    """
    resolved = out.resolve()
    if resolved in (Path.cwd().resolve(), Path.home().resolve()) or resolved == resolved.parent:
        raise UsageError(f"Output '{out}' is the current, home or root directory.",
                         "Choose a new directory for the export, e.g. -o out.")
    if out.exists() and not force:
        raise OutputExistsError(
            f"Output '{out}' already exists.", "Pass --force to replace it, or choose another --output."
        )
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").is_file())):
        raise OutputExistsError(
            f"Output '{out}' exists and is not an edge-lstm export (no report.json), so --force will not replace it.",
            "Choose another --output, or remove it yourself.",
        )
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"Cannot write '{out}': the directory '{parent}' does not exist.")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"Cannot write '{out}': the directory '{parent}' is not writable.",
                         "Choose an output directory you can write to.")


@contextlib.contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a staging directory beside ``out``; on success it replaces ``out`` atomically."""
    check_destination(out, force)
    out = out.resolve()
    parent = out.parent
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise UsageError(f"Cannot write in '{parent}': {e.strerror}.") from e
    try:
        yield stage
        publish(stage, out, force)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, out: Path, force: bool) -> None:
    """Move ``stage`` to ``out``; an old ``out`` is removed only after the move succeeded."""
    old: Path | None = None
    if out.exists():
        if not force:
            raise OutputExistsError(f"Output '{out}' appeared while exporting.", "Pass --force to replace it.")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(stage, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary name in the same directory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
