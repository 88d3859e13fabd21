"""CLI commands ``device emulate|stop|status``: the emulated aarch64 device, registered onto the main typer app.

Failures raise :class:`~edge_lstm.errors.EmulationError` (exit code 7: not
root, binfmt, a corrupt cache, sshd not up) or a usage error (exit code 2); the
main CLI maps them. ``--json`` prints machine JSON only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edge_lstm import jsonio
from edge_lstm.cli_options import JsonOpt

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ArchOpt = Annotated[str, typer.Option("--arch", help="Debian architecture of the emulated device.")]
DirOpt = Annotated[Path | None, typer.Option("--image-dir", help="Where the userland is cached (default: "
                                             "$XDG_CACHE_HOME/edge-lstm/ARCH, else ~/.cache/edge-lstm/ARCH).")]


def register(app: typer.Typer) -> None:
    """Add the ``device`` group to ``app``."""
    device_app = typer.Typer(help="An emulated Raspberry Pi-like aarch64 device (Debian arm64 under qemu-user, "
                             "reached over SSH).", no_args_is_help=True)
    device_app.command("emulate")(emulate_command)
    device_app.command("stop")(stop_command)
    device_app.command("status")(status_command)
    app.add_typer(device_app, name="device")


def emulate_command(
    arch: ArchOpt = "arm64",
    image_dir: DirOpt = None,
    port: Annotated[int | None, typer.Option(help="Loopback port for its sshd (default: a free one).")] = None,
    mirror: Annotated[str | None, typer.Option(help="Debian mirror for the first build (default: the one apt "
                                                    "uses on this machine).")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Remove the cached userland and build it anew.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build (once, cached) a Debian bookworm arm64 userland with the aarch64 runtimes and start its sshd.

    Needs root. Prints the --remote options that reach it; `edge-lstm device stop` ends it.
    """
    from edge_lstm import emulate

    t0 = time.monotonic()
    with _progress(as_json) as say:
        dev, started = emulate.emulate(arch, image_dir, port, mirror, rebuild, say=say)
    seconds = time.monotonic() - t0
    manifest = emulate.inspect_image(Path(dev.image_dir)).manifest
    payload = {**dev.to_dict(), "started_now": started, "seconds": round(seconds, 1),
               "versions": manifest.get("versions"), "stage_seconds": manifest.get("stage_seconds")}
    if as_json:
        jsonio.emit(payload)
        return
    _print_device(payload, image_dir, "started" if started else "already running")


def _print_device(d: dict[str, Any], image_dir: Path | None, how: str) -> None:
    v = d.get("versions") or {}
    main, tfl = v.get("main", {}), v.get("tflite-runtime", {})
    opt_dir = f" --image-dir {image_dir}" if image_dir else ""
    lines = [
        f"Emulated {d['arch']} device {how}: {d['os']}, {d['machine']} under qemu-user; sshd pid {d['pid']} on "
        f"{d['address']} (image {d['image_dir']}).",
        f"  python3: Python {main.get('python')}, ai-edge-litert {main.get('ai-edge-litert')}, onnxruntime "
        f"{main.get('onnxruntime')}, numpy {main.get('numpy')}",
        f"  {d['pythons'].get('tflite-runtime')}: tflite-runtime {tfl.get('tflite-runtime')}, numpy {tfl.get('numpy')}",
        f"  ssh config: {d['ssh_config']} (host alias {d['alias']}; ssh -F {d['ssh_config']} {d['alias']})",
        "Reach it like a real device:",
        f"  edge-lstm profile MODEL {' '.join(d['remote_args'])}",
        f"  edge-lstm profile MODEL.tflite {' '.join(d['remote_args_tflite_runtime'])}",
        f"  edge-lstm export model.pt --prove-on {d['arch']}",
        "Timings there are EMULATED (qemu-user on this host), never device latency.",
        f"Stop it: edge-lstm device stop{opt_dir}",
    ]
    out.print("\n".join(lines), markup=False, soft_wrap=True)


def stop_command(arch: ArchOpt = "arm64", image_dir: DirOpt = None, as_json: JsonOpt = False) -> None:
    """Stop the emulated device's sshd (and anything still running in its userland)."""
    from edge_lstm import emulate

    with _progress(as_json) as say:
        dev = emulate.stop(arch, image_dir, say=say)
    if as_json:
        jsonio.emit({"stopped": dev is not None, "device": dev.to_dict() if dev else None})
    elif dev is None:
        out.print(f"No emulated {arch} device is running.")
    else:
        out.print(f"Stopped the emulated {arch} device (sshd pid {dev.pid} on 127.0.0.1:{dev.port}).")


def status_command(arch: ArchOpt = "arm64", image_dir: DirOpt = None, as_json: JsonOpt = False) -> None:
    """Say what is cached (verified) and what runs."""
    from edge_lstm import emulate

    st = emulate.status(arch, image_dir)
    if as_json:
        jsonio.emit(st)
        return
    img = st["image"]
    m = img["manifest"] or {}
    desc = {"ready": f"ready (Debian {m.get('suite')} {m.get('arch')}, Python {m.get('python')})",
            "absent": "not built yet (edge-lstm device emulate builds it)",
            "partial": f"{img['detail']} (edge-lstm device emulate resumes it)",
            "corrupt": f"CORRUPT: {img['detail']} (edge-lstm device emulate --rebuild)",
            "foreign": f"not an edge-lstm image: {img['detail']}"}[img["status"]]
    out.print(f"image {img['path']}: {desc}", markup=False, soft_wrap=True)
    dev = st["device"]
    if dev is None:
        out.print("device: not running", markup=False)
    else:
        out.print(f"device: running since {dev['started']}: {dev['os']}, {dev['machine']} (emulated); sshd pid "
                  f"{dev['pid']} on {dev['address']}; {' '.join(dev['remote_args'])}", markup=False, soft_wrap=True)


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str], None]]:
    """Progress on stderr (silent with --json): a status line on a terminal, else one line per step."""
    if quiet:
        yield lambda _msg: None
    elif not err.is_terminal:
        yield lambda msg: err.print(f"· {msg}", markup=False)
    else:
        with err.status("starting") as status:
            yield lambda msg: status.update(msg)
