"""A real PostgreSQL server for the tests: Debian's postgresql, a throwaway cluster on a loopback port.

PostgreSQL refuses to run as root, and CI runs as root: there the server runs as
the ``postgres`` system user (``runuser``), with a data directory that user owns
in a fresh directory under /tmp. The cluster trusts loopback connections only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL server binaries (``/usr/lib/postgresql/N/bin``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster; yield a SQLAlchemy URL for its ``postgres`` database; stop and remove it afterwards."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql "
                           "(apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="edge-lstm-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    # cwd: the server user may not be allowed into the test's working directory
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120, "cwd": root}
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "edge", "--auth=trust",
                                        "-E", "UTF8"]), **run)
        opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                                        str(root / "log"), "-w", "-t", "60", "start"]), **run)
        url = f"postgresql://edge@127.0.0.1:{port}/postgres"
        _wait(port)
        yield url
    finally:
        if data.exists():
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                            "stop"]), capture_output=True, timeout=60, check=False, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def _wait(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"PostgreSQL did not listen on port {port}")
