"""Run the device-side runner on a device over the system ``ssh`` and ``scp``.

The artifact, a feed ``.npz`` and a self-contained zipapp (``runner.pyz``: the
package's ``__init__``, ``errors``, ``outputs``, ``spec``, ``runners`` and ``device``
modules, which need only numpy and one runtime) are copied into a directory on
the device; ``python3 runner.pyz MODEL --inputs feed.npz ...`` runs there and
its JSON line comes back. The system tools are used so that the user's
``~/.ssh/config``, keys, agents and jump hosts work. Commands are argument
lists; the one string the remote shell sees is built with :func:`shlex.join`.
Connection refused, authentication failure, a missing runtime and timeouts
each raise :class:`RemoteError` with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_lstm import schema
from edge_lstm.errors import EdgeLstmError, MissingRuntimeError, RemoteError, UsageError

#: modules the device-side runner needs, relative to the package directory
ZIPAPP_MODULES = ("__init__.py", "errors.py", "outputs.py", "spec.py", "registry.py", "device.py", "kernels.py",
                  "tflite_read.py", "tflite_schema.py")
_MAIN = "from edge_lstm.device import main\nraise SystemExit(main())\n"
_HOST_RE = re.compile(r"^(?:ssh://)?(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+(?::\d+)?$")
#: characters allowed in --remote-dir: scp's legacy protocol hands the path to the remote shell unquoted
_DIR_RE = re.compile(r"^[A-Za-z0-9._/~-]+$")


@dataclass(frozen=True)
class RemoteConfig:
    """Where and how to reach the device.

    ``host`` is ``user@host``, an alias from the SSH config, or
    ``ssh://user@host:port``. ``ssh_config`` is passed as ``-F`` (else the
    user's own config applies); ``options`` are extra ``-o KEY=VALUE`` strings.
    ``remote_dir`` must exist on the device; without it a fresh directory is
    made with ``mktemp -d`` and removed afterwards. It may use only letters,
    digits and ``. _ / - ~`` (``~`` only as a leading ``~/``), no ``..``
    segment and no leading ``-``: scp's legacy protocol passes it to the
    remote shell unquoted.
    """

    host: str
    python: str = "python3"
    port: int | None = None
    ssh_config: str | None = None
    identity: str | None = None
    options: tuple[str, ...] = ()
    connect_timeout_s: int = 10
    remote_dir: str | None = None

    def __post_init__(self) -> None:
        if not _HOST_RE.match(self.host):
            raise UsageError(f"Cannot use '{self.host}' as a remote host.",
                             "Write --remote as user@host, an SSH config alias, or ssh://user@host:port.")
        if self.remote_dir is not None:
            check_remote_dir(self.remote_dir)

    @property
    def workdir(self) -> str | None:
        """``remote_dir`` as ssh and scp both read it: a leading ``~/`` becomes a path relative to home.

        (ssh commands are quoted with :func:`shlex.join`, so a literal ``~`` would not be expanded there.)
        """
        if self.remote_dir is None:
            return None
        if self.remote_dir in ("~", "~/"):
            return "."
        return self.remote_dir.removeprefix("~/")

    @property
    def destination(self) -> tuple[str, int | None]:
        """(``user@host``, port) with an ``ssh://`` URL's port split off."""
        host = self.host.removeprefix("ssh://")
        port = self.port
        if ":" in host:
            host, _, p = host.rpartition(":")
            port = port or int(p)
        return host, port


def check_remote_dir(remote_dir: str) -> None:
    """:class:`UsageError` unless ``remote_dir`` is a plain path that no shell would expand or split."""
    why = None
    if not _DIR_RE.match(remote_dir):
        why = "it may contain only letters, digits and . _ / - ~"
    elif remote_dir.startswith("-"):
        why = "it must not start with '-'"
    elif ".." in remote_dir.split("/"):
        why = "it must not contain a '..' segment"
    elif "~" in remote_dir.removeprefix("~/") and remote_dir != "~":
        why = "'~' is allowed only as a leading '~/'"
    if why:
        raise UsageError(f"Cannot use '{remote_dir}' as --remote-dir: {why}.",
                         "Pass a plain path on the device, e.g. /tmp/edge-lstm or ~/edge-lstm; scp's legacy "
                         "protocol hands it to the remote shell unquoted.")


