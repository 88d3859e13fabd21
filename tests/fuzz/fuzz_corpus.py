"""The fuzz corpus: real model files (ours and the zoo's), mutated, and malicious payloads in every form.

Base files are saved once per session (``base(key)``) by the project's own test registries: edge-lstm
checkpoints and the zoo's user-shaped networks (``tests/zoo.py``) as TorchScript, ``.pt2`` and pickled
modules, files this suite did not write by hand. Mutations rebuild the zip member by member, so they hit
the structure a loader reads: truncation, bit flips, duplicated, renamed, dropped and added members.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

_CACHE: dict[str, tuple[Path, list[tuple[int, ...]]]] = {}
_ROOT: list[Path] = []


def set_root(path: Path) -> None:
    """Where base files are saved for the session."""
    _ROOT[:] = [path]


def base(key: str) -> tuple[Path, list[tuple[int, ...]]]:
    """``models:stacked:checkpoint`` or ``zoo:seq2seq:pt2``: the saved file and its input shapes."""
    if key not in _CACHE:
        import models
        import zoo

        src, name, form = key.split(":")
        directory = _ROOT[0] / "base" / src
        directory.mkdir(parents=True, exist_ok=True)
        _CACHE[key] = models.write(name, form, directory) if src == "models" else zoo.save(name, form, directory)
    return _CACHE[key]


def shapes_of(key: str) -> list[tuple[int, ...]]:
    """The input shapes of a base file, known without saving it."""
    src, name, _form = key.split(":")
    if src == "models":
        import models

        from edge_lstm import archs

        return [tuple(s) for s in archs.input_shapes(models.KINDS[name], models.WINDOW)]
    import zoo

    return [tuple(s) for s in zoo.ZOO[name].shapes]


def shape_args(shapes: list[tuple[int, ...]]) -> list[str]:
    """``--input-shape`` arguments."""
    return [a for s in shapes for a in ("--input-shape", "x".join(map(str, s)))]


class Evil:
    """Unpickling this writes the marker file: code from a model file running."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def evil_pickle(marker: Path, protocol: int = 2) -> bytes:
    """A pickle whose loading creates ``marker`` (protocol 4 hides the global behind STACK_GLOBAL)."""
    return pickle.dumps({"x": Evil(str(marker))}, protocol=protocol)


def evil_torch_save(marker: Path, payload: object | None = None, legacy: bool = False) -> bytes:
    """A ``torch.save`` file (zip, or the legacy format) holding the payload."""
    buf = io.BytesIO()
    torch.save(payload if payload is not None else ((Evil(str(marker)),), {}), buf,
               _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


Entries = list[tuple[str, bytes]]


def read_zip(path: Path) -> Entries:
    """Every member, in order."""
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def write_zip(path: Path, entries: Entries) -> Path:
    """A stored zip of ``entries`` (duplicates and odd names kept as given)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": exactly what some cases want
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for name, data in entries:
                z.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)
    return path


def member(entries: Entries, suffix: str) -> int:
    """Index of the first member whose name ends with ``suffix``."""
    return next(i for i, (n, _) in enumerate(entries) if n.endswith(suffix))


def prefix(entries: Entries) -> str:
    """The archive's top-level directory."""
    return entries[0][0].split("/", 1)[0]


Mutation = Callable[[Path, Path], Path]  # (source, destination) -> destination


def truncate(fraction: float) -> Mutation:
    """Keep the first ``fraction`` of the bytes."""
    def go(src: Path, dst: Path) -> Path:
        data = src.read_bytes()
        dst.write_bytes(data[: max(1, int(len(data) * fraction))])
        return dst
    return go


def flip(seed: int, count: int = 3) -> Mutation:
    """Flip ``count`` random bits (seeded)."""
    def go(src: Path, dst: Path) -> Path:
        data = bytearray(src.read_bytes())
        rnd = random.Random(seed)
        for _ in range(count):
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
        dst.write_bytes(bytes(data))
        return dst
    return go


def duplicate(suffix: str, zero: bool = True, first: bool = False) -> Mutation:
    """Add a second member of the same name (zero-filled by default), after or before the original."""
    def go(src: Path, dst: Path) -> Path:
        e = read_zip(src)
        i = member(e, suffix)
        name, data = e[i]
        copy = (name, b"\0" * len(data) if zero else data)
        e.insert(i if first else len(e), copy)
        return write_zip(dst, e)
    return go


def rename(suffix: str, new_tail: str) -> Mutation:
    """Rename one member (keeping its directory unless ``new_tail`` is absolute or has '..')."""
    def go(src: Path, dst: Path) -> Path:
        e = read_zip(src)
        i = member(e, suffix)
        name, data = e[i]
        e[i] = (new_tail if new_tail.startswith(("/", "..")) else name[: -len(suffix)] + new_tail, data)
        return write_zip(dst, e)
    return go


def drop(suffix: str) -> Mutation:
    """Remove one member."""
    def go(src: Path, dst: Path) -> Path:
        e = read_zip(src)
        del e[member(e, suffix)]
        return write_zip(dst, e)
    return go


def add(tail: str, data: bytes = b"hello") -> Mutation:
    """Add a member under the archive's directory (or at ``tail`` itself when it starts with '/' or '..')."""
    def go(src: Path, dst: Path) -> Path:
        e = read_zip(src)
        e.append((tail if tail.startswith(("/", "..")) else f"{prefix(e)}/{tail}", data))
        return write_zip(dst, e)
    return go


def replace(suffix: str, data: bytes) -> Mutation:
    """Replace one member's bytes."""
    def go(src: Path, dst: Path) -> Path:
        e = read_zip(src)
        i = member(e, suffix)
        e[i] = (e[i][0], data)
        return write_zip(dst, e)
    return go


def edit_json(suffix: str, change: Callable[[dict], None]) -> Mutation:
    """Load a JSON member, change it in place, write it back."""
    def go(src: Path, dst: Path) -> Path:
        e = read_zip(src)
        i = member(e, suffix)
        doc = json.loads(e[i][1])
        change(doc)
        e[i] = (e[i][0], json.dumps(doc).encode())
        return write_zip(dst, e)
    return go


def chain(*steps: Mutation) -> Mutation:
    """Apply mutations in order."""
    def go(src: Path, dst: Path) -> Path:
        tmp = src
        for k, step in enumerate(steps):
            out = dst.with_name(f"{dst.stem}.step{k}{dst.suffix}")
            tmp = step(tmp, out)
        shutil.move(tmp, dst)
        for k in range(len(steps)):
            dst.with_name(f"{dst.stem}.step{k}{dst.suffix}").unlink(missing_ok=True)
        return dst
    return go
