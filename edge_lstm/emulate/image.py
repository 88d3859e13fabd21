"""The cached Debian arm64 userland: build it once, in resumable stages, and check it before each use.

Layout of an image directory (default ``$XDG_CACHE_HOME/edge-lstm/arm64``, else
``~/.cache/edge-lstm/arm64``)::

    .edge-lstm-image   written first: marks the directory as ours (a foreign directory is never removed)
    debs/              debootstrap's package cache, kept across rebuilds
    wheels/ENV/        the aarch64 wheels, fetched on the host with pip download
    rootfs/            the userland
    stages/STAGE.json  one file per finished stage: debootstrap, wheels, install
    image.json         the manifest, written last: the image is complete
    state/             the running device (see :mod:`edge_lstm.emulate.device`)

A directory with the marker but without ``image.json`` is half-built: the
missing stages run again (an unfinished debootstrap starts over). A manifest
whose files fail their checks (dpkg's md5sums of Python, libc and OpenSSH;
pip's RECORD hashes of every installed wheel) is corrupt: it is refused, and
``--rebuild`` builds it anew.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_lstm import device as device_runner
from edge_lstm.emulate import host
from edge_lstm.errors import EmulationError
from edge_lstm.outputs import write_bytes_atomic

Progress = Callable[[str], None]
IMAGE_FORMAT = 1
MARKER = ".edge-lstm-image"
STAGES = ("debootstrap", "wheels", "install")
INCLUDE = ("python3", "openssh-server")  # on top of --variant=minbase
#: packages whose files (dpkg md5sums) are verified before each use
VERIFIED_PACKAGES = ("libc6", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
                     "openssh-server", "openssh-client")
#: environment -> (site directory inside the rootfs, requirements); tflite-runtime 2.14 needs numpy<2
ENVS: dict[str, tuple[str, tuple[str, ...]]] = {
    "main": ("usr/local/lib/python{py}/dist-packages", ("numpy", "ai-edge-litert", "onnxruntime")),
    "tflite-runtime": ("opt/edge-lstm/tflite-runtime/lib/python{py}/site-packages",
                       ("numpy<2", "tflite-runtime==2.14.0")),
}
#: runtime -> (environment, Python inside the userland)
PYTHONS = {"litert": ("main", "/usr/bin/python3"), "onnxruntime": ("main", "/usr/bin/python3"),
           "tflite-runtime": ("tflite-runtime", "/opt/edge-lstm/tflite-runtime/bin/python3")}
DEVICE_PYZ = "opt/edge-lstm/edge-lstm-device.pyz"  # edge-lstm's device side, refreshed at every start
EMULATED_MARKER = device_runner.EMULATED_MARKER.lstrip("/")  # the device runner reports its content
_PROBE = ("import json, platform, sys, numpy\nv = {'python': platform.python_version(), 'machine': platform.machine(),"
          " 'numpy': numpy.__version__}\nfor m in sys.argv[1:]:\n    __import__(m)\n"
          "from importlib.metadata import version\nfor p in ('ai-edge-litert', 'onnxruntime', 'tflite-runtime'):\n"
          "    try:\n        v[p] = version(p)\n    except Exception:\n        pass\nprint(json.dumps(v))\n")


def default_image_dir(arch: str = "arm64") -> Path:
    """``$XDG_CACHE_HOME/edge-lstm/ARCH``, else ``~/.cache/edge-lstm/ARCH``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-lstm" / arch


@dataclass
class ImageState:
    """What an image directory holds: ``absent``, ``foreign``, ``partial``, ``corrupt`` or ``ready``."""

    path: Path
    status: str
    detail: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)  # finished stages

    @property
    def rootfs(self) -> Path:
        """The userland's root directory."""
        return self.path / "rootfs"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"path": str(self.path), "status": self.status, "detail": self.detail, "stages_done": self.done,
                "manifest": self.manifest or None}


def refuse_foreign(path: Path) -> None:
    """:class:`EmulationError` when ``path`` holds files but is not an image directory edge-lstm made."""
    if path.is_dir() and not (path / MARKER).is_file() and [p for p in path.iterdir() if p.name != ".lock"]:
        raise EmulationError(f"Cannot use '{path}' for the emulated device: it is not empty and has no {MARKER} "
                             "marker.", "Choose a new or empty --image-dir; edge-lstm never removes a directory it "
                             "did not make.")


