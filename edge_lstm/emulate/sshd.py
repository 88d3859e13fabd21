"""The emulated device's OpenSSH server: start it in the userland, find it again, stop it.

``sshd`` runs inside the userland (``chroot``; the kernel runs its aarch64 code
through qemu-user) on a loopback port, with a host key and a client key pair
generated for this image. Everything the host needs to reach it lands in the
image's ``state/`` directory: ``ssh_config`` (the ``edge-lstm-ARCH`` alias, the
key, and a ``known_hosts`` that pins the generated host key), ``device.json``
(pid, port, what the device reported) and ``sshd.log``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_lstm.emulate import host, image
from edge_lstm.errors import EmulationError, UsageError
from edge_lstm.remote import RemoteConfig

SSHD_CONFIG = "/etc/ssh/edge-lstm/sshd_config"  # inside the userland
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # sshds this process started, reaped when stopped


@dataclass(frozen=True)
class EmulatedDevice:
    """A running emulated device and how to reach it."""

    arch: str
    image_dir: str
    pid: int
    port: int
    alias: str
    ssh_config: str
    pythons: dict[str, str]  # runtime -> Python inside the userland that has it
    started: str
    machine: str  # as the device reported it (uname -m)
    os: str  # PRETTY_NAME of the device's /etc/os-release

    def remote_config(self, runtime: str | None = None, timeout_s: int = 30) -> RemoteConfig:
        """A :class:`RemoteConfig` for this device; the Python is the one that has ``runtime``."""
        python = self.pythons.get(runtime or "litert", self.pythons["litert"])
        return RemoteConfig(self.alias, python=python, ssh_config=self.ssh_config, connect_timeout_s=timeout_s)

    def remote_args(self, runtime: str | None = None) -> list[str]:
        """The ``profile`` options that reach this device (with ``--remote-python`` for ``runtime``)."""
        args = ["--remote", self.alias, "--ssh-config", self.ssh_config]
        if runtime and self.pythons.get(runtime) != self.pythons["litert"]:
            args += ["--remote-python", self.pythons[runtime], "--runtime", runtime]
        return args

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the ready-to-paste ``--remote`` options."""
        return {**asdict(self), "address": f"ssh://root@127.0.0.1:{self.port}", "remote_args": self.remote_args(),
                "remote_args_tflite_runtime": self.remote_args("tflite-runtime")}


def state_dir(image_dir: Path) -> Path:
    """Where the running device's keys, configs and log live."""
    return image_dir / "state"