def build_zipapp(dest: Path) -> Path:
    """Write the self-contained device runner to ``dest`` (a zip with ``__main__.py``)."""
    pkg = Path(__file__).resolve().parent
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("__main__.py", _MAIN)
        for name in ZIPAPP_MODULES:
            z.write(pkg / name, f"edge_lstm/{name}")
        for f in sorted((pkg / "runners").glob("*.py")):
            z.write(f, f"edge_lstm/runners/{f.name}")
        for f in sorted((pkg / "kernel_tables").glob("*.json")):  # what each runtime release has (kernels.py)
            z.write(f, f"edge_lstm/kernel_tables/{f.name}")
    return dest


def _common(cfg: RemoteConfig, port_flag: str) -> list[str]:
    args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(cfg.connect_timeout_s)}"]
    if cfg.ssh_config:
        args += ["-F", cfg.ssh_config]
    if cfg.identity:
        args += ["-i", cfg.identity, "-o", "IdentitiesOnly=yes"]
    _, port = cfg.destination
    if port:
        args += [port_flag, str(port)]
    for opt in cfg.options:
        args += ["-o", opt]
    return args


def ssh_command(cfg: RemoteConfig, argv: list[str]) -> list[str]:
    """``ssh ... -- host 'quoted argv'``: the remote shell sees only :func:`shlex.join` output."""
    return ["ssh", *_common(cfg, "-p"), "--", cfg.destination[0], shlex.join(argv)]


def scp_command(cfg: RemoteConfig, files: list[Path], remote_dir: str) -> list[str]:
    """``scp ... files host:dir/``; ``remote_dir`` is checked with :func:`check_remote_dir` first."""
    check_remote_dir(remote_dir)
    return ["scp", "-q", *_common(cfg, "-P"), "--", *map(str, files), f"{cfg.destination[0]}:{remote_dir}/"]


_SECONDS = {"type": "number", "minimum": 0, "maximum": 1e6}
_COUNT = {"type": ["integer", "null"], "minimum": 0}
#: what the device runner (edge_lstm.device) prints: one JSON object, a report or an error
DEVICE_REPLY_SCHEMA: dict[str, Any] = {"oneOf": [
    {"type": "object", "required": ["error", "message"],
     "properties": {"error": {"type": "string", "maxLength": 200}, "message": {"type": "string"}}},
    {"type": "object", "required": ["runtime", "version", "threads", "load_s", "first_s", "latencies_s"],
     "not": {"required": ["error"]},
     "properties": {
         "runtime": {"type": "string", "maxLength": 100}, "version": {"type": "string", "maxLength": 200},
         "threads": {"type": "integer", "minimum": 1, "maximum": 4096}, "xnnpack": {"type": ["boolean", "null"]},
         "load_s": _SECONDS, "first_s": _SECONDS,
         "latencies_s": {"type": "array", "maxItems": 10_000_000, "items": _SECONDS},
         "sample_latencies_s": {"type": "array", "maxItems": 10_000_000, "items": _SECONDS},
         "rss_baseline_bytes": _COUNT, "rss_peak_bytes": _COUNT, "arena_used_bytes": _COUNT,
         "memory_method": {"type": "string"}, "inputs": {"type": "array"}, "outputs": {"type": "array"},
         "python": {"type": ["string", "null"]}, "numpy": {"type": ["string", "null"]}}},
]}