def inspect_image(path: Path) -> ImageState:
    """Classify ``path`` without changing it; a ready image's files are verified."""
    if not path.exists() or (path.is_dir() and not [p for p in path.iterdir() if p.name != ".lock"]):
        return ImageState(path, "absent", "no image yet")
    if not (path / MARKER).is_file():
        return ImageState(path, "foreign", f"'{path}' is not empty and has no {MARKER} marker")
    done = [s for s in STAGES if (path / "stages" / f"{s}.json").is_file()]
    manifest_path = path / "image.json"
    if not manifest_path.exists():
        missing = [s for s in STAGES if s not in done] + ["check"]
        return ImageState(path, "partial", f"half-built: stages to (re)do: {', '.join(missing)}", done=done)
    try:
        manifest = json.loads(manifest_path.read_text())
        assert isinstance(manifest, dict) and manifest.get("format") == IMAGE_FORMAT
    except (OSError, ValueError, AssertionError):
        return ImageState(path, "corrupt", "image.json is unreadable or of another format", done=done)
    if done != list(STAGES):
        return ImageState(path, "corrupt", f"image.json exists but stages are missing: "
                          f"{', '.join(s for s in STAGES if s not in done)}", manifest, done)
    problem = verify(path / "rootfs", manifest)
    if problem:
        return ImageState(path, "corrupt", problem, manifest, done)
    return ImageState(path, "ready", "", manifest, done)


def verify(rootfs: Path, manifest: dict[str, Any]) -> str | None:
    """The first problem found in the userland's files, or ``None``: dpkg md5sums, pip RECORDs, ELF arch."""
    python = rootfs / "usr/bin" / f"python{manifest['python']}"
    if host.elf_machine(python) != manifest["elf_machine"]:
        return f"{python} is missing or not an {manifest['arch']} binary"
    for pkg in VERIFIED_PACKAGES:
        problem = _check_md5sums(rootfs, pkg)
        if problem:
            return problem
    for env in ENVS:
        site = rootfs / ENVS[env][0].format(py=manifest["python"])
        records = sorted(site.glob("*.dist-info/RECORD"))
        if not records:
            return f"no installed packages in {site}"
        for rec in records:
            problem = _check_record(site, rec)
            if problem:
                return problem
    return None


def _check_md5sums(rootfs: Path, pkg: str) -> str | None:
    info = rootfs / "var/lib/dpkg/info"
    sums = next((p for p in (info / f"{pkg}.md5sums", info / f"{pkg}:arm64.md5sums") if p.is_file()), None)
    if sums is None:
        return f"dpkg has no file list for {pkg}"
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        f = rootfs / name
        if f.is_symlink():
            continue
        try:
            if hashlib.md5(f.read_bytes()).hexdigest() != digest:  # dpkg's own checksum
                return f"/{name} ({pkg}) differs from the Debian package"
        except OSError:
            return f"/{name} ({pkg}) is missing"
    return None


def _check_record(site: Path, record: Path) -> str | None:
    for line in record.read_text().splitlines():
        name, _, rest = line.partition(",")
        algo_digest, _, size = rest.partition(",")
        f = site / name
        if not algo_digest or name.startswith("../") or name.endswith(".pyc"):
            continue  # RECORD has no hash of itself; scripts (../../bin) are not the runtime; Python may rewrite .pyc
        try:
            data = f.read_bytes()
        except OSError:
            return f"{f} is missing ({record.parent.name})"
        algo, _, want = algo_digest.partition("=")
        got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
        if got != want or (size and int(size) != len(data)):
            return f"{f} differs from its wheel ({record.parent.name})"
    return None


