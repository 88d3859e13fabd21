"""Every file edge-lstm writes goes through here: one resolved root, atomic staging, ``--force`` rules.

- The output directory is resolved once: its parent with every symlink
  followed, its own name never (an output that is a symlink, dangling or not,
  is refused), so nothing lands where a link points.
- Everything is staged in ``.NAME.<host>-<pid>.<random>.partial`` beside the
  output and renamed into place at the end: a failed run leaves nothing behind.
  Staging directories of runs that were killed (their process is gone) are
  recognised by that name and removed by the next run on the same output.
- The published directory holds a marker, ``.edge-lstm-output.json``, listing
  the files edge-lstm wrote there. ``--force`` replaces only such a directory
  (or an empty one), and only while it holds nothing but those regular files and
  directories:
  never the working, home or root directory, a file, a symlink, or a directory
  of someone else's files.
- A full disk, a read-only file system or an I/O error while writing is an
  :class:`~edge_lstm.errors.OutputError` (exit code 2) naming the path and the
  reason, and the partial output is removed.
- Names that come from files (a model's name, a tensor's) pass through
  :func:`safe_name` before they become part of a file name.
- Files and directories get the user's normal permissions: ``0666`` and ``0777``
  less the process's umask (``0644`` and ``0755`` with the usual ``022``), as a
  shell's ``>`` and ``mkdir`` would give them, although staging makes them private first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edge_lstm.errors import OutputError, OutputExistsError, UsageError

MARKER = ".edge-lstm-output.json"
MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux, else by setting it and putting it back
    (POSIX has no other way, and that briefly changes it for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new file edge-lstm writes: ``0666`` less the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode of a new directory edge-lstm writes: ``0777`` less the umask."""
    return 0o777 & ~umask()