def read_device_reply(stdout: str, fail: type[EdgeLstmError], where: str) -> dict[str, Any] | None:
    """The device runner's last JSON line, validated; None when it printed none; ``fail`` when malformed."""
    lines = [ln for ln in stdout.strip().splitlines() if ln.lstrip().startswith("{")]
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except (ValueError, RecursionError) as e:
        raise fail(f"The device runner on {where} replied with malformed JSON ({e}): {lines[-1][:120]!r}",
                   "Check that the device runs the same edge-lstm version, and that nothing else prints to "
                   "stdout there (a login script, a wrapper).") from e
    schema.check(reply, DEVICE_REPLY_SCHEMA, lambda sentence: fail(
        f"The device runner on {where} replied with an unexpected report: {sentence}.",
        "Check that the device runs the same edge-lstm version."))
    return reply  # type: ignore[no-any-return]


def _run(cmd: list[str], cfg: RemoteConfig, timeout_s: float, what: str,
         on_runs: Callable[[int], None] | None = None) -> subprocess.CompletedProcess[str]:
    from edge_lstm import childproc

    try:
        proc = childproc.run(cmd, timeout_s, on_runs=on_runs)
    except FileNotFoundError as e:
        raise RemoteError(f"'{cmd[0]}' is not installed on this host.",
                          "Install the OpenSSH client (e.g. apt-get install openssh-client).") from e
    except subprocess.TimeoutExpired as e:
        raise RemoteError(f"Timed out after {timeout_s:.0f} s while {what} on {cfg.host}.",
                          "Check that the device is reachable and not overloaded; lower --runs, or raise "
                          "the timeout.") from e
    if proc.returncode == 255:
        raise connection_error(cfg, proc.stderr, what)
    return proc


def connection_error(cfg: RemoteConfig, stderr: str, what: str) -> RemoteError:
    """A readable :class:`RemoteError` from ssh's exit-255 diagnostics."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else "ssh failed without a message"
    host = cfg.host
    if "Connection refused" in text:
        return RemoteError(f"Cannot connect to {host}: connection refused.",
                           "Is sshd running on the device, and is the port right (user@host, ssh://user@host:port)?")
    if "Permission denied" in text or "Too many authentication failures" in text:
        return RemoteError(f"Authentication to {host} failed: {last}",
                           "edge-lstm runs ssh with BatchMode=yes (no password prompts): install your public key "
                           "on the device (ssh-copy-id) or load it into ssh-agent.")
    if "timed out" in text.lower():
        return RemoteError(f"Timed out connecting to {host} while {what}: {last}",
                           "Check the address and network; the connect timeout is "
                           f"{cfg.connect_timeout_s} s.")
    if "Could not resolve hostname" in text:
        return RemoteError(f"Unknown host {host}: {last}", "Check the name, or add it to ~/.ssh/config.")
    if "Host key verification failed" in text:
        return RemoteError(f"The host key of {host} is not trusted: {last}",
                           "Connect once with plain ssh to accept the key, or fix ~/.ssh/known_hosts.")
    return RemoteError(f"ssh to {host} failed while {what}: {last}")


def run_remote(cfg: RemoteConfig, artifact: Path, feed: Path, device_args: list[str],
               timeout_s: float = 600.0, outputs: Path | None = None,
               on_runs: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Copy the runner, artifact and feed to the device, run there, and return its JSON report.

    With ``outputs``, the device writes every sample's outputs (``--outputs``) and they are copied back there;
    ``on_runs(n)`` hears the device's timed runs as they finish (``--progress``).
    """
    with tempfile.TemporaryDirectory(prefix="edge-lstm-remote-") as tmp:
        pyz = build_zipapp(Path(tmp) / "runner.pyz")
        made = cfg.workdir is None
        rdir = _make_dir(cfg, timeout_s) if made else str(cfg.workdir)
        reached = made  # clean up only on a device we have reached
        try:
            copy = _run(scp_command(cfg, [pyz, artifact, feed], rdir), cfg, timeout_s, "copying files")
            reached = True
            if copy.returncode != 0:
                raise RemoteError(f"Copying to {cfg.host}:{rdir} failed: {_last(copy.stderr)}",
                                  "Check that the directory exists and is writable, and that there is space.")
            argv = [cfg.python, f"{rdir}/runner.pyz", f"{rdir}/{artifact.name}", "--inputs", f"{rdir}/{feed.name}",
                    *device_args, *(["--outputs", f"{rdir}/outputs.npz"] if outputs is not None else []),
                    *(["--progress"] if on_runs is not None else [])]
            proc = _run(ssh_command(cfg, argv), cfg, timeout_s, "running the device runner", on_runs)
            report = parse_remote_output(cfg, proc, artifact.name)
            if outputs is not None:
                _fetch(cfg, f"{rdir}/outputs.npz", outputs, timeout_s)
            return report
        finally:
            if reached:
                _cleanup(cfg, rdir, made, [pyz.name, artifact.name, feed.name, "outputs.npz"])