# ---------------------------------------------------------------- building


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path/.lock`` (one build, start or stop at a time per image)."""
    import fcntl

    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = (path / ".lock").open("a")
    except OSError as e:
        raise EmulationError(f"Cannot use '{path}' for the emulated device: {e.strerror or e}.",
                             "Run as root (the device is built and started as root), or pick another "
                             "--image-dir.") from e
    with lock as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_image(path: Path, arch: str, mirror: str | None, rebuild: bool, say: Progress) -> ImageState:
    """A ready image at ``path``: built or resumed as needed; a corrupt one only with ``rebuild``."""
    state = inspect_image(path)
    if state.status == "ready" and not rebuild:
        return state
    if state.status == "foreign":
        raise EmulationError(f"Cannot build the emulated device there: {state.detail}.",
                             "Choose a new or empty --image-dir; edge-lstm never removes a directory it did not make.")
    if state.status == "corrupt" and not rebuild:
        raise EmulationError(f"The cached {arch} image in '{path}' is corrupt: {state.detail}.",
                             "Rebuild it: edge-lstm device emulate --rebuild (the downloaded packages are reused).")
    host.require_root("Building the emulated device")
    host.require_tools()
    host.ensure_binfmt(arch)
    if rebuild or state.status == "corrupt":
        say(f"removing the old image in {path}")
        clear(path, keep=("debs",))
    elif state.status == "partial":
        say(f"resuming a half-built image in {path} ({state.detail})")
    return build(path, arch, mirror or host.apt_mirror(), say)


def clear(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove an image directory's contents (ours: it has the marker), except ``keep`` and the lock."""
    for p in path.iterdir():
        if p.name in (*keep, ".lock", MARKER):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def build(path: Path, arch: str, mirror: str, say: Progress) -> ImageState:
    """Run the stages not yet done, then the check that writes ``image.json``."""
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / MARKER, {"arch": arch, "made_by": "edge-lstm device emulate"})
    (path / "stages").mkdir(exist_ok=True)
    times: dict[str, float] = {}
    for stage, fn in (("debootstrap", _debootstrap), ("wheels", _wheels), ("install", _install)):
        stamp = path / "stages" / f"{stage}.json"
        if stamp.is_file():
            continue
        t0 = time.monotonic()
        info = fn(path, arch, mirror, say)
        times[stage] = round(time.monotonic() - t0, 1)
        _write_json(stamp, {**info, "seconds": times[stage]})
    say("checking the runtimes inside the emulated userland")
    t0 = time.monotonic()
    manifest = _check(path, arch)
    manifest["check_seconds"] = round(time.monotonic() - t0, 1)
    _write_json(path / "image.json", manifest)
    state = inspect_image(path)
    if state.status != "ready":
        raise EmulationError(f"The {arch} image just built in '{path}' fails its own check: {state.detail}.",
                             "This is a bug; please report it with the build log " f"{path / 'build.log'}.")
    return state


def _debootstrap(path: Path, arch: str, mirror: str, say: Progress) -> dict[str, Any]:
    rootfs = path / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)  # an unfinished debootstrap: start over
    (path / "debs").mkdir(exist_ok=True)
    cmd = [host.tool("debootstrap"), f"--arch={arch}", "--variant=minbase", f"--include={','.join(INCLUDE)}",
           f"--cache-dir={path / 'debs'}", host.SUITE, str(rootfs), mirror]
    say(f"debootstrap {host.SUITE} {arch} from {mirror} (a few minutes the first time)")
    run_logged(cmd, path / "build.log", say, "debootstrap")
    return {"mirror": mirror, "suite": host.SUITE, "python": _python_version(rootfs), "glibc": _glibc(rootfs)}


def _wheels(path: Path, arch: str, mirror: str, say: Progress) -> dict[str, Any]:
    deb = json.loads((path / "stages" / "debootstrap.json").read_text())
    files: dict[str, list[str]] = {}
    for env, (_, reqs) in ENVS.items():
        dest = path / "wheels" / env
        tmp = dest.with_name(env + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        pinned = [pin_to_host(r) for r in reqs]
        say(f"pip download for {env}: {' '.join(pinned)}")
        run_logged([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(tmp),
                    *pip_platform_args(arch, deb["python"], deb["glibc"]), *pinned],
                   path / "build.log", say, f"pip download ({env})")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        files[env] = sorted(p.name for p in dest.iterdir())
    return {"wheels": files}


def _install(path: Path, arch: str, mirror: str, say: Progress) -> dict[str, Any]:
    deb = json.loads((path / "stages" / "debootstrap.json").read_text())
    rootfs, py = path / "rootfs", deb["python"]
    for env, (site_rel, reqs) in ENVS.items():
        site = rootfs / site_rel.format(py=py)
        shutil.rmtree(site, ignore_errors=True)
        say(f"installing the {env} wheels into the userland")
        run_logged([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts",
                    "--no-index", "--find-links", str(path / "wheels" / env), "--target", str(site),
                    *pip_platform_args(arch, py, deb["glibc"]), *(pin_to_host(r) for r in reqs)],
                   path / "build.log", say, f"pip install ({env})")
        write_atomic(site / "edge-lstm-device.pth", f"/{DEVICE_PYZ}\n".encode())  # edge-lstm's device side
    venv = rootfs / "opt/edge-lstm/tflite-runtime"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("python3", "python"):
        link = venv / "bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/bin/python{py}")
    cfg = f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {py}\n"
    write_atomic(venv / "pyvenv.cfg", cfg.encode())
    qemu = subprocess.run(["qemu-" + host.check_arch(arch)[2] + "-static", "--version"], capture_output=True,
                          text=True, check=False).stdout.splitlines()[:1]
    _write_json(rootfs / EMULATED_MARKER, {"emulator": (qemu or ["qemu-user-static"])[0], "host_machine":
                                           os.uname().machine, "note": "timings here are emulated, not device "
                                           "latency"})
    return {}


