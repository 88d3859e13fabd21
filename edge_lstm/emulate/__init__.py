"""An emulated Raspberry Pi-like device: a Debian bookworm arm64 userland, run under qemu-user, reached over SSH.

:func:`emulate` builds the userland once (``debootstrap --arch=arm64
--variant=minbase`` from the Debian mirror apt uses on this machine, then the
aarch64 wheels of ai-edge-litert, onnxruntime and tflite-runtime 2.14 with
``numpy<2``, fetched on the host with ``pip download``), caches it, and starts
an OpenSSH server inside it on a loopback port. ``profile --remote`` and
``export --prove-on arm64`` then run the device side there exactly as on a
real Pi, on the ARM builds of the runtimes. The kernel runs the userland's
aarch64 code through ``qemu-aarch64-static`` (binfmt_misc), so timings there
are emulated: they say nothing about a device's latency.

The userland is a plain chroot without ``/proc`` or ``/sys``: onnxruntime's
cpuinfo crashes under qemu-user when it reads the host's x86 ``/proc/cpuinfo``,
and without them it only warns (on stderr). Memory figures fall back to
``getrusage`` and measure the emulator too: like the timings, they are labelled
emulated.

Everything needs root (debootstrap, chroot, binfmt registration) except
:func:`status`. Failures raise :class:`~edge_lstm.errors.EmulationError`
(exit code 7).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_lstm.emulate import host, image, sshd
from edge_lstm.emulate.image import default_image_dir, inspect_image
from edge_lstm.emulate.sshd import EmulatedDevice

__all__ = ["EmulatedDevice", "default_image_dir", "emulate", "session", "status", "stop"]


def emulate(arch: str = "arm64", image_dir: Path | None = None, port: int | None = None,
            mirror: str | None = None, rebuild: bool = False, say: image.Progress = lambda _m: None,
            ) -> tuple[EmulatedDevice, bool]:
    """Build (once) and start the emulated device; (device, True when this call started it)."""
    path = image_dir or default_image_dir(arch)
    with _readable(path):
        return sshd.start(arch, path, port, build=(mirror, rebuild), say=say)


def stop(arch: str = "arm64", image_dir: Path | None = None,
         say: image.Progress = lambda _m: None) -> EmulatedDevice | None:
    """Stop the emulated device; the one stopped, or ``None`` when none was running."""
    path = image_dir or default_image_dir(arch)
    with _readable(path):
        return sshd.stop(arch, path, say)


def status(arch: str = "arm64", image_dir: Path | None = None) -> dict[str, Any]:
    """What is cached and what runs: the image's state (verified) and the running device, if any."""
    host.check_arch(arch)
    path = image_dir or default_image_dir(arch)
    with _readable(path):
        dev = sshd.running(path)
        return {"arch": arch, "image": inspect_image(path).to_dict(), "running": dev is not None,
                "device": dev.to_dict() if dev else None}


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """A root-owned image seen by another user (or a file given as the directory): one clear error, no traceback."""
    try:
        if path.exists() and not path.is_dir():  # inside the try: stat() of a root-only path is denied too
            from edge_lstm.errors import UsageError

            raise UsageError(f"--image-dir '{path}' is a file, not a directory.",
                             "Pass a directory for the cached userland (it is created if missing).")
        yield
    except PermissionError as e:
        from edge_lstm.errors import EmulationError

        raise EmulationError(f"Cannot read the emulated device's image '{path}': permission denied "
                             f"({e.filename}).", "Run it as root, like `edge-lstm device emulate`.") from e


@contextlib.contextmanager
def session(arch: str = "arm64", image_dir: Path | None = None,
            say: image.Progress = lambda _m: None) -> Iterator[EmulatedDevice]:
    """The emulated device for the duration of a block: a running one is used (and left running); otherwise it
    is started (built first if needed) and stopped afterwards."""
    dev, started = emulate(arch, image_dir, say=say)
    try:
        yield dev
    finally:
        if started:
            stop(arch, image_dir, say)