def safe_name(text: object, default: str = "model", max_len: int = MAX_NAME) -> str:
    """A safe file-name stem from untrusted text: its last path component, ``[A-Za-z0-9._-]`` only, no leading
    dot, at most ``max_len`` characters; ``default`` when nothing is left."""
    base = re.split(r"[/\\]", str(text))[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._-")[:max_len].rstrip("._-")
    return cleaned or default


def check_filename(name: str) -> str:
    """A name for a file inside the output directory: one plain component, not hidden, not too long."""
    if not name or name != safe_name(name, "", 200) or name in (".", ".."):
        raise UsageError(f"Refusing to write the file name {name!r}: not a plain file name.")
    return name


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shown(path: Path | str) -> Path:
    """How an output path is printed and passed on: its parent resolved (symlinks followed, ``..`` gone) and its
    own name kept, as :func:`resolve_output` resolves it; relative to the working directory when it is inside it,
    else absolute. ``a/../c`` is shown as ``c``."""
    p = Path(path)
    try:
        full = Path(os.path.realpath(p)) if p.name in ("", ".", "..") else Path(os.path.realpath(p.parent)) / p.name
        here = Path.cwd().resolve()
    except OSError:  # a working directory that was removed: keep what was given
        return p
    try:
        return full.relative_to(here)
    except ValueError:
        return full


def resolve_output(out: Path) -> Path:
    """The absolute output path: parent resolved (symlinks followed), the last component kept as given."""
    text = str(out)
    if not text.strip() or "\x00" in text:
        raise UsageError(f"Output {text!r} is not a directory name.", "Choose a new directory, e.g. -o out.")
    try:
        if out.name in ("", ".", ".."):  # '.', '..', '/': the directory itself, resolved
            target = Path(os.path.realpath(out))
        else:
            target = Path(os.path.realpath(out.parent)) / out.name
        is_link = target.is_symlink()
    except OSError as e:
        raise UsageError(f"Cannot use output '{out}': {e.strerror or e}.") from e
    if is_link:
        raise UsageError(f"Output '{shown(target)}' is a symbolic link; edge-lstm does not write through links.",
                         "Pass the real directory path, or a new name.")
    if target in (Path.cwd().resolve(), Path.home().resolve()) or target == target.parent:
        raise UsageError(f"Output '{out}' ({target}) is the current, home or root directory.",
                         "Choose a new directory for the export, e.g. -o out.")
    return target


def read_marker(directory: Path) -> dict[str, object] | None:
    """The marker of an edge-lstm output directory, or None when it has none (or an unreadable one)."""
    path = directory / MARKER
    try:
        if path.is_symlink() or not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != "edge-lstm" or not isinstance(data.get("files"), list):
        return None
    return data


def _walk(directory: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry below ``directory`` with its path relative to it (``a/b``), never following links."""
    stack = [("", directory)]
    while stack:
        rel, path = stack.pop()
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = f"{rel}{entry.name}"
            yield name, entry
            if entry.is_dir(follow_symlinks=False):
                stack.append((name + "/", Path(entry.path)))


def _foreign_entries(directory: Path) -> list[str]:
    """Entries below ``directory`` that edge-lstm did not write there (per its marker): files not listed,
    directories not listed, anything that is neither a regular file nor a directory (links included)."""
    marker = read_marker(directory) or {}
    files, dirs = marker.get("files"), marker.get("dirs")
    listed = {str(f) for f in files} if isinstance(files, list) else set()
    listed_dirs = {str(d) for d in dirs} if isinstance(dirs, list) else set()
    foreign = []
    for name, entry in _walk(directory):
        if entry.is_symlink():
            foreign.append(name)
        elif entry.is_dir(follow_symlinks=False):
            if name not in listed_dirs:
                foreign.append(name + "/")
        elif not entry.is_file(follow_symlinks=False) or (name != MARKER and name not in listed):
            foreign.append(name)
    return sorted(foreign)


def check_destination(out: Path, force: bool) -> Path:
    """Refuse an existing output without ``force``, a foreign one even with it, and an unwritable parent.

    Returns the resolved output path. Stale staging directories of killed runs are removed here.
    """
    target = resolve_output(out)
    out = shown(target)  # messages name the path as it is written, a/../c as c
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"Cannot write '{out}': the directory '{parent}' does not exist.")
    remove_stale(target)  # first: a killed run may have left the old output renamed aside
    if target.exists():  # what --force would refuse is said first: no hint to pass a --force that would not do
        if not target.is_dir():
            raise OutputExistsError(f"Output '{out}' is an existing file, not an edge-lstm export (a directory), "
                                    "so --force will not replace it.",
                                    "Choose another --output (a new directory), or remove the file yourself.")
        foreign = _foreign_entries(target)
        if foreign:
            raise OutputExistsError(
                f"Output '{out}' is not an edge-lstm export: it holds files edge-lstm did not write there "
                f"({', '.join(foreign[:4])}"
                f"{' ...' if len(foreign) > 4 else ''}), so --force will not replace it.",
                "Choose another --output, or remove it yourself.")
        if not force:
            raise OutputExistsError(f"Output '{out}' already exists.",
                                    "Pass --force to replace it, or choose another --output.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write '{out}': the directory '{parent}' is not writable.",
                          "Choose an output directory you can write to.")
    return target


_STAGE = r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.(?:[A-Za-z0-9_]+\.partial|old)"


def remove_stale(target: Path) -> list[Path]:
    """Remove what runs on ``target`` that were killed left beside it; the paths removed (or restored)."""
    done: list[Path] = []
    pattern = re.compile(_STAGE)
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return done
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or m.group("name") != target.name or m.group("host") != _host_tag() or _alive(int(m.group("pid"))):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
                continue
            if entry.name.endswith(".old") and stat.S_ISDIR(st.st_mode):
                if not target.exists() and read_marker(path) is not None:
                    os.replace(path, target)  # killed between the two renames of publish: put it back
                else:
                    shutil.rmtree(path)
            elif stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
            done.append(path)
    return done


def _stage_prefix(target: Path) -> str:
    return f".{target.name}.{_host_tag()}-{os.getpid()}."


def io_error(e: OSError, path: Path | str | None = None) -> OutputError:
    """An :class:`OutputError` naming the path and the reason of an ``OSError`` while writing."""
    where = path or e.filename or "the output"
    reason = e.strerror or str(e)
    hints = {errno.ENOSPC: "The file system is full: free some space or choose another output directory.",
             errno.EDQUOT: "The disk quota is exhausted: free some space or choose another output directory.",
             errno.EROFS: "The file system is read-only: choose another output directory.",
             errno.EIO: "An I/O error: check the disk, then run again.",
             errno.EACCES: "Choose an output directory you can write to."}
    return OutputError(f"Cannot write '{where}': {reason}.", hints.get(e.errno or 0, "Nothing was written."))


@contextlib.contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a staging directory beside ``out``; on success it replaces ``out`` atomically."""
    target = check_destination(out, force)
    try:
        stage = Path(tempfile.mkdtemp(prefix=_stage_prefix(target), suffix=".partial", dir=target.parent))
    except OSError as e:
        raise io_error(e, target.parent) from e
    try:
        try:
            yield stage
            finish(stage)
            publish(stage, target, force)
        except OSError as e:
            raise io_error(e) from e
    finally:
        with contextlib.suppress(OSError):
            if stage.exists():
                shutil.rmtree(stage)


#: how deep an output's subdirectories may nest (``export/fw/model.c`` is 2)
MAX_DEPTH = 4


def check_relpath(name: str) -> list[str]:
    """The components of a relative path inside the output: each a plain file name, at most :data:`MAX_DEPTH`
    directories deep."""
    parts = name.split("/")
    if len(parts) > MAX_DEPTH + 1:
        raise UsageError(f"Refusing to write {name!r}: nested deeper than {MAX_DEPTH} directories.")
    return [check_filename(p) for p in parts]


def subdir(stage: Path, name: str) -> Path:
    """The directory ``name`` (``a`` or ``a/b``) inside ``stage``, created as needed, never through a link."""
    path = stage
    for part in check_relpath(name):
        path = path / part
        try:
            os.mkdir(path, 0o777)  # less the umask
        except FileExistsError:
            if path.is_symlink() or not path.is_dir():
                raise UsageError(f"Refusing to write into '{path}': it is not a plain directory.") from None
    if Path(os.path.realpath(path)) != Path(os.path.realpath(stage)) / Path(*check_relpath(name)):
        raise UsageError(f"Refusing to write '{path}': it is not inside the output directory.")
    return path


def write_into(stage: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new file ``name`` (``file`` or ``dir/file``) inside ``stage``, never through a link,
    never outside it."""
    if name == MARKER:
        parent, leaf = stage, name
    else:
        *dirs, leaf = check_relpath(name)
        parent = subdir(stage, "/".join(dirs)) if dirs else stage
    path = parent / leaf
    if Path(os.path.realpath(path.parent)) != Path(os.path.realpath(parent)) or not _inside(parent, stage):
        raise UsageError(f"Refusing to write '{path}': it is not inside the output directory.")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)  # less the umask
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _inside(path: Path, root: Path) -> bool:
    real, top = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real == top or top in real.parents


def finish(stage: Path) -> None:
    """Check the staged files and write the marker that lists them (what ``--force`` may replace later).

    Only regular files and plain directories may be published: a link, a socket or a device in the staging
    directory stops the run.
    """
    files, dirs = [], []
    mode = dir_mode()
    for name, entry in _walk(stage):
        if entry.is_symlink():
            raise UsageError(f"Refusing to publish '{stage}': '{name}' is a symbolic link.")
        if entry.is_dir(follow_symlinks=False):
            dirs.append(name)
            os.chmod(entry.path, mode)
        elif entry.is_file(follow_symlinks=False):
            files.append(name)
        else:
            raise UsageError(f"Refusing to publish '{stage}': '{name}' is not a regular file.")
    from edge_lstm import __version__

    body = json.dumps({"tool": "edge-lstm", "version": __version__, "files": sorted(files), "dirs": sorted(dirs)},
                      indent=2) + "\n"
    write_into(stage, MARKER, body.encode())
    os.chmod(stage, mode)  # mkdtemp makes it private; the output is an ordinary directory


def add_to_marker(directory: Path, names: list[str]) -> None:
    """Files written later into an edge-lstm output (``profile --output out/profile.json``) join its marker,
    so ``--force`` may replace the directory again; a directory without a marker is left as it is."""
    marker = read_marker(directory)
    if marker is None:
        return
    files = sorted({*map(str, marker["files"]), *names})  # type: ignore[call-overload]
    body = json.dumps({**marker, "files": files}, indent=2) + "\n"
    write_files_atomic({directory / MARKER: body.encode()})


def publish(stage: Path, out: Path, force: bool) -> None:
    """Move ``stage`` to ``out``; an old ``out`` is removed only after the move succeeded."""
    old: Path | None = None
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputExistsError(f"Output '{out}' appeared while exporting.", "Pass --force to replace it.")
        if out.is_symlink() or _foreign_entries(out):
            raise OutputExistsError(f"Output '{out}' changed while exporting and now holds files edge-lstm did not "
                                    "write, so it is not replaced.")
        old = out.with_name(f".{out.name}.{_host_tag()}-{os.getpid()}.old")
        os.replace(out, old)
    try:
        os.replace(stage, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None,
                perms: int | None = None) -> Iterator[IO[Any]]:
    """An open file that becomes ``path`` only when the block ends without an error.

    It is written under a temporary name beside ``path`` (``.NAME.<host>-<pid>.<random>.partial``, which
    :func:`remove_stale` recognises when the run was killed) and renamed over ``path`` at the end; on any
    failure the temporary file is removed and ``path`` is untouched. The file gets ``perms`` (default: ``0666``
    less the umask). Failing to create or rename it is an :class:`OutputError` naming the path (an ``OSError`` inside
    the block, a failed write included, passes through as it is). ``mode`` is
    ``"wb"`` or ``"w"`` (text, with ``encoding`` and ``newline``).

    This module imports only the standard library and :mod:`edge_lstm.errors`, so the device runner (Python
    3.9, numpy and one runtime) writes through it too.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes new files ('wb' or 'w'), not mode {mode!r}")
    tmp = _temp_beside(path, perms)
    try:
        try:
            f = open(tmp, mode, encoding=encoding, newline=newline)  # noqa: SIM115 (closed below, before the rename)
        except OSError as e:
            raise io_error(e, path) from e
        with f:
            yield f  # an OSError of the caller's own (reading its input, say) stays what it is
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise io_error(e, path) from e
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _temp_beside(path: Path, perms: int | None = None) -> str:
    """A new, empty temporary file in ``path``'s directory, with ``perms`` (default ``0666`` less the umask)."""
    path = Path(path)
    remove_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_stage_prefix(path), suffix=".partial", dir=path.parent)
    except OSError as e:
        raise io_error(e, path.parent) from e
    try:
        os.fchmod(fd, file_mode() if perms is None else perms)  # mkstemp makes it private
    finally:
        os.close(fd)
    return tmp


def write_bytes_atomic(path: Path, data: bytes, perms: int | None = None) -> None:
    """Write a file through a temporary name in the same directory (never following a link at ``path``)."""
    try:
        with atomic_file(path, perms=perms) as f:
            f.write(data)
    except OSError as e:  # the write or the close: a full disk, an I/O error
        raise io_error(e, path) from e


def write_text_atomic(path: Path, text: str, perms: int | None = None) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"), perms)


def write_files_atomic(files: dict[Path, bytes], force: bool = True) -> None:
    """Write several files all or nothing: each to a temporary name, then every rename; temporaries removed on
    failure, and files this call created removed again when a later rename fails. Without ``force`` a
    destination that exists (or appeared meanwhile) is an :class:`OutputExistsError`. A full disk or an I/O
    error is an :class:`OutputError` naming the path."""
    with contextlib.ExitStack() as stack:
        temps: dict[Path, str] = {}
        placed: list[Path] = []
        try:
            for path, data in files.items():
                temps[path] = tmp = _temp_beside(path)
                stack.callback(_unlink_quietly, tmp)
                with open(tmp, "wb") as f:
                    f.write(data)
            for path, tmp in temps.items():
                existed = os.path.lexists(path)
                if existed and not force:
                    raise OutputExistsError(f"Output '{path}' already exists (it appeared while writing).",
                                            "Pass --force to replace it.")
                os.replace(tmp, path)
                if not existed:
                    placed.append(path)
        except BaseException as e:
            for p in placed:
                _unlink_quietly(str(p))
            if isinstance(e, OSError):
                raise io_error(e, next((p for p, t in temps.items() if os.path.exists(t)), None)) from e
            raise


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def closed_pipe_exit() -> int:
    """``edge-lstm ... | head`` (or ``2>&1 | head``): the reader has gone. Point each stream whose reader has gone
    (stdout when that cannot be told) at /dev/null, so that the interpreter's final flush does not fail again, and
    end quietly with exit code 0, as ``head``'s writers conventionally do."""
    gone = [fd for fd in (1, 2) if _reader_gone(fd)] or [1]
    for fd in gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    return 0


def _reader_gone(fd: int) -> bool:
    """True when ``fd`` is a pipe whose reading end is closed (poll reports an error on it)."""
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or a closed descriptor
        return False