def _check(path: Path, arch: str) -> dict[str, Any]:
    """Import every runtime inside the userland (that runs the emulator) and write down the versions."""
    deb = json.loads((path / "stages" / "debootstrap.json").read_text())
    rootfs = path / "rootfs"
    versions: dict[str, Any] = {}
    for env, python in {e: p for _, (e, p) in PYTHONS.items()}.items():
        mods = ["tflite_runtime.interpreter"] if env == "tflite-runtime" else ["ai_edge_litert.interpreter",
                                                                                "onnxruntime"]
        proc = chroot_run(rootfs, [python, "-c", _PROBE, *mods], timeout_s=300)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EmulationError(f"The {env} runtimes do not run inside the emulated userland: {tail}",
                                 "Rebuild the image with --rebuild; check that binfmt's qemu-aarch64 works.")
        versions[env] = json.loads(lines[-1])
    stamps = {s: json.loads((path / "stages" / f"{s}.json").read_text()) for s in STAGES}
    return {"format": IMAGE_FORMAT, "arch": arch, "suite": deb["suite"], "mirror": deb["mirror"],
            "python": deb["python"], "glibc": deb["glibc"], "elf_machine": host.check_arch(arch)[1],
            "versions": versions, "stage_seconds": {s: stamps[s]["seconds"] for s in STAGES},
            "wheels": stamps["wheels"]["wheels"]}


def chroot_run(rootfs: Path, argv: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the userland (a plain chroot: no /proc or /sys, see the package docstring)."""
    try:
        return subprocess.run([host.tool("chroot"), str(rootfs), *argv], capture_output=True, text=True,
                              timeout=timeout_s, env=chroot_env(), check=False)
    except subprocess.TimeoutExpired as e:
        raise EmulationError(f"'{argv[0]}' did not finish within {timeout_s:.0f} s inside the emulated userland.",
                             "The machine may be overloaded; try again.") from e


def chroot_env() -> dict[str, str]:
    """A clean environment for processes in the userland (none of the host's Python settings)."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "HOME": "/root"}


def run_logged(cmd: list[str], log: Path, say: Progress, what: str) -> None:
    """Run ``cmd``, appending its output to ``log``; debootstrap's ``I:`` lines become progress."""
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        tail: list[str] = []
        count = 0
        for line in proc.stdout:
            f.write(line)
            tail = [*tail[-19:], line.rstrip()]
            if line.startswith("I: "):
                count += 1
                say(f"{what}: {line[3:].strip()} ({count} steps)")
        rc = proc.wait()
    if rc != 0:
        last = next((ln for ln in reversed(tail) if ln.strip() and "is ignored" not in ln), "no output")
        raise EmulationError(f"{what} failed (exit {rc}): {last}",
                             f"The whole output is in {log}. Check the network and the mirror (--mirror); "
                             "running `edge-lstm device emulate` again resumes the build.")


def pip_platform_args(arch: str, python: str, glibc: str) -> list[str]:
    """pip's cross-platform options: every manylinux tag the userland's glibc accepts (pip does not expand them)."""
    machine = host.check_arch(arch)[2]
    minor = int(glibc.split(".")[1])
    tags = [f"manylinux2014_{machine}"] + [f"manylinux_2_{v}_{machine}" for v in range(17, minor + 1)]
    abi = "cp" + python.replace(".", "")
    return ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", abi,
            *(a for t in tags for a in ("--platform", t))]


def pin_to_host(requirement: str) -> str:
    """``name==V`` when the host has package ``name`` installed at V (the ARM build of the same release)."""
    if any(c in requirement for c in "<>=!"):
        return requirement
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{requirement}=={version(requirement)}"
    except PackageNotFoundError:
        return requirement


def _python_version(rootfs: Path) -> str:
    target = os.readlink(rootfs / "usr/bin/python3")  # python3 -> python3.11
    return target.removeprefix("python")


def _glibc(rootfs: Path) -> str:
    version = _dpkg_version(rootfs, "libc6")
    return ".".join(version.split("-")[0].split(".")[:2])


def _dpkg_version(rootfs: Path, package: str) -> str:
    current = None
    for line in (rootfs / "var/lib/dpkg/status").read_text().splitlines():
        if line.startswith("Package: "):
            current = line.split(": ", 1)[1]
        elif line.startswith("Version: ") and current == package:
            return line.split(": ", 1)[1]
    raise EmulationError(f"The userland has no {package} package.", "Rebuild it with --rebuild.")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write through a new file and a rename (never in place: image copies may share inodes)."""
    write_bytes_atomic(path, data, perms=mode)