def _fetch(cfg: RemoteConfig, remote_path: str, local: Path, timeout_s: float) -> None:
    """Copy one file back from the device (``remote_path`` lies in a directory checked by check_remote_dir)."""
    cmd = ["scp", "-q", *_common(cfg, "-P"), "--", f"{cfg.destination[0]}:{remote_path}", str(local)]
    proc = _run(cmd, cfg, timeout_s, "copying the outputs back")
    if proc.returncode != 0:
        raise RemoteError(f"Copying the outputs back from {cfg.host} failed: {_last(proc.stderr)}")


def _make_dir(cfg: RemoteConfig, timeout_s: float) -> str:
    proc = _run(ssh_command(cfg, ["mktemp", "-d", "-t", "edge-lstm.XXXXXX"]), cfg, timeout_s,
                "creating a directory")
    path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not path.startswith("/"):
        raise RemoteError(f"Cannot create a working directory on {cfg.host}: {_last(proc.stderr)}",
                          "Pass --remote-dir with a writable directory on the device.")
    return path


def _cleanup(cfg: RemoteConfig, rdir: str, made: bool, names: list[str]) -> None:
    argv = ["rm", "-rf", "--", rdir] if made else ["rm", "-f", "--", *(f"{rdir}/{n}" for n in names)]
    # best effort: the run's own error (if any) is what the user needs to see
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(ssh_command(cfg, argv), capture_output=True, timeout=cfg.connect_timeout_s + 10, check=False)


def _last(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no message"


def parse_remote_output(cfg: RemoteConfig, proc: subprocess.CompletedProcess[str], artifact: str) -> dict[str, Any]:
    """The device runner's JSON, or a :class:`RemoteError` saying what is missing on the device."""
    report = read_device_reply(proc.stdout, RemoteError, cfg.host)
    if report is None:
        return _no_json(cfg, proc)
    if report.get("error") == "missing-runtime":
        raise MissingRuntimeError(f"The runtime for '{artifact}' is missing on {cfg.host} ({cfg.python}): "
                                  f"{report['message']}",
                                  "Install it on the device (pip install onnxruntime, ai-edge-litert or "
                                  "tflite-runtime), or point --remote-python at a Python that has it.")
    if "error" in report:
        raise RemoteError(f"'{artifact}' failed on {cfg.host}: {report['error']}: {report['message']}")
    return report


def _no_json(cfg: RemoteConfig, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    err = proc.stderr
    missing = re.search(r"No module named '([^']+)'", err)
    if missing:
        raise RemoteError(f"'{cfg.python}' on {cfg.host} lacks the Python package '{missing.group(1)}'.",
                          "The device runner needs numpy and one runtime: pip install numpy onnxruntime "
                          "(or ai-edge-litert / tflite-runtime), or point --remote-python at a Python that has them.")
    if proc.returncode == 127:
        raise RemoteError(f"'{cfg.python}' was not found on {cfg.host}.",
                          "Install Python 3.9+ on the device, or pass --remote-python with its path.")
    if "SyntaxError" in err or "TypeError: unsupported operand" in err:
        raise RemoteError(f"'{cfg.python}' on {cfg.host} is too old for the device runner: {_last(err)}",
                          "The device runner needs Python 3.9 or newer.")
    raise RemoteError(f"The device runner failed on {cfg.host} (exit {proc.returncode}): {_last(err)}")
