"""A real OpenSSH server on localhost for the remote-profiling tests.

Starts ``/usr/sbin/sshd -D`` with its own config, host key and authorized key
in a temporary directory, on a free port, and a client config (``-F``) so the
user's own SSH config and known hosts are never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_lstm.remote import RemoteConfig

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    """A running sshd: its port, the client key it accepts, and the client config file."""

    port: int
    key: Path
    wrong_key: Path
    client_config: Path
    workdir: Path

    def config(self, **kw: object) -> RemoteConfig:
        """A RemoteConfig that reaches this server as root with the accepted key."""
        kw.setdefault("identity", str(self.key))
        return RemoteConfig(f"ssh://root@127.0.0.1:{self.port}", ssh_config=str(self.client_config),
                            connect_timeout_s=5, **kw)  # type: ignore[arg-type]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _write_configs(d: Path, port: int) -> Path:
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPubkeyAuthentication yes\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    client = d / "ssh_config"
    client.write_text("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
                      "  IdentitiesOnly yes\n")
    return client


def _wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("sshd did not start listening")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A running sshd on localhost; skipped only when OpenSSH is not installed on this machine."""
    if not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server openssh-client; CI does)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "wrong_key"):
        _keygen(d / name)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    port = free_port()
    client = _write_configs(d, port)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc)
        target = d / "device"
        target.mkdir()
        yield Sshd(port, d / "client_key", d / "wrong_key", client, target)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
