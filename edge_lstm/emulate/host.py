"""What the host must provide to emulate an aarch64 device: root, the tools, binfmt, a Debian mirror.

Each check raises :class:`~edge_lstm.errors.EmulationError` (exit code 7) saying
what is missing and what to do. Nothing here changes the host except
:func:`ensure_binfmt`, which asks Debian's ``update-binfmts`` to enable the
``qemu-aarch64`` entry that the ``qemu-user-static`` package installs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edge_lstm.errors import EmulationError

#: Debian architecture -> (binfmt entry, ELF e_machine of its binaries, uname machine)
ARCHES: dict[str, tuple[str, int, str]] = {"arm64": ("qemu-aarch64", 0xB7, "aarch64")}
SUITE = "bookworm"  # Debian 12: the base of Raspberry Pi OS (bookworm)
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
#: host tools and the Debian package that has each
TOOLS = {"debootstrap": "debootstrap", "chroot": "coreutils", "update-binfmts": "binfmt-support",
         "ssh": "openssh-client", "ssh-keygen": "openssh-client"}
APT_HINT = "apt-get install qemu-user-static binfmt-support debootstrap openssh-client"


def check_arch(arch: str) -> tuple[str, int, str]:
    """The binfmt entry, ELF machine and uname machine of Debian architecture ``arch``."""
    if arch not in ARCHES:
        from edge_lstm.errors import UsageError

        raise UsageError(f"Cannot emulate architecture '{arch}'.", f"Accepted: {', '.join(ARCHES)}.")
    return ARCHES[arch]


def require_root(what: str) -> None:
    """:class:`EmulationError` unless this process runs as root (debootstrap, chroot and binfmt need it)."""
    if os.geteuid() != 0:
        raise EmulationError(
            f"{what} needs root: debootstrap, chroot and binfmt registration do (running as uid {os.geteuid()}).",
            "Run it as root (e.g. sudo edge-lstm device emulate), or profile on a real device with --remote.")


def tool(name: str) -> str:
    """The full path of host tool ``name``: on PATH, else in /usr/sbin or /sbin (root's tools; PATH may lack them)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


def require_tools() -> None:
    """:class:`EmulationError` naming every missing host tool and the package to install."""
    missing = [f"{t} ({pkg})" for t, pkg in TOOLS.items() if tool(t) == t]
    if missing:
        raise EmulationError(f"Missing host tools for the emulated device: {', '.join(missing)}.",
                             f"Install them: {APT_HINT}.")


@dataclass(frozen=True)
class Binfmt:
    """A binfmt_misc entry as the kernel reports it."""

    name: str
    enabled: bool
    interpreter: str
    flags: str

    @property
    def fixed(self) -> bool:
        """True when the kernel opened the interpreter at registration (flag F): it works inside a chroot."""
        return "F" in self.flags


def read_binfmt(name: str, binfmt_dir: Path = BINFMT_DIR) -> Binfmt | None:
    """The kernel's entry ``name``, or ``None`` when it is not registered (or binfmt_misc is not mounted)."""
    try:
        text = (binfmt_dir / name).read_text()
    except OSError:
        return None
    fields = dict(line.split(" ", 1) for line in text.splitlines()[1:] if " " in line)
    return Binfmt(name, text.startswith("enabled"), fields.get("interpreter", ""), fields.get("flags:", "").strip())


def ensure_binfmt(arch: str, binfmt_dir: Path = BINFMT_DIR, update_binfmts: str | None = None) -> Binfmt:
    """Make sure the kernel runs ``arch`` binaries through qemu-user-static; enable the entry when needed.

    The entry must have the F flag (Debian's qemu-user-static sets it), so the
    emulator need not exist inside the userland.
    """
    name = check_arch(arch)[0]
    entry = read_binfmt(name, binfmt_dir)
    if entry is None or not entry.enabled:
        try:
            proc = subprocess.run([update_binfmts or tool("update-binfmts"), "--enable", name], capture_output=True,
                                  text=True, check=False)
            why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] if proc.returncode else []
        except OSError as e:
            why = [str(e)]
        entry = read_binfmt(name, binfmt_dir)
        if entry is None or not entry.enabled:
            raise EmulationError(
                f"Cannot register {name} with the kernel's binfmt_misc ({binfmt_dir}): "
                f"{why[0] if why else 'the entry is still not enabled'}.",
                "Install qemu-user-static and binfmt-support, load the module (modprobe binfmt_misc) and run "
                f"`update-binfmts --enable {name}` as root; in a container, register it on the host.")
    if not entry.fixed:
        raise EmulationError(
            f"The binfmt entry {name} lacks the F (fix binary) flag, so it cannot run inside a chroot "
            f"(flags: '{entry.flags}').",
            f"Reinstall Debian's qemu-user-static (its entry has flags F), or `update-binfmts --disable {name}` "
            "and register it with fix_binary yes.")
    return entry


def elf_machine(path: Path) -> int | None:
    """The ELF e_machine field of ``path`` (little-endian ELF), or ``None`` when it is not an ELF file."""
    try:
        with path.open("rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little")


def apt_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The Debian archive URI that apt uses on this machine (not a security or updates-only archive).

    Reads one-line ``sources.list`` files and deb822 ``*.sources`` files.
    """
    for uri, suites in _apt_entries(sources):
        if "security" in uri or "ubuntu" in uri:
            continue
        if any(s and "-" not in s and "/" not in s for s in suites):
            return uri.rstrip("/")
    raise EmulationError(f"No Debian archive found in apt's sources ({', '.join(map(str, sources))}).",
                         "Pass --mirror with a Debian mirror that carries bookworm for arm64, "
                         "e.g. the one in your apt sources.")


def _apt_entries(sources: tuple[Path, ...]) -> list[tuple[str, list[str]]]:
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources"))
        elif src.is_file():
            files.append(src)
    entries: list[tuple[str, list[str]]] = []
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        entries += _deb822(text) if f.suffix == ".sources" else _one_line(text)
    return entries


def _one_line(text: str) -> list[tuple[str, list[str]]]:
    out = []
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            out.append((words[1], [words[2]]))
    return out


def _deb822(text: str) -> list[tuple[str, list[str]]]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        out += [(uri, suites) for uri in fields.get("uris", "").split()]
    return out