def running(image_dir: Path) -> EmulatedDevice | None:
    """The device recorded in ``state/device.json`` if its sshd still runs in this image's userland."""
    path = state_dir(image_dir) / "device.json"
    try:
        dev = EmulatedDevice(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return dev if _is_our_sshd(dev.pid, image_dir / "rootfs") else None


def _is_our_sshd(pid: int, rootfs: Path) -> bool:
    """True when ``pid`` is alive (not a zombie), runs in ``rootfs`` and is our sshd."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        root = os.readlink(f"/proc/{pid}/root")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and SSHD_CONFIG in cmdline and root == str(rootfs.resolve())


def start(arch: str, image_dir: Path, port: int | None = None, timeout_s: float = 90.0,
          build: tuple[str | None, bool] = (None, False), say: image.Progress = lambda _m: None,
          ) -> tuple[EmulatedDevice, bool]:
    """Build the image if needed and start its sshd; (device, True when started now, False when already up).

    ``build`` is (Debian mirror or ``None`` for apt's, ``rebuild``).
    """
    host.check_arch(arch)
    _check_path(image_dir)
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port.", "Give a port from 1 to 65535, or leave it out for a "
                                                             "free one.")
    mirror, rebuild = build
    image.refuse_foreign(image_dir)  # before the lock file is made in it
    with image.locked(image_dir):
        dev = running(image_dir)
        if dev is not None and not rebuild:
            if port is not None and port != dev.port:
                raise UsageError(f"The emulated {arch} device already runs, on port {dev.port}, not --port {port}.",
                                 "Use the running one (leave out --port), or `edge-lstm device stop` it first.")
            install_device_side(image_dir / "rootfs")
            return dev, False
        if dev is not None:
            _stop(dev, image_dir, say)
        host.require_root("Starting the emulated device")
        host.require_tools()
        host.ensure_binfmt(arch)
        image.ensure_image(image_dir, arch, mirror, rebuild, say)
        install_device_side(image_dir / "rootfs")
        say("starting sshd in the emulated userland")
        return _launch(arch, image_dir, port or _free_port(), timeout_s), True


def _check_path(image_dir: Path) -> None:
    if any(c in str(image_dir) for c in '\n"\\'):
        raise UsageError(f"Cannot use '{image_dir}' as --image-dir: it is written into an ssh config file.",
                         "Use a path without newlines, quotes or backslashes.")


def install_device_side(rootfs: Path) -> None:
    """Put this edge-lstm's device runner (the zipapp that ``profile --remote`` ships) into the userland."""
    from edge_lstm.remote import build_zipapp

    dest = rootfs / image.DEVICE_PYZ
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        image.write_atomic(dest, build_zipapp(Path(tmp) / "device.pyz").read_bytes())


def _launch(arch: str, image_dir: Path, port: int, timeout_s: float) -> EmulatedDevice:
    rootfs, state = image_dir / "rootfs", state_dir(image_dir)
    alias = f"edge-lstm-{arch}"
    cfg = _write_keys_and_configs(rootfs, state, alias, port)
    log = (state / "sshd.log").open("ab")
    proc = subprocess.Popen([host.tool("chroot"), str(rootfs), "/usr/sbin/sshd", "-D", "-e", "-f", SSHD_CONFIG],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=image.chroot_env())
    log.close()
    _CHILDREN[proc.pid] = proc
    try:
        machine, os_name = _wait_up(proc, port, RemoteConfig(alias, ssh_config=str(cfg), connect_timeout_s=30),
                                    state / "sshd.log", timeout_s)
    except BaseException:
        _kill(proc.pid, rootfs)
        raise
    manifest = json.loads((image_dir / "image.json").read_text())
    pythons = {rt: py for rt, (env, py) in image.PYTHONS.items() if env in manifest["versions"]}
    dev = EmulatedDevice(arch, str(image_dir), proc.pid, port, alias, str(cfg), pythons,
                         dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), machine, os_name)
    image.write_atomic(state / "device.json", (json.dumps(asdict(dev), indent=2) + "\n").encode())
    return dev


def _write_keys_and_configs(rootfs: Path, state: Path, alias: str, port: int) -> Path:
    """Host and client keys (made once per image), sshd's config in the userland, the client's on the host."""
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    for name in ("host_key", "client_key"):
        if not (state / name).is_file():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"edge-lstm {alias}", "-f",
                            str(state / name)], check=True, capture_output=True)
    etc = rootfs / "etc/ssh/edge-lstm"
    etc.mkdir(parents=True, exist_ok=True)
    image.write_atomic(etc / "host_key", (state / "host_key").read_bytes(), 0o600)
    image.write_atomic(etc / "authorized_keys", (state / "client_key.pub").read_bytes())
    image.write_atomic(rootfs / SSHD_CONFIG.lstrip("/"), (
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey /etc/ssh/edge-lstm/host_key\nPidFile none\n"
        "AuthorizedKeysFile /etc/ssh/edge-lstm/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPubkeyAuthentication yes\n"
        "StrictModes no\nSubsystem sftp internal-sftp\nPrintMotd no\nPrintLastLog no\nUseDNS no\nLogLevel INFO\n"
    ).encode())
    (rootfs / "run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    host_pub = (state / "host_key.pub").read_text().split()
    image.write_atomic(state / "known_hosts", f"{alias} {host_pub[0]} {host_pub[1]}\n".encode())
    cfg = state / "ssh_config"
    image.write_atomic(cfg, (
        f"# Written by `edge-lstm device emulate`: the emulated device in {rootfs.parent}\n"
        f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f'  IdentityFile "{state / "client_key"}"\n  IdentitiesOnly yes\n  HostKeyAlias {alias}\n'
        f'  UserKnownHostsFile "{state / "known_hosts"}"\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n'
        + _multiplexing(state)).encode())
    return cfg


def _multiplexing(state: Path) -> str:
    """One SSH connection shared by a run's ssh and scp calls: each new login costs ~1.5 s of emulated crypto.

    Skipped when the socket path would pass the kernel's limit for unix sockets (108 bytes): ``%C`` expands to 40
    characters, and ssh adds a 17-character suffix while it creates the socket.
    """
    path = state / "cm-%C"
    if len(str(path)) - 2 + 40 + 17 >= 108:
        return ""
    return f'  ControlMaster auto\n  ControlPath "{path}"\n  ControlPersist 30\n'



def _wait_up(proc: subprocess.Popen[bytes], port: int, cfg: RemoteConfig, log: Path,
             timeout_s: float) -> tuple[str, str]:
    """Wait for sshd's banner, then log in once; (uname -m, OS name) as the device reports them."""
    deadline = time.monotonic() + timeout_s
    while not _banner(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = "exited" if proc.poll() is not None else f"did not answer within {timeout_s:.0f} s"
            raise EmulationError(f"sshd in the emulated device {why} (port 127.0.0.1:{port}): {_tail(log)}",
                                 f"Its log is {log}. A port in use needs another --port; check that "
                                 "`chroot ROOTFS /usr/sbin/sshd -t` passes.")
        time.sleep(0.2)
    from edge_lstm.remote import ssh_command

    argv = ["sh", "-c", '. /etc/os-release; echo "$PRETTY_NAME"; uname -m']
    try:
        probe = subprocess.run(ssh_command(cfg, argv), capture_output=True, text=True,
                               timeout=max(deadline - time.monotonic(), 30), check=False)
    except subprocess.TimeoutExpired as e:
        raise EmulationError(f"sshd in the emulated device answers on port {port} but a login timed out.",
                             f"Its log is {log}.") from e
    lines = probe.stdout.strip().splitlines()
    if probe.returncode != 0 or len(lines) < 2:
        raise EmulationError(f"sshd in the emulated device is up on port {port} but logging in failed: "
                             f"{(probe.stderr.strip().splitlines() or ['no message'])[-1]}",
                             f"Its log is {log}; `edge-lstm device emulate --rebuild` makes the image anew.")
    return lines[-1], lines[-2]


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _tail(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return " / ".join(lines[-2:]) if lines else "no log output"  # sshd's cause, then its conclusion


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(arch: str, image_dir: Path, say: image.Progress = lambda _m: None) -> EmulatedDevice | None:
    """Stop the device's sshd and every process left in its userland; the device stopped, or ``None``."""
    host.check_arch(arch)
    if not (image_dir / "state").is_dir():
        return None  # never started from this image (nothing to lock, nothing made)
    with image.locked(image_dir):
        dev = running(image_dir)
        if dev is None:
            (state_dir(image_dir) / "device.json").unlink(missing_ok=True)
            return None
        _stop(dev, image_dir, say)
        return dev


def _stop(dev: EmulatedDevice, image_dir: Path, say: image.Progress) -> None:
    say(f"stopping sshd (pid {dev.pid}) in the emulated userland")
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # the shared connection, if one is open
        subprocess.run(["ssh", "-F", dev.ssh_config, "-O", "exit", dev.alias], capture_output=True, timeout=10,
                       check=False)
    try:
        _kill(dev.pid, image_dir / "rootfs")
    except PermissionError as e:
        raise EmulationError(f"Cannot stop the emulated device (pid {dev.pid}): permission denied.",
                             "Run `edge-lstm device stop` as root, like the device was started.") from e
    (state_dir(image_dir) / "device.json").unlink(missing_ok=True)


def _kill(pid: int, rootfs: Path, grace_s: float = 10.0) -> None:
    """SIGTERM to sshd's process group, SIGKILL after ``grace_s``; then any process still in ``rootfs``, by pid."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            break
    for other in _in_root(rootfs):  # sessions that left sshd's group: still processes we started, in our userland
        with contextlib.suppress(ProcessLookupError):
            os.kill(other, signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=grace_s)


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _in_root(rootfs: Path) -> list[int]:
    """Pids of the processes whose root directory is ``rootfs``."""
    target, pids = str(rootfs.resolve()), []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "root") == target:
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids
